"""Option greeks (Black-76) and the greek limits of the risk engine's option checks.

Black-76 prices a European option on a forward ``F`` (for crypto options, the future or
perpetual of the same expiry's underlying), strike ``K``, ``t`` years to expiry and
volatility ``sigma``, undiscounted (crypto option venues settle at expiry, and over days
the discount factor is noise)::

    d1 = (ln(F / K) + sigma^2 t / 2) / (sigma sqrt(t)),  d2 = d1 - sigma sqrt(t)
    call = F N(d1) - K N(d2)          put = K N(-d2) - F N(-d1)
    delta = N(d1) (call), N(d1) - 1 (put)
    vega  = F phi(d1) sqrt(t)                       (per 1.00 of volatility)
    gamma = phi(d1) / (F sigma sqrt(t))             (delta per 1 quote unit of F)

Greeks are per unit of underlying (1 BTC); prices in the quote (USD). An option quoted in
the coin (Deribit's BTC options) converts its premium at the forward. Deltas are not
premium-adjusted.

Limits: an option order's delta (base units), vega (quote per vol point) and gamma (base
units of delta per 1 % move of the forward: ``gamma x F / 100``, what a 1 % move does to
the delta the hedge must carry) are checked per order and, added to the book's totals, in
total; an order that shrinks a total (in absolute value) is never refused for that total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

YEAR_S = 365.0 * 86_400.0
_SQRT2 = math.sqrt(2.0)


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Greeks:
    """Price (quote per unit of underlying) and greeks of one option."""

    price: float
    delta: float
    """Underlying units per unit of underlying (0..1 for a call, -1..0 for a put)."""
    vega: float
    """Quote per 1.00 of volatility; ``vega / 100`` per vol point."""
    gamma: float = 0.0
    """Delta per 1 quote unit of the forward (d delta / dF)."""

    @property
    def vega_per_point(self) -> float:
        return self.vega / 100.0

    def gamma_per_pct(self, forward: float) -> float:
        """Delta change per 1 % move of ``forward``: ``gamma x F / 100``."""
        return self.gamma * forward / 100.0


def black76(forward: float, strike: float, t_years: float, sigma: float, call: bool) -> Greeks:
    """Black-76 price, delta, vega and gamma; at or past expiry, the intrinsic value."""
    if not (forward > 0 and strike > 0):
        raise ValueError(f"forward and strike must be > 0, got {forward}, {strike}")
    if t_years <= 0 or sigma <= 0:
        intrinsic = max(0.0, forward - strike) if call else max(0.0, strike - forward)
        itm = forward > strike if call else forward < strike
        delta = (1.0 if call else -1.0) if itm else 0.0
        return Greeks(intrinsic, delta, 0.0)
    sd = sigma * math.sqrt(t_years)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if call:
        price = forward * norm_cdf(d1) - strike * norm_cdf(d2)
        delta = norm_cdf(d1)
    else:
        price = strike * norm_cdf(-d2) - forward * norm_cdf(-d1)
        delta = norm_cdf(d1) - 1.0
    pdf = norm_pdf(d1)
    vega = forward * pdf * math.sqrt(t_years)
    return Greeks(price, delta, vega, pdf / (forward * sd))


def implied_vol(
    price: float,
    forward: float,
    strike: float,
    t_years: float,
    call: bool,
    *,
    low: float = 1e-4,
    high: float = 10.0,
    tolerance: float = 1e-10,
) -> float | None:
    """The volatility whose Black-76 price is ``price`` (bisection: the price is monotone
    in volatility); None when ``price`` is outside what any volatility in
    ``[low, high]`` gives (below intrinsic value, above the forward or strike bound)."""
    if t_years <= 0 or not (price > 0 and forward > 0 and strike > 0):
        return None
    lo_price = black76(forward, strike, t_years, low, call).price
    hi_price = black76(forward, strike, t_years, high, call).price
    if not lo_price <= price <= hi_price:
        return None
    lo, hi = low, high
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if black76(forward, strike, t_years, mid, call).price < price:
            lo = mid
        else:
            hi = mid
        if hi - lo < tolerance:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class GreekExposure:
    """Delta (base units), vega (quote per vol point) and gamma (base units of delta per
    1 % move of the forward) of an order or a book."""

    delta: float = 0.0
    vega: float = 0.0
    gamma: float = 0.0

    def __add__(self, other: GreekExposure) -> GreekExposure:
        return GreekExposure(
            self.delta + other.delta, self.vega + other.vega, self.gamma + other.gamma
        )

    def times(self, k: float) -> GreekExposure:
        return GreekExposure(self.delta * k, self.vega * k, self.gamma * k)


def order_exposure(
    side: str, contracts: float, contract_size: float, greeks: Greeks, forward: float = 0.0
) -> GreekExposure:
    """What filling ``contracts`` of an option adds: long for a buy, short for a sell
    (gamma only with the ``forward`` it is measured at)."""
    units = contracts * contract_size * (1.0 if side == "buy" else -1.0)
    return GreekExposure(
        units * greeks.delta, units * greeks.vega_per_point, units * greeks.gamma_per_pct(forward)
    )


@dataclass(frozen=True, slots=True)
class GreekLimits:
    """Caps on option risk (None: no cap): per order and for the whole option book."""

    max_delta_per_order: float | None = None
    """Base units (BTC)."""
    max_vega_per_order: float | None = None
    """Quote per vol point."""
    max_delta_total: float | None = None
    max_vega_total: float | None = None
    max_gamma_per_order: float | None = None
    """Base units of delta per 1 % move of the forward."""
    max_gamma_total: float | None = None


def check_greeks(order: GreekExposure, total: GreekExposure, limits: GreekLimits) -> str | None:
    """None if the order may be sent, else the denial (``UPPER_SNAKE: k=v``)."""
    for name, value, cap in (
        ("DELTA", order.delta, limits.max_delta_per_order),
        ("VEGA", order.vega, limits.max_vega_per_order),
        ("GAMMA", order.gamma, limits.max_gamma_per_order),
    ):
        if cap is not None and abs(value) > cap:
            return f"{name}_EXCEEDS_MAX_PER_ORDER: {name.lower()}={value:.8g} max={cap:g}"
    after = total + order
    for name, before_v, after_v, cap in (
        ("DELTA", total.delta, after.delta, limits.max_delta_total),
        ("VEGA", total.vega, after.vega, limits.max_vega_total),
        ("GAMMA", total.gamma, after.gamma, limits.max_gamma_total),
    ):
        if cap is not None and abs(after_v) > cap and abs(after_v) > abs(before_v):
            return (
                f"{name}_EXCEEDS_MAX_TOTAL: {name.lower()}={before_v:.8g} "
                f"{name.lower()}_after={after_v:.8g} max={cap:g}"
            )
    return None
