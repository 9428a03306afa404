"""The HTTP front end: Binance Spot's REST API (``/api/v3``) served by aiohttp,
plus the websockets (:mod:`bot.exchange_sim.ws`) and the admin API
(:mod:`bot.exchange_sim.admin`) on the same port.

Every REST request goes through the same gate, in the order the real venue applies
it: injected fault -> request weight (429) -> API key / signature / timestamp
(signed endpoints) -> the endpoint -> an injected reply delay. Replies are Binance's
JSON shapes and error bodies, so real ccxt raises the same exceptions it would
against testnet.binance.vision.

Paths: REST ``/api/v3/...``; market streams ``/stream/ws[/...]`` (``/ws[/...]`` too);
WebSocket API ``/ws-api/v3``; admin ``/_sim/faults`` and ``/_sim/state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.clock import Clock
from bot.exchange_sim import admin, auth, views
from bot.exchange_sim.bans import BanPolicy
from bot.exchange_sim.engine import NS_PER_MS, Side, SimOrder, SimTrade, SpotEngine
from bot.exchange_sim.errors import ApiError, bad_param, missing_param, unknown_order
from bot.exchange_sim.faults import Faults
from bot.exchange_sim.symbols import SymbolRules
from bot.exchange_sim.weights import RequestWeights
from bot.exchange_sim.ws import DEFAULT_QUEUE_SIZE, Sleep, WebsocketHub

Json = Any
Params = Mapping[str, str]
Handler = Callable[[Params], Awaitable[Json]]

API = "/api/v3"
STREAM_PATH = "/stream/ws"
WS_API_PATH = "/ws-api/v3"
# Binance's default per-IP limit on the live venue.
DEFAULT_WEIGHT_LIMIT = 6000


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    signed: bool
    weight: Callable[[Params], int]
    keyed: bool = False
    """An API key but no signature (Binance's ``USER_STREAM`` endpoints)."""

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


def _fixed(weight: int) -> Callable[[Params], int]:
    return lambda _params: weight


def _depth_weight(params: Params) -> int:
    limit = int(params.get("limit") or 100)
    for upto, weight in ((100, 5), (500, 25), (1000, 50)):
        if limit <= upto:
            return weight
    return 250


def _decimal(params: Params, name: str) -> Decimal:
    raw = params.get(name)
    if not raw:
        raise missing_param(name)
    try:
        value = Decimal(raw)
    except InvalidOperation as e:
        raise bad_param(name) from e
    if not value.is_finite():
        raise bad_param(name)
    return value


def order_side(params: Params) -> Side:
    side = params.get("side", "")
    if side not in ("BUY", "SELL"):
        raise missing_param("side") if not side else ApiError(400, -1117, "Invalid side.")
    return "BUY" if side == "BUY" else "SELL"


def _int_or_none(params: Params, name: str) -> int | None:
    raw = params.get(name)
    if not raw:
        return None
    if not raw.lstrip("-").isdigit():
        raise bad_param(name)
    return int(raw)


class _SkewedClock:
    """The venue's clock: the injected one plus the ``clock_skew`` fault."""

    def __init__(self, clock: Clock, faults: Faults) -> None:
        self._clock = clock
        self._faults = faults

    def now_ns(self) -> int:
        return self._clock.now_ns() + self._faults.clock_skew_ms * NS_PER_MS


def _symbol_entries(exchange_info: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Any]:
    if isinstance(exchange_info, Mapping):
        return list(exchange_info["symbols"])
    return list(exchange_info)


class BinanceSpotEmulator:
    """A local Binance Spot venue (REST + websockets); ``async with`` starts and stops it.

    ``exchange_info`` is either a full ``exchangeInfo`` reply or a list of symbol
    entries (e.g. the fixture's ``"spot"`` entry). Tests drive market state through
    :attr:`engine`, misbehaviour through :attr:`faults`, and watch the websockets
    through :attr:`ws`. ``sleep`` times injected REST delays and websocket stalls;
    ``ws_queue_size`` bounds each websocket's send queue (overflow disconnects).
    """

    def __init__(
        self,
        *,
        exchange_info: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        api_key: str,
        secret: str,
        clock: Clock,
        balances: Mapping[str, Decimal | str | int] | None = None,
        weight_limit: int = DEFAULT_WEIGHT_LIMIT,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_queue_size: int = DEFAULT_QUEUE_SIZE,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._symbols = _symbol_entries(exchange_info)
        self.faults = Faults()
        # Everything reads the venue's clock, so a clock_skew fault moves auth
        # checks, server time, order/trade times and event times together.
        self._clock = _SkewedClock(clock, self.faults)
        self._sleep = sleep
        self.credentials: dict[str, str] = {api_key: secret}
        self.engine = self._make_engine(balances)
        self.weights = RequestWeights(self._clock, weight_limit)
        # Ignoring a 429's Retry-After ends in a 418 ban, as on Binance.
        self.bans = BanPolicy(self._clock)
        self.ws = self._hub_class(
            symbols=self.engine.rules,
            credentials=self.credentials,
            now_ms=self.now_ms,
            faults=self.faults,
            queue_size=ws_queue_size,
            sleep=sleep,
        )
        self.faults.attach_websockets(self.ws)
        self._unsubscribe_engine = self.engine.subscribe(self.ws.publish)
        # (method, path, HTTP status) of every request, for assertions and debugging.
        self.requests: list[tuple[str, str, int]] = []
        self.on_request: Callable[[str, web.Request], None] | None = None
        """Called with ``"METHOD /path"`` and the request as each REST request arrives,
        before it is handled (benchmarks stamp arrivals, tests tell connections apart)."""
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._cancel_ids = itertools.count(1)
        self._client_ids = itertools.count(1)

    _hub_class: type[WebsocketHub] = WebsocketHub
    ccxt_id = "binance"
    """The ccxt exchange a bot uses against this venue."""
    ccxt_options: Mapping[str, Any] = {"fetchMarkets": {"types": ["spot"]}}
    """ccxt options it needs here (spot only: ccxt's default also lists futures)."""

    def _make_engine(self, balances: Mapping[str, Decimal | str | int] | None) -> SpotEngine:
        return SpotEngine([SymbolRules.from_entry(s) for s in self._symbols], self._clock, balances)

    def _add_websocket_routes(self, app: web.Application) -> None:
        for base in (STREAM_PATH, "/ws"):
            app.router.add_get(base, self.ws.market_handler)
            app.router.add_get(base + "/{tail}", self.ws.market_handler)
        app.router.add_get(WS_API_PATH, self.ws.api_handler)

    # ----- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        for endpoint, handler in self._routes():
            app.router.add_route(endpoint.method, endpoint.path, self._gate(endpoint, handler))
        self._add_websocket_routes(app)
        app.router.add_post("/_sim/faults", self._admin_faults)
        app.router.add_get("/_sim/state", self._admin_state)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._bound_port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        # Open websockets would hold the server's shutdown until they time out.
        await self.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceSpotEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("emulator not started")
        return f"http://{self._host}:{self._bound_port}"

    @property
    def ws_base_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def url_overrides(self, *, websockets: bool = False) -> dict[str, str]:
        """``make_exchange(url_overrides=...)`` for ccxt's binance in sandbox mode.

        Every REST URL of ccxt's sandbox table points here, the futures ones too:
        ccxt's default ``fetchMarkets`` also asks the futures testnet, and CI must
        never reach the internet. The emulator lists no futures markets.

        ``websockets=True`` adds ccxt.pro's websocket URLs (``ws.*``), for
        ``make_exchange(pro=True)`` only: plain ccxt has no ``urls.api.ws``, so
        ``make_exchange`` would refuse those keys. Market streams are served at
        ``/stream/ws`` because ccxt.pro decides "spot" from ``/stream`` in the URL
        (``is_spot_url``); the futures stream URLs point here too and are not served.
        """
        base = self.base_url
        overrides = {
            "public": f"{base}/api/v3",
            "private": f"{base}/api/v3",
            "v1": f"{base}/api/v1",
        }
        for family in ("fapi", "dapi"):
            for kind in ("Public", "Private"):
                versions = ("", "V2", "V3") if family == "fapi" else ("", "V2")
                for version in versions:
                    if kind == "Public" and family == "dapi" and version:
                        continue  # ccxt's sandbox table has no dapiPublicV2
                    number = int(version[1:]) if version else 1
                    overrides[f"{family}{kind}{version}"] = f"{base}/{family}/v{number}"
        if websockets:
            ws = self.ws_base_url
            overrides.update(
                {
                    "ws.spot": ws + STREAM_PATH,
                    "ws.margin": ws + STREAM_PATH,
                    "ws.linear": ws + "/fstream/ws",
                    "ws.inverse": ws + "/dstream/ws",
                    "ws.ws-api.spot": ws + WS_API_PATH,
                    "ws.ws-api.linear": ws + "/ws-fapi/v1",
                    "ws.ws-api.inverse": ws + "/ws-dapi/v1",
                }
            )
        return overrides

    def now_ms(self) -> int:
        return self._clock.now_ns() // NS_PER_MS

    # ----- request gate ---------------------------------------------------------
    def _gate(
        self, endpoint: Endpoint, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            if self.on_request is not None:
                self.on_request(endpoint.key, request)
            raw_body = await request.text()
            params: dict[str, str] = dict(request.query)
            # Binance reads parameters from both the query string and the form body.
            params.update(parse_qsl(raw_body, keep_blank_values=True))
            headers: dict[str, str] = {}
            delay_s = self.faults.take_delay(endpoint.key)
            try:
                self.bans.check()
                fault = self.faults.take(endpoint.key)
                if fault is not None:
                    raise fault
                used = self.weights.charge(endpoint.weight(params))
                headers["X-MBX-USED-WEIGHT-1M"] = str(used)
                if endpoint.keyed:
                    auth.verify_key(request.headers.get("X-MBX-APIKEY"), self.credentials)
                if endpoint.signed:
                    auth.verify(
                        api_key=request.headers.get("X-MBX-APIKEY"),
                        credentials=self.credentials,
                        raw_query=request.rel_url.raw_query_string,
                        raw_body=raw_body,
                        params=params,
                        now_ms=self.now_ms(),
                    )
                body = await handler(params)
                response = web.json_response(body, headers=headers)
            except ApiError as e:
                if e.status == 429 and e.headers.get("Retry-After", "").isdigit():
                    self.bans.told_to_back_off(int(e.headers["Retry-After"]))
                err_headers = {**headers, **e.headers}
                if e.text is not None:
                    response = web.Response(text=e.text, status=e.status, headers=err_headers)
                else:
                    response = web.json_response(e.body(), status=e.status, headers=err_headers)
            self.requests.append((endpoint.method, endpoint.path, response.status))
            if delay_s > 0:
                # The request has executed; only its reply is late.
                await self._sleep(delay_s)
            return response

        return serve

    # ----- admin API --------------------------------------------------------------
    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            spec = json.loads(await request.text())
        except ValueError:
            return web.json_response({"ok": False, "error": "body: not JSON"}, status=400)
        try:
            admin.apply_fault(
                self.faults,
                spec,
                endpoints=[e.key for e, _ in self._routes()],
                symbols=self.engine.rules,
            )
        except (admin.BadFault, ValueError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        if spec.get("kind") == "clear":
            self.bans.reset()  # a rehearsal starts over: no back-off owed, no ban
        return web.json_response({"ok": True})

    async def _admin_state(self, _request: web.Request) -> web.Response:
        return web.json_response(
            admin.state_json(
                self.engine,
                self.requests,
                self.ws.stats(),
                now_ms=self.now_ms(),
                stalled=self.ws.stalled,
            )
        )

    def _routes(self) -> list[tuple[Endpoint, Handler]]:
        def ep(method: str, path: str, signed: bool, weight: Callable[[Params], int]) -> Endpoint:
            return Endpoint(method, API + path, signed, weight)

        def open_orders_weight(p: Params) -> int:
            return 6 if p.get("symbol") else 80

        def my_trades_weight(p: Params) -> int:
            return 5 if p.get("orderId") else 20

        return [
            (ep("GET", "/ping", False, _fixed(1)), self._ping),
            (ep("GET", "/time", False, _fixed(1)), self._time),
            (ep("GET", "/exchangeInfo", False, _fixed(20)), self._exchange_info),
            (ep("GET", "/depth", False, _depth_weight), self._depth),
            (ep("POST", "/order", True, _fixed(1)), self._new_order),
            (ep("GET", "/order", True, _fixed(4)), self._query_order),
            (ep("DELETE", "/order", True, _fixed(1)), self._cancel_order),
            (ep("GET", "/openOrders", True, open_orders_weight), self._open_orders),
            (ep("DELETE", "/openOrders", True, _fixed(1)), self._cancel_all),
            (ep("GET", "/account", True, _fixed(20)), self._account),
            (ep("GET", "/myTrades", True, my_trades_weight), self._my_trades),
            (Endpoint("GET", "/fapi/v1/exchangeInfo", False, _fixed(1)), self._no_markets),
            (Endpoint("GET", "/dapi/v1/exchangeInfo", False, _fixed(1)), self._no_markets),
        ]

    # ----- public endpoints -----------------------------------------------------
    async def _ping(self, _params: Params) -> Json:
        return {}

    async def _time(self, _params: Params) -> Json:
        return {"serverTime": self.now_ms()}

    async def _exchange_info(self, params: Params) -> Json:
        symbols = self._symbols
        if params.get("symbol"):
            self.engine.symbol_rules(params["symbol"])
            symbols = [s for s in symbols if s["symbol"] == params["symbol"]]
        return views.exchange_info_json(symbols, self.now_ms(), self.weights.limit)

    async def _no_markets(self, _params: Params) -> Json:
        return views.exchange_info_json([], self.now_ms(), self.weights.limit)

    async def _depth(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        limit = _int_or_none(params, "limit") or 100
        if not 1 <= limit <= 5000:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'.")
        last_id, bids, asks = self.engine.depth(symbol, limit)
        return {
            "lastUpdateId": last_id,
            "bids": [[views.num(p), views.num(q)] for p, q in bids],
            "asks": [[views.num(p), views.num(q)] for p, q in asks],
        }

    # ----- trading endpoints ----------------------------------------------------
    async def _new_order(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        side = order_side(params)
        order_type = params.get("type", "")
        if order_type not in ("LIMIT", "LIMIT_MAKER"):
            # This slice of the emulator trades limit orders only (the bot places no others).
            raise (
                missing_param("type")
                if not order_type
                else ApiError(400, -1116, "Invalid orderType.")
            )
        if order_type == "LIMIT":
            tif = params.get("timeInForce", "")
            if not tif:
                raise missing_param("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise ApiError(400, -1115, "Invalid timeInForce.")
        else:
            tif = "GTC"  # Binance reports LIMIT_MAKER orders as GTC.
        order, fills = self._place(params, symbol, side, order_type, tif)
        return views.new_order_json(order, fills, params.get("newOrderRespType") or "FULL")

    async def _query_order(self, params: Params) -> Json:
        order = self.engine.find(
            self.engine.symbol_rules(params.get("symbol")).symbol,
            _int_or_none(params, "orderId"),
            params.get("origClientOrderId"),
        )
        return self._order_json(order)

    async def _cancel_order(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        order_id = _int_or_none(params, "orderId")
        client_id = params.get("origClientOrderId")
        cancel_id = self._cancel_client_id(params)
        cancel_ids: dict[int, str] = {}
        # The executionReport must carry this cancel's id, which the engine's event
        # does not know: tell the websocket front end first. An unknown order fails
        # in engine.cancel below with the right error.
        with contextlib.suppress(ApiError):
            target = self.engine.find(symbol, order_id, client_id, unknown=unknown_order)
            cancel_ids[target.order_id] = cancel_id
        with self.ws.cancel_ids(cancel_ids):
            order = self.engine.cancel(symbol, order_id, client_id)
        return views.cancel_json(order, cancel_id, self.now_ms())

    async def _cancel_all(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        cancel_ids = {
            o.order_id: self._cancel_client_id({}) for o in self.engine.open_orders(symbol)
        }
        with self.ws.cancel_ids(cancel_ids):
            cancelled = self.engine.cancel_all(symbol)
        return [views.cancel_json(o, cancel_ids[o.order_id], self.now_ms()) for o in cancelled]

    async def _open_orders(self, params: Params) -> Json:
        symbol = params.get("symbol")
        if symbol:
            self.engine.symbol_rules(symbol)
        return [self._order_json(o) for o in self.engine.open_orders(symbol or None)]

    async def _account(self, params: Params) -> Json:
        rules = next(iter(self.engine.rules.values()), None)
        maker = rules.maker_fee if rules else Decimal(0)
        taker = rules.taker_fee if rules else Decimal(0)
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        return views.account_json(self.engine.balances, self.now_ms(), maker, taker, omit_zero)

    async def _my_trades(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        order_id = _int_or_none(params, "orderId")
        start = _int_or_none(params, "startTime")
        end = _int_or_none(params, "endTime")
        from_id = _int_or_none(params, "fromId")
        limit = min(_int_or_none(params, "limit") or 500, 1000)
        trades = [
            t
            for t in self.engine.trades
            if t.symbol == symbol
            and (order_id is None or t.order_id == order_id)
            and (start is None or t.time_ms >= start)
            and (end is None or t.time_ms <= end)
            and (from_id is None or t.trade_id >= from_id)
        ]
        # Binance returns the most recent `limit` trades unless paging from an id/time.
        trades = trades[:limit] if (from_id is not None or start is not None) else trades[-limit:]
        return [self._trade_json(t) for t in trades]

    # An order and a trade as queries answer them: the futures emulator overrides these
    # (its own fields) and inherits the handlers that list them.
    def _order_json(self, order: SimOrder) -> Json:
        return views.query_order_json(order)

    def _trade_json(self, trade: SimTrade) -> Json:
        return views.trade_json(trade)

    def _place(
        self,
        params: Params,
        symbol: str,
        side: Side,
        order_type: str,
        tif: str,
        *,
        reduce_only: bool = False,
    ) -> tuple[SimOrder, list[SimTrade]]:
        """A new order, its request checked: an injected rejection comes first."""
        rejection = self.faults.take_order_reject()
        if rejection is not None:
            raise rejection
        return self.engine.place(
            symbol=symbol,
            side=side,
            order_type=order_type,
            time_in_force=tif,
            price=_decimal(params, "price"),
            qty=_decimal(params, "quantity"),
            client_order_id=params.get("newClientOrderId") or f"emu{next(self._client_ids):019d}",
            reduce_only=reduce_only,
        )

    def _cancel_client_id(self, params: Params) -> str:
        return params.get("newClientOrderId") or f"emucancel{next(self._cancel_ids):013d}"
