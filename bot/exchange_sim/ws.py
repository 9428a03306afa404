"""The websocket front end: Binance's market streams and WebSocket API, for ccxt.pro.

The engine calls :meth:`WebsocketHub.publish` synchronously for every venue event;
the hub renders it to Binance's JSON once (:mod:`bot.exchange_sim.ws_wire`) and
queues it on every interested connection. Each connection has a bounded queue and
its own sender task, so a slow client never blocks the engine or the other
clients: when its queue overflows it is disconnected (as Binance does) and counted.

Two kinds of connection:

* ``market`` (``/stream/ws[/...]``, also ``/ws[/...]``): raw streams, managed with
  ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``; ``<symbol>@depth[@100ms]``
  carries diff-depth messages, ``<symbol>@trade`` the public tape.
* ``api`` (``/ws-api/v3``): the WebSocket API (:mod:`bot.exchange_sim.ws_api`),
  where a signed ``userDataStream.subscribe.signature`` starts the user data stream
  (``executionReport``, ``outboundAccountPosition``).

Diffs are sent as soon as the engine publishes them, not batched per 100 ms: the
update ids are what a client checks, and they are the same either way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import WSMsgType, web

from bot.exchange_sim import ws_api, ws_wire
from bot.exchange_sim.events import (
    BalancesChanged,
    DepthDiff,
    OrderChanged,
    PublicTrade,
    VenueEvent,
)
from bot.exchange_sim.faults import Faults

Json = Any
Sleep = Callable[[float], Awaitable[None]]
Kind = Literal["market", "api"]

# Binance does not publish its per-connection buffer; this holds a burst of a
# thousand events, far more than the bot's book and order traffic produces.
DEFAULT_QUEUE_SIZE = 1024
DEPTH_STREAMS = ("depth", "depth@100ms", "depth@1000ms")


@dataclass(frozen=True)
class WsStats:
    """Connection counts, for ``GET /_sim/state`` and test assertions."""

    market: int
    """Open market-stream connections."""
    api: int
    """Open WebSocket API connections."""
    user_streams: int
    """WebSocket API connections with an active user data subscription."""
    subscriptions: int
    """Market streams subscribed, over all connections."""
    queued: int
    """Messages waiting in send queues (held by a stall, or not yet written)."""
    opened: int
    """Connections accepted since start."""
    slow_disconnects: int
    """Connections closed because their send queue overflowed."""
    dropped: int
    """Connections closed by the ``ws_drop`` fault."""

    def as_json(self) -> dict[str, int]:
        return {
            "market": self.market,
            "api": self.api,
            "user_streams": self.user_streams,
            "subscriptions": self.subscriptions,
            "queued": self.queued,
            "opened": self.opened,
            "slow_disconnects": self.slow_disconnects,
            "dropped": self.dropped,
        }


class Connection:
    """One client socket: what it listens to, and its outgoing queue."""

    def __init__(
        self, hub: WebsocketHub, kind: Kind, request: web.Request, ws: web.WebSocketResponse
    ) -> None:
        self.kind = kind
        self.streams: set[str] = set()
        self.user_subscription: int | None = None
        self.next_subscription_id = 0
        self.closed = False
        self._hub = hub
        self._request = request
        self._ws = ws
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self._sender = asyncio.get_running_loop().create_task(self._pump())

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, message: Json) -> None:
        """Queue ``message`` (a dict, or JSON text); never blocks."""
        if self.closed:
            return
        if len(self._queue) >= self._hub.queue_size:
            self._hub.evict_slow(self)
            return
        self._queue.append(message if isinstance(message, str) else json.dumps(message))
        self._wake.set()

    def stop(self) -> None:
        """Send nothing more (the socket is closing or closed)."""
        self.closed = True
        self._queue.clear()
        self._sender.cancel()

    def abort(self) -> None:
        """Cut the TCP connection without a close frame (a venue drop, not a goodbye)."""
        self.stop()
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def _pump(self) -> None:
        try:
            while True:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                await self._hub.flowing()
                if self._queue:
                    await self._ws.send_str(self._queue.popleft())
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send; the reader side notices and cleans up.
            self.closed = True


class WebsocketHub:
    """Every open websocket, the engine's event fan-out, and the ws faults."""

    def __init__(
        self,
        *,
        symbols: Iterable[str],
        credentials: Mapping[str, str],
        now_ms: Callable[[], int],
        faults: Faults,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.symbols = frozenset(symbols)
        self._stream_symbols = frozenset(ws_wire.stream_symbol(s) for s in self.symbols)
        self.credentials = credentials
        self.now_ms = now_ms
        self.queue_size = queue_size
        self._faults = faults
        self._sleep = sleep
        self._connections: list[Connection] = []
        self._held_diffs: dict[str, str] = {}
        self._cancel_ids: dict[int, str] = {}
        self._execution_ids = itertools.count(1)
        self._cancel_fallback_ids = itertools.count(1)
        self._opened = 0
        self._slow_disconnects = 0
        self._dropped = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stall_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # ----- aiohttp handlers -----------------------------------------------------------
    async def market_handler(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, "market")

    async def api_handler(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, "api")

    async def _serve(
        self,
        request: web.Request,
        kind: Kind,
        on_open: Callable[[Connection], None] | None = None,
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Connection(self, kind, request, ws)
        self._connections.append(conn)
        self._opened += 1
        if on_open is not None:
            on_open(conn)
        if kind == "market":
            # Raw stream endpoint: /ws/<stream> subscribes to <stream> (ccxt sends
            # a stream index there instead and subscribes with SUBSCRIBE).
            tail = request.match_info.get("tail", "")
            if self._valid_stream(tail):
                conn.streams.add(tail)
        self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT or conn.closed:
                    continue
                if kind == "market":
                    self._market_request(conn, msg.data)
                else:
                    self._api_request(conn, msg.data)
                self._notify()
        finally:
            conn.stop()
            if conn in self._connections:
                self._connections.remove(conn)
            self._notify()
        return ws

    def _api_request(self, conn: Connection, text: str) -> None:
        ws_api.handle(self, conn, text)

    # ----- market stream requests -----------------------------------------------------
    def _market_request(self, conn: Connection, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            conn.send({"error": {"code": 3, "msg": "Invalid JSON: expected value"}, "id": None})
            return
        if not isinstance(request, dict):
            conn.send({"error": {"code": 2, "msg": "Invalid request: expected an object"}})
            return
        rid = request.get("id")
        method = request.get("method")
        params = request.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(
                isinstance(p, str) and self._valid_stream(p) for p in params
            ):
                conn.send(
                    {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": rid}
                )
                return
            if method == "SUBSCRIBE":
                conn.streams.update(params)
            else:
                conn.streams.difference_update(params)
            # Queued before any event published after this point: a client that
            # fetches its snapshot on this reply misses nothing.
            conn.send({"result": None, "id": rid})
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send({"result": sorted(conn.streams), "id": rid})
        else:
            conn.send(
                {
                    "error": {
                        "code": 2,
                        "msg": f"Invalid request: unknown variant `{method}`, expected one of"
                        " `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`,"
                        " `GET_PROPERTY`",
                    },
                    "id": rid,
                }
            )

    def _valid_stream(self, name: str) -> bool:
        symbol, _, channel = name.partition("@")
        return symbol in self._stream_symbols and (channel == "trade" or channel in DEPTH_STREAMS)

    # ----- engine events --------------------------------------------------------------
    def publish(self, event: VenueEvent) -> None:
        """Render ``event`` and queue it for every interested connection (never blocks)."""
        if isinstance(event, DepthDiff):
            self._publish_depth(event)
        elif isinstance(event, PublicTrade):
            stream = f"{ws_wire.stream_symbol(event.symbol)}@trade"
            text = json.dumps(self._trade_json(event))
            for conn in self._subscribers(lambda c: stream in c.streams):
                conn.send(text)
        elif isinstance(event, OrderChanged):
            cancel_id = self._cancel_ids.pop(event.order.order_id, None)
            report = ws_wire.execution_report(
                event,
                execution_id=next(self._execution_ids),
                cancel_client_id=cancel_id or f"emucancelws{next(self._cancel_fallback_ids):011d}",
            )
            self._publish_user(report)
        elif isinstance(event, BalancesChanged):
            self._publish_user(ws_wire.account_position(event))

    def _trade_json(self, event: PublicTrade) -> dict[str, Any]:
        return ws_wire.trade(event)

    def _depth_json(self, event: DepthDiff) -> dict[str, Any]:
        return ws_wire.depth_update(event)

    @contextmanager
    def cancel_ids(self, ids: Mapping[int, str]) -> Any:
        """Within the block, a CANCELED report of order ``i`` carries cancel id ``ids[i]``.

        The REST front end knows the cancel request's client id, the engine's event
        does not; the report must show the same id as the REST reply.
        """
        self._cancel_ids.update(ids)
        try:
            yield
        finally:
            for order_id in ids:
                self._cancel_ids.pop(order_id, None)

    def _publish_depth(self, event: DepthDiff) -> None:
        symbol = event.symbol
        text = json.dumps(self._depth_json(event))
        held = self._held_diffs.pop(symbol, None)
        if held is not None:
            out = [text, held]  # the swap started by the previous diff completes
        else:
            fault = self._faults.take_depth_fault(symbol)
            if fault == "gap":
                out = []
            elif fault == "swap":
                self._held_diffs[symbol] = text
                out = []
            else:
                out = [text]
        prefix = ws_wire.stream_symbol(symbol) + "@"
        streams = {prefix + s for s in DEPTH_STREAMS}
        for conn in self._subscribers(lambda c: not streams.isdisjoint(c.streams)):
            for message in out:
                conn.send(message)

    def _publish_user(self, payload: dict[str, Any]) -> None:
        rendered: dict[int, str] = {}
        for conn in self._subscribers(lambda c: c.user_subscription is not None):
            sub = conn.user_subscription
            assert sub is not None
            if sub not in rendered:
                rendered[sub] = json.dumps({"subscriptionId": sub, "event": payload})
            conn.send(rendered[sub])

    def _subscribers(self, wanted: Callable[[Connection], bool]) -> list[Connection]:
        # A copy: an overflowing connection is evicted from the list mid-loop.
        return [c for c in self._connections if not c.closed and wanted(c)]

    # ----- faults and lifecycle -------------------------------------------------------
    def evict_slow(self, conn: Connection) -> None:
        self._slow_disconnects += 1
        self._disconnect(conn)

    def drop_all(self) -> int:
        victims = [c for c in self._connections if not c.closed]
        self._dropped += len(victims)
        for conn in victims:
            self._disconnect(conn)
        return len(victims)

    def stall(self, seconds: float) -> None:
        self.resume()
        self._flowing.clear()
        self._stall_task = asyncio.get_running_loop().create_task(self._stall_for(seconds))

    def resume(self) -> None:
        if self._stall_task is not None:
            self._stall_task.cancel()
            self._stall_task = None
        self._flowing.set()

    async def _stall_for(self, seconds: float) -> None:
        await self._sleep(seconds)
        self._stall_task = None
        self._flowing.set()

    async def flowing(self) -> None:
        """Return when sending is allowed (at once unless a stall is on)."""
        await self._flowing.wait()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    async def close(self) -> None:
        self.resume()
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()
        await asyncio.sleep(0)  # let the aborted senders finish cancelling

    def _disconnect(self, conn: Connection) -> None:
        conn.abort()
        if conn in self._connections:
            self._connections.remove(conn)
        self._notify()

    # ----- observation ----------------------------------------------------------------
    def stats(self) -> WsStats:
        live = [c for c in self._connections if not c.closed]
        return WsStats(
            market=sum(c.kind == "market" for c in live),
            api=sum(c.kind == "api" for c in live),
            user_streams=sum(c.user_subscription is not None for c in live),
            subscriptions=sum(len(c.streams) for c in live),
            queued=sum(c.queued for c in live),
            opened=self._opened,
            slow_disconnects=self._slow_disconnects,
            dropped=self._dropped,
        )

    async def wait_until(self, condition: Callable[[WsStats], bool]) -> WsStats:
        """Return the stats once ``condition`` holds (wrap in ``asyncio.wait_for``)."""
        while True:
            stats = self.stats()
            if condition(stats):
                return stats
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
