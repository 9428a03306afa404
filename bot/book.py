"""The local L2 order book: one per market, fed by snapshots and deltas.

Levels live in a *level store* (``bot/_book_kernel.py``): the compiled one
(``bot/_bookc.c``: both sides as sorted C arrays, merged in place, each query one C
call) when it is built, else the pure-numpy one (``bot/_book_numpy.py``), which is also
the reference the compiled one is tested against. Set ``BACKSTOP_PURE_BOOK=1`` to force
numpy. This class owns everything else: sequencing, state, drop counts and the order
in which inputs are checked, identical whichever store holds the levels.

The book does not log: it returns a :class:`Drop` for each rejected input and keeps
counts, and the caller (the engine) decides what to log, with its own logger.

Input that must never be traded on (NaN/inf, negative sizes, non-positive prices,
crossed books, out-of-order or missing updates) is dropped and counted in
:attr:`OrderBook.drops`; the book keeps its last good state. A sequence gap, or an
explicit :meth:`OrderBook.invalidate`, makes the book INVALID until the next snapshot,
and every query answers "nothing" (``None`` or zero depth) while it is not VALID.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from bot import _book_kernel
from bot._book_kernel import Kernel, SampleResult
from bot._book_numpy import _as_levels
from bot.clock import Clock
from bot.feeds.events import EMPTY_LEVELS, BookDelta, BookSnapshot, Levels

__all__ = [
    "BookState",
    "Depth",
    "Drop",
    "FillEstimate",
    "OrderBook",
    "Side",
]

FloatArray = npt.NDArray[np.float64]


class Side(StrEnum):
    BID = "bid"
    ASK = "ask"


class BookState(StrEnum):
    EMPTY = "empty"
    """No snapshot yet."""
    VALID = "valid"
    INVALID = "invalid"
    """A gap was seen or the book was invalidated: waits for a snapshot."""


class Drop(StrEnum):
    """Why an input was dropped. The book keeps its last good state in every case."""

    NON_FINITE = "non_finite"
    NEGATIVE = "negative"
    """A negative size or a price <= 0."""
    CROSSED = "crossed"
    """Best bid >= best ask after applying it."""
    STALE = "stale"
    """Out-of-order or duplicate update id (or a snapshot older than the book)."""
    GAP = "gap"
    """Missing updates: the book becomes INVALID."""
    UNSYNCED = "unsynced"
    """A delta while the book is EMPTY or INVALID."""
    MALFORMED = "malformed"
    """Bad shape, inconsistent ids, or an event for another symbol."""


@dataclass(frozen=True, slots=True)
class Depth:
    """Resting size within a band: ``base`` units, ``quote`` notional, ``levels`` count."""

    base: float
    quote: float
    levels: int


ZERO_DEPTH: Final = Depth(0.0, 0.0, 0)


@dataclass(frozen=True, slots=True)
class FillEstimate:
    """What a marketable order of ``requested_quote`` notional would get from the book.

    ``side`` is the book side consumed (a buy consumes ASK). ``slippage_bps`` is the
    average price against the mid, positive = cost to the taker.
    """

    side: Side
    requested_quote: float
    filled_quote: float
    filled_base: float
    avg_price: float | None
    worst_price: float | None
    slippage_bps: float | None
    complete: bool
    """False if the visible book could not fill the notional."""


class OrderBook:
    """A local L2 book for one market. Not thread-safe; one owner applies updates."""

    def __init__(self, symbol: str, *, clock: Clock) -> None:
        self.symbol = symbol
        self._clock = clock
        self._state = BookState.EMPTY
        self.update_id: int | None = None
        """Last applied update id (snapshot ``update_id`` or delta ``last_id``)."""
        self.last_update_ns: int | None = None
        self.exchange_ts_ns: int | None = None
        """The exchange's own stamp on the last applied event (None when the feed has
        none): with ``last_update_ns``, the feed's latency (the daemon's metrics)."""
        self.updates_applied = 0
        """Snapshots plus deltas applied."""
        self.snapshots_applied = 0
        self.version = 0
        """Bumped on every change of levels or state: a cheap "has anything changed" check."""
        self.invalid_reason: str | None = None
        """Why the book is INVALID (gap details or the :meth:`invalidate` reason)."""
        self.last_drop_detail: str | None = None
        """Detail of the most recent drop, for the caller's log line."""
        # The first delta after a snapshot is matched against the snapshot's id with
        # the looser "straddle" rule instead of strict continuity.
        self._await_first = False
        self._drops: dict[Drop, int] = dict.fromkeys(Drop, 0)
        self._drops_view: Mapping[Drop, int] = MappingProxyType(self._drops)
        self._kernel, self._lv = _book_kernel.new_store()

    # ------------------------------------------------------------------ status

    @property
    def state(self) -> BookState:
        return self._state

    @property
    def kernel(self) -> Kernel:
        """Which level store this book uses: ``"compiled"`` or ``"pure"`` (numpy)."""
        return self._kernel

    @property
    def drops(self) -> Mapping[Drop, int]:
        """Dropped inputs by reason (a read-only live view)."""
        return self._drops_view

    @property
    def gaps(self) -> int:
        return self._drops[Drop.GAP]

    def age_ns(self) -> int | None:
        """Time since the last applied update, on the injected clock."""
        if self.last_update_ns is None:
            return None
        return self._clock.now_ns() - self.last_update_ns

    def invalidate(self, reason: str) -> None:
        """Mark the book INVALID until the next snapshot (e.g. the feed disconnected)."""
        if self._state is BookState.EMPTY:
            return  # nothing to distrust yet; still waiting for the first snapshot
        self._state = BookState.INVALID
        self.invalid_reason = reason
        self._await_first = False
        self.version += 1

    # ------------------------------------------------------------------ updates

    def apply(self, event: BookSnapshot | BookDelta) -> Drop | None:
        """Apply a feed event. Returns ``None`` when applied, else why it was dropped."""
        if event.symbol != self.symbol:
            return self._drop(Drop.MALFORMED, f"event for {event.symbol}")
        if isinstance(event, BookDelta):
            drop = self.apply_delta(
                event.bids,
                event.asks,
                first_id=event.first_id,
                last_id=event.last_id,
                prev_id=event.prev_id,
                ts_ns=event.ts_ns,
            )
        else:
            drop = self.apply_snapshot(
                event.bids, event.asks, update_id=event.update_id, ts_ns=event.ts_ns
            )
        if drop is None:
            self.exchange_ts_ns = event.exchange_ts_ns
        return drop

    def apply_snapshot(
        self,
        bids: Levels,
        asks: Levels,
        *,
        update_id: int | None = None,
        ts_ns: int | None = None,
    ) -> Drop | None:
        """Replace the book. Rows with size 0 are skipped; for repeated prices the last wins."""
        b = _as_levels(bids)
        a = _as_levels(asks)
        if b is None or a is None:
            return self._drop(Drop.MALFORMED, _NOT_LEVELS)
        if (
            self._state is BookState.VALID
            and update_id is not None
            and self.update_id is not None
            and update_id < self.update_id
        ):
            return self._drop(Drop.STALE, "snapshot older than the book")
        code = self._lv.snapshot(b, a)  # copies the rows: no aliasing
        if code:
            return self._drop(_DROP_OF[code], "snapshot")
        self.update_id = update_id
        self._await_first = update_id is not None
        self._state = BookState.VALID
        self.invalid_reason = None
        self.snapshots_applied += 1
        self._applied(ts_ns)
        return None

    def apply_delta(
        self,
        bids: Levels,
        asks: Levels,
        *,
        first_id: int | None = None,
        last_id: int | None = None,
        prev_id: int | None = None,
        ts_ns: int | None = None,
    ) -> Drop | None:
        """Apply new absolute sizes (0 removes a level) for some levels on either side.

        Sequence ids (when the book has them): the first delta after a snapshot with
        id S must cover S+1 (``first_id <= S+1 <= last_id``; with ``prev_id``, also
        ``prev_id <= S < last_id``). Afterwards ``prev_id`` must equal the last applied
        id when given (Binance futures ``pu``), else ``first_id`` must be that id + 1
        (Binance spot). ``last_id`` at or below the last applied id is STALE; anything
        else is a GAP, which invalidates the book.

        A dropped in-sequence delta (NaN, negative, crossing) does not advance the
        update id, so the next delta shows up as a gap: the book has missed data
        and must not be trusted until the next snapshot.
        """
        if first_id is None or last_id is None:
            if first_id is not None or last_id is not None or prev_id is not None:
                return self._drop(Drop.MALFORMED, "partial update ids")
        elif first_id > last_id:
            return self._drop(Drop.MALFORMED, "first_id > last_id")
        if self._state is not BookState.VALID:
            if _malformed(bids, asks):  # a malformed message outranks every other reason
                return self._drop(Drop.MALFORMED, _NOT_LEVELS)
            return self._drop(Drop.UNSYNCED, self._state.value)

        cur = self.update_id
        if cur is not None:
            if first_id is None or last_id is None or last_id <= cur:
                ok = False
            elif self._await_first:
                ok = first_id <= cur + 1 or (prev_id is not None and prev_id <= cur)
            elif prev_id is not None:
                ok = prev_id == cur
            else:
                ok = first_id == cur + 1
            if not ok:
                return self._out_of_sequence(bids, asks, cur, first_id, last_id, prev_id)

        # The store checks the rows' shape, values and crossing, then applies all or
        # nothing. It refuses what is not already a 2-D float64 buffer (lists, other
        # dtypes): converted here, off the hot path.
        code = self._lv.delta(bids, asks)
        if code:
            if code == _book_kernel.CONVERT:
                b = _as_levels(bids)
                a = _as_levels(asks)
                code = _book_kernel.MALFORMED if b is None or a is None else self._lv.delta(b, a)
            if code:
                bad = _DROP_OF[code]
                return self._drop(bad, _NOT_LEVELS if bad is Drop.MALFORMED else "delta")
        if last_id is not None:
            # A sequenced delta on a book whose snapshot had no id starts the tracking.
            self.update_id = last_id
            self._await_first = False
        self._applied(ts_ns)
        return None

    def _out_of_sequence(
        self,
        bids: Levels,
        asks: Levels,
        cur: int,
        first_id: int | None,
        last_id: int | None,
        prev_id: int | None,
    ) -> Drop:
        if _malformed(bids, asks):
            return self._drop(Drop.MALFORMED, _NOT_LEVELS)
        if first_id is None or last_id is None:
            return self._drop(Drop.MALFORMED, "delta without ids on a sequenced book")
        if last_id <= cur:
            return self._drop(Drop.STALE, f"last_id {last_id} <= {cur}")
        self._gap(f"update_id {cur}, got U={first_id} u={last_id} pu={prev_id}")
        return Drop.GAP

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> float | None:
        if self._state is not BookState.VALID:
            return None
        return self._lv.best_bid()

    def best_ask(self) -> float | None:
        if self._state is not BookState.VALID:
            return None
        return self._lv.best_ask()

    def mid(self) -> float | None:
        if self._state is not BookState.VALID:
            return None
        return self._lv.mid()

    def spread_bps(self) -> float | None:
        if self._state is not BookState.VALID:
            return None
        return self._lv.spread_bps()

    def level_count(self, side: Side) -> int:
        if self._state is not BookState.VALID:
            return 0
        return self._lv.count(0 if side is Side.BID else 1)

    def top(self, n: int, side: Side) -> Levels:
        """The best ``n`` levels as a new ``(k <= n, 2)`` array of ``[price, size]``, best first."""
        if self._state is not BookState.VALID or n <= 0:
            return EMPTY_LEVELS
        j = 0 if side is Side.BID else 1
        out = _empty((min(n, self._lv.count(j)), 2))
        self._lv.top(j, out)
        return out

    def size_at(self, price: float, side: Side) -> float:
        """The size resting at exactly ``price`` on ``side``; 0.0 if no level is there
        (or the book is not VALID), as :meth:`top` would show it."""
        if self._state is not BookState.VALID:
            return 0.0
        return self._lv.size_at(0 if side is Side.BID else 1, price)

    def depth_within(self, bps: float, side: Side) -> Depth:
        """Size resting within ``bps`` of mid on one side.

        Bid levels count when ``price >= mid * (1 - bps/1e4)``, ask levels when
        ``price <= mid * (1 + bps/1e4)``.
        """
        if self._state is not BookState.VALID:
            return ZERO_DEPTH
        base, quote, k = self._lv.depth(0 if side is Side.BID else 1, bps)
        return Depth(base, quote, k) if k else ZERO_DEPTH

    def depth_bands(self, bands_bps: Sequence[float]) -> FloatArray:
        """Depth for several bands at once, for the per-update strategy call.

        Returns shape ``(2, len(bands_bps), 2)``: side ``[bid, ask]``, band, ``[base,
        quote]``. Same band rule as :meth:`depth_within`; all zeros when not VALID.
        """
        if self._state is not BookState.VALID:
            return _zeros((2, len(bands_bps), 2))
        out = _empty((2, len(bands_bps), 2))
        self._lv.bands(bands_bps, out)
        return out

    def fill_estimate(self, side: Side, notional_quote: float) -> FillEstimate:
        """Walk ``side`` best first until ``notional_quote`` is filled.

        ``side`` is the side consumed: a buy walks the asks. Raises ``ValueError``
        for a negative or non-finite notional (a caller bug, not market data).
        """
        if not math.isfinite(notional_quote) or notional_quote < 0:
            raise ValueError(f"notional must be finite and >= 0, got {notional_quote}")
        if self._state is not BookState.VALID:
            return FillEstimate(side, notional_quote, 0.0, 0.0, None, None, None, False)
        j = 0 if side is Side.BID else 1
        if notional_quote == 0 or not self._lv.count(j):
            return FillEstimate(
                side, notional_quote, 0.0, 0.0, None, None, None, notional_quote == 0
            )
        filled_quote, filled_base, worst, complete = self._lv.fill(j, notional_quote)
        avg = filled_quote / filled_base
        mid = self._lv.mid()
        slip = None
        if mid is not None:
            slip = (avg - mid) / mid * _BPS if side is Side.ASK else (mid - avg) / mid * _BPS
        return FillEstimate(
            side, notional_quote, filled_quote, filled_base, avg, worst, slip, complete
        )

    def fill_slippage_bps(self, side: Side, notional_quote: float) -> float | None:
        """``fill_estimate(side, notional_quote).slippage_bps`` when that fill is
        complete, else None: the same figure without building the estimate (the depth
        monitor asks for both sides on every update)."""
        if not math.isfinite(notional_quote) or notional_quote < 0:
            raise ValueError(f"notional must be finite and >= 0, got {notional_quote}")
        if self._state is not BookState.VALID or notional_quote == 0:
            return None
        j = 0 if side is Side.BID else 1
        if not self._lv.count(j):
            return None
        filled_quote, filled_base, _, complete = self._lv.fill(j, notional_quote)
        if not complete:
            return None
        avg = filled_quote / filled_base
        mid = self._lv.mid()
        if mid is None:
            return None
        return (avg - mid) / mid * _BPS if side is Side.ASK else (mid - avg) / mid * _BPS

    def sample_at(self, bands_bps: Sequence[float], notional_quote: float) -> SampleResult | None:
        """The depth monitor's reading in one store call: ``(bid, ask, mid, spread_bps,
        depth, buy_slippage_bps, sell_slippage_bps)``, or None when the book is not
        tradeable (not VALID, or a side empty).

        Bit for bit what the separate queries give: the best prices, ``mid = (ask +
        bid) / 2.0``, ``spread_bps = (ask - bid) / mid * 1e4``, ``depth_bands(bands_bps)``
        and ``fill_slippage_bps(Side.ASK / Side.BID, notional_quote)``. Like the latter,
        raises ``ValueError`` for a negative or non-finite notional, but only on a
        tradeable book (the monitor never asked for slippage on another).
        """
        if self._state is not BookState.VALID:
            return None
        return self._lv.sample(bands_bps, notional_quote, _empty((2, len(bands_bps), 2)))

    # ------------------------------------------------------------------ internals

    def _applied(self, ts_ns: int | None) -> None:
        self.last_update_ns = self._clock.now_ns() if ts_ns is None else ts_ns
        self.updates_applied += 1
        self.version += 1

    def _drop(self, reason: Drop, detail: str) -> Drop:
        self._drops[reason] += 1
        self.last_drop_detail = detail
        return reason

    def _gap(self, detail: str) -> None:
        self._drops[Drop.GAP] += 1
        self._state = BookState.INVALID
        self.invalid_reason = f"gap: {detail}"
        self._await_first = False
        self.last_drop_detail = detail
        self.version += 1


# ---------------------------------------------------------------------- helpers

_BPS: Final = 1e4
_NOT_LEVELS: Final = "levels are not (n, 2) numbers"
# Store result codes (bot/_book_kernel.py) -> drop reasons; CONVERT only reaches a
# snapshot if ``_as_levels`` let something through that the store still refuses.
_DROP_OF: Final[tuple[Drop, ...]] = (
    Drop.MALFORMED,  # 0 (OK) is never looked up
    Drop.NON_FINITE,
    Drop.NEGATIVE,
    Drop.CROSSED,
    Drop.MALFORMED,
    Drop.MALFORMED,
)
_empty = np.empty
_zeros = np.zeros


def _malformed(bids: Levels, asks: Levels) -> bool:
    return _as_levels(bids) is None or _as_levels(asks) is None
