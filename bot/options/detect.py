"""The fracture detector on an option's vega depth.

The detector (:class:`bot.detector.FractureDetector`, its baseline, rules and dwell
state machine unchanged) reads one number per side: the depth in its band. For an option
that number is the **vega notional** within ``band_vol_points`` of the mid's implied
volatility (USD per vol point, :func:`bot.risk.options.option_band_depth`), so a
fracture is "the vega the book can absorb fell below a fraction of its baseline" -- ten
far out-of-the-money contracts are not the depth ten at-the-money ones are. The spread
rule is off (option spreads are wide in bps of premium by nature).
"""

from __future__ import annotations

import numpy as np

from bot.detect.config import DetectorConfig
from bot.monitor import DepthSample
from bot.options.settings import OptionDetectorSettings
from bot.risk.options import OptionDepth


def detector_config(s: OptionDetectorSettings, band_vol_points: float) -> DetectorConfig:
    return DetectorConfig(
        band_index=0,
        band_bps=band_vol_points,
        depth_floor_quote=s.depth_floor_vega,
        baseline_fraction=s.baseline_fraction,
        baseline_window_s=s.baseline_window_s,
        warmup_s=s.baseline_window_s,
        max_spread_bps=None,
        engage_dwell_s=s.engage_dwell_s,
        recovery_fraction=s.recovery_fraction,
        disengage_dwell_s=s.disengage_dwell_s,
    )


def vega_sample(depth: OptionDepth, book_sample: DepthSample) -> DepthSample:
    """``book_sample`` with one band whose (base, quote) columns are (contracts, vega)."""
    arr = np.array(
        [
            [[depth.bid.contracts, depth.bid.vega_quote]],
            [[depth.ask.contracts, depth.ask.vega_quote]],
        ],
        dtype=np.float64,
    )
    return DepthSample(
        ts_ns=book_sample.ts_ns,
        best_bid=book_sample.best_bid,
        best_ask=book_sample.best_ask,
        mid=book_sample.mid,
        spread_bps=book_sample.spread_bps,
        bands_bps=(depth.band_vol_points,),
        depth=arr,
        buy_slippage_bps=None,
        sell_slippage_bps=None,
    )
