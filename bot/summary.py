"""The end-of-run summary: what the bot saw, what it refused, how thin the book got."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.clock import NS_PER_SECOND
from bot.engine import Engine


def iso_ns(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    return datetime.fromtimestamp(ts_ns / NS_PER_SECOND, tz=UTC).isoformat(timespec="milliseconds")


def stats_dict(stats: object) -> dict[str, Any]:
    """A feed's stats as plain JSON-able data, whatever shape the feed keeps them in."""
    raw: Mapping[str, Any]
    exporter = getattr(stats, "as_dict", None) or getattr(stats, "to_dict", None)
    if callable(exporter):
        raw = exporter()
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        # Not dataclasses.asdict: it rebuilds Counters from (key, value) pairs.
        raw = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    else:
        raw = vars(stats)
    return {str(k): _jsonable(v) for k, v in raw.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class RunSummary:
    mode: str
    source: str
    events: dict[str, int]
    book_updates: int
    dropped: dict[str, int]
    """Inputs refused, by reason: the books' drops plus the feed's malformed lines."""
    gaps: int
    ignored_symbols: dict[str, int]
    first_ts: str | None
    last_ts: str | None
    span_s: float
    wall_s: float
    markets: dict[str, dict[str, Any]]
    feed: dict[str, Any]
    trading: dict[str, Any] | None = None
    """Strategy, inventory, episodes and order counts per market (paper trading)."""

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["total_events"] = self.total_events
        out["total_dropped"] = self.total_dropped
        return out


def summarize(
    engine: Engine,
    *,
    mode: str,
    source: str,
    wall_s: float,
    feed_stats: object | None = None,
    feed_malformed: Counter[str] | None = None,
    trading: dict[str, Any] | None = None,
) -> RunSummary:
    dropped: Counter[str] = Counter()
    markets: dict[str, dict[str, Any]] = {}
    book_updates = gaps = 0
    for symbol, market in engine.markets.items():
        book, monitor = market.book, market.monitor
        book_updates += book.updates_applied
        gaps += book.gaps
        for reason, count in book.drops.items():
            if count:
                dropped[reason.value] += count
        last = monitor.last
        markets[symbol] = {
            "book_updates": book.updates_applied,
            "book_state": book.state.value,
            "drops": {r.value: c for r, c in book.drops.items() if c},
            "gaps": book.gaps,
            "samples": monitor.samples,
            "bands_bps": list(monitor.bands_bps),
            "min_depth": monitor.lows_dict(),
            "max_spread_bps": monitor.max_spread_bps,
            "last": None
            if last is None
            else {
                "ts": iso_ns(last.ts_ns),
                "best_bid": last.best_bid,
                "best_ask": last.best_ask,
                "spread_bps": last.spread_bps,
            },
        }
    for why, count in (feed_malformed or Counter()).items():
        dropped[f"malformed:{why}"] += count
    first, last_ts = engine.first_ts_ns, engine.last_ts_ns
    span = (last_ts - first) / NS_PER_SECOND if first is not None and last_ts is not None else 0.0
    return RunSummary(
        mode=mode,
        source=source,
        events=dict(engine.events),
        book_updates=book_updates,
        dropped=dict(dropped),
        gaps=gaps,
        ignored_symbols=dict(engine.ignored_symbols),
        first_ts=iso_ns(first),
        last_ts=iso_ns(last_ts),
        span_s=span,
        wall_s=wall_s,
        markets=markets,
        feed=stats_dict(feed_stats) if feed_stats is not None else {},
        trading=_jsonable(trading) if trading is not None else None,
    )
