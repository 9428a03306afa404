"""Event-level scores of a warning against the detector's own episodes.

For one run (a window of a replay): the *fractures* are the detector's episode onsets
in the window; an *alarm* is one stretch during which the warning is up (see
:class:`~bot.warning.alarm.Alarm`), counted when it starts inside the window.

* recall: share of fractures with the warning up at some time in ``[onset - H, onset]``;
  lead time: ``onset`` minus the first such time (0 when it went up at the onset);
* precision: share of alarms followed by a fracture by the time they end plus ``H``;
* false alarms per hour: the other alarms, per hour of CALM book in the window.

The same scoring serves three warnings: the model; the threshold detector itself
(its alarm is a fracture rule holding, ARMING: it is up *at* the onset, lead 0, and
its false alarms are the armings that cleared before the engage dwell); and a looser
threshold (depth / baseline under the detector's recovery fraction), to show what a
simpler early trigger gets.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.warning.alarm import Alarm
from bot.warning.dataset import CALM, NS_PER_S, STATES, Trace

MODEL = "model"
DETECTOR = "detector"
LOOSE = "loose-threshold"


@dataclass
class Score:
    """Counts for one warning on one run (or summed over runs)."""

    fractures: int = 0
    warned: int = 0
    leads_s: list[float] = field(default_factory=list)
    alarms: int = 0
    true_alarms: int = 0
    calm_s: float = 0.0
    armed_at_onset: int = 0
    """Fractures with the warning up when the fracture began (pre-arm would shorten
    their engage dwell)."""
    blips_while_up: list[float] = field(default_factory=list)
    """Durations (s) of armings that cleared by themselves while the warning was up
    (pre-arm with a dwell under that would have engaged on them)."""

    def add(self, other: Score) -> None:
        self.fractures += other.fractures
        self.warned += other.warned
        self.leads_s += other.leads_s
        self.alarms += other.alarms
        self.true_alarms += other.true_alarms
        self.calm_s += other.calm_s
        self.armed_at_onset += other.armed_at_onset
        self.blips_while_up += other.blips_while_up

    @property
    def precision(self) -> float | None:
        return self.true_alarms / self.alarms if self.alarms else None

    @property
    def recall(self) -> float | None:
        return self.warned / self.fractures if self.fractures else None

    @property
    def median_lead_s(self) -> float | None:
        return statistics.median(self.leads_s) if self.leads_s else None

    def recall_with_lead(self, lead_s: float) -> float | None:
        if not self.fractures:
            return None
        return sum(1 for x in self.leads_s if x >= lead_s) / self.fractures

    @property
    def false_alarms_per_hour(self) -> float | None:
        if self.calm_s <= 0:
            return None
        return (self.alarms - self.true_alarms) / (self.calm_s / 3600.0)

    def f_beta(self, beta: float) -> float:
        """Event-level F-score; ``beta`` > 1 weighs recall more."""
        p, r = self.precision, self.recall
        if not p or not r:
            return 0.0
        b2 = beta * beta
        return (1 + b2) * p * r / (b2 * p + r)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractures": self.fractures,
            "warned": self.warned,
            "leads_s": list(self.leads_s),
            "alarms": self.alarms,
            "true_alarms": self.true_alarms,
            "calm_s": self.calm_s,
            "armed_at_onset": self.armed_at_onset,
            "blips_while_up": list(self.blips_while_up),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "recall_lead_1s": self.recall_with_lead(1.0),
            "median_lead_s": self.median_lead_s,
            "false_alarms_per_hour": self.false_alarms_per_hour,
            "fractures": self.fractures,
            "alarms": self.alarms,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        return cls(
            fractures=int(d["fractures"]),
            warned=int(d["warned"]),
            leads_s=[float(x) for x in d["leads_s"]],
            alarms=int(d["alarms"]),
            true_alarms=int(d["true_alarms"]),
            calm_s=float(d["calm_s"]),
            armed_at_onset=int(d.get("armed_at_onset", 0)),
            blips_while_up=[float(x) for x in d.get("blips_while_up", [])],
        )


def total(scores: Iterable[Score]) -> Score:
    out = Score()
    for s in scores:
        out.add(s)
    return out


def alarm_series(
    trace: Trace, probability: npt.NDArray[np.float64], threshold: float, hold_s: float
) -> npt.NDArray[np.bool_]:
    """The alarm after each sample, by the bot's own rule."""
    alarm = Alarm.of(threshold, hold_s)
    states = [STATES[c] for c in trace.state.tolist()]
    up = [
        alarm.step(t, p, s)
        for t, p, s in zip(trace.ts_ns.tolist(), probability.tolist(), states, strict=True)
    ]
    return np.asarray(up, dtype=np.bool_)


def _intervals(ts: Sequence[int], up: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, end) of each stretch the alarm is up (end: the first sample it is down)."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for t, u in zip(ts, up, strict=True):
        if u and start is None:
            start = t
        elif not u and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, ts[-1]))
    return out


def _calm_s(trace: Trace, lo: int, hi: int) -> float:
    ts = trace.ts_ns
    if ts.size < 2:
        return 0.0
    dt = np.diff(ts)
    calm = (trace.state[:-1] == CALM) & trace.ready[:-1] & (ts[:-1] >= lo) & (ts[:-1] < hi)
    return float(dt[calm].sum()) / NS_PER_S


def score(
    trace: Trace,
    window_s: tuple[float, float],
    horizon_s: float,
    intervals: Sequence[tuple[int, int]],
) -> Score:
    """Score alarm ``intervals`` against the trace's onsets within ``window_s``."""
    lo = trace.t0_ns + round(window_s[0] * NS_PER_S)
    hi = trace.t0_ns + round(window_s[1] * NS_PER_S)
    h = round(horizon_s * NS_PER_S)
    onsets = sorted(int(o) for o in trace.onsets.tolist() if lo <= o <= hi)
    s = Score(fractures=len(onsets), calm_s=_calm_s(trace, lo, hi))
    for o in onsets:
        first: int | None = None
        for a, b in intervals:
            if a <= o and b >= o - h:  # up at some time in [o - h, o]
                t = max(a, o - h)
                first = t if first is None else min(first, t)
        if first is not None:
            s.warned += 1
            s.leads_s.append((o - first) / NS_PER_S)
    for a, b in intervals:
        if not lo <= a <= hi:
            continue
        s.alarms += 1
        if any(a <= o <= b + h for o in onsets):
            s.true_alarms += 1
    return s


def score_alarm(
    trace: Trace, up: npt.NDArray[np.bool_], window_s: tuple[float, float], horizon_s: float
) -> Score:
    ts = trace.ts_ns.tolist()
    s = score(trace, window_s, horizon_s, _intervals(ts, up.tolist()))
    # Pre-arm bookkeeping: the alarm at the sample just before each arming began.
    lo = trace.t0_ns + round(window_s[0] * NS_PER_S)
    hi = trace.t0_ns + round(window_s[1] * NS_PER_S)
    tsa = trace.ts_ns
    for start, end, engaged in trace.armings:
        if not lo <= start <= hi:
            continue
        i = int(tsa.searchsorted(start, side="left")) - 1
        was_up = i >= 0 and bool(up[i])
        if not was_up:
            continue
        if engaged:
            s.armed_at_onset += 1
        else:
            s.blips_while_up.append((end - start) / NS_PER_S)
    return s


def score_detector(trace: Trace, window_s: tuple[float, float], horizon_s: float) -> Score:
    """The threshold detector as a warning: up while a fracture rule holds (ARMING)."""
    intervals = [(a, b) for a, b, _ in trace.armings]
    return score(trace, window_s, horizon_s, intervals)


def loose_alarm(trace: Trace, ratio_below: float, hold_s: float) -> npt.NDArray[np.bool_]:
    """A looser threshold as a warning: depth / baseline (``ratio_min``) under ``ratio_below``."""
    p = (trace.x[:, 0] < ratio_below).astype(np.float64)
    return alarm_series(trace, p, 0.5, hold_s)
