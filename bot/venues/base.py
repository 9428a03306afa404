"""The venue contract: the subset of ccxt's unified API the bot uses, with ccxt's names.

A real ``ccxt.pro`` exchange object satisfies it as it is; the paper venue implements
it returning ccxt's unified structures (orders, trades, balances, order books) with
the same keys, types and conventions. The order manager only ever talks to this, so
paper, testnet and live share one code path.

All dict shapes are ccxt's: see https://docs.ccxt.com/#/README?id=order-structure etc.
Errors are ccxt's exception classes (``ccxt.InsufficientFunds``, ``ccxt.OrderNotFound``,
``ccxt.InvalidOrder``, ``ccxt.NetworkError`` ...), mapped to :mod:`bot.errors` by
:func:`bot.exchanges.map_ccxt_error` at the order manager's boundary.
"""

from __future__ import annotations

from typing import Any, Protocol

Order = dict[str, Any]
Trade = dict[str, Any]
Balance = dict[str, Any]
OrderBookDict = dict[str, Any]
MarketDict = dict[str, Any]


class Venue(Protocol):
    id: str
    markets: dict[str, MarketDict]
    has: dict[str, Any]

    async def load_markets(self, reload: bool = False) -> dict[str, MarketDict]: ...

    async def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] = ...
    ) -> OrderBookDict: ...

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] = ...,
    ) -> Order: ...

    async def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] = ...
    ) -> Order: ...

    async def cancel_all_orders(
        self, symbol: str | None = None, params: dict[str, Any] = ...
    ) -> list[Order]: ...

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] = ...,
    ) -> list[Order]: ...

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] = ...
    ) -> Order: ...

    async def fetch_my_trades(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] = ...,
    ) -> list[Trade]: ...

    async def fetch_balance(self, params: dict[str, Any] = ...) -> Balance: ...

    def amount_to_precision(self, symbol: str, amount: float) -> str: ...

    def price_to_precision(self, symbol: str, price: float) -> str: ...

    async def close(self) -> None: ...
