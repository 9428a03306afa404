"""The event loop: feed events in, book updates applied, every listener told at once.

There is no clock tick. Each event is handled the moment the feed yields it: a book
update is validated and applied, the market is measured, and listeners (detector,
strategy, views) see the new sample before the next event is read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.book import Drop, OrderBook
from bot.feeds.events import BookDelta, BookSnapshot, FeedState, FeedStatus, MarketEvent, Trade
from bot.logs import Logger
from bot.monitor import DepthMonitor, DepthSample

_BOOK_EVENTS = (BookSnapshot, BookDelta)
"""A tuple: isinstance() takes it faster than the ``X | Y`` union (once per event)."""


class Feed(Protocol):
    def events(self) -> AsyncIterator[MarketEvent]: ...


class Listener(Protocol):
    """Told about every applied book update and every trade, in order."""

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None: ...

    def on_trade(self, trade: Trade) -> None: ...


@dataclass(slots=True)
class Market:
    symbol: str
    book: OrderBook
    monitor: DepthMonitor


class Engine:
    def __init__(
        self,
        *,
        feed: Feed,
        markets: Mapping[str, Market],
        log: Logger,
        listeners: Sequence[Listener] = (),
        after_event: Callable[[], Awaitable[None]] | None = None,
        on_status: Callable[[FeedStatus], None] | None = None,
    ) -> None:
        self._feed = feed
        self.markets = dict(markets)
        self._log = log
        self._listeners = list(listeners)
        self._after_event = after_event
        self._on_status_hook = on_status
        self.events: Counter[str] = Counter()
        self.ignored_symbols: Counter[str] = Counter()
        self.feed_states: Counter[str] = Counter()
        self.first_ts_ns: int | None = None
        self.last_ts_ns: int | None = None
        self.ended = False
        # The first drop of each kind per market is a warning; repeats are counted
        # (and summarised) rather than flooding the log.
        self._warned: set[tuple[str, Drop]] = set()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume the feed until it ends or ``stop`` is set."""
        stop = stop if stop is not None else asyncio.Event()
        consume = asyncio.ensure_future(self._consume())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({consume, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (consume, stopper):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if consume.done() and not consume.cancelled():
            consume.result()  # re-raise a feed failure (e.g. a fatal OperationalError)

    async def _consume(self) -> None:
        after = self._after_event
        async for event in self._feed.events():
            self.handle(event)
            if after is not None:
                # Lets work the listeners started (order actions) reach the venue before
                # the next event: in a replay, data time only moves with events.
                await after()
            if self.ended:
                return

    def handle(self, event: MarketEvent) -> None:
        self.events[type(event).__name__] += 1
        # min/max, not first/last: diffs buffered before a snapshot are released after
        # it, carrying their own (earlier) receive stamps.
        ts = event.ts_ns
        if self.first_ts_ns is None or ts < self.first_ts_ns:
            self.first_ts_ns = ts
        if self.last_ts_ns is None or ts > self.last_ts_ns:
            self.last_ts_ns = ts
        if isinstance(event, _BOOK_EVENTS):
            self._on_book_event(event)
        elif isinstance(event, Trade):
            if event.symbol in self.markets:
                for listener in self._listeners:
                    listener.on_trade(event)
            else:
                self.ignored_symbols[event.symbol] += 1
        else:
            self._on_status(event)

    def _on_book_event(self, event: BookSnapshot | BookDelta) -> None:
        market = self.markets.get(event.symbol)
        if market is None:
            self.ignored_symbols[event.symbol] += 1
            return
        drop = market.book.apply(event)
        if drop is not None:
            self._on_drop(market, drop, event)
            return
        sample = market.monitor.observe(market.book, event.ts_ns)
        if sample is None:
            return
        for listener in self._listeners:
            listener.on_sample(market.symbol, market.book, sample)

    def _on_drop(self, market: Market, drop: Drop, event: BookSnapshot | BookDelta) -> None:
        key = (market.symbol, drop)
        log = self._log.debug if key in self._warned else self._log.warning
        self._warned.add(key)
        log(
            "book_input_dropped",
            symbol=market.symbol,
            reason=drop.value,
            kind=type(event).__name__,
            book_state=market.book.state.value,
            count=market.book.drops.get(drop, 0),
        )

    def _on_status(self, status: FeedStatus) -> None:
        self.feed_states[status.state.value] += 1
        if self._on_status_hook is not None:
            self._on_status_hook(status)
        if status.state is FeedState.ENDED:
            self.ended = True
            self._log.info("feed_ended", detail=status.detail)
            return
        self._log.info(
            "feed_status", symbol=status.symbol, state=status.state.value, detail=status.detail
        )
        market = self.markets.get(status.symbol)
        if market is not None and status.state in (FeedState.DISCONNECTED, FeedState.RESYNCING):
            # Nothing may trade on a book whose stream broke: it stays invalid until the
            # feed delivers a fresh snapshot.
            market.book.invalidate(f"feed {status.state.value}: {status.detail}")
