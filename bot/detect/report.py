"""What the detector says: triggers, recovery evidence, transitions, per-update output.

All frozen and small; ``to_dict`` gives the JSON the journal and summary write.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.book import Side
from bot.detect.machine import Cause, DetectorState


class Rule(StrEnum):
    FLOOR = "floor"
    """Quote depth below the absolute floor."""
    BASELINE = "baseline"
    """Quote depth below ``baseline_fraction`` x its baseline."""
    DROP_RATE = "drop_rate"
    """Quote depth falling faster than ``max_depth_drop_per_s`` (fraction of baseline/s)."""
    SPREAD = "spread"
    """Spread wider than ``max_spread_bps``."""


RULE_ORDER = (Rule.FLOOR, Rule.BASELINE, Rule.DROP_RATE, Rule.SPREAD)
"""When several rules hold at once, the one reported first (sides: bid, then ask)."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """One fracture rule holding: which, on which side, and the numbers behind it.

    ``value`` and ``threshold`` are in the rule's unit: quote notional (floor,
    baseline), fraction of baseline per second (drop rate), bps (spread). ``value``
    crossed ``threshold`` (below it, except for drop rate and spread: above).
    """

    rule: Rule
    side: Side | None
    """None for the spread rule, which is about both sides."""
    value: float
    threshold: float
    baseline: float | None
    """The side's depth baseline when the rule fired (None for spread, or no baseline yet)."""
    depth: float | None
    """The side's quote depth when the rule fired (None for spread)."""
    ts_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.value,
            "side": None if self.side is None else self.side.value,
            "value": self.value,
            "threshold": self.threshold,
            "baseline": self.baseline,
            "depth": self.depth,
            "ts_ns": self.ts_ns,
        }


@dataclass(frozen=True, slots=True)
class Recovery:
    """The evidence an episode ended on: recovery held from ``since_ns`` to ``ts_ns``."""

    since_ns: int
    ts_ns: int
    depth: tuple[float, float]
    """(bid, ask) quote depth at the end."""
    baseline: tuple[float | None, float | None]
    ratio: tuple[float | None, float | None]
    """(bid, ask) depth / baseline at the end."""
    min_ratio: float | None
    """Lowest depth/baseline on either side while the recovery held."""
    spread_bps: float
    levels: tuple[float, float]
    """(bid, ask) depth each side had to stay at or above."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "since_ns": self.since_ns,
            "ts_ns": self.ts_ns,
            "held_s": (self.ts_ns - self.since_ns) / 1e9,
            "depth": list(self.depth),
            "baseline": list(self.baseline),
            "ratio": list(self.ratio),
            "min_ratio": self.min_ratio,
            "spread_bps": self.spread_bps,
            "levels": list(self.levels),
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change; ``causes`` lists each table move it took (two for a zero dwell)."""

    from_state: DetectorState
    to_state: DetectorState
    ts_ns: int
    causes: tuple[Cause, ...]
    trigger: Trigger | None
    """The rule holding now (on arming/engaging: the one that started the episode)."""
    recovery: Recovery | None = None
    """Set when the transition ends an episode (to CALM from an active state)."""

    @property
    def engaged(self) -> bool:
        """An episode started: the backstop should start quoting."""
        return self.to_state.active and not self.from_state.active

    @property
    def disengaged(self) -> bool:
        """An episode ended: the backstop should step back."""
        return self.from_state.active and not self.to_state.active


@dataclass(slots=True, unsafe_hash=True)
class DetectorUpdate:
    """The detector's reading after one book update.

    Not frozen (built on every book update; a frozen constructor costs ~5x as much),
    but nothing assigns to an update once built; it hashes as the frozen one did.
    """

    ts_ns: int
    state: DetectorState
    transition: Transition | None
    trigger: Trigger | None
    """The first rule holding now (see :data:`RULE_ORDER`), or None."""
    depth: tuple[float, float]
    """(bid, ask) quote depth in the watched band (own orders excluded if given)."""
    baseline: tuple[float | None, float | None]
    ratio: tuple[float | None, float | None]
    """(bid, ask) depth / baseline; None before the baseline has any data."""
    baseline_ready: bool
    """Whether warm-up is over and baseline-relative rules are live."""
    spread_bps: float
    health: float
    """1 = every recovery level met, toward 0 as depth empties or the spread widens
    (see :class:`~bot.detector.FractureDetector`)."""
    sigma_bps: float | None
    """Volatility, bps per sqrt(second); None while warming up."""
    engaged_since_ns: int | None
    """When the current episode engaged (None when not active)."""
    episode_trigger: Trigger | None
    """The trigger that started the current episode (None when not active)."""

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def stress(self) -> float:
        """``1 - health``: 0 on a healthy book, toward 1 as it empties."""
        return 1.0 - self.health
