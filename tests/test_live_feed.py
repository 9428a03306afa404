"""LiveFeed logic against a scripted exchange double, plus make_exchange / error mapping.

The double speaks ccxt's shapes (real ``ccxt`` OrderBook objects, unified trade dicts,
real ccxt exception classes) but no wire protocol: the websocket/REST path through real
ccxt against a local exchange emulator is a separate, later test (issue 7).

Sleeping is faked (delays are recorded and advance a ManualClock), so backoff schedules
are checked exactly and nothing waits in real time except the two tests that exercise
real-time machinery on purpose (the default throttler and the first-book timeout).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import numpy as np
import pytest
from ccxt.async_support.base.ws.order_book import OrderBook
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import NS_PER_SECOND, ManualClock
from bot.errors import (
    BackstopError,
    ConfigError,
    OperationalError,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TemporaryError,
    WouldTake,
)
from bot.exchanges import make_exchange, map_ccxt_error
from bot.feeds.events import BookSnapshot, FeedState, FeedStatus, MarketEvent, Trade
from bot.feeds.live import LiveFeed, LiveFeedState
from bot.feeds.retry import Backoff

BTC = "BTC/USDT"
ETH = "ETH/USDT"
T0_NS = 1_723_161_255_000_000_000


# -- the exchange double ---------------------------------------------------------

Step = Any
"""A script step: a value to return, an exception to raise, or a callable producing
either (or an awaitable to await first, e.g. one that never finishes)."""


class ScriptedExchange:
    """Just enough of ccxt.pro's async exchange interface for LiveFeed.

    Each (method, symbol) has a script; when it runs out the call blocks until
    cancelled, like a quiet websocket.
    """

    id = "scripted"

    def __init__(
        self,
        *,
        books: dict[str, Sequence[Step]] | None = None,
        trades: dict[str, Sequence[Step]] | None = None,
        rest: dict[str, Sequence[Step]] | None = None,
        has: dict[str, Any] | None = None,
        rate_limit: int = 50,
    ) -> None:
        self.has = {"watchOrderBook": True, "watchTrades": True, "fetchOrderBook": True}
        self.has.update(has or {})
        self.rateLimit = rate_limit
        self._scripts: dict[tuple[str, str], deque[Step]] = {}
        for method, scripts in (
            ("watch_order_book", books),
            ("watch_trades", trades),
            ("fetch_order_book", rest),
        ):
            for symbol, steps in (scripts or {}).items():
                self._scripts[(method, symbol)] = deque(steps)
        self.calls: list[tuple[str, str, int | None]] = []
        self.call_times: list[float] = []
        self.close_calls = 0

    async def _next(self, method: str, symbol: str, limit: int | None) -> Any:
        self.calls.append((method, symbol, limit))
        self.call_times.append(time.monotonic())
        script = self._scripts.get((method, symbol))
        if not script:
            await asyncio.Event().wait()
        step = script.popleft()  # type: ignore[union-attr]
        if callable(step):
            step = step()
        if isinstance(step, Awaitable):
            step = await step
        if isinstance(step, BaseException):
            raise step
        return step

    async def watch_order_book(self, symbol: str, limit: int | None = None) -> Any:
        return await self._next("watch_order_book", symbol, limit)

    async def watch_trades(self, symbol: str) -> Any:
        return await self._next("watch_trades", symbol, None)

    async def fetch_order_book(self, symbol: str, limit: int | None = None) -> Any:
        return await self._next("fetch_order_book", symbol, limit)

    async def close(self) -> None:
        self.close_calls += 1

    def calls_to(self, method: str) -> list[tuple[str, str, int | None]]:
        return [c for c in self.calls if c[0] == method]


def ccxt_book(
    nonce: int,
    *,
    bids: Iterable[Sequence[float]] = ((100.0, 1.0), (99.0, 2.0)),
    asks: Iterable[Sequence[float]] = ((101.0, 1.0), (102.0, 2.0)),
    ts_ms: int | None = 1_723_161_255_123,
    symbol: str = BTC,
) -> OrderBook:
    """A real ccxt OrderBook, as watch_order_book returns it."""
    return OrderBook(
        {
            "bids": [list(b) for b in bids],
            "asks": [list(a) for a in asks],
            "nonce": nonce,
            "timestamp": ts_ms,
            "symbol": symbol,
        }
    )


def ccxt_trade(
    trade_id: str | None,
    side: str | None = "buy",
    price: float = 100.5,
    amount: float = 0.25,
    ts_ms: int = 1_723_161_255_500,
) -> dict[str, Any]:
    """A ccxt unified trade."""
    return {
        "id": trade_id,
        "timestamp": ts_ms,
        "symbol": BTC,
        "side": side,
        "price": price,
        "amount": amount,
        "cost": price * amount,
        "info": {},
    }


class FakeSleep:
    """Records requested delays and moves the clock instead of waiting."""

    def __init__(self, clock: ManualClock) -> None:
        self.delays: list[float] = []
        self._clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self._clock.advance(int(seconds * NS_PER_SECOND))
        await asyncio.sleep(0)


class CountingThrottler:
    def __init__(self) -> None:
        self.acquired = 0

    async def __aenter__(self) -> None:
        self.acquired += 1

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class Harness:
    feed: LiveFeed
    exchange: ScriptedExchange
    clock: ManualClock
    sleep: FakeSleep
    throttler: CountingThrottler


def harness(
    exchange: ScriptedExchange,
    symbols: Sequence[str] = (BTC,),
    *,
    clock: ManualClock | None = None,
    seed: int = 7,
    **kwargs: Any,
) -> Harness:
    clock = clock if clock is not None else ManualClock(T0_NS)
    sleep = FakeSleep(clock)
    throttler = CountingThrottler()
    kwargs.setdefault("throttler", throttler)
    kwargs.setdefault("watch_trades", False)
    feed = LiveFeed(exchange, symbols, clock=clock, rng=random.Random(seed), sleep=sleep, **kwargs)
    return Harness(feed, exchange, clock, sleep, throttler)


async def collect(
    feed: LiveFeed, until: Callable[[list[MarketEvent]], bool], timeout_s: float = 5.0
) -> list[MarketEvent]:
    """Events up to and including the one that satisfies ``until``; then close the feed."""
    out: list[MarketEvent] = []
    try:
        async with asyncio.timeout(timeout_s):  # a hang is a failure, not a stuck suite
            async for event in feed.events():
                out.append(event)
                if until(out):
                    break
    finally:
        await feed.aclose()
    return out


async def drain(feed: LiveFeed, into: list[MarketEvent] | None = None) -> None:
    """Iterate the feed to its end (or its error), keeping what it yields."""
    async with asyncio.timeout(5):
        async for event in feed.events():
            if into is not None:
                into.append(event)


def snapshots(events: Iterable[MarketEvent], symbol: str | None = None) -> list[BookSnapshot]:
    return [
        e for e in events if isinstance(e, BookSnapshot) and (symbol is None or e.symbol == symbol)
    ]


def statuses(events: Iterable[MarketEvent], symbol: str | None = None) -> list[FeedState]:
    return [
        e.state
        for e in events
        if isinstance(e, FeedStatus) and (symbol is None or e.symbol == symbol)
    ]


def n_snapshots(n: int) -> Callable[[list[MarketEvent]], bool]:
    return lambda events: len(snapshots(events)) >= n


C, D, R, F = (
    FeedState.CONNECTED,
    FeedState.DISCONNECTED,
    FeedState.RESYNCING,
    FeedState.FALLBACK_REST,
)


# -- conversion ------------------------------------------------------------------


async def test_ccxt_order_book_becomes_a_truncated_snapshot() -> None:
    book = ccxt_book(
        42,
        bids=[(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)],
        asks=[(101.0, 1.5), (102.0, 2.5), (103.0, 3.5)],
        ts_ms=1_723_161_255_123,
    )
    h = harness(ScriptedExchange(books={BTC: [book]}), depth_limit=2)

    events = await collect(h.feed, n_snapshots(1))

    assert statuses(events) == [C]
    (snap,) = snapshots(events)
    assert snap.symbol == BTC
    np.testing.assert_array_equal(snap.bids, [[100.0, 1.0], [99.0, 2.0]])
    np.testing.assert_array_equal(snap.asks, [[101.0, 1.5], [102.0, 2.5]])
    assert snap.bids.dtype == np.float64
    assert snap.update_id == 42
    assert snap.exchange_ts_ns == 1_723_161_255_123_000_000
    assert snap.ts_ns == T0_NS
    assert h.exchange.calls_to("watch_order_book")[0] == ("watch_order_book", BTC, 2)
    assert h.feed.stats.symbols[BTC].book_messages == 1


async def test_snapshot_is_detached_from_ccxts_book_mutated_in_place() -> None:
    book = ccxt_book(42, ts_ms=None)

    def apply_diff() -> OrderBook:
        # What ccxt does between two resolutions: the same object, updated in place.
        book["bids"].store(100.0, 0.0)
        book["bids"].store(99.5, 7.0)
        book["asks"].store(101.0, 9.0)
        book["nonce"] = 43
        return book

    h = harness(ScriptedExchange(books={BTC: [book, apply_diff]}))

    events = await collect(h.feed, n_snapshots(2))

    first, second = snapshots(events)
    np.testing.assert_array_equal(first.bids, [[100.0, 1.0], [99.0, 2.0]])
    np.testing.assert_array_equal(first.asks, [[101.0, 1.0], [102.0, 2.0]])
    assert first.update_id == 42
    assert first.exchange_ts_ns is None
    np.testing.assert_array_equal(second.bids, [[99.5, 7.0], [99.0, 2.0]])
    np.testing.assert_array_equal(second.asks, [[101.0, 9.0], [102.0, 2.0]])
    assert second.update_id == 43


async def test_trades_are_converted_and_deduplicated_by_id() -> None:
    t1 = ccxt_trade("1", "buy", 100.5, 0.25, 1_723_161_255_500)
    t2 = ccxt_trade("2", "sell", 100.4, 1.0, 1_723_161_255_600)
    t3 = ccxt_trade("3", "buy", 100.6, 0.5, 1_723_161_255_700)
    no_side = ccxt_trade("4", None)
    anon = ccxt_trade(None, "sell", 100.3, 2.0, 1_723_161_255_800)
    # ccxt hands back its cache of recent trades: old ones come again.
    script = [[t1, t2], [t1, t2, t3], [t3, no_side, anon]]
    h = harness(ScriptedExchange(trades={BTC: script}), watch_trades=True)

    events = await collect(h.feed, lambda ev: sum(isinstance(e, Trade) for e in ev) >= 4)

    trades = [e for e in events if isinstance(e, Trade)]
    assert [t.trade_id for t in trades[:3]] == ["1", "2", "3"]
    assert [(t.side, t.price, t.amount) for t in trades] == [
        ("buy", 100.5, 0.25),
        ("sell", 100.4, 1.0),
        ("buy", 100.6, 0.5),
        ("sell", 100.3, 2.0),
    ]
    assert trades[0].exchange_ts_ns == 1_723_161_255_500_000_000
    assert all(t.symbol == BTC and t.ts_ns == T0_NS for t in trades)
    stats = h.feed.stats.symbols[BTC]
    assert stats.trades == 4
    assert stats.duplicate_trades == 3  # t1, t2 in the second batch, t3 in the third
    assert stats.malformed == 1  # the trade without a side


async def test_an_id_less_trade_repeated_by_ccxt_is_emitted_once() -> None:
    anon = ccxt_trade(None, "sell", 100.3, 2.0)
    marker = ccxt_trade("9", "buy")
    h = harness(ScriptedExchange(trades={BTC: [[anon], [anon], [marker]]}), watch_trades=True)

    events = await collect(h.feed, lambda ev: any(getattr(e, "trade_id", "") == "9" for e in ev))

    assert sum(isinstance(e, Trade) for e in events) == 2
    assert h.feed.stats.symbols[BTC].duplicate_trades == 1


# -- reconnects and backoff ---------------------------------------------------------


async def test_disconnects_are_reported_and_retried_with_growing_capped_backoff() -> None:
    failures = [
        ccxt.NetworkError("binance connection closed"),
        ccxt.RequestTimeout("binance timed out"),
        ccxt.ExchangeNotAvailable("binance 503"),
        ccxt.NetworkError("binance connection closed"),
        ccxt.InvalidNonce("binance order book gap"),
    ]
    h = harness(
        ScriptedExchange(books={BTC: [ccxt_book(1), *failures, ccxt_book(2)]}),
        reconnect_initial_s=0.5,
        reconnect_max_s=2.0,
        ws_failures_before_fallback=100,
    )

    events = await collect(h.feed, n_snapshots(2))

    assert statuses(events) == [C, *[D, R] * 5, C]
    # The book is invalidated *before* the wait, not after it.
    first_disconnect = next(e for e in events if isinstance(e, FeedStatus) and e.state is D)
    assert first_disconnect.ts_ns == T0_NS
    assert "NetworkError" in first_disconnect.detail
    delays = h.sleep.delays
    assert len(delays) == 5
    ceilings = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert delays[0] <= delays[1] <= delays[2]
    assert max(delays) <= 2.0
    assert [s.update_id for s in snapshots(events)] == [1, 2]
    stats = h.feed.stats.symbols[BTC]
    assert stats.reconnects == 5
    assert stats.errors == {
        "NetworkError": 2,
        "RequestTimeout": 1,
        "ExchangeNotAvailable": 1,
        "InvalidNonce": 1,
    }


async def test_backoff_schedule_is_reproducible_from_the_seed() -> None:
    async def delays(seed: int) -> list[float]:
        errs = [ccxt.NetworkError("x") for _ in range(4)]
        h = harness(
            ScriptedExchange(books={BTC: [*errs, ccxt_book(1)]}),
            seed=seed,
            ws_failures_before_fallback=100,
        )
        await collect(h.feed, n_snapshots(1))
        return h.sleep.delays

    assert await delays(3) == await delays(3)
    assert await delays(3) != await delays(4)


@pytest.mark.parametrize(("healthy_for_s", "expect_reset"), [(61.0, True), (10.0, False)])
async def test_backoff_resets_only_after_a_healthy_period(
    healthy_for_s: float, expect_reset: bool
) -> None:
    clock = ManualClock(T0_NS)

    def book_later() -> OrderBook:
        clock.advance(int(healthy_for_s * NS_PER_SECOND))
        return ccxt_book(3)

    script = [
        ccxt_book(1),
        ccxt.NetworkError("a"),
        ccxt.NetworkError("b"),
        ccxt_book(2),  # reconnected...
        book_later,  # ...and still streaming healthy_for_s later
        ccxt.NetworkError("c"),
        ccxt_book(4),
    ]
    h = harness(
        ScriptedExchange(books={BTC: script}),
        clock=clock,
        reconnect_initial_s=0.5,
        reconnect_max_s=30.0,
        backoff_reset_after_s=60.0,
        ws_failures_before_fallback=100,
    )

    await collect(h.feed, n_snapshots(4))

    d0, d1, d2 = h.sleep.delays
    assert 0.25 <= d0 <= 0.5
    assert 0.5 <= d1 <= 1.0
    if expect_reset:
        assert 0.25 <= d2 <= 0.5
    else:
        assert 1.0 <= d2 <= 2.0


@pytest.mark.parametrize(
    "error",
    [ccxt.RateLimitExceeded("binance 429"), ccxt.DDoSProtection("binance 418")],
    ids=["RateLimitExceeded", "DDoSProtection"],
)
async def test_rate_limits_back_off_longer_than_network_errors(error: Exception) -> None:
    async def first_delay(err: Exception) -> tuple[float, list[MarketEvent]]:
        h = harness(
            ScriptedExchange(books={BTC: [err, ccxt_book(1)]}),
            reconnect_initial_s=0.5,
            reconnect_max_s=30.0,
        )
        events = await collect(h.feed, n_snapshots(1))
        return h.sleep.delays[0], events

    plain, _ = await first_delay(ccxt.NetworkError("blip"))
    limited, events = await first_delay(error)

    assert plain <= 0.5
    assert limited >= 1.0  # two steps up the ladder: within [1.0, 2.0]
    assert statuses(events) == [D, R, C]


@pytest.mark.parametrize(
    "error",
    [
        ccxt.BadSymbol("binance does not have market symbol FOO/BAR"),
        ccxt.AuthenticationError("binance invalid API key"),
        ccxt.PermissionDenied("binance IP not whitelisted"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_operational_errors_are_reported_then_raised_without_retry(error: Exception) -> None:
    h = harness(ScriptedExchange(books={BTC: [error, ccxt_book(1)]}))
    seen: list[MarketEvent] = []

    with pytest.raises(OperationalError) as info:
        await drain(h.feed, seen)

    assert statuses(seen) == [D]
    assert type(error).__name__ in seen[0].detail  # type: ignore[union-attr]
    assert info.value.__cause__ is error
    assert h.sleep.delays == []
    assert len(h.exchange.calls_to("watch_order_book")) == 1
    await h.feed.aclose()


async def test_a_fatal_trade_stream_error_ends_the_feed() -> None:
    h = harness(
        ScriptedExchange(trades={BTC: [ccxt.BadSymbol("no such market")]}), watch_trades=True
    )

    with pytest.raises(OperationalError, match="BadSymbol"):
        await drain(h.feed)
    await h.feed.aclose()


async def test_a_temporary_trade_stream_error_retries_without_touching_the_book() -> None:
    h = harness(
        ScriptedExchange(
            books={BTC: [ccxt_book(1)]},
            trades={BTC: [ccxt.NetworkError("x"), [ccxt_trade("1")]]},
        ),
        watch_trades=True,
    )

    events = await collect(
        h.feed, lambda ev: any(isinstance(e, Trade) for e in ev) and len(snapshots(ev)) == 1
    )

    assert statuses(events) == [C]  # no DISCONNECTED: the book stayed valid
    assert len(h.sleep.delays) == 1
    assert h.feed.stats.symbols[BTC].errors == {"NetworkError": 1}


async def test_first_book_timeout_counts_as_a_disconnect() -> None:
    never = asyncio.Event()
    h = harness(
        ScriptedExchange(books={BTC: [never.wait, ccxt_book(1)]}),
        first_book_timeout_s=0.02,
    )

    events = await collect(h.feed, n_snapshots(1))

    assert statuses(events) == [D, R, C]
    assert h.feed.stats.symbols[BTC].errors == {"TimeoutError": 1}


# -- REST fallback -----------------------------------------------------------------


async def test_falls_back_to_rest_after_repeated_ws_failures_and_returns_to_ws() -> None:
    ws = [ccxt.NetworkError("ws down") for _ in range(3)] + [ccxt_book(100)]
    rest = [ccxt_book(1), ccxt_book(2), ccxt_book(3)]
    h = harness(
        ScriptedExchange(books={BTC: ws}, rest={BTC: rest}),
        ws_failures_before_fallback=3,
        rest_poll_interval_s=1.0,
        ws_retry_interval_s=2.5,
        depth_limit=500,
    )

    events = await collect(h.feed, n_snapshots(4))

    assert statuses(events) == [D, R, D, R, D, F, R, C]
    assert [s.update_id for s in snapshots(events)] == [1, 2, 3, 100]
    # Poll spacing comes from the injected sleep; every request passed the throttler.
    assert h.sleep.delays[2:] == [1.0, 1.0, 1.0]
    assert h.throttler.acquired == 3
    assert h.exchange.calls_to("fetch_order_book") == [("fetch_order_book", BTC, 500)] * 3
    stats = h.feed.stats.symbols[BTC]
    assert stats.rest_polls == 3
    assert stats.book_messages == 1
    assert stats.fallbacks == 1
    assert stats.fallback_ns == 3 * NS_PER_SECOND
    assert stats.reconnects == 3
    assert stats.as_dict()["fallback_s"] == 3.0


async def test_a_failed_ws_retry_goes_straight_back_to_rest() -> None:
    ws = [ccxt.NetworkError("down") for _ in range(4)] + [ccxt_book(100)]
    rest = [ccxt_book(i) for i in range(1, 5)]
    h = harness(
        ScriptedExchange(books={BTC: ws}, rest={BTC: rest}),
        ws_failures_before_fallback=3,
        rest_poll_interval_s=1.0,
        ws_retry_interval_s=2.0,
    )

    events = await collect(h.feed, n_snapshots(5))

    assert statuses(events) == [D, R, D, R, D, F, R, D, F, R, C]
    # Only the first two ws failures waited out a backoff; the rest is poll spacing.
    assert h.sleep.delays[2:] == [1.0] * 4
    assert h.feed.stats.symbols[BTC].fallbacks == 2


async def test_exchange_without_websocket_books_polls_rest_from_the_start() -> None:
    rest = [ccxt_book(1), ccxt.RequestTimeout("slow"), ccxt_book(2)]
    h = harness(
        ScriptedExchange(rest={BTC: rest}, has={"watchOrderBook": False}),
        rest_poll_interval_s=0.25,
        reconnect_initial_s=0.5,
    )

    events = await collect(h.feed, n_snapshots(2))

    assert statuses(events) == [F, D, F]
    assert h.exchange.calls_to("watch_order_book") == []
    poll1, backoff, *_ = h.sleep.delays
    assert poll1 == 0.25
    assert 0.25 <= backoff <= 0.5
    assert h.feed.stats.symbols[BTC].errors == {"RequestTimeout": 1}


async def test_no_websocket_and_no_fallback_is_an_operational_error() -> None:
    h = harness(ScriptedExchange(has={"watchOrderBook": False}), rest_fallback=False)

    with pytest.raises(OperationalError, match="REST fallback"):
        await drain(h.feed)
    assert h.exchange.calls == []
    await h.feed.aclose()


async def test_default_throttler_spaces_rest_requests_by_the_exchange_rate_limit() -> None:
    clock = ManualClock(T0_NS)
    h = harness(
        ScriptedExchange(
            rest={BTC: [ccxt_book(i) for i in range(3)]},
            has={"watchOrderBook": False},
            rate_limit=30,  # ms per request
        ),
        clock=clock,
        throttler=None,
        rest_poll_interval_s=0.0,
    )

    await collect(h.feed, n_snapshots(3))

    gaps = np.diff(h.exchange.call_times)
    assert len(gaps) == 2
    assert (gaps >= 0.029).all(), gaps


# -- multiple symbols and lifecycle --------------------------------------------------


async def test_symbols_are_merged_into_one_stream_and_fail_independently() -> None:
    h = harness(
        ScriptedExchange(
            books={
                BTC: [ccxt_book(1), ccxt_book(2), ccxt_book(3)],
                ETH: [ccxt_book(11, symbol=ETH), ccxt.NetworkError("x"), ccxt_book(12, symbol=ETH)],
            }
        ),
        symbols=(BTC, ETH),
    )

    events = await collect(h.feed, n_snapshots(5))

    assert [s.update_id for s in snapshots(events, BTC)] == [1, 2, 3]
    assert [s.update_id for s in snapshots(events, ETH)] == [11, 12]
    assert statuses(events, BTC) == [C]
    assert statuses(events, ETH) == [C, D, R, C]
    assert h.feed.stats.symbols[BTC].book_messages == 3
    assert h.feed.stats.symbols[ETH].reconnects == 1
    assert set(h.feed.stats.as_dict()) == {BTC, ETH}


async def test_aclose_is_idempotent_and_ends_a_waiting_consumer() -> None:
    h = harness(ScriptedExchange(books={BTC: [ccxt_book(1)]}))
    got_first = asyncio.Event()
    received: list[MarketEvent] = []

    async def consume() -> None:
        async for event in h.feed.events():
            received.append(event)
            got_first.set()

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await got_first.wait()
        assert h.feed.state is LiveFeedState.OPENED
        await h.feed.aclose()
        await consumer  # the iterator ends instead of hanging on a closed feed
        await h.feed.aclose()

    assert h.feed.state is LiveFeedState.CLOSED
    assert h.exchange.close_calls == 1
    assert received  # the consumer did run
    with pytest.raises(RuntimeError, match="iterated once"):
        await drain(h.feed)


async def test_async_with_closes_the_exchange() -> None:
    ex = ScriptedExchange(books={BTC: [ccxt_book(1)]})
    h = harness(ex)
    async with h.feed as feed:
        assert feed.state is LiveFeedState.UNOPENED
    assert feed.state is LiveFeedState.CLOSED
    assert ex.close_calls == 1


def test_constructor_rejects_bad_symbol_lists() -> None:
    with pytest.raises(ValueError, match="at least one"):
        harness(ScriptedExchange(), symbols=())
    with pytest.raises(ValueError, match="duplicate"):
        harness(ScriptedExchange(), symbols=(BTC, BTC))


# -- backoff -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(0.01, 5.0),
    ratio=st.floats(1.0, 200.0),
    seed=st.integers(0, 2**32),
    limited=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_backoff_delays_stay_within_the_ladder_and_cap(
    initial: float, ratio: float, seed: int, limited: list[bool]
) -> None:
    max_s = initial * ratio
    backoff = Backoff(initial, max_s, random.Random(seed))
    previous = 0.0
    for rate_limited in limited:
        delay = backoff.next_delay(rate_limited=rate_limited)
        assert initial / 2 <= delay <= max_s
        if delay < max_s / 2:  # below the cap the ladder never steps down
            assert delay >= previous
        previous = delay


def test_backoff_reset_returns_to_the_first_step() -> None:
    backoff = Backoff(1.0, 60.0, random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.next_delay() >= 30.0
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


# -- error mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ccxt.RateLimitExceeded("429"), RateLimited),
        (ccxt.DDoSProtection("418"), RateLimited),
        (ccxt.NetworkError("reset"), TemporaryError),
        (ccxt.ExchangeNotAvailable("503"), TemporaryError),
        (ccxt.OnMaintenance("maintenance"), TemporaryError),
        (ccxt.RequestTimeout("timeout"), TemporaryError),
        (ccxt.InvalidNonce("gap"), TemporaryError),
        (ccxt.ChecksumError("checksum"), TemporaryError),
        (ccxt.BadResponse("garbage"), TemporaryError),
        (ccxt.OperationFailed('{"code":-1001,"msg":"Internal error"}'), TemporaryError),
        (ccxt.ExchangeError("unknown code -1"), TemporaryError),
        (TimeoutError(), TemporaryError),
        (ConnectionResetError(), TemporaryError),
        (ccxt.AuthenticationError("bad key"), OperationalError),
        (ccxt.PermissionDenied("no"), OperationalError),
        (ccxt.AccountSuspended("banned"), OperationalError),
        (ccxt.BadSymbol("FOO/BAR"), OperationalError),
        (ccxt.NotSupported("no"), OperationalError),
        (ccxt.InsufficientFunds("poor"), OrderRejected),
        (ccxt.InvalidOrder("below min notional"), OrderRejected),
        (ccxt.OrderImmediatelyFillable("post-only would cross"), WouldTake),
        (ccxt.OrderNotFound("unknown order"), OrderNotFound),
        (ccxt.ExchangeClosedByUser("closed"), OperationalError),
        (ccxt.BaseError("???"), OperationalError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_map_ccxt_error(error: Exception, expected: type[BackstopError]) -> None:
    mapped = map_ccxt_error(error)
    assert type(mapped) is expected
    assert mapped.__cause__ is error
    assert str(mapped).startswith(type(error).__name__)


# -- make_exchange (real ccxt objects, no network) ----------------------------------


def test_make_exchange_live_binance_uses_production_urls() -> None:
    ex = make_exchange("binance", sandbox=False)
    assert isinstance(ex, ccxt.pro.binance)
    assert ex.enableRateLimit is True
    assert ex.urls["api"]["public"] == "https://api.binance.com/api/v3"
    assert ex.get_ws_url("spot", "public") == "wss://stream.binance.com:9443/ws"
    assert not ex.apiKey
    assert not ex.secret


def test_make_exchange_sandbox_binance_uses_testnet_urls() -> None:
    ex = make_exchange("binance", sandbox=True)
    assert ex.urls["api"]["public"] == "https://testnet.binance.vision/api/v3"
    assert ex.urls["api"]["private"] == "https://testnet.binance.vision/api/v3"
    assert ex.get_ws_url("spot", "public") == "wss://stream.testnet.binance.vision/ws"
    assert ex.isSandboxModeEnabled


def test_make_exchange_url_overrides_reach_request_urls() -> None:
    ex = make_exchange(
        "binance",
        sandbox=True,
        url_overrides={
            "public": "http://127.0.0.1:8765/api/v3",
            "ws.spot": "ws://127.0.0.1:8765/ws",
        },
    )
    request = ex.sign("depth", ["public"], "GET", {"symbol": "BTCUSDT", "limit": 5})
    assert request["url"] == "http://127.0.0.1:8765/api/v3/depth?symbol=BTCUSDT&limit=5"
    assert ex.get_ws_url("spot", "public") == "ws://127.0.0.1:8765/ws"
    # Untouched endpoints keep the sandbox URL, not the production one.
    assert ex.urls["api"]["private"] == "https://testnet.binance.vision/api/v3"


def test_make_exchange_rejects_unknown_url_override_paths() -> None:
    with pytest.raises(ConfigError, match=r"'ws\.spott'.*ws\.spot"):
        make_exchange("binance", sandbox=True, url_overrides={"ws.spott": "ws://127.0.0.1/ws"})


def test_make_exchange_sets_credentials_and_merges_options() -> None:
    ex = make_exchange(
        "okx",
        sandbox=False,
        api_key="k",
        secret="s",
        password="p",
        options={"defaultType": "spot"},
        extra_config={"timeout": 5000},
    )
    assert (ex.apiKey, ex.secret, ex.password) == ("k", "s", "p")
    assert ex.options["defaultType"] == "spot"
    assert "watchOrderBook" in ex.options  # ccxt's defaults survive the merge
    assert ex.timeout == 5000


def test_make_exchange_rest_only() -> None:
    ex = make_exchange("binance", sandbox=False, pro=False)
    assert isinstance(ex, ccxt.async_support.binance)
    assert not isinstance(ex, ccxt.pro.binance)


@pytest.mark.parametrize(
    ("exchange_id", "sandbox", "match"),
    [
        ("nosuchexchange", False, "not supported"),
        ("kraken", True, "no sandbox"),  # urls["test"] is None there
    ],
)
def test_make_exchange_config_errors(exchange_id: str, sandbox: bool, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_exchange(exchange_id, sandbox=sandbox)


async def test_real_ccxt_against_a_closed_local_port_retries_then_falls_back() -> None:
    """Real ccxt.pro errors (not the double's) flow through the same path.

    Nothing listens on the port, so every REST and websocket call fails with a real
    ccxt exception. This is not the wire-level test against an exchange emulator
    (issue 7); it only checks that real failures are mapped and retried.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exchange = make_exchange(
        "binance",
        sandbox=True,
        options={"fetchMarkets": {"types": ["spot"]}},
        url_overrides={
            "public": f"http://127.0.0.1:{port}/api/v3",
            "ws.spot": f"ws://127.0.0.1:{port}/ws",
        },
    )
    feed = LiveFeed(
        exchange,
        [BTC],
        clock=ManualClock(T0_NS),
        rng=random.Random(1),
        reconnect_initial_s=0.005,
        reconnect_max_s=0.01,
        ws_failures_before_fallback=2,
        watch_trades=False,
    )

    events = await collect(feed, lambda ev: F in statuses(ev), timeout_s=10)

    assert statuses(events) == [D, R, D, F]
    first = events[0]
    assert isinstance(first, FeedStatus)
    assert f"127.0.0.1:{port}" in first.detail
    assert set(feed.stats.symbols[BTC].errors) <= {"ExchangeNotAvailable", "NetworkError"}
    assert exchange.session is None  # aclose closed ccxt's HTTP session


def test_a_ccxt_error_hidden_under_ccxts_own_bug_is_what_gets_mapped() -> None:
    # ccxt.pro binance's user-stream subscribe raises KeyError('spot') while handling
    # the venue's -1022 (seen against the emulator): the operator must read the -1022.
    venue_said = ccxt.AuthenticationError('binance {"code":-1022,"msg":"Signature ..."}')
    try:
        try:
            raise venue_said
        except ccxt.AuthenticationError:
            raise KeyError("spot") from None
    except KeyError as bug:
        mapped = map_ccxt_error(bug)
    assert type(mapped) is OperationalError
    assert str(mapped).startswith("AuthenticationError")
    assert "-1022" in str(mapped)
