"""Pre-trade checks of option orders, run by the risk engine like every other order's.

:meth:`bot.risk.engine.RiskEngine.use_checks` puts these in place of the spot and
perpetual checks for the option markets; the engine's stateful checks (trading state
halted or reducing, market paused) still run first, denials are counted in
``RiskEngine.denials`` by code and the order rate is taken when a create leaves. A
premium is no spot price (one tick of a cheap option is 20 % of it; its notional is
BTC), so price bands and notional caps in the quote currency do not apply: option risk
is its greeks.

=============================  ==========================================================
``NO_REFERENCE_PRICE``         the option book has no mid, or no forward prices greeks
``WOULD_CROSS``                would take liquidity; only a flattening order that shrinks
                               the position (tag ``flatten:``) may
``OPEN_ORDERS_EXCEED_MAX``     ``max_open_orders_per_market`` (as on every market)
``DELTA_EXCEEDS_MAX_PER_ORDER``  ``|delta| x contracts`` above ``max_delta_per_order``
``VEGA_EXCEEDS_MAX_PER_ORDER``   likewise for vega
``DELTA_EXCEEDS_MAX_TOTAL``    the worst case -- net delta (options + the underlying's
                               position) plus every resting option order pushing delta the
                               same way, this market's orders that stay and the ones
                               checked before it in the set included -- would pass
                               ``max_delta_total`` and grow
``VEGA_EXCEEDS_MAX_TOTAL``     likewise for the options' vega
=============================  ==========================================================
"""

from __future__ import annotations

import math
from typing import Protocol

from bot.options.gate import Extremes
from bot.risk.checks import Check, QuoteContext, check_open_orders, reduces_position
from bot.risk.greeks import GreekExposure, GreekLimits, check_greeks
from bot.settings.models import RiskSettings
from strategies.base import Quote

FLATTEN_TAG = "flatten:"


class GreekSource(Protocol):
    """What the greek check reads: the option desk."""

    def per_contract_of(self, symbol: str, side: str) -> GreekExposure | None:
        """Greeks one contract of ``side`` adds (None: no forward or no such option)."""
        ...

    def extremes_without(self, symbol: str) -> Extremes:
        """Net position plus the resting option orders on every *other* option."""
        ...


def check_option_reference(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    mid = ctx.mid
    if mid is None or not math.isfinite(mid) or mid <= 0:
        return f"NO_REFERENCE_PRICE: symbol={quote.symbol} mid={mid}"
    return None


def check_option_cross(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    if not quote.post_only and quote.tag.startswith(FLATTEN_TAG) and reduces_position(quote, ctx):
        return None
    if quote.side == "buy" and ctx.best_ask is not None and quote.price >= ctx.best_ask:
        return f"WOULD_CROSS: side=buy price={quote.price:.8g} best_ask={ctx.best_ask:.8g}"
    if quote.side == "sell" and ctx.best_bid is not None and quote.price <= ctx.best_bid:
        return f"WOULD_CROSS: side=sell price={quote.price:.8g} best_bid={ctx.best_bid:.8g}"
    return None


class GreekCheck:
    """The greek limits as a pre-trade check (``Check`` signature)."""

    def __init__(self, limits: GreekLimits, source: GreekSource) -> None:
        self.limits = limits
        self.source = source

    def __call__(self, quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
        per = self.source.per_contract_of(quote.symbol, quote.side)
        buy = self.source.per_contract_of(quote.symbol, "buy")
        sell = self.source.per_contract_of(quote.symbol, "sell")
        if per is None or buy is None or sell is None:
            return f"NO_REFERENCE_PRICE: symbol={quote.symbol} greeks=none"
        worst = self.worst_case(quote.symbol, ctx, buy, sell)
        order = GreekExposure(per.delta * quote.amount, per.vega * quote.amount)
        return check_greeks(order, worst.before(per), self.limits)

    def worst_case(
        self, symbol: str, ctx: QuoteContext, buy: GreekExposure, sell: GreekExposure
    ) -> Extremes:
        """The other options' worst case plus this market's orders that stay resting."""
        worst = self.source.extremes_without(symbol)
        for per, amount in ((buy, ctx.resting_buy_base), (sell, ctx.resting_sell_base)):
            if amount > 0:
                worst.add(GreekExposure(per.delta * amount, per.vega * amount))
        return worst


def option_checks(greeks: GreekCheck) -> tuple[Check, ...]:
    """The checks of an option market, in order."""
    return (check_option_reference, check_option_cross, check_open_orders, greeks)
