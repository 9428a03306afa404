"""Volatility from mid changes (and optionally trade prices), per second, O(1) per update.

For each price series the estimate is a time-decayed realised variance per second::

    on each new price p at t (previous p0 at t0, dt = t - t0, keep = exp(-dt / tau)):
        S = keep * S + ln(p / p0) ** 2
        T = keep * T + dt
    variance per second = S / T

That is an EWMA of squared log returns normalised by the time they took, not by their
count, so irregular updates (bursts, quiet spells) do not bias it, and two prints at
the same instant (a sweep) add their return with no time. Dividing by the decayed
time also corrects the start-up bias an EWMA started at zero would have.

With trades blended, the variances mix: ``(1 - w) * var_mid + w * var_trades``. Trade
prints bounce between bid and ask, so ``w`` defaults to 0 in
:class:`~bot.detect.config.DetectorConfig`; on a wide-spread book they overstate
volatility, on a book that rarely updates they see moves the mid lags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

NS_PER_S = 1e9
BPS = 1e4


@dataclass(slots=True)
class DecayedVariance:
    """Time-decayed realised variance of one price series (log returns, per second)."""

    tau_s: float
    last_price: float | None = None
    last_ts_ns: int | None = None
    sq_sum: float = 0.0
    time_s: float = 0.0
    observed_ns: int = 0
    returns: int = 0

    def add(self, ts_ns: int, price: float) -> None:
        if not (price > 0 and math.isfinite(price)):
            return
        if self.last_price is None or self.last_ts_ns is None:
            self.last_price, self.last_ts_ns = price, ts_ns
            return
        dt_ns = max(0, ts_ns - self.last_ts_ns)  # late events count as simultaneous
        dt = dt_ns / NS_PER_S
        keep = math.exp(-dt / self.tau_s)
        r = math.log(price / self.last_price)
        self.sq_sum = keep * self.sq_sum + r * r
        self.time_s = keep * self.time_s + dt
        self.observed_ns += dt_ns
        self.returns += 1
        self.last_price = price
        self.last_ts_ns = max(ts_ns, self.last_ts_ns)

    @property
    def variance_per_s(self) -> float | None:
        return self.sq_sum / self.time_s if self.time_s > 0 else None


@dataclass(slots=True)
class Volatility:
    """Mid (and optionally trade) volatility; :attr:`sigma_bps` in bps per sqrt(second)."""

    tau_s: float = 60.0
    warmup_s: float = 5.0
    trade_weight: float = 0.0
    mid: DecayedVariance = field(init=False)
    trades: DecayedVariance = field(init=False)

    def __post_init__(self) -> None:
        self.mid = DecayedVariance(self.tau_s)
        self.trades = DecayedVariance(self.tau_s)

    def on_mid(self, ts_ns: int, mid: float) -> None:
        self.mid.add(ts_ns, mid)

    def on_trade(self, ts_ns: int, price: float) -> None:
        if self.trade_weight > 0:
            self.trades.add(ts_ns, price)

    @property
    def sigma_bps(self) -> float | None:
        """sqrt(variance per second) in bps, or None until ``warmup_s`` has been seen.

        With trades blended, a series still warming up is left out of the blend.
        """
        warm_ns = self.warmup_s * NS_PER_S
        w_trade = self.trade_weight
        w_mid = 1.0 - w_trade
        total = weighted = 0.0
        var = self.mid.variance_per_s
        if w_mid > 0 and var is not None and self.mid.observed_ns >= warm_ns:
            total, weighted = w_mid, w_mid * var
        var = self.trades.variance_per_s
        if w_trade > 0 and var is not None and self.trades.observed_ns >= warm_ns:
            total, weighted = total + w_trade, weighted + w_trade * var
        return BPS * math.sqrt(weighted / total) if total > 0 else None
