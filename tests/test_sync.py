"""DepthSynchronizer: Binance's snapshot/diff procedure, generic over id'd diffs."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.feeds.events import EMPTY_LEVELS, BookDelta, BookSnapshot
from bot.feeds.replay import bundled_sample_paths, iter_recording, sniff_recording
from bot.feeds.sync import DepthSynchronizer

SYM = "BTC/USDT"


def delta(first: int | None, last: int | None, prev: int | None = None, ts: int = 0) -> BookDelta:
    return BookDelta(
        SYM, ts, np.array([[100.0, 1.0]]), EMPTY_LEVELS, first_id=first, last_id=last, prev_id=prev
    )


def snapshot(update_id: int | None, ts: int = 0) -> BookSnapshot:
    return BookSnapshot(
        SYM, ts, np.array([[100.0, 1.0]]), np.array([[101.0, 1.0]]), update_id=update_id
    )


def ids(events: object) -> list[tuple[int | None, int | None]]:
    return [(e.first_id, e.last_id) for e in events if isinstance(e, BookDelta)]  # type: ignore[attr-defined]


def test_diffs_before_the_snapshot_are_held_then_filtered_by_its_id() -> None:
    sync = DepthSynchronizer(SYM)
    held = [delta(1, 5), delta(6, 10), delta(11, 15), delta(16, 20)]
    for d in held:
        assert sync.on_delta(d) == ()
    assert sync.buffered == 4
    snap = snapshot(12)

    out = sync.on_snapshot(snap)

    assert out[0] is snap
    # (11, 15) straddles the snapshot (11 <= 13 <= 15) and is kept; 1-5 and 6-10 are in it.
    assert ids(out) == [(11, 15), (16, 20)]
    assert sync.stale == 2
    assert sync.synced
    assert sync.buffered == 0


def test_after_the_snapshot_diffs_pass_in_order_and_stale_ones_are_dropped() -> None:
    sync = DepthSynchronizer(SYM)
    sync.on_snapshot(snapshot(100))

    assert sync.on_delta(delta(90, 100)) == ()  # late, already in the snapshot
    fresh = delta(95, 105)
    assert sync.on_delta(fresh) == (fresh,)
    after = delta(106, 110)
    assert sync.on_delta(after) == (after,)
    assert sync.stale == 1


@pytest.mark.parametrize(
    "stream",
    [
        # spot: U == previous u + 1, but with a hole (21..29 missing)
        [delta(11, 20), delta(30, 40), delta(41, 50)],
        # futures: pu == previous u, but one pu does not match
        [delta(11, 20, prev=10), delta(25, 40, prev=22), delta(41, 50, prev=40)],
    ],
)
def test_continuity_is_not_the_synchronizers_business(stream: list[BookDelta]) -> None:
    # Gaps are detected (and counted) by the book; the synchronizer must hand the diffs
    # over unchanged so that the book can see them.
    sync = DepthSynchronizer(SYM)
    sync.on_snapshot(snapshot(15))
    out = [e for d in stream for e in sync.on_delta(d)]
    assert out == stream


def test_resync_buffers_again_and_filters_against_the_new_snapshot() -> None:
    sync = DepthSynchronizer(SYM)
    sync.on_snapshot(snapshot(10))
    assert len(sync.on_delta(delta(11, 20))) == 1

    sync.resync()  # the book saw a gap; a fresh snapshot is on its way

    assert not sync.synced
    assert sync.snapshot_id is None
    assert sync.on_delta(delta(40, 50)) == ()
    assert sync.on_delta(delta(51, 60)) == ()
    out = sync.on_snapshot(snapshot(55))
    assert ids(out) == [(51, 60)]
    assert sync.snapshot_id == 55


def test_a_newer_snapshot_while_synced_replaces_the_reference_id() -> None:
    sync = DepthSynchronizer(SYM)
    sync.on_snapshot(snapshot(10))
    sync.on_snapshot(snapshot(50))
    assert sync.on_delta(delta(40, 50)) == ()
    assert len(sync.on_delta(delta(51, 52))) == 1


def test_idless_diffs_before_a_snapshot_are_dropped_after_it_they_pass() -> None:
    sync = DepthSynchronizer(SYM)
    sync.on_delta(delta(None, None))
    out = sync.on_snapshot(snapshot(None))
    assert len(out) == 1
    assert sync.stale == 1
    d = delta(None, None)
    assert sync.on_delta(d) == (d,)


def test_buffer_is_bounded_oldest_dropped_first() -> None:
    sync = DepthSynchronizer(SYM, max_buffer=3)
    for i in range(5):
        sync.on_delta(delta(i * 10 + 1, i * 10 + 10))
    assert sync.overflow == 2
    assert sync.buffered == 3
    assert ids(sync.on_snapshot(snapshot(0))) == [(21, 30), (31, 40), (41, 50)]
    assert sync.discard_buffer() == 0


def test_discard_buffer_reports_diffs_that_never_got_a_snapshot() -> None:
    sync = DepthSynchronizer(SYM)
    sync.on_delta(delta(1, 2))
    sync.on_delta(delta(3, 4))
    assert sync.discard_buffer() == 2
    assert sync.buffered == 0


@given(
    n=st.integers(min_value=1, max_value=40),
    sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=40, max_size=40),
    snap_after=st.integers(min_value=0, max_value=40),
    snap_offset=st.integers(min_value=-3, max_value=200),
)
def test_output_is_snapshot_then_exactly_the_newer_diffs_in_order(
    n: int, sizes: list[int], snap_after: int, snap_offset: int
) -> None:
    # A contiguous spot-style stream; the snapshot arrives after `snap_after` diffs and
    # holds everything up to some id.
    stream = []
    nxt = 1000
    for size in sizes[:n]:
        stream.append(delta(nxt, nxt + size - 1))
        nxt += size
    snap_id = 1000 + snap_offset
    sync = DepthSynchronizer(SYM)
    out: list[BookSnapshot | BookDelta] = []
    arrival: list[BookDelta | BookSnapshot] = [
        *stream[:snap_after],
        snapshot(snap_id),
        *stream[snap_after:],
    ]
    for ev in arrival:
        out.extend(sync.on_delta(ev) if isinstance(ev, BookDelta) else sync.on_snapshot(ev))

    assert isinstance(out[0], BookSnapshot)
    expected = [d for d in stream if d.last_id is not None and d.last_id > snap_id]
    assert out[1:] == expected
    assert sync.stale == len(stream) - len(expected)
    if expected and expected[0].first_id is not None and expected[0].first_id <= snap_id + 1:
        # The first diff kept straddles the snapshot whenever the stream covers it.
        assert expected[0].first_id <= snap_id + 1 <= (expected[0].last_id or 0)


def test_bundled_spot_sample_synchronises_without_a_sequence_gap() -> None:
    # End to end on real data, without the book: after the snapshot, the diffs kept run
    # on with spot continuity (U == previous u + 1) across both chained files.
    sync = DepthSynchronizer("BTCUSDT")
    skipped: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    out: list[BookSnapshot | BookDelta] = []
    for path in bundled_sample_paths():
        for ev in iter_recording(sniff_recording(path), skipped=skipped, malformed=malformed):
            if isinstance(ev, BookDelta):
                out.extend(sync.on_delta(ev))
            elif isinstance(ev, BookSnapshot):
                out.extend(sync.on_snapshot(ev))

    assert not malformed
    snaps = [e for e in out if isinstance(e, BookSnapshot)]
    assert len(snaps) == 1
    assert out[0] is snaps[0]
    deltas = [e for e in out if isinstance(e, BookDelta)]
    assert len(deltas) == 3451 + 3044 - sync.stale
    snap_id = snaps[0].update_id
    assert snap_id is not None
    assert deltas[0].first_id is not None
    assert deltas[0].last_id is not None
    assert deltas[0].first_id <= snap_id + 1 <= deltas[0].last_id
    gaps = sum(
        1 for prev, cur in itertools.pairwise(deltas) if cur.first_id != (prev.last_id or 0) + 1
    )
    assert gaps == 0
