"""The backstop: quote two-sided from the reserve while the book is fractured, then step back.

Modes, by the detector's state:

- **ENGAGED / RECOVERING** -- a ladder of ``levels`` post-only quotes per side.

  - Fair price: the top-of-book microprice (:func:`strategies.ladder.microprice`).
  - Innermost distance from fair, in bps (``half``)::

        half = base_spread_bps + vol_mult x sigma_bps + stress_spread_bps x stress

    capped at ``max_half_spread_bps`` and at least one price tick. ``sigma_bps`` is the
    detector's volatility (``fallback_sigma_bps`` while it warms up); ``stress`` is
    ``1 - health``: 0 on a book that meets every recovery level, 1 on an empty band.
    Rung ``i`` is ``half + i x rung_spacing_bps`` out. Bids stay below the best ask and
    asks above the best bid by at least a tick, so a post-only quote never crosses.
  - Size per side (quote notional): the side's deficit,
    ``target_fraction x baseline - depth`` (the detector's band depth, own quotes
    excluded; unbounded before there is a baseline), but at least
    ``min_side_fraction`` x half the room so the ladder stays two-sided; skewed by
    inventory (``q = net_base / position_limit`` in [-1, 1]: bids x ``(1 - q)``, asks
    x ``(1 + q)``); capped by the position limit (``max_position_fraction`` of the
    per-market cap: if every buy filled, the position would still be within it), the
    balances above the reserve floor, and ``levels`` x the per-order cap. The budget's
    room (both sides together) goes first to each side's minimum share, then to what
    each side wants beyond it, in proportion. Each side's total is split evenly over its
    rungs; rungs under the market's minimum notional are dropped from the outside.
  - Requoting: the resting ladder is kept while a fresh one is the same rungs, every
    price within ``requote_bps`` and every size within ``requote_size_fraction``, none
    crossing and all still within the limits (:func:`strategies.ladder.hold_quotes`);
    to make that last, a fresh ladder uses only ``1 - requote_size_fraction / 2`` of
    whichever limit binds it (room, balances, position), never of its deficit.
- **CALM** after an episode -- replenishment (``replenish``): rebalance toward the
  reserve's starting base amount. ``passive``: one post-only quote at the touch (best bid
  to buy back, best ask to sell off); ``cost_limited``: a limit order that may take
  liquidity, priced ``replenish_max_cost_bps`` through the mid; ``off``: nothing. An
  imbalance under the market minimum is left alone. The cost is recorded from the
  fills (:class:`bot.episodes.EpisodeTracker`).
- **ARMING**, or CALM with nothing to rebalance -- no quotes. An empty decision is how the
  strategy steps back: the order manager cancels whatever rests.
- **Reduce only** (``ctx.reduce_only``: the risk engine holds a perpetual near its
  liquidation price, over its leverage or position limit), whatever the detector says:
  one post-only quote at the touch that shrinks the position (tag ``reduce:``), and
  nothing else. A side in ``ctx.paused_sides`` (paying extreme funding) is not quoted.

Amounts are the market's order units (contracts on a contract market: see
:class:`~strategies.base.MarketRules`); sizing is in quote notional and base, as for spot.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from bot.detector import DetectorState, DetectorUpdate
from bot.settings.models import BackstopParams
from strategies.base import REDUCE_TAG, REPLENISH_TAG, Decision, MarketContext, Quote
from strategies.ladder import (
    BPS,
    HeldLadders,
    inventory_skew,
    microprice,
    min_distance_bps,
    plan_two_sided,
    requote_headroom,
    share_room,
    side_limits,
)

if TYPE_CHECKING:
    from bot.orders.events import OrderFilled

BID_TAG = "backstop:bid:"
ASK_TAG = "backstop:ask:"

_INF = float("inf")


class BackstopStrategy:
    """The default strategy. Holds no state between decisions besides a fill count."""

    name: str = "backstop"

    def __init__(self, params: BackstopParams | None = None) -> None:
        self.params = params if params is not None else BackstopParams()
        self.fills = 0
        self._ladders = HeldLadders(
            tolerance_bps=self.params.requote_bps,
            size_tolerance=self.params.requote_size_fraction,
            within_rate=self.params.requote_within_rate,
        )

    def on_fill(self, fill: OrderFilled) -> None:
        # Inventory and episodes are accounted by the trader; the strategy re-reads the
        # inventory on its next decision, so a fill needs no bookkeeping here.
        self.fills += 1

    def decide(self, ctx: MarketContext) -> Decision:
        update = ctx.detector
        if ctx.reduce_only:
            self._ladders.forget(ctx.symbol)
            reduce = self._flatten(ctx, "passive", REDUCE_TAG)
            return reduce or Decision((), "reduce only: nothing to reduce")
        if update is not None and update.active:
            return self._ladder(ctx, update)
        self._ladders.forget(ctx.symbol)  # stepped back: the next episode starts afresh
        if update is not None and update.state is DetectorState.ARMING:
            return Decision((), "arming: fracture condition holding, not engaged yet")
        if self.params.replenish != "off":
            decision = self._replenish(ctx)
            if decision is not None:
                return decision
        return Decision((), "calm: no quotes")

    def rehearse(self, ctx: MarketContext) -> Decision:
        """The ladder an engaged reading of ``ctx`` would ask for, with nothing kept: no
        ladder is held or forgotten, no count moves. The trader rehearses the reading
        that would engage a market while it is arming, so that the real one finds its
        code and data in the processor's caches (:meth:`bot.trader.Trader.rehearse`)."""
        update = ctx.detector
        if update is None:
            return Decision((), "nothing to rehearse: no detector reading")
        engaged = replace(update, state=DetectorState.ENGAGED)
        scratch = HeldLadders(
            tolerance_bps=self.params.requote_bps,
            size_tolerance=self.params.requote_size_fraction,
        )
        return self._ladder(ctx, engaged, scratch)

    def quiet(
        self, symbol: str, update: DetectorUpdate, *, net_base: float, reduce_only: bool
    ) -> bool:
        """True when :meth:`decide` on this reading asks for no quotes and changes nothing:
        calm, not reducing, no ladder held, nothing to replenish. The trader skips
        building a decision's inputs on such readings (its calm fast path)."""
        return (
            not reduce_only
            and update.state is DetectorState.CALM
            and symbol not in self._ladders._resting
            and (self.params.replenish == "off" or net_base == 0)
        )

    # ------------------------------------------------------------------ engaged

    def half_spread_bps(self, update: DetectorUpdate, fair: float, tick: float) -> float:
        p = self.params
        sigma = update.sigma_bps if update.sigma_bps is not None else p.fallback_sigma_bps
        half = p.base_spread_bps + p.vol_mult * sigma + p.stress_spread_bps * update.stress
        return max(min(half, p.max_half_spread_bps), min_distance_bps(fair, tick))

    def deficits(self, update: DetectorUpdate) -> tuple[float, float]:
        """(bid, ask) quote notional missing from the target depth; inf without a baseline."""
        out: list[float] = []
        for depth, baseline in zip(update.depth, update.baseline, strict=True):
            if baseline is None:
                out.append(_INF)
            else:
                out.append(max(0.0, self.params.target_fraction * baseline - depth))
        return out[0], out[1]

    def _ladder(
        self, ctx: MarketContext, update: DetectorUpdate, ladders: HeldLadders | None = None
    ) -> Decision:
        p = self.params
        budget, inv, rules = ctx.budget, ctx.inventory, ctx.rules
        fair = microprice(ctx.book, ctx.sample)
        half = self.half_spread_bps(update, fair, rules.price_tick)

        limit = budget.position_limit_base(p.max_position_fraction, fair)
        net = inv.net_base
        q = inventory_skew(net, limit)
        hard = side_limits(budget, net, limit, p.levels)
        h = requote_headroom(p.requote_bps, p.requote_size_fraction)
        use = hard.scaled(h)
        room = max(0.0, budget.quote_room) * h
        floor = p.min_side_fraction * room / 2.0
        deficit_bid, deficit_ask = self.deficits(update)
        want_bid = min(max(deficit_bid, floor) * (1.0 - q), use.buy_quote, use.buy_base * fair)
        want_ask = min(max(deficit_ask, floor) * (1.0 + q), use.sell_quote, use.sell_base * fair)
        # A side the risk engine will not let grow the position is not asked for.
        if "buy" in ctx.paused_sides:
            want_bid = 0.0
        if "sell" in ctx.paused_sides:
            want_ask = 0.0
        size_bid, size_ask = share_room(
            want_bid, want_ask, room, floor * (1.0 - q), floor * (1.0 + q)
        )

        sides = plan_two_sided(
            ctx.sample.best_bid,
            ctx.sample.best_ask,
            fair,
            half,
            p.rung_spacing_bps,
            p.levels,
            size_bid,
            size_ask,
            use,
            budget.max_order_quote,
            rules,
            BID_TAG,
            ASK_TAG,
        )
        # The fresh ladder's quotes are built only if the resting one is not kept.
        held = ladders if ladders is not None else self._ladders
        quotes = held.hold_rungs(
            ctx.symbol,
            sides,
            fair=fair,
            room=budget.quote_room,
            limits=hard,
            max_order_quote=budget.max_order_quote,
            rules=rules,
            order_room=ctx.order_room,
        )
        bids, asks = sides.bids, sides.asks
        reason = (
            f"{update.state.value}: {len(bids)} bids {size_bid:.2f} / {len(asks)} asks "
            f"{size_ask:.2f} quote around {fair:.8g}, half-spread {half:.3g} bps, "
            f"deficit {_fmt(deficit_bid)}/{_fmt(deficit_ask)}, skew {q:+.2f}"
        )
        return Decision(quotes, reason, "backstop")

    # ------------------------------------------------------------------ replenish

    def _replenish(self, ctx: MarketContext) -> Decision | None:
        return self._flatten(ctx, self.params.replenish, REPLENISH_TAG)

    def _flatten(self, ctx: MarketContext, mode: str, tag_prefix: str) -> Decision | None:
        """One quote toward the reserve's starting base (flat, on a perpetual)."""
        p = self.params
        inv, budget, rules, sample = ctx.inventory, ctx.budget, ctx.rules, ctx.sample
        net = inv.net_base
        if net == 0:
            return None
        side: Literal["buy", "sell"] = "sell" if net > 0 else "buy"
        mid = sample.mid
        what = "replenish" if tag_prefix == REPLENISH_TAG else "reduce"
        if mode == "passive":
            price = sample.best_bid if side == "buy" else sample.best_ask
            post_only = True
        else:
            through = p.replenish_max_cost_bps / BPS
            price = mid * (1.0 + through) if side == "buy" else mid * (1.0 - through)
            post_only = False
        if not price > 0:
            return None
        fee = 1.0 + budget.fee_rate
        room = _INF if budget.closing_is_free else max(0.0, budget.quote_room) / price
        amount = min(abs(net), budget.max_order_quote / price, room)
        if side == "buy":
            amount = min(amount, max(0.0, budget.quote_available) / fee / price)
        else:
            amount = min(amount, max(0.0, budget.base_available) / fee)
        if amount * price < rules.min_notional(price):
            if abs(net) * price < rules.min_notional(price):
                return None  # within tolerance: nothing worth an order
            return Decision((), f"{what} {mode}: {side} {abs(net):.8g} blocked by the budget")
        tag = tag_prefix + side
        units = rules.amount_for_base(amount, price)
        quote = Quote(ctx.symbol, side, price, units, post_only=post_only, tag=tag)
        return Decision(
            (quote,),
            f"{what} {mode}: {side} {amount:.8g} of {abs(net):.8g} at {price:.8g}",
            "replenish",
        )


def _fmt(x: float) -> str:
    return "inf" if x == _INF else f"{x:.0f}"
