"""Binance's websocket JSON for the engine's events (:mod:`bot.exchange_sim.events`).

Field names and meanings follow Binance's stream and user-data-stream docs; what
ccxt.pro's ``handle_order_book``/``handle_trade``/``parse_ws_order``/
``parse_ws_trade``/``handle_balance`` read is covered field for field. Numbers are
8-decimal strings and times ms, as on the venue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bot.exchange_sim.events import BalancesChanged, DepthDiff, OrderChanged, PublicTrade
from bot.exchange_sim.views import num

Json = dict[str, Any]
ZERO = num(Decimal(0))


def stream_symbol(symbol: str) -> str:
    """The symbol as stream names spell it (``btcusdt@depth``)."""
    return symbol.lower()


def depth_update(event: DepthDiff) -> Json:
    return {
        "e": "depthUpdate",
        "E": event.time_ms,
        "s": event.symbol,
        "U": event.first_id,
        "u": event.last_id,
        "b": [[num(p), num(q)] for p, q in event.bids],
        "a": [[num(p), num(q)] for p, q in event.asks],
    }


def trade(event: PublicTrade) -> Json:
    return {
        "e": "trade",
        "E": event.time_ms,
        "s": event.symbol,
        "t": event.trade_id,
        "p": num(event.price),
        "q": num(event.qty),
        "T": event.time_ms,
        "m": event.buyer_is_maker,
        "M": True,
    }


def execution_report(event: OrderChanged, *, execution_id: int, cancel_client_id: str) -> Json:
    """One ``executionReport``.

    For a ``CANCELED`` report Binance puts the *cancel request's* client id in ``c``
    and the order's own in ``C``; every other report has ``C`` empty. ccxt reads
    ``C`` first and falls back to ``c`` when it is empty, so it always ends up with
    the order's own client id.
    """
    order, fill = event.order, event.trade
    cancelled = event.execution == "CANCELED"
    resting = order.time_in_force == "GTC"
    report: Json = {
        "e": "executionReport",
        "E": event.time_ms,
        "s": order.symbol,
        "c": cancel_client_id if cancelled else order.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": num(order.orig_qty),
        "p": num(order.price),
        "P": ZERO,
        "F": ZERO,
        "g": -1,
        "C": order.client_order_id if cancelled else "",
        "x": event.execution,
        "X": order.status,
        "r": "NONE",
        "i": order.order_id,
        "l": num(fill.qty) if fill else ZERO,
        "z": num(order.executed_qty),
        "L": num(fill.price) if fill else ZERO,
        "n": num(fill.commission) if fill else "0",
        "N": fill.commission_asset if fill else None,
        "T": fill.time_ms if fill else event.time_ms,
        "t": fill.trade_id if fill else -1,
        "I": execution_id,
        "w": resting and order.is_open,
        "m": fill.is_maker if fill else False,
        "M": fill is not None,
        "O": order.time_ms,
        "Z": num(order.cumm_quote),
        "Y": num(fill.quote_qty) if fill else ZERO,
        "Q": ZERO,
        "V": "EXPIRE_MAKER",
    }
    if resting:
        report["W"] = order.time_ms
    return report


def account_position(event: BalancesChanged) -> Json:
    return {
        "e": "outboundAccountPosition",
        "E": event.time_ms,
        "u": event.time_ms,
        "B": [{"a": a, "f": num(free), "l": num(locked)} for a, free, locked in event.balances],
    }
