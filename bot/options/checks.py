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
``PRICE_OUTSIDE_PREMIUM_BAND``  the price is below one tick, above what the option can be
                               worth (a call 1 BTC per BTC of underlying, a put K/F), or
                               outside the Black-76 prices at the book's mid implied
                               volatility -/+ ``premium_band_vol_points`` (widened to
                               ``premium_band_min_ticks`` either side of the model price,
                               rounded outwards to the tick): a fat finger
``WOULD_CROSS``                would take liquidity; only a flattening order that shrinks
                               the position (tag ``flatten:``) may
``OPEN_ORDERS_EXCEED_MAX``     ``max_open_orders_per_market`` (as on every market)
``DELTA_EXCEEDS_MAX_PER_ORDER``  ``|delta| x contracts`` above ``max_delta_per_order``
``VEGA_EXCEEDS_MAX_PER_ORDER``   likewise for vega
``GAMMA_EXCEEDS_MAX_PER_ORDER``  likewise for gamma (BTC of delta per 1 % move)
``DELTA_EXCEEDS_MAX_TOTAL``    the worst case -- net delta (options + the underlying's
                               position) plus every resting order pushing delta the same
                               way (the underlying's resting orders, every option's, this
                               market's orders that stay and the ones checked before it in
                               the set included) -- would pass ``max_delta_total`` and grow
``VEGA_EXCEEDS_MAX_TOTAL``     likewise for the options' vega
``GAMMA_EXCEEDS_MAX_TOTAL``    likewise for the options' gamma
=============================  ==========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from bot.options.gate import Extremes
from bot.risk.checks import Check, QuoteContext, check_open_orders, reduces_position
from bot.risk.greeks import GreekExposure, GreekLimits, black76, check_greeks
from bot.risk.options import OptionSpec
from bot.settings.models import RiskSettings
from strategies.base import Quote

FLATTEN_TAG = "flatten:"
PREMIUM_BAND_CODE = "PRICE_OUTSIDE_PREMIUM_BAND"


class GreekSource(Protocol):
    """What the greek check reads: the option desk."""

    def per_contract_of(self, symbol: str, side: str) -> GreekExposure | None:
        """Greeks one contract of ``side`` adds (None: no forward or no such option)."""
        ...

    def extremes_without(self, symbol: str) -> Extremes:
        """Net position plus the underlying's resting orders and the resting option
        orders on every *other* option."""
        ...


@dataclass(frozen=True, slots=True)
class OptionPricing:
    """What prices an option now: its spec, the forward, time and the book's volatility."""

    spec: OptionSpec
    forward: float
    t_years: float
    iv: float


class PricingSource(Protocol):
    """What the premium band reads: the option desk."""

    def pricing_of(self, symbol: str) -> OptionPricing | None:
        """None: no forward yet, or no such option."""
        ...


@dataclass(frozen=True, slots=True)
class PremiumBand:
    """The prices an option order may have, in the book's premium unit."""

    low: float
    high: float
    model: float
    """Black-76 at the book's mid implied volatility."""
    bound: float
    """Most an option can be worth per unit of underlying: a call the forward (1 in
    BTC), a put the strike (K/F in BTC)."""


def premium_band(p: OptionPricing, vol_points: float, min_ticks: int, tick: float) -> PremiumBand:
    spec, f = p.spec, p.forward
    scale = f if spec.premium_in_base else 1.0

    def price(vol: float) -> float:
        return black76(f, spec.strike, p.t_years, vol, spec.call).price / scale

    h = vol_points / 100.0
    model = price(p.iv)
    low = min(price(p.iv - h), model - min_ticks * tick)
    high = max(price(p.iv + h), model + min_ticks * tick)
    # Prices sit on the tick grid: the band reaches out to the ticks around it.
    low = max(tick, math.floor(low / tick + 1e-9) * tick)
    high = math.ceil(high / tick - 1e-9) * tick
    bound = (f if spec.call else spec.strike) / scale
    return PremiumBand(low, min(high, bound), model, bound)


class PremiumBandCheck:
    """``PRICE_OUTSIDE_PREMIUM_BAND`` as a pre-trade check (``Check`` signature)."""

    def __init__(
        self, source: PricingSource, vol_points: float, min_ticks: int, tick: float
    ) -> None:
        self.source = source
        self.vol_points = vol_points
        self.min_ticks = min_ticks
        self.tick = tick

    def __call__(self, quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
        price = quote.price
        if not math.isfinite(price) or price < self.tick - 1e-12:
            return f"{PREMIUM_BAND_CODE}: price={price:.8g} below tick={self.tick:g}"
        pricing = self.source.pricing_of(quote.symbol)
        if pricing is None:
            return f"NO_REFERENCE_PRICE: symbol={quote.symbol} model=none"
        band = premium_band(pricing, self.vol_points, self.min_ticks, self.tick)
        if price > band.bound + 1e-12:
            return (
                f"{PREMIUM_BAND_CODE}: price={price:.8g} above bound={band.bound:.8g} "
                f"({'call' if pricing.spec.call else 'put'} at forward={pricing.forward:.8g})"
            )
        if not band.low - 1e-12 <= price <= band.high + 1e-12:
            return (
                f"{PREMIUM_BAND_CODE}: price={price:.8g} low={band.low:.8g} "
                f"high={band.high:.8g} model={band.model:.8g} iv={pricing.iv:.4f} "
                f"vol_points={self.vol_points:g}"
            )
        return None


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
        order = per.times(quote.amount)
        return check_greeks(order, worst.before(per), self.limits)

    def worst_case(
        self, symbol: str, ctx: QuoteContext, buy: GreekExposure, sell: GreekExposure
    ) -> Extremes:
        """The other options' worst case plus this market's orders that stay resting."""
        worst = self.source.extremes_without(symbol)
        for per, amount in ((buy, ctx.resting_buy_base), (sell, ctx.resting_sell_base)):
            if amount > 0:
                worst.add(per.times(amount))
        return worst


def option_checks(greeks: GreekCheck, band: PremiumBandCheck) -> tuple[Check, ...]:
    """The checks of an option market, in order."""
    return (check_option_reference, band, check_option_cross, check_open_orders, greeks)
