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

Errors are ccxt's own, unchanged (the manager maps them). Everything else is passed
through as is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt

from bot.exchanges import note_retry_after
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
    closes it.
    """

    def __init__(self, exchange: Any, *, log: Logger, style: ClientIdStyle | None = None) -> None:
        self._ex = exchange
        self._log = log
        self.id: str = str(exchange.id)
        self._style = style if style is not None else CLIENT_ID_STYLES.get(self.id, ClientIdStyle())

    # The Venue protocol's attributes, kept live on the exchange's own.
    @property
    def markets(self) -> dict[str, MarketDict]:
        markets: dict[str, MarketDict] | None = self._ex.markets
        return markets if markets is not None else {}

    @markets.setter
    def markets(self, value: dict[str, MarketDict]) -> None:
        self._ex.markets = value

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

    # ------------------------------------------------------------------ pass-through

    async def load_markets(self, reload: bool = False) -> dict[str, MarketDict]:
        markets: dict[str, MarketDict] = await self._ex.load_markets(reload)
        return markets

    async def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> OrderBookDict:
        with self._retry_after_noted():
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
        with self._retry_after_noted():
            trades: list[Trade] = await self._ex.fetch_my_trades(symbol, since, limit, params or {})
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
        with self._retry_after_noted():
            balance: Balance = await self._ex.fetch_balance(params or {})
        return balance

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return str(self._ex.amount_to_precision(symbol, amount))

    def price_to_precision(self, symbol: str, price: float) -> str:
        return str(self._ex.price_to_precision(symbol, price))

    async def close(self) -> None:
        await self._ex.close()

    # ------------------------------------------------------------------ orders

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Order:
        with self._retry_after_noted():
            order: Order = await self._ex.create_order(
                symbol, type, side, amount, price, self._outgoing(params)
            )
        return self._incoming(order)

    async def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Order:
        with self._retry_after_noted():
            order: Order = await self._ex.cancel_order(id, symbol, self._outgoing(params))
        return self._incoming(order)

    async def cancel_all_orders(
        self, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> list[Order]:
        """Cancel every open order (on ``symbol``), natively or one by one.

        This cancels *all* orders on the account, not only the bot's; the order
        manager never calls it (it cancels its own orders by id).
        """
        if self._ex.has.get("cancelAllOrders"):
            with self._retry_after_noted():
                orders: list[Order] = await self._ex.cancel_all_orders(symbol, params or {})
            return [self._incoming(o) for o in orders]
        canceled: list[Order] = []
        for order in await self.fetch_open_orders(symbol, params=params):
            try:
                canceled.append(
                    await self._ex.cancel_order(order["id"], order.get("symbol"), params or {})
                )
            except ccxt.OrderNotFound:
                # Filled or cancelled between the listing and our cancel: already gone.
                self._log.debug("cancel_all_already_gone", order_id=order["id"])
        return [self._incoming(o) for o in canceled]

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[Order]:
        with self._retry_after_noted():
            orders: list[Order] = await self._ex.fetch_open_orders(
                symbol, since, limit, params or {}
            )
        return [self._incoming(o) for o in orders]

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> Order:
        client_id = (params or {}).get("clientOrderId")
        if client_id is not None and not self._style.by_client_id_lookup:
            return await self._find_by_client_id(str(client_id), symbol, params or {})
        with self._retry_after_noted():
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
    def _retry_after_noted(self) -> Iterator[None]:
        """Keep the venue's ``Retry-After`` on a rate-limit error (ccxt drops it), so
        the caller waits at least that long: sooner is what gets an IP banned."""
        try:
            yield
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as e:
            # ccxt stored this reply's headers just before raising, with no await in
            # between, so they are this request's even with other calls in flight.
            note_retry_after(e, getattr(self._ex, "last_response_headers", None))
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
