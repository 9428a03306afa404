"""Binance's WebSocket API (``/ws-api/v3``), the part ccxt.pro uses for spot user data.

Requests are ``{"id", "method", "params"}``; replies ``{"id", "status": 200,
"result"}`` or ``{"id", "status", "error": {"code", "msg"}}`` with the REST API's
codes and messages (ccxt's ``handle_ws_error`` maps them exactly as REST errors,
e.g. -1022 to ``AuthenticationError``). Served methods: ``ping``, ``time``,
``userDataStream.subscribe.signature``, ``userDataStream.unsubscribe`` and
``session.subscriptions``; anything else is refused with -1020.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bot.exchange_sim import auth
from bot.exchange_sim.errors import ApiError, bad_param

if TYPE_CHECKING:
    from bot.exchange_sim.ws import Connection, WebsocketHub

Params = Mapping[str, Any]
Method = Callable[["WebsocketHub", "Connection", Params], Any]


def handle(hub: WebsocketHub, conn: Connection, text: str) -> None:
    """Answer one request frame on ``conn``."""
    try:
        request = json.loads(text)
    except ValueError:
        conn.send(_error(None, ApiError(400, -1135, "Invalid JSON Request")))
        return
    if not isinstance(request, dict):
        conn.send(_error(None, ApiError(400, -1135, "Invalid JSON Request")))
        return
    rid = request.get("id")
    method = str(request.get("method") or "")
    # Binance accepts an explicit version prefix ("v3/ping").
    method = method.removeprefix("v3/")
    params = request.get("params") or {}
    handler = METHODS.get(method)
    try:
        if handler is None:
            raise ApiError(400, -1020, "This operation is not supported.")
        if not isinstance(params, dict):
            raise bad_param("params")
        result = handler(hub, conn, params)
    except ApiError as e:
        conn.send(_error(rid, e))
        return
    conn.send({"id": rid, "status": 200, "result": result})


def _error(rid: Any, e: ApiError) -> dict[str, Any]:
    return {"id": rid, "status": e.status, "error": e.body()}


def _ping(_hub: WebsocketHub, _conn: Connection, _params: Params) -> Any:
    return {}


def _time(hub: WebsocketHub, _conn: Connection, _params: Params) -> Any:
    return {"serverTime": hub.now_ms()}


def _subscribe_signature(hub: WebsocketHub, conn: Connection, params: Params) -> Any:
    auth.verify_ws_params(params, hub.credentials, hub.now_ms())
    # One account per emulator, and Binance allows one subscription per account per
    # connection: a repeated subscribe keeps the active one.
    if conn.user_subscription is None:
        conn.user_subscription = conn.next_subscription_id
        conn.next_subscription_id += 1
    return {"subscriptionId": conn.user_subscription}


def _unsubscribe(_hub: WebsocketHub, conn: Connection, params: Params) -> Any:
    wanted = params.get("subscriptionId")
    if wanted is not None and wanted != conn.user_subscription:
        raise ApiError(400, -1102, "Invalid subscriptionId.")
    conn.user_subscription = None
    return {}


def _subscriptions(_hub: WebsocketHub, conn: Connection, _params: Params) -> Any:
    if conn.user_subscription is None:
        return []
    return [{"subscriptionId": conn.user_subscription}]


METHODS: dict[str, Method] = {
    "ping": _ping,
    "time": _time,
    "userDataStream.subscribe.signature": _subscribe_signature,
    "userDataStream.unsubscribe": _unsubscribe,
    "session.subscriptions": _subscriptions,
}
