"""A plain always-on market maker, so operators can compare and rehearse.

Whatever the detector says, it keeps ``levels`` post-only quotes per side around the
top-of-book microprice, rung ``i`` at ``half_spread_bps + i x rung_spacing_bps``, each
``size_quote`` of notional before skew. Inventory skew is the backstop's: with
``q = net_base / position_limit`` in [-1, 1] bids are scaled by ``(1 - q)`` and asks by
``(1 + q)``, and the side that would grow the position stops at the limit
(``max_position_fraction`` of the per-market cap). Balances above the reserve floor
and the budget's room cap both sides the same way as for the backstop, and resting
quotes are held between requotes the same way too (``requote_bps``,
``requote_size_fraction``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.settings.models import MarketMakerParams
from strategies.base import Decision, MarketContext
from strategies.ladder import (
    HeldLadders,
    build_two_sided,
    interleave,
    inventory_skew,
    microprice,
    min_distance_bps,
    requote_headroom,
    share_room,
    side_limits,
)

if TYPE_CHECKING:
    from bot.orders.events import OrderFilled

BID_TAG = "mm:bid:"
ASK_TAG = "mm:ask:"


class MarketMakerStrategy:
    name: str = "market-maker"

    def __init__(self, params: MarketMakerParams | None = None) -> None:
        self.params = params if params is not None else MarketMakerParams()
        self.fills = 0
        self._ladders = HeldLadders(
            tolerance_bps=self.params.requote_bps,
            size_tolerance=self.params.requote_size_fraction,
            within_rate=self.params.requote_within_rate,
        )

    def on_fill(self, fill: OrderFilled) -> None:
        self.fills += 1  # the inventory in the next context carries the fill's effect

    def decide(self, ctx: MarketContext) -> Decision:
        p = self.params
        budget, inv, rules = ctx.budget, ctx.inventory, ctx.rules
        fair = microprice(ctx.book, ctx.sample)
        half = max(p.half_spread_bps, min_distance_bps(fair, rules.price_tick))
        limit = budget.position_limit_base(p.max_position_fraction, fair)
        net = inv.net_base
        q = inventory_skew(net, limit)
        hard = side_limits(budget, net, limit, p.levels)
        h = requote_headroom(p.requote_bps, p.requote_size_fraction)
        use = hard.scaled(h)
        per_side = p.size_quote * p.levels
        want_bid = min(per_side * (1.0 - q), use.buy_quote, use.buy_base * fair)
        want_ask = min(per_side * (1.0 + q), use.sell_quote, use.sell_base * fair)
        # A side the risk engine will not let grow the position is not asked for.
        if "buy" in ctx.paused_sides:
            want_bid = 0.0
        if "sell" in ctx.paused_sides:
            want_ask = 0.0
        size_bid, size_ask = share_room(want_bid, want_ask, budget.quote_room * h)
        sides = build_two_sided(
            ctx.symbol,
            best_bid=ctx.sample.best_bid,
            best_ask=ctx.sample.best_ask,
            fair=fair,
            inner_bps=half,
            spacing_bps=p.rung_spacing_bps,
            levels=p.levels,
            bid_quote=size_bid,
            ask_quote=size_ask,
            limits=use,
            max_order_quote=budget.max_order_quote,
            rules=rules,
            bid_tag=BID_TAG,
            ask_tag=ASK_TAG,
        )
        bids, asks, bid_max, ask_min = sides.bids, sides.asks, sides.bid_max, sides.ask_min
        reason = (
            f"quoting: {len(bids)} bids {size_bid:.2f} / {len(asks)} asks {size_ask:.2f} "
            f"quote around {fair:.8g}, half-spread {half:.3g} bps, skew {q:+.2f}"
        )
        quotes = self._ladders.hold(
            ctx.symbol,
            interleave(bids, asks),
            fair=fair,
            bid_max=bid_max,
            ask_min=ask_min,
            room=budget.quote_room,
            limits=hard,
            max_order_quote=budget.max_order_quote,
            rules=rules,
            order_room=ctx.order_room,
        )
        return Decision(quotes, reason, "market-make")
