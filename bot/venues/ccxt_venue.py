"""A real exchange as a :class:`~bot.venues.base.Venue`: a thin layer over a ccxt.pro object.

A ccxt.pro exchange already speaks the venue contract; this adapter only smooths the
few places where exchanges differ in ways the order manager must not care about:

- ``cancel_all_orders`` is emulated (list open orders, cancel each) where the exchange
  has no such call, so callers never branch on ``has``.
- Client order ids: the manager always passes ccxt's unified ``clientOrderId`` param
  (on create, and on cancel/fetch by client id). Exchanges that need another param
  name or a fixed decoration get it here, and the decoration is stripped from the
  orders that come back, so the manager sees the id it sent.
- ``fetch_order`` by client id falls back to searching open (then closed) orders
  on exchanges whose ccxt ``fetch_order`` cannot look up by client id.

- Perpetual futures: ``reduceOnly`` is passed through in ``params`` (the order manager
  sets it on the REDUCING state's quotes); :meth:`fetch_positions`, :meth:`set_leverage`,
  :meth:`set_margin_mode`, :meth:`fetch_funding_rate` and :meth:`fetch_funding_history`
  (the venue's funding payments, booked by :class:`bot.recovery.VenueFunding`) are
  ccxt's. A Binance futures balance's ``total`` is ccxt's margin balance (wallet +
  unrealised PnL); the bot's books compare the *wallet*, so :meth:`fetch_balance`
  reports ``walletBalance`` as the total.
- Binance's per-market error codes (``-2022 ReduceOnly Order is rejected`` ->
  ``InvalidOrder`` on ``/fapi``) are chosen by ccxt from the request's *host*; with
  overridden URLs (the local emulator) the adapter tells ccxt by the path instead, so the
  bot meets the exceptions it would meet on the real host.

- Bookkeeping reads (:meth:`fetch_balance`, :meth:`fetch_funding_history`,
  :meth:`fetch_positions`, :meth:`fetch_funding_rate`, :meth:`fetch_my_trades`) go
  through an optional second exchange, the *reader* (:func:`bot.exchanges.make_reader`),
  so their weight is charged to its ccxt throttle, not to the one a kill's cancels wait
  on. Creates, order lookups, leverage/margin settings and market data stay on the
  trading exchange. See docs/runbook.md, "Kill priority".
- Cancels and open-order listings (a kill's flat confirmation) go through an optional
  third exchange, the *canceller* (made the same way): they then never pay a create's
  weight (4 on USD-M: 200 ms in ccxt's bucket). A create still queued in ccxt's limiter
  when a kill comes is withdrawn unsent (:meth:`withdraw_create`).

Errors are ccxt's own, unchanged (the manager maps them). Everything else is passed
through as is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt

from bot.errors import NeverSent
from bot.exchanges import QUEUED_REQUEST, AbortedBeforeSent, QueuedRequest, note_retry_after
from bot.logs import Logger
from bot.venues.base import Balance, MarketDict, Order, OrderBookDict, Trade


@dataclass(frozen=True, slots=True)
class ClientIdStyle:
    """How one exchange wants client order ids.

    ``param``: the request param ccxt reads it from on create/cancel/fetch.
    ``decoration``: a fixed prefix the exchange requires (added on the way out,
    stripped from returned orders). ``by_client_id_lookup``: whether ccxt's
    ``fetch_order`` accepts the id in ``param`` instead of an order id.
    """

    param: str = "clientOrderId"
    decoration: str = ""
    by_client_id_lookup: bool = True


# Only exchanges that differ from the default; ccxt itself maps ``clientOrderId`` to
# the native name (Binance ``newClientOrderId``/``origClientOrderId``, OKX ``clOrdId``,
# Bybit ``orderLinkId``, KuCoin/Bitget ``clientOid`` ...).
CLIENT_ID_STYLES: Mapping[str, ClientIdStyle] = {
    # Gate's ``text`` must start with "t-" (ccxt passes it through unchanged).
    "gate": ClientIdStyle(param="text", decoration="t-"),
    "gateio": ClientIdStyle(param="text", decoration="t-"),
}


class CcxtVenue:
    """Wraps a ccxt.pro exchange (e.g. from :func:`bot.exchanges.make_exchange`).

    The caller owns the exchange's lifetime only through this object: :meth:`close`
    closes it (and the ``reader``, when given: an exchange of the same class and
    account for bookkeeping reads, see the module doc; without one they share
    ``exchange``).
    """

    def __init__(
        self,
        exchange: Any,
        *,
        log: Logger,
        style: ClientIdStyle | None = None,
        reader: Any | None = None,
        canceller: Any | None = None,
    ) -> None:
        self._ex = exchange
        self._reader = reader if reader is not None else exchange
        self._canceller = canceller if canceller is not None else exchange
        self._log = log
        self.id: str = str(exchange.id)
        self._style = style if style is not None else CLIENT_ID_STYLES.get(self.id, ClientIdStyle())
        _errors_by_path(exchange)
        for other in self._others():
            _errors_by_path(other)
        self._queued_creates: dict[str, QueuedRequest] = {}
        """Creates on their way through ccxt's rate limiter, by client order id."""

    # The Venue protocol's attributes, kept live on the exchange's own.
    @property
    def markets(self) -> dict[str, MarketDict]:
        markets: dict[str, MarketDict] | None = self._ex.markets
        return markets if markets is not None else {}

    @markets.setter
    def markets(self, value: dict[str, MarketDict]) -> None:
        self._ex.markets = value
        for other in self._others():
            other.markets = value

    @property
    def has(self) -> dict[str, Any]:
        has = dict(self._ex.has)
        has["cancelAllOrders"] = True  # emulated when missing
        return has

    @has.setter
    def has(self, value: dict[str, Any]) -> None:
        self._ex.has = value

    @property
    def exchange(self) -> Any:
        return self._ex

    @property
    def reader(self) -> Any:
        """The exchange bookkeeping reads go through (``exchange`` when there is none)."""
        return self._reader

    @property
    def canceller(self) -> Any:
        """The exchange cancels go through (``exchange`` when there is none)."""
        return self._canceller

    def _others(self) -> list[Any]:
        """The reader and the canceller, where they are exchanges of their own."""
        out: list[Any] = []
        for other in (self._reader, self._canceller):
            if other is not self._ex and all(other is not o for o in out):
                out.append(other)
        return out

    # ------------------------------------------------------------------ pass-through

    async def load_markets(self, reload: bool = False) -> dict[str, MarketDict]:
        markets: dict[str, MarketDict] = await self._ex.load_markets(reload)
        for other in self._others():
            other.set_markets_from_exchange(self._ex)
        return markets

    async def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> OrderBookDict:
        with self._retry_after_noted(self._ex):
            book: OrderBookDict = await self._ex.fetch_order_book(symbol, limit, params or {})
        return book

    async def watch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> OrderBookDict:
        book: OrderBookDict = await self._ex.watch_order_book(symbol, limit, params or {})
        return book

    async def fetch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Trade]:
        with self._retry_after_noted(self._reader):
            trades: list[Trade] = await self._reader.fetch_my_trades(
                symbol, since, limit, params or {}
            )
        return trades

    async def watch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Trade]:
        trades: list[Trade] = await self._ex.watch_my_trades(symbol, since, limit, params or {})
        return trades

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> Balance:
        with self._retry_after_noted(self._reader):
            balance: Balance = await self._reader.fetch_balance(params or {})
        return _wallet_totals(balance)

    # ------------------------------------------------------------------ derivatives

    async def fetch_positions(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        with self._retry_after_noted(self._reader):
            positions: list[dict[str, Any]] = await self._reader.fetch_positions(
                symbols, params or {}
            )
        return positions

    async def set_leverage(
        self, leverage: float, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._retry_after_noted(self._ex):
            reply: dict[str, Any] = await self._ex.set_leverage(leverage, symbol, params or {})
        return reply

    async def set_margin_mode(
        self, margin_mode: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._retry_after_noted(self._ex):
            reply: dict[str, Any] = await self._ex.set_margin_mode(
                margin_mode, symbol, params or {}
            )
        return reply

    async def fetch_funding_rate(
        self, symbol: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._retry_after_noted(self._reader):
            rate: dict[str, Any] = await self._reader.fetch_funding_rate(symbol, params or {})
        return rate

    async def fetch_funding_history(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The account's funding payments (Binance: ``GET /fapi/v1/income`` or
        ``/dapi/v1/income``, ``incomeType=FUNDING_FEE``), oldest first."""
        with self._retry_after_noted(self._reader):
            rows: list[dict[str, Any]] = await self._reader.fetch_funding_history(
                symbol, since, limit, params or {}
            )
        return rows

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return str(self._ex.amount_to_precision(symbol, amount))

    def price_to_precision(self, symbol: str, price: float) -> str:
        return str(self._ex.price_to_precision(symbol, price))

    async def close(self) -> None:
        for other in self._others():
            await other.close()
        await self._ex.close()

    # ------------------------------------------------------------------ orders

    async def keep_warm(self, period_s: float) -> None:
        """Keep the connections orders and cancels leave on open, until cancelled.

        aiohttp (under ccxt) closes a connection idle for 15 s, and a backstop waits
        hours between episodes: its first order would then open a new connection, a
        TCP and a TLS handshake (two or three round trips to the venue) before the
        request itself. Every ``period_s`` of a ccxt object's idleness, the server time
        (weight 1) is asked through it, which keeps its connection in the pool. Only
        idle objects are asked: while orders flow, they keep the connection open
        themselves. Errors are the next order's to meet; here they only skip a beat.
        """
        while True:
            await asyncio.sleep(period_s / 4)
            for exchange in self._senders():
                idle_s = getattr(exchange.throttler, "idle_s", lambda: None)()
                if idle_s is None or idle_s < period_s:
                    continue
                with contextlib.suppress(ccxt.BaseError, OSError):
                    await exchange.fetch_time()

    def _senders(self) -> list[Any]:
        """The ccxt objects orders and cancels go through (one when they are the same)."""
        senders = [self._ex]
        if self._canceller is not self._ex:
            senders.append(self._canceller)
        return [e for e in senders if e.has.get("fetchTime")]

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Order:
        client_id = (params or {}).get("clientOrderId")
        queued = QueuedRequest()
        token = QUEUED_REQUEST.set(queued)
        if isinstance(client_id, str):
            self._queued_creates[client_id] = queued
        try:
            with self._retry_after_noted(self._ex):
                order: Order = await self._ex.create_order(
                    symbol, type, side, amount, price, self._outgoing(params)
                )
        except AbortedBeforeSent:
            # Ours, not the venue's: the order manager books the order as never placed.
            raise NeverSent(
                f"{self.id} ABORTED_UNSENT: withdrawn while waiting in the rate limiter"
            ) from None
        finally:
            QUEUED_REQUEST.reset(token)
            if isinstance(client_id, str):
                self._queued_creates.pop(client_id, None)
        return self._incoming(order)

    def withdraw_create(self, client_id: str) -> bool:
        """Stop the create of ``client_id`` if it has not left ccxt's rate limiter yet
        (it then fails with ``ABORTED_UNSENT`` and never reaches the venue). False when
        it may already be on its way: then it has to be cancelled once it is placed."""
        queued = self._queued_creates.get(client_id)
        return queued is not None and queued.withdraw()

    async def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Order:
        with self._retry_after_noted(self._canceller):
            order: Order = await self._canceller.cancel_order(id, symbol, self._outgoing(params))
        return self._incoming(_own_client_id(order))

    async def cancel_all_orders(
        self, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> list[Order]:
        """Cancel every open order (on ``symbol``), natively or one by one.

        This cancels *all* orders on the account, not only the bot's; the order
        manager never calls it (it cancels its own orders by id).
        """
        if self._ex.has.get("cancelAllOrders"):
            with self._retry_after_noted(self._canceller):
                orders: list[Order] = await self._canceller.cancel_all_orders(symbol, params or {})
            return [self._incoming(_own_client_id(o)) for o in orders]
        canceled: list[Order] = []
        for order in await self.fetch_open_orders(symbol, params=params):
            try:
                canceled.append(
                    await self._canceller.cancel_order(
                        order["id"], order.get("symbol"), params or {}
                    )
                )
            except ccxt.OrderNotFound:
                # Filled or cancelled between the listing and our cancel: already gone.
                self._log.debug("cancel_all_already_gone", order_id=order["id"])
        return [self._incoming(_own_client_id(o)) for o in canceled]

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        # On the kill's path (its flat confirmation): the canceller's bucket.
        with self._retry_after_noted(self._canceller):
            orders: list[Order] = await self._canceller.fetch_open_orders(
                symbol, since, limit, params or {}
            )
        return [self._incoming(o) for o in orders]

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Order:
        client_id = (params or {}).get("clientOrderId")
        if client_id is not None and not self._style.by_client_id_lookup:
            return await self._find_by_client_id(str(client_id), symbol, params or {})
        with self._retry_after_noted(self._ex):
            order: Order = await self._ex.fetch_order(id, symbol, self._outgoing(params))
        return self._incoming(order)

    async def watch_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        orders: list[Order] = await self._ex.watch_orders(symbol, since, limit, params or {})
        return [self._incoming(o) for o in orders]

    # ------------------------------------------------------------------ rate limits

    @contextlib.contextmanager
    def _retry_after_noted(self, exchange: Any) -> Iterator[None]:
        """Keep the venue's ``Retry-After`` on a rate-limit error (ccxt drops it), so
        the caller waits at least that long: sooner is what gets an IP banned."""
        try:
            yield
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as e:
            # ccxt stored this reply's headers just before raising, with no await in
            # between, so they are this request's even with other calls in flight.
            note_retry_after(e, getattr(exchange, "last_response_headers", None))
            raise

    # ------------------------------------------------------------------ client ids

    def _outgoing(self, params: dict[str, Any] | None) -> dict[str, Any]:
        out = dict(params or {})
        client_id = out.pop("clientOrderId", None)
        if client_id is not None:
            out[self._style.param] = self._style.decoration + str(client_id)
        return out

    def _incoming(self, order: Order) -> Order:
        decoration = self._style.decoration
        client_id = order.get("clientOrderId")
        if decoration and isinstance(client_id, str) and client_id.startswith(decoration):
            order = dict(order)
            order["clientOrderId"] = client_id[len(decoration) :]
        return order

    async def _find_by_client_id(
        self, client_id: str, symbol: str | None, params: dict[str, Any]
    ) -> Order:
        rest = {k: v for k, v in params.items() if k != "clientOrderId"}
        for method in ("fetch_open_orders", "fetch_closed_orders", "fetch_canceled_orders"):
            capability = "fetch" + "".join(p.title() for p in method.split("_")[1:])
            if not self._ex.has.get(capability):
                continue
            orders = await getattr(self._ex, method)(symbol, None, None, rest)
            for order in orders:
                incoming = self._incoming(order)
                if incoming.get("clientOrderId") == client_id:
                    return incoming
        raise ccxt.OrderNotFound(f"{self.id}: no order with clientOrderId {client_id!r}")


def _own_client_id(order: Order) -> Order:
    """A cancel reply with the cancelled order's own client id.

    Binance spot answers a cancel with the *cancel request's* ``clientOrderId`` (one it
    makes up when none is sent) and the order's own in ``origClientOrderId``; ccxt's
    ``parse_order`` reads the former. Left so, the order manager could not match the
    reply to our order and would confirm every cancel with an extra lookup.
    """
    info = order.get("info")
    own = info.get("origClientOrderId") if isinstance(info, dict) else None
    if isinstance(own, str) and own and own != order.get("clientOrderId"):
        order = dict(order)
        order["clientOrderId"] = own
    return order


# ---------------------------------------------------------------------- Binance futures

_PATH_MARKET_TYPES = (("/fapi/", "linear"), ("/dapi/", "inverse"), ("/api/", "spot"))


def _errors_by_path(exchange: Any) -> None:
    """Let ccxt's Binance pick its per-market error table by URL path on any host.

    ccxt keys Binance's tables (``exceptions["linear"]`` ...) on the real hostnames, so
    an overridden URL falls back to the common table, where ``-2022`` is not
    ``InvalidOrder``. Only exchanges with such tables are touched; real hosts resolve
    as before.
    """
    original = getattr(exchange, "get_exceptions_by_url", None)
    tables = getattr(exchange, "exceptions", None)
    if original is None or not isinstance(tables, dict) or "linear" not in tables:
        return

    def by_url_or_path(url: str | None, exact_or_broad: str) -> dict[str, Any]:
        found: dict[str, Any] = original(url, exact_or_broad)
        if found or not url:
            return found
        for marker, market_type in _PATH_MARKET_TYPES:
            if marker in url:
                table = tables.get(market_type) or {}
                return dict(table.get(exact_or_broad) or {})
        return found

    exchange.get_exceptions_by_url = by_url_or_path


def _wallet_totals(balance: Balance) -> Balance:
    """A Binance futures balance with ``total`` = the wallet (see the module doc)."""
    info = balance.get("info")
    assets = info.get("assets") if isinstance(info, Mapping) else None
    if not isinstance(assets, list):
        return balance
    wallets = {
        str(a["asset"]): float(a["walletBalance"])
        for a in assets
        if isinstance(a, Mapping) and a.get("walletBalance") is not None and "asset" in a
    }
    if not wallets:
        return balance
    out = dict(balance)
    totals = dict(out.get("total") or {})
    for ccy, wallet in wallets.items():
        if ccy in totals or ccy in out:
            totals[ccy] = wallet
            entry = out.get(ccy)
            if isinstance(entry, Mapping):
                out[ccy] = {**entry, "total": wallet}
    out["total"] = totals
    return out
