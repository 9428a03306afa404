"""Turning ccxt order and trade dicts (REST replies, websocket pushes) into state events.

REST replies and websocket updates race, and either may be stale by the time it is
read: a create's REST reply saying ``open, filled=0`` can arrive after the websocket
already reported a partial fill. So an update is never copied onto the order; it is
translated into the events that move the order *forward* from where it is now, and
anything that would move it backwards (less filled, "open" again) is simply not an
event. Applying the same update twice therefore changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.orders.state import OrderEvent, OrderState, TrackedOrder, is_complete

_CANCELED_STATUSES = frozenset({"canceled", "cancelled", "expired"})


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """The fields of a ccxt order structure the manager uses."""

    exchange_id: str | None
    client_id: str | None
    symbol: str | None
    status: str | None
    side: str | None
    price: float | None
    amount: float | None
    filled: float | None
    trades: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_ccxt(cls, order: dict[str, Any]) -> OrderUpdate:
        filled = _float(order.get("filled"))
        amount = _float(order.get("amount"))
        remaining = _float(order.get("remaining"))
        # Some venues omit ``filled`` but give ``remaining``; ccxt usually derives it.
        if filled is None and amount is not None and remaining is not None:
            filled = max(0.0, amount - remaining)
        trades = order.get("trades") or ()
        return cls(
            exchange_id=_str(order.get("id")),
            client_id=_str(order.get("clientOrderId")),
            symbol=_str(order.get("symbol")),
            status=_str(order.get("status")),
            side=_str(order.get("side")),
            price=_float(order.get("price")),
            amount=amount,
            filled=filled,
            trades=tuple(t for t in trades if isinstance(t, dict)),
        )


@dataclass(frozen=True, slots=True)
class TradeUpdate:
    """The fields of a ccxt trade structure (one of our fills) the manager uses."""

    trade_id: str
    order_id: str | None
    client_id: str | None
    symbol: str | None
    side: str | None
    price: float
    amount: float
    fee_cost: float | None
    fee_currency: str | None
    taker_or_maker: str | None
    timestamp_ms: int | None

    @classmethod
    def from_ccxt(cls, trade: dict[str, Any]) -> TradeUpdate | None:
        """None for a trade without an id, amount or price (it cannot be deduplicated or
        booked); the order updates still carry its effect on the order's state."""
        trade_id = _str(trade.get("id"))
        amount = _float(trade.get("amount"))
        price = _float(trade.get("price"))
        if trade_id is None or amount is None or price is None or amount <= 0:
            return None
        raw_fee, raw_info = trade.get("fee"), trade.get("info")
        fee: dict[str, Any] = raw_fee if isinstance(raw_fee, dict) else {}
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        ts = trade.get("timestamp")
        return cls(
            trade_id=trade_id,
            order_id=_str(trade.get("order")),
            # Not in ccxt's unified trade, but the paper venue and some exchanges' raw
            # payloads carry it; it lets a trade find its order before the REST reply.
            client_id=_str(trade.get("clientOrderId")) or _str(info.get("clientOrderId")),
            symbol=_str(trade.get("symbol")),
            side=_str(trade.get("side")),
            price=price,
            amount=amount,
            fee_cost=_float(fee.get("cost")),
            fee_currency=_str(fee.get("currency")),
            taker_or_maker=_str(trade.get("takerOrMaker")),
            timestamp_ms=int(ts) if isinstance(ts, int | float) else None,
        )


def events_for(order: TrackedOrder, update: OrderUpdate) -> list[tuple[OrderEvent, float]]:
    """The events (with the cumulative filled to record) that bring ``order`` up to ``update``.

    Empty when the update says nothing new (a duplicate, or stale). The events are
    meant to be applied in order; each is legal from the state the previous one left.
    """
    if order.is_finished:
        return []
    reported = update.filled if update.filled is not None else 0.0
    filled = max(order.filled, reported)
    grew = filled > order.filled
    status = (update.status or "").lower()
    events: list[tuple[OrderEvent, float]] = []
    if status == "closed" or is_complete(filled, order.amount):
        events.append((OrderEvent.FILL, filled))
        return events
    if grew:
        events.append((OrderEvent.PARTIAL_FILL, filled))
    if (
        status == "open"
        and not grew
        and order.state in (OrderState.PENDING_NEW, OrderState.UNKNOWN)
    ):
        events.append((OrderEvent.ACCEPTED, filled))
    elif status in _CANCELED_STATUSES:
        events.append((OrderEvent.CANCELED, filled))
    elif status == "rejected":
        events.append((OrderEvent.REJECTED, filled))
    return events


def is_news_for_finished(order: TrackedOrder, update: OrderUpdate) -> bool:
    """True if an update for a finished order contradicts or extends what we recorded.

    A duplicate of the final report is not news (logged at debug); anything else is
    a late or contradictory update and is logged as such, then ignored.
    """
    status = (update.status or "").lower()
    same_status = {
        OrderState.FILLED: status == "closed",
        OrderState.CANCELED: status in _CANCELED_STATUSES,
        OrderState.REJECTED: status == "rejected",
    }.get(order.state, False)
    reported = update.filled if update.filled is not None else 0.0
    return not same_status or reported > order.filled
