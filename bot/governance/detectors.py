"""A policy's activation criteria applied to a detector: at start, at run time, in a replay.

The three must agree exactly, or a replay would dispute decisions the bot made
correctly: :func:`detector_config` is the one mapping from a policy onto a
:class:`~bot.detect.config.DetectorConfig` (the same as ``DetectorConfig.from_market``
on the settings the policy produced), and :func:`reconfigure` the one way a running
detector takes a new one while keeping everything it has learnt (baselines,
volatility, its state and dwell timers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.detect.config import DetectorConfig
from bot.detector import FractureDetector
from bot.governance import snapshot
from bot.governance.policy import Policy

NS_PER_S = 1_000_000_000


def detector_config(base: DetectorConfig, policy: Policy, symbol: str) -> DetectorConfig:
    """``base`` (the market's operational detector config) with ``policy``'s criteria."""
    a = policy.activation_for(symbol)
    return dataclasses.replace(
        base,
        depth_floor_quote=a["depth_floor_quote"],
        baseline_fraction=a["baseline_fraction"],
        baseline_window_s=a["baseline_window_s"],
        # As DetectorConfig.from_market: the baseline rules wait one time constant.
        warmup_s=a["baseline_window_s"],
        max_depth_drop_per_s=a["max_depth_drop_per_s"],
        max_spread_bps=a["max_spread_bps"],
        engage_dwell_s=a["engage_dwell_s"],
        recovery_fraction=a["recovery_fraction"],
        disengage_dwell_s=a["disengage_dwell_s"],
    )


def reconfigure(detector: FractureDetector, config: DetectorConfig) -> None:
    """Give a running detector new thresholds without losing what it has learnt.

    The detector reads most of its config on every update; what it caches at
    construction (warm-up and dwell times in ns, step caps) is updated here. A missing
    attribute means the detector changed shape: fail loudly rather than half-apply.
    """
    missing = [a for a in ("_warmup_ns", "machine", "_base", "_drop") if not hasattr(detector, a)]
    if missing:
        raise RuntimeError(
            f"FractureDetector has no {', '.join(missing)}: update bot.governance.detectors"
        )
    detector.config = config
    detector._warmup_ns = round(config.warmup_s * NS_PER_S)
    detector.machine.engage_dwell_ns = round(config.engage_dwell_s * NS_PER_S)
    detector.machine.disengage_dwell_ns = round(config.disengage_dwell_s * NS_PER_S)
    for base in detector._base:
        base.max_step_ns = round(config.max_baseline_step_s * NS_PER_S)
    detector._drop.lookback_s = config.drop_lookback_s


def checkpoint(detector: FractureDetector) -> dict[str, Any]:
    """The detector's state (not its config) as JSON values."""
    state: dict[str, Any] = snapshot.dump(detector, skip=frozenset({"config"}))
    return state


def restore(state: dict[str, Any], config: DetectorConfig) -> FractureDetector:
    """A detector in the :func:`checkpoint`ed state, running ``config``."""
    detector = FractureDetector(config)
    snapshot.restore(detector, state)
    reconfigure(detector, config)
    return detector
