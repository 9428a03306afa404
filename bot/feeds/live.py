"""Live market data over ccxt: websocket order books and trades, REST polling as fallback.

One worker task per symbol keeps the book flowing and one more per symbol watches
trades; all of them feed a single bounded queue that :meth:`LiveFeed.events` drains,
so the engine sees one merged, per-symbol-ordered stream.

Order books are full snapshots. ccxt.pro keeps its own synced local book per symbol
(REST snapshot + websocket diffs, sequence-checked, rejecting with ``InvalidNonce``/
``ChecksumError`` on a gap), so the feed only has to copy it out each time
``watch_order_book`` resolves. Several diffs may have been applied between two
resolutions; the copy is always the latest state, which is what the engine wants.

Health is reported as :class:`~bot.feeds.events.FeedStatus` events, one per state
change of a symbol's book:

- ``CONNECTED``: the websocket book is live (emitted just before its first snapshot).
- ``DISCONNECTED``: the book can no longer be trusted (any error); the engine must
  invalidate it until the next snapshot.
- ``RESYNCING``: after the backoff, a fresh subscription is being made (ccxt
  reconnects, resubscribes and fetches a new snapshot on its own).
- ``FALLBACK_REST``: websockets are unavailable, snapshots now come from
  throttled ``fetch_order_book`` polling.

Trades come from ``watch_trades`` only (no REST polling for trades); ccxt returns its
cache of recent trades, so they are deduplicated by trade id. A trade-stream error
never changes the book's status.

Errors are translated by :func:`bot.exchanges.map_ccxt_error`: temporary ones are
retried with jittered exponential backoff (longer after a rate limit), operational
ones (unknown symbol, bad credentials) are fatal and re-raised from ``events()``
after a ``DISCONNECTED`` status for the symbol.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
from asyncio_throttle.throttler import Throttler

from bot import _book_kernel
from bot.clock import NS_PER_MS, NS_PER_SECOND, Clock
from bot.errors import BackstopError, OperationalError, RateLimited
from bot.exchanges import map_ccxt_error
from bot.feeds.events import (
    BookSnapshot,
    FeedState,
    FeedStatus,
    Levels,
    MarketEvent,
    Trade,
    levels,
)
from bot.feeds.retry import Backoff
from bot.logs import Logger, null_logger

Sleep = Callable[[float], Awaitable[None]]

_pair_rows = _book_kernel.pair_rows()


def side_levels(side: Any, limit: int) -> Levels:
    """The first ``limit`` rows of a ccxt order book side, copied out as :data:`Levels`.

    The copy is taken on every book update, of up to 1,000 rows a side: through numpy's
    conversion of a list of lists it cost ~270 us per update (p50, the bundled Binance
    recording through ccxt.pro's handler), more than the rest of the engine's reading.
    The compiled copier reads the rows in one pass; a side it does not take (strings,
    ragged rows, another type) goes the general way, with the same result or error.
    """
    if _pair_rows is not None and isinstance(side, list):
        raw = _pair_rows(side, limit)
        if raw is not None:
            return np.frombuffer(raw, dtype=np.float64).reshape(-1, 2)
    return levels(list(side[:limit]))


class LiveFeedState(StrEnum):
    """Lifecycle of a :class:`LiveFeed` (as httpx clients have)."""

    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


@dataclass(slots=True)
class SymbolFeedStats:
    """Counters for one symbol. ``errors`` is keyed by the original exception class name."""

    book_messages: int = 0
    """Order books received over websockets."""
    rest_polls: int = 0
    """Order books received by REST polling."""
    trades: int = 0
    duplicate_trades: int = 0
    malformed: int = 0
    """Books or trades that could not be converted (dropped)."""
    reconnects: int = 0
    """Websocket resubscriptions after an error (initial connect not counted)."""
    fallbacks: int = 0
    """Times the book switched to REST polling."""
    fallback_ns: int = 0
    """Time spent on REST polling, on the feed's clock."""
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def messages(self) -> int:
        return self.book_messages + self.rest_polls + self.trades

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "book_messages": self.book_messages,
            "rest_polls": self.rest_polls,
            "trades": self.trades,
            "duplicate_trades": self.duplicate_trades,
            "malformed": self.malformed,
            "reconnects": self.reconnects,
            "fallbacks": self.fallbacks,
            "fallback_s": self.fallback_ns / NS_PER_SECOND,
            "errors": dict(self.errors),
        }


@dataclass(slots=True)
class LiveFeedStats:
    symbols: dict[str, SymbolFeedStats]

    def as_dict(self) -> dict[str, Any]:
        return {symbol: s.as_dict() for symbol, s in self.symbols.items()}


@dataclass(slots=True)
class _Stop:
    """Queue item that ends ``events()``: with an error (fatal) or without (closed)."""

    error: BaseException | None


@dataclass(slots=True)
class _BookRun:
    """Mutable per-symbol state of the book worker."""

    symbol: str
    stats: SymbolFeedStats
    backoff: Backoff
    state: FeedState | None = None
    ws_failures: int = 0
    """Consecutive websocket sessions that failed before delivering a book."""


class _RecentIds:
    """Bounded set of recently seen trade ids (ccxt re-delivers its trade cache)."""

    def __init__(self, maxlen: int) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._maxlen = maxlen

    def add(self, trade_id: str) -> bool:
        """True if ``trade_id`` is new."""
        if trade_id in self._ids:
            return False
        self._ids.add(trade_id)
        self._order.append(trade_id)
        if len(self._order) > self._maxlen:
            self._ids.discard(self._order.popleft())
        return True


class LiveFeed:
    """Merged live market data for ``symbols`` from one ccxt(.pro) exchange.

    ``exchange`` is any object with ccxt.pro's async interface (``watch_order_book``,
    ``watch_trades``, ``fetch_order_book``, ``close``, ``has``, ``rateLimit``); in
    production it comes from :func:`bot.exchanges.make_exchange`. The feed owns it
    and closes it in :meth:`aclose`.

    ``sleep`` waits out backoffs and poll intervals and ``clock`` timestamps events
    and measures healthy/fallback periods; tests inject fakes for both. REST calls
    are additionally spaced by ``throttler`` (by default one request per
    ``exchange.rateLimit`` ms across all symbols).
    """

    def __init__(
        self,
        exchange: Any,
        symbols: Sequence[str],
        *,
        clock: Clock,
        rng: random.Random,
        depth_limit: int = 1000,
        rest_fallback: bool = True,
        rest_poll_interval_s: float = 1.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        watch_trades: bool = True,
        backoff_reset_after_s: float = 60.0,
        ws_failures_before_fallback: int = 3,
        ws_retry_interval_s: float = 60.0,
        first_book_timeout_s: float = 30.0,
        queue_size: int = 1024,
        throttler: Throttler | None = None,
        logger: Logger | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("LiveFeed needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"duplicate symbols in {list(symbols)}")
        if depth_limit < 1:
            raise ValueError("depth_limit must be >= 1")
        self._exchange = exchange
        self._symbols = list(symbols)
        self._clock = clock
        self._rng = rng
        self._depth_limit = depth_limit
        self._rest_poll_interval_s = rest_poll_interval_s
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._sleep = sleep
        self._healthy_ns = int(backoff_reset_after_s * NS_PER_SECOND)
        self._ws_failures_before_fallback = max(1, ws_failures_before_fallback)
        self._ws_retry_ns = int(ws_retry_interval_s * NS_PER_SECOND)
        self._first_book_timeout_s = first_book_timeout_s
        self._log = logger if logger is not None else null_logger()

        has: Mapping[str, Any] = getattr(exchange, "has", {}) or {}
        # ccxt's `has` values are True, False, None or "emulated"; emulated is fine.
        self._ws_books = bool(has.get("watchOrderBook"))
        self._rest_books = rest_fallback and bool(has.get("fetchOrderBook"))
        self._ws_trades = watch_trades and bool(has.get("watchTrades"))
        if throttler is None:
            # ccxt's rateLimit is the minimum spacing between requests in ms.
            period_s = max(float(getattr(exchange, "rateLimit", 1000)) / 1000.0, 0.001)
            throttler = Throttler(rate_limit=1, period=period_s)
        self._throttler = throttler

        self.stats = LiveFeedStats({s: SymbolFeedStats() for s in self._symbols})
        self._state = LiveFeedState.UNOPENED
        self._queue: asyncio.Queue[MarketEvent | _Stop] = asyncio.Queue(maxsize=queue_size)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def state(self) -> LiveFeedState:
        return self._state

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    async def __aenter__(self) -> LiveFeed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def events(self) -> AsyncIterator[MarketEvent]:
        """The merged event stream. Iterate it once; it ends when the feed is closed.

        Raises :class:`OperationalError` for fatal venue errors (unknown symbol,
        authentication), after yielding that symbol's ``DISCONNECTED`` status.
        """
        if self._state is not LiveFeedState.UNOPENED:
            raise RuntimeError(
                f"LiveFeed.events() on a {self._state} feed; it can be iterated once"
            )
        if not self._ws_books and not self._rest_books:
            raise OperationalError(
                f"{getattr(self._exchange, 'id', 'exchange')}: no websocket order books"
                " and REST fallback is disabled or unsupported"
            )
        self._state = LiveFeedState.OPENED
        for symbol in self._symbols:
            self._spawn(self._book_worker(symbol), f"book:{symbol}")
            if self._ws_trades:
                self._spawn(self._trade_worker(symbol), f"trades:{symbol}")
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Stop):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            await self._cancel_tasks()

    async def aclose(self) -> None:
        """Stop all workers, end ``events()`` and close the exchange. Idempotent."""
        if self._state is LiveFeedState.CLOSED:
            return
        self._state = LiveFeedState.CLOSED
        await self._cancel_tasks()
        # Wake a consumer blocked in events(): what is still queued is moot now.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_Stop(None))
        await self._exchange.close()

    # -- workers ---------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.create_task(self._guard(coro), name=name))

    async def _guard(self, coro: Awaitable[None]) -> None:
        # Workers never return normally; any error they let out (fatal venue error
        # or a bug) must end events() rather than silently kill one symbol.
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._queue.put(_Stop(e))

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _book_worker(self, symbol: str) -> None:
        run = _BookRun(
            symbol=symbol,
            stats=self.stats.symbols[symbol],
            backoff=Backoff(self._reconnect_initial_s, self._reconnect_max_s, self._rng),
        )
        use_ws = self._ws_books
        first = True
        while True:
            if not use_ws:
                await self._rest_session(run)
                use_ws = True  # time to try websockets again
                continue
            if not first:
                run.stats.reconnects += 1
                await self._set_state(run, FeedState.RESYNCING)
            first = False
            try:
                await self._ws_session(run)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = self._note_error(run.stats, e)
                await self._set_state(run, FeedState.DISCONNECTED, str(err))
                if isinstance(err, OperationalError):
                    raise err from e
                run.ws_failures += 1
                if self._rest_books and run.ws_failures >= self._ws_failures_before_fallback:
                    use_ws = False
                    continue
                await self._sleep(run.backoff.next_delay(rate_limited=isinstance(err, RateLimited)))

    async def _ws_session(self, run: _BookRun) -> None:
        """Stream books until an error; ccxt (re)subscribes on the first call."""
        symbol = run.symbol
        connected_at: int | None = None
        while True:
            watch = self._exchange.watch_order_book(symbol, self._depth_limit)
            if connected_at is None:
                # Bound the wait for the first book (connect + subscribe + REST
                # snapshot) so a half-open connection cannot stall the retry loop.
                ob = await asyncio.wait_for(watch, self._first_book_timeout_s)
            else:
                ob = await watch
            # ccxt mutates `ob` in place as later diffs arrive: copy it out before
            # the next await.
            snap = self._to_snapshot(run.stats, symbol, ob)
            if snap is None:
                continue
            now = snap.ts_ns
            if connected_at is None:
                connected_at = now
                run.ws_failures = 0
                await self._set_state(run, FeedState.CONNECTED)
            elif run.backoff.attempt and now - connected_at >= self._healthy_ns:
                run.backoff.reset()
            run.stats.book_messages += 1
            await self._queue.put(snap)

    async def _rest_session(self, run: _BookRun) -> None:
        """Poll REST snapshots; return when it is time to retry websockets."""
        stats = run.stats
        stats.fallbacks += 1
        entered = mark = self._clock.now_ns()
        await self._set_state(run, FeedState.FALLBACK_REST, "websocket order book unavailable")
        try:
            while True:
                now = self._clock.now_ns()
                stats.fallback_ns += now - mark
                mark = now
                if self._ws_books and now - entered >= self._ws_retry_ns:
                    return
                try:
                    async with self._throttler:
                        ob = await self._exchange.fetch_order_book(run.symbol, self._depth_limit)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    err = self._note_error(stats, e)
                    await self._set_state(run, FeedState.DISCONNECTED, str(err))
                    if isinstance(err, OperationalError):
                        raise err from e
                    await self._sleep(
                        run.backoff.next_delay(rate_limited=isinstance(err, RateLimited))
                    )
                    continue
                snap = self._to_snapshot(stats, run.symbol, ob)
                if snap is not None:
                    run.backoff.reset()
                    stats.rest_polls += 1
                    await self._set_state(run, FeedState.FALLBACK_REST)
                    await self._queue.put(snap)
                await self._sleep(self._rest_poll_interval_s)
        finally:
            stats.fallback_ns += self._clock.now_ns() - mark

    async def _trade_worker(self, symbol: str) -> None:
        stats = self.stats.symbols[symbol]
        backoff = Backoff(self._reconnect_initial_s, self._reconnect_max_s, self._rng)
        seen = _RecentIds(maxlen=4096)
        connected_at: int | None = None
        while True:
            try:
                raw = await self._exchange.watch_trades(symbol)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = self._note_error(stats, e)
                if isinstance(err, OperationalError):
                    await self._emit_status(symbol, FeedState.DISCONNECTED, f"trades: {err}")
                    raise err from e
                # A trade-stream problem does not make the book wrong: no status,
                # just retry (the book worker reports its own connection state).
                connected_at = None
                await self._sleep(backoff.next_delay(rate_limited=isinstance(err, RateLimited)))
                continue
            now = self._clock.now_ns()
            if connected_at is None:
                connected_at = now
            elif backoff.attempt and now - connected_at >= self._healthy_ns:
                backoff.reset()
            # Convert the whole batch before awaiting: ccxt appends to this cache.
            converted = (self._to_trade(stats, symbol, r, now, seen) for r in raw)
            batch = [t for t in converted if t is not None]
            for trade in batch:
                await self._queue.put(trade)

    # -- helpers ---------------------------------------------------------------

    def _note_error(self, stats: SymbolFeedStats, e: Exception) -> BackstopError:
        stats.errors[type(e).__name__] += 1
        err = map_ccxt_error(e)
        self._log.warning(
            "feed.error",
            exchange=getattr(self._exchange, "id", None),
            error=str(err),
            kind=type(err).__name__,
        )
        return err

    async def _set_state(self, run: _BookRun, state: FeedState, detail: str = "") -> None:
        if run.state is state:
            return
        run.state = state
        await self._emit_status(run.symbol, state, detail)

    async def _emit_status(self, symbol: str, state: FeedState, detail: str) -> None:
        self._log.info("feed.status", symbol=symbol, state=str(state), detail=detail)
        await self._queue.put(FeedStatus(symbol, self._clock.now_ns(), state, detail))

    def _to_snapshot(
        self, stats: SymbolFeedStats, symbol: str, ob: Mapping[str, Any]
    ) -> BookSnapshot | None:
        try:
            # A fresh array of the rows we keep, detached from ccxt's book.
            bids = side_levels(ob["bids"], self._depth_limit)
            asks = side_levels(ob["asks"], self._depth_limit)
            nonce = ob.get("nonce")
            ts_ms = ob.get("timestamp")
            update_id = int(nonce) if nonce is not None else None
            exchange_ts_ns = int(ts_ms) * NS_PER_MS if ts_ms is not None else None
        except (KeyError, TypeError, ValueError):
            stats.malformed += 1
            return None
        return BookSnapshot(
            symbol=symbol,
            ts_ns=self._clock.now_ns(),
            bids=bids,
            asks=asks,
            update_id=update_id,
            exchange_ts_ns=exchange_ts_ns,
        )

    @staticmethod
    def _to_trade(
        stats: SymbolFeedStats,
        symbol: str,
        raw: Mapping[str, Any],
        now_ns: int,
        seen: _RecentIds,
    ) -> Trade | None:
        try:
            side_raw = raw.get("side")
            if side_raw not in ("buy", "sell"):
                raise ValueError(f"trade side {side_raw!r}")
            side: Literal["buy", "sell"] = "buy" if side_raw == "buy" else "sell"
            price = float(raw["price"])
            amount = float(raw["amount"])
            ts_ms = raw.get("timestamp")
            exchange_ts_ns = int(ts_ms) * NS_PER_MS if ts_ms is not None else None
            raw_id = raw.get("id")
            # Without a venue id, the trade's content is the best identity we have.
            trade_id = str(raw_id) if raw_id is not None else f"{ts_ms}:{side}:{price!r}:{amount!r}"
        except (KeyError, TypeError, ValueError):
            stats.malformed += 1
            return None
        if not seen.add(trade_id):
            stats.duplicate_trades += 1
            return None
        stats.trades += 1
        return Trade(
            symbol=symbol,
            ts_ns=now_ns,
            price=price,
            amount=amount,
            side=side,
            trade_id=trade_id,
            exchange_ts_ns=exchange_ts_ns,
        )
