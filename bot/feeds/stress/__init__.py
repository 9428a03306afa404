"""Stress overlays for replays: turn a calm real recording into a documented stress test.

An overlay wraps a feed's event stream and rewrites it; the recording itself is never
changed. ``parse_stress_spec("fracture:fraction=0.8")`` gives a validated spec,
:class:`StressedFeed` wraps any feed (it is a feed itself, so the engine takes it as
is), :func:`apply_stress` wraps a bare event iterator. Same input and same spec (seed
included) give the identical event stream. See ``docs/stress.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.clock import NS_PER_SECOND
from bot.feeds.events import BookDelta, BookSnapshot, FeedState, FeedStatus, MarketEvent
from bot.feeds.stress.scale import BookScaler, ScalePlan
from bot.feeds.stress.specs import (
    STRESS_SCENARIOS,
    FeedStall,
    Fracture,
    SpreadBlowout,
    StressSpec,
    WallPull,
    format_spec,
    format_stress_list,
    parse_stress_spec,
    resolve,
    spec_params,
)
from bot.feeds.stress.stall import Staller

__all__ = [
    "STRESS_SCENARIOS",
    "FeedStall",
    "Fracture",
    "SpreadBlowout",
    "StressSpec",
    "StressStats",
    "StressedFeed",
    "StressedFeedStats",
    "WallPull",
    "apply_stress",
    "format_spec",
    "format_stress_list",
    "parse_stress_spec",
    "resolve",
    "spec_params",
]


@dataclass
class StressStats:
    """What an overlay did. Updated live while the stream runs."""

    spec: str
    """The spec as given (canonical text)."""
    resolved: dict[str, Any]
    """Parameter values actually used (after jitter)."""
    symbol: str | None = None
    """The symbol stressed (None = every symbol)."""
    data_start_ts_ns: int | None = None
    """Time zero of the scenario: the first event of the stream."""
    window_start_ts_ns: int | None = None
    """Scheduled start and end of the disturbance, absolute."""
    window_end_ts_ns: int | None = None
    reached_start: bool = False
    """False if the data ended before the scenario began: nothing was stressed."""
    reached_end: bool = False
    """True once the stream ran past the scheduled end (the book is whole again)."""
    events_rewritten: int = 0
    """Depth events emitted with scaled sizes (scaling scenarios)."""
    rows_added: int = 0
    """Rows sent beyond the recorded ones, to re-scale or restore levels."""
    true_book_drops: dict[str, int] = field(default_factory=dict)
    """Depth events the overlay's own true book refused; passed on as recorded."""
    withheld: Counter[str] = field(default_factory=Counter)
    """Events not delivered, by kind (feed stall)."""
    resync_snapshots: int = 0
    """Snapshots sent when the stalled stream resumed."""
    resumed_ts_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "resolved": dict(self.resolved),
            "symbol": self.symbol,
            "data_start_ts_ns": self.data_start_ts_ns,
            "window_start_ts_ns": self.window_start_ts_ns,
            "window_end_ts_ns": self.window_end_ts_ns,
            "reached_start": self.reached_start,
            "reached_end": self.reached_end,
            "events_rewritten": self.events_rewritten,
            "rows_added": self.rows_added,
            "true_book_drops": dict(self.true_book_drops),
            "withheld": dict(self.withheld),
            "resync_snapshots": self.resync_snapshots,
            "resumed_ts_ns": self.resumed_ts_ns,
        }


def new_stats(spec: StressSpec, symbol: str | None = None) -> StressStats:
    r = resolve(spec)
    return StressStats(
        spec=format_spec(spec),
        resolved={p.name: getattr(r, p.name) for p in spec_params(type(r))},
        symbol=symbol,
    )


async def apply_stress(
    events: AsyncIterator[MarketEvent],
    spec: StressSpec,
    *,
    symbol: str | None = None,
    stats: StressStats | None = None,
) -> AsyncIterator[MarketEvent]:
    """``events`` with the stress scenario ``spec`` applied to ``symbol`` (None = all).

    Other symbols' events pass through untouched. Times in the spec count from the
    first event. ``stats`` (optional) is filled in as the stream runs.
    """
    stats = stats if stats is not None else new_stats(spec, symbol)
    r = resolve(spec)
    if isinstance(r, FeedStall):
        gen = _stall(events, r, symbol, stats)
    else:
        gen = _scale(events, r, symbol, stats)
    async for event in gen:
        yield event


async def _scale(
    events: AsyncIterator[MarketEvent],
    spec: Fracture | WallPull | SpreadBlowout,
    symbol: str | None,
    stats: StressStats,
) -> AsyncIterator[MarketEvent]:
    plan = ScalePlan.of(spec)
    scalers: dict[str, BookScaler] = {}
    t0: int | None = None
    now = 0
    start_s, end_s = plan.profile.start_s, plan.profile.end_s
    done = False
    try:
        async for event in events:
            if done:
                # The scenario is over and every level is back to its true size: the
                # rest of the stream is the recording itself, so stop tracking it.
                yield event
                continue
            ts = event.ts_ns
            if t0 is None:
                t0 = now = ts
                _schedule(stats, t0, start_s, end_s)
            elif ts > now:
                now = ts  # buffered diffs released after a snapshot carry older stamps
            sym = event.symbol
            if symbol is not None and sym != symbol:
                yield event
                continue
            if isinstance(event, BookSnapshot | BookDelta):
                scaler = scalers.get(sym)
                if scaler is None:
                    scaler = scalers[sym] = BookScaler(sym)
                t_s = (now - t0) / NS_PER_SECOND
                if t_s >= start_s:
                    stats.reached_start = True
                    stats.reached_end = t_s >= end_s
                bid, ask = plan.at(t_s)
                rewritten, rows = scaler.rewritten, scaler.rows_added
                out = scaler.process(event, bid, ask)
                stats.events_rewritten += scaler.rewritten - rewritten
                stats.rows_added += scaler.rows_added - rows
                yield out
                done = stats.reached_end and not any(s.scaled_levels for s in scalers.values())
                continue
            if isinstance(event, FeedStatus) and event.state in (
                FeedState.DISCONNECTED,
                FeedState.RESYNCING,
            ):
                scaler = scalers.get(sym)
                if scaler is not None:
                    scaler.invalidate(f"feed {event.state.value}")
            yield event
    finally:
        drops: Counter[str] = Counter()
        for scaler in scalers.values():
            drops.update(scaler.true_drops)
        stats.true_book_drops = dict(drops)


async def _stall(
    events: AsyncIterator[MarketEvent],
    spec: FeedStall,
    symbol: str | None,
    stats: StressStats,
) -> AsyncIterator[MarketEvent]:
    staller: Staller | None = None
    t0: int | None = None
    now = 0
    async for event in events:
        ts = event.ts_ns
        if t0 is None:
            t0 = now = ts
            end_s = spec.start_s + spec.stall_s
            _schedule(stats, t0, spec.start_s, end_s)
            assert stats.window_start_ts_ns is not None
            assert stats.window_end_ts_ns is not None
            staller = Staller(
                start_ns=stats.window_start_ts_ns,
                end_ns=stats.window_end_ts_ns,
                announce=spec.announce,
                detail=f"stress feed-stall: no data for {spec.stall_s:g} s",
            )
        elif ts > now:
            now = ts
        assert staller is not None
        if (symbol is not None and event.symbol != symbol) or staller.finished(now):
            yield event
            continue
        stats.reached_start = stats.reached_start or now >= staller.start_ns
        stats.reached_end = now >= staller.end_ns
        for out in staller.handle(event, now):
            yield out
        stats.withheld = staller.withheld
        stats.resync_snapshots = staller.resync_snapshots
        stats.resumed_ts_ns = staller.resumed_ts_ns


def _schedule(stats: StressStats, t0: int, start_s: float, end_s: float) -> None:
    stats.data_start_ts_ns = t0
    stats.window_start_ts_ns = t0 + round(start_s * NS_PER_SECOND)
    stats.window_end_ts_ns = t0 + round(end_s * NS_PER_SECOND)


class _Feed(Protocol):
    def events(self) -> AsyncIterator[MarketEvent]: ...


@dataclass
class StressedFeedStats:
    """The wrapped feed's stats plus the overlay's, for the run summary."""

    feed: object | None
    stress: StressStats

    @property
    def malformed(self) -> Mapping[str, int]:
        raw = getattr(self.feed, "malformed", None)
        return raw if isinstance(raw, Mapping) else {}

    def to_dict(self) -> dict[str, Any]:
        exporter = getattr(self.feed, "to_dict", None)
        inner = exporter() if callable(exporter) else {}
        out: dict[str, Any] = dict(inner) if isinstance(inner, Mapping) else {}
        out["stress"] = self.stress.to_dict()
        return out


class StressedFeed:
    """A feed with a stress scenario applied: ``StressedFeed(ReplayFeed(...), spec)``.

    ``events()`` is the wrapped feed's stream, rewritten; ``stats`` holds the wrapped
    feed's stats (``stats.feed``) and the overlay's (``stats.stress``).
    """

    def __init__(self, feed: _Feed, spec: StressSpec, *, symbol: str | None = None) -> None:
        self.feed = feed
        self.spec = spec
        self.symbol = symbol
        self.stats = StressedFeedStats(getattr(feed, "stats", None), new_stats(spec, symbol))

    def events(self) -> AsyncIterator[MarketEvent]:
        return apply_stress(
            self.feed.events(), self.spec, symbol=self.symbol, stats=self.stats.stress
        )
