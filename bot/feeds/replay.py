"""Replay of recorded market data: files -> normalised events, on a manual clock.

Reads hftbacktest Binance captures (:mod:`bot.feeds.binance_raw`) and the project's own
JSONL recordings (:mod:`bot.feeds.jsonl`), recognised by content, gzip or not. Several
files are merged by receive time, so chained files (``_20240808`` then ``_20240809``,
one continuous book) and files of different symbols recorded side by side both replay
as they were received. Depth passes through one :class:`DepthSynchronizer` per symbol,
so the book sees a snapshot first and no diff the snapshot already holds.

Bad lines never stop a replay: they are counted in :attr:`ReplayFeed.stats` by reason.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import io
import math
import zlib
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from operator import attrgetter
from pathlib import Path
from typing import cast

from bot.clock import NS_PER_SECOND, Clock, ManualClock, WallClock
from bot.errors import UserError
from bot.feeds.binance_raw import BinanceMarket, BookTicker, RawEvent, iter_capture, sniff_capture
from bot.feeds.events import BookDelta, BookSnapshot, FeedState, FeedStatus, MarketEvent, Trade
from bot.feeds.jsonl import JsonlWriter, iter_jsonl, read_header
from bot.feeds.sync import DepthSynchronizer

BUNDLED_SAMPLE = ("spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz")
"""Binance spot BTCUSDT, 2024-08-08 23:54:13 -> 2024-08-09 00:05:04 UTC (hftbacktest, MIT)."""

_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_LINES = 2000
_READ_CHUNK = 1 << 15
"""Decompressed bytes split into lines at a time. The message whose line starts a chunk
pays for reading and splitting all of it, and large chunks slow other messages too (at
256 KiB, ~360 of the bundled sample's 26,399 took over 150 us, for its ~100 chunk reads;
p99 163 us). At 32 KiB: 5-8 over 150 us, p99 87 us. Smaller chunks cost throughput
(the full pipeline: 130k messages/s at 256 KiB, 116-121k at 32 KiB, 104-112k at 16 KiB;
docs/benchmarks.md, Reaction, session 11)."""
_DISK_READ = 1 << 18
"""Bytes an uncompressed recording is read from the disk at a time: a system call per
16 KiB chunk cost 5% more parse time than this at 50 markets."""
_MIN_SLEEP_NS = 1_000_000
"""Pacing sleeps only once the replay is at least this far ahead of the wall clock:
sleeping per event for sub-ms gaps would cost more than the gap."""
_YIELD_EVERY = 1024
"""At full speed, hand the event loop a turn this often so other tasks (progress,
signals) still run during a replay that never waits for anything."""

_KIND: dict[type, str] = {
    BookSnapshot: "snapshot",
    BookDelta: "delta",
    Trade: "trade",
    FeedStatus: "status",
}


def bundled_sample_paths() -> list[Path]:
    """The bundled real sample (two chained spot BTCUSDT captures), in replay order."""
    base = resources.files("bot") / "data"
    paths = []
    for name in BUNDLED_SAMPLE:
        res = base / name
        if not isinstance(res, Path):  # pragma: no cover - only for zipped installs
            raise UserError(f"bundled sample {name} is not a plain file ({res}); reinstall")
        paths.append(res)
    return paths


class ReplayFormat(StrEnum):
    HFTBACKTEST_BINANCE = "hftbacktest-binance"
    JSONL = "backstop-jsonl"


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """What a recording is, from its first lines."""

    path: Path
    format: ReplayFormat
    compressed: bool
    raw_symbol: str | None = None
    """Binance id of a capture's symbol (``None`` for JSONL: each line names its own)."""
    market: BinanceMarket | None = None
    """Binance market kind of a capture (spot / usdm / coinm), from its depth diffs."""
    first_ts_ns: int | None = None


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == _GZIP_MAGIC


@contextmanager
def _open_lines(path: Path, malformed: Counter[str]) -> Iterator[Iterator[bytes]]:
    """The file's lines (without newline), gzip or not.

    A truncated or corrupt gzip stream ends the file and is counted as
    ``truncated_file``: a recorder killed mid-write leaves exactly that, and everything
    before the cut is good data. Lines are split from decompressed chunks of
    :data:`_READ_CHUNK` bytes, which is both faster than ``GzipFile.readline`` and loses
    at most the cut line.
    """
    # An uncompressed file is read from the disk in large pieces, split in small ones.
    f: io.BufferedIOBase = (
        gzip.GzipFile(path, "rb")
        if _is_gzip(path)
        else io.BufferedReader(io.FileIO(path, "rb"), buffer_size=_DISK_READ)
    )
    with f:
        yield _split_lines(f, malformed)


def _split_lines(f: io.BufferedIOBase, malformed: Counter[str]) -> Iterator[bytes]:
    rest = b""
    try:
        while chunk := f.read1(_READ_CHUNK):
            lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
            rest = lines.pop()
            yield from lines
    except (EOFError, zlib.error, gzip.BadGzipFile):
        malformed["truncated_file"] += 1
        return
    if rest:
        yield rest


def sniff_recording(path: Path | str) -> RecordingInfo:
    """Recognises a recording by content. Raises :class:`UserError` naming the file."""
    path = Path(path)
    try:
        compressed = _is_gzip(path)
        head: list[bytes] = []
        with _open_lines(path, Counter()) as lines:
            for line in lines:
                head.append(line)
                if len(head) >= _SNIFF_LINES:
                    break
    except FileNotFoundError:
        raise UserError(f"replay file {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"replay file {path}: is a directory, not a recording") from None
    except OSError as e:
        raise UserError(f"replay file {path}: cannot read it ({e.strerror or e})") from None
    first = next((line for line in head if line.strip()), None)
    if first is None:
        raise UserError(f"replay file {path}: empty, no data to replay")
    stripped = first.lstrip()
    sp = stripped.find(b" ")
    if 0 < sp <= 20 and stripped[:sp].isdigit() and stripped[sp + 1 : sp + 2] == b"{":
        info = sniff_capture(head)
        return RecordingInfo(
            path=path,
            format=ReplayFormat.HFTBACKTEST_BINANCE,
            compressed=compressed,
            raw_symbol=info.raw_symbol,
            market=info.market,
            first_ts_ns=info.first_ts_ns,
        )
    try:
        header = read_header(stripped)
    except ValueError as e:
        raise UserError(f"replay file {path}: {e}") from None
    if header is not None:
        return RecordingInfo(path=path, format=ReplayFormat.JSONL, compressed=compressed)
    shown = first[:60].decode("utf-8", "replace").strip()
    raise UserError(
        f"replay file {path}: unknown format (first line starts {shown!r}); expected an "
        "hftbacktest Binance capture ('<receive_ns> <json>' lines) or a backstop JSONL "
        "recording (docs/replay-format.md), optionally gzipped"
    )


def iter_recording(
    info: RecordingInfo,
    *,
    skipped: Counter[str],
    malformed: Counter[str],
    symbol_map: Mapping[str, str] | None = None,
    book_tickers: bool = False,
) -> Generator[RawEvent | FeedStatus | BookTicker, None, None]:
    """One recording's events in file order, not synchronised (snapshots where they were
    received). ``book_tickers`` applies to captures only."""
    with _open_lines(info.path, malformed) as lines:
        if info.format is ReplayFormat.HFTBACKTEST_BINANCE:
            yield from iter_capture(
                lines,
                skipped=skipped,
                malformed=malformed,
                symbol_map=symbol_map,
                default_symbol=info.raw_symbol,
                book_tickers=book_tickers,
            )
        else:
            yield from iter_jsonl(
                lines, skipped=skipped, malformed=malformed, symbol_map=symbol_map
            )


@dataclass
class ReplayStats:
    """What a replay read, yielded and dropped. Updated live while the replay runs."""

    files: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    parsed: int = 0
    """Lines that became events (before synchronisation)."""
    events: Counter[str] = field(default_factory=Counter)
    """Events yielded, by kind: snapshot, delta, trade, status."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Good lines the bot does not use, by reason (``book_ticker``, ``header``, ...)."""
    malformed: Counter[str] = field(default_factory=Counter)
    """Lines dropped as unusable, by reason (``invalid_json``, ``missing_field``, ...)."""
    stale_deltas: int = 0
    """Diffs dropped by synchronisation: already contained in the snapshot."""
    unsynced_deltas: int = 0
    """Diffs discarded because no snapshot came for their symbol."""
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    stopped_by_duration: bool = False

    @property
    def lines(self) -> int:
        return self.parsed + sum(self.skipped.values()) + sum(self.malformed.values())

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def total_malformed(self) -> int:
        return sum(self.malformed.values())

    @property
    def span_s(self) -> float:
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return 0.0
        return (self.last_ts_ns - self.first_ts_ns) / NS_PER_SECOND

    def to_dict(self) -> dict[str, object]:
        """Plain types only, for JSON summaries."""
        return {
            "files": list(self.files),
            "formats": list(self.formats),
            "lines": self.lines,
            "parsed": self.parsed,
            "events": dict(self.events),
            "skipped": dict(self.skipped),
            "malformed": dict(self.malformed),
            "stale_deltas": self.stale_deltas,
            "unsynced_deltas": self.unsynced_deltas,
            "first_ts_ns": self.first_ts_ns,
            "last_ts_ns": self.last_ts_ns,
            "span_s": self.span_s,
            "stopped_by_duration": self.stopped_by_duration,
        }


def _merged(
    recordings: Sequence[RecordingInfo],
    stats: ReplayStats,
    symbol_map: Mapping[str, str] | None,
) -> tuple[Iterator[RawEvent | FeedStatus], list[Generator[object, None, None]]]:
    """All recordings' events merged by receive time (stable: file order breaks ties);
    also the per-file iterators, for closing."""
    sources = [
        iter_recording(rec, skipped=stats.skipped, malformed=stats.malformed, symbol_map=symbol_map)
        for rec in recordings
    ]
    # book_tickers is off, so no BookTicker comes out.
    typed = [cast(Iterator[RawEvent | FeedStatus], src) for src in sources]
    closers: list[Generator[object, None, None]] = list(sources)
    if len(typed) == 1:
        return typed[0], closers
    return heapq.merge(*typed, key=attrgetter("ts_ns")), closers


def convert_to_jsonl(
    paths: Sequence[Path],
    dst: Path,
    *,
    symbol_map: Mapping[str, str] | None = None,
) -> ReplayStats:
    """Rewrites recordings as one JSONL file (gzipped if ``dst`` ends in ``.gz``).

    Events are written as received, unsynchronised, so replaying ``dst`` yields the same
    events as replaying ``paths``. Returns what was read.
    """
    recordings = [sniff_recording(Path(p)) for p in paths]
    stats = ReplayStats(
        files=[str(r.path) for r in recordings], formats=[r.format.value for r in recordings]
    )
    source = ", ".join(r.path.name for r in recordings)
    merged, sources = _merged(recordings, stats, symbol_map)
    try:
        with JsonlWriter(dst, source=source) as writer:
            for event in merged:
                stats.parsed += 1
                if stats.first_ts_ns is None:
                    stats.first_ts_ns = event.ts_ns
                stats.last_ts_ns = event.ts_ns
                stats.events[_KIND[type(event)]] += 1
                writer.write(event)
    finally:
        for src in sources:
            src.close()
    return stats


class ReplayFeed:
    """Replays recordings as :data:`~bot.feeds.events.MarketEvent` s on a manual clock.

    ``speed=0`` replays as fast as possible; ``speed=N`` paces data time at N x the
    ``wall_clock``, awaiting ``sleep`` only when ahead by a millisecond or more.
    ``unpaced_s`` delivers the first that many seconds of data as fast as possible and
    paces from there (skip to the interesting part, books still built from the start).
    ``duration_s`` stops after that much data time. The stream ends with one
    ``FeedStatus(ENDED)`` per symbol seen. Raises :class:`UserError` at construction
    for a missing or unrecognised file or a bad speed/duration.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        clock: ManualClock,
        speed: float = 0.0,
        duration_s: float | None = None,
        unpaced_s: float = 0.0,
        symbol_map: Mapping[str, str] | None = None,
        wall_clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not paths:
            raise UserError("no replay files given")
        if not (math.isfinite(speed) and speed >= 0):
            raise UserError(f"replay speed must be >= 0 (0 = as fast as possible), got {speed}")
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise UserError(f"replay duration must be > 0 seconds, got {duration_s}")
        self.recordings = [sniff_recording(Path(p)) for p in paths]
        self._clock = clock
        self._speed = speed
        self._duration_ns = None if duration_s is None else int(duration_s * NS_PER_SECOND)
        if not (math.isfinite(unpaced_s) and unpaced_s >= 0):
            raise UserError(f"unpaced replay time must be >= 0 seconds, got {unpaced_s}")
        self._unpaced_ns = int(unpaced_s * NS_PER_SECOND)
        self._symbol_map = symbol_map
        self._wall = wall_clock if wall_clock is not None else WallClock()
        self._sleep = sleep
        self._started = False
        self.stats = ReplayStats(
            files=[str(r.path) for r in self.recordings],
            formats=[r.format.value for r in self.recordings],
        )

    @property
    def clock(self) -> ManualClock:
        """The clock this replay sets to each event's time before handing it over."""
        return self._clock

    async def events(self) -> AsyncIterator[MarketEvent]:
        """The replay. One pass per feed: a second call raises ``RuntimeError``."""
        if self._started:
            raise RuntimeError("a ReplayFeed replays once; create a new one")
        self._started = True
        stats = self.stats
        clock = self._clock
        kinds = _KIND
        counts = stats.events
        syncs: dict[str, DepthSynchronizer] = {}
        symbols: dict[str, None] = {}  # insertion-ordered set
        pacing = self._speed > 0
        wall = self._wall
        wall_start = data_start = 0
        pace_from: int | None = None  # data time pacing starts at (after unpaced_s)
        anchored = False  # pacing has started: wall_start is data_start
        end_ns: int | None = None
        n = 0
        merged, sources = _merged(self.recordings, stats, self._symbol_map)
        try:
            for raw in merged:
                ts = raw.ts_ns
                if stats.first_ts_ns is None:
                    stats.first_ts_ns = ts
                    if self._duration_ns is not None:
                        end_ns = ts + self._duration_ns
                    pace_from = ts + self._unpaced_ns
                if pacing and not anchored and pace_from is not None and ts >= pace_from:
                    wall_start, data_start, anchored = wall.now_ns(), ts, True
                if end_ns is not None and ts > end_ns:
                    stats.stopped_by_duration = True
                    break
                stats.parsed += 1
                stats.last_ts_ns = ts
                symbol = raw.symbol
                if symbol not in symbols:
                    symbols[symbol] = None
                out: Sequence[MarketEvent]
                if isinstance(raw, BookDelta):
                    sync = syncs.get(symbol)
                    if sync is None:
                        sync = syncs[symbol] = DepthSynchronizer(symbol)
                    out = sync.on_delta(raw)
                elif isinstance(raw, BookSnapshot):
                    sync = syncs.get(symbol)
                    if sync is None:
                        sync = syncs[symbol] = DepthSynchronizer(symbol)
                    out = sync.on_snapshot(raw)
                else:
                    out = (raw,)
                for event in out:
                    ev_ts = event.ts_ns
                    clock.set(ev_ts)
                    if anchored:
                        ahead = wall_start + int((ev_ts - data_start) / self._speed) - wall.now_ns()
                        if ahead >= _MIN_SLEEP_NS:
                            await self._sleep(ahead / NS_PER_SECOND)
                    counts[kinds[type(event)]] += 1
                    yield event
                    n += 1
                    if not anchored and n % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
        finally:
            for src in sources:
                src.close()
            stats.stale_deltas = sum(s.stale for s in syncs.values())
        unsynced = {sym: s.discard_buffer() for sym, s in syncs.items() if not s.synced}
        stats.unsynced_deltas = sum(unsynced.values())
        end_ts = stats.last_ts_ns if stats.last_ts_ns is not None else clock.now_ns()
        clock.set(end_ts)
        reason = "duration reached" if stats.stopped_by_duration else "end of data"
        for symbol in symbols or {"": None}:
            detail = reason
            if unsynced.get(symbol):
                detail += f"; no depth snapshot, {unsynced[symbol]} diffs discarded"
            counts["status"] += 1
            yield FeedStatus(symbol=symbol, ts_ns=end_ts, state=FeedState.ENDED, detail=detail)
