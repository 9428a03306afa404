"""Size-scaling overlays: fracture, wall pull, spread blow-out.

The overlay keeps the *true* book (an :class:`~bot.book.OrderBook` fed the unmodified
events) and rewrites each depth event so that the book downstream is always

    emitted size(level) = true size(level) * factor(t, distance of level from true mid)

with ``factor = 1 - fraction`` for levels within ``width_bps`` of the true mid on an
affected side and 1 elsewhere. A scenario is a time profile of ``(width, fraction)``
per side (:class:`Shape`).

How a delta is rewritten (one pass per side, vectorised over the "window" of true
levels that are or were scaled, a few hundred to a couple of thousand rows):

* rows of the original message outside the window go out unchanged (factor 1 there,
  and removals are removals at any factor);
* every window level that the message touched, or whose emitted size changes because
  the factor or the mid moved, goes out as ``true size * factor``;
* the scaled levels and their emitted sizes are remembered, so the next message can
  restore or re-scale exactly what the downstream book holds.

Sequence ids (``first_id``/``last_id``/``prev_id``) are kept, so the downstream book's
continuity checks see the original stream; no event is added or removed, so a change
of factor takes effect with the next depth message (every ~100 ms on Binance spot).
Scaling sizes never moves a price, and removing levels cannot cross a book, so the
emitted book is crossed only if the true one is. A snapshot is rebuilt from the true
book with the factor applied.

Distances are measured from the *true* mid, so a wall pull does not chase its own gap.
Trades pass through as recorded: a trade may print inside a gap the overlay opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.book import BookState, OrderBook, Side
from bot.clock import ManualClock
from bot.feeds.events import EMPTY_LEVELS, BookDelta, BookSnapshot, Levels
from bot.feeds.stress.specs import Fracture, SpreadBlowout, WallPull

FloatArray = npt.NDArray[np.float64]
_EMPTY: Final[FloatArray] = np.empty(0, dtype=np.float64)
_BPS: Final = 1e4
_EDGE: Final = 1e-9
"""Relative slack when asking the book for a window by distance, so that a level on the
band edge is always inside the window (the factor itself uses our own distance)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """One side's removal at one instant: levels within ``width_bps`` of mid lose
    ``fraction`` of their size (1 = removed)."""

    width_bps: float = 0.0
    fraction: float = 0.0

    @property
    def active(self) -> bool:
        return self.width_bps > 0.0 and self.fraction > 0.0


NO_SHAPE: Final = Shape()


@dataclass(frozen=True, slots=True)
class Profile:
    """Intensity ``s(t)`` in [0, 1]: ramp up, hold, ramp down; times in seconds from
    the first event."""

    start_s: float
    ramp_s: float
    hold_s: float
    recover_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.ramp_s + self.hold_s + self.recover_s

    def intensity(self, t_s: float) -> float:
        x = t_s - self.start_s
        if x < 0.0:
            return 0.0
        if x < self.ramp_s:
            return x / self.ramp_s
        x -= self.ramp_s
        if x < self.hold_s:
            return 1.0
        x -= self.hold_s
        if x < self.recover_s:
            return 1.0 - x / self.recover_s
        return 0.0


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """A resolved scaling scenario: which sides, how much, and when.

    ``gap`` scenarios remove levels outright and move the edge of the removed zone
    (it opens from mid outwards and refills from the outside in); the others keep the
    band fixed and scale the fraction removed.
    """

    profile: Profile
    bid: Shape
    ask: Shape
    gap: bool

    @classmethod
    def of(cls, spec: Fracture | WallPull | SpreadBlowout) -> ScalePlan:
        if isinstance(spec, Fracture):
            prof = Profile(spec.start_s, spec.ramp_s, spec.hold_s, spec.recover_s)
            shape = Shape(spec.band_bps, spec.fraction)
            return cls(
                prof,
                shape if spec.side in ("both", "bid") else NO_SHAPE,
                shape if spec.side in ("both", "ask") else NO_SHAPE,
                gap=False,
            )
        prof = Profile(spec.start_s, spec.ramp_s, spec.hold_s, spec.recover_s)
        if isinstance(spec, WallPull):
            shape = Shape(spec.gap_bps, 1.0)
            return cls(
                prof,
                shape if spec.side == "bid" else NO_SHAPE,
                shape if spec.side == "ask" else NO_SHAPE,
                gap=True,
            )
        shape = Shape(spec.bps, 1.0)
        return cls(prof, shape, shape, gap=True)

    def at(self, t_s: float) -> tuple[Shape, Shape]:
        """``(bid, ask)`` shapes ``t_s`` seconds into the data."""
        s = self.profile.intensity(t_s)
        if s <= 0.0:
            return NO_SHAPE, NO_SHAPE
        if s >= 1.0:
            return self.bid, self.ask
        if self.gap:
            return (
                Shape(self.bid.width_bps * s, self.bid.fraction),
                Shape(self.ask.width_bps * s, self.ask.fraction),
            )
        return (
            Shape(self.bid.width_bps, self.bid.fraction * s),
            Shape(self.ask.width_bps, self.ask.fraction * s),
        )


class BookScaler:
    """Rewrites one symbol's depth events so the emitted book is the true book scaled.

    :meth:`process` takes each depth event of the symbol in stream order, with the
    shapes to apply now, and returns the event to emit (the original one whenever
    nothing is or was scaled).
    """

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.true_book = OrderBook(symbol, clock=ManualClock())
        # Levels whose emitted size differs from the true size, per side, as ascending
        # book keys (bid: -price) and the sizes the downstream book holds for them.
        self._mod_k: list[FloatArray] = [_EMPTY, _EMPTY]
        self._mod_s: list[FloatArray] = [_EMPTY, _EMPTY]
        self._mid: float | None = None
        self.rewritten = 0
        """Events emitted changed."""
        self.rows_added = 0
        """Rows emitted beyond the original messages' rows (re-scaled levels)."""
        self.true_drops: dict[str, int] = {}
        """Events the true book refused (passed on as recorded), by reason."""

    @property
    def scaled_levels(self) -> int:
        """Levels currently held at other than their true size downstream."""
        return int(self._mod_k[0].size + self._mod_k[1].size)

    def invalidate(self, reason: str) -> None:
        """The stream broke (a DISCONNECTED/RESYNCING status): wait for a snapshot."""
        self.true_book.invalidate(reason)
        self._clear()

    def process(
        self, event: BookSnapshot | BookDelta, bid: Shape, ask: Shape
    ) -> BookSnapshot | BookDelta:
        book = self.true_book
        drop = book.apply(event)
        if drop is not None:
            self.true_drops[drop.value] = self.true_drops.get(drop.value, 0) + 1
            if book.state is not BookState.VALID:
                self._clear()  # the downstream book breaks the same way
            return event
        mid = book.mid()
        if mid is not None:
            self._mid = mid
        mid = self._mid
        if mid is None or (not bid.active and not ask.active and not self.scaled_levels):
            return event
        self.rewritten += 1
        if isinstance(event, BookSnapshot):
            return self._snapshot(event, mid, bid, ask)
        b = self._delta_side(0, event.bids, mid, bid)
        a = self._delta_side(1, event.asks, mid, ask)
        self.rows_added += b.shape[0] + a.shape[0] - event.bids.shape[0] - event.asks.shape[0]
        return BookDelta(
            symbol=event.symbol,
            ts_ns=event.ts_ns,
            bids=b,
            asks=a,
            first_id=event.first_id,
            last_id=event.last_id,
            prev_id=event.prev_id,
            exchange_ts_ns=event.exchange_ts_ns,
        )

    # ------------------------------------------------------------------ internals

    def _clear(self) -> None:
        self._mod_k = [_EMPTY, _EMPTY]
        self._mod_s = [_EMPTY, _EMPTY]

    def _window(self, j: int, need_bps: float) -> tuple[FloatArray, FloatArray]:
        """True levels within ``need_bps`` of mid on side ``j``: ascending keys, sizes."""
        side = Side.BID if j == 0 else Side.ASK
        book = self.true_book
        k = book.depth_within(need_bps * (1.0 + _EDGE) + _EDGE, side).levels
        if not k:
            return _EMPTY, _EMPTY
        top = book.top(k, side)  # best first: ascending keys once bids are negated
        keys = -top[:, 0] if j == 0 else top[:, 0].copy()
        return keys, top[:, 1].copy()

    def _distance(self, j: int, keys: FloatArray, mid: float) -> FloatArray:
        """Distance from mid in bps of levels given as keys (bid: -price)."""
        sign = -1.0 if j == 0 else 1.0
        return (keys - sign * mid) * (_BPS / mid)

    def _factor(self, d: FloatArray, shape: Shape) -> FloatArray:
        if not shape.active:
            return np.ones(d.shape[0], dtype=np.float64)
        return np.where(d <= shape.width_bps, 1.0 - shape.fraction, 1.0)

    def _delta_side(self, j: int, rows: Levels, mid: float, shape: Shape) -> Levels:
        old_k, old_s = self._mod_k[j], self._mod_s[j]
        # Distance of the farthest remembered level; -1 (none left to restore) when
        # there is none. A level the true book still holds is never nearer than mid
        # (mid lies between the touches), but it can sit exactly *at* mid: a locked
        # or float-locked book, e.g. bid 100.17999999999999 / ask 100.18 rounds the
        # mid onto the ask. So distance 0 still needs restoring; only < 0 means the
        # level is now on the far side of mid and this message removed it.
        far = float(self._distance(j, old_k[-1:], mid)[0]) if old_k.size else -1.0
        if not shape.active and far < 0.0:
            self._mod_k[j], self._mod_s[j] = _EMPTY, _EMPTY
            return rows
        need = max(shape.width_bps if shape.active else 0.0, far)
        wk, ws = self._window(j, need)
        f = self._factor(self._distance(j, wk, mid), shape)
        des = ws * f
        # What the downstream book holds now for each window level: the remembered
        # scaled size, or else the true size (unchanged, or in this message).
        prev = ws.copy()
        if old_k.size and wk.size:
            i = wk.searchsorted(old_k).clip(max=wk.size - 1)
            hit = wk[i] == old_k
            prev[i[hit]] = old_s[hit]
        mark = des != prev
        sign = -1.0 if j == 0 else 1.0
        nrows = rows.shape[0]
        if nrows:
            dk = rows[:, 0] * sign
            if wk.size:
                i = wk.searchsorted(dk).clip(max=wk.size - 1)
                inwin = wk[i] == dk
                mark[i[inwin]] = True  # the message touched it: always send it
                rest = ~inwin
            else:
                rest = np.ones(nrows, dtype=np.bool_)
            out_k = np.concatenate((wk[mark], dk[rest]))
            out_s = np.concatenate((des[mark], rows[rest, 1]))
            # Stable: repeated prices in the message keep their order (last one wins).
            order = out_k.argsort(kind="stable")
            out_k, out_s = out_k[order], out_s[order]
        else:
            out_k, out_s = wk[mark], des[mark]
        scaled = f != 1.0
        self._mod_k[j], self._mod_s[j] = wk[scaled], des[scaled]
        return _rows(out_k * sign, out_s)

    def _snapshot(self, event: BookSnapshot, mid: float, bid: Shape, ask: Shape) -> BookSnapshot:
        sides = []
        for j, (side, shape) in enumerate(((Side.BID, bid), (Side.ASK, ask))):
            full = self.true_book.top(self.true_book.level_count(side), side)
            keys = -full[:, 0] if j == 0 else full[:, 0]
            f = self._factor(self._distance(j, keys, mid), shape)
            sizes = full[:, 1] * f
            scaled = f != 1.0
            self._mod_k[j], self._mod_s[j] = keys[scaled].copy(), sizes[scaled]
            keep = sizes > 0.0
            sides.append(_rows(full[keep, 0], sizes[keep]))
        return BookSnapshot(
            symbol=event.symbol,
            ts_ns=event.ts_ns,
            bids=sides[0],
            asks=sides[1],
            update_id=event.update_id,
            exchange_ts_ns=event.exchange_ts_ns,
        )


def _rows(prices: FloatArray, sizes: FloatArray) -> Levels:
    n = prices.shape[0]
    if not n:
        return EMPTY_LEVELS
    out = np.empty((n, 2), dtype=np.float64)
    out[:, 0] = prices
    out[:, 1] = sizes
    return out
