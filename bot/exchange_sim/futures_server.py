"""A local Binance futures venue: USDⓈ-M (``/fapi``) for real ccxt ``binanceusdm``, or
COIN-M (``/dapi``) for ``binancecoinm``.

The spot emulator's front end (:class:`~bot.exchange_sim.server.BinanceSpotEmulator`:
the same request gate -- faults, bans, request weights, API-key/HMAC checks --, the
same admin API) with the futures REST endpoints, the futures engine
(:mod:`bot.exchange_sim.futures`) and the futures streams
(:mod:`bot.exchange_sim.futures_ws`). Endpoints, as ccxt 4.5.90 calls them:

=====================================  ==================================================
``load_markets``                       ``GET /fapi/v1/exchangeInfo``
``fetch_order_book``                   ``GET /fapi/v1/depth``
``create_order``                       ``POST /fapi/v1/order`` (``reduceOnly``,
                                       ``newClientOrderId``, ``timeInForce=GTX``)
``cancel_order`` / ``fetch_order``     ``DELETE`` / ``GET /fapi/v1/order``
``fetch_open_orders``                  ``GET /fapi/v1/openOrders``
``cancel_all_orders``                  ``DELETE /fapi/v1/allOpenOrders``
``fetch_balance``                      ``GET /fapi/v3/account`` (v2 too)
``fetch_positions``                    ``GET /fapi/v3/positionRisk`` (after
                                       ``GET /fapi/v1/leverageBracket``)
``fetch_my_trades``                    ``GET /fapi/v1/userTrades``
``fetch_funding_rate``                 ``GET /fapi/v1/premiumIndex``
``fetch_funding_history``              ``GET /fapi/v1/income``
``set_leverage`` / ``set_margin_mode`` ``POST /fapi/v1/leverage`` / ``POST /fapi/v1/marginType``
ccxt.pro user data                     ``POST``/``PUT``/``DELETE /fapi/v1/listenKey``, then
                                       ``/fstream/private/ws?listenKey=...``
=====================================  ==================================================

COIN-M (``market=COINM``) serves the same calls under ``/dapi`` as ccxt's
``binancecoinm`` makes them: ``/dapi/v1/account`` and ``/dapi/v1/positionRisk`` (after
``/dapi/v2/leverageBracket``), ``premiumIndex`` always a list, orders with ``cumBase``
and trades with ``baseQty`` (BTC), the streams under ``/dstream/ws/<n>`` and the user
stream at ``/dstream/ws/<listenKey>``. Amounts are contracts of 100 USD; margin, PnL,
fees and funding are in BTC (inverse: :mod:`bot.positions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from bot.exchange_sim import admin, futures_views, views
from bot.exchange_sim.engine import NS_PER_MS, SimOrder, SimTrade, SpotEngine
from bot.exchange_sim.errors import ApiError, bad_param, missing_param, unknown_order
from bot.exchange_sim.futures import (
    DEFAULT_FUNDING_INTERVAL_S,
    DEFAULT_FUNDING_RATE,
    FuturesEngine,
)
from bot.exchange_sim.futures_ws import FSTREAM, FuturesWebsocketHub
from bot.exchange_sim.server import (
    BinanceSpotEmulator,
    Endpoint,
    Handler,
    Json,
    Params,
    _depth_weight,
    _fixed,
    _int_or_none,
    order_side,
)
from bot.positions import funding_times

FAPI = "/fapi"
DEFAULT_BALANCES = {"USDT": Decimal(100_000)}


@dataclass(frozen=True, slots=True)
class FuturesMarket:
    """What differs between Binance's two perpetual venues, to the emulator."""

    name: str
    api: str
    """REST prefix."""
    stream: str
    """Websocket prefix."""
    ccxt_id: str
    ws_key: str
    """ccxt.pro's ``urls.api.ws`` key for it."""
    futures_type: str
    default_balances: Mapping[str, Decimal]
    account_paths: tuple[str, ...]
    position_paths: tuple[str, ...]
    bracket_paths: tuple[str, ...]

    @property
    def inverse(self) -> bool:
        return self.name == "coinm"


USDM = FuturesMarket(
    name="usdm",
    api=FAPI,
    stream=FSTREAM,
    ccxt_id="binanceusdm",
    ws_key="ws.linear",
    futures_type="U_MARGINED",
    default_balances=DEFAULT_BALANCES,
    account_paths=("/v2/account", "/v3/account"),
    position_paths=("/v2/positionRisk", "/v3/positionRisk"),
    bracket_paths=("/v1/leverageBracket",),
)
COINM = FuturesMarket(
    name="coinm",
    api="/dapi",
    stream="/dstream",
    ccxt_id="binancecoinm",
    ws_key="ws.inverse",
    futures_type="COIN_MARGINED",
    default_balances={"BTC": Decimal(10)},
    account_paths=("/v1/account",),
    position_paths=("/v1/positionRisk",),
    bracket_paths=("/v1/leverageBracket", "/v2/leverageBracket"),
)
FUTURES_MARKETS = {m.name: m for m in (USDM, COINM)}


def _bool(params: Params, name: str) -> bool:
    raw = (params.get(name) or "false").lower()
    if raw not in ("true", "false"):
        raise bad_param(name)
    return raw == "true"


class BinanceFuturesEmulator(BinanceSpotEmulator):
    """A local Binance futures venue; ``async with`` starts and stops it.

    ``market``: :data:`USDM` (default) or :data:`COINM`. ``exchange_info``: that
    venue's symbol entries (the fixture's ``"usdm"`` or ``"coinm"``). ``balances``: the
    futures wallet (default 100,000 USDT, or 10 BTC on COIN-M). ``funding_rate`` is paid
    every ``funding_interval_s`` of the venue's clock (Binance: 8 h).
    """

    _hub_class = FuturesWebsocketHub
    ccxt_id = "binanceusdm"
    ccxt_options: Mapping[str, Any] = {}
    engine: FuturesEngine
    ws: FuturesWebsocketHub

    def __init__(
        self,
        *,
        funding_rate: Decimal | str = DEFAULT_FUNDING_RATE,
        funding_interval_s: float = DEFAULT_FUNDING_INTERVAL_S,
        market: FuturesMarket = USDM,
        **kwargs: Any,
    ) -> None:
        self._funding = (Decimal(funding_rate), funding_interval_s)
        self.market = market
        self.ccxt_id = market.ccxt_id
        if kwargs.get("balances") is None:
            kwargs["balances"] = market.default_balances
        super().__init__(**kwargs)

    def _make_engine(self, balances: Mapping[str, Decimal | str | int] | None) -> SpotEngine:
        rate, interval_s = self._funding
        return FuturesEngine(
            self._symbols,
            self._clock,
            balances,
            funding_rate=rate,
            funding_interval_s=interval_s,
        )

    def _add_websocket_routes(self, app: web.Application) -> None:
        stream = self.market.stream
        for area in ("/public/ws", "/market/ws"):
            app.router.add_get(stream + area, self.ws.market_handler)
            app.router.add_get(stream + area + "/{tail}", self.ws.market_handler)
        app.router.add_get(stream + "/ws", self.ws.market_handler)
        # COIN-M: market streams at /dstream/ws/<n>, the user stream at /dstream/ws/<key>.
        app.router.add_get(stream + "/ws/{tail}", self.ws.classic_handler)
        app.router.add_get(stream + "/private/ws", self.ws.private_handler)

    def url_overrides(self, *, websockets: bool = False) -> dict[str, str]:
        """``make_exchange(url_overrides=...)`` for ccxt's ``binanceusdm`` (or
        ``binancecoinm``) in sandbox mode.

        Every REST URL of the sandbox table points here (the spot ones answer 404:
        this venue lists futures only). ``websockets=True`` adds ccxt.pro's: the
        linear streams at ``/fstream/ws`` (ccxt rewrites it to ``/fstream/public/ws``,
        ``/fstream/market/ws`` and ``/fstream/private/ws`` itself), the inverse ones at
        ``/dstream/ws`` (used as is).
        """
        overrides = super().url_overrides(websockets=websockets)
        if websockets:
            overrides[self.market.ws_key] = self.ws_base_url + self.market.stream + "/ws"
        return overrides

    def next_funding_ms(self) -> int:
        now_ns = self._clock.now_ns()
        interval_s = self.engine.funding_interval_s
        times = funding_times(now_ns, now_ns + round(interval_s * 1e9), interval_s)
        return times[0] // NS_PER_MS if times else now_ns // NS_PER_MS

    # ----- admin ------------------------------------------------------------------------
    async def _admin_state(self, _request: web.Request) -> web.Response:
        state = admin.state_json(
            self.engine,
            self.requests,
            self.ws.stats(),
            now_ms=self.now_ms(),
            stalled=self.ws.stalled,
        )
        engine = self.engine
        state["balances"] = {
            asset: {
                "wallet": views.num(wallet),
                "available": views.num(engine.available(asset)),
            }
            for asset, wallet in sorted(engine.wallets.items())
        }
        state["trades"] = [self._trade_json(t) for t in engine.trades]
        state["positions"] = [futures_views.position_risk_json(engine, s) for s in engine.positions]
        state["income"] = [futures_views.income_json(i) for i in engine.income]
        state["liquidations"] = len(engine.liquidations)
        return web.json_response(state)

    # ----- routes -----------------------------------------------------------------------
    def _routes(self) -> list[tuple[Endpoint, Handler]]:
        api, market = self.market.api, self.market

        def ep(method: str, path: str, signed: bool, weight: int) -> Endpoint:
            return Endpoint(method, api + path, signed, _fixed(weight))

        def keyed(method: str) -> Endpoint:
            return Endpoint(method, api + "/v1/listenKey", False, _fixed(1), keyed=True)

        versioned: list[tuple[Endpoint, Handler]] = [
            *((ep("GET", path, True, 5), self._account) for path in market.account_paths),
            *((ep("GET", path, True, 5), self._position_risk) for path in market.position_paths),
            *((ep("GET", path, True, 1), self._leverage_bracket) for path in market.bracket_paths),
        ]
        return [
            *versioned,
            (ep("GET", "/v1/ping", False, 1), self._ping),
            (ep("GET", "/v1/time", False, 1), self._time),
            (ep("GET", "/v1/exchangeInfo", False, 1), self._exchange_info),
            (Endpoint("GET", api + "/v1/depth", False, _depth_weight), self._depth),
            (ep("GET", "/v1/premiumIndex", False, 1), self._premium_index),
            (ep("POST", "/v1/order", True, 1), self._new_order),
            (ep("GET", "/v1/order", True, 1), self._query_order),
            (ep("DELETE", "/v1/order", True, 1), self._cancel_order),
            (ep("GET", "/v1/openOrders", True, 1), self._open_orders),
            (ep("DELETE", "/v1/allOpenOrders", True, 1), self._cancel_all),
            (ep("GET", "/v1/userTrades", True, 5), self._my_trades),
            (ep("POST", "/v1/leverage", True, 1), self._leverage),
            (ep("POST", "/v1/marginType", True, 1), self._margin_type),
            (ep("GET", "/v1/income", True, 30), self._income),
            (keyed("POST"), self._listen_key),
            (keyed("PUT"), self._keep_alive),
            (keyed("DELETE"), self._close_listen_key),
        ]

    # ----- public -----------------------------------------------------------------------
    async def _exchange_info(self, params: Params) -> Json:
        info = views.exchange_info_json(self._symbols, self.now_ms(), self.weights.limit)
        info["futuresType"] = self.market.futures_type
        info["assets"] = [
            {"asset": a, "marginAvailable": True, "autoAssetExchange": "0"}
            for a in sorted(self.engine.wallets)
        ]
        return info

    async def _depth(self, params: Params) -> Json:
        body = await super()._depth(params)
        now = self.now_ms()
        return {"lastUpdateId": body["lastUpdateId"], "E": now, "T": now, **body}

    async def _premium_index(self, params: Params) -> Json:
        wanted = params.get("symbol")
        symbols = [self.engine.symbol_rules(wanted).symbol] if wanted else list(self.engine.rules)
        rows = [
            futures_views.premium_index_json(self.engine, s, self.next_funding_ms())
            for s in symbols
        ]
        # COIN-M answers a list even for one symbol.
        return rows[0] if wanted and not self.market.inverse else rows

    # ----- trading ----------------------------------------------------------------------
    async def _new_order(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        side = order_side(params)
        order_type = params.get("type", "")
        if order_type != "LIMIT":
            # The bot places limit orders only; market and stop orders are not emulated.
            raise (
                missing_param("type")
                if not order_type
                else ApiError(400, -1116, "Invalid orderType.")
            )
        tif = params.get("timeInForce", "")
        if not tif:
            raise missing_param("timeInForce")
        if tif not in ("GTC", "IOC", "FOK", "GTX"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
        if (params.get("positionSide") or "BOTH") != "BOTH":
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        reduce_only = _bool(params, "reduceOnly")
        order, _fills = self._place(params, symbol, side, order_type, tif, reduce_only=reduce_only)
        return self._order_json(order, with_time=False)

    async def _cancel_order(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        order = self.engine.cancel(
            symbol, _int_or_none(params, "orderId"), params.get("origClientOrderId")
        )
        return self._order_json(order, with_time=False)

    async def _cancel_all(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        try:
            self.engine.cancel_all(symbol)
        except ApiError as e:
            if e.code != unknown_order().code:
                raise
        # Binance's futures cancel-all answers success even with nothing to cancel.
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ----- account ----------------------------------------------------------------------
    async def _account(self, _params: Params) -> Json:
        return futures_views.account_json(self.engine)

    async def _position_risk(self, params: Params) -> Json:
        wanted = params.get("symbol")
        symbols = [self.engine.symbol_rules(wanted).symbol] if wanted else list(self.engine.rules)
        return [futures_views.position_risk_json(self.engine, s) for s in symbols]

    async def _leverage_bracket(self, params: Params) -> Json:
        wanted = params.get("symbol")
        symbols = [self.engine.symbol_rules(wanted).symbol] if wanted else list(self.engine.rules)
        rows = [futures_views.leverage_bracket_json(self.engine, s) for s in symbols]
        return rows[0] if wanted and not self.market.inverse else rows

    async def _leverage(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        leverage = _int_or_none(params, "leverage")
        if leverage is None:
            raise missing_param("leverage")
        self.engine.set_leverage(symbol, leverage)
        return {"leverage": leverage, "maxNotionalValue": "1000000000", "symbol": symbol}

    async def _margin_type(self, params: Params) -> Json:
        symbol = self.engine.symbol_rules(params.get("symbol")).symbol
        margin_type = params.get("marginType") or ""
        if not margin_type:
            raise missing_param("marginType")
        self.engine.set_margin_type(symbol, margin_type)
        return {"code": 200, "msg": "success"}

    async def _income(self, params: Params) -> Json:
        symbol = params.get("symbol")
        income_type = params.get("incomeType")
        start = _int_or_none(params, "startTime")
        end = _int_or_none(params, "endTime")
        limit = min(_int_or_none(params, "limit") or 100, 1000)
        rows = [
            r
            for r in self.engine.income
            if (not symbol or r.symbol == symbol)
            and (not income_type or r.income_type == income_type)
            and (start is None or r.time_ms >= start)
            and (end is None or r.time_ms <= end)
        ]
        return [futures_views.income_json(r) for r in rows[:limit]]

    # ----- COIN-M's fields -----------------------------------------------------------------
    def _order_json(self, order: SimOrder, *, with_time: bool = True) -> Json:
        out = futures_views.order_json(order, with_time=with_time)
        if self.market.inverse:
            futures_views.coinm_order(out, self.engine, order)
        return out

    def _trade_json(self, trade: SimTrade) -> Json:
        out = futures_views.user_trade_json(trade)
        if self.market.inverse:
            futures_views.coinm_trade(out, self.engine, trade)
        return out

    # ----- user data stream -------------------------------------------------------------
    async def _listen_key(self, _params: Params) -> Json:
        return {"listenKey": self.ws.listen_key()}

    async def _keep_alive(self, _params: Params) -> Json:
        if not self.ws.keep_alive():
            raise ApiError(400, -1125, "This listenKey does not exist.")
        return {"listenKey": self.ws.listen_key()}

    async def _close_listen_key(self, _params: Params) -> Json:
        self.ws.close_listen_key()
        return {}
