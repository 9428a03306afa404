"""Order management: client ids, the order state machine, quote diffing, reconciliation.

Modules, one concept each: :mod:`~bot.orders.state` (the transition table),
:mod:`~bot.orders.updates` (ccxt dicts -> events), :mod:`~bot.orders.tracker` (applies
them, publishes notices), :mod:`~bot.orders.quotes` (diffing), :mod:`~bot.orders.reconcile`,
:mod:`~bot.orders.calls` (rate limit, retries), :mod:`~bot.orders.ids`,
:mod:`~bot.orders.events` (notices out), :mod:`~bot.orders.config` and
:mod:`~bot.orders.manager` (the commands, and the venue actions behind them).
"""

from bot.orders.calls import Throttle
from bot.orders.config import OrderManagerConfig
from bot.orders.events import (
    Observer,
    OrderActionFailed,
    OrderFilled,
    OrderNotice,
    OrderStateChanged,
)
from bot.orders.ids import ClientIdFactory
from bot.orders.manager import OrderManager, ReconcileReport, SyncResult
from bot.orders.state import (
    LIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    OrderEvent,
    OrderState,
    TrackedOrder,
)
from bot.orders.tracker import OrderTracker

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "ClientIdFactory",
    "Observer",
    "OrderActionFailed",
    "OrderEvent",
    "OrderFilled",
    "OrderManager",
    "OrderManagerConfig",
    "OrderNotice",
    "OrderState",
    "OrderStateChanged",
    "OrderTracker",
    "ReconcileReport",
    "SyncResult",
    "Throttle",
    "TrackedOrder",
]
