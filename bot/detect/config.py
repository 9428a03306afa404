"""The detector's knobs, frozen, with one constructor from a market's settings.

The detector reads only this, never the settings tree, so tests build it directly.
Fields that :class:`~bot.settings.MarketSettings` does not (yet) expose keep the
defaults below; they are documented where they are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.settings import MarketSettings


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Fracture rules, dwell times and estimator time constants for one market.

    A rule is off when its threshold is ``0`` (floor, drop rate) or ``None``
    (baseline fraction, spread).
    """

    band_index: int = 0
    """Which band's quote depth is watched (0: the narrowest, nearest the mid)."""
    band_bps: float = 10.0
    """That band's width, for reports."""

    depth_floor_quote: float = 0.0
    """Fracture: quote depth on a side below this. 0 disables."""
    floor_recovery_multiple: float = 1.5
    """Recovered (floor rule): depth at least ``floor x this`` on both sides. The
    margin is the floor rule's hysteresis; 1.0 leaves only the disengage dwell."""

    baseline_fraction: float | None = 0.3
    """Fracture: depth below this fraction of its own baseline. None disables."""
    baseline_window_s: float = 60.0
    """Time constant of the baseline EWMA."""
    warmup_s: float = 60.0
    """Baseline-relative rules (fraction, drop rate) stay off until the baseline has
    averaged this much book time."""
    engaged_baseline_slowdown: float = 20.0
    """While engaged or recovering the baseline's time constant is multiplied by this
    (``math.inf`` freezes it). It is frozen outright while arming. See
    :mod:`bot.detect.baseline`."""
    max_baseline_step_s: float = 1.0
    """A gap between samples counts for at most this long in the baseline, so a
    feed stall does not let the last value before it take over the average."""

    max_depth_drop_per_s: float = 0.0
    """Fracture: losing this fraction of the baseline per second, measured over
    ``drop_lookback_s``. 0 disables."""
    drop_lookback_s: float = 1.0

    max_spread_bps: float | None = 50.0
    """Fracture: spread wider than this. None disables."""
    spread_recovery_fraction: float = 0.8
    """Recovered (spread rule): spread at most ``max_spread_bps x this``."""

    engage_dwell_s: float = 1.0
    """A fracture condition must hold this long before the detector engages."""
    recovery_fraction: float = 0.6
    """Recovered: depth back at or above this fraction of baseline on both sides."""
    disengage_dwell_s: float = 10.0
    """Recovery must hold this long before the detector stands down."""

    vol_window_s: float = 60.0
    """Time constant of the volatility estimate."""
    vol_warmup_s: float = 5.0
    """No volatility figure until this much time has been observed."""
    vol_trade_weight: float = 0.0
    """Blend weight of the trade-price variance (0: mid only, 1: trades only)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and math.isnan(value):
                problems.append(f"{f.name} is NaN")
        if self.band_index < 0:
            problems.append("band_index must be >= 0")
        positive = ("baseline_window_s", "drop_lookback_s", "vol_window_s", "max_baseline_step_s")
        problems += [f"{name} must be > 0" for name in positive if not getattr(self, name) > 0]
        non_negative = (
            "depth_floor_quote",
            "warmup_s",
            "max_depth_drop_per_s",
            "engage_dwell_s",
            "disengage_dwell_s",
            "vol_warmup_s",
        )
        problems += [f"{name} must be >= 0" for name in non_negative if getattr(self, name) < 0]
        if self.baseline_fraction is not None and not 0 < self.baseline_fraction <= 1:
            problems.append("baseline_fraction must be in (0, 1]")
        if not 0 < self.recovery_fraction <= 1:
            problems.append("recovery_fraction must be in (0, 1]")
        if self.baseline_fraction is not None and self.recovery_fraction < self.baseline_fraction:
            problems.append(
                "recovery_fraction must be >= baseline_fraction (recovery is the higher level)"
            )
        if self.floor_recovery_multiple < 1:
            problems.append("floor_recovery_multiple must be >= 1")
        if self.max_spread_bps is not None and not self.max_spread_bps > 0:
            problems.append("max_spread_bps must be > 0")
        if not 0 < self.spread_recovery_fraction <= 1:
            problems.append("spread_recovery_fraction must be in (0, 1]")
        if not self.engaged_baseline_slowdown >= 1:
            problems.append("engaged_baseline_slowdown must be >= 1 (inf freezes)")
        if not 0 <= self.vol_trade_weight <= 1:
            problems.append("vol_trade_weight must be in [0, 1]")
        if problems:
            raise ConfigError("detector config: " + "; ".join(problems))

    @property
    def uses_baseline(self) -> bool:
        """Whether any rule needs the baseline (the fraction or the drop-rate rule)."""
        return self.baseline_fraction is not None or self.max_depth_drop_per_s > 0

    @classmethod
    def from_market(cls, market: MarketSettings) -> DetectorConfig:
        """The detector for ``market``: its rules, dwell times and first band."""
        return cls(
            band_index=0,
            band_bps=float(market.bands_bps[0]),
            depth_floor_quote=market.depth_floor_quote,
            baseline_fraction=market.baseline_fraction,
            baseline_window_s=market.baseline_window_s,
            warmup_s=market.baseline_window_s,
            max_depth_drop_per_s=market.max_depth_drop_per_s,
            max_spread_bps=market.max_spread_bps,
            engage_dwell_s=market.engage_dwell_s,
            recovery_fraction=market.recovery_fraction,
            disengage_dwell_s=market.disengage_dwell_s,
        )
