"""Binance Spot REST JSON shapes for the engine's objects.

Field names and order follow Binance's API docs (numbers as 8-decimal strings,
times in ms); ccxt's ``parse_order``/``parse_trade``/``parse_balance`` read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bot.exchange_sim.engine import Balance, SimOrder, SimTrade

Json = dict[str, Any]


def num(x: Decimal) -> str:
    return f"{x:.8f}"


def _order_core(order: SimOrder) -> Json:
    return {
        "price": num(order.price),
        "origQty": num(order.orig_qty),
        "executedQty": num(order.executed_qty),
        "origQuoteOrderQty": num(Decimal(0)),
        "cummulativeQuoteQty": num(order.cumm_quote),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
    }


def fill_json(trade: SimTrade) -> Json:
    return {
        "price": num(trade.price),
        "qty": num(trade.qty),
        "commission": num(trade.commission),
        "commissionAsset": trade.commission_asset,
        "tradeId": trade.trade_id,
    }


def new_order_json(order: SimOrder, fills: list[SimTrade], resp_type: str) -> Json:
    """POST /api/v3/order reply for ``newOrderRespType`` ACK, RESULT or FULL."""
    ack: Json = {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": order.time_ms,
    }
    if resp_type == "ACK":
        return ack
    result = {
        **ack,
        **_order_core(order),
        "workingTime": order.time_ms,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }
    if resp_type == "RESULT":
        return result
    return {**result, "fills": [fill_json(t) for t in fills]}


def query_order_json(order: SimOrder) -> Json:
    """GET /api/v3/order and /api/v3/openOrders entries."""
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        **_order_core(order),
        "stopPrice": num(Decimal(0)),
        "icebergQty": num(Decimal(0)),
        "time": order.time_ms,
        "updateTime": order.update_ms,
        "isWorking": True,
        "workingTime": order.time_ms,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def cancel_json(order: SimOrder, cancel_client_id: str, now_ms: int) -> Json:
    """DELETE /api/v3/order reply: ``clientOrderId`` is the *cancel's* id, as on Binance."""
    return {
        "symbol": order.symbol,
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": now_ms,
        **_order_core(order),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def trade_json(trade: SimTrade) -> Json:
    """GET /api/v3/myTrades entry."""
    return {
        "symbol": trade.symbol,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": num(trade.price),
        "qty": num(trade.qty),
        "quoteQty": num(trade.quote_qty),
        "commission": num(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time_ms,
        "isBuyer": trade.is_buyer,
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def account_json(
    balances: Mapping[str, Balance], now_ms: int, maker: Decimal, taker: Decimal, omit_zero: bool
) -> Json:
    """GET /api/v3/account reply."""
    rows = [
        {"asset": asset, "free": num(b.free), "locked": num(b.locked)}
        for asset, b in sorted(balances.items())
        if not (omit_zero and b.free == 0 and b.locked == 0)
    ]
    return {
        # Commissions in basis points, as Binance reports them.
        "makerCommission": int(maker * 10_000),
        "takerCommission": int(taker * 10_000),
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": num(maker),
            "taker": num(taker),
            "buyer": num(Decimal(0)),
            "seller": num(Decimal(0)),
        },
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": rows,
        "permissions": ["SPOT"],
        "uid": 354937868,
    }


def exchange_info_json(symbols: list[Json], now_ms: int, weight_limit: int) -> Json:
    """GET /api/v3/exchangeInfo: our symbols, without the fixture's private keys."""
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ],
        "exchangeFilters": [],
        "symbols": [{k: v for k, v in s.items() if not k.startswith("_")} for s in symbols],
    }
