"""The emulator's exchange state: public books, our orders, fills, balances.

Pure (no I/O); time comes from the injected clock. The public book of each symbol is
a :class:`bot.book.OrderBook`, fed by the market driver (:mod:`bot.exchange_sim.market`,
from a recording) or by :meth:`SpotEngine.seed_book` (tests). Our orders match with
the paper venue's fill model, :class:`bot.venues.matching.Matcher` (one per symbol;
``docs/paper-fills.md``), so the emulator and the paper venue fill the same orders the
same way on the same data:

* A crossing order takes from the public book level by level up to its limit (taker
  fee, one trade per level at the level's price). What it takes is *consumed*: the
  recorded book keeps showing it, so the matcher remembers it and nobody can take it
  twice; ``GET /depth`` shows the levels net of it.
* The rest of a GTC order rests at the back of its level's queue. It fills (maker, at
  its own price) when the recorded tape eats the queue ahead and trades at or through
  its price, or when the recorded book moves through it.
* :meth:`SpotEngine.fill_resting` fills a resting order on demand (a test/fault hook).
* A taking order that would trade with one of our own resting orders expires that
  resting order first (Binance's default self-trade prevention, ``EXPIRE_MAKER``), as
  the paper venue does.

Accounting is exact ``Decimal``; fees are charged in the asset received (Binance
without BNB discounts) and rounded up to 8 decimals, as the venue reports them.

Every change is announced to subscribers (:mod:`bot.exchange_sim.events`) once the
operation that made it is complete: order and balance events in the order they
happened, then one :class:`DepthDiff` per symbol whose visible depth changed.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal
from typing import Literal

import numpy as np

from bot.book import Drop, OrderBook
from bot.book import Side as BookSide
from bot.clock import Clock
from bot.exchange_sim import errors
from bot.exchange_sim.errors import ApiError
from bot.exchange_sim.events import (
    BalancesChanged,
    DepthDiff,
    OrderChanged,
    PublicTrade,
    Subscriber,
    VenueEvent,
)
from bot.exchange_sim.symbols import SymbolRules
from bot.feeds.events import Levels
from bot.venues.matching import Fill, Matcher, OrderSide, dec, sizes_at

Side = Literal["BUY", "SELL"]
ZERO = Decimal(0)
EIGHT_DP = Decimal("0.00000001")
NS_PER_MS = 1_000_000
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
# First ids are arbitrary but large, so nobody mistakes them for list indices.
FIRST_ORDER_ID = 1_000_001
FIRST_TRADE_ID = 5_000_001
STP_STATUS = "EXPIRED_IN_MATCH"
"""Binance's status for a resting order expired by self-trade prevention."""


@dataclass
class SimOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: Side
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    time_ms: int
    update_ms: int
    executed_qty: Decimal = ZERO
    cumm_quote: Decimal = ZERO
    status: str = "NEW"
    reduce_only: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class SimTrade:
    trade_id: int
    order_id: int
    symbol: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool
    realized_pnl: Decimal = ZERO
    """Futures only: the PnL this fill closed (0 on spot)."""

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@dataclass
class ShownSide:
    """One side of what ``GET /depth`` shows, and where it may have changed since.

    Prices are the book's floats (a price string from a request or a recording parses
    to the same double); sizes are exact.
    """

    levels: dict[float, Decimal] = field(default_factory=dict)
    """As last published: public size minus what we consumed, plus our resting orders."""
    dirty: set[float] = field(default_factory=set)
    """Prices whose visible size may have changed since the last diff."""
    fresh: dict[float, float] = field(default_factory=dict)
    """Public sizes a delta just set (saves looking them up in the book again)."""


@dataclass
class VenueBook:
    """One symbol's market on the venue.

    ``public`` is the market's own book (recorded or seeded), ``matcher`` our orders on
    it and the liquidity we consumed, ``shown`` what ``GET /depth`` shows per side, and
    ``last_update_id`` the id of the last :class:`DepthDiff` (the depth's version).
    """

    public: OrderBook
    matcher: Matcher = field(default_factory=Matcher)
    shown: dict[Side, ShownSide] = field(
        default_factory=lambda: {"BUY": ShownSide(), "SELL": ShownSide()}
    )
    last_update_id: int = 1
    dirty_all: bool = False
    """Every visible level may have changed (a snapshot replaced the public book)."""

    @property
    def bids(self) -> dict[float, Decimal]:
        return self.shown["BUY"].levels

    @property
    def asks(self) -> dict[float, Decimal]:
        return self.shown["SELL"].levels


@dataclass
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


def _order_side(side: Side) -> OrderSide:
    return "buy" if side == "BUY" else "sell"


def _book_side(side: Side) -> BookSide:
    return BookSide.BID if side == "BUY" else BookSide.ASK


def _levels(rows: Iterable[tuple[Decimal | str, Decimal | str]]) -> Levels:
    pairs = [(float(p), float(q)) for p, q in rows]
    return np.asarray(pairs, dtype=np.float64).reshape(len(pairs), 2)


class SpotEngine:
    def __init__(
        self,
        rules: Iterable[SymbolRules],
        clock: Clock,
        balances: Mapping[str, Decimal | str | int] | None = None,
    ) -> None:
        self.rules = {r.symbol: r for r in rules}
        self._clock = clock
        self.books = {symbol: VenueBook(OrderBook(symbol, clock=clock)) for symbol in self.rules}
        self.balances: dict[str, Balance] = {}
        for asset, amount in (balances or {}).items():
            self.balances[asset] = Balance(free=Decimal(amount))
        self.orders: dict[int, SimOrder] = {}
        self._open: dict[int, SimOrder] = {}
        self.trades: list[SimTrade] = []
        self._next_order_id = FIRST_ORDER_ID
        self._next_trade_id = FIRST_TRADE_ID
        self._subscribers: list[Subscriber] = []
        self._pending: list[VenueEvent] = []
        self._touched_assets: dict[str, None] = {}

    # ----- events -----------------------------------------------------------------
    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` with every :data:`VenueEvent` from now on; returns the unsubscribe."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    # ----- public market data -------------------------------------------------
    def now_ms(self) -> int:
        return self._clock.now_ns() // NS_PER_MS

    def symbol_rules(self, symbol: str | None) -> SymbolRules:
        if not symbol:
            raise errors.missing_param("symbol")
        rules = self.rules.get(symbol)
        if rules is None:
            raise errors.invalid_symbol()
        return rules

    def seed_book(
        self,
        symbol: str,
        bids: Iterable[tuple[Decimal | str, Decimal | str]],
        asks: Iterable[tuple[Decimal | str, Decimal | str]],
    ) -> None:
        """Replace ``symbol``'s public levels (size 0 = no level), as a snapshot would.

        Raises ``ValueError`` for levels the book refuses (crossed, negative, NaN).
        """
        drop = self.apply_snapshot(symbol, _levels(bids), _levels(asks))
        if drop is not None:
            raise ValueError(f"seed_book({symbol}): levels refused ({drop.value})")

    def apply_snapshot(self, symbol: str, bids: Levels, asks: Levels) -> Drop | None:
        """The public book becomes exactly these levels; our orders react to it.

        Returns ``None`` when applied, else why the book refused it (nothing changed).
        """
        book = self.books[self.symbol_rules(symbol).symbol]
        drop = book.public.apply_snapshot(bids, asks, ts_ns=self._clock.now_ns())
        if drop is not None:
            return drop
        book.dirty_all = True
        self._before_match(symbol, book)
        self._matched(symbol, book, book.matcher.on_book(book.public))
        self._after_match(symbol, book)
        self._commit()
        return None

    def apply_delta(self, symbol: str, bids: Levels, asks: Levels) -> Drop | None:
        """New absolute sizes (0 removes) for some public levels; our orders react to it.

        Returns ``None`` when applied, else why the book refused it (nothing changed).
        """
        book = self.books[self.symbol_rules(symbol).symbol]
        # The venue's book has no sequence ids of its own: the feed has already put the
        # recording in order, and the emulator numbers its depth updates itself.
        drop = book.public.apply_delta(bids, asks, ts_ns=self._clock.now_ns())
        if drop is not None:
            return drop
        for shown, rows in ((book.shown["BUY"], bids), (book.shown["SELL"], asks)):
            for p, size in rows[:, :2].tolist():
                shown.fresh[p] = size
            shown.dirty.update(shown.fresh)
        self._before_match(symbol, book)
        self._matched(symbol, book, book.matcher.on_book(book.public))
        self._after_match(symbol, book)
        self._commit()
        return None

    def market_trade(
        self, symbol: str, price: float, qty: float, aggressor: OrderSide
    ) -> list[SimTrade]:
        """A trade on the market's tape: it fills our resting orders it reaches.

        On the public tape it becomes our fills, then what of the print went to others
        (if anything): the tape's volume stays the recording's.
        """
        book = self.books[self.symbol_rules(symbol).symbol]
        fills = book.matcher.on_trade(price, qty, aggressor) if book.matcher.orders else []
        trades = self._matched(symbol, book, fills)
        left = dec(qty) - sum((t.qty for t in trades), ZERO)
        if left > 0:
            self._pending.append(
                PublicTrade(
                    symbol=symbol,
                    trade_id=self._new_trade_id(),
                    price=dec(price),
                    qty=left,
                    buyer_is_maker=aggressor == "sell",
                    time_ms=self.now_ms(),
                )
            )
        self._commit()
        return trades

    def depth(
        self, symbol: str, limit: int
    ) -> tuple[int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """``(lastUpdateId, bids best first, asks best first)``, our resting orders included."""
        book = self.books[self.symbol_rules(symbol).symbol]
        top_bids = heapq.nlargest(limit, book.bids.items())
        top_asks = heapq.nsmallest(limit, book.asks.items())
        return (
            book.last_update_id,
            [(dec(p), q) for p, q in top_bids],
            [(dec(p), q) for p, q in top_asks],
        )

    # ----- balances -------------------------------------------------------------
    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def _lock(self, asset: str, amount: Decimal) -> None:
        bal = self.balance(asset)
        if bal.free < amount:
            raise errors.order_rejected(errors.INSUFFICIENT_BALANCE)
        bal.free -= amount
        bal.locked += amount
        self._touched_assets[asset] = None

    def _unlock(self, asset: str, amount: Decimal) -> None:
        bal = self.balance(asset)
        bal.locked -= amount
        bal.free += amount
        self._touched_assets[asset] = None

    # ----- orders ---------------------------------------------------------------
    def place(
        self,
        *,
        symbol: str,
        side: Side,
        order_type: str,
        time_in_force: str,
        price: Decimal,
        qty: Decimal,
        client_order_id: str,
        reduce_only: bool = False,
    ) -> tuple[SimOrder, list[SimTrade]]:
        """Validate, lock funds, take what crosses, rest what is left (GTC)."""
        rules = self.symbol_rules(symbol)
        rules.check(price, qty)
        if any(o.client_order_id == client_order_id for o in self.open_orders(symbol)):
            raise errors.order_rejected(errors.DUPLICATE_ORDER)
        self._admit(symbol, side, order_type, time_in_force, price, qty, reduce_only)
        book = self.books[symbol]
        public, matcher, oside = book.public, book.matcher, _order_side(side)
        own_cross = matcher.crossing_own(oside, price)
        crosses = matcher.would_take(oside, price, public)
        if self._post_only(order_type, time_in_force) and (crosses or own_cross):
            raise self._would_take_error()
        fok_expired = False
        if time_in_force == "FOK":
            # Fill-or-kill: all of it now, from the market, or nothing at all.
            walk = matcher.take(oside, qty, price, public, consume=False)
            fok_expired = sum((q for _p, q in walk), ZERO) < qty
        now = self.now_ms()
        order = SimOrder(
            order_id=self._next_order_id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=order_type,
            time_in_force=time_in_force,
            price=price,
            orig_qty=qty,
            time_ms=now,
            update_ms=now,
            reduce_only=reduce_only,
        )
        # Lock the whole order first: a taker fill releases its share of the lock.
        self._lock(*self._lock_for(order, qty))
        self._next_order_id += 1
        self.orders[order.order_id] = order
        self._open[order.order_id] = order
        self._order_event(order, "NEW")
        self._balances_event()
        fills: list[SimTrade] = []
        if fok_expired:
            self._close(order, "EXPIRED")
        else:
            for own in own_cross:
                self._close(self.orders[int(own.order_id)], STP_STATUS)
            if crosses:
                opposite = book.shown["SELL" if side == "BUY" else "BUY"].dirty
                for level_price, qty_taken in matcher.take(oside, qty, price, public):
                    fills.append(self._fill(order, level_price, qty_taken, is_maker=False))
                    opposite.add(float(level_price))
            if order.is_open:
                if time_in_force in ("IOC", "FOK"):
                    self._close(order, "EXPIRED")
                else:
                    matcher.rest(str(order.order_id), oside, price, order.remaining, public)
                    self._dirty_order(order)
        self._commit()
        return order, fills

    def cancel(self, symbol: str, order_id: int | None, client_order_id: str | None) -> SimOrder:
        order = self.find(symbol, order_id, client_order_id, unknown=errors.unknown_order)
        if not order.is_open:
            raise errors.unknown_order()
        self._close(order, "CANCELED")
        self._commit()
        return order

    def cancel_all(self, symbol: str) -> list[SimOrder]:
        open_orders = self.open_orders(self.symbol_rules(symbol).symbol)
        if not open_orders:
            # Binance answers -2011 when there is nothing to cancel.
            raise errors.unknown_order()
        for order in open_orders:
            self._close(order, "CANCELED")
        self._commit()
        return open_orders

    def find(
        self,
        symbol: str,
        order_id: int | None,
        client_order_id: str | None,
        unknown: Callable[[], ApiError] = errors.order_does_not_exist,
    ) -> SimOrder:
        """The order by id or client id (latest with that client id); raises if unknown.

        ``unknown`` makes the error: queries answer -2013, cancels -2011, as Binance.
        """
        self.symbol_rules(symbol)
        not_found = unknown()
        if order_id is None and not client_order_id:
            raise ApiError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        if order_id is not None:
            order = self.orders.get(order_id)
        else:
            matches = [o for o in self.orders.values() if o.client_order_id == client_order_id]
            order = matches[-1] if matches else None
        if order is None or order.symbol != symbol:
            raise not_found
        if client_order_id and order.client_order_id != client_order_id:
            raise not_found
        return order

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        return [o for o in self._open.values() if symbol is None or o.symbol == symbol]

    def fill_resting(self, order_id: int, qty: Decimal | str) -> SimTrade:
        """Fill ``qty`` of a resting order at its own price as maker (test/fault hook).

        The fill comes from nowhere: it consumes no public liquidity and leaves the
        order's queue position as it was.
        """
        order = self.orders[order_id]
        amount = min(Decimal(qty), order.remaining)
        if not order.is_open or amount <= 0:
            raise ValueError(f"order {order_id} has nothing left to fill")
        matcher = self.books[order.symbol].matcher
        resting = matcher.orders.get(str(order_id))
        if resting is not None:
            # The matcher's view of the order must shrink with it.
            resting.remaining -= amount
            if resting.remaining <= 0:
                matcher.remove(resting.order_id)
        trade = self._fill(order, order.price, amount, is_maker=True)
        self._dirty_order(order)
        self._commit()
        return trade

    # ----- internals ------------------------------------------------------------
    def _lock_for(self, order: SimOrder, qty: Decimal) -> tuple[str, Decimal]:
        rules = self.rules[order.symbol]
        if order.side == "BUY":
            return rules.quote, qty * order.price
        return rules.base, qty

    def _new_trade_id(self) -> int:
        # One id space for the whole tape, ours and the market's, as on Binance.
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        return trade_id

    def _matched(self, symbol: str, book: VenueBook, fills: list[Fill]) -> list[SimTrade]:
        """Book the matcher's fills of our resting orders (maker, at their price)."""
        trades = []
        for f in fills:
            order = self.orders[int(f.order_id)]
            trades.append(self._fill(order, f.price, f.amount, is_maker=not f.taker))
            self._dirty_order(order)
        if fills:
            # Book-through fills consume the opposite side: those levels show less now.
            self._dirty_consumed(book)
        return trades

    def _fill(self, order: SimOrder, price: Decimal, qty: Decimal, *, is_maker: bool) -> SimTrade:
        rules = self.rules[order.symbol]
        rate = rules.maker_fee if is_maker else rules.taker_fee
        commission, commission_asset, realized = self._settle(order, price, qty, rate)
        now = self.now_ms()
        order.executed_qty += qty
        order.cumm_quote += qty * price
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        order.update_ms = now
        if not order.is_open:
            self._open.pop(order.order_id, None)
        trade = SimTrade(
            trade_id=self._new_trade_id(),
            order_id=order.order_id,
            symbol=order.symbol,
            price=price,
            qty=qty,
            commission=commission,
            commission_asset=commission_asset,
            time_ms=now,
            is_buyer=order.side == "BUY",
            is_maker=is_maker,
            realized_pnl=realized,
        )
        self.trades.append(trade)
        # The print as everyone sees it: the maker is the side that was resting.
        buyer_is_maker = trade.is_buyer == is_maker
        self._pending.append(
            PublicTrade(order.symbol, trade.trade_id, price, qty, buyer_is_maker, now)
        )
        self._order_event(order, "TRADE", trade)
        self._after_fill(order)
        self._balances_event()
        return trade

    # ----- hooks (the futures engine overrides these) ------------------------------
    def _admit(
        self,
        symbol: str,
        side: Side,
        order_type: str,
        time_in_force: str,
        price: Decimal,
        qty: Decimal,
        reduce_only: bool,
    ) -> None:
        """Venue-specific checks before an order is accepted (spot: none beyond funds)."""

    @staticmethod
    def _post_only(order_type: str, time_in_force: str) -> bool:
        return order_type == "LIMIT_MAKER"

    @staticmethod
    def _would_take_error() -> ApiError:
        return errors.order_rejected(errors.WOULD_TAKE)

    def _after_fill(self, order: SimOrder) -> None:
        """Called after each fill of ``order`` has been booked."""

    def _before_match(self, symbol: str, book: VenueBook) -> None:
        """A book update was applied; our resting orders have not reacted to it yet."""

    def _after_match(self, symbol: str, book: VenueBook) -> None:
        """A book update was applied and our resting orders have reacted to it."""

    def _settle(
        self, order: SimOrder, price: Decimal, qty: Decimal, rate: Decimal
    ) -> tuple[Decimal, str, Decimal]:
        """Book one fill's funds; ``(commission, commission asset, realised PnL)``."""
        rules = self.rules[order.symbol]
        locked_asset, locked_amount = self._lock_for(order, qty)
        self.balance(locked_asset).locked -= locked_amount
        self._touched_assets[locked_asset] = None
        if order.side == "BUY":
            # Bought below the limit: the locked difference goes back to free.
            self.balance(rules.quote).free += locked_amount - qty * price
            received_asset, received = rules.base, qty
        else:
            received_asset, received = rules.quote, qty * price
        commission = (received * rate).quantize(EIGHT_DP, rounding=ROUND_UP)
        self.balance(received_asset).free += received - commission
        self._touched_assets[received_asset] = None
        return commission, received_asset, ZERO

    def _close(self, order: SimOrder, status: str) -> None:
        self._unlock(*self._lock_for(order, order.remaining))
        order.status = status
        order.update_ms = self.now_ms()
        self._open.pop(order.order_id, None)
        self.books[order.symbol].matcher.remove(str(order.order_id))
        self._dirty_order(order)
        # Binance reports a self-trade-prevented order as EXPIRED_IN_MATCH; its
        # execution is an expiry either way.
        self._order_event(order, "EXPIRED" if status == STP_STATUS else status)
        self._balances_event()

    # ----- events (internals) -----------------------------------------------------
    def _dirty_order(self, order: SimOrder) -> None:
        self.books[order.symbol].shown[order.side].dirty.add(float(order.price))

    def _dirty_consumed(self, book: VenueBook) -> None:
        for side, price in book.matcher.consumed_levels:
            book.shown["BUY" if side is BookSide.BID else "SELL"].dirty.add(price)

    def _order_event(self, order: SimOrder, execution: str, trade: SimTrade | None = None) -> None:
        # A copy: subscribers queue events, and the order keeps changing after this.
        snapshot = dataclasses.replace(order)
        self._pending.append(OrderChanged(snapshot, execution, trade, order.update_ms))

    def _balances_event(self) -> None:
        if not self._touched_assets:
            return
        rows = tuple(
            (asset, self.balances[asset].free, self.balances[asset].locked)
            for asset in self._touched_assets
        )
        self._touched_assets.clear()
        self._pending.append(BalancesChanged(rows, self.now_ms()))

    def _ours(self, symbol: str, side: Side) -> dict[float, Decimal]:
        """Our resting size per price on ``side``."""
        ours: dict[float, Decimal] = {}
        for o in self._open.values():
            if o.symbol == symbol and o.side == side:
                key = float(o.price)
                ours[key] = ours.get(key, ZERO) + o.remaining
        return ours

    def _shown_now(
        self, symbol: str, book: VenueBook, side: Side, prices: Iterable[float] | None
    ) -> dict[float, Decimal]:
        """What ``GET /depth`` shows now on ``side``: at ``prices`` (0 where nothing), or
        every level (``None``)."""
        bside = _book_side(side)
        public = book.public
        fresh = book.shown[side].fresh
        if prices is None:
            rows = public.top(public.level_count(bside), bside).tolist()
            sizes: dict[float, float] = {p: q for p, q in rows}
        else:
            sizes = {}
            unknown = []
            for p in prices:
                if p in fresh:
                    sizes[p] = fresh[p]
                else:
                    unknown.append(p)
            sizes.update(zip(unknown, sizes_at(public, bside, unknown), strict=True))
        consumed = book.matcher.consumed_levels
        out: dict[float, Decimal] = {}
        for p, q in sizes.items():
            size = dec(q) if q > 0.0 else ZERO
            if consumed:
                size = max(ZERO, size - consumed.get((bside, p), ZERO))
            out[p] = size
        for p, mine in self._ours(symbol, side).items():
            if prices is None or p in out:
                out[p] = out.get(p, ZERO) + mine
        return out

    def _depth_diff(self, symbol: str, book: VenueBook) -> DepthDiff | None:
        """Publish what ``GET /depth`` shows now where it may have changed; the diff."""
        changes: dict[Side, list[tuple[Decimal, Decimal]]] = {"BUY": [], "SELL": []}
        for side, shown in book.shown.items():
            levels = shown.levels
            candidates: Iterable[float]
            if book.dirty_all:
                now = self._shown_now(symbol, book, side, None)
                candidates = levels.keys() | now.keys()
            elif shown.dirty:
                now = self._shown_now(symbol, book, side, shown.dirty)
                candidates = now.keys()
            else:
                continue
            for price in candidates:
                size = now.get(price, ZERO)
                if size == levels.get(price, ZERO):
                    continue
                if size > 0:
                    levels[price] = size
                else:
                    del levels[price]
                changes[side].append((dec(price), size))
            shown.dirty.clear()
            shown.fresh.clear()
        book.dirty_all = False
        if not changes["BUY"] and not changes["SELL"]:
            return None
        book.last_update_id += 1
        return DepthDiff(
            symbol=symbol,
            first_id=book.last_update_id,
            last_id=book.last_update_id,
            bids=tuple(sorted(changes["BUY"], reverse=True)),
            asks=tuple(sorted(changes["SELL"])),
            time_ms=self.now_ms(),
        )

    def _commit(self) -> None:
        """End of one venue operation: publish its depth diffs, then deliver its events.

        State is complete before anyone hears of it, so a subscriber that fails cannot
        leave the venue half way through an operation.
        """
        for symbol, book in self.books.items():
            if book.dirty_all or any(side.dirty for side in book.shown.values()):
                diff = self._depth_diff(symbol, book)
                if diff is not None:
                    self._pending.append(diff)
        self._balances_event()
        events, self._pending = self._pending, []
        failure: Exception | None = None
        for event in events:
            for fn in list(self._subscribers):
                try:
                    fn(event)
                except Exception as e:  # re-raised below, once everyone has the events
                    failure = failure or e
        if failure is not None:
            raise failure
