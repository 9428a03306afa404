"""The venue side of each order action: create, cancel, look up, and what each error means.

Each coroutine here runs as the single in-flight action of one order (the manager
guarantees there is never a second) and leaves the order in a state that reflects what
the venue said, or UNKNOWN when it could not find out.

==================  ===================================================================
create              temporary error -> UNKNOWN, then looked up by client id (it may
                    exist!); never re-sent. Rate limited -> re-sent after backing off
                    (the venue did not act on it). Rejected -> REJECTED, reported.
cancel              temporary/rate limited -> retried (a cancel is idempotent), then
                    settled by a lookup. Not found -> looked up to confirm, else gone.
lookup              temporary/rate limited -> retried, then reported (order unchanged).
==================  ===================================================================
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import ccxt

from bot.errors import (
    BackstopError,
    NeverSent,
    OperationalError,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TemporaryError,
)
from bot.orders.calls import VenueCalls
from bot.orders.config import OrderManagerConfig
from bot.orders.state import OrderEvent, OrderState, TrackedOrder
from bot.orders.tracker import OrderTracker
from bot.orders.updates import OrderUpdate
from bot.venues.base import Venue
from strategies.base import REDUCE_TAG


def _cause_is_venue_answer(err: BaseException) -> bool:
    """True if the venue (or ccxt on its behalf) answered, i.e. not a bug on our side."""
    return isinstance(err.__cause__, ccxt.BaseError)


class OrderActions:
    def __init__(
        self,
        venue: Venue,
        *,
        calls: VenueCalls,
        tracker: OrderTracker,
        config: OrderManagerConfig,
    ) -> None:
        self._venue = venue
        self._calls = calls
        self._tracker = tracker
        self._config = config

    async def create(self, order: TrackedOrder) -> None:
        params: dict[str, Any] = {"clientOrderId": order.client_id}
        if order.post_only:
            params["postOnly"] = True
        if order.tag.startswith(REDUCE_TAG):
            # The risk engine holds the market REDUCING: the venue must refuse it too
            # should the position have shrunk meanwhile (-2022), never open the other way.
            params["reduceOnly"] = True
        try:
            reply = await self._calls.call(
                lambda: self._venue.create_order(
                    order.symbol, "limit", order.side, order.amount, order.price, params
                ),
                retries=0,  # never re-send a create whose outcome is unknown
            )
        except NeverSent as err:
            # Withdrawn by us before it left the rate limiter (cancel_all): no failure.
            self._tracker.transition(order, OrderEvent.REJECTED, reason=str(err))
        except RateLimited as err:
            # Refused before it reached the matching engine: it does not exist.
            self._tracker.transition(order, OrderEvent.REJECTED, reason=f"RATE_LIMITED: {err}")
            self._tracker.report_failure(order.client_id, order.symbol, "create", err)
        except (OrderRejected, OrderNotFound) as err:
            self._tracker.transition(order, OrderEvent.REJECTED, reason=f"REJECTED: {err}")
            self._tracker.report_failure(order.client_id, order.symbol, "create", err)
        except OperationalError as err:
            self._tracker.report_failure(order.client_id, order.symbol, "create", err)
            if _cause_is_venue_answer(err):
                self._tracker.transition(order, OrderEvent.REJECTED, reason=f"OPERATIONAL: {err}")
            elif self._tracker.transition(order, OrderEvent.TIMED_OUT, reason=f"ERROR: {err}"):
                await self.resolve_unknown(order)
        except TemporaryError as err:
            self._tracker.report_failure(order.client_id, order.symbol, "create", err)
            if self._tracker.transition(order, OrderEvent.TIMED_OUT, reason=f"TIMED_OUT: {err}"):
                await self.resolve_unknown(order)
        else:
            self._tracker.apply_update(order, OrderUpdate.from_ccxt(reply), source="create")

    async def resolve_unknown(self, order: TrackedOrder) -> None:
        """Look an order up by client id until the venue knows it or repeatedly does not."""
        backoff = self._calls.backoff()
        for _ in range(self._config.unknown_lookups):
            # Wait first: a slow create may still be on its way to the venue.
            await self._calls.sleep(backoff.next_delay())
            if order.state is not OrderState.UNKNOWN:
                return  # a push told us meanwhile
            try:
                update = await self.fetch(order)
            except OrderNotFound:
                continue
            except BackstopError as err:
                self._tracker.report_failure(order.client_id, order.symbol, "lookup", err)
                return  # stays UNKNOWN; a later reconcile looks again
            self._tracker.apply_update(order, update, source="lookup")
            return
        self._tracker.transition(
            order,
            OrderEvent.NOT_FOUND,
            reason=f"NOT_FOUND_AFTER_TIMEOUT: lookups={self._config.unknown_lookups}",
        )

    async def cancel(self, order: TrackedOrder) -> None:
        params: dict[str, Any] = {}
        if order.exchange_id is None:
            params["clientOrderId"] = order.client_id
        try:
            reply = await self._calls.call(
                lambda: self._venue.cancel_order(order.exchange_id or "", order.symbol, params),
                retries=self._config.retries,
                cancel=True,
            )
        except OrderNotFound:
            # Gone already (filled or cancelled); find out which before concluding.
            await self._settle_cancel(order, why="CANCEL_NOT_FOUND", gone_if_unsure=True)
        except OrderRejected as err:
            self._tracker.report_failure(order.client_id, order.symbol, "cancel", err)
            self._tracker.transition(
                order, OrderEvent.CANCEL_REJECTED, reason=f"CANCEL_REJECTED: {err}"
            )
        except TemporaryError as err:
            self._tracker.report_failure(order.client_id, order.symbol, "cancel", err)
            await self._settle_cancel(order, why=f"CANCEL_FAILED: {err}", gone_if_unsure=False)
        except OperationalError as err:
            self._tracker.report_failure(order.client_id, order.symbol, "cancel", err)
            self._tracker.transition(
                order, OrderEvent.CANCEL_REJECTED, reason=f"CANCEL_FAILED: {err}"
            )
        else:
            update = OrderUpdate.from_ccxt(reply)
            if update.status is None:
                # Some venues answer a cancel with a bare id: success means canceled.
                update = replace(update, status="canceled")
            self._tracker.apply_update(order, update, source="cancel")
            if order.state is OrderState.PENDING_CANCEL:
                await self._settle_cancel(order, why="CANCEL_NOT_EFFECTIVE", gone_if_unsure=False)

    async def _settle_cancel(self, order: TrackedOrder, *, why: str, gone_if_unsure: bool) -> None:
        """After an unclear cancel: apply what a lookup says, or decide."""
        if order.is_finished:
            return  # a push settled it meanwhile
        try:
            update = await self.fetch(order)
        except OrderNotFound:
            self._tracker.transition(order, OrderEvent.NOT_FOUND, reason=why)
            return
        except BackstopError as err:
            self._tracker.report_failure(order.client_id, order.symbol, "lookup", err)
            event = OrderEvent.NOT_FOUND if gone_if_unsure else OrderEvent.CANCEL_REJECTED
            self._tracker.transition(order, event, reason=f"{why} (unconfirmed)")
            return
        self._tracker.apply_update(order, update, source="lookup")
        if order.state is OrderState.PENDING_CANCEL:
            # The venue still lists it open: the cancel did not take. Back to where it
            # was, so the next sync can try again.
            self._tracker.transition(order, OrderEvent.CANCEL_REJECTED, reason=why)

    async def lookup(self, order: TrackedOrder, *, once: bool = False) -> None:
        """Find out what became of an idle order (unknown, or missing from a listing).

        An UNKNOWN order gets the patient lookup of :meth:`resolve_unknown` unless
        ``once`` (reconcile, long after the create): then one "not found" settles it.
        """
        if order.state is OrderState.UNKNOWN and not once:
            await self.resolve_unknown(order)
            return
        try:
            update = await self.fetch(order)
        except OrderNotFound:
            self._tracker.transition(order, OrderEvent.NOT_FOUND, reason="NOT_FOUND_ON_LOOKUP")
            return
        except BackstopError as err:
            self._tracker.report_failure(order.client_id, order.symbol, "lookup", err)
            return
        self._tracker.apply_update(order, update, source="lookup")

    async def fetch(self, order: TrackedOrder) -> OrderUpdate:
        params: dict[str, Any] = {}
        if order.exchange_id is None:
            params["clientOrderId"] = order.client_id
        raw = await self._calls.call(
            lambda: self._venue.fetch_order(order.exchange_id or "", order.symbol, params),
            retries=self._config.retries,
        )
        update = OrderUpdate.from_ccxt(raw)
        if update.client_id is not None and update.client_id != order.client_id:
            raise OrderNotFound(f"lookup of {order.client_id} returned order {update.client_id}")
        return update
