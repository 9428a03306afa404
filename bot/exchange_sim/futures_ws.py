"""The futures websockets: market streams and the listenKey user data stream.

Binance USDⓈ-M serves market streams under ``/fstream`` (ccxt.pro 4.5 connects to
``/fstream/public/ws/<n>`` for ``depth``/``trade`` and ``/fstream/market/ws/<n>`` for
the rest, and subscribes with ``SUBSCRIBE``), and the user data stream at
``/fstream/private/ws?listenKey=<key>`` (the classic ``/fstream/ws/<key>`` too), with a
key from ``POST /fapi/v1/listenKey``. The user stream is push only:
``ORDER_TRADE_UPDATE`` per order change and ``ACCOUNT_UPDATE`` per wallet/position
change, unwrapped (no ``subscriptionId`` envelope as on the spot WebSocket API).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from bot.exchange_sim import futures_views
from bot.exchange_sim.events import (
    AccountChanged,
    BalancesChanged,
    DepthDiff,
    OrderChanged,
    PublicTrade,
    VenueEvent,
)
from bot.exchange_sim.ws import Connection, WebsocketHub

FSTREAM = "/fstream"


class FuturesWebsocketHub(WebsocketHub):
    """The spot hub with futures payloads and listenKey-authorised user streams."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listen_keys: set[str] = set()
        self._conn_keys: dict[Connection, str] = {}

    # ----- listen keys ----------------------------------------------------------------
    def listen_key(self) -> str:
        """The account's listen key: Binance hands out the active one again if any."""
        if not self.listen_keys:
            self.listen_keys.add(secrets.token_hex(32))
        return next(iter(self.listen_keys))

    def keep_alive(self) -> bool:
        return bool(self.listen_keys)

    def close_listen_key(self) -> None:
        keys, self.listen_keys = self.listen_keys, set()
        for conn, key in list(self._conn_keys.items()):
            if key in keys:
                self._disconnect(conn)

    async def classic_handler(self, request: web.Request) -> web.StreamResponse:
        """``/fstream/ws/<tail>``: a user stream if the tail is a listen key, else market."""
        key = request.match_info.get("tail", "")
        if key in self.listen_keys:
            return await self._user_stream(request, key)
        return await self.market_handler(request)

    async def private_handler(self, request: web.Request) -> web.StreamResponse:
        """``/fstream/private/ws?listenKey=<key>``."""
        key = request.query.get("listenKey", "")
        if key not in self.listen_keys:
            return web.json_response(
                {"code": -1125, "msg": "This listenKey does not exist."}, status=400
            )
        return await self._user_stream(request, key)

    async def _user_stream(self, request: web.Request, key: str) -> web.StreamResponse:

        def opened(conn: Connection) -> None:
            conn.user_subscription = 0
            self._conn_keys[conn] = key

        try:
            return await self._serve(request, "api", opened)
        finally:
            self._conn_keys = {c: k for c, k in self._conn_keys.items() if not c.closed}

    def _api_request(self, conn: Connection, text: str) -> None:
        # The user data stream takes no requests; Binance ignores what a client sends.
        return None

    # ----- rendering --------------------------------------------------------------------
    def publish(self, event: VenueEvent) -> None:
        if isinstance(event, OrderChanged):
            self._publish_user(futures_views.order_trade_update(event))
        elif isinstance(event, AccountChanged):
            self._publish_user(futures_views.account_update(event))
        elif isinstance(event, BalancesChanged):
            return  # spot's outboundAccountPosition: no such thing on futures
        else:
            super().publish(event)

    def _publish_user(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        for conn in self._subscribers(lambda c: c.user_subscription is not None):
            conn.send(text)

    def _trade_json(self, event: PublicTrade) -> dict[str, Any]:
        return futures_views.trade(event)

    def _depth_json(self, event: DepthDiff) -> dict[str, Any]:
        return futures_views.depth_update(event)
