"""The paper venue: ccxt's unified trading API, filled against a real public book.

It is an engine listener (``on_sample``/``on_trade``), so it runs on any market-data
source, live or replayed, and a :class:`~bot.venues.base.Venue`, so the order manager
cannot tell it from a ``ccxt.pro`` exchange: same method names and arguments, the same
unified dicts (built with ccxt's own ``safe_order``/``safe_trade``/``safe_balance`` on an
offline exchange object of the market's exchange; an order that has not traded with
:func:`bot.venues.unified.plain_order`, which gives what ``safe_order`` gives, faster),
the same exception classes.

Requests travel: ``create_order``/``cancel_order``/``cancel_all_orders`` reach the
simulated matching engine ``latency_ms`` of *data time* after they are sent, are handled
in the order sent, and only then does the awaited call return (or raise), like a REST
reply. Fills found meanwhile still happen, so a cancel can race a fill. While the
market's book is not valid (before the first snapshot, after a gap) the simulated
matching engine is halted: requests wait and are handled, in order, once it is valid
again. Reads (``fetch_*``) answer at once from the venue's state.

Fees: maker/taker rates from the market (or the ``fees`` override), charged in the
currency the market's ``feeSide`` names (ccxt's convention; Binance spot is ``get``:
a buy pays in the base it receives, a sell in the quote it receives, as on a Binance
account without BNB fee payment). Fees paid in the currency given are reserved with
the order at the larger of the two rates.

Self-trade prevention follows Binance's default ``EXPIRE_MAKER``: a taking order that
would trade with one of our own resting orders cancels that resting order first. ccxt
reports such orders (and the unfilled rest of IOC/FOK/market orders) as ``expired`` on
Binance; here they are ``canceled`` (``info.status`` keeps Binance's word), so statuses
stay within open/closed/canceled. Spot markets only here; contract markets (positions,
isolated margin, funding, liquidation) are :class:`bot.venues.perp.PerpPaperVenue`, which
overrides the market-type hooks below and shares everything else.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import ccxt

from bot.book import BookState, OrderBook, Side
from bot.clock import NS_PER_MS, Clock
from bot.feeds.events import Trade as PublicTrade
from bot.monitor import DepthSample
from bot.venues.base import Balance, MarketDict, Order, OrderBookDict, Trade, Venue
from bot.venues.matching import ZERO, Fill, Matcher, OrderSide, dec
from bot.venues.rules import (
    MarketPrecision,
    amount_to_precision,
    precision_of,
    prepare_order,
    price_to_precision,
    to_decimal,
)
from bot.venues.unified import plain_order

__all__ = ["PaperVenue"]

_ONE: Final = Decimal(1)
_TIME_IN_FORCE: Final = ("GTC", "IOC", "FOK", "PO")
_DEFAULT_BOOK_LIMIT: Final = 100
_LOG_TRIM: Final = 4096
"""Drop the consumed prefix of the watch logs once it is this long."""

# Binance's answers, as ccxt formats them into exception messages.
_MSG_POST_ONLY = '{"code":-2010,"msg":"Order would immediately match and take."}'
_MSG_DUPLICATE = '{"code":-2010,"msg":"Duplicate order sent."}'
_MSG_FUNDS = '{"code":-2010,"msg":"Account has insufficient balance for requested action."}'
_MSG_UNKNOWN = '{"code":-2011,"msg":"Unknown order sent."}'
_MSG_NO_ORDER = '{"code":-2013,"msg":"Order does not exist."}'

_NATIVE_STATUS: Final = {"open": "NEW", "closed": "FILLED", "canceled": "CANCELED"}


def _s(x: Decimal) -> str:
    """Plain decimal string (no exponent), as ccxt's string helpers expect."""
    return format(x, "f")


@dataclass(slots=True)
class _MyTrade:
    id: str
    order_id: str
    symbol: str
    type: str
    side: OrderSide
    taker: bool
    price: Decimal
    amount: Decimal
    fee_cost: Decimal
    fee_currency: str
    fee_rate: Decimal
    timestamp_ms: int


@dataclass(slots=True)
class _Order:
    id: str
    client_id: str
    symbol: str
    type: str
    side: OrderSide
    price: Decimal | None
    amount: Decimal
    time_in_force: str
    post_only: bool
    timestamp_ms: int
    fee_currency: str
    lock_currency: str
    lock_per_unit: Decimal
    """Reserved per unit of amount (quote per base for a limit buy, base for a sell)."""
    locked: Decimal
    reduce_only: bool = False
    status: str = "open"
    native_status: str = "NEW"
    filled: Decimal = ZERO
    cost: Decimal = ZERO
    fee_cost: Decimal = ZERO
    last_trade_ms: int | None = None
    last_update_ms: int | None = None
    trades: list[_MyTrade] = field(default_factory=list)
    rendered: Order | None = None
    """The ccxt structure of the order as it is now; cleared by every change
    (:meth:`PaperVenue._touch_order`). A create's reply and the ``watch_orders`` update
    that follows it describe the same state: rendered once (``safe_order``, ~40 us)."""

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


@dataclass(frozen=True, slots=True)
class _CreateRequest:
    symbol: str
    type: str
    side: OrderSide
    amount: Decimal
    price: Decimal | None
    time_in_force: str
    post_only: bool
    client_id: str | None
    reduce_only: bool = False


@dataclass(slots=True)
class _Action:
    """A request on its way to the matching engine."""

    due_ns: int
    run: Callable[[int], Any]
    future: asyncio.Future[Any]


class PaperVenue:
    """A simulated exchange account on real market data (spot markets).

    ``markets``: ccxt market dicts (e.g. :func:`bot.markets.offline_markets`);
    ``balances``: the starting inventory per currency; ``clock``: data time (the replay's
    manual clock, or the wall clock live); ``latency_ms``: data time between sending a
    request and the matching engine handling it; ``fees``: optional per-symbol
    ``{"maker": rate, "taker": rate}`` overriding the market's; ``exchange_id``: the ccxt
    exchange whose conventions (precision mode, structures) the markets follow.

    Deterministic: no randomness and no wall-clock reads; ids are counters.
    """

    id = "paper"

    def __init__(
        self,
        *,
        markets: Mapping[str, MarketDict],
        balances: Mapping[str, float | str | Decimal],
        clock: Clock,
        latency_ms: float = 0.0,
        fees: Mapping[str, Mapping[str, float]] | None = None,
        exchange_id: str = "binance",
    ) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        self.exchange_id = exchange_id
        self.markets: dict[str, MarketDict] = {s: dict(m) for s, m in markets.items()}
        for symbol, rates in (fees or {}).items():
            if symbol not in self.markets:
                raise ValueError(f"fee override for unknown market {symbol!r}")
            for key in ("maker", "taker"):
                if key in rates:
                    self.markets[symbol][key] = float(rates[key])
        # An offline exchange object: ccxt's own precision helpers and structure builders.
        self._ex: Any = getattr(ccxt, exchange_id)({"enableRateLimit": False})
        self._ex.set_markets(list(self.markets.values()))
        # Untraded orders skip safe_order (bot.venues.unified): the same dict, if this
        # exchange object makes floats of numbers, as ccxt's do unless told otherwise.
        self._plain_orders = self._ex.number is float
        self.has: dict[str, Any] = {
            "spot": True,
            "margin": False,
            "swap": False,
            "future": False,
            "option": False,
            "ws": True,
            "sandbox": False,
            "createOrder": True,
            "createLimitOrder": True,
            "createMarketOrder": True,
            "createPostOnlyOrder": True,
            "createReduceOnlyOrder": False,
            "createStopOrder": False,
            "createTriggerOrder": False,
            "createMarketBuyOrderWithCost": False,
            "editOrder": False,
            "cancelOrder": True,
            "cancelAllOrders": True,
            "cancelOrders": False,
            "fetchOrder": True,
            "fetchOrders": True,
            "fetchOpenOrders": True,
            "fetchClosedOrders": True,
            "fetchMyTrades": True,
            "fetchBalance": True,
            "fetchOrderBook": True,
            "fetchMarkets": True,
            "watchOrders": True,
            "watchMyTrades": True,
            "watchOrderBook": False,
            "watchBalance": False,
        }
        self._clock = clock
        self._latency_ns = round(latency_ms * NS_PER_MS)
        self._total: dict[str, Decimal] = {}
        self._used: dict[str, Decimal] = {}
        for ccy, amount in balances.items():
            value = to_decimal(amount)
            if not value.is_finite() or value < 0:
                raise ValueError(f"starting balance of {ccy} must be >= 0, got {amount}")
            self._total[ccy] = value
            self._used[ccy] = ZERO
        self._books: dict[str, OrderBook] = {}
        self._matchers: dict[str, Matcher] = {}
        self._queues: dict[str, deque[_Action]] = {}
        self._orders: dict[str, _Order] = {}
        self._open_by_client: dict[str, str] = {}
        self._trades: list[_MyTrade] = []
        self._next_order = 0
        self._next_trade = 0
        self._last_ms = 0
        # Watch state: update logs with absolute positions, a cursor per subscription.
        self._order_log: list[tuple[str, str]] = []
        self._order_log_base = 0
        self._trade_log_base = 0
        self._trade_log: list[_MyTrade] = []
        self._cursors: dict[tuple[str, str | None], int] = {}
        self._watching_orders = False
        self._watching_trades = False
        self._changed: asyncio.Event | None = None
        self._dirty = False
        self._closed = False

    # ================================================================ engine listener

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        """A book update: handle due requests, then what the new book does to our orders."""
        self._books[symbol] = book
        ts = sample.ts_ns
        self._before_sample(symbol, book, sample)
        self._run_due(symbol, ts)
        matcher = self._matchers.get(symbol)
        if matcher is not None:
            self._apply_fills(symbol, matcher.on_book(book), ts)
        self._after_sample(symbol, book, sample)
        self._flush()

    def on_trade(self, trade: PublicTrade) -> None:
        """A public trade: handle due requests, then fill what it traded at or through."""
        symbol, ts = trade.symbol, trade.ts_ns
        self._run_due(symbol, ts)
        matcher = self._matchers.get(symbol)
        if matcher is not None and matcher.orders:
            fills = matcher.on_trade(trade.price, trade.amount, trade.side)
            self._apply_fills(symbol, fills, ts)
        self._flush()

    # ================================================================ ccxt: markets, book

    async def load_markets(self, reload: bool = False) -> dict[str, MarketDict]:
        return self.markets

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return amount_to_precision(self._ex, symbol, amount)

    def price_to_precision(self, symbol: str, price: float) -> str:
        return price_to_precision(self._ex, symbol, price)

    def rounding(self, symbol: str) -> MarketPrecision:
        """The rounding the two methods above apply where the market allows (the
        order manager's fast path uses it directly)."""
        return precision_of(self._ex, symbol)

    def market(self, symbol: str) -> MarketDict:
        market: MarketDict = self._ex.market(symbol)
        return market

    async def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> OrderBookDict:
        """The public book as the paper venue sees it: minus the liquidity we consumed.

        Our own resting orders are not shown (a real exchange's book would include them).
        """
        self.market(symbol)
        book = self._books.get(symbol)
        if book is None or book.state is not BookState.VALID or book.last_update_ns is None:
            raise ccxt.ExchangeNotAvailable(f"{self.id} no valid order book for {symbol} yet")
        n = _DEFAULT_BOOK_LIMIT if limit is None else int(limit)
        matcher = self._matchers.get(symbol)
        sides: dict[str, list[list[float]]] = {}
        for key, side in (("bids", Side.BID), ("asks", Side.ASK)):
            rows: list[list[float]] = []
            for p, s in book.top(n + 64, side).tolist():
                left = dec(s) - (matcher.consumed(side, p) if matcher else ZERO)
                if left > 0:
                    rows.append([p, float(left)])
                if len(rows) == n:
                    break
            sides[key] = rows
        ts_ms = book.last_update_ns // NS_PER_MS
        return {
            "symbol": symbol,
            "bids": sides["bids"],
            "asks": sides["asks"],
            "timestamp": ts_ms,
            "datetime": self._ex.iso8601(ts_ms),
            "nonce": book.update_id,
        }

    # ================================================================ ccxt: trading

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Order:
        """Send an order; returns the order as the matching engine left it (ccxt structure).

        ``params``: ``postOnly`` (bool), ``timeInForce`` (GTC, IOC, FOK, PO),
        ``clientOrderId`` (or Binance's ``newClientOrderId``). Raises ccxt's
        ``BadSymbol``, ``InvalidOrder`` (limits, precision, duplicate client id),
        ``OrderImmediatelyFillable`` (post-only would take), ``InsufficientFunds``.
        """
        self._check_open()
        params = dict(params or {})
        market = self.market(symbol)
        reduce_only = self._check_market(symbol, market, params)
        for key in ("triggerPrice", "stopPrice", "stopLossPrice", "takeProfitPrice"):
            if params.get(key) is not None:
                raise ccxt.NotSupported(f"{self.id} {key} orders are not supported")
        tif, post_only = self._time_in_force(type, params)
        client_id = params.get("clientOrderId", params.get("newClientOrderId"))
        reference = self._touch(symbol, side) if type == "market" else None
        prepared = prepare_order(
            self._ex, symbol, type, side, amount, price, reference_price=reference
        )
        request = _CreateRequest(
            symbol=symbol,
            type=type,
            side="buy" if side == "buy" else "sell",
            amount=prepared.amount_dec,
            price=prepared.price_dec,
            time_in_force=tif,
            post_only=post_only,
            client_id=None if client_id is None else str(client_id),
            reduce_only=reduce_only,
        )
        result: Order = await self._submit(symbol, lambda ts: self._do_create(request, ts))
        return result

    async def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Order:
        """Cancel by ``id`` or by ``params['clientOrderId']``/``['origClientOrderId']``.

        Raises ``OrderNotFound`` if the order is unknown or no longer open when the
        cancel reaches the matching engine (e.g. it filled meanwhile), like Binance.
        """
        self._check_open()
        symbol = self._require_symbol(symbol, "cancelOrder")
        client_id = _client_id_param(params)
        result: Order = await self._submit(
            symbol, lambda ts: self._do_cancel(symbol, id, client_id, ts)
        )
        return result

    async def cancel_all_orders(
        self, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> list[Order]:
        """Cancel every open order on ``symbol``; returns them (``[]`` if none was open)."""
        self._check_open()
        symbol = self._require_symbol(symbol, "cancelAllOrders")
        result: list[Order] = await self._submit(symbol, lambda ts: self._do_cancel_all(symbol, ts))
        return result

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Order:
        symbol = self._require_symbol(symbol, "fetchOrder")
        order = self._find(symbol, id, _client_id_param(params))
        if order is None:
            raise ccxt.OrderNotFound(f"{self.id} {_MSG_NO_ORDER}")
        return self._render_order(order)

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        if symbol is not None:
            self.market(symbol)
        return self._list_orders(symbol, since, limit, lambda o: o.status == "open")

    async def fetch_closed_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        symbol = self._require_symbol(symbol, "fetchClosedOrders")
        return self._list_orders(symbol, since, limit, lambda o: o.status != "open")

    async def fetch_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        symbol = self._require_symbol(symbol, "fetchOrders")
        return self._list_orders(symbol, since, limit, lambda o: True)

    async def fetch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Trade]:
        symbol = self._require_symbol(symbol, "fetchMyTrades")
        trades = [self._render_trade(t) for t in self._trades if t.symbol == symbol]
        result: list[Trade] = self._ex.filter_by_symbol_since_limit(
            trades, symbol, since, limit, since is None
        )
        return result

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> Balance:
        ts_ms = self._now_ms()
        raw: dict[str, Any] = {
            "info": {"source": "paper"},
            "timestamp": ts_ms,
            "datetime": self._ex.iso8601(ts_ms),
        }
        for ccy in sorted(self._total):
            total, used = self._total[ccy], self._used_of(ccy)
            raw[ccy] = {"free": _s(total - used), "used": _s(used), "total": _s(total)}
            raw["info"][ccy] = dict(raw[ccy])
        balance: Balance = self._ex.safe_balance(raw)
        return balance

    # ================================================================ ccxt.pro: watch

    async def watch_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        """Wait for order updates after the previous call (the first call subscribes).

        Returns each updated order once, in its latest state, like ccxt.pro's cache.
        """
        if symbol is not None:
            self.market(symbol)
        key = ("orders", symbol)
        self._watching_orders = True
        self._cursors.setdefault(key, self._order_log_base + len(self._order_log))
        while True:
            self._check_open()
            start = self._cursors[key] - self._order_log_base
            entries = self._order_log[start:]
            self._cursors[key] = self._order_log_base + len(self._order_log)
            latest: dict[str, None] = {}
            for oid, sym in entries:
                if symbol is None or sym == symbol:
                    latest.pop(oid, None)
                    latest[oid] = None
            if latest:
                orders = [self._render_order(self._orders[oid]) for oid in latest]
                result: list[Order] = self._ex.filter_by_since_limit(
                    orders, since, limit, "timestamp", True
                )
                if result:
                    self._trim_logs()
                    return result
            await self._wait_change()

    async def watch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Trade]:
        """Wait for our new trades after the previous call (the first call subscribes)."""
        if symbol is not None:
            self.market(symbol)
        key = ("myTrades", symbol)
        self._watching_trades = True
        self._cursors.setdefault(key, self._trade_log_base + len(self._trade_log))
        while True:
            self._check_open()
            start = self._cursors[key] - self._trade_log_base
            entries = self._trade_log[start:]
            self._cursors[key] = self._trade_log_base + len(self._trade_log)
            trades = [self._render_trade(t) for t in entries if symbol in (None, t.symbol)]
            if trades:
                result: list[Trade] = self._ex.filter_by_since_limit(
                    trades, since, limit, "timestamp", True
                )
                if result:
                    self._trim_logs()
                    return result
            await self._wait_change()

    async def close(self) -> None:
        """Stop: watchers and requests still on their way raise ``ExchangeClosedByUser``."""
        if self._closed:
            return
        self._closed = True
        for queue in self._queues.values():
            while queue:
                action = queue.popleft()
                if not action.future.done():
                    action.future.set_exception(
                        ccxt.ExchangeClosedByUser(f"{self.id} closed before the request arrived")
                    )
                    # Nobody may be awaiting it any more; don't warn about it at GC.
                    action.future.exception()
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # ================================================================ requests

    async def _submit(self, symbol: str, run: Callable[[int], Any]) -> Any:
        now = self._clock.now_ns()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(symbol, deque()).append(
            _Action(now + self._latency_ns, run, future)
        )
        self._run_due(symbol, now)
        self._flush()
        return await future

    def _run_due(self, symbol: str, ts: int) -> None:
        """Handle the requests that have reached the matching engine by data time ``ts``."""
        queue = self._queues.get(symbol)
        if not queue:
            return
        book = self._books.get(symbol)
        if book is None or book.state is not BookState.VALID:
            return  # matching engine halted until the book is trustworthy again
        self._last_ms = max(self._last_ms, ts // NS_PER_MS)
        while queue and queue[0].due_ns <= ts:
            action = queue.popleft()
            try:
                result = action.run(ts)
            except ccxt.BaseError as e:  # the exchange's answer: the caller's to handle
                if not action.future.done():
                    action.future.set_exception(e)
            except Exception as e:  # a bug: fail the caller and the engine, loudly
                if not action.future.done():
                    action.future.set_exception(e)
                raise
            else:
                if not action.future.done():
                    action.future.set_result(result)

    def _do_create(self, req: _CreateRequest, ts: int) -> Order:
        ts_ms = ts // NS_PER_MS
        book = self._books[req.symbol]
        market = self.market(req.symbol)
        matcher = self._matchers.get(req.symbol)
        if matcher is None:  # not setdefault: that would build a Matcher every create
            matcher = self._matchers[req.symbol] = Matcher()
        if req.client_id is not None and req.client_id in self._open_by_client:
            raise ccxt.InvalidOrder(f"{self.id} {_MSG_DUPLICATE}")
        own_cross = matcher.crossing_own(req.side, req.price)
        crosses = matcher.would_take(req.side, req.price, book)
        if req.post_only and (crosses or own_cross):
            raise ccxt.OrderImmediatelyFillable(f"{self.id} {_MSG_POST_ONLY}")
        self._admit(market, req, book, matcher)
        lock_ccy, per_unit, need = self._funding(market, req, book, matcher)
        free = self._total.get(lock_ccy, ZERO) - self._used_of(lock_ccy)
        if need > free:
            raise ccxt.InsufficientFunds(
                f"{self.id} {_MSG_FUNDS} (needs {_s(need)} {lock_ccy}, free {_s(free)})"
            )

        self._next_order += 1
        oid = str(self._next_order)
        order = _Order(
            id=oid,
            client_id=req.client_id if req.client_id is not None else f"paper-{oid}",
            symbol=req.symbol,
            type=req.type,
            side=req.side,
            price=req.price,
            amount=req.amount,
            time_in_force=req.time_in_force,
            post_only=req.post_only,
            timestamp_ms=ts_ms,
            fee_currency=self._fee_currency(market, req.side),
            lock_currency=lock_ccy,
            lock_per_unit=per_unit,
            locked=per_unit * req.amount,
            last_update_ms=ts_ms,
            reduce_only=req.reduce_only,
        )
        self._orders[oid] = order
        self._open_by_client[order.client_id] = oid
        self._used[lock_ccy] = self._used.get(lock_ccy, ZERO) + order.locked

        if req.time_in_force == "FOK":
            available = sum(
                (q for _p, q in matcher.take(req.side, req.amount, req.price, book, consume=False)),
                ZERO,
            )
            if available < req.amount:  # fill-or-kill: all of it now, from the market
                self._end(order, "canceled", "EXPIRED", ts_ms)
                return self._render_order(order)
        for own in own_cross:  # EXPIRE_MAKER self-trade prevention
            self._end(self._orders[own.order_id], "canceled", "EXPIRED_IN_MATCH", ts_ms)
        if crosses:
            taken = matcher.take(req.side, req.amount, req.price, book)
            for price, qty in taken:
                self._fill(order, price, qty, taker=True, ts_ms=ts_ms)
        if order.status == "open":
            if req.type == "limit" and req.time_in_force in ("GTC", "PO"):
                matcher.rest(oid, req.side, order.price or ZERO, order.remaining, book)
            else:
                self._end(order, "canceled", "EXPIRED", ts_ms)
        self._touch_order(order)
        return self._render_order(order)

    def _do_cancel(self, symbol: str, oid: str | None, client_id: str | None, ts: int) -> Order:
        order = self._find(symbol, oid, client_id)
        if order is None or order.status != "open":
            raise ccxt.OrderNotFound(f"{self.id} {_MSG_UNKNOWN}")
        self._end(order, "canceled", "CANCELED", ts // NS_PER_MS)
        return self._render_order(order)

    def _do_cancel_all(self, symbol: str, ts: int) -> list[Order]:
        out = []
        for order in [o for o in self._orders.values() if o.symbol == symbol]:
            if order.status == "open":
                self._end(order, "canceled", "CANCELED", ts // NS_PER_MS)
                out.append(self._render_order(order))
        return out

    # ================================================================ fills and balances

    def _apply_fills(self, symbol: str, fills: list[Fill], ts: int) -> None:
        if not fills:
            return
        ts_ms = ts // NS_PER_MS
        self._last_ms = max(self._last_ms, ts_ms)
        for f in fills:
            self._fill(self._orders[f.order_id], f.price, f.amount, taker=f.taker, ts_ms=ts_ms)

    def _fill(
        self, order: _Order, price: Decimal, amount: Decimal, *, taker: bool, ts_ms: int
    ) -> None:
        market = self.market(order.symbol)
        rate = to_decimal(float(market["taker" if taker else "maker"]))
        cost = price * amount
        fee = self._settle_fill(market, order, price, amount, rate)
        release = min(order.locked, order.lock_per_unit * amount)
        order.locked -= release
        self._used[order.lock_currency] -= release

        self._next_trade += 1
        trade = _MyTrade(
            id=str(self._next_trade),
            order_id=order.id,
            symbol=order.symbol,
            type=order.type,
            side=order.side,
            taker=taker,
            price=price,
            amount=amount,
            fee_cost=fee,
            fee_currency=order.fee_currency,
            fee_rate=rate,
            timestamp_ms=ts_ms,
        )
        order.trades.append(trade)
        self._trades.append(trade)
        if self._watching_trades:
            self._trade_log.append(trade)
            self._dirty = True
        order.filled += amount
        order.cost += cost
        order.fee_cost += fee
        order.last_trade_ms = ts_ms
        order.last_update_ms = ts_ms
        order.native_status = "PARTIALLY_FILLED"
        if order.remaining <= 0:
            self._end(order, "closed", "FILLED", ts_ms)
        self._touch_order(order)
        self._after_fill(order, ts_ms)

    def _settle_fill(
        self, market: MarketDict, order: _Order, price: Decimal, amount: Decimal, rate: Decimal
    ) -> Decimal:
        """Move the balances for one fill of ``order``; returns the fee charged."""
        base, quote = str(market["base"]), str(market["quote"])
        cost = price * amount
        fee = amount * rate if order.fee_currency == base else cost * rate
        total = self._total
        for ccy in (base, quote):
            total.setdefault(ccy, ZERO)
            self._used.setdefault(ccy, ZERO)
        if order.side == "buy":
            total[quote] -= cost
            total[base] += amount
        else:
            total[base] -= amount
            total[quote] += cost
        total[order.fee_currency] -= fee
        return fee

    def _end(self, order: _Order, status: str, native: str, ts_ms: int) -> None:
        """Close an order: out of the matching engine, its reservation released."""
        order.status = status
        order.native_status = native
        order.last_update_ms = ts_ms
        self._used[order.lock_currency] -= order.locked
        order.locked = ZERO
        matcher = self._matchers.get(order.symbol)
        if matcher is not None:
            matcher.remove(order.id)
        if self._open_by_client.get(order.client_id) == order.id:
            del self._open_by_client[order.client_id]
        self._touch_order(order)

    def _funding(
        self, market: MarketDict, req: _CreateRequest, book: OrderBook, matcher: Matcher
    ) -> tuple[str, Decimal, Decimal]:
        """(currency reserved, reserve per unit of amount, total needed now)."""
        base, quote = str(market["base"]), str(market["quote"])
        fee_ccy = self._fee_currency(market, req.side)
        max_rate = max(to_decimal(float(market["maker"])), to_decimal(float(market["taker"])))
        if req.side == "sell":
            per_unit = _ONE + max_rate if fee_ccy == base else _ONE
            return base, per_unit, per_unit * req.amount
        fee_factor = _ONE + max_rate if fee_ccy == quote else _ONE
        if req.price is not None:
            per_unit = req.price * fee_factor
            return quote, per_unit, per_unit * req.amount
        # A market buy executes at once: it needs what its walk of the book costs.
        walk = matcher.take("buy", req.amount, None, book, consume=False)
        cost = sum((p * q for p, q in walk), ZERO)
        return quote, ZERO, cost * fee_factor

    @staticmethod
    def _fee_currency(market: MarketDict, side: str) -> str:
        base, quote = str(market["base"]), str(market["quote"])
        fee_side = market.get("feeSide") or "quote"
        if fee_side == "get":
            return base if side == "buy" else quote
        if fee_side == "give":
            return quote if side == "buy" else base
        return base if fee_side == "base" else quote

    # ================================================================ rendering

    def _render_trade(self, t: _MyTrade) -> Trade:
        raw: dict[str, Any] = {
            "info": {
                "id": t.id,
                "orderId": t.order_id,
                "price": _s(t.price),
                "qty": _s(t.amount),
                "commission": _s(t.fee_cost),
                "commissionAsset": t.fee_currency,
                "time": t.timestamp_ms,
                "isMaker": not t.taker,
                "paper": True,
            },
            "id": t.id,
            "order": t.order_id,
            "timestamp": t.timestamp_ms,
            "datetime": self._ex.iso8601(t.timestamp_ms),
            "symbol": t.symbol,
            "type": t.type,
            "side": t.side,
            "takerOrMaker": "taker" if t.taker else "maker",
            "price": _s(t.price),
            "amount": _s(t.amount),
            "cost": _s(self._trade_cost(t.symbol, t.price, t.amount)),
            "fee": {"cost": _s(t.fee_cost), "currency": t.fee_currency, "rate": _s(t.fee_rate)},
        }
        trade: Trade = self._ex.safe_trade(raw, self.market(t.symbol))
        return trade

    def _render_order(self, o: _Order) -> Order:
        if o.rendered is None:
            o.rendered = self._render_fresh(o)
        # A copy of the top level each time: a caller may add or replace keys of its own.
        return dict(o.rendered)

    def _render_fresh(self, o: _Order) -> Order:
        raw = self._raw_order(o)
        if self._plain_orders:
            plain = plain_order(raw)
            if plain is not None:
                return plain
        order: Order = self._ex.safe_order(raw, self.market(o.symbol))
        return order

    def _raw_order(self, o: _Order) -> dict[str, Any]:
        """What ccxt's ``parse_order`` hands ``safe_order`` for this order on Binance."""
        fee: dict[str, Any] | None = None
        if o.trades:
            rates = {t.fee_rate for t in o.trades}
            fee = {"cost": float(o.fee_cost), "currency": o.fee_currency}
            if len(rates) == 1:
                fee["rate"] = float(next(iter(rates)))
        average = o.cost / o.filled if o.filled > 0 else None
        raw: dict[str, Any] = {
            "info": {
                "orderId": o.id,
                "clientOrderId": o.client_id,
                "symbol": self.market(o.symbol)["id"],
                "status": o.native_status,
                "type": "LIMIT_MAKER" if o.post_only else o.type.upper(),
                "side": o.side.upper(),
                "timeInForce": o.time_in_force,
                "price": _s(o.price) if o.price is not None else "0",
                "origQty": _s(o.amount),
                "executedQty": _s(o.filled),
                "cummulativeQuoteQty": _s(o.cost),
                "time": o.timestamp_ms,
                "paper": True,
            },
            "id": o.id,
            "clientOrderId": o.client_id,
            "timestamp": o.timestamp_ms,
            "datetime": self._ex.iso8601(o.timestamp_ms),
            "lastTradeTimestamp": o.last_trade_ms,
            "lastUpdateTimestamp": o.last_update_ms,
            "symbol": o.symbol,
            "type": o.type,
            "timeInForce": o.time_in_force,
            "postOnly": o.post_only,
            "reduceOnly": self._reduce_only_field(o),
            "side": o.side,
            "price": None if o.price is None else _s(o.price),
            "triggerPrice": None,
            "takeProfitPrice": None,
            "stopLossPrice": None,
            "amount": _s(o.amount),
            "filled": _s(o.filled),
            "remaining": _s(o.remaining),
            "cost": _s(self._order_cost(o)),
            "average": None if average is None else _s(average),
            "status": o.status,
            "fee": fee,
            "trades": [self._render_trade(t) for t in o.trades],
        }
        return raw

    # ================================================================ market-type hooks
    # Spot behaviour here; bot.venues.perp.PerpPaperVenue overrides them for contracts.

    def _check_market(self, symbol: str, market: MarketDict, params: dict[str, Any]) -> bool:
        """Refuse what this venue cannot trade; returns whether the order is reduce-only."""
        if not market.get("spot"):
            raise ccxt.NotSupported(f"{self.id} trades spot markets only, not {symbol}")
        if params.get("reduceOnly"):
            raise ccxt.InvalidOrder(f"{self.id} reduceOnly is not valid for spot market {symbol}")
        return False

    def _admit(
        self, market: MarketDict, req: _CreateRequest, book: OrderBook, matcher: Matcher
    ) -> None:
        """Checks made when an order reaches the matching engine, before funds."""

    def _used_of(self, ccy: str) -> Decimal:
        """What open orders (and, on contract markets, positions) hold of ``ccy``."""
        return self._used.get(ccy, ZERO)

    def _before_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        """Before a book update is matched against."""

    def _after_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        """After a book update's fills."""

    def _after_fill(self, order: _Order, ts_ms: int) -> None:
        """After one fill has been booked."""

    def _trade_cost(self, symbol: str, price: Decimal, amount: Decimal) -> Decimal:
        return price * amount

    def _order_cost(self, order: _Order) -> Decimal:
        return order.cost

    def _reduce_only_field(self, order: _Order) -> bool | None:
        return None

    # ================================================================ helpers

    def _time_in_force(self, type: str, params: dict[str, Any]) -> tuple[str, bool]:
        tif = params.get("timeInForce")
        post_only = bool(params.get("postOnly", False)) or tif == "PO"
        if tif is None:
            tif = "PO" if post_only else ("IOC" if type == "market" else "GTC")
        tif = str(tif).upper()
        if tif not in _TIME_IN_FORCE:
            raise ccxt.InvalidOrder(f"{self.id} timeInForce {tif} is not supported")
        if post_only and (type == "market" or tif in ("IOC", "FOK")):
            raise ccxt.InvalidOrder(f"{self.id} a post-only order must be a GTC limit order")
        if type == "market" and tif != "IOC":
            raise ccxt.InvalidOrder(f"{self.id} a market order cannot be {tif}")
        return ("PO" if post_only else tif), post_only

    def _touch(self, symbol: str, side: str) -> float | None:
        book = self._books.get(symbol)
        if book is None:
            return None
        return book.best_ask() if side == "buy" else book.best_bid()

    def _find(self, symbol: str, oid: str | None, client_id: str | None) -> _Order | None:
        order: _Order | None = None
        if client_id is not None:
            found = self._open_by_client.get(client_id)
            if found is not None:
                order = self._orders[found]
            else:  # the most recent order with that client id, open or not
                for o in reversed(self._orders.values()):
                    if o.client_id == client_id:
                        order = o
                        break
        elif oid is not None:
            order = self._orders.get(str(oid))
        if order is None or order.symbol != symbol:
            return None
        return order

    def _list_orders(
        self,
        symbol: str | None,
        since: int | None,
        limit: int | None,
        keep: Callable[[_Order], bool],
    ) -> list[Order]:
        orders = [
            self._render_order(o)
            for o in self._orders.values()
            if (symbol is None or o.symbol == symbol) and keep(o)
        ]
        result: list[Order] = self._ex.filter_by_symbol_since_limit(
            orders, symbol, since, limit, since is None
        )
        return result

    def _require_symbol(self, symbol: str | None, method: str) -> str:
        if symbol is None:
            raise ccxt.ArgumentsRequired(f"{self.id} {method}() requires a symbol argument")
        self.market(symbol)
        return symbol

    def _check_open(self) -> None:
        if self._closed:
            raise ccxt.ExchangeClosedByUser(f"{self.id} venue closed")

    def _now_ms(self) -> int:
        return max(self._last_ms, self._clock.now_ns() // NS_PER_MS)

    def _touch_order(self, order: _Order) -> None:
        order.rendered = None
        # Logged only once someone watches: an unwatched venue keeps no update history.
        if self._watching_orders:
            self._order_log.append((order.id, order.symbol))
            self._dirty = True

    def _flush(self) -> None:
        if self._dirty:
            self._dirty = False
            if self._changed is not None:
                self._changed.set()
                self._changed = None

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _trim_logs(self) -> None:
        """Forget log entries every subscription has already been given."""
        orders = [c for (kind, _sym), c in self._cursors.items() if kind == "orders"]
        if orders and (drop := min(orders) - self._order_log_base) >= _LOG_TRIM:
            del self._order_log[:drop]
            self._order_log_base += drop
        trades = [c for (kind, _sym), c in self._cursors.items() if kind == "myTrades"]
        if trades and (drop := min(trades) - self._trade_log_base) >= _LOG_TRIM:
            del self._trade_log[:drop]
            self._trade_log_base += drop


def _client_id_param(params: dict[str, Any] | None) -> str | None:
    if not params:
        return None
    value = params.get("clientOrderId", params.get("origClientOrderId"))
    return None if value is None else str(value)


if TYPE_CHECKING:

    def _satisfies_the_venue_contract(venue: PaperVenue) -> Venue:
        return venue  # mypy checks PaperVenue against the Venue protocol here
