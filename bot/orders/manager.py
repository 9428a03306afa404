"""The order manager: the only part of the bot that creates or cancels orders on a venue.

- **Quotes.** :meth:`OrderManager.sync_quotes` takes the full set of quotes the strategy
  wants on a symbol and sends only the difference. It returns at once: creates and
  cancels run as tasks, spaced by the rate limiter. An order never has two actions in
  flight; one that is busy is left for a later sync. New quotes on a side wait until
  that side's replaced orders are confirmed canceled, so a requote never has the old
  and the new quote resting at the same time (the reserve is not double-committed).
- **State.** Every change goes through the table in :mod:`bot.orders.state`, fed by
  REST replies and websocket pushes in whatever order they arrive
  (:mod:`bot.orders.updates` makes them idempotent).
- **Errors.** Each order's venue calls live in :mod:`bot.orders.actions` (what each ccxt
  error means for a create, a cancel, a lookup); :mod:`bot.orders.calls` rate-limits
  and retries them. A create whose outcome is unknown is looked up, never re-sent.
- **Reconcile.** :meth:`reconcile` compares the venue's open orders with ours; orders
  without our client-id prefix are never touched.
- **Notices.** Observers get an :mod:`bot.orders.events` record for every state change,
  fill and failed action, stamped with the injected clock.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bot.clock import Clock
from bot.errors import BackstopError, WouldTake
from bot.logs import Logger
from bot.orders.actions import OrderActions
from bot.orders.calls import Sleep, Throttle, VenueCalls
from bot.orders.config import OrderManagerConfig
from bot.orders.events import Action, Observer, OrderActionFailed, OrderNotice
from bot.orders.fence import WouldTakeFence
from bot.orders.ids import ClientIdFactory
from bot.orders.quotes import (
    FastQuotes,
    PreparedQuote,
    QuoteDiff,
    QuoteKey,
    diff_quotes,
    order_key,
    prepare_quote,
    warm_market,
)
from bot.orders.reconcile import plan_reconcile
from bot.orders.state import OrderEvent, OrderState, TrackedOrder
from bot.orders.streams import follow
from bot.orders.tracker import OrderTracker
from bot.venues.base import Venue
from strategies.base import Quote

KnownClientIds = Callable[[], Collection[str]]

_CANCELABLE = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED})
_UNREAD: Any = object()
"""``_prepare``'s market not read by the caller."""
_MEMO_SIZE = 4096
"""Entries per rounding memo before it starts afresh (a ladder is a dozen quotes)."""


@dataclass(slots=True)
class SyncResult:
    """What one :meth:`OrderManager.sync_quotes` call decided (the actions run after)."""

    kept: list[str] = field(default_factory=list)  # client ids left as they are
    canceling: list[str] = field(default_factory=list)  # cancels started
    creating: list[str] = field(default_factory=list)  # creates started
    # Creates waiting for this side's cancels to be confirmed first.
    deferred: list[PreparedQuote] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # unwanted, but an action is in flight
    refused: list[tuple[Quote, str]] = field(default_factory=list)  # never sent: reason
    skipped: list[tuple[Quote, str]] = field(default_factory=list)  # not sent this time


@dataclass(slots=True)
class _NextTurn:
    """What a sync leaves to the next loop turns: once its first venue call has taken
    its first step, the other creates it admitted (client ids drawn, in ladder order);
    once those have too, the work that waits for the orders to be out
    (:meth:`OrderManager.after_calls`), then the notices it held (``release``)."""

    symbol: str
    creates: list[tuple[PreparedQuote, str]]
    release: bool
    then: list[Callable[[], None]] = field(default_factory=list)


@dataclass(slots=True)
class _Still:
    """A sync that kept every open order and sent nothing, and all it read: the market
    structure (the rounding memos' key), the desired quotes (immutable: compared by
    identity, as a held ladder comes back) and each open order's matching fields (its
    remaining amount as the amount and filled it is computed from)."""

    market: Any
    desired: tuple[Quote, ...]
    orders: tuple[tuple[TrackedOrder, OrderState, str, float, float, float], ...]
    kept: list[str]

    @classmethod
    def of(
        cls,
        market: Any,
        desired: Sequence[Quote],
        orders: Sequence[TrackedOrder],
        kept: list[str],
    ) -> _Still:
        return cls(
            market,
            tuple(desired),
            tuple((o, o.state, o.side, o.price, o.amount, o.filled) for o in orders),
            list(kept),
        )

    def holds(self, market: Any, desired: Sequence[Quote], orders: Sequence[TrackedOrder]) -> bool:
        """True when a sync of ``desired`` against ``orders`` reads exactly what this one
        read (a diff is a function of these alone once nothing is left unmatched)."""
        if market is not self.market or len(desired) != len(self.desired):
            return False
        if len(orders) != len(self.orders):
            return False
        for a, b in zip(desired, self.desired, strict=True):
            if a is not b:
                return False
        for o, (was, state, side, price, amount, filled) in zip(orders, self.orders, strict=True):
            if (
                o is not was
                or o.state is not state
                or o.filled != filled
                or o.amount != amount
                or o.price != price
                or o.side != side
            ):
                return False
        return True


@dataclass(slots=True)
class ReconcileReport:
    symbol: str
    refreshed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)
    foreign: int = 0  # open orders without our prefix: counted, never touched


class OrderManager:
    def __init__(
        self,
        venue: Venue,
        *,
        clock: Clock,
        rng: random.Random,
        log: Logger,
        config: OrderManagerConfig | None = None,
        throttler: Throttle | None = None,
        sleep: Sleep = asyncio.sleep,
        known_client_ids: KnownClientIds | None = None,
        admit: Callable[[], str | None] | None = None,
    ) -> None:
        self.config = config if config is not None else OrderManagerConfig()
        if not isinstance(self.config, OrderManagerConfig):
            raise TypeError("config must be an OrderManagerConfig")
        self._venue = venue
        self._clock = clock
        self._log = log
        self._known_client_ids = known_client_ids
        # The last gate before a create leaves: the risk engine's order-rate bucket.
        self._admit = admit
        self._ids = ClientIdFactory(self.config.client_id_prefix, clock=clock, rng=rng)
        self._tracker = OrderTracker(ids=self._ids, clock=clock, log=log, config=self.config)
        self._calls = VenueCalls(
            config=self.config, clock=clock, rng=rng, log=log, sleep=sleep, throttler=throttler
        )
        self._venue_actions = OrderActions(
            venue, calls=self._calls, tracker=self._tracker, config=self.config
        )
        # Stops a create still queued in the venue's rate limiter (CcxtVenue): it then
        # fails as never sent. None where creates are never queued (paper).
        self._withdraw: Callable[[str], bool] | None = getattr(venue, "withdraw_create", None)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation: defaultdict[str, int] = defaultdict(int)
        self._cancel_when_idle: set[str] = set()
        self._waiting_creates = 0
        self._next_turn: _NextTurn | None = None
        self._closed = False
        # Memos of the venue's rounding, valid while the market structure is the same
        # object (a reload of the markets makes new ones); see _prepare and _key.
        self._prepared: dict[Quote, tuple[Any, PreparedQuote | str]] = {}
        self._keys: dict[tuple[str, str, float, float], tuple[Any, QuoteKey | None]] = {}
        # Market structures whose constants are derived (see warm_market), by symbol.
        self._warm: dict[str, Any] = {}
        # Per symbol: the market structure and its fast quote preparation (None: the
        # venue's rounding is not known to be bot.venues.rules' own).
        self._fast: dict[str, tuple[Any, FastQuotes | None]] = {}
        # Per symbol: the inputs of the last sync that kept every order and sent nothing.
        self._still: dict[str, _Still] = {}
        hold_ns = round(self.config.would_take_hold_s * 1e9)
        self._fence = WouldTakeFence(hold_ns) if hold_ns > 0 else None
        if self._fence is not None:
            self._tracker.subscribe(self._on_refusal)

    # ------------------------------------------------------------------ queries

    def is_ours(self, client_id: str | None) -> bool:
        return self._ids.is_ours(client_id)

    def get(self, client_id: str) -> TrackedOrder | None:
        return self._tracker.get(client_id)

    def open_orders(self, symbol: str | None = None) -> list[TrackedOrder]:
        """Unfinished orders (including pending and unknown ones), oldest first."""
        if self._next_turn is not None:
            self._take_turn()
        return self._tracker.open_orders(symbol)

    @property
    def waiting_creates(self) -> int:
        """Creates decided but waiting for their side's cancels to be confirmed: each
        will take a token of the order rate when it is sent (see the risk engine's
        ``order_room``)."""
        return self._waiting_creates

    def is_busy(self, order: TrackedOrder) -> bool:
        """True while an action (create, cancel, lookup) is in flight for the order."""
        return order.client_id in self._in_flight

    def touch(self, symbol: str, best_bid: float | None, best_ask: float | None) -> None:
        """Our book's touch on ``symbol`` (before a sync): lifts the would-take walls it
        has reached (:mod:`bot.orders.fence`)."""
        if self._fence is not None:
            self._fence.touch(symbol, best_bid, best_ask)

    def would_take_walls(self) -> dict[tuple[str, str], float]:
        """(symbol, side) -> price of each would-take wall up now."""
        return self._fence.walls() if self._fence is not None else {}

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with every notice; returns the unsubscribe function."""
        return self._tracker.subscribe(observer)

    @property
    def turn_pending(self) -> bool:
        """True while the last sync's next loop turn has not come (see :meth:`after_calls`)."""
        return self._next_turn is not None

    def after_calls(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the last sync's first venue call has taken its first step
        and its other creates are started, before the notices of its calls are
        published; at once if no sync is waiting for its next loop turn. For work that
        is not worth delaying an order for, but must come before any observer hears
        of it (the trader's episode and journal records of the reading that decided)."""
        turn = self._next_turn
        if turn is None:
            fn()
        else:
            turn.then.append(fn)

    # ------------------------------------------------------------------ commands

    def sync_quotes(self, symbol: str, desired: Sequence[Quote]) -> SyncResult:
        """Make our orders on ``symbol`` match ``desired``, with the fewest venue calls.

        Returns what was decided; the calls run as tasks (see :meth:`drain`). Each call
        supersedes the previous one's creates still waiting for cancels. Unwanted orders
        that are busy (create in flight, outcome unknown) are cancelled once they are idle,
        unless a later sync wants them after all.
        """
        if self._next_turn is not None:
            self._take_turn()  # the last sync's loop turn has not come: its work first
        self._generation[symbol] += 1
        generation = self._generation[symbol]
        # Pruning drops finished orders only, and nothing below changes an order before
        # the diff: the open orders are read once.
        open_orders = self._tracker.open_orders(symbol)
        if self._cancel_when_idle:
            self._cancel_when_idle -= {o.client_id for o in open_orders}
        self._tracker.prune(self.is_busy)
        if not desired:
            self._warm_up(symbol)
            if not open_orders:
                # Nothing asked and nothing of ours on the market (most calm readings):
                # the diff of two empty sets is empty, there is nothing to send.
                self._still.pop(symbol, None)
                return SyncResult()
        # Read once for the whole set: nothing below reloads the venue's markets.
        market = (getattr(self._venue, "markets", None) or {}).get(symbol)
        still = self._still.get(symbol)
        if still is not None and still.holds(market, desired, open_orders):
            # Every input of the rounding and the diff is what it was at the last sync,
            # which kept every order and sent nothing: so would this one.
            return SyncResult(kept=list(still.kept))
        result = SyncResult()
        prepared: list[PreparedQuote] = []
        for quote in desired:
            checked = self._prepare(quote, symbol, market)
            if isinstance(checked, str):
                result.refused.append((quote, checked))
                self._log.info("quote_refused", symbol=symbol, quote=str(quote), reason=checked)
            else:
                prepared.append(checked)
        diff = diff_quotes(prepared, open_orders, self._key, self.is_busy)
        result.kept = [o.client_id for o in diff.keep]
        result.busy = [o.client_id for o in diff.busy]
        if desired and not (result.refused or diff.create or diff.cancel or diff.busy):
            self._still[symbol] = _Still.of(market, desired, open_orders, result.kept)
        else:
            self._still.pop(symbol, None)
        # The notices of the calls started below wait until those have run up to the
        # venue (the next loop turn): their observers' work must not delay the orders.
        release = bool(diff.cancel or diff.create) and self._tracker.hold()
        later: list[tuple[PreparedQuote, str]] = []
        try:
            self._send(symbol, generation, diff, result, later)
        finally:
            if release or later:
                turn = _NextTurn(symbol, later, release)
                self._next_turn = turn
                # Scheduled after the calls' tasks: they take their first steps first.
                asyncio.get_running_loop().call_soon(self._on_turn, turn)
        return result

    def _send(
        self,
        symbol: str,
        generation: int,
        diff: QuoteDiff,
        result: SyncResult,
        later: list[tuple[PreparedQuote, str]],
    ) -> None:
        """:meth:`sync_quotes`' venue calls for ``diff``, noted in ``result``. The first
        create admitted starts now; the others admitted are left in ``later`` for the
        next loop turn, so that the first leaves before they are tracked and started."""
        for order in diff.cancel:
            if self.cancel(order.client_id, reason="REQUOTE") is None:
                result.canceling.append(order.client_id)
        withdraw = self._withdraw
        for order in diff.busy:
            if order.state is OrderState.PENDING_CANCEL:
                continue
            if withdraw is not None and order.state is OrderState.PENDING_NEW:
                # Superseded before it left the venue's rate limiter (USD-M lets creates
                # out ~200 ms apart): never send it. Placed at a price the market has
                # left, it could be picked off before its cancel lands, and it would
                # spend the create's and the cancel's weight for nothing.
                withdraw(order.client_id)
            # Unwanted but busy (create in flight, unknown): cancel once it is idle.
            self._cancel_when_idle.add(order.client_id)
            if order.state is OrderState.UNKNOWN and not self.is_busy(order):
                self._start(order, "lookup", partial(self._venue_actions.lookup, order))
        fence = self._fence
        ready: set[int] = set()  # ids of the creates that go now
        for side in ("buy", "sell"):
            creates = [p for p in diff.create if p.quote.side == side]
            if not creates:
                continue
            if fence is not None and fence.up:
                now = self._clock.now_ns()
                walled = [
                    p
                    for p in creates
                    if p.quote.post_only and fence.blocks(symbol, side, p.price, now)
                ]
                if walled:
                    result.skipped += [
                        (p.quote, f"WOULD_TAKE: side={side} price={p.price:g}")
                        for p in walled
                    ]
                    creates = [p for p in creates if p not in walled]
                    if not creates:
                        continue
            blockers = [o for o in diff.cancel + diff.busy if o.side == side]
            waiting = [
                self._in_flight[o.client_id]
                for o in blockers
                if o.state is OrderState.PENDING_CANCEL and o.client_id in self._in_flight
            ]
            if len(waiting) < len(blockers):
                # Something on this side is pending new, unknown, or failed to start
                # cancelling: adding quotes now could exceed what the strategy asked for.
                busy_ids = ",".join(o.client_id for o in blockers)
                result.skipped += [
                    (p.quote, f"SIDE_BUSY: side={side} orders={busy_ids}") for p in creates
                ]
            elif waiting:
                result.deferred += creates
                self._waiting_creates += len(creates)
                self._spawn(self._create_after(symbol, generation, blockers, waiting, creates))
            else:
                ready.update(map(id, creates))
        # Sent in the order asked for (a ladder's: inner bid, inner ask, next bid...), not
        # side by side: when the order rate runs short, it is the outer rungs of both
        # sides that are held back, not one whole side. Each is admitted (and its client
        # id drawn) now, so the result is whole and the ids are what they would be.
        for p in diff.create:
            if id(p) not in ready:
                continue
            denial = self._admission(p)
            if denial is not None:
                result.skipped.append((p.quote, denial))
            elif result.creating:
                client_id = self._ids.next()
                later.append((p, client_id))
                result.creating.append(client_id)
            else:
                result.creating.append(self._start_create(p, self._ids.next()).client_id)

    def _on_turn(self, turn: _NextTurn) -> None:
        if self._next_turn is not turn:  # taken already (see _take_turn's callers)
            return
        if turn.creates and not self._closed:
            # The other creates now, and the rest once they too have taken their first
            # steps: the notices' observers' work follows every order out, not the first.
            self._start_later(turn)
            asyncio.get_running_loop().call_soon(self._on_turn, turn)
            return
        self._take_turn()

    def _start_later(self, turn: _NextTurn) -> None:
        creates, turn.creates = turn.creates, []
        try:
            for prepared, client_id in creates:
                self._start_create(prepared, client_id)
        except Exception:  # a bug: no caller to raise to here; the notices still go
            self._log.exception("create_start_failed", symbol=turn.symbol)

    def _take_turn(self, *, drop: str | None = None) -> None:
        """The last sync's next loop turn, now: its other creates started (those on
        symbol ``drop`` dropped unsent), the work waiting for them run, its notices
        published. Called early by whatever must see the orders as they will be."""
        turn, self._next_turn = self._next_turn, None
        if turn is None:
            return
        try:
            if turn.symbol != drop and not self._closed:
                self._start_later(turn)
            elif turn.creates:
                self._log.info(
                    "creates_dropped_unsent", symbol=turn.symbol, count=len(turn.creates)
                )
            for fn in turn.then:
                try:
                    fn()
                except Exception:  # its owner's bug: the notices must still go out
                    self._log.exception("after_calls_failed")
        finally:
            if turn.release:
                self._tracker.release()

    def _on_refusal(self, notice: OrderNotice) -> None:
        """A post-only create refused as would-take puts up a wall at its price."""
        if (
            type(notice) is OrderActionFailed
            and notice.action == "create"
            and notice.error == WouldTake.__name__
            and notice.client_id is not None
            and self._fence is not None
        ):
            order = self._tracker.get(notice.client_id)
            if order is not None and order.post_only:
                self._fence.refused(order.symbol, order.side, order.price, notice.ts_ns)

    def place(self, quote: Quote) -> TrackedOrder | str:
        """Send one order outside quote management; the order, or why it was refused."""
        if self._next_turn is not None:
            self._take_turn()
        checked = self._prepare(quote, quote.symbol)
        if isinstance(checked, str):
            return checked
        return self._submit(checked)

    def cancel(self, client_id: str, *, reason: str = "") -> str | None:
        """Start cancelling one of our orders; None if started, else why not."""
        order = self._tracker.get(client_id)
        if order is None and self._next_turn is not None:
            self._take_turn()  # it may be one of a sync's creates not started yet
            order = self._tracker.get(client_id)
        if order is None:
            return f"UNKNOWN_ORDER: client_id={client_id}"
        if self.is_busy(order):
            return f"ACTION_IN_FLIGHT: client_id={client_id}"
        denial = order.can_apply(OrderEvent.CANCEL_REQUESTED)
        if denial is not None:
            return denial
        self._tracker.transition(order, OrderEvent.CANCEL_REQUESTED, reason=reason)
        self._start(order, "cancel", partial(self._venue_actions.cancel, order))
        return None

    def cancel_all(self, symbol: str, *, reason: str) -> list[str]:
        """Withdraw all our orders on ``symbol`` (never anyone else's).

        Busy orders are cancelled as soon as their action finishes (a create in flight
        may yet open); waiting creates are dropped, and creates still queued in the
        venue's rate limiter withdrawn unsent. Returns the client ids concerned.
        """
        turn = self._next_turn
        if turn is not None and turn.symbol == symbol:
            # Creates of a sync still waiting for their loop turn never leave. Another
            # market's turn is left to come (or to its own cancel_all: a kill goes
            # through every market, and must start no create on any of them).
            self._take_turn(drop=symbol)
        self._generation[symbol] += 1
        touched: list[str] = []
        withdraw = self._withdraw
        for order in self._tracker.open_orders(symbol):
            touched.append(order.client_id)
            if self.is_busy(order):
                if withdraw is not None and order.state is OrderState.PENDING_NEW:
                    # A create still queued in the venue's rate limiter is stopped there:
                    # waiting for it to be placed only to cancel it would hold a kill
                    # ~200 ms per queued create (USD-M). Its create then fails as never
                    # sent; one already on its way is cancelled once it is placed.
                    withdraw(order.client_id)
                self._cancel_when_idle.add(order.client_id)
            elif order.state in _CANCELABLE:
                self.cancel(order.client_id, reason=reason)
            elif order.state is OrderState.UNKNOWN:
                self._cancel_when_idle.add(order.client_id)
                self._start(order, "lookup", partial(self._venue_actions.lookup, order))
        self._log.info("cancel_all", symbol=symbol, reason=reason, orders=len(touched))
        return touched

    async def reconcile(self, symbol: str) -> ReconcileReport:
        """Bring our view of ``symbol`` in line with the venue's open orders.

        Our orders we know (or the journal knows) are refreshed or adopted; our orders
        nobody knows are adopted or cancelled (``unknown_own_orders``); tracked orders
        missing from the listing are looked up. Waits for the actions it starts.
        Raises the mapped error if the listing itself fails.
        """
        try:
            listing = await self._calls.call(
                lambda: self._venue.fetch_open_orders(symbol), retries=self.config.retries
            )
        except BackstopError as err:
            self._tracker.report_failure(None, symbol, "reconcile", err)
            raise
        known: Collection[str] = set(self._known_client_ids()) if self._known_client_ids else ()
        plan = plan_reconcile(
            symbol,
            listing,
            tracked=self._tracker.all(),
            find=self._tracker.find,
            is_ours=self.is_ours,
            known_client_ids=known,
            is_busy=self.is_busy,
        )
        report = ReconcileReport(symbol, foreign=plan.foreign)
        for order, update in plan.refresh:
            self._tracker.apply_update(order, update, source="reconcile")
            report.refreshed.append(order.client_id)
        for update in plan.adopt:
            if (adopted := self._tracker.adopt(update, reason="KNOWN_OWN_ORDER")) is not None:
                report.adopted.append(adopted.client_id)
        for update in plan.stray:
            adopted = self._tracker.adopt(update, reason="UNKNOWN_OWN_ORDER")
            if adopted is None:
                continue
            if self.config.unknown_own_orders == "cancel":
                if self.cancel(adopted.client_id, reason="UNKNOWN_OWN_ORDER") is None:
                    report.canceled.append(adopted.client_id)
            else:
                report.adopted.append(adopted.client_id)
        for order in plan.missing:
            self._start(order, "lookup", partial(self._venue_actions.lookup, order, once=True))
            report.looked_up.append(order.client_id)
        started = [
            self._in_flight[cid]
            for cid in report.canceled + report.looked_up
            if cid in self._in_flight
        ]
        if started:
            await asyncio.wait(started)
        self._log.info(
            "reconciled",
            symbol=symbol,
            refreshed=len(report.refreshed),
            adopted=len(report.adopted),
            canceled=len(report.canceled),
            looked_up=len(report.looked_up),
            foreign=report.foreign,
            stale=len(plan.stale),
        )
        return report

    @property
    def in_flight(self) -> int:
        """Venue actions and waiting creates not finished yet, and a sync's next loop
        turn not come yet (the caller's :meth:`Trader.settle` then lets it come before
        the next event)."""
        return len(self._tasks) + (self._next_turn is not None)

    def take_turn(self) -> None:
        """The last sync's next loop turn now, if it has not come (see :meth:`after_calls`):
        for whoever is about to act on what that turn's work reads or records."""
        self._take_turn()

    async def drain(self) -> None:
        """Wait until no action or waiting create is left (tests, shutdown)."""
        while self._tasks or self._next_turn is not None:
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            else:
                await asyncio.sleep(0)  # the last sync's next loop turn is due

    async def aclose(self) -> None:
        """Stop all actions in flight (their orders keep their current state). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._take_turn()  # closed: its creates are dropped, its notices published
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # ------------------------------------------------------------------ venue pushes

    def on_order_update(self, raw: dict[str, Any]) -> None:
        """An order structure from ``watch_orders`` (or anywhere else), in any order."""
        self._tracker.on_order_update(raw)

    def on_trade_update(self, raw: dict[str, Any]) -> None:
        """One of our trades from ``watch_my_trades``; each trade id counts once."""
        self._tracker.on_trade_update(raw)

    async def watch(self, symbol: str) -> None:
        """Feed ``watch_orders``/``watch_my_trades`` pushes in until cancelled.

        Reconnects with backoff and reconciles after each reconnect (pushes may have
        been missed). Returns at once if the venue has neither; operational errors
        (credentials ...) are raised.
        """
        loops = []
        has = getattr(self._venue, "has", {}) or {}
        if has.get("watchOrders") and hasattr(self._venue, "watch_orders"):
            loops.append(self._follow(symbol, "watch_orders", self.on_order_update))
        if has.get("watchMyTrades") and hasattr(self._venue, "watch_my_trades"):
            loops.append(self._follow(symbol, "watch_my_trades", self.on_trade_update))
        if loops:
            await asyncio.gather(*loops)

    # ------------------------------------------------------------------ actions

    def _prepare(
        self, quote: Quote, symbol: str, market: Any = _UNREAD
    ) -> PreparedQuote | str:
        if quote.symbol != symbol:
            return f"WRONG_SYMBOL: quote={quote.symbol} sync={symbol}"
        if market is _UNREAD:
            market = (getattr(self._venue, "markets", None) or {}).get(symbol)
        # A strategy re-asks for the same ladder on every reading of an episode: the
        # rounding and limit checks of an equal quote on the same market are reused.
        hit = self._prepared.get(quote)
        if hit is not None and hit[0] is market:
            done = hit[1]
            if isinstance(done, str) or done.quote is quote:  # a held ladder: same objects
                return done
            return PreparedQuote(quote, done.price, done.amount)
        fast = self._fast.get(symbol)
        if fast is None or fast[0] is not market:
            fast = (market, self._fast_quotes(symbol, market))
            self._fast[symbol] = fast
        result: PreparedQuote | str | None = None
        if fast[1] is not None:
            result = fast[1].prepare(quote)
        if result is None:
            result = prepare_quote(
                quote, market, self._venue.amount_to_precision, self._venue.price_to_precision
            )
        if market is not None:
            if len(self._prepared) >= _MEMO_SIZE:
                self._prepared.clear()
            self._prepared[quote] = (market, result)
        return result

    def _fast_quotes(self, symbol: str, market: Any) -> FastQuotes | None:
        rounding = getattr(self._venue, "rounding", None)
        if market is None or rounding is None:
            return None
        try:
            return FastQuotes.of(market, rounding(symbol))
        except Exception:  # an odd market: the general path reports what is wrong
            return None

    def _warm_up(self, symbol: str) -> None:
        # On a quiet reading (nothing asked): the first quotes are the urgent ones.
        markets = getattr(self._venue, "markets", None) or {}
        market = markets.get(symbol)
        if market is None or self._warm.get(symbol) is market:
            return
        self._warm[symbol] = market
        warm_market(
            symbol, market, self._venue.amount_to_precision, self._venue.price_to_precision
        )
        self._fast[symbol] = (market, self._fast_quotes(symbol, market))

    def _key(self, order: TrackedOrder) -> QuoteKey | None:
        markets = getattr(self._venue, "markets", None) or {}
        market = markets.get(order.symbol)
        memo = (order.symbol, order.side, order.price, order.remaining)
        hit = self._keys.get(memo)
        if hit is not None and hit[0] is market:
            return hit[1]
        key = order_key(order, self._venue.amount_to_precision, self._venue.price_to_precision)
        if market is not None:
            if len(self._keys) >= _MEMO_SIZE:
                self._keys.clear()
            self._keys[memo] = (market, key)
        return key

    def rehearse(self, symbol: str, quotes: Sequence[Quote]) -> int:
        """:meth:`sync_quotes`' rounding and diff of ``quotes`` against the open orders,
        with nothing sent, tracked or cancelled (the trader's rehearsal of a trigger):
        how many creates the diff would start. Only the rounding memos keep entries
        (a later equal quote is rounded the same either way)."""
        market = (getattr(self._venue, "markets", None) or {}).get(symbol)
        prepared = [p for q in quotes if not isinstance(p := self._prepare(q, symbol, market), str)]
        return len(diff_quotes(prepared, self.open_orders(symbol), self._key, self.is_busy).create)

    def _submit(self, prepared: PreparedQuote) -> TrackedOrder | str:
        """Send one create, or say why the admission gate (order rate) held it back."""
        denial = self._admission(prepared)
        if denial is not None:
            return denial
        return self._start_create(prepared, self._ids.next())

    def _admission(self, prepared: PreparedQuote) -> str | None:
        """Why the admission gate (order rate) holds a create back; None: it may go (and
        has taken its token)."""
        if self._admit is None:
            return None
        denial = self._admit()
        if denial is not None:
            # Routine under a tight order-rate limit: counted by the caller, not shouted.
            self._log.debug("order_not_admitted", symbol=prepared.quote.symbol, reason=denial)
        return denial

    def _start_create(self, prepared: PreparedQuote, client_id: str) -> TrackedOrder:
        now = self._clock.now_ns()
        quote = prepared.quote
        order = TrackedOrder(
            client_id=client_id,
            symbol=quote.symbol,
            side=quote.side,
            price=prepared.price,
            amount=prepared.amount,
            state=OrderState.PENDING_NEW,
            post_only=quote.post_only,
            tag=quote.tag,
            created_ns=now,
            updated_ns=now,
        )
        self._tracker.add(order)
        self._start(order, "create", partial(self._venue_actions.create, order))
        return order

    async def _create_after(
        self,
        symbol: str,
        generation: int,
        blockers: list[TrackedOrder],
        waiting: list[asyncio.Task[None]],
        creates: list[PreparedQuote],
    ) -> None:
        try:
            # asyncio.wait, not gather: being cancelled here must not cancel the cancels.
            await asyncio.wait(waiting)
        finally:
            self._waiting_creates -= len(creates)
        if self._generation[symbol] != generation:
            self._log.debug("deferred_creates_superseded", symbol=symbol, count=len(creates))
            return
        not_gone = [o for o in blockers if o.state is not OrderState.CANCELED]
        if not_gone:
            # Filled instead, or the cancel failed: the strategy must look again.
            self._log.info(
                "deferred_creates_dropped",
                symbol=symbol,
                count=len(creates),
                blockers=[f"{o.client_id}:{o.state}" for o in not_gone],
            )
            return
        for prepared in creates:
            self._submit(prepared)

    def _start(
        self, order: TrackedOrder, action: Action, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        # _spawn inlined: this runs for every order a trigger sends, before it leaves.
        # ``work`` makes the call's coroutine once the task runs (a partial: bound now):
        # a task cancelled before its first step (aclose right after a sync) leaves no
        # coroutine never awaited.
        task = asyncio.get_running_loop().create_task(self._run_action(order, action, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._in_flight[order.client_id] = task

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_action(
        self, order: TrackedOrder, action: Action, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug: report it, keep the manager alive
            self._log.exception("order_action_crashed", client_id=order.client_id, action=action)
            self._tracker.report_failure(order.client_id, order.symbol, action, e)
        finally:
            if self._in_flight.get(order.client_id) is asyncio.current_task():
                del self._in_flight[order.client_id]
        self._after_action(order)

    def _after_action(self, order: TrackedOrder) -> None:
        cid = order.client_id
        if cid not in self._cancel_when_idle or self._closed:
            return
        if order.is_finished:
            self._cancel_when_idle.discard(cid)
        elif order.state in _CANCELABLE:
            self._cancel_when_idle.discard(cid)
            self.cancel(cid, reason="UNWANTED_WHEN_IDLE")
        # UNKNOWN (lookups inconclusive): stays marked; the next lookup retries.

    async def _follow(
        self, symbol: str, method: str, handle: Callable[[dict[str, Any]], None]
    ) -> None:
        await follow(
            getattr(self._venue, method),
            symbol,
            handle,
            catch_up=lambda: self._reconcile_quietly(symbol),
            calls=self._calls,
            log=self._log,
            name=method,
        )

    async def _reconcile_quietly(self, symbol: str) -> bool:
        try:
            await self.reconcile(symbol)
        except BackstopError as err:
            self._log.warning("reconcile_after_reconnect_failed", error=str(err))
            return False
        return True
