"""The engine applies every feed event in order, refuses bad books, and tells listeners at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from bot.book import BookState, Drop, OrderBook
from bot.clock import ManualClock
from bot.engine import Engine, Market
from bot.feeds.events import (
    BookDelta,
    BookSnapshot,
    FeedState,
    FeedStatus,
    MarketEvent,
    Trade,
    levels,
)
from bot.logs import Logger
from bot.monitor import DepthMonitor, DepthSample

SYM = "BTC/USDT"


class ScriptedFeed:
    """Yields a fixed list of events, advancing the clock like a replay would."""

    def __init__(self, events: Sequence[MarketEvent], clock: ManualClock) -> None:
        self._events = list(events)
        self._clock = clock

    async def events(self) -> AsyncIterator[MarketEvent]:
        for ev in self._events:
            self._clock.set(ev.ts_ns)
            yield ev


class BlockingFeed:
    """Yields its events, then waits forever like a quiet live feed."""

    def __init__(self, events: Sequence[MarketEvent]) -> None:
        self._events = list(events)
        self.drained = asyncio.Event()

    async def events(self) -> AsyncIterator[MarketEvent]:
        for ev in self._events:
            yield ev
        self.drained.set()
        await asyncio.Future()  # never resolves


class Recorder:
    def __init__(self) -> None:
        self.samples: list[tuple[str, DepthSample]] = []
        self.trades: list[Trade] = []

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        self.samples.append((symbol, sample))

    def on_trade(self, trade: Trade) -> None:
        self.trades.append(trade)


def snap(ts: int, bids: list[list[float]], asks: list[list[float]], uid: int = 100) -> BookSnapshot:
    return BookSnapshot(SYM, ts, levels(bids), levels(asks), update_id=uid)


def delta(
    ts: int, bids: list[list[float]], asks: list[list[float]], first: int, last: int
) -> BookDelta:
    return BookDelta(SYM, ts, levels(bids), levels(asks), first_id=first, last_id=last)


def make_engine(feed: object, clock: ManualClock, log: Logger, recorder: Recorder) -> Engine:
    market = Market(SYM, OrderBook(SYM, clock=clock), DepthMonitor.for_bands([10, 100], 1_000.0))
    return Engine(feed=feed, markets={SYM: market}, log=log, listeners=[recorder])  # type: ignore[arg-type]


BIDS = [[100.0, 1.0], [99.95, 2.0], [99.0, 5.0]]
ASKS = [[100.05, 1.5], [100.1, 2.0], [101.0, 5.0]]


async def test_listeners_see_every_applied_update_in_order(clock: ManualClock, log: Logger) -> None:
    events: list[MarketEvent] = [
        snap(1_000, BIDS, ASKS),
        delta(2_000, [[100.0, 0.0]], [], 101, 101),  # best bid removed
        Trade(SYM, 2_500, 99.95, 0.1, "sell", "t1"),
        delta(3_000, [[100.02, 0.5]], [], 102, 102),  # a new best bid
        FeedStatus("", 4_000, FeedState.ENDED),
    ]
    rec = Recorder()
    engine = make_engine(ScriptedFeed(events, clock), clock, log, rec)

    await engine.run()

    assert [s.best_bid for _, s in rec.samples] == [100.0, 99.95, 100.02]
    assert [s.ts_ns for _, s in rec.samples] == [1_000, 2_000, 3_000]
    assert [t.trade_id for t in rec.trades] == ["t1"]
    assert engine.ended
    assert engine.events["BookDelta"] == 2


async def test_crossed_and_non_finite_updates_are_dropped_and_never_reach_listeners(
    clock: ManualClock, log: Logger
) -> None:
    rec = Recorder()
    engine = make_engine(ScriptedFeed([], clock), clock, log, rec)
    book = engine.markets[SYM].book
    engine.handle(snap(1_000, BIDS, ASKS))

    # Each bad message is refused; the book keeps its last good state and id, so a
    # well-formed message with the same ids still applies afterwards.
    for bad in (
        delta(2_000, [[100.2, 1.0]], [], 101, 101),  # would cross the book
        delta(3_000, [[float("nan"), 1.0]], [], 101, 101),
        delta(4_000, [[99.9, -1.0]], [], 101, 101),
    ):
        engine.handle(bad)
        assert book.best_bid() == 100.0
        assert book.update_id == 100
    engine.handle(delta(5_000, [[100.01, 1.0]], [], 101, 101))

    assert [s.best_bid for _, s in rec.samples] == [100.0, 100.01]
    assert book.drops[Drop.CROSSED] == 1
    assert book.drops[Drop.NON_FINITE] == 1
    assert book.drops[Drop.NEGATIVE] == 1


async def test_disconnect_invalidates_the_book_until_a_fresh_snapshot(
    clock: ManualClock, log: Logger
) -> None:
    events: list[MarketEvent] = [
        snap(1_000, BIDS, ASKS),
        FeedStatus(SYM, 2_000, FeedState.DISCONNECTED, "socket closed"),
        delta(3_000, [[99.9, 1.0]], [], 101, 101),
        snap(4_000, BIDS, ASKS, uid=500),
        FeedStatus("", 5_000, FeedState.ENDED),
    ]
    rec = Recorder()
    engine = make_engine(ScriptedFeed(events, clock), clock, log, rec)
    states: list[BookState] = []

    for ev in events:
        engine.handle(ev)
        states.append(engine.markets[SYM].book.state)

    assert states[:4] == [BookState.VALID, BookState.INVALID, BookState.INVALID, BookState.VALID]
    assert engine.markets[SYM].book.drops[Drop.UNSYNCED] == 1
    assert len(rec.samples) == 2


async def test_events_for_unconfigured_symbols_are_counted_not_applied(
    clock: ManualClock, log: Logger
) -> None:
    rec = Recorder()
    engine = make_engine(ScriptedFeed([], clock), clock, log, rec)
    other = BookSnapshot("ETH/USDT", 1, levels(BIDS), levels(ASKS))

    engine.handle(other)
    engine.handle(Trade("ETH/USDT", 2, 1.0, 1.0, "buy", "x"))

    assert engine.ignored_symbols["ETH/USDT"] == 2
    assert rec.samples == []
    assert rec.trades == []


async def test_stop_event_ends_a_run_on_a_feed_that_never_ends(
    clock: ManualClock, log: Logger
) -> None:
    feed = BlockingFeed([snap(1_000, BIDS, ASKS)])
    rec = Recorder()
    engine = make_engine(feed, clock, log, rec)
    stop = asyncio.Event()

    run = asyncio.create_task(engine.run(stop))
    await feed.drained.wait()
    stop.set()
    await asyncio.wait_for(run, timeout=5)

    assert len(rec.samples) == 1
    assert not engine.ended


async def test_a_fatal_feed_error_propagates_out_of_run(clock: ManualClock, log: Logger) -> None:
    class Broken:
        async def events(self) -> AsyncIterator[MarketEvent]:
            yield snap(1_000, BIDS, ASKS)
            raise RuntimeError("exchange went away for good")

    engine = make_engine(Broken(), clock, log, Recorder())

    with pytest.raises(RuntimeError, match="went away"):
        await engine.run()


def test_monitor_tracks_the_thinnest_band_depth_and_when(clock: ManualClock) -> None:
    book = OrderBook(SYM, clock=clock)
    monitor = DepthMonitor.for_bands([10], 1_000.0)
    book.apply_snapshot(levels(BIDS), levels(ASKS), update_id=1)
    monitor.observe(book, 1)
    # mid 100.025; 10 bps band on the bid side reaches down to 99.925: 100 and 99.95
    first = monitor.lows_dict()["bid"]["10"]
    assert first["base"] == pytest.approx(3.0)
    assert first["quote"] == pytest.approx(100.0 * 1.0 + 99.95 * 2.0)

    book.apply_delta(levels([[99.95, 0.5]]), levels([]), first_id=2, last_id=2)
    monitor.observe(book, 2)
    book.apply_delta(levels([[99.95, 4.0]]), levels([]), first_id=3, last_id=3)
    monitor.observe(book, 3)

    low = monitor.lows_dict()["bid"]["10"]
    assert low["base"] == pytest.approx(1.5)
    assert low["ts_ns"] == 2
    assert monitor.samples == 3
    assert monitor.last is not None
    assert monitor.last.depth[0, 0, 0] == pytest.approx(5.0)
