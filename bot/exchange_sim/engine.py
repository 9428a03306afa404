"""The emulator's exchange state: public books, our orders, fills, balances.

Pure (no I/O); time comes from the injected clock. Matching is deliberately simple
for this first slice:

* The public book is whatever the test (later: the replay) seeds. A crossing LIMIT
  order takes from it level by level up to its limit price, and the taken size is
  removed from the book (one trade per level, at the level's price, taker fee).
* The rest of a GTC order rests; our resting orders are shown in ``depth`` on top
  of the seeded levels, as they would be on the real venue.
* Resting orders fill only when told (:meth:`SpotEngine.fill_resting`, maker fee):
  queue position and trade-through modelling belong to the paper venue's matcher,
  which a later slice plugs in here.
* Our own orders never match each other (no self-trade prevention to emulate).

Fees are charged in the asset received, as Binance does without BNB discounts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal
from typing import Literal

from bot.clock import Clock
from bot.exchange_sim import errors
from bot.exchange_sim.errors import ApiError
from bot.exchange_sim.symbols import SymbolRules

Side = Literal["BUY", "SELL"]
ZERO = Decimal(0)
EIGHT_DP = Decimal("0.00000001")
NS_PER_MS = 1_000_000
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
# First ids are arbitrary but large, so nobody mistakes them for list indices.
FIRST_ORDER_ID = 1_000_001
FIRST_TRADE_ID = 5_000_001


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

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@dataclass
class PublicBook:
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    last_update_id: int = 1


@dataclass
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


class SpotEngine:
    def __init__(
        self,
        rules: Iterable[SymbolRules],
        clock: Clock,
        balances: Mapping[str, Decimal | str | int] | None = None,
    ) -> None:
        self.rules = {r.symbol: r for r in rules}
        self._clock = clock
        self.books = {symbol: PublicBook() for symbol in self.rules}
        self.balances: dict[str, Balance] = {}
        for asset, amount in (balances or {}).items():
            self.balances[asset] = Balance(free=Decimal(amount))
        self.orders: dict[int, SimOrder] = {}
        self.trades: list[SimTrade] = []
        self._next_order_id = FIRST_ORDER_ID
        self._next_trade_id = FIRST_TRADE_ID

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
        """Replace ``symbol``'s public levels (size 0 = no level); bumps ``lastUpdateId``."""
        book = self.books[self.symbol_rules(symbol).symbol]
        book.bids = {Decimal(p): Decimal(q) for p, q in bids if Decimal(q) > 0}
        book.asks = {Decimal(p): Decimal(q) for p, q in asks if Decimal(q) > 0}
        book.last_update_id += 1

    def depth(
        self, symbol: str, limit: int
    ) -> tuple[int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """``(lastUpdateId, bids best first, asks best first)``, our resting orders included."""
        book = self.books[self.symbol_rules(symbol).symbol]
        bids = dict(book.bids)
        asks = dict(book.asks)
        for order in self.open_orders(symbol):
            side = bids if order.side == "BUY" else asks
            side[order.price] = side.get(order.price, ZERO) + order.remaining
        top_bids = sorted(bids.items(), key=lambda lv: -lv[0])[:limit]
        top_asks = sorted(asks.items(), key=lambda lv: lv[0])[:limit]
        return book.last_update_id, top_bids, top_asks

    # ----- balances -------------------------------------------------------------
    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def _lock(self, asset: str, amount: Decimal) -> None:
        bal = self.balance(asset)
        if bal.free < amount:
            raise errors.order_rejected(errors.INSUFFICIENT_BALANCE)
        bal.free -= amount
        bal.locked += amount

    def _unlock(self, asset: str, amount: Decimal) -> None:
        bal = self.balance(asset)
        bal.locked -= amount
        bal.free += amount

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
    ) -> tuple[SimOrder, list[SimTrade]]:
        """Validate, lock funds, match against the public book, rest what is left."""
        rules = self.symbol_rules(symbol)
        rules.check(price, qty)
        if any(o.client_order_id == client_order_id for o in self.open_orders(symbol)):
            raise errors.order_rejected(errors.DUPLICATE_ORDER)
        book = self.books[symbol]
        levels = self._takeable(book, side, price)
        if order_type == "LIMIT_MAKER" and levels:
            raise errors.order_rejected(errors.WOULD_TAKE)
        if time_in_force == "FOK" and sum(q for _, q in levels) < qty:
            levels = []  # FOK fills all or nothing; the order expires untouched below
            fok_expired = True
        else:
            fok_expired = False
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
        )
        # Lock the whole order first: a taker fill releases its share of the lock.
        self._lock(*self._lock_for(order, qty))
        self._next_order_id += 1
        self.orders[order.order_id] = order
        fills: list[SimTrade] = []
        for level_price, level_qty in levels:
            take = min(level_qty, order.remaining)
            if take <= 0:
                break
            fills.append(self._fill(order, level_price, take, is_maker=False))
            side_levels = book.asks if side == "BUY" else book.bids
            side_levels[level_price] -= take
            if side_levels[level_price] <= 0:
                del side_levels[level_price]
        if order.is_open and (fok_expired or time_in_force in ("IOC", "FOK")):
            self._close(order, "EXPIRED")
        # Any change to the book, our resting orders included, is a new book version.
        book.last_update_id += 1
        return order, fills

    def cancel(self, symbol: str, order_id: int | None, client_order_id: str | None) -> SimOrder:
        order = self.find(symbol, order_id, client_order_id, unknown=errors.unknown_order)
        if not order.is_open:
            raise errors.unknown_order()
        self._close(order, "CANCELED")
        return order

    def cancel_all(self, symbol: str) -> list[SimOrder]:
        open_orders = self.open_orders(self.symbol_rules(symbol).symbol)
        if not open_orders:
            # Binance answers -2011 when there is nothing to cancel.
            raise errors.unknown_order()
        for order in open_orders:
            self._close(order, "CANCELED")
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
        return [
            o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)
        ]

    def fill_resting(self, order_id: int, qty: Decimal | str) -> SimTrade:
        """Fill ``qty`` of a resting order at its own price as maker (test/fault hook)."""
        order = self.orders[order_id]
        amount = min(Decimal(qty), order.remaining)
        if not order.is_open or amount <= 0:
            raise ValueError(f"order {order_id} has nothing left to fill")
        self.books[order.symbol].last_update_id += 1
        return self._fill(order, order.price, amount, is_maker=True)

    # ----- internals ------------------------------------------------------------
    @staticmethod
    def _takeable(book: PublicBook, side: Side, limit: Decimal) -> list[tuple[Decimal, Decimal]]:
        if side == "BUY":
            return sorted((p, q) for p, q in book.asks.items() if p <= limit)
        return sorted(((p, q) for p, q in book.bids.items() if p >= limit), reverse=True)

    def _lock_for(self, order: SimOrder, qty: Decimal) -> tuple[str, Decimal]:
        rules = self.rules[order.symbol]
        if order.side == "BUY":
            return rules.quote, qty * order.price
        return rules.base, qty

    def _fill(self, order: SimOrder, price: Decimal, qty: Decimal, *, is_maker: bool) -> SimTrade:
        rules = self.rules[order.symbol]
        rate = rules.maker_fee if is_maker else rules.taker_fee
        locked_asset, locked_amount = self._lock_for(order, qty)
        self.balance(locked_asset).locked -= locked_amount
        if order.side == "BUY":
            # Bought below the limit: the locked difference goes back to free.
            self.balance(rules.quote).free += locked_amount - qty * price
            received_asset, received = rules.base, qty
        else:
            received_asset, received = rules.quote, qty * price
        commission = (received * rate).quantize(EIGHT_DP, rounding=ROUND_UP)
        self.balance(received_asset).free += received - commission
        now = self.now_ms()
        order.executed_qty += qty
        order.cumm_quote += qty * price
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        order.update_ms = now
        trade = SimTrade(
            trade_id=self._next_trade_id,
            order_id=order.order_id,
            symbol=order.symbol,
            price=price,
            qty=qty,
            commission=commission,
            commission_asset=received_asset,
            time_ms=now,
            is_buyer=order.side == "BUY",
            is_maker=is_maker,
        )
        self._next_trade_id += 1
        self.trades.append(trade)
        return trade

    def _close(self, order: SimOrder, status: str) -> None:
        self._unlock(*self._lock_for(order, order.remaining))
        order.status = status
        order.update_ms = self.now_ms()
        self.books[order.symbol].last_update_id += 1
