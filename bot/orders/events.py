"""What the order manager reports to the rest of the bot (the journal, risk, the display).

Every state change, every new fill and every failed venue action is published to the
subscribed observers as one of these immutable records, stamped with the manager's
injected clock, so a replay produces the same stream as the live run it replays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bot.orders.state import OrderEvent, OrderState, Side


@dataclass(frozen=True, slots=True)
class OrderStateChanged:
    """``previous`` is None when the order enters tracking (SUBMITTED or ADOPTED)."""

    ts_ns: int
    client_id: str
    symbol: str
    exchange_id: str | None
    previous: OrderState | None
    state: OrderState
    event: OrderEvent
    filled: float
    reason: str


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """One venue trade of one of our orders, reported once per trade id."""

    ts_ns: int
    client_id: str
    symbol: str
    side: Side
    trade_id: str
    price: float
    amount: float
    fee_cost: float | None
    fee_currency: str | None
    taker_or_maker: str | None
    venue_ts_ms: int | None


Action = Literal["create", "cancel", "lookup", "reconcile"]


@dataclass(frozen=True, slots=True)
class OrderActionFailed:
    """A venue call failed for good (after any retries). ``error`` is our error class name.

    ``reason`` reads ``UPPER_SNAKE: detail``; risk guards count bursts of these.
    """

    ts_ns: int
    client_id: str | None
    symbol: str
    action: Action
    error: str
    reason: str


OrderNotice = OrderStateChanged | OrderFilled | OrderActionFailed
Observer = Callable[[OrderNotice], None]
