"""The paper fill model on its own: queues, trade-through, book-through, consumed liquidity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.feeds.events import levels
from bot.venues.matching import Fill, Matcher, iter_levels, sizes_at

D = Decimal
SYM = "BTC/USDT"


def make_book(bids: list[list[float]], asks: list[list[float]]) -> OrderBook:
    book = OrderBook(SYM, clock=ManualClock(1_723_161_255_000_000_000))
    assert book.apply_snapshot(levels(bids), levels(asks)) is None
    return book


def update(
    book: OrderBook, bids: list[list[float]] | None = None, asks: list[list[float]] | None = None
) -> None:
    """Absolute new sizes for some levels (0 removes), like a depth diff."""
    assert book.apply_delta(levels(bids or []), levels(asks or [])) is None


@pytest.fixture
def book() -> OrderBook:
    # Best bid 100 (1.0), best ask 101 (1.5).
    return make_book([[100.0, 1.0], [99.0, 2.0]], [[101.0, 1.5], [102.0, 3.0]])


def test_joining_a_level_puts_its_whole_size_ahead_of_us(book: OrderBook) -> None:
    m = Matcher()
    assert m.rest("1", "buy", D("100"), D("0.5"), book).queue_ahead == D("1.0")
    assert m.rest("2", "buy", D("100.5"), D("0.5"), book).queue_ahead == 0  # new level
    assert m.rest("3", "sell", D("102"), D("0.5"), book).queue_ahead == D("3.0")


def test_touch_without_trade_through_does_not_fill(book: OrderBook) -> None:
    m = Matcher()
    m.rest("1", "buy", D("100"), D("0.5"), book)
    # The ask comes down to one tick above us, sizes churn everywhere: no fill.
    update(book, bids=[[100.0, 1.4]], asks=[[100.01, 0.2]])
    assert m.on_book(book) == []
    # Sellers trade at our price, but less than the queue ahead of us: still nothing.
    assert m.on_trade(100.0, 0.6, "sell") == []
    assert m.on_trade(100.0, 0.3, "sell") == []
    # Buyers lifting the ask never fill a bid.
    assert m.on_trade(100.01, 5.0, "buy") == []
    assert m.orders["1"].remaining == D("0.5")
    assert m.orders["1"].queue_ahead == D("0.1")


def test_only_volume_beyond_the_queue_ahead_fills(book: OrderBook) -> None:
    m = Matcher()
    m.rest("1", "buy", D("100"), D("0.5"), book)  # 1.0 ahead
    assert m.on_trade(100.0, 0.4, "sell") == []
    assert m.orders["1"].queue_ahead == D("0.6")
    fills = m.on_trade(100.0, 0.7, "sell")  # 0.6 to the queue, 0.1 to us
    assert fills == [Fill("1", D("100"), D("0.1"), taker=False)]
    assert m.orders["1"].remaining == D("0.4")
    assert m.on_trade(100.0, 0.25, "sell") == [Fill("1", D("100"), D("0.25"), taker=False)]
    assert m.on_trade(100.0, 1.0, "sell") == [Fill("1", D("100"), D("0.15"), taker=False)]
    assert "1" not in m.orders  # filled: gone from the engine


def test_queue_only_shrinks_when_the_level_gets_smaller_than_it(book: OrderBook) -> None:
    m = Matcher()
    m.rest("1", "buy", D("100"), D("0.5"), book)  # 1.0 ahead
    update(book, bids=[[100.0, 3.0]])  # others join behind us
    m.on_book(book)
    update(book, bids=[[100.0, 1.2]])  # cancels: assumed behind us
    m.on_book(book)
    assert m.orders["1"].queue_ahead == D("1.0")
    update(book, bids=[[100.0, 0.3]])  # smaller than our queue: some were ahead
    m.on_book(book)
    assert m.orders["1"].queue_ahead == D("0.3")
    update(book, bids=[[100.0, 2.0]])  # growth never puts anyone back ahead
    m.on_book(book)
    assert m.orders["1"].queue_ahead == D("0.3")


def test_trade_through_our_price_fills_whatever_the_queue(book: OrderBook) -> None:
    m = Matcher()
    m.rest("1", "buy", D("100"), D("0.5"), book)  # 1.0 ahead
    fills = m.on_trade(99.99, 0.2, "sell")
    assert fills == [Fill("1", D("100"), D("0.2"), taker=False)]  # at our price, as maker
    assert m.orders["1"].queue_ahead == 0
    assert m.on_trade(99.5, 1.0, "sell") == [Fill("1", D("100"), D("0.3"), taker=False)]


def test_book_moving_through_our_price_fills_as_maker(book: OrderBook) -> None:
    m = Matcher()
    m.rest("1", "buy", D("100"), D("0.5"), book)
    # Sellers now rest at and below our bid (the bid level is gone).
    update(book, bids=[[100.0, 0.0]], asks=[[99.5, 0.3], [100.0, 0.1], [101.0, 0.0]])
    fills = m.on_book(book)
    assert fills == [
        Fill("1", D("100"), D("0.3"), taker=False),
        Fill("1", D("100"), D("0.1"), taker=False),
    ]
    # The same book again: that liquidity is ours already.
    assert m.on_book(book) == []
    assert m.consumed(Side.ASK, 99.5) == D("0.3")
    # 0.2 more arrives at 99.5: only the new size is available.
    update(book, asks=[[99.5, 0.5]])
    assert m.on_book(book) == [Fill("1", D("100"), D("0.1"), taker=False)]
    assert "1" not in m.orders


def test_take_walks_the_book_and_consumes_it(book: OrderBook) -> None:
    m = Matcher()
    assert m.take("buy", D("2"), D("102"), book) == [(D("101"), D("1.5")), (D("102"), D("0.5"))]
    # A second taker does not get the same liquidity.
    assert m.take("buy", D("3"), D("102"), book) == [(D("102"), D("2.5"))]
    assert m.take("buy", D("1"), D("102"), book) == []
    assert not m.would_take("buy", D("102"), book)
    # The limit bounds the walk.
    assert m.take("sell", D("5"), D("99.5"), book) == [(D("100"), D("1.0"))]


def test_a_dry_run_take_consumes_nothing(book: OrderBook) -> None:
    m = Matcher()
    assert m.take("buy", D("1"), None, book, consume=False) == [(D("101"), D("1"))]
    assert m.consumed(Side.ASK, 101.0) == 0


def test_consumed_liquidity_is_forgotten_when_the_level_empties(book: OrderBook) -> None:
    m = Matcher()
    m.take("buy", D("1.0"), D("101"), book)
    update(book, asks=[[101.0, 0.6]])  # others took from what we left: clamp
    m.on_book(book)
    assert m.consumed(Side.ASK, 101.0) == D("0.6")
    assert m.take("buy", D("1"), D("101"), book, consume=False) == []
    update(book, asks=[[101.0, 0.0]])
    m.on_book(book)
    update(book, asks=[[101.0, 0.8]])  # a fresh level
    m.on_book(book)
    assert m.take("buy", D("1"), D("101"), book) == [(D("101"), D("0.8"))]


def test_our_orders_at_one_price_keep_time_priority(book: OrderBook) -> None:
    m = Matcher()
    m.rest("a", "buy", D("100"), D("0.2"), book)  # 1.0 ahead
    update(book, bids=[[100.0, 1.5]])
    m.on_book(book)
    m.rest("b", "buy", D("100"), D("0.2"), book)  # 1.5 ahead (real orders only)
    fills = m.on_trade(100.0, 1.1, "sell")  # 1.0 real, then 0.1 to "a"
    assert fills == [Fill("a", D("100"), D("0.1"), taker=False)]
    assert m.orders["b"].queue_ahead == D("0.5")  # the 1.0 real ahead of "a" were ahead of "b"
    fills = m.on_trade(100.0, 0.7, "sell")  # 0.1 to "a", 0.5 real, 0.1 to "b"
    assert fills == [
        Fill("a", D("100"), D("0.1"), taker=False),
        Fill("b", D("100"), D("0.1"), taker=False),
    ]


def test_better_priced_orders_fill_first_on_a_sweep(book: OrderBook) -> None:
    m = Matcher()
    m.rest("low", "buy", D("99"), D("0.5"), book)  # 2.0 ahead at 99
    m.rest("high", "buy", D("100"), D("0.5"), book)
    fills = m.on_trade(98.0, 0.6, "sell")  # a sweep printing below both
    assert fills == [
        Fill("high", D("100"), D("0.5"), taker=False),
        Fill("low", D("99"), D("0.1"), taker=False),
    ]


def test_an_untrusted_book_changes_nothing(book: OrderBook) -> None:
    m = Matcher()
    m.rest("1", "buy", D("100"), D("0.5"), book)
    book.invalidate("feed disconnected")
    assert m.on_book(book) == []
    assert m.orders["1"].queue_ahead == D("1.0")


def test_crossing_own_finds_our_opposite_orders(book: OrderBook) -> None:
    m = Matcher()
    m.rest("s1", "sell", D("101.5"), D("0.1"), book)
    m.rest("s2", "sell", D("103"), D("0.1"), book)
    assert [o.order_id for o in m.crossing_own("buy", D("102"))] == ["s1"]
    assert [o.order_id for o in m.crossing_own("buy", None)] == ["s1", "s2"]
    assert m.crossing_own("buy", D("101")) == []


def test_level_helpers_read_deep_books() -> None:
    bids = [[1000.0 - i, 1.0 + i] for i in range(300)]
    book = make_book(bids, [[1001.0, 1.0]])
    assert sizes_at(book, Side.BID, [1000.0, 800.0, 701.0, 650.5]) == [1.0, 201.0, 300.0, 0.0]
    walked = list(iter_levels(book, Side.BID, 990.0))
    assert len(walked) == 11
    assert walked[-1] == (990.0, 11.0)
    assert len(list(iter_levels(book, Side.BID, None))) == 300


@settings(max_examples=200, deadline=None)
@given(
    queue=st.integers(0, 500),
    amount=st.integers(1, 300),
    prints=st.lists(st.integers(1, 200), max_size=12),
)
def test_fills_at_our_price_are_exactly_the_volume_beyond_the_queue(
    queue: int, amount: int, prints: list[int]
) -> None:
    """Whatever the prints, we get min(amount, traded - queue ahead), never more."""
    step = D("0.001")
    book = make_book([[100.0, float(queue * step)], [99.0, 1.0]], [[101.0, 1.0]])
    m = Matcher()
    m.rest("1", "buy", D("100"), amount * step, book)
    got = D(0)
    for p in prints:
        for f in m.on_trade(100.0, float(p * step), "sell"):
            assert f.price == D("100")
            got += f.amount
    expected = min(amount, max(0, sum(prints) - queue)) * step
    assert got == expected
