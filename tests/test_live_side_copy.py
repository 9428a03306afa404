"""The live feed copies ccxt.pro's order book sides out on every update.

The compiled copier (``bot._bookc.pair_rows``) must give exactly what numpy's
conversion of the same rows gives, bit for bit, and hand every side it does not take
(strings, ragged rows, other types) to that conversion, errors included: the book
then judges the same arrays whichever way they were copied.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
from ccxt.async_support.base.ws.order_book import CountedOrderBook, OrderBook

from bot import _book_kernel
from bot.feeds import live
from bot.feeds.events import levels

pytestmark = pytest.mark.skipif(
    _book_kernel.pair_rows() is None, reason="compiled kernel not built (or pure forced)"
)


def general(side: Any, limit: int) -> np.ndarray[Any, Any]:
    """What the feed did before the copier, and does when the copier declines."""
    return levels(list(side[:limit]))


def same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def random_book(rng: random.Random, n: int) -> OrderBook:
    """A ccxt order book as ccxt.pro keeps it: snapshot, then deltas through its sides."""
    mid = rng.uniform(100.0, 100_000.0)
    tick = 10.0 ** rng.randint(-4, 0)
    bids = [[round(mid - (i + 1) * tick, 6), rng.uniform(0.0001, 50.0)] for i in range(n)]
    asks = [[round(mid + (i + 1) * tick, 6), rng.uniform(0.0001, 50.0)] for i in range(n)]
    book = OrderBook({"bids": bids, "asks": asks, "nonce": 1}, n)
    for _ in range(n // 2):
        side = book["bids"] if rng.random() < 0.5 else book["asks"]
        price = round(mid + rng.choice((-1, 1)) * rng.randint(1, n) * tick, 6)
        size = 0.0 if rng.random() < 0.2 else rng.uniform(0.0001, 50.0)
        side.storeArray([price, size])
    return book


def test_ccxt_book_sides_copy_bit_for_bit() -> None:
    rng = random.Random(7)
    for _ in range(200):
        book = random_book(rng, rng.randint(0, 300))
        for name in ("bids", "asks"):
            side = book[name]
            for limit in (1, 5, len(side), len(side) + 10, 1000):
                got = live.side_levels(side, limit)
                assert same(got, general(side, limit)), (name, limit)


def test_counted_books_keep_price_and_amount() -> None:
    # A counted book's rows are [price, amount, count]: the copy keeps two columns.
    book = CountedOrderBook({"bids": [[10.0, 1.5, 3], [9.5, 2.0, 1]], "asks": []}, 10)
    got = live.side_levels(book["bids"], 10)
    assert got.tolist() == [[10.0, 1.5], [9.5, 2.0]]
    assert same(got, general(book["bids"], 10))
    assert live.side_levels(book["asks"], 10).shape == (0, 2)


def test_ints_big_ints_and_non_finite_values_convert_as_numpy_does() -> None:
    side = [[2**63 + 1, 1], [10**400 // 10**390, 0.0], [math.inf, math.nan], [-0.0, 5]]
    assert same(live.side_levels(side, 10), general(side, 10))


@pytest.mark.parametrize(
    "side",
    [
        [["100.5", "1.0"], ["100.0", "2.0"]],  # numeric strings: numpy parses them
        [(100.5, 1.0), (100.0, 2.0)],  # tuples
        [[100.5, True]],  # a bool is not a number the copier takes
        [[100.5, None]],  # numpy makes None a NaN (the book drops it)
    ],
)
def test_sides_the_copier_declines_still_convert(side: list[Any]) -> None:
    assert _book_kernel.pair_rows() is not None
    assert same(live.side_levels(side, 10), general(side, 10))


@pytest.mark.parametrize(
    "side",
    [
        [[100.5, 1.0], [100.0, 2.0, 3]],  # ragged
        [[100.5]],  # too narrow
        [[100.5, "x"]],  # not a number
    ],
)
def test_malformed_sides_raise_what_the_feed_counts_as_malformed(side: list[Any]) -> None:
    errors = []
    for copy in (general, live.side_levels):
        try:
            copy(side, 10)
        except ValueError as e:
            errors.append(str(e))
    assert len(errors) == 2
    assert errors[0] == errors[1]  # the same error, so the same count and log line


def test_the_copy_is_detached_from_ccxts_book() -> None:
    # ccxt mutates its sides in place as later diffs arrive.
    book = OrderBook({"bids": [[10.0, 1.0], [9.0, 2.0]], "asks": []}, 10)
    got = live.side_levels(book["bids"], 10)
    book["bids"].storeArray([10.0, 0.0])
    book["bids"].storeArray([9.5, 7.0])
    assert got.tolist() == [[10.0, 1.0], [9.0, 2.0]]
    got[0, 1] = 99.0  # and writable, as numpy's own copy is
    assert book["bids"][0] == [9.5, 7.0]
