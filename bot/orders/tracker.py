"""What the manager believes about its orders, and the one place that changes it.

:class:`OrderTracker` owns the tracked orders and their indexes (client id, exchange
id), applies venue reports to them through the state table, deduplicates fills,
adopts orders found on the venue, and publishes every change to the observers. It
does no I/O; :class:`~bot.orders.manager.OrderManager` decides which venue calls to
make and feeds their answers (and the websocket pushes) in here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bot.clock import NS_PER_SECOND, Clock
from bot.logs import Logger
from bot.orders.config import OrderManagerConfig
from bot.orders.events import (
    Action,
    Observer,
    OrderActionFailed,
    OrderFilled,
    OrderNotice,
    OrderStateChanged,
)
from bot.orders.ids import ClientIdFactory
from bot.orders.state import TERMINAL_STATES, OrderEvent, OrderState, TrackedOrder, is_complete
from bot.orders.updates import OrderUpdate, TradeUpdate, events_for, is_news_for_finished


class OrderTracker:
    def __init__(
        self, *, ids: ClientIdFactory, clock: Clock, log: Logger, config: OrderManagerConfig
    ) -> None:
        self._ids = ids
        self._clock = clock
        self._log = log
        self._config = config
        self._orders: dict[str, TrackedOrder] = {}
        # The same orders by symbol, in the same (insertion) order, less the finished ones
        # open_orders has met (no transition leaves a terminal state): a market's orders
        # are read on every reading of it, and scanning every market's, then every order
        # kept for finished_retention_s (hundreds while requoting), was the cost.
        self._by_symbol: dict[str, dict[str, TrackedOrder]] = {}
        self._by_exchange_id: dict[str, str] = {}
        # No finished order can be forgotten before this time (see prune): every sync
        # prunes, and scanning every order of every market each time was the cost.
        self._prune_due_ns: int | None = None
        self._unmatched_trades: OrderedDict[str, list[TradeUpdate]] = OrderedDict()
        self._observers: list[Observer] = []
        # What _emit iterates: rebuilt on (un)subscribe, not copied on every notice.
        self._notify: tuple[Observer, ...] = ()
        self._held: list[OrderNotice] | None = None
        """Notices waiting for :meth:`release` while held (see :meth:`hold`)."""
        # Building a debug line's fields costs an order ~µs even when the level drops it.
        is_enabled_for = getattr(log, "is_enabled_for", None)
        self._debug = not callable(is_enabled_for) or bool(is_enabled_for(logging.DEBUG))

    # ------------------------------------------------------------------ queries

    def get(self, client_id: str) -> TrackedOrder | None:
        return self._orders.get(client_id)

    def all(self) -> list[TrackedOrder]:
        return list(self._orders.values())

    def open_orders(self, symbol: str | None = None) -> list[TrackedOrder]:
        """Unfinished orders (including pending and unknown ones), oldest first."""
        if symbol is None:
            return [o for o in self._orders.values() if o.state not in TERMINAL_STATES]
        orders = self._by_symbol.get(symbol)
        if not orders:
            return []
        out = [o for o in orders.values() if o.state not in TERMINAL_STATES]
        if len(out) < len(orders):
            self._by_symbol[symbol] = {o.client_id: o for o in out}
        return out

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with every notice; returns the unsubscribe function."""
        self._observers.append(observer)
        self._notify = tuple(self._observers)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)
                self._notify = tuple(self._observers)

        return unsubscribe

    # ------------------------------------------------------------------ changes

    def add(self, order: TrackedOrder) -> None:
        """Start tracking an order we are about to send (state PENDING_NEW)."""
        self._track(order)
        self.notify_state(order, None, OrderEvent.SUBMITTED)

    def on_order_update(self, raw: dict[str, Any]) -> None:
        """An order structure from ``watch_orders`` (or anywhere else), in any order."""
        update = OrderUpdate.from_ccxt(raw)
        order = self.find(update)
        if order is None:
            if self._ids.is_ours(update.client_id):
                # From an earlier run, or pruned: reconcile decides what to do with it.
                self._log.info(
                    "untracked_own_order_update", client_id=update.client_id, status=update.status
                )
            return
        self.apply_update(order, update, source="push")

    def on_trade_update(self, raw: dict[str, Any]) -> None:
        """One of our trades from ``watch_my_trades``; each trade id counts once."""
        trade = TradeUpdate.from_ccxt(raw)
        if trade is None:
            return
        order = None
        if trade.client_id is not None:
            order = self._orders.get(trade.client_id)
        if order is None and trade.order_id is not None:
            cid = self._by_exchange_id.get(trade.order_id)
            order = self._orders.get(cid) if cid is not None else None
        if order is None:
            if trade.order_id is not None and self._config.max_unmatched_trades > 0:
                # The push may beat the create's REST reply that tells us the order id.
                self._unmatched_trades.setdefault(trade.order_id, []).append(trade)
                self._unmatched_trades.move_to_end(trade.order_id)
                while len(self._unmatched_trades) > self._config.max_unmatched_trades:
                    self._unmatched_trades.popitem(last=False)
            return
        self.apply_trade(order, trade)

    def find(self, update: OrderUpdate) -> TrackedOrder | None:
        if update.client_id is not None and update.client_id in self._orders:
            return self._orders[update.client_id]
        if update.exchange_id is not None:
            cid = self._by_exchange_id.get(update.exchange_id)
            if cid is not None:
                return self._orders.get(cid)
        return None

    def apply_update(self, order: TrackedOrder, update: OrderUpdate, *, source: str) -> None:
        if update.client_id is not None and update.client_id != order.client_id:
            self._log.warning(
                "order_update_mismatch",
                client_id=order.client_id,
                update_client_id=update.client_id,
                source=source,
            )
            return
        if update.exchange_id is not None and order.exchange_id is None:
            self._learn_exchange_id(order, update.exchange_id)
        for raw_trade in update.trades:
            trade = TradeUpdate.from_ccxt(raw_trade)
            if trade is not None:
                self.apply_trade(order, trade)
        if order.is_finished:
            if not is_news_for_finished(order, update):
                return
            status = (update.status or "").lower()
            if order.gone_inferred and status == "open":
                # We concluded it was gone, the venue says it is live: believe the venue.
                self.adopt(update, reason="REPORTED_LIVE_AFTER_GONE")
                return
            self._log.warning(
                "late_update_ignored",
                client_id=order.client_id,
                state=str(order.state),
                status=update.status,
                filled=update.filled,
                source=source,
            )
            return
        for event, filled in events_for(order, update):
            if not self.transition(order, event, filled=filled, reason=source):
                break

    def apply_trade(self, order: TrackedOrder, trade: TradeUpdate) -> None:
        if trade.trade_id in order.trade_ids:
            return
        order.trade_ids.add(trade.trade_id)
        order.trade_filled += trade.amount
        self._emit(
            OrderFilled(
                ts_ns=self._clock.now_ns(),
                client_id=order.client_id,
                symbol=order.symbol,
                side=order.side,
                trade_id=trade.trade_id,
                price=trade.price,
                amount=trade.amount,
                fee_cost=trade.fee_cost,
                fee_currency=trade.fee_currency,
                taker_or_maker=trade.taker_or_maker,
                venue_ts_ms=trade.timestamp_ms,
            )
        )
        filled = max(order.filled, order.trade_filled)
        if filled <= order.filled:
            return
        if order.is_finished:
            # A trade that happened before the order finished: a fact, not a transition.
            order.filled = filled
            return
        event = OrderEvent.FILL if is_complete(filled, order.amount) else OrderEvent.PARTIAL_FILL
        self.transition(order, event, filled=filled, reason="trade")

    def _learn_exchange_id(self, order: TrackedOrder, exchange_id: str) -> None:
        order.exchange_id = exchange_id
        self._by_exchange_id[exchange_id] = order.client_id
        for trade in self._unmatched_trades.pop(exchange_id, []):
            self.apply_trade(order, trade)

    def adopt(self, update: OrderUpdate, *, reason: str) -> TrackedOrder | None:
        """Track an open order of ours that we did not place in this run (or lost)."""
        side = update.side
        if (
            update.client_id is None
            or update.symbol is None
            or side not in ("buy", "sell")
            or update.price is None
            or update.amount is None
        ):
            self._log.warning("adopt_impossible", client_id=update.client_id, reason=reason)
            return None
        now = self._clock.now_ns()
        filled = update.filled or 0.0
        previous = self._orders.get(update.client_id)
        order = TrackedOrder(
            client_id=update.client_id,
            symbol=update.symbol,
            side="buy" if side == "buy" else "sell",
            price=update.price,
            amount=update.amount,
            state=OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.OPEN,
            exchange_id=update.exchange_id,
            filled=filled,
            reason=reason,
            created_ns=now,
            updated_ns=now,
        )
        if previous is not None:
            order.trade_ids = set(previous.trade_ids)
            order.trade_filled = previous.trade_filled
            order.post_only, order.tag = previous.post_only, previous.tag
        self._track(order)
        if order.exchange_id is not None:
            self._learn_exchange_id(order, order.exchange_id)
        self.notify_state(order, None, OrderEvent.ADOPTED)
        return order

    def transition(
        self,
        order: TrackedOrder,
        event: OrderEvent,
        *,
        filled: float | None = None,
        reason: str = "",
    ) -> bool:
        previous = order.state
        denial = order.apply(event, filled=filled, reason=reason, ts_ns=self._clock.now_ns())
        if denial is not None:
            self._log.warning("order_transition_refused", reason=denial, detail=reason)
            return False
        self.notify_state(order, previous, event)
        return True

    def notify_state(
        self, order: TrackedOrder, previous: OrderState | None, event: OrderEvent
    ) -> None:
        if self._debug:
            self._log.debug(
                "order_state",
                client_id=order.client_id,
                previous=str(previous) if previous else None,
                state=str(order.state),
                trigger=str(event),
                reason=order.reason,
            )
        self._emit(
            OrderStateChanged(
                ts_ns=self._clock.now_ns(),
                client_id=order.client_id,
                symbol=order.symbol,
                exchange_id=order.exchange_id,
                previous=previous,
                state=order.state,
                event=event,
                filled=order.filled,
                reason=order.reason,
            )
        )

    def report_failure(
        self, client_id: str | None, symbol: str, action: Action, err: BaseException
    ) -> None:
        self._log.warning("order_action_failed", client_id=client_id, action=action, error=str(err))
        self._emit(
            OrderActionFailed(
                ts_ns=self._clock.now_ns(),
                client_id=client_id,
                symbol=symbol,
                action=action,
                error=type(err).__name__,
                reason=f"{action.upper()}_FAILED: {err}",
            )
        )

    def _track(self, order: TrackedOrder) -> None:
        cid = order.client_id
        previous = self._orders.get(cid)
        self._orders[cid] = order  # a known id keeps its place, as in the index below
        same = self._by_symbol.setdefault(order.symbol, {})
        if previous is not None and (previous.symbol != order.symbol or cid not in same):
            # Re-adopted (under another symbol, or once finished and dropped from the
            # index): the indexes concerned rebuilt from the main one, so the order stays
            # where the main one has it.
            for symbol in {previous.symbol, order.symbol}:
                self._by_symbol[symbol] = {
                    c: o for c, o in self._orders.items() if o.symbol == symbol
                }
            return
        same[cid] = order

    def hold(self) -> bool:
        """Queue notices, in order, until :meth:`release`; True if this call started
        holding (False: already held, whoever started it releases).

        The order manager holds while it starts a sync's venue calls, and releases once
        those have run up to the venue (:meth:`OrderManager.sync_quotes`): the observers'
        work (journal, episodes, risk) on each order's first notice then follows the
        orders out instead of preceding them. Observers see the same notices in the
        same order, one loop turn later.
        """
        if self._held is not None:
            return False
        self._held = []
        return True

    def release(self) -> None:
        """Publish the notices held since :meth:`hold`, in order, and stop holding."""
        held, self._held = self._held, None
        for notice in held or ():
            self._emit(notice)

    def _emit(self, notice: OrderNotice) -> None:
        if self._held is not None:
            self._held.append(notice)
            return
        for observer in self._notify:
            try:
                observer(notice)
            except Exception:  # one broken observer must not stop order handling
                self._log.exception("order_observer_failed", notice=type(notice).__name__)

    def prune(self, is_busy: Callable[[TrackedOrder], bool]) -> None:
        """Forget finished orders once late updates for them are no longer expected.

        An order is forgotten once ``now > updated_ns + retention`` and it is not busy.
        Nothing is scanned before the earliest moment that can be true of any order: for
        those seen finished, their own moment; for any finishing later (stamped by this
        clock, so at the last scan's time or after), that time plus the retention. (A
        wall clock stepping back delays a forget by the step at most.)
        """
        now = self._clock.now_ns()
        due = self._prune_due_ns
        if due is not None and now <= due:
            return
        retention = int(self._config.finished_retention_s * NS_PER_SECOND)
        horizon = now - retention
        next_due = now + retention
        expired: list[str] = []
        for cid, o in self._orders.items():
            if not o.is_finished:
                continue
            if o.updated_ns < horizon and not is_busy(o):
                expired.append(cid)
            elif o.updated_ns + retention < next_due:
                next_due = o.updated_ns + retention  # busy ones: due already, scanned again
        self._prune_due_ns = next_due
        for cid in expired:
            order = self._orders.pop(cid)
            same = self._by_symbol.get(order.symbol)
            if same is not None:
                same.pop(cid, None)
                if not same:
                    del self._by_symbol[order.symbol]
            if order.exchange_id is not None:
                self._by_exchange_id.pop(order.exchange_id, None)
