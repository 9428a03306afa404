"""Snapshot/delta synchronisation for id'd depth streams (Binance's documented procedure).

A venue that streams depth diffs and serves snapshots separately (Binance spot and
futures) cannot hand out a consistent book by itself: diffs start flowing before the
snapshot is fetched, and some of them are already folded into it. The procedure is:

1. buffer the diffs that arrive before the snapshot;
2. on the snapshot, emit it, drop buffered and later diffs with ``last_id <= snapshot id``
   (already in the snapshot) and emit the rest in arrival order.

This class only orders and filters. Continuity (spot ``U == previous u + 1``, futures
``pu == previous u``, and the first diff straddling the snapshot id) is checked by the
order book, so that a gap is counted in one place whatever the source.
"""

from __future__ import annotations

from collections import deque

from bot.feeds.events import BookDelta, BookSnapshot

DEFAULT_MAX_BUFFER = 10_000
"""Diffs kept while waiting for a snapshot. Binance's REST snapshot takes well under a
second, i.e. at most a few hundred diffs; the cap only bounds memory when no snapshot
ever comes (a recording that starts mid-stream, a snapshot request that keeps failing)."""


class DepthSynchronizer:
    """Orders and filters one symbol's snapshots and diffs so that a book can apply them.

    Feed it every :class:`BookSnapshot` and :class:`BookDelta` of one symbol in arrival
    order; apply what it returns, in order.
    """

    __slots__ = ("_buffer", "_snapshot_id", "_synced", "overflow", "stale", "symbol")

    def __init__(self, symbol: str = "", *, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be >= 1")
        self.symbol = symbol
        self._buffer: deque[BookDelta] = deque(maxlen=max_buffer)
        self._synced = False
        self._snapshot_id: int | None = None
        self.stale = 0
        """Diffs dropped because the snapshot already contains them."""
        self.overflow = 0
        """Buffered diffs discarded (oldest first) because no snapshot came in time."""

    @property
    def synced(self) -> bool:
        """True once a snapshot has been seen (and since the last :meth:`resync`)."""
        return self._synced

    @property
    def snapshot_id(self) -> int | None:
        """Update id of the last snapshot emitted, if it had one."""
        return self._snapshot_id

    @property
    def buffered(self) -> int:
        """Diffs waiting for a snapshot."""
        return len(self._buffer)

    def on_delta(self, delta: BookDelta) -> tuple[BookDelta, ...]:
        """Returns the diff if it can be applied now, else ``()`` (buffered or stale)."""
        if not self._synced:
            if len(self._buffer) == self._buffer.maxlen:
                self.overflow += 1
            self._buffer.append(delta)
            return ()
        snap_id = self._snapshot_id
        if snap_id is not None and delta.last_id is not None and delta.last_id <= snap_id:
            self.stale += 1
            return ()
        return (delta,)

    def on_snapshot(self, snapshot: BookSnapshot) -> list[BookSnapshot | BookDelta]:
        """Returns the snapshot followed by the buffered diffs that come after it."""
        snap_id = snapshot.update_id
        out: list[BookSnapshot | BookDelta] = [snapshot]
        for delta in self._buffer:
            # Without ids on both sides nothing says whether a diff that arrived before
            # the snapshot is already in it; re-applying an older absolute size would
            # corrupt the level, so such diffs are dropped. Once synced, id-less diffs
            # pass through (sources without ids have nothing better).
            if snap_id is not None and delta.last_id is not None and delta.last_id > snap_id:
                out.append(delta)
            else:
                self.stale += 1
        self._buffer.clear()
        self._snapshot_id = snap_id
        self._synced = True
        return out

    def resync(self) -> None:
        """Start over after a gap: buffer diffs again until the next snapshot.

        For live use: the book reports a sequence gap, the feed calls this and requests
        a fresh snapshot; diffs that arrive meanwhile are kept and filtered against it.
        """
        self._synced = False
        self._snapshot_id = None
        self._buffer.clear()

    def discard_buffer(self) -> int:
        """Drops diffs still waiting for a snapshot (end of data); returns how many."""
        n = len(self._buffer)
        self._buffer.clear()
        return n
