"""Feed stall: withhold every event for a while, then resync with a fresh snapshot.

The true book of each stalled symbol is kept up to date with the withheld depth
events, so the snapshot sent on resume is exactly what a live feed would fetch: the
book as it is now, with the update id of the last message folded into it. The next
recorded diff then continues from that id, which the downstream book accepts as the
first diff after a snapshot.
"""

from __future__ import annotations

from collections import Counter

from bot.book import BookState, OrderBook, Side
from bot.clock import ManualClock
from bot.feeds.events import (
    BookDelta,
    BookSnapshot,
    FeedState,
    FeedStatus,
    Levels,
    MarketEvent,
)

_KIND = {BookSnapshot: "snapshot", BookDelta: "delta", FeedStatus: "status"}


class Staller:
    """Decides, event by event, what a stalled stream lets through.

    ``start_ns``/``end_ns`` bound the silent window on the stream's (monotonic) time.
    """

    def __init__(self, *, start_ns: int, end_ns: int, announce: bool, detail: str) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.announce = announce
        self.detail = detail
        self.books: dict[str, OrderBook] = {}
        self.withheld: Counter[str] = Counter()
        self.resync_snapshots = 0
        self.resumed_ts_ns: int | None = None
        self._pending = False

    def finished(self, now_ns: int) -> bool:
        """Past the window and resynced: the rest of the stream passes as recorded."""
        return now_ns >= self.end_ns and not self._pending

    def track(self, event: MarketEvent) -> bool:
        """Keep the true book of the event's symbol; True if the book applied it."""
        if isinstance(event, BookSnapshot | BookDelta):
            book = self.books.get(event.symbol)
            if book is None:
                book = self.books[event.symbol] = OrderBook(event.symbol, clock=ManualClock())
            return book.apply(event) is None
        if isinstance(event, FeedStatus) and event.state in (
            FeedState.DISCONNECTED,
            FeedState.RESYNCING,
        ):
            book = self.books.get(event.symbol)
            if book is not None:
                book.invalidate(f"feed {event.state.value}")
        return False

    def handle(self, event: MarketEvent, now_ns: int) -> list[MarketEvent]:
        """What to emit for ``event`` (of a stalled symbol), at stream time ``now_ns``."""
        applied = self.track(event)
        if isinstance(event, FeedStatus) and event.state is FeedState.ENDED:
            return [event]  # the end of data always gets through
        if self.start_ns <= now_ns < self.end_ns:
            self.withheld[_KIND.get(type(event), "trade")] += 1
            self._pending = True
            return []
        if not self._pending:
            return [event]
        self._pending = False
        self.resumed_ts_ns = now_ns
        out = self._resync(now_ns)
        # A depth message applied to the true book is inside the fresh snapshot.
        folded = applied and any(
            isinstance(e, BookSnapshot) and e.symbol == event.symbol for e in out
        )
        if not folded:
            out.append(event)
        return out

    def _resync(self, now_ns: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        for symbol, book in self.books.items():
            if self.announce:
                out.append(FeedStatus(symbol, now_ns, FeedState.RESYNCING, self.detail))
            if book.state is not BookState.VALID:
                continue  # nothing trustworthy to send; the recording's next snapshot will
            if self.announce:
                out.append(FeedStatus(symbol, now_ns, FeedState.CONNECTED, self.detail))
            out.append(
                BookSnapshot(
                    symbol=symbol,
                    ts_ns=now_ns,
                    bids=_side(book, Side.BID),
                    asks=_side(book, Side.ASK),
                    update_id=book.update_id,
                )
            )
            self.resync_snapshots += 1
        return out


def _side(book: OrderBook, side: Side) -> Levels:
    return book.top(book.level_count(side), side)
