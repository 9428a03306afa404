"""The paper venue's fill model: our orders against a real public book and trade tape.

Pure (no I/O, no clock, no ccxt): a :class:`Matcher` holds our live orders on one
market and answers "what fills now?" for each book update and each public trade. The
model and its known optimism are described in ``docs/paper-fills.md``; in short:

* **Taking** (an order that crosses on arrival) walks the real book level by level up
  to its limit and *consumes* what it takes: the consumed size is remembered per level
  and subtracted from that level until the level empties, so a second order (or a
  resting order of ours) cannot take the same liquidity again.
* **Resting** orders join the back of their level: ``queue_ahead`` starts at the level's
  size. Public trades at our price eat the queue first; only volume beyond it fills us.
  When the level shrinks without trades we cannot tell cancels ahead of us from cancels
  behind, so (risk-averse) we assume behind, unless the level gets smaller than our
  queue ahead, which then shrinks to the level's size.
* A resting order fills when the market **trades through** it (a print at a worse price
  than ours: everything at our price, us included, was taken first) or the **book moves
  through** it (the opposite side at or beyond our price: that liquidity would have hit
  us). Touching our price alone fills nothing.

Quantities are ``Decimal`` (exact balances and hand-checkable tests); prices are kept
as ``Decimal`` for accounting and as the exact float the book uses for lookups (a price
string from ccxt's ``price_to_precision`` and the book's parsed level price are the same
double).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, Protocol

import numpy as np

from bot.book import BookState, Side
from bot.feeds.events import Levels

OrderSide = Literal["buy", "sell"]

ZERO: Final = Decimal(0)
_FIRST_CHUNK: Final = 32


class BookLike(Protocol):
    """The part of :class:`bot.book.OrderBook` the model reads."""

    @property
    def state(self) -> BookState: ...

    def best_bid(self) -> float | None: ...

    def best_ask(self) -> float | None: ...

    def top(self, n: int, side: Side) -> Levels: ...

    def size_at(self, price: float, side: Side) -> float: ...


def dec(x: float) -> Decimal:
    """Exact decimal of a float as written: ``0.1`` -> ``Decimal('0.1')``."""
    return Decimal(repr(x))


def own_side(side: OrderSide) -> Side:
    """The book side our order rests on."""
    return Side.BID if side == "buy" else Side.ASK


def opposite_side(side: OrderSide) -> Side:
    """The book side our order takes from."""
    return Side.ASK if side == "buy" else Side.BID


def _beyond(side: Side, price: float, limit: float) -> bool:
    """True if a ``side`` level at ``price`` is worse than ``limit``."""
    return price < limit if side is Side.BID else price > limit


def iter_levels(book: BookLike, side: Side, limit: float | None) -> Iterator[tuple[float, float]]:
    """``(price, size)`` of ``side``, best first, at or better than ``limit`` (None: all).

    Fetches the book in growing chunks, so a walk that stops after a few levels never
    copies the whole side.
    """
    n, done = _FIRST_CHUNK, 0
    while True:
        rows = book.top(n, side)
        k = int(rows.shape[0])
        for p, s in rows[done:].tolist():
            if limit is not None and _beyond(side, p, limit):
                return
            yield p, s
        if k < n:
            return
        done, n = k, n * 4


def levels_through(book: BookLike, side: Side, limit: float) -> Levels:
    """The ``(k, 2)`` levels of ``side``, best first, at or better than ``limit``."""
    n = _FIRST_CHUNK
    while True:
        rows = book.top(n, side)
        k = int(rows.shape[0])
        if k == 0:
            return rows
        if k < n or _beyond(side, float(rows[k - 1, 0]), limit):
            prices = rows[:, 0]
            m = int(np.count_nonzero(prices >= limit if side is Side.BID else prices <= limit))
            return rows[:m]
        n *= 4


_DICT_ROWS: Final = 24
"""Up to this many levels :func:`sizes_at` looks prices up in a dict (faster than the
search below up to about 30 levels, measured)."""


def sizes_at(book: BookLike, side: Side, prices: Sequence[float]) -> list[float]:
    """The book's size at each of ``prices`` on ``side`` (0.0 where there is no level)."""
    if not prices:
        return []
    deepest = min(prices) if side is Side.BID else max(prices)
    rows = levels_through(book, side, deepest)
    k = rows.shape[0]
    if not k:
        return [0.0] * len(prices)
    if k <= _DICT_ROWS:
        # A few levels (our quotes near the touch): read as Python floats and looked up
        # by price, what the search below finds (a level's price is unique; the first
        # of equal prices wins there, so it does here).
        size_at = dict(reversed(rows.tolist()))
        return [float(size_at.get(p, 0.0)) for p in prices]
    # Ascending keys for searchsorted: bids are stored best (highest) first.
    keys = -rows[:, 0] if side is Side.BID else rows[:, 0]
    targets = np.asarray(prices, dtype=np.float64)
    if side is Side.BID:
        targets = -targets
    idx = np.searchsorted(keys, targets)
    out: list[float] = []
    for i, t in zip(idx.tolist(), targets.tolist(), strict=True):
        out.append(float(rows[i, 1]) if i < keys.shape[0] and keys[i] == t else 0.0)
    return out


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one of our orders."""

    order_id: str
    price: Decimal
    amount: Decimal
    taker: bool


@dataclass(slots=True)
class RestingOrder:
    """Our live order on the matching engine."""

    order_id: str
    side: OrderSide
    price: Decimal
    remaining: Decimal
    queue_ahead: Decimal
    """Estimated size (base units) of other orders ahead of ours at our price."""
    seq: int
    """Arrival order: time priority among our own orders at one price."""
    price_f: float = field(init=False)

    def __post_init__(self) -> None:
        self.price_f = float(self.price)

    def priority(self) -> tuple[float, int]:
        """Sort key, best first: better price, then earlier arrival."""
        return (-self.price_f if self.side == "buy" else self.price_f, self.seq)


class Matcher:
    """Our live orders on one market, and the public liquidity we have consumed."""

    def __init__(self) -> None:
        self._orders: dict[str, RestingOrder] = {}
        self._consumed: dict[tuple[Side, float], Decimal] = {}
        self._seq = 0

    # ------------------------------------------------------------------ state

    @property
    def orders(self) -> Mapping[str, RestingOrder]:
        return self._orders

    @property
    def consumed_levels(self) -> Mapping[tuple[Side, float], Decimal]:
        """Every public level we have taken from and still remember: ``(side, price) -> size``."""
        return self._consumed

    def consumed(self, side: Side, price: float) -> Decimal:
        """Size we have taken from the public ``side`` level at ``price`` (still remembered)."""
        return self._consumed.get((side, price), ZERO)

    def effective_size(self, book: BookLike, side: Side, price: float) -> Decimal:
        """The public level's size minus what we consumed from it."""
        size = book.size_at(price, side)  # what sizes_at(book, side, [price]) finds
        return max(ZERO, dec(size) - self.consumed(side, price))

    def rest(
        self, order_id: str, side: OrderSide, price: Decimal, amount: Decimal, book: BookLike
    ) -> RestingOrder:
        """Join the back of the queue at ``price``: everything now at the level is ahead of us."""
        if order_id in self._orders:
            raise ValueError(f"order {order_id} is already resting")
        self._seq += 1
        order = RestingOrder(order_id, side, price, amount, ZERO, self._seq)
        order.queue_ahead = self.effective_size(book, own_side(side), order.price_f)
        self._orders[order_id] = order
        return order

    def remove(self, order_id: str) -> RestingOrder | None:
        return self._orders.pop(order_id, None)

    def crossing_own(self, side: OrderSide, price: Decimal | None) -> list[RestingOrder]:
        """Our own opposite orders an order at ``price`` (None: market) would trade with."""
        out = []
        for o in self._orders.values():
            if o.side == side:
                continue
            if price is None or (o.price <= price if side == "buy" else o.price >= price):
                out.append(o)
        return sorted(out, key=RestingOrder.priority)

    # ------------------------------------------------------------------ taking

    def would_take(self, side: OrderSide, price: Decimal | None, book: BookLike) -> bool:
        """True if an order at ``price`` would trade with the public book right now."""
        opp = opposite_side(side)
        limit = None if price is None else float(price)
        return any(dec(s) > self.consumed(opp, p) for p, s in iter_levels(book, opp, limit))

    def take(
        self,
        side: OrderSide,
        amount: Decimal,
        limit: Decimal | None,
        book: BookLike,
        *,
        consume: bool = True,
    ) -> list[tuple[Decimal, Decimal]]:
        """Walk the opposite side up to ``limit`` for ``amount``: ``[(price, size), ...]``.

        With ``consume`` (the default) the taken size is remembered per level, so the
        same liquidity is not available again until the public level empties.
        """
        opp = opposite_side(side)
        remaining = amount
        out: list[tuple[Decimal, Decimal]] = []
        if remaining <= 0:
            return out
        for p, s in iter_levels(book, opp, None if limit is None else float(limit)):
            key = (opp, p)
            used = self._consumed.get(key, ZERO)
            available = dec(s) - used
            if available <= 0:
                continue
            q = min(remaining, available)
            out.append((dec(p), q))
            if consume:
                self._consumed[key] = used + q
            remaining -= q
            if remaining == 0:
                break
        return out

    # ------------------------------------------------------------------ market data

    def on_book(self, book: BookLike) -> list[Fill]:
        """A book update: forget refreshed liquidity, shrink queues, fill what the book crossed."""
        if not self._orders and not self._consumed:
            return []
        if book.state is not BookState.VALID:
            return []  # an untrusted book tells us nothing about queues or crossings
        if self._consumed:
            self._refresh_consumed(book)
        fills: list[Fill] = []
        for side in ("buy", "sell"):
            orders = sorted(
                (o for o in self._orders.values() if o.side == side), key=RestingOrder.priority
            )
            if not orders:
                continue
            self._shrink_queues(book, orders)
            best_opp = book.best_ask() if side == "buy" else book.best_bid()
            if best_opp is None:
                continue
            for o in orders:
                crossed = best_opp <= o.price_f if side == "buy" else best_opp >= o.price_f
                if not crossed:
                    break  # sorted best first: no worse order is crossed either
                # The opposite side came to (or through) our price: those sellers would
                # have hit our bid first, at our price. Take their size, as a maker.
                o.queue_ahead = ZERO
                for _p, q in self.take(o.side, o.remaining, o.price, book):
                    fills.append(Fill(o.order_id, o.price, q, taker=False))
                    o.remaining -= q
                if o.remaining == 0:
                    del self._orders[o.order_id]
        return fills

    def on_trade(self, price: float, amount: float | Decimal, aggressor: OrderSide) -> list[Fill]:
        """A public trade: it eats queues ahead of us at its price, and fills us through it."""
        hit: OrderSide = "buy" if aggressor == "sell" else "sell"
        orders = [
            o
            for o in self._orders.values()
            if o.side == hit and (o.price_f >= price if hit == "buy" else o.price_f <= price)
        ]
        if not orders:
            return []
        orders.sort(key=RestingOrder.priority)
        avail = amount if isinstance(amount, Decimal) else dec(amount)
        fills: list[Fill] = []
        at_level: list[RestingOrder] = []
        for o in orders:
            if o.price_f != price:
                # Traded through: this print happened at a worse price than ours, so the
                # whole queue at our price (and we) would have been taken before it.
                o.queue_ahead = ZERO
                q = min(o.remaining, avail)
                if q > 0:
                    fills.append(Fill(o.order_id, o.price, q, taker=False))
                    o.remaining -= q
                    avail -= q
            else:
                at_level.append(o)
        # At our price: the print first takes the real orders ahead of each of ours
        # (time priority), and only what is left fills us. ``real`` is how much of the
        # print went to real orders at this level.
        real = ZERO
        for o in at_level:
            x = min(avail, max(ZERO, o.queue_ahead - real))
            real += x
            avail -= x
            q = min(o.remaining, avail)
            if q > 0:
                fills.append(Fill(o.order_id, o.price, q, taker=False))
                o.remaining -= q
                avail -= q
        for o in at_level:
            o.queue_ahead = max(ZERO, o.queue_ahead - real)
        for o in orders:
            if o.remaining == 0:
                del self._orders[o.order_id]
        return fills

    # ------------------------------------------------------------------ internals

    def _shrink_queues(self, book: BookLike, orders: Sequence[RestingOrder]) -> None:
        waiting = [o for o in orders if o.queue_ahead > 0]
        if not waiting:
            return
        side = own_side(waiting[0].side)
        sizes = sizes_at(book, side, [o.price_f for o in waiting])
        for o, size in zip(waiting, sizes, strict=True):
            level = max(ZERO, dec(size) - self.consumed(side, o.price_f))
            if level < o.queue_ahead:
                o.queue_ahead = level

    def _refresh_consumed(self, book: BookLike) -> None:
        """Keep consumption only while its level exists, and never above the level's size.

        Our takes are not in the public book, so the level keeps showing what we took.
        Whatever the level loses afterwards is, in our world, taken from what we left; if
        it empties, everything we took is gone and a new level there is fresh liquidity.
        """
        for side in (Side.BID, Side.ASK):
            keys = [k for k in self._consumed if k[0] is side]
            if not keys:
                continue
            sizes = sizes_at(book, side, [p for _s, p in keys])
            for key, size in zip(keys, sizes, strict=True):
                if size <= 0.0:
                    del self._consumed[key]
                else:
                    level = dec(size)
                    if self._consumed[key] > level:
                        self._consumed[key] = level
