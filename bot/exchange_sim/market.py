"""The emulator's market: a recorded market (optionally stressed) played into the engine.

:class:`MarketDriver` consumes a :class:`bot.engine.Feed` (a ``ReplayFeed``, perhaps
wrapped in a ``StressedFeed``) and applies each event to the
:class:`~bot.exchange_sim.engine.SpotEngine`: a snapshot replaces the public book, a
delta changes its levels, a trade goes on the tape and to the matcher (our resting
orders). Pacing is the feed's (``ReplayFeed(speed=...)``); the engine stamps what
happens with its own clock.

A feed's connection states say nothing about the venue: a recorder that lost its
stream does not make the exchange stop, so DISCONNECTED/RESYNCING leave the book as it
is until the next snapshot replaces it. Symbols the venue does not list are ignored
(and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from bot.engine import Feed
from bot.exchange_sim.engine import SpotEngine
from bot.feeds.events import BookDelta, BookSnapshot, FeedStatus, MarketEvent, Trade

YIELD_EVERY = 64
"""Events applied between two turns given to the event loop's other tasks..."""
YIELD_AFTER_S = 0.002
"""...or less, once this much time went by since the last turn: on a loaded machine 64
events can take tens of milliseconds, and the venue's requests (a restarting bot's
recovery: a dozen in a row) would wait that long for each step."""

_KIND: dict[type, str] = {
    BookSnapshot: "snapshot",
    BookDelta: "delta",
    Trade: "trade",
    FeedStatus: "status",
}


@dataclass
class DriverStats:
    """What the driver applied. Updated live."""

    applied: int = 0
    """Feed events taken and handled (ignored ones included)."""
    events: Counter[str] = field(default_factory=Counter)
    """Events by kind: snapshot, delta, trade, status."""
    ignored_symbols: Counter[str] = field(default_factory=Counter)
    """Events for symbols the venue does not list."""
    book_drops: Counter[str] = field(default_factory=Counter)
    """Depth events the public book refused (crossed, non-finite, ...), by reason."""
    our_fills: int = 0
    """Fills of our resting orders caused by the market's trades."""

    def to_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "events": dict(self.events),
            "ignored_symbols": dict(self.ignored_symbols),
            "book_drops": dict(self.book_drops),
            "our_fills": self.our_fills,
        }


class MarketDriver:
    """Plays ``feed`` into ``engine``, once.

    Drive it with :meth:`run` (to the end) or step by step (:meth:`step`,
    :meth:`run_until`) for tests that act between market events; not both at once.
    Others await progress with :meth:`wait_applied` and :meth:`wait_exhausted`.
    """

    def __init__(
        self, engine: SpotEngine, feed: Feed, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.feed = feed
        self._monotonic = monotonic
        self.stats = DriverStats()
        self._events: AsyncIterator[MarketEvent] | None = None
        self._busy = False
        self._exhausted = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def exhausted(self) -> bool:
        """True once the feed has ended (every event applied)."""
        return self._exhausted.is_set()

    # ----- driving ----------------------------------------------------------------
    def apply(self, event: MarketEvent) -> None:
        """Apply one market event to the engine (synchronously)."""
        stats = self.stats
        stats.applied += 1
        stats.events[_KIND[type(event)]] += 1
        engine = self.engine
        if isinstance(event, FeedStatus):
            pass  # the venue stays up whatever happened to the recorder's connection
        elif event.symbol not in engine.rules:
            stats.ignored_symbols[event.symbol] += 1
        elif isinstance(event, Trade):
            fills = engine.market_trade(event.symbol, event.price, event.amount, event.side)
            stats.our_fills += len(fills)
        else:
            if isinstance(event, BookSnapshot):
                drop = engine.apply_snapshot(event.symbol, event.bids, event.asks)
            else:
                drop = engine.apply_delta(event.symbol, event.bids, event.asks)
            if drop is not None:
                stats.book_drops[drop.value] += 1
        self._wake()

    async def step(self) -> MarketEvent | None:
        """Apply the next event and return it (``None``: the feed has ended)."""
        with self._driving() as events:
            event = await anext(events, None)
            if event is None:
                self._finish()
            else:
                self.apply(event)
        return event

    async def run_until(self, predicate: Callable[[MarketEvent], bool]) -> MarketEvent | None:
        """Apply events up to and including the first one ``predicate`` accepts.

        Returns that event, or ``None`` if the feed ended first.
        """
        with self._driving() as events:
            async for event in events:
                self.apply(event)
                if predicate(event):
                    return event
            self._finish()
        return None

    async def run(self) -> None:
        """Apply every remaining event, paced by the feed, until it ends."""
        clock = self._monotonic
        with self._driving() as events:
            turn = clock()
            async for event in events:
                self.apply(event)
                if self.stats.applied % YIELD_EVERY == 0 or clock() - turn >= YIELD_AFTER_S:
                    # A replay behind its schedule (a loaded machine) hands out events
                    # without awaiting: the venue's requests and sockets must still run.
                    await asyncio.sleep(0)
                    turn = clock()
            self._finish()

    # ----- waiting ----------------------------------------------------------------
    async def wait_applied(self, n: int) -> None:
        """Return once ``n`` events have been applied in all, or the feed has ended."""
        if self.stats.applied >= n or self.exhausted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        await future

    async def wait_exhausted(self) -> None:
        """Return once the feed has ended."""
        await self._exhausted.wait()

    # ----- internals --------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop reading the feed (closes its files); the driver cannot be resumed."""
        if self._events is not None and hasattr(self._events, "aclose"):
            await self._events.aclose()
        self._finish()

    @contextlib.contextmanager
    def _driving(self) -> Iterator[AsyncIterator[MarketEvent]]:
        """The feed's events, to one puller at a time."""
        if self._busy:
            raise RuntimeError("the market driver is already running")
        if self._events is None:
            self._events = self.feed.events()
        self._busy = True
        try:
            yield self._events
        finally:
            self._busy = False

    def _finish(self) -> None:
        self._exhausted.set()
        self._wake()

    def _wake(self) -> None:
        if not self._waiters:
            return
        applied, ended = self.stats.applied, self.exhausted
        still = []
        for n, future in self._waiters:
            if applied >= n or ended:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((n, future))
        self._waiters = still
