"""The local L2 order book: every input rule, the queries, and a reference-model check.

The property tests replay random streams of snapshots and deltas (zero sizes, repeated
prices, ids in and out of order, occasional NaN/negative/crossing rows) into both
:class:`OrderBook` and :class:`RefBook`, a deliberately naive dict-based model of the
same rules, and compare everything a user can observe after every step.

Every test here runs twice: on the compiled level store (``bot/_bookc.c``, which the
package install builds) and on the pure-numpy one (``bot/_book_numpy.py``).
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import _book_kernel
from bot._book_kernel import Kernel
from bot.book import BookState, Depth, Drop, FillEstimate, OrderBook, Side
from bot.clock import ManualClock
from bot.feeds.events import BookDelta, BookSnapshot, Levels, levels

NAN = float("nan")
INF = float("inf")


def lv(*rows: tuple[float, float]) -> Levels:
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


NONE = lv()


@pytest.fixture(autouse=True, scope="module", params=["compiled", "pure"])
def kernel(request: pytest.FixtureRequest) -> Iterator[Kernel]:
    """Books created by the tests use this store (module scope: hypothesis-safe)."""
    name: Kernel = request.param
    with _book_kernel.using(name):  # raises if the extension was not built
        yield name


@pytest.fixture
def book(clock: ManualClock, kernel: Kernel) -> OrderBook:
    b = OrderBook("BTC/USDT", clock=clock)
    assert b.kernel == kernel
    return b


def simple(book: OrderBook, update_id: int | None = None) -> OrderBook:
    """bids 99 x 1, 98 x 2, 97 x 3; asks 101 x 1, 102 x 2, 103 x 3 (mid 100)."""
    assert (
        book.apply_snapshot(
            lv((99, 1), (98, 2), (97, 3)), lv((101, 1), (102, 2), (103, 3)), update_id=update_id
        )
        is None
    )
    return book


def state_of(book: OrderBook) -> BookState:
    """``book.state``, read afresh (mypy would keep an earlier ``is`` narrowing)."""
    return book.state


def levels_of(book: OrderBook, side: Side) -> list[tuple[float, float]]:
    return [(p, s) for p, s in book.top(10**9, side).tolist()]


# --------------------------------------------------------------------------- empty


def test_new_book_is_empty_and_answers_nothing(book: OrderBook) -> None:
    assert book.state is BookState.EMPTY
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.mid() is None
    assert book.spread_bps() is None
    assert book.depth_within(100, Side.BID) == Depth(0.0, 0.0, 0)
    assert not book.depth_bands([10, 50]).any()
    assert book.top(5, Side.ASK).shape == (0, 2)
    assert book.level_count(Side.BID) == 0
    assert book.age_ns() is None
    fill = book.fill_estimate(Side.ASK, 1000.0)
    assert not fill.complete
    assert fill.filled_quote == 0
    assert fill.avg_price is None


# --------------------------------------------------------------------------- snapshots


def test_snapshot_sorts_best_first_skips_zero_sizes_and_last_duplicate_wins(
    book: OrderBook,
) -> None:
    drop = book.apply_snapshot(
        lv((97, 3), (99, 1), (98, 0), (99, 5), (96, 2)),
        lv((103, 3), (101, 1), (102, 0), (101, 4)),
        update_id=10,
    )
    assert drop is None
    assert book.state is BookState.VALID
    assert book.update_id == 10
    assert levels_of(book, Side.BID) == [(99, 5), (97, 3), (96, 2)]
    assert levels_of(book, Side.ASK) == [(101, 4), (103, 3)]
    assert book.best_bid() == 99
    assert book.best_ask() == 101
    assert book.mid() == 100
    assert book.spread_bps() == pytest.approx(200.0)
    assert book.updates_applied == 1
    assert book.snapshots_applied == 1


def test_snapshot_replaces_the_whole_book(book: OrderBook) -> None:
    simple(book)
    assert book.apply_snapshot(lv((50, 1)), lv((60, 1))) is None
    assert levels_of(book, Side.BID) == [(50, 1)]
    assert levels_of(book, Side.ASK) == [(60, 1)]


def test_snapshot_accepts_extra_columns_and_plain_lists(book: OrderBook) -> None:
    assert book.apply_snapshot([[99, 1, 7]], [["101", "2"]]) is None  # type: ignore[arg-type]
    assert levels_of(book, Side.BID) == [(99, 1)]
    assert levels_of(book, Side.ASK) == [(101, 2)]


def test_snapshot_with_an_empty_side_is_valid_but_has_no_mid(book: OrderBook) -> None:
    assert book.apply_snapshot(lv((99, 1)), NONE) is None
    assert book.state is BookState.VALID
    assert book.best_bid() == 99
    assert book.best_ask() is None
    assert book.mid() is None
    assert book.depth_within(100, Side.BID) == Depth(0.0, 0.0, 0)


@pytest.mark.parametrize(
    ("bids", "asks", "reason"),
    [
        (lv((99, NAN)), lv((101, 1)), Drop.NON_FINITE),
        (lv((99, 1)), lv((INF, 1)), Drop.NON_FINITE),
        (lv((-INF, 1)), lv((101, 1)), Drop.NON_FINITE),
        (lv((NAN, 0)), lv((101, 1)), Drop.NON_FINITE),
        (lv((99, -1)), lv((101, 1)), Drop.NEGATIVE),
        (lv((99, 1)), lv((-101, 1)), Drop.NEGATIVE),
        (lv((0, 1)), lv((101, 1)), Drop.NEGATIVE),
        (lv((101, 1)), lv((100, 1)), Drop.CROSSED),
        (lv((100, 1)), lv((100, 1)), Drop.CROSSED),  # locked counts as crossed
    ],
)
def test_bad_snapshot_is_dropped_and_counted_keeping_the_last_good_book(
    book: OrderBook, bids: Levels, asks: Levels, reason: Drop
) -> None:
    assert book.apply_snapshot(bids, asks) is reason
    assert book.state is BookState.EMPTY  # an empty book stays empty
    simple(book, update_id=5)
    assert book.apply_snapshot(bids, asks, update_id=6) is reason
    assert state_of(book) is BookState.VALID
    assert book.update_id == 5
    assert levels_of(book, Side.BID) == [(99, 1), (98, 2), (97, 3)]
    assert book.drops[reason] == 2
    assert book.updates_applied == 1


@pytest.mark.parametrize(
    "rows",
    [np.zeros(3), np.zeros((2, 1)), [["x", 1]], np.zeros((2, 2, 2))],
    ids=["1d", "one column", "text", "3d"],
)
def test_snapshot_of_the_wrong_shape_is_malformed(book: OrderBook, rows: Any) -> None:
    assert book.apply_snapshot(rows, lv((101, 1))) is Drop.MALFORMED
    assert book.drops[Drop.MALFORMED] == 1
    assert book.state is BookState.EMPTY


def test_older_snapshot_is_stale_while_valid_but_accepted_to_resync(book: OrderBook) -> None:
    simple(book, update_id=100)
    assert book.apply_snapshot(lv((90, 1)), lv((91, 1)), update_id=99) is Drop.STALE
    assert book.best_bid() == 99
    book.invalidate("test")
    assert book.apply_snapshot(lv((90, 1)), lv((91, 1)), update_id=99) is None
    assert book.state is BookState.VALID
    assert book.update_id == 99


def test_book_does_not_alias_the_callers_arrays(book: OrderBook) -> None:
    bids, asks = lv((99, 1), (98, 2)), lv((101, 1), (102, 2))
    book.apply_snapshot(bids, asks)
    delta = lv((103, 5))
    book.apply_delta(NONE, delta)
    bids[:] = 0.0
    asks[:] = 0.0
    delta[:] = 0.0
    assert levels_of(book, Side.BID) == [(99, 1), (98, 2)]
    assert levels_of(book, Side.ASK) == [(101, 1), (102, 2), (103, 5)]
    top = book.top(2, Side.BID)
    top[:] = 0.0
    assert book.best_bid() == 99


# --------------------------------------------------------------------------- deltas


def test_delta_sizes_are_absolute_and_zero_removes(book: OrderBook) -> None:
    simple(book)
    drop = book.apply_delta(
        lv((99, 4), (98, 0), (96.5, 7), (95, 0)),  # update, remove, insert, remove absent
        lv((101, 0), (104, 1), (102, 2.5)),
    )
    assert drop is None
    assert levels_of(book, Side.BID) == [(99, 4), (97, 3), (96.5, 7)]
    assert levels_of(book, Side.ASK) == [(102, 2.5), (103, 3), (104, 1)]
    assert book.updates_applied == 2


def test_repeated_price_in_a_delta_last_row_wins(book: OrderBook) -> None:
    simple(book)
    assert book.apply_delta(lv((98, 5), (96, 1), (98, 0), (96, 2)), lv((105, 1), (105, 3))) is None
    assert levels_of(book, Side.BID) == [(99, 1), (97, 3), (96, 2)]
    assert levels_of(book, Side.ASK)[-1] == (105, 3)


def test_delta_can_empty_a_side_and_refill_it(book: OrderBook) -> None:
    simple(book)
    assert book.apply_delta(NONE, lv((101, 0), (102, 0), (103, 0))) is None
    assert book.best_ask() is None
    assert book.mid() is None
    assert book.level_count(Side.ASK) == 0
    assert book.apply_delta(NONE, lv((100.5, 1))) is None
    assert book.mid() == pytest.approx(99.75)


@pytest.mark.parametrize(
    ("bids", "asks", "reason"),
    [
        (lv((99, 2), (98, NAN)), NONE, Drop.NON_FINITE),
        (lv((99, 2)), lv((INF, 0)), Drop.NON_FINITE),
        (lv((99, 2)), lv((104, -1)), Drop.NEGATIVE),
        (lv((-1, 0)), lv((104, 1)), Drop.NEGATIVE),
        (lv((99, 2), (101.5, 1)), lv((104, 1)), Drop.CROSSED),
        (lv((101, 1)), NONE, Drop.CROSSED),  # locked with the best ask
        (NONE, lv((101, 0), (102, 0), (98.5, 1)), Drop.CROSSED),
    ],
)
def test_bad_delta_is_dropped_entirely_and_the_book_keeps_its_state(
    book: OrderBook, bids: Levels, asks: Levels, reason: Drop
) -> None:
    simple(book)
    version = book.version
    assert book.apply_delta(bids, asks) is reason
    assert levels_of(book, Side.BID) == [(99, 1), (98, 2), (97, 3)]
    assert levels_of(book, Side.ASK) == [(101, 1), (102, 2), (103, 3)]
    assert book.drops[reason] == 1
    assert book.version == version
    assert book.updates_applied == 1


def test_delta_before_any_snapshot_is_unsynced(book: OrderBook) -> None:
    assert book.apply_delta(lv((99, 1)), NONE) is Drop.UNSYNCED
    assert book.apply_delta(lv((99, 1)), NONE, first_id=1, last_id=2) is Drop.UNSYNCED
    assert book.drops[Drop.UNSYNCED] == 2
    assert book.state is BookState.EMPTY


@pytest.mark.parametrize(
    "ids",
    [
        {"first_id": 5},
        {"last_id": 5},
        {"prev_id": 5},
        {"first_id": 6, "last_id": 5},
    ],
)
def test_inconsistent_ids_are_malformed(book: OrderBook, ids: dict[str, int]) -> None:
    simple(book, update_id=4)
    assert book.apply_delta(lv((99, 2)), NONE, **ids) is Drop.MALFORMED
    assert book.best_bid() == 99
    assert levels_of(book, Side.BID)[0] == (99, 1)


def test_delta_without_ids_on_a_sequenced_book_is_malformed(book: OrderBook) -> None:
    simple(book, update_id=4)
    assert book.apply_delta(lv((99, 2)), NONE) is Drop.MALFORMED
    assert book.state is BookState.VALID


def test_deltas_without_ids_on_a_book_without_ids_just_apply(book: OrderBook) -> None:
    simple(book)
    for size in (2.0, 3.0, 4.0):
        assert book.apply_delta(lv((99, size)), NONE) is None
    assert book.top(1, Side.BID).tolist() == [[99, 4]]
    assert book.update_id is None


def test_sequenced_delta_on_a_book_without_ids_starts_tracking(book: OrderBook) -> None:
    simple(book)
    assert book.apply_delta(lv((99, 2)), NONE, first_id=50, last_id=52) is None
    assert book.update_id == 52
    assert book.apply_delta(lv((99, 3)), NONE, first_id=54, last_id=55) is Drop.GAP


# --------------------------------------------------------------------------- sequencing


def test_spot_sequence_straddle_then_continuity(book: OrderBook) -> None:
    simple(book, update_id=100)
    # Buffered diffs that the snapshot already contains are stale.
    assert book.apply_delta(lv((99, 9)), NONE, first_id=90, last_id=95) is Drop.STALE
    assert book.apply_delta(lv((99, 9)), NONE, first_id=96, last_id=100) is Drop.STALE
    # The first one applied straddles S+1.
    assert book.apply_delta(lv((99, 2)), NONE, first_id=98, last_id=103) is None
    assert book.update_id == 103
    assert book.apply_delta(lv((99, 3)), NONE, first_id=104, last_id=104) is None
    # A replayed (duplicate) message is stale and changes nothing.
    assert book.apply_delta(lv((99, 7)), NONE, first_id=104, last_id=104) is Drop.STALE
    assert book.apply_delta(lv((99, 4)), NONE, first_id=105, last_id=110) is None
    assert book.top(1, Side.BID).tolist() == [[99, 4]]
    assert book.drops[Drop.STALE] == 3
    assert book.state is BookState.VALID


def test_first_delta_after_snapshot_that_skips_ids_is_a_gap(book: OrderBook) -> None:
    simple(book, update_id=100)
    assert book.apply_delta(lv((99, 2)), NONE, first_id=102, last_id=105) is Drop.GAP
    assert book.state is BookState.INVALID
    assert book.gaps == 1


def test_spot_gap_invalidates_until_the_next_snapshot(book: OrderBook) -> None:
    simple(book, update_id=100)
    assert book.apply_delta(lv((99, 2)), NONE, first_id=101, last_id=101) is None
    assert book.apply_delta(lv((99, 3)), NONE, first_id=103, last_id=104) is Drop.GAP
    assert book.state is BookState.INVALID
    assert book.invalid_reason is not None
    assert "gap" in book.invalid_reason
    assert book.gaps == 1
    assert book.drops[Drop.GAP] == 1
    # Nothing is answered from an invalid book, and later deltas are not applied.
    assert book.best_bid() is None
    assert book.mid() is None
    assert book.depth_within(1000, Side.ASK) == Depth(0.0, 0.0, 0)
    assert book.level_count(Side.BID) == 0
    assert book.apply_delta(lv((99, 4)), NONE, first_id=105, last_id=105) is Drop.UNSYNCED
    assert book.apply_snapshot(lv((99, 5)), lv((101, 5)), update_id=200) is None
    assert state_of(book) is BookState.VALID
    assert book.apply_delta(lv((99, 6)), NONE, first_id=201, last_id=201) is None
    assert book.top(1, Side.BID).tolist() == [[99, 6]]


def test_futures_sequence_uses_prev_id(book: OrderBook) -> None:
    simple(book, update_id=1000)
    # Futures ids are not contiguous between messages: U may be far above S+1 as long as
    # the previous message ended at or before the snapshot (pu <= S < u).
    assert book.apply_delta(lv((99, 2)), NONE, first_id=1005, last_id=1010, prev_id=990) is None
    assert book.apply_delta(lv((99, 3)), NONE, first_id=1020, last_id=1030, prev_id=1010) is None
    assert book.apply_delta(lv((99, 8)), NONE, first_id=1020, last_id=1030, prev_id=1010) is (
        Drop.STALE
    )
    assert book.top(1, Side.BID).tolist() == [[99, 3]]
    assert book.apply_delta(lv((99, 4)), NONE, first_id=1040, last_id=1050, prev_id=1035) is (
        Drop.GAP
    )
    assert book.state is BookState.INVALID


def test_futures_first_delta_that_follows_a_missed_message_is_a_gap(book: OrderBook) -> None:
    simple(book, update_id=1000)
    # Its predecessor ended after the snapshot (pu > S) and was never seen.
    assert book.apply_delta(lv((99, 2)), NONE, first_id=1005, last_id=1010, prev_id=1002) is (
        Drop.GAP
    )


def test_dropped_in_sequence_delta_makes_the_next_one_a_gap(book: OrderBook) -> None:
    simple(book, update_id=10)
    assert book.apply_delta(lv((99, NAN)), NONE, first_id=11, last_id=11) is Drop.NON_FINITE
    assert book.update_id == 10  # the book never saw update 11 ...
    assert book.apply_delta(lv((99, 2)), NONE, first_id=12, last_id=12) is Drop.GAP
    assert book.state is BookState.INVALID  # ... so it must resync rather than drift


def test_invalidate_waits_for_a_snapshot(book: OrderBook) -> None:
    book.invalidate("before anything")
    assert book.state is BookState.EMPTY
    simple(book, update_id=1)
    book.invalidate("feed disconnected")
    assert state_of(book) is BookState.INVALID
    assert book.invalid_reason == "feed disconnected"
    assert book.best_ask() is None
    assert book.apply_delta(lv((99, 2)), NONE, first_id=2, last_id=2) is Drop.UNSYNCED
    simple(book, update_id=5)
    assert state_of(book) is BookState.VALID
    assert book.invalid_reason is None


def test_apply_dispatches_events_and_rejects_other_symbols(
    book: OrderBook, clock: ManualClock
) -> None:
    snap = BookSnapshot("BTC/USDT", clock.now_ns() - 5, lv((99, 1)), lv((101, 1)), update_id=7)
    assert book.apply(snap) is None
    assert book.last_update_ns == clock.now_ns() - 5
    delta = BookDelta("BTC/USDT", clock.now_ns(), lv((99, 2)), NONE, first_id=8, last_id=8)
    assert book.apply(delta) is None
    assert book.update_id == 8
    assert book.last_update_ns == clock.now_ns()
    other = BookDelta("ETH/USDT", clock.now_ns(), lv((99, 3)), NONE, first_id=9, last_id=9)
    assert book.apply(other) is Drop.MALFORMED
    assert book.top(1, Side.BID).tolist() == [[99, 2]]


def test_the_exchange_stamp_of_the_last_applied_event_is_kept(
    book: OrderBook, clock: ManualClock
) -> None:
    t = clock.now_ns()
    snap = BookSnapshot("BTC/USDT", t, lv((99, 1)), lv((101, 1)), update_id=7, exchange_ts_ns=t - 9)
    assert book.apply(snap) is None
    assert book.exchange_ts_ns == t - 9
    delta = BookDelta("BTC/USDT", t + 5, lv((99, 2)), NONE, first_id=8, last_id=8)
    assert book.apply(delta) is None
    assert book.exchange_ts_ns is None  # this feed gave none: no stale stamp kept
    gap = BookDelta(
        "BTC/USDT", t + 9, lv((99, 3)), NONE, first_id=20, last_id=20, exchange_ts_ns=t + 1
    )
    assert book.apply(gap) is Drop.GAP
    assert book.exchange_ts_ns is None  # dropped: nothing of it is taken


def test_age_follows_the_injected_clock(book: OrderBook, clock: ManualClock) -> None:
    simple(book)  # no ts_ns: stamped with the clock
    assert book.age_ns() == 0
    clock.advance(1_500)
    assert book.age_ns() == 1_500
    book.apply_delta(lv((99, 2)), NONE, ts_ns=clock.now_ns() - 100)
    assert book.age_ns() == 100
    book.apply_delta(lv((99, NAN)), NONE)  # dropped inputs do not refresh the book
    clock.advance(50)
    assert book.age_ns() == 150


def test_drop_counts_are_a_read_only_view(book: OrderBook) -> None:
    book.apply_delta(lv((99, 1)), NONE)
    drops = book.drops
    assert drops[Drop.UNSYNCED] == 1
    assert set(drops) == set(Drop)
    with pytest.raises(TypeError):
        drops[Drop.GAP] = 5  # type: ignore[index]
    book.apply_delta(lv((99, 1)), NONE)
    assert drops[Drop.UNSYNCED] == 2  # a live view


# --------------------------------------------------------------------------- queries


def test_top_levels_best_first(book: OrderBook) -> None:
    simple(book)
    assert book.top(2, Side.BID).tolist() == [[99, 1], [98, 2]]
    assert book.top(2, Side.ASK).tolist() == [[101, 1], [102, 2]]
    assert book.top(10, Side.ASK).shape == (3, 2)
    assert book.top(0, Side.ASK).shape == (0, 2)
    assert book.level_count(Side.BID) == 3


def test_depth_within_band_edges_are_inclusive(book: OrderBook) -> None:
    simple(book)  # mid 100: 1% = 99..101, 2% = 98..102
    assert book.depth_within(100, Side.BID) == Depth(1.0, 99.0, 1)
    assert book.depth_within(100, Side.ASK) == Depth(1.0, 101.0, 1)
    assert book.depth_within(200, Side.BID) == Depth(3.0, 99.0 + 196.0, 2)
    assert book.depth_within(200, Side.ASK) == Depth(3.0, 101.0 + 204.0, 2)
    assert book.depth_within(50, Side.ASK) == Depth(0.0, 0.0, 0)
    assert book.depth_within(10_000, Side.BID) == Depth(6.0, 99 + 196 + 291, 3)


def test_depth_bands_match_depth_within_for_any_band_order(book: OrderBook) -> None:
    simple(book)
    bands = [200.0, 50.0, 100.0, 1e4]
    out = book.depth_bands(bands)
    assert out.shape == (2, 4, 2)
    for j, side in enumerate((Side.BID, Side.ASK)):
        for i, bps in enumerate(bands):
            d = book.depth_within(bps, side)
            assert out[j, i].tolist() == [d.base, d.quote]
    assert book.depth_bands([]).shape == (2, 0, 2)


def test_fill_estimate_walks_the_book(book: OrderBook) -> None:
    simple(book)
    # Buying 500 quote: 101 x 1 (101), 102 x 2 (204), then 195 of the 103 level.
    fill = book.fill_estimate(Side.ASK, 500.0)
    base = 1 + 2 + 195 / 103
    assert fill == FillEstimate(
        side=Side.ASK,
        requested_quote=500.0,
        filled_quote=500.0,
        filled_base=pytest.approx(base),  # type: ignore[arg-type]
        avg_price=pytest.approx(500 / base),  # type: ignore[arg-type]
        worst_price=103.0,
        slippage_bps=pytest.approx((500 / base - 100) / 100 * 1e4),  # type: ignore[arg-type]
        complete=True,
    )
    sell = book.fill_estimate(Side.BID, 50.0)
    assert sell.worst_price == 99
    assert sell.avg_price == pytest.approx(99)
    assert sell.slippage_bps == pytest.approx(100.0)  # selling below mid is a cost too
    assert sell.complete


def test_fill_estimate_reports_an_incomplete_fill(book: OrderBook) -> None:
    simple(book)
    fill = book.fill_estimate(Side.ASK, 1e6)
    assert not fill.complete
    assert fill.filled_quote == pytest.approx(101 + 204 + 309)
    assert fill.filled_base == 6
    assert fill.worst_price == 103
    assert book.fill_estimate(Side.ASK, 0.0).complete
    with pytest.raises(ValueError, match="notional"):
        book.fill_estimate(Side.ASK, -1.0)
    with pytest.raises(ValueError, match="notional"):
        book.fill_estimate(Side.ASK, NAN)


def test_fill_estimate_over_a_deep_book(book: OrderBook) -> None:
    # More levels than the first fill window (32) so the window has to grow.
    n = 500
    book.apply_snapshot(lv((1.0, 1.0)), np.column_stack((100.0 + np.arange(n), np.ones(n))))
    notional = sum(100.0 + i for i in range(300)) + 0.5 * 400.0
    fill = book.fill_estimate(Side.ASK, notional)
    assert fill.complete
    assert fill.worst_price == 400.0
    assert fill.filled_base == pytest.approx(300.5)


# --------------------------------------------------------------------------- real data


def test_bundled_real_recording_rebuilds_without_gaps_or_crossing(clock: ManualClock) -> None:
    """Binance spot BTCUSDT, 2024-08-08 (real data from nkaz001/hftbacktest, MIT,
    Copyright (c) 2022 nkaz001@protonmail.com): snapshot + diffs by Binance's sync rules."""
    path = Path(__file__).parents[1] / "bot" / "data" / "spot_btcusdt_20240808.gz"
    book = OrderBook("BTCUSDT", clock=clock)
    ref = RefBook()
    pending: list[dict[str, Any]] = []
    applied = 0
    with gzip.open(path, "rt") as f:
        for line in f:
            _, raw = line.split(" ", 1)
            if '"depthUpdate"' not in raw and '"lastUpdateId"' not in raw:
                continue
            msg = json.loads(raw)
            if "lastUpdateId" in msg:
                bids, asks = levels(msg["bids"]), levels(msg["asks"])
                assert book.apply_snapshot(bids, asks, update_id=msg["lastUpdateId"]) is None
                ref.snapshot(bids, asks, msg["lastUpdateId"])
                diffs, pending = pending, []
            else:
                diffs = [msg["data"]]
                if book.state is BookState.EMPTY:
                    pending += diffs
                    continue
            for d in diffs:
                bids, asks = levels(d["b"]), levels(d["a"])
                got = book.apply_delta(bids, asks, first_id=d["U"], last_id=d["u"])
                assert got is None or got is Drop.STALE
                assert ref.delta(bids, asks, d["U"], d["u"], None) is got
                applied += got is None
    assert applied > 3000
    assert book.state is BookState.VALID
    assert book.gaps == 0
    assert sum(book.drops.values()) == book.drops[Drop.STALE] <= 5
    assert_same(book, ref)


# --------------------------------------------------------------------------- model


@dataclass
class RefBook:
    """The same rules, written as plainly as possible (dicts and loops)."""

    state: str = "empty"
    update_id: int | None = None
    await_first: bool = False
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    drops: Counter[Drop] = field(default_factory=Counter)

    def _drop(self, reason: Drop) -> Drop:
        self.drops[reason] += 1
        return reason

    @staticmethod
    def _content(*sides: Levels) -> Drop | None:
        rows = [row for side in sides for row in side.tolist()]
        if not all(math.isfinite(v) for row in rows for v in row):
            return Drop.NON_FINITE
        if any(p <= 0 or s < 0 for p, s in rows):
            return Drop.NEGATIVE
        return None

    @staticmethod
    def _crossed(bids: dict[float, float], asks: dict[float, float]) -> bool:
        return bool(bids) and bool(asks) and max(bids) >= min(asks)

    def snapshot(self, bids: Levels, asks: Levels, update_id: int | None) -> Drop | None:
        if (
            self.state == "valid"
            and update_id is not None
            and self.update_id is not None
            and update_id < self.update_id
        ):
            return self._drop(Drop.STALE)
        bad = self._content(bids, asks)
        if bad:
            return self._drop(bad)
        new_b: dict[float, float] = {}
        new_a: dict[float, float] = {}
        for rows, side in ((bids, new_b), (asks, new_a)):
            for p, s in rows.tolist():
                side.pop(p, None)
                if s > 0:
                    side[p] = s
        if self._crossed(new_b, new_a):
            return self._drop(Drop.CROSSED)
        self.bids, self.asks = new_b, new_a
        self.state = "valid"
        self.update_id = update_id
        self.await_first = update_id is not None
        return None

    def delta(
        self,
        bids: Levels,
        asks: Levels,
        first: int | None,
        last: int | None,
        prev: int | None,
    ) -> Drop | None:
        if self.state != "valid":
            return self._drop(Drop.UNSYNCED)
        if self.update_id is not None:
            if first is None or last is None:
                return self._drop(Drop.MALFORMED)
            cur = self.update_id
            if last <= cur:
                return self._drop(Drop.STALE)
            if self.await_first:
                in_sequence = first <= cur + 1 <= last or (prev is not None and prev <= cur < last)
            elif prev is not None:
                in_sequence = prev == cur
            else:
                in_sequence = first == cur + 1
            if not in_sequence:
                self.state = "invalid"
                self.await_first = False
                return self._drop(Drop.GAP)
        bad = self._content(bids, asks)
        if bad:
            return self._drop(bad)
        new_b, new_a = dict(self.bids), dict(self.asks)
        for rows, side in ((bids, new_b), (asks, new_a)):
            for p, s in rows.tolist():
                if s == 0:
                    side.pop(p, None)
                else:
                    side[p] = s
        if self._crossed(new_b, new_a):
            return self._drop(Drop.CROSSED)
        self.bids, self.asks = new_b, new_a
        if last is not None:
            self.update_id = last
            self.await_first = False
        return None

    def invalidate(self) -> None:
        if self.state != "empty":
            self.state = "invalid"
            self.await_first = False

    # queries

    def side(self, side: Side) -> list[tuple[float, float]]:
        if side is Side.BID:
            return sorted(self.bids.items(), reverse=True)
        return sorted(self.asks.items())

    def mid(self) -> float | None:
        if self.state != "valid" or not self.bids or not self.asks:
            return None
        return (max(self.bids) + min(self.asks)) / 2.0

    def depth(self, bps: float, side: Side) -> tuple[float, float, int]:
        mid = self.mid()
        if mid is None:
            return 0.0, 0.0, 0
        if side is Side.BID:
            rows = [(p, s) for p, s in self.side(side) if p >= mid * (1.0 - bps / 1e4)]
        else:
            rows = [(p, s) for p, s in self.side(side) if p <= mid * (1.0 + bps / 1e4)]
        return sum(s for _, s in rows), sum(p * s for p, s in rows), len(rows)

    def fill(self, side: Side, notional: float) -> tuple[float, float, float | None, bool]:
        """(filled_quote, filled_base, worst_price, complete)"""
        quote = base = 0.0
        worst = None
        if notional == 0:
            return 0.0, 0.0, None, True  # nothing asked, nothing missing
        for p, s in self.side(side):
            worst = p
            if quote + p * s >= notional:
                base += (notional - quote) / p
                return notional, base, worst, True
            quote += p * s
            base += s
        return quote, base, worst, False


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_same(book: OrderBook, ref: RefBook) -> None:
    assert book.state.value == ref.state
    assert book.update_id == ref.update_id
    assert dict(book.drops) == {d: ref.drops[d] for d in Drop}
    valid = ref.state == "valid"
    for side in Side:
        expected = ref.side(side) if valid else []
        assert levels_of(book, side) == expected
        assert book.level_count(side) == len(expected)
    assert book.best_bid() == (max(ref.bids) if valid and ref.bids else None)
    assert book.best_ask() == (min(ref.asks) if valid and ref.asks else None)
    assert book.mid() == ref.mid()
    bands = [1.0, 25.0, 300.0, 5000.0]
    out = book.depth_bands(bands)
    for j, side in enumerate((Side.BID, Side.ASK)):
        for i, bps in enumerate(bands):
            base, quote, count = ref.depth(bps, side)
            got = book.depth_within(bps, side)
            assert got.levels == count
            assert close(got.base, base)
            assert close(got.quote, quote)
            assert close(float(out[j, i, 0]), base)
            assert close(float(out[j, i, 1]), quote)
    for side in Side:
        total = sum(p * s for p, s in ref.side(side)) if valid else 0.0
        # Odd fractions so a notional never lands exactly on a level boundary.
        for notional in (total * 0.3183098861, total * 0.7071067811, total * 1.5 + 1.0):
            fill = book.fill_estimate(side, notional)
            if not valid:
                assert not fill.complete
                assert fill.filled_quote == 0
                continue
            quote, base, worst, complete = ref.fill(side, notional)
            assert fill.complete == complete
            assert close(fill.filled_quote, quote)
            assert close(fill.filled_base, base)
            if notional > 0 and base > 0:
                assert fill.worst_price == worst
                assert fill.avg_price is not None
                assert close(fill.avg_price, quote / base)


# --------------------------------------------------------------------------- properties

# Prices on a coarse grid so streams revisit levels; bids mostly low, asks mostly high,
# with an overlap so some updates cross the book.
BID_PRICES = st.integers(1, 24).map(lambda i: i * 0.5)
ASK_PRICES = st.integers(22, 44).map(lambda i: i * 0.5)
SIZES = st.sampled_from([0.0, 0.0, 0.25, 1.0, 1.5, 3.0, 7.125, 0.001, 12345.678])
BAD = st.sampled_from([(NAN, 1.0), (10.0, NAN), (INF, 1.0), (10.0, -1.0), (-5.0, 0.0)])


@st.composite
def rows(
    draw: st.DrawFn, prices: st.SearchStrategy[float], max_size: int, poison: bool = True
) -> Levels:
    out = draw(st.lists(st.tuples(prices, SIZES), max_size=max_size))
    # Venues send sorted rows (the book's fast path); repeated prices keep their order.
    order = draw(st.sampled_from(["as drawn", "ascending", "descending"]))
    if order != "as drawn":
        out.sort(key=lambda row: row[0], reverse=order == "descending")
    if poison and draw(st.integers(0, 19)) == 0:  # about 1 in 20: a poisoned row
        out.insert(draw(st.integers(0, len(out))), draw(BAD))
    return lv(*out)


IdMode = Literal["next", "straddle", "stale", "gap", "none"]


@dataclass(frozen=True)
class SnapOp:
    bids: Levels
    asks: Levels
    uid_mode: Literal["fresh", "older", "none"]


@dataclass(frozen=True)
class DeltaOp:
    bids: Levels
    asks: Levels
    id_mode: IdMode
    span: int


@dataclass(frozen=True)
class InvalidateOp:
    pass


SNAPSHOTS = st.builds(
    SnapOp,
    rows(BID_PRICES, 12),
    rows(ASK_PRICES, 12),
    st.sampled_from(["fresh", "fresh", "fresh", "older", "none"]),
)
DELTAS = st.builds(
    DeltaOp,
    rows(BID_PRICES, 6),
    rows(ASK_PRICES, 6),
    st.sampled_from(["next"] * 12 + ["straddle", "stale", "gap", "none"]),
    st.integers(1, 4),
)
# Weighted by hand: st.one_of does not weight repeated branches.
OPS = st.sampled_from(["delta"] * 12 + ["snapshot"] * 3 + ["invalidate"]).flatmap(
    lambda kind: {"delta": DELTAS, "snapshot": SNAPSHOTS, "invalidate": st.just(InvalidateOp())}[
        kind
    ]
)
# A clean, uncrossed first snapshot so most streams spend their steps on deltas.
FIRST_SNAPSHOT = st.builds(
    SnapOp,
    rows(st.integers(1, 20).map(lambda i: i * 0.5), 12, poison=False),
    rows(st.integers(25, 44).map(lambda i: i * 0.5), 12, poison=False),
    st.sampled_from(["fresh", "fresh", "none"]),
)


def delta_ids(
    ref: RefBook, mode: IdMode, span: int, futures: bool, fresh: int
) -> tuple[int | None, int | None, int | None]:
    """Concrete ids for an abstract mode, relative to what the book has applied."""
    cur = ref.update_id if ref.update_id is not None else fresh
    if mode == "none":
        return None, None, None
    first, last = {
        "next": (cur + 1, cur + span),
        "straddle": (cur - 1, cur + span),
        "stale": (cur - span, cur),
        "gap": (cur + 2, cur + 1 + span),
    }[mode]
    prev = first - 1 if mode != "straddle" else cur - 2
    return first, last, (prev if futures else None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opening=FIRST_SNAPSHOT, ops=st.lists(OPS, min_size=10, max_size=50), futures=st.booleans())
def test_random_streams_match_the_reference_model(
    opening: SnapOp, ops: list[Any], futures: bool
) -> None:
    clock = ManualClock()
    book = OrderBook("X", clock=clock)
    ref = RefBook()
    fresh = 1_000
    for op in [opening, *ops]:
        clock.advance(1)
        if isinstance(op, SnapOp):
            fresh += 100
            uid = {
                "fresh": fresh,
                "older": (ref.update_id or fresh) - 7,
                "none": None,
            }[op.uid_mode]
            assert book.apply_snapshot(op.bids, op.asks, update_id=uid) is ref.snapshot(
                op.bids, op.asks, uid
            )
        elif isinstance(op, DeltaOp):
            first, last, prev = delta_ids(ref, op.id_mode, op.span, futures, fresh)
            got = book.apply_delta(op.bids, op.asks, first_id=first, last_id=last, prev_id=prev)
            assert got is ref.delta(op.bids, op.asks, first, last, prev)
        else:
            book.invalidate("test")
            ref.invalidate()
        assert_same(book, ref)


@settings(max_examples=60, deadline=None)
@given(
    snap_b=rows(BID_PRICES, 30),
    snap_a=rows(ASK_PRICES, 30),
    deltas=st.lists(st.tuples(rows(BID_PRICES, 25), rows(ASK_PRICES, 25)), max_size=25),
)
def test_unsequenced_delta_batches_match_the_reference_model(
    snap_b: Levels, snap_a: Levels, deltas: list[tuple[Levels, Levels]]
) -> None:
    """Bigger messages without ids: exercises the batch merge (many inserts and removals
    at once, repeated prices inside one message) rather than the sequencing."""
    book = OrderBook("X", clock=ManualClock())
    ref = RefBook()
    assert book.apply_snapshot(snap_b, snap_a) is ref.snapshot(snap_b, snap_a, None)
    for b, a in deltas:
        assert book.apply_delta(b, a) is ref.delta(b, a, None, None, None)
        assert_same(book, ref)
