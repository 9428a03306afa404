"""Training and evaluation data: replays of real recordings with stress overlays.

A :class:`RunPlan` is one replay of one recording, with zero or more seeded stress
overlays (:mod:`bot.feeds.stress`) nested on it, and the window of data time whose
samples it contributes. :func:`replay_trace` runs the book, the depth monitor, the
fracture detector (its own code and config: the labels are its episodes) and the
:class:`~bot.warning.features.FeatureTracker` over it and keeps, per book sample, the
features, the detector state and whether its baseline was ready, plus the episodes'
onsets and every arming period.

The split (:func:`plan_runs`): each recording given for training is cut in data time;
training runs place their overlays in the first part and contribute only its samples,
evaluation runs place theirs in the second part and contribute only its samples, with
different seeds. Recordings given as held out are evaluation only, whole. Each part
also has one run with no overlay: the real market as recorded.

Overlay parameters are drawn from wide ranges (kind, side, size, band, ramp, hold,
recovery; see :func:`overlay_spec`) so that the model cannot learn one overlay's shape;
some draws are near misses that thin the book without crossing the fracture level.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.book import OrderBook
from bot.clock import ManualClock
from bot.detect.config import DetectorConfig
from bot.detect.machine import DetectorState
from bot.detector import FractureDetector
from bot.errors import UserError
from bot.feeds.events import BookDelta, BookSnapshot, FeedState, FeedStatus, MarketEvent, Trade
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import apply_stress, parse_stress_spec
from bot.monitor import DepthMonitor
from bot.warning.features import FEATURES, FeatureTracker

NS_PER_S = 1_000_000_000
STATES: tuple[DetectorState, ...] = tuple(DetectorState)
STATE_CODE = {s: i for i, s in enumerate(STATES)}
CALM = STATE_CODE[DetectorState.CALM]

BUNDLED = "bundled"
"""The recording name that means the bundled sample (two chained files)."""
SLOT_SPACING_S = 110.0
"""Overlays in one run start at least this far apart: an episode (ramp <= 12 s, hold
<= 20 s, recovery <= 35 s, then the 10 s disengage dwell) is over well before the
next, and the baseline is back to normal."""
SLOT_SPAN_S = 95.0
"""An overlay's slot must fit in its part: start + this <= the part's end."""
FIRST_SLOT_S = 75.0
"""No overlay before this: the detector's baseline needs a minute of book (warm-up)."""


@dataclass(frozen=True, slots=True)
class Recording:
    """One replay's files (chained in order) under a short name."""

    name: str
    paths: tuple[Path, ...]

    @classmethod
    def parse(cls, text: str) -> Recording:
        """``bundled`` or ``a.gz[,b.gz...]`` (files chained in that order)."""
        if text == BUNDLED:
            return cls(BUNDLED, tuple(bundled_sample_paths()))
        paths = tuple(Path(p) for p in text.split(",") if p)
        if not paths:
            raise UserError(f"--data {text!r}: no file given")
        for p in paths:
            if not p.is_file():
                raise UserError(f"recording {p}: no such file")
        return cls("+".join(p.name for p in paths), paths)


@dataclass(frozen=True, slots=True)
class RunPlan:
    name: str
    recording: str
    part: str
    """``train`` or ``eval``."""
    window_s: tuple[float, float]
    """Data time (s from the first event) whose samples and onsets this run contributes."""
    stress: tuple[str, ...]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "recording": self.recording,
            "part": self.part,
            "window_s": list(self.window_s),
            "stress": list(self.stress),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPlan:
        w = d["window_s"]
        return cls(
            name=str(d["name"]),
            recording=str(d["recording"]),
            part=str(d["part"]),
            window_s=(float(w[0]), float(w[1])),
            stress=tuple(str(s) for s in d["stress"]),
            seed=int(d["seed"]),
        )


# ----------------------------------------------------------------------------- overlays


def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def overlay_spec(rng: random.Random, start_s: float) -> str | None:
    """One random overlay starting at ``start_s`` (None: leave the slot as recorded)."""
    kind = rng.choices(
        ("fracture", "wall-pull", "spread-blowout", None), weights=(0.6, 0.15, 0.1, 0.15)
    )[0]
    if kind is None:
        return None
    hold = rng.uniform(3.0, 20.0)
    recover = rng.uniform(5.0, 35.0)
    if kind == "fracture":
        params: dict[str, Any] = {
            "fraction": rng.uniform(0.45, 0.98),
            "band_bps": rng.uniform(6.0, 60.0),
            "side": rng.choice(("both", "bid", "ask")),
            "ramp_s": _loguniform(rng, 0.3, 12.0),
        }
    else:
        ramp = 0.0 if rng.random() < 0.3 else _loguniform(rng, 0.5, 12.0)
        if kind == "wall-pull":
            params = {
                "side": rng.choice(("bid", "ask")),
                "gap_bps": rng.uniform(8.0, 40.0),
                "ramp_s": ramp,
            }
        else:
            params = {"bps": rng.uniform(12.0, 40.0), "ramp_s": ramp}
    params.update(start_s=start_s, hold_s=hold, recover_s=recover)
    text = ",".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    spec = f"{kind}:{text}"
    parse_stress_spec(spec)  # validated now, not halfway through a replay
    return spec


def slot_starts(rng: random.Random, lo_s: float, hi_s: float, most: int = 3) -> list[float]:
    """Up to ``most`` overlay start times, uniform over ``[lo_s, hi_s]`` with room for a
    whole episode after each and :data:`SLOT_SPACING_S` between them.

    Uniform, not on a grid: every training fracture then sits on a different stretch
    of the real market, so the model cannot learn the recording's own background at a
    few fixed times instead of the fracture's approach.
    """
    first = max(lo_s + 5.0, FIRST_SLOT_S)
    last = hi_s - SLOT_SPAN_S
    fit = 0 if last < first else 1 + int((last - first) // SLOT_SPACING_S)
    k = min(most, fit)
    if k <= 0:
        return []
    k = rng.randint(1, k)
    # Sorted uniform draws in the room left after the gaps, then the gaps put back.
    room = last - (k - 1) * SLOT_SPACING_S
    draws = sorted(rng.uniform(first, room) for _ in range(k))
    return [round(u + i * SLOT_SPACING_S, 3) for i, u in enumerate(draws)]


def plan_runs(
    recordings: Sequence[tuple[str, float]],
    holdout: Sequence[tuple[str, float]] = (),
    *,
    train_runs: int,
    eval_runs: int,
    split: float,
    seed: int,
) -> list[RunPlan]:
    """Runs for (name, length in s) recordings: see the module doc for the split."""
    if not 0.1 <= split <= 0.9:
        raise UserError(f"split must be in [0.1, 0.9], got {split}")
    plans: list[RunPlan] = []

    def part(name: str, kind: str, lo: float, hi: float, n: int, base_seed: int) -> None:
        plans.append(RunPlan(f"{name}/{kind}-plain", name, kind, (lo, hi), (), 0))
        for i in range(n):
            run_seed = base_seed + i
            rng = random.Random(run_seed)
            specs = tuple(
                s for s in (overlay_spec(rng, t) for t in slot_starts(rng, lo, hi)) if s is not None
            )
            plans.append(RunPlan(f"{name}/{kind}-{i:02d}", name, kind, (lo, hi), specs, run_seed))

    for name, length in recordings:
        cut = round(length * split, 3)
        part(name, "train", 0.0, cut, train_runs, seed)
        part(name, "eval", cut, length, eval_runs, seed + 10_000)
    for name, length in holdout:
        part(name, "eval", 0.0, length, eval_runs, seed + 20_000)
    return plans


# ----------------------------------------------------------------------------- replay

_EVENTS: dict[tuple[Path, ...], list[MarketEvent]] = {}


async def load_events(recording: Recording) -> list[MarketEvent]:
    """The recording's events (synchronised as the bot replays them), cached per process."""
    key = tuple(p.resolve() for p in recording.paths)
    cached = _EVENTS.get(key)
    if cached is None:
        feed = ReplayFeed(list(recording.paths), clock=ManualClock())
        cached = [e async for e in feed.events()]
        _EVENTS[key] = cached
    return cached


def main_symbol(events: Sequence[MarketEvent]) -> str:
    """The symbol with the most book events (a recording may hold several)."""
    counts = Counter(e.symbol for e in events if isinstance(e, BookDelta | BookSnapshot))
    if not counts:
        raise UserError("the recording has no order book data")
    return counts.most_common(1)[0][0]


def span_s(events: Sequence[MarketEvent]) -> float:
    stamps = [e.ts_ns for e in events if not isinstance(e, FeedStatus)]
    return (max(stamps) - min(stamps)) / NS_PER_S if stamps else 0.0


@dataclass
class Trace:
    """Per book sample of one replay: time, features, detector state, baseline ready."""

    t0_ns: int
    ts_ns: npt.NDArray[np.int64]
    x: npt.NDArray[np.float64]
    state: npt.NDArray[np.int8]
    ready: npt.NDArray[np.bool_]
    onsets: npt.NDArray[np.int64]
    """Each episode's onset: when the fracture rule that led to engaging began to hold
    (the start of the arming that engaged; ``Episode.trigger.ts_ns``)."""
    armings: list[tuple[int, int, bool]] = field(default_factory=list)
    """(start, end, engaged) of every arming period (end: when it cleared or engaged)."""

    def t_s(self) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = (self.ts_ns - self.t0_ns) / NS_PER_S
        return out


async def _iterate(events: Sequence[MarketEvent]) -> AsyncIterator[MarketEvent]:
    for e in events:
        yield e


async def replay_trace(
    events: Sequence[MarketEvent],
    stress: Sequence[str],
    *,
    detector: DetectorConfig,
    bands_bps: Sequence[float],
    reference_notional_quote: float,
    symbol: str | None = None,
) -> Trace:
    """Replay ``events`` with the overlays ``stress`` nested in order (see module doc)."""
    symbol = symbol or main_symbol(events)
    stream: AsyncIterator[MarketEvent] = _iterate(events)
    for text in stress:
        stream = apply_stress(stream, parse_stress_spec(text), symbol=symbol)
    book = OrderBook(symbol, clock=ManualClock())
    monitor = DepthMonitor.for_bands(bands_bps, reference_notional_quote)
    det = FractureDetector(detector)
    feats = FeatureTracker(fracture_ratio=detector.baseline_fraction or 0.0)
    t0 = next(e.ts_ns for e in events)
    ts: list[int] = []
    rows: list[list[float]] = []
    states: list[int] = []
    ready: list[bool] = []
    onsets: list[int] = []
    armings: list[tuple[int, int, bool]] = []
    arming_since: int | None = None
    async for event in stream:
        if event.symbol != symbol:
            continue
        if isinstance(event, BookDelta | BookSnapshot):
            if book.apply(event) is not None:
                continue
            sample = monitor.observe(book, event.ts_ns)
            if sample is None:
                continue
            reading = det.update(sample)
            rows.append(feats.update(book, sample, reading))
            ts.append(reading.ts_ns)
            states.append(STATE_CODE[reading.state])
            ready.append(reading.baseline_ready)
            tr = reading.transition
            if tr is None:
                continue
            now = reading.ts_ns
            if tr.from_state is DetectorState.CALM and tr.to_state is not DetectorState.CALM:
                arming_since = now
            if tr.engaged:
                trigger = reading.episode_trigger
                onsets.append(trigger.ts_ns if trigger is not None else now)
                armings.append((arming_since if arming_since is not None else now, now, True))
                arming_since = None
            elif tr.to_state is DetectorState.CALM and tr.from_state is DetectorState.ARMING:
                armings.append((arming_since if arming_since is not None else now, now, False))
                arming_since = None
        elif isinstance(event, Trade):
            det.on_trade(event)
            feats.on_trade(event)
        elif isinstance(event, FeedStatus) and event.state in (
            FeedState.DISCONNECTED,
            FeedState.RESYNCING,
        ):
            book.invalidate(f"feed {event.state.value}")
    return Trace(
        t0_ns=t0,
        ts_ns=np.asarray(ts, dtype=np.int64),
        x=np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES)),
        state=np.asarray(states, dtype=np.int8),
        ready=np.asarray(ready, dtype=np.bool_),
        onsets=np.asarray(onsets, dtype=np.int64),
        armings=armings,
    )


def labels(trace: Trace, horizon_s: float) -> npt.NDArray[np.bool_]:
    """Per sample: does an episode's onset fall in ``(t, t + horizon_s]``?"""
    h = round(horizon_s * NS_PER_S)
    onsets = np.sort(trace.onsets)
    if not onsets.size:
        return np.zeros(trace.ts_ns.shape, dtype=np.bool_)
    idx = onsets.searchsorted(trace.ts_ns, side="right")
    nxt = onsets.take(idx, mode="clip")
    out: npt.NDArray[np.bool_] = (idx < onsets.size) & (nxt - trace.ts_ns <= h)
    return out


def row_mask(
    trace: Trace, window_s: tuple[float, float], horizon_s: float
) -> npt.NDArray[np.bool_]:
    """Samples a model learns from: CALM, baseline ready, inside the window, and with a
    whole horizon ahead inside it (so no label is cut off at the window's end)."""
    t = trace.t_s()
    out: npt.NDArray[np.bool_] = (
        (trace.state == CALM)
        & trace.ready
        & (t >= window_s[0])
        & (t <= window_s[1] - horizon_s)
    )
    return out
