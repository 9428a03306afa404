"""The backstop on option books, and delta hedging on the underlying.

:class:`OptionBackstopStrategy` -- while an option's vega-depth detector is active
(ENGAGED / RECOVERING), one post-only quote per side:

- volatility ``iv``: the book's mid implied volatility (the configured surface when the
  book has none);
- bid at Black-76 with ``iv - h``, ask with ``iv + h``, ``h = half_spread_vol_points +
  stress_vol_points x stress`` (vol points), as a BTC premium rounded outwards to the
  tick, and kept inside the book (bid below the best ask, ask above the best bid);
- nothing within ``stop_before_expiry_s`` (or ``flatten_before_expiry_s``) of expiry;
- size per side: the side's vega deficit ``target_fraction x baseline - depth`` over the
  vega of one contract, at most ``max_contracts_per_order`` (before a baseline, the cap),
  down to the 0.1 lot. The greek gate (:mod:`bot.options.gate`) trims or refuses after.

:class:`DeltaHedgeStrategy` wraps the underlying market's strategy (a
:class:`~strategies.base.Strategy`, decided by the trader like any other): when
``|options delta + underlying position|`` exceeds its trigger (``hedge_at_fraction`` of the
delta cap, or ``delta_limit``), it adds one limit order
``max_cost_bps`` through the mid that brings the net delta to zero (at most
``max_order_base``; tag ``hedge:``). The order is repeated unchanged while it is in flight,
so the order manager does not replace it. The wrapped strategy's replenishment quotes
(which would flatten the hedge) are dropped. Strategies decide; the trader's budget, risk
engine and order manager send.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from bot.detect.report import DetectorUpdate
from bot.options.settings import HedgeSettings, OptionQuotingSettings
from bot.risk.greeks import black76
from bot.risk.options import OptionSpec
from strategies.base import REPLENISH_TAG, Decision, MarketContext, Quote, Strategy

if TYPE_CHECKING:
    from bot.orders.events import OrderFilled

HEDGE_TAG = "hedge:"
OPTION_BID_TAG = "option:bid"
OPTION_ASK_TAG = "option:ask"
_MIN_VOL = 0.01
_DEFAULT_TRIGGER = 0.3
"""BTC: the trigger when neither one nor a delta cap is given (tests, by hand)."""


@dataclass(frozen=True, slots=True)
class OptionQuoteContext:
    spec: OptionSpec
    update: DetectorUpdate
    forward: float
    now_ms: int
    iv: float
    best_bid: float
    best_ask: float
    """BTC premiums."""
    tick: float
    lot: float


class OptionBackstopStrategy:
    name = "option-backstop"

    def __init__(self, params: OptionQuotingSettings) -> None:
        self.params = params

    def decide(self, ctx: OptionQuoteContext) -> Decision:
        update = ctx.update
        if not update.active:
            return Decision((), f"{update.state.value}: no option quotes")
        p, spec = self.params, ctx.spec
        t = spec.years_to_expiry(ctx.now_ms)
        left_ms = spec.expiry_ms - ctx.now_ms
        if left_ms < max(p.stop_before_expiry_s, p.flatten_before_expiry_s) * 1000:
            return Decision((), "expiring: no quotes")
        h = (p.half_spread_vol_points + p.stress_vol_points * update.stress) / 100.0
        f, k = ctx.forward, spec.strike
        bid_usd = black76(f, k, t, max(_MIN_VOL, ctx.iv - h), spec.call).price
        ask_usd = black76(f, k, t, ctx.iv + h, spec.call).price
        scale = f if spec.premium_in_base else 1.0
        bid = math.floor(bid_usd / scale / ctx.tick + 1e-9) * ctx.tick
        ask = math.ceil(ask_usd / scale / ctx.tick - 1e-9) * ctx.tick
        bid = min(bid, ctx.best_ask - ctx.tick)
        ask = max(ask, ctx.best_bid + ctx.tick)
        vega = black76(f, k, t, ctx.iv, spec.call).vega_per_point * spec.contract_size
        quotes: list[Quote] = []
        for side, price, depth, baseline, tag in (
            ("buy", bid, update.depth[0], update.baseline[0], OPTION_BID_TAG),
            ("sell", ask, update.depth[1], update.baseline[1], OPTION_ASK_TAG),
        ):
            if price < ctx.tick - 1e-12:
                continue
            if baseline is None or vega <= 0:
                contracts = p.max_contracts_per_order
            else:
                deficit = max(0.0, p.target_fraction * baseline - depth)
                contracts = min(p.max_contracts_per_order, deficit / vega)
            contracts = math.floor(contracts / ctx.lot + 1e-9) * ctx.lot
            if contracts < ctx.lot:
                continue
            s: Literal["buy", "sell"] = "buy" if side == "buy" else "sell"
            quotes.append(Quote(spec.symbol, s, round(price, 10), round(contracts, 8), tag=tag))
        reason = (
            f"{update.state.value}: iv {ctx.iv:.4f} +/- {h * 100:.2f} pts, "
            f"{len(quotes)} quotes, vega/contract {vega:.2f}"
        )
        return Decision(tuple(quotes), reason, "backstop")


class DeltaHedgeStrategy:
    """The underlying's strategy plus the options' delta hedge (see module doc)."""

    def __init__(
        self,
        inner: Strategy,
        options_delta: Callable[[], float],
        params: HedgeSettings,
        trigger: float | None = None,
        cap: float | None = None,
        option_extremes: Callable[[], tuple[float, float]] | None = None,
    ) -> None:
        self.inner = inner
        self.cap = cap
        """``max_delta_total``: the wrapped strategy's quotes are trimmed so that, all
        filling with every resting option order pushing the same way, |net delta| stays
        within it. None: not trimmed."""
        self.option_extremes = option_extremes
        """(lowest, highest) options delta if any subset of resting option orders fills."""
        self.trimmed = 0
        self.options_delta = options_delta
        self.params = params
        self.trigger = (
            trigger
            if trigger is not None
            else params.delta_limit
            if params.delta_limit is not None
            else _DEFAULT_TRIGGER
        )
        """|net delta| above which it hedges (``OptionsSettings.hedge_trigger``)."""
        self.name = f"{inner.name}+delta-hedge"
        self.hedges = 0
        self.fills = 0
        self._pending: Quote | None = None

    def on_fill(self, fill: OrderFilled) -> None:
        self.inner.on_fill(fill)

    def rehearse(self, ctx: MarketContext) -> Decision:
        """The underlying's strategy's rehearsal of an engaged reading, if it has one
        (:meth:`strategies.backstop.BackstopStrategy.rehearse`): nothing is decided, so
        there is nothing to hedge or trim, and no count moves."""
        rehearse: Callable[[MarketContext], Decision] | None = getattr(
            self.inner, "rehearse", None
        )
        return rehearse(ctx) if rehearse is not None else Decision((), "no rehearsal")

    def net_delta(self, ctx: MarketContext) -> float:
        return self.options_delta() + ctx.inventory.net_base

    def decide(self, ctx: MarketContext) -> Decision:
        decision = self.inner.decide(ctx)
        quotes = tuple(q for q in decision.quotes if not q.tag.startswith(REPLENISH_TAG))
        quotes = self._within_cap(quotes, ctx)
        hedge = self._hedge(ctx) if self.params.enabled and not ctx.reduce_only else None
        if hedge is None:
            return (
                Decision(quotes, decision.reason, decision.mode)
                if quotes != decision.quotes
                else decision
            )
        return Decision(
            (*quotes, hedge), f"{decision.reason}; {hedge.tag} {hedge.amount:.8g}", decision.mode
        )

    def _within_cap(self, quotes: tuple[Quote, ...], ctx: MarketContext) -> tuple[Quote, ...]:
        """The wrapped strategy's quotes that fit the delta cap (in the order given, the
        last one trimmed to what is left): its fills must not carry the net delta past
        the cap before the hedge can act."""
        if self.cap is None or not quotes:
            return quotes
        lo, hi = (
            self.option_extremes()
            if self.option_extremes is not None
            else (self.options_delta(),) * 2
        )
        position = ctx.inventory.net_base
        room = {
            "buy": max(0.0, self.cap - (hi + position)),
            "sell": max(0.0, self.cap + (lo + position)),
        }
        rules = ctx.rules
        out: list[Quote] = []
        for q in quotes:
            base = rules.base_amount(q.price, q.amount)
            left = room[q.side]
            if base <= left + 1e-12:
                room[q.side] = left - base
                out.append(q)
                continue
            self.trimmed += 1
            amount = rules.amount_for_base(left, q.price)
            if rules.amount_step > 0:
                amount = math.floor(amount / rules.amount_step + 1e-9) * rules.amount_step
            if amount > 0 and rules.notional(q.price, amount) >= rules.min_notional(q.price):
                out.append(replace(q, amount=round(amount, 10)))
            room[q.side] = 0.0
        return tuple(out)

    def _hedge(self, ctx: MarketContext) -> Quote | None:
        p, rules, mid = self.params, ctx.rules, ctx.sample.mid
        net = self.net_delta(ctx)
        if abs(net) <= self.trigger or not mid > 0:
            self._pending = None
            return None
        side: Literal["buy", "sell"] = "sell" if net > 0 else "buy"
        pending = self._pending
        if pending is not None and pending.side == side:
            # In flight (or resting): the same order, so the order manager keeps it.
            band = 2.0 * p.max_cost_bps / 1e4
            if abs(pending.price / mid - 1.0) <= band:
                return pending
        through = p.max_cost_bps / 1e4
        price = mid * (1.0 + through) if side == "buy" else mid * (1.0 - through)
        base = min(abs(net), p.max_order_base)
        amount = rules.amount_for_base(base, price)
        if rules.amount_step > 0:
            amount = math.floor(amount / rules.amount_step + 1e-9) * rules.amount_step
        if amount <= 0 or rules.notional(price, amount) < rules.min_notional(price):
            return None
        self.hedges += 1
        self._pending = Quote(
            ctx.symbol, side, price, round(amount, 10), post_only=False, tag=f"{HEDGE_TAG}{side}"
        )
        return self._pending
