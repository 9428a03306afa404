"""The order lifecycle as an explicit transition table, and the tracked order it drives.

Every state change of an order goes through :meth:`TrackedOrder.apply`, which looks the
``(state, event)`` pair up in :data:`TRANSITIONS` *before* touching anything: an
illegal pair is refused with a reason and the order stays exactly as it was. Nothing
else assigns ``state``.

Lifecycle (ccxt statuses in brackets)::

    PENDING_NEW --accepted--> OPEN --partial--> PARTIALLY_FILLED --fill--> FILLED [closed]
        |  \\--timed out--> UNKNOWN --(looked up: any venue outcome, or not found)
        |                         OPEN/PARTIALLY_FILLED --cancel requested--> PENDING_CANCEL
        \\--rejected--> REJECTED [rejected]          PENDING_CANCEL --canceled--> CANCELED
                                                    PENDING_CANCEL --cancel rejected--> (rollback)

A cancel request remembers the state it left (``rollback_state``) so a refused cancel
puts the order back where it was, as nautilus_trader's orders do; a partial fill while
the cancel is in flight moves that rollback point to PARTIALLY_FILLED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Side = Literal["buy", "sell"]

# A filled amount within this fraction of the order amount counts as complete: venues
# report cumulative fills as decimal strings that do not always sum exactly in floats.
FILL_TOLERANCE = 1e-9


class OrderState(StrEnum):
    PENDING_NEW = "pending_new"  # create sent, no answer yet
    OPEN = "open"  # resting on the book, nothing filled
    PARTIALLY_FILLED = "partially_filled"  # resting, some filled
    PENDING_CANCEL = "pending_cancel"  # cancel sent, no answer yet
    FILLED = "filled"  # terminal: completely filled
    CANCELED = "canceled"  # terminal: off the book (by us, the venue, or found gone)
    REJECTED = "rejected"  # terminal: never lived (refused, or never reached the venue)
    UNKNOWN = "unknown"  # create outcome unknown (timeout): it may or may not exist


TERMINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED})
# States in which the order is (or may be) on the venue's book.
LIVE_STATES = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED, OrderState.PENDING_CANCEL})


class OrderEvent(StrEnum):
    ACCEPTED = "accepted"  # venue says open, nothing filled
    PARTIAL_FILL = "partial_fill"  # cumulative filled grew, still below amount
    FILL = "fill"  # completely filled (ccxt status "closed")
    CANCEL_REQUESTED = "cancel_requested"  # we are sending a cancel
    CANCELED = "canceled"  # venue says canceled/expired
    CANCEL_REJECTED = "cancel_rejected"  # our cancel failed; back to rollback_state
    REJECTED = "rejected"  # venue refused the create
    TIMED_OUT = "timed_out"  # create got no definite answer
    NOT_FOUND = "not_found"  # venue has no such order (confirmed by a lookup)
    # Not transitions: how an order enters the table (reported in OrderStateChanged).
    SUBMITTED = "submitted"
    ADOPTED = "adopted"


S, E = OrderState, OrderEvent

TRANSITIONS: dict[tuple[OrderState, OrderEvent], OrderState] = {
    (S.PENDING_NEW, E.ACCEPTED): S.OPEN,
    (S.PENDING_NEW, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PENDING_NEW, E.FILL): S.FILLED,
    (S.PENDING_NEW, E.CANCELED): S.CANCELED,  # e.g. expired before our REST reply
    (S.PENDING_NEW, E.REJECTED): S.REJECTED,
    (S.PENDING_NEW, E.TIMED_OUT): S.UNKNOWN,
    (S.UNKNOWN, E.ACCEPTED): S.OPEN,
    (S.UNKNOWN, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.UNKNOWN, E.FILL): S.FILLED,
    (S.UNKNOWN, E.CANCELED): S.CANCELED,
    (S.UNKNOWN, E.REJECTED): S.REJECTED,
    # Looked up after a timeout and the venue never heard of it: it never lived.
    (S.UNKNOWN, E.NOT_FOUND): S.REJECTED,
    (S.OPEN, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.OPEN, E.FILL): S.FILLED,
    (S.OPEN, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.OPEN, E.CANCELED): S.CANCELED,  # canceled by the venue or by hand
    (S.OPEN, E.NOT_FOUND): S.CANCELED,  # gone while we were not looking
    (S.PARTIALLY_FILLED, E.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, E.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, E.CANCEL_REQUESTED): S.PENDING_CANCEL,
    (S.PARTIALLY_FILLED, E.CANCELED): S.CANCELED,
    (S.PARTIALLY_FILLED, E.NOT_FOUND): S.CANCELED,
    # A fill racing our cancel: still cancelling, but a refusal now returns to PARTIAL.
    (S.PENDING_CANCEL, E.PARTIAL_FILL): S.PENDING_CANCEL,
    (S.PENDING_CANCEL, E.FILL): S.FILLED,
    (S.PENDING_CANCEL, E.CANCELED): S.CANCELED,
    (S.PENDING_CANCEL, E.NOT_FOUND): S.CANCELED,
    # The target is rollback_state (OPEN if none was recorded), see TrackedOrder.apply.
    (S.PENDING_CANCEL, E.CANCEL_REJECTED): S.OPEN,
}

del S, E


def is_complete(filled: float, amount: float) -> bool:
    return filled >= amount * (1.0 - FILL_TOLERANCE)


@dataclass(slots=True)
class TrackedOrder:
    """One of our orders as the manager believes it to be.

    ``price``/``amount`` are what was sent (already rounded to the market's precision).
    ``filled`` only ever grows: it is the largest cumulative fill seen in any order
    update, or the sum of the distinct trades seen, whichever is larger.
    """

    client_id: str
    symbol: str
    side: Side
    price: float
    amount: float
    state: OrderState
    post_only: bool = True
    tag: str = ""
    exchange_id: str | None = None
    filled: float = 0.0
    rollback_state: OrderState | None = None
    reason: str = ""  # why the last transition happened (free text, for humans)
    # The order was declared gone by inference (a lookup found nothing), not by a venue
    # report; a later report that it is live is then believed over our inference.
    gone_inferred: bool = False
    created_ns: int = 0
    updated_ns: int = 0
    trade_ids: set[str] = field(default_factory=set)
    trade_filled: float = 0.0

    @property
    def is_finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def remaining(self) -> float:
        return max(0.0, self.amount - self.filled)

    def can_apply(self, event: OrderEvent, filled: float | None = None) -> str | None:
        """None if ``apply(event, filled)`` would succeed, else the reason it would not."""
        if (self.state, event) not in TRANSITIONS:
            return (
                f"ILLEGAL_TRANSITION: state={self.state} event={event} client_id={self.client_id}"
            )
        if filled is not None and filled < self.filled:
            return (
                f"FILLED_DECREASE: filled={self.filled} update={filled} client_id={self.client_id}"
            )
        return None

    def apply(
        self, event: OrderEvent, *, filled: float | None = None, reason: str = "", ts_ns: int = 0
    ) -> str | None:
        """Move to the next state for ``event``; None on success, else the refusal reason.

        Validates first: a refused event leaves the order untouched.
        """
        denial = self.can_apply(event, filled)
        if denial is not None:
            return denial
        target = TRANSITIONS[(self.state, event)]
        if event is OrderEvent.CANCEL_REQUESTED:
            self.rollback_state = self.state
        elif event is OrderEvent.CANCEL_REJECTED:
            target = self.rollback_state or OrderState.OPEN
            self.rollback_state = None
        elif self.state is OrderState.PENDING_CANCEL and event is OrderEvent.PARTIAL_FILL:
            self.rollback_state = OrderState.PARTIALLY_FILLED
        if target in TERMINAL_STATES:
            self.rollback_state = None
        if filled is not None:
            self.filled = filled
        self.state = target
        self.gone_inferred = event is OrderEvent.NOT_FOUND
        if reason:
            self.reason = reason
        if ts_ns:
            self.updated_ns = ts_ns
        return None
