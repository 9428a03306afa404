"""Order management: the state table, client ids, update translation and quote diffing,
then the OrderManager against a scripted venue that injects every ccxt error class.

No test sleeps: the manager's sleep is a recorder that advances a ManualClock, venue
replies are held on futures the test releases, and the rate limiter is a gate the test
opens.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from typing import Any

import ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from order_fakes import (
    BTC,
    FakeVenue,
    GateThrottle,
    OpenThrottle,
    RecordingLogger,
    RecordingSleep,
)

from bot.clock import NS_PER_SECOND, ManualClock
from bot.logs import null_logger
from bot.orders import (
    TERMINAL_STATES,
    TRANSITIONS,
    ClientIdFactory,
    OrderActionFailed,
    OrderEvent,
    OrderFilled,
    OrderManager,
    OrderManagerConfig,
    OrderNotice,
    OrderState,
    OrderStateChanged,
    TrackedOrder,
)
from bot.orders.quotes import PreparedQuote, diff_quotes, prepare_quote
from bot.orders.updates import OrderUpdate, events_for
from strategies.base import Quote

S, E = OrderState, OrderEvent
T0_NS = 1_723_161_255_000_000_000
BINANCE_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def bid(price: float, amount: float = 0.01, *, symbol: str = BTC) -> Quote:
    return Quote(symbol, "buy", price, amount)


def ask(price: float, amount: float = 0.01) -> Quote:
    return Quote(BTC, "sell", price, amount)


def tracked(
    state: OrderState = S.OPEN,
    *,
    amount: float = 1.0,
    filled: float = 0.0,
    side: str = "buy",
    price: float = 100.0,
    cid: str = "bs1-x-1",
) -> TrackedOrder:
    return TrackedOrder(cid, BTC, side, price, amount, state, filled=filled)  # type: ignore[arg-type]


# =============================================================================== state


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS))
def test_every_legal_transition_reaches_its_target(state: OrderState, event: OrderEvent) -> None:
    order = tracked(S.PENDING_CANCEL if event is E.CANCEL_REJECTED else state)
    if event is E.CANCEL_REJECTED:
        order.rollback_state = S.PARTIALLY_FILLED
    filled = 0.5 if event is E.PARTIAL_FILL else (1.0 if event is E.FILL else None)

    assert order.apply(event, filled=filled) is None

    expected = S.PARTIALLY_FILLED if event is E.CANCEL_REJECTED else TRANSITIONS[(state, event)]
    assert order.state is expected


_ILLEGAL = sorted(
    (s, e)
    for s in OrderState
    for e in OrderEvent
    if (s, e) not in TRANSITIONS and e not in (E.SUBMITTED, E.ADOPTED)
)


@pytest.mark.parametrize(("state", "event"), _ILLEGAL)
def test_illegal_transitions_are_refused_with_a_reason_and_change_nothing(
    state: OrderState, event: OrderEvent
) -> None:
    order = tracked(state, filled=0.25)
    order.rollback_state = S.OPEN if state is S.PENDING_CANCEL else None
    before = (order.state, order.filled, order.rollback_state, order.reason)

    reason = order.apply(event, filled=0.5, reason="x")

    assert reason is not None
    assert reason.startswith("ILLEGAL_TRANSITION")
    assert (order.state, order.filled, order.rollback_state, order.reason) == before


def test_finished_states_have_no_way_out() -> None:
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL_STATES]


def test_cancel_reject_restores_the_state_the_cancel_left() -> None:
    order = tracked(S.PARTIALLY_FILLED, filled=0.2)
    assert order.apply(E.CANCEL_REQUESTED) is None
    assert order.state is S.PENDING_CANCEL
    assert order.apply(E.CANCEL_REJECTED) is None
    assert order.state is S.PARTIALLY_FILLED
    assert order.rollback_state is None


def test_partial_fill_during_cancel_moves_the_rollback_point() -> None:
    order = tracked(S.OPEN)
    order.apply(E.CANCEL_REQUESTED)
    assert order.apply(E.PARTIAL_FILL, filled=0.3) is None
    assert order.state is S.PENDING_CANCEL
    order.apply(E.CANCEL_REJECTED)
    assert order.state is S.PARTIALLY_FILLED
    assert order.filled == 0.3


def test_filled_can_never_decrease() -> None:
    order = tracked(S.PARTIALLY_FILLED, filled=0.5)
    reason = order.apply(E.PARTIAL_FILL, filled=0.4)
    assert reason is not None
    assert reason.startswith("FILLED_DECREASE")
    assert order.filled == 0.5


# =============================================================================== ids


@given(prefix=st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), n=st.integers(1, 50))
def test_client_ids_fit_binance_rules_and_carry_the_prefix(prefix: str, n: int) -> None:
    ids = ClientIdFactory(prefix, clock=ManualClock(T0_NS), rng=random.Random(1))
    made = [ids.next() for _ in range(n)]
    assert len(set(made)) == n
    for cid in made:
        assert BINANCE_CLIENT_ID.match(cid), cid
        assert ids.is_ours(cid)


def test_client_ids_of_other_bots_and_humans_are_not_ours() -> None:
    ids = ClientIdFactory("bs1", clock=ManualClock(T0_NS), rng=random.Random(1))
    other = ClientIdFactory("bs10", clock=ManualClock(T0_NS), rng=random.Random(1))
    assert not ids.is_ours(other.next())
    for foreign in (None, "", "web_8f2a", "x-TKT5PX2F22ecb58eb", "bs1"):
        assert not ids.is_ours(foreign)


def test_a_restarted_bot_does_not_reuse_client_ids() -> None:
    first = ClientIdFactory("bs1", clock=ManualClock(T0_NS), rng=random.Random(7))
    second = ClientIdFactory("bs1", clock=ManualClock(T0_NS + NS_PER_SECOND), rng=random.Random(7))
    assert {first.next() for _ in range(20)}.isdisjoint({second.next() for _ in range(20)})
    assert second.is_ours(first.next())


@pytest.mark.parametrize("prefix", ["", "bs-1", "b s", "toolongprefix1"])
def test_bad_client_id_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        ClientIdFactory(prefix, clock=ManualClock(T0_NS), rng=random.Random(1))


# =============================================================================== updates


def _update(status: str, filled: float, **kw: Any) -> OrderUpdate:
    return OrderUpdate.from_ccxt({"id": "1", "status": status, "filled": filled, **kw})


def test_stale_and_duplicate_updates_produce_no_events() -> None:
    order = tracked(S.PARTIALLY_FILLED, filled=0.5)
    assert events_for(order, _update("open", 0.0)) == []  # REST reply older than the push
    assert events_for(order, _update("open", 0.5)) == []  # duplicate push
    assert events_for(order, _update("open", 0.7)) == [(E.PARTIAL_FILL, 0.7)]


def test_update_fills_are_applied_before_the_final_status() -> None:
    order = tracked(S.OPEN)
    assert events_for(order, _update("canceled", 0.4)) == [
        (E.PARTIAL_FILL, 0.4),
        (E.CANCELED, 0.4),
    ]
    assert events_for(order, _update("closed", 1.0)) == [(E.FILL, 1.0)]


# =============================================================================== quotes


@pytest.fixture
def venue(clock: ManualClock) -> FakeVenue:
    return FakeVenue(clock)


def _prep(venue: FakeVenue, quote: Quote) -> PreparedQuote | str:
    return prepare_quote(
        quote, venue.markets.get(quote.symbol), venue.amount_to_precision, venue.price_to_precision
    )


def test_quotes_are_rounded_to_the_market_grid(venue: FakeVenue) -> None:
    prepared = _prep(venue, bid(60_000.004, 0.0123456))
    assert isinstance(prepared, PreparedQuote)
    assert (prepared.price, prepared.amount) == (60_000.0, 0.01234)


@pytest.mark.parametrize(
    ("quote", "reason"),
    [
        (bid(60_000.0, 0.000001), "PRECISION"),  # rounds to zero at the 1e-5 lot step
        (bid(100.0, 0.01), "OUTSIDE_LIMITS"),  # notional 1 USDT < 5 USDT minimum
        (bid(60_000.0, 10_000.0), "OUTSIDE_LIMITS"),  # above the max amount
        (bid(60_000.0, 0.01, symbol="ETH/USDT"), "UNKNOWN_MARKET"),
        (bid(-1.0), "NOT_POSITIVE"),
    ],
)
def test_quotes_outside_the_market_rules_are_refused(
    venue: FakeVenue, quote: Quote, reason: str
) -> None:
    result = _prep(venue, quote)
    assert isinstance(result, str)
    assert result.startswith(reason)


def _key(o: TrackedOrder) -> tuple[str, float, float]:
    return (o.side, o.price, round(o.remaining, 8))


def _pq(side: str, price: float, amount: float) -> PreparedQuote:
    return PreparedQuote(Quote(BTC, side, price, amount), price, amount)  # type: ignore[arg-type]


def test_diff_keeps_matching_orders_and_replaces_the_rest() -> None:
    keep = tracked(S.OPEN, price=100.0, amount=1.0, cid="bs1-a-1")
    moved = tracked(S.OPEN, price=99.0, amount=1.0, cid="bs1-a-2")
    partial = tracked(S.PARTIALLY_FILLED, price=98.0, amount=1.0, filled=0.4, cid="bs1-a-3")
    desired = [_pq("buy", 100.0, 1.0), _pq("buy", 99.5, 1.0), _pq("buy", 98.0, 1.0)]

    diff = diff_quotes(desired, [keep, moved, partial], _key, lambda o: False)

    assert diff.keep == [keep]
    assert {o.client_id for o in diff.cancel} == {"bs1-a-2", "bs1-a-3"}
    assert [p.price for p in diff.create] == [99.5, 98.0]


def test_diff_matches_identical_quotes_one_to_one() -> None:
    one = tracked(S.OPEN, cid="bs1-a-1")
    diff = diff_quotes([_pq("buy", 100.0, 1.0)] * 2, [one], _key, lambda o: False)
    assert diff.keep == [one]
    assert len(diff.create) == 1


def test_diff_never_reuses_an_order_being_cancelled_and_leaves_busy_ones_alone() -> None:
    leaving = tracked(S.PENDING_CANCEL, cid="bs1-a-1")
    pending = tracked(S.PENDING_NEW, price=97.0, cid="bs1-a-2")
    diff = diff_quotes([_pq("buy", 100.0, 1.0)], [leaving, pending], _key, lambda o: True)
    assert diff.keep == []
    assert diff.cancel == []
    assert {o.client_id for o in diff.busy} == {"bs1-a-1", "bs1-a-2"}
    assert len(diff.create) == 1


# =============================================================================== manager


class Harness:
    def __init__(
        self,
        venue: FakeVenue,
        clock: ManualClock,
        *,
        throttler: Any = None,
        known: set[str] | None = None,
        admit: Any = None,
        **config: Any,
    ) -> None:
        self.venue = venue
        self.clock = clock
        self.sleep = RecordingSleep(clock)
        self.log = RecordingLogger()
        self.notices: list[OrderNotice] = []
        self.throttle = throttler if throttler is not None else OpenThrottle()
        self.om = OrderManager(
            venue,
            clock=clock,
            rng=random.Random(42),
            log=self.log,  # type: ignore[arg-type]
            config=OrderManagerConfig(**config),
            throttler=self.throttle,
            admit=admit,
            sleep=self.sleep,
            known_client_ids=(lambda: known) if known is not None else None,
        )
        self.om.subscribe(self.notices.append)

    def states(self, cid: str) -> list[OrderState]:
        return [
            n.state for n in self.notices if isinstance(n, OrderStateChanged) and n.client_id == cid
        ]

    def fills(self) -> list[OrderFilled]:
        return [n for n in self.notices if isinstance(n, OrderFilled)]

    def failures(self) -> list[OrderActionFailed]:
        return [n for n in self.notices if isinstance(n, OrderActionFailed)]

    async def quote(self, *quotes: Quote) -> list[str]:
        self.om.sync_quotes(BTC, quotes)
        await self.om.drain()
        return [o.client_id for o in self.om.open_orders(BTC)]


@pytest.fixture
def h(venue: FakeVenue, clock: ManualClock) -> Harness:
    return Harness(venue, clock)


async def test_sync_creates_the_quotes_and_an_unchanged_sync_sends_nothing(h: Harness) -> None:
    cids = await h.quote(bid(60_000.0), ask(61_000.0))

    assert [h.om.get(c).state for c in cids] == [S.OPEN, S.OPEN]  # type: ignore[union-attr]
    created = [args for name, args in h.venue.calls if name == "create_order"]
    assert [(a[2], a[4], a[5]["postOnly"]) for a in created] == [
        ("buy", 60_000.0, True),
        ("sell", 61_000.0, True),
    ]
    assert all(h.om.is_ours(a[5]["clientOrderId"]) for a in created)
    calls_before = len(h.venue.calls)

    result = h.om.sync_quotes(BTC, [bid(60_000.0), ask(61_000.0)])
    await h.om.drain()

    assert sorted(result.kept) == sorted(cids)
    assert len(h.venue.calls) == calls_before


async def test_a_price_change_cancels_then_creates_only_that_quote(h: Harness) -> None:
    bid_id, ask_id = await h.quote(bid(60_000.0), ask(61_000.0))
    held = h.venue.hold("cancel_order")

    result = h.om.sync_quotes(BTC, [bid(59_990.0), ask(61_000.0)])
    await held.entered.wait()

    assert result.kept == [ask_id]
    assert result.canceling == [bid_id]
    assert h.venue.count("create_order") == 2  # the new bid waits for the cancel
    assert h.om.waiting_creates == 1  # and will need the order rate once it goes
    held.release()
    await h.om.drain()
    assert h.om.waiting_creates == 0

    assert h.om.get(bid_id).state is S.CANCELED  # type: ignore[union-attr]
    assert h.venue.count("create_order") == 3
    assert h.venue.count("cancel_order") == 1
    assert sorted(o.price for o in h.om.open_orders(BTC)) == [59_990.0, 61_000.0]
    assert [name for name, _ in h.venue.calls][-2:] == ["cancel_order", "create_order"]


async def test_an_order_with_an_action_in_flight_gets_no_second_action(h: Harness) -> None:
    (first,) = await h.quote(bid(60_000.0))
    held = h.venue.hold("cancel_order")
    h.om.sync_quotes(BTC, [bid(59_990.0)])
    await held.entered.wait()

    again = h.om.sync_quotes(BTC, [bid(59_980.0)])  # while the cancel is in flight
    assert again.busy == [first]
    assert again.canceling == []
    assert h.om.cancel(first) is not None  # refused with a reason
    held.release()
    await h.om.drain()

    assert h.venue.count("cancel_order") == 1
    assert [o.price for o in h.om.open_orders(BTC)] == [59_980.0]  # only the latest wish
    assert h.venue.count("create_order") == 2


async def test_a_partially_filled_quote_is_topped_up_by_replacing_it(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0, 0.02))
    order, _trade = h.venue.fill(cid, 0.005)
    h.om.on_order_update(order)

    result = h.om.sync_quotes(BTC, [bid(60_000.0, 0.02)])
    await h.om.drain()

    assert result.canceling == [cid]
    assert [(o.price, o.amount) for o in h.om.open_orders(BTC)] == [(60_000.0, 0.02)]


async def test_refused_quotes_never_reach_the_venue(h: Harness) -> None:
    result = h.om.sync_quotes(BTC, [bid(100.0, 0.01), bid(60_000.0, 0.01, symbol="ETH/USDT")])
    await h.om.drain()
    assert [r.split(":")[0] for _, r in result.refused] == ["OUTSIDE_LIMITS", "WRONG_SYMBOL"]
    assert h.venue.calls == []


async def test_creates_past_the_admission_gate_are_held_back_with_its_reason(
    venue: FakeVenue, clock: ManualClock
) -> None:
    # The risk engine's order-rate bucket: two tokens, then no more this instant.
    tokens = [None, None]

    def admit() -> str | None:
        return tokens.pop() if tokens else "ORDER_RATE_EXCEEDED: max_per_s=2"

    h = Harness(venue, clock, admit=admit)

    result = h.om.sync_quotes(BTC, [bid(60_000.0 - i) for i in range(3)])
    await h.om.drain()

    assert len(result.creating) == 2
    assert [reason for _, reason in result.skipped] == ["ORDER_RATE_EXCEEDED: max_per_s=2"]
    assert h.venue.count("create_order") == 2


async def test_a_sync_whose_creates_were_all_held_back_counts_its_turn_in_flight(
    venue: FakeVenue, clock: ManualClock
) -> None:
    """Nothing started, yet the sync's turn (its after_calls work) is pending: in_flight
    says so, so the trader settles and that work runs before the next event."""
    h = Harness(venue, clock, admit=lambda: "ORDER_RATE_EXCEEDED: max_per_s=0")
    result = h.om.sync_quotes(BTC, [bid(60_000.0)])
    assert result.creating == []
    assert len(result.skipped) == 1
    ran: list[bool] = []
    h.om.after_calls(lambda: ran.append(True))
    assert h.om.in_flight == 1
    assert ran == []
    await asyncio.sleep(0)  # one of the trader's settling turns
    assert ran == [True]
    assert h.om.in_flight == 0


async def test_short_of_the_order_rate_the_outer_rungs_of_both_sides_wait(
    venue: FakeVenue, clock: ManualClock
) -> None:
    tokens = [None] * 3

    def admit() -> str | None:
        return tokens.pop() if tokens else "ORDER_RATE_EXCEEDED: max_per_s=3"

    h = Harness(venue, clock, admit=admit)
    # A ladder as the strategies ask for one: inner bid, inner ask, next bid, next ask...
    ladder = [q for i in range(3) for q in (bid(60_000.0 - i), ask(61_000.0 + i))]
    result = h.om.sync_quotes(BTC, ladder)
    await h.om.drain()
    # Both inner rungs and the next bid went; not the whole bid side and no ask.
    assert sorted((o.side, o.price) for o in h.om.open_orders(BTC)) == [
        ("buy", 59_999.0),
        ("buy", 60_000.0),
        ("sell", 61_000.0),
    ]
    assert [q for q, _ in result.skipped] == ladder[3:]


async def test_venue_calls_stay_within_the_rate_limit(venue: FakeVenue, clock: ManualClock) -> None:
    gate = GateThrottle(capacity=2)
    h = Harness(venue, clock, throttler=gate)

    h.om.sync_quotes(BTC, [bid(60_000.0 - i) for i in range(5)])
    await gate.settled(waiting=3)

    assert h.venue.count("create_order") == 2
    await gate.allow(2)
    await gate.settled(waiting=1)
    assert h.venue.count("create_order") == 4
    await gate.allow(1)
    await h.om.drain()
    assert h.venue.count("create_order") == 5
    assert gate.admitted == 5


# ------------------------------------------------------------------ REST vs websocket


async def test_push_before_rest_reply_wins_and_the_reply_changes_nothing(h: Harness) -> None:
    held = h.venue.hold("create_order")
    (order,) = [h.om.place(bid(60_000.0))]
    assert isinstance(order, TrackedOrder)
    await held.entered.wait()
    # The venue accepted it and its websocket push overtakes the REST reply.
    h.om.on_order_update(
        {"id": "1000", "clientOrderId": order.client_id, "status": "open", "filled": 0.0}
    )
    assert order.state is S.OPEN
    assert order.exchange_id == "1000"
    held.release()
    await h.om.drain()

    assert h.states(order.client_id) == [S.PENDING_NEW, S.OPEN]


async def test_fill_pushed_before_the_create_reply_leaves_the_order_filled(h: Harness) -> None:
    held = h.venue.hold("create_order")
    order = h.om.place(bid(60_000.0))
    assert isinstance(order, TrackedOrder)
    await held.entered.wait()
    h.om.on_order_update(
        {"id": "1000", "clientOrderId": order.client_id, "status": "closed", "filled": 0.01}
    )
    held.release()  # the REST reply says "open, filled 0": stale
    await h.om.drain()

    assert order.state is S.FILLED
    assert order.filled == 0.01
    assert h.states(order.client_id) == [S.PENDING_NEW, S.FILLED]
    assert h.log.has("late_update_ignored", "warning")


async def test_rest_reply_first_then_pushes_move_the_order_on(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    order, _ = h.venue.fill(cid, 0.004)
    h.om.on_order_update(order)
    h.om.on_order_update(order)  # duplicate push
    assert h.states(cid) == [S.PENDING_NEW, S.OPEN, S.PARTIALLY_FILLED]
    order, _ = h.venue.fill(cid, 0.006)
    h.om.on_order_update(order)
    assert h.om.get(cid).state is S.FILLED  # type: ignore[union-attr]


async def test_a_duplicate_trade_is_counted_once(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    _, trade = h.venue.fill(cid, 0.004)

    h.om.on_trade_update(trade)
    h.om.on_trade_update(trade)
    h.om.on_order_update({**h.venue.find(cid), "trades": [trade]})  # type: ignore[dict-item]

    assert [f.trade_id for f in h.fills()] == [trade["id"]]
    assert h.om.get(cid).filled == pytest.approx(0.004)  # type: ignore[union-attr]


async def test_a_trade_pushed_before_the_order_id_is_known_is_applied_later(h: Harness) -> None:
    held = h.venue.hold("create_order")
    order = h.om.place(bid(60_000.0))
    assert isinstance(order, TrackedOrder)
    await held.entered.wait()
    trade = {"id": "t1", "order": "1000", "amount": 0.01, "price": 60_000.0, "side": "buy"}

    h.om.on_trade_update(trade)  # which order is "1000"? not known yet
    assert h.fills() == []
    h.om.on_order_update(
        {"id": "1000", "clientOrderId": order.client_id, "status": "closed", "filled": 0.01}
    )

    assert [(f.trade_id, f.amount) for f in h.fills()] == [("t1", 0.01)]
    assert order.state is S.FILLED
    held.release()
    await h.om.drain()
    assert len(h.fills()) == 1


async def test_filled_never_goes_down_on_out_of_order_pushes(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.om.on_order_update(
        {
            "id": h.om.get(cid).exchange_id,
            "clientOrderId": cid,  # type: ignore[union-attr]
            "status": "open",
            "filled": 0.006,
        }
    )
    h.om.on_order_update({"clientOrderId": cid, "status": "open", "filled": 0.003})
    assert h.om.get(cid).filled == 0.006  # type: ignore[union-attr]


async def test_a_late_update_for_a_finished_order_is_logged_and_ignored(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.om.cancel(cid)
    await h.om.drain()
    h.om.on_order_update({"clientOrderId": cid, "status": "open", "filled": 0.0})
    h.om.on_order_update({"clientOrderId": cid, "status": "canceled", "filled": 0.0})

    assert h.om.get(cid).state is S.CANCELED  # type: ignore[union-attr]
    late = [r for r in h.log.records if r[1] == "late_update_ignored"]
    assert len(late) == 1  # the duplicate final report is not news


async def test_foreign_order_updates_are_ignored(h: Harness) -> None:
    h.om.on_order_update({"id": "9", "clientOrderId": "web_1", "status": "open", "filled": 1})
    h.om.on_trade_update({"id": "t9", "order": "9", "amount": 1.0, "price": 1.0})
    assert h.notices == []
    assert h.om.open_orders() == []


# ------------------------------------------------------------------ errors on create


async def test_timeout_on_create_then_found_by_client_id(h: Harness) -> None:
    h.venue.fail("create_order", ccxt.RequestTimeout("slow"), effect=True)  # it did land
    order = h.om.place(bid(60_000.0))
    assert isinstance(order, TrackedOrder)
    await h.om.drain()

    assert h.states(order.client_id) == [S.PENDING_NEW, S.UNKNOWN, S.OPEN]
    assert order.exchange_id is not None
    assert h.venue.count("create_order") == 1  # never re-sent
    lookups = [a for n, a in h.venue.calls if n == "fetch_order"]
    assert lookups[0][2] == {"clientOrderId": order.client_id}
    assert len(h.sleep.delays) == 1  # waited once before looking


async def test_timeout_on_create_then_missing_means_never_placed(h: Harness) -> None:
    h.venue.fail("create_order", ccxt.NetworkError("reset"))
    order = h.om.place(bid(60_000.0))
    assert isinstance(order, TrackedOrder)
    await h.om.drain()

    assert order.state is S.REJECTED
    assert order.reason.startswith("NOT_FOUND_AFTER_TIMEOUT")
    assert h.venue.count("create_order") == 1
    assert h.venue.count("fetch_order") == h.om.config.unknown_lookups
    assert len(h.sleep.delays) == h.om.config.unknown_lookups
    assert h.sleep.delays == sorted(h.sleep.delays)  # backing off, not hammering


async def test_an_unknown_order_blocks_new_quotes_on_its_side_until_resolved(
    h: Harness,
) -> None:
    h.venue.fail("create_order", ccxt.RequestTimeout("slow"))
    h.venue.fail("fetch_order", ccxt.AuthenticationError("keys revoked"))
    order = h.om.place(bid(60_000.0))
    await h.om.drain()
    assert isinstance(order, TrackedOrder)
    assert order.state is S.UNKNOWN

    result = h.om.sync_quotes(BTC, [bid(59_000.0), ask(61_000.0)])

    assert [(q.side, r.split(":")[0]) for q, r in result.skipped] == [("buy", "SIDE_BUSY")]
    assert len(result.creating) == 1  # the ask
    await h.om.drain()  # the sync started a new lookup: the bid never reached the venue
    assert order.state is S.REJECTED


async def test_lookup_after_timeout_retries_temporary_errors(h: Harness) -> None:
    h.venue.fail("create_order", ccxt.RequestTimeout("slow"), effect=True)
    h.venue.fail("fetch_order", ccxt.ExchangeNotAvailable("maintenance"))
    order = h.om.place(bid(60_000.0))
    await h.om.drain()
    assert isinstance(order, TrackedOrder)
    assert order.state is S.OPEN
    assert h.venue.count("fetch_order") == 2


@pytest.mark.parametrize("error", [ccxt.RateLimitExceeded("429"), ccxt.DDoSProtection("418")])
async def test_rate_limited_create_backs_off_and_is_resent(h: Harness, error: Exception) -> None:
    h.venue.fail("create_order", error)
    order = h.om.place(bid(60_000.0))
    await h.om.drain()

    assert isinstance(order, TrackedOrder)
    assert order.state is S.OPEN
    assert h.venue.count("create_order") == 2
    # Longer than a plain retry's first step: the rate-limit backoff skips ahead.
    assert h.sleep.delays
    assert h.sleep.delays[0] >= h.om.config.backoff_initial_s * 2


async def test_a_rate_limit_pauses_the_next_calls_too(venue: FakeVenue, clock: ManualClock) -> None:
    h = Harness(venue, clock, rate_limited_retries=0)
    (cid,) = await h.quote(bid(60_000.0))
    h.venue.fail("create_order", ccxt.RateLimitExceeded("429"))
    h.om.place(ask(61_000.0))
    await h.om.drain()
    assert h.sleep.delays == []  # given up at once, but the pause is set

    h.om.cancel(cid)
    await h.om.drain()

    assert len(h.sleep.delays) == 1
    assert h.sleep.delays[0] > 0
    assert h.om.get(cid).state is S.CANCELED  # type: ignore[union-attr]


async def test_a_rate_limit_waits_at_least_the_venues_retry_after(
    venue: FakeVenue, clock: ManualClock
) -> None:
    h = Harness(venue, clock)
    refused = ccxt.DDoSProtection("binance 429 Too Many Requests")
    refused.retry_after_s = 7.0  # type: ignore[attr-defined]  # as CcxtVenue notes it
    h.venue.fail("create_order", refused)
    h.om.place(bid(60_000.0))
    await h.om.drain()
    # The jittered backoff alone would retry within a second; Binance said 7 s, and
    # calling sooner is what gets an IP banned.
    assert h.sleep.delays == [pytest.approx(7.0)]
    assert h.venue.count("create_order") == 2


async def test_rate_limited_beyond_the_retry_budget_is_reported_as_not_placed(
    venue: FakeVenue, clock: ManualClock
) -> None:
    h = Harness(venue, clock, rate_limited_retries=1)
    for _ in range(2):
        h.venue.fail("create_order", ccxt.RateLimitExceeded("429"))
    order = h.om.place(bid(60_000.0))
    await h.om.drain()

    assert isinstance(order, TrackedOrder)
    assert order.state is S.REJECTED
    assert order.reason.startswith("RATE_LIMITED")
    assert [f.error for f in h.failures()] == ["RateLimited"]


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (ccxt.InvalidOrder("bad"), "OrderRejected"),
        (ccxt.InsufficientFunds("poor"), "OrderRejected"),
        (ccxt.OrderImmediatelyFillable("would cross"), "WouldTake"),
    ],
)
async def test_a_rejected_create_is_not_retried_and_is_reported(
    h: Harness, error: Exception, name: str
) -> None:
    h.venue.fail("create_order", error)
    order = h.om.place(bid(60_000.0))
    await h.om.drain()

    assert isinstance(order, TrackedOrder)
    assert order.state is S.REJECTED
    assert h.venue.count("create_order") == 1
    assert h.venue.count("fetch_order") == 0
    (failure,) = h.failures()
    assert (failure.client_id, failure.action, failure.error) == (
        order.client_id,
        "create",
        name,
    )
    assert failure.reason.startswith("CREATE_FAILED")


async def test_a_bid_refused_as_would_take_is_not_resent_until_our_book_catches_up(
    h: Harness,
) -> None:
    h.venue.fail("create_order", ccxt.OrderImmediatelyFillable("would immediately match"))
    await h.quote(bid(60_000.0))
    assert h.venue.count("create_order") == 1

    # Our book still shows the ask above 60,000: the same bid (or a higher one) would be
    # refused again, so it waits; a lower bid and the asks are not held back.
    again = h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_990.0), ask(61_000.0)])
    await h.om.drain()
    assert [(q.price, why) for q, why in again.skipped] == [
        (60_000.0, "WOULD_TAKE: side=buy price=60000")
    ]
    sent = [a[4] for name, a in h.venue.calls if name == "create_order"]
    assert sorted(sent[1:]) == [59_990.0, 61_000.0]
    assert h.om.would_take_walls() == {(BTC, "buy"): 60_000.0}

    # Our book now shows the venue's ask at 60,000: the wall is lifted.
    h.om.touch(BTC, 59_990.0, 60_000.0)
    lifted = h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_990.0), ask(61_000.0)])
    await h.om.drain()
    assert lifted.skipped == []
    assert [a[4] for name, a in h.venue.calls if name == "create_order"][-1] == 60_000.0


async def test_a_would_take_wall_lasts_the_hold_at_most(
    venue: FakeVenue, clock: ManualClock
) -> None:
    h = Harness(venue, clock, would_take_hold_s=0.5)
    h.venue.fail("create_order", ccxt.OrderImmediatelyFillable("would immediately match"))
    await h.quote(ask(61_000.0))
    clock.advance(400_000_000)
    assert h.om.sync_quotes(BTC, [ask(61_000.0)]).skipped
    clock.advance(100_000_000)
    assert not h.om.sync_quotes(BTC, [ask(61_000.0)]).skipped
    await h.om.drain()
    assert h.venue.count("create_order") == 2


async def test_the_fence_can_be_turned_off(venue: FakeVenue, clock: ManualClock) -> None:
    h = Harness(venue, clock, would_take_hold_s=0)
    h.venue.fail("create_order", ccxt.OrderImmediatelyFillable("would immediately match"))
    await h.quote(bid(60_000.0))
    assert not h.om.sync_quotes(BTC, [bid(60_000.0)]).skipped


async def test_an_operational_error_on_create_is_reported(h: Harness) -> None:
    h.venue.fail("create_order", ccxt.AuthenticationError("invalid key"))
    order = h.om.place(bid(60_000.0))
    await h.om.drain()
    assert isinstance(order, TrackedOrder)
    assert order.state is S.REJECTED
    assert [f.error for f in h.failures()] == ["OperationalError"]
    assert h.venue.count("create_order") == 1


async def test_a_bug_in_the_venue_call_is_treated_as_maybe_placed(h: Harness) -> None:
    h.venue.fail("create_order", KeyError("oops"), effect=True)
    order = h.om.place(bid(60_000.0))
    await h.om.drain()
    assert isinstance(order, TrackedOrder)
    assert order.state is S.OPEN


# ------------------------------------------------------------------ errors on cancel


async def test_cancel_not_found_is_confirmed_by_a_lookup_that_finds_it_filled(
    h: Harness,
) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.venue.fill(cid, 0.01)  # filled on the venue, no push seen yet

    h.om.cancel(cid)
    await h.om.drain()

    assert h.om.get(cid).state is S.FILLED  # type: ignore[union-attr]
    assert h.venue.count("fetch_order") == 1


async def test_cancel_not_found_and_lookup_not_found_means_gone(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.venue.orders.clear()

    h.om.cancel(cid)
    await h.om.drain()

    order = h.om.get(cid)
    assert order is not None
    assert order.state is S.CANCELED
    assert order.gone_inferred


async def test_cancel_network_error_is_retried(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.venue.fail("cancel_order", ccxt.RequestTimeout("slow"))
    h.om.cancel(cid)
    await h.om.drain()
    assert h.om.get(cid).state is S.CANCELED  # type: ignore[union-attr]
    assert h.venue.count("cancel_order") == 2


async def test_cancel_that_keeps_failing_rolls_back_after_a_lookup_says_open(
    venue: FakeVenue, clock: ManualClock
) -> None:
    h = Harness(venue, clock, retries=1)
    (cid,) = await h.quote(bid(60_000.0))
    for _ in range(2):
        h.venue.fail("cancel_order", ccxt.NetworkError("down"))
    h.om.cancel(cid)
    await h.om.drain()

    assert h.om.get(cid).state is S.OPEN  # type: ignore[union-attr]
    assert h.states(cid)[-2:] == [S.PENDING_CANCEL, S.OPEN]
    assert [f.action for f in h.failures()] == ["cancel"]


async def test_a_refused_cancel_restores_the_partially_filled_state(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    order, _ = h.venue.fill(cid, 0.004)
    h.om.on_order_update(order)
    h.venue.fail("cancel_order", ccxt.InvalidOrder("cannot cancel"))

    h.om.cancel(cid)
    await h.om.drain()

    assert h.om.get(cid).state is S.PARTIALLY_FILLED  # type: ignore[union-attr]
    assert h.states(cid)[-2:] == [S.PENDING_CANCEL, S.PARTIALLY_FILLED]


async def test_fill_during_a_requote_cancel_drops_the_replacement(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    held = h.venue.hold("cancel_order")
    h.om.sync_quotes(BTC, [bid(59_990.0)])
    await held.entered.wait()
    order, _ = h.venue.fill(cid, 0.01)
    h.om.on_order_update(order)  # filled while we were cancelling
    held.release()
    await h.om.drain()

    assert h.om.get(cid).state is S.FILLED  # type: ignore[union-attr]
    assert h.venue.count("create_order") == 1  # no replacement: the strategy must look again


# ------------------------------------------------------------------ reconcile


async def test_reconcile_adopts_known_cancels_unknown_and_never_touches_foreign(
    venue: FakeVenue, clock: ManualClock
) -> None:
    earlier = ClientIdFactory("bs1", clock=ManualClock(T0_NS - NS_PER_SECOND), rng=random.Random(3))
    known_id, unknown_id = earlier.next(), earlier.next()
    h = Harness(venue, clock, known={known_id})
    venue.add_order(known_id, price=59_000.0, filled=0.002)
    venue.add_order(unknown_id, price=58_000.0)
    foreign = [venue.add_order(c, price=57_000.0) for c in ("web_abc", None, "bs10-x-1")]

    report = await h.om.reconcile(BTC)

    assert report.adopted == [known_id]
    assert report.canceled == [unknown_id]
    assert report.foreign == 3
    assert h.om.get(known_id).state is S.PARTIALLY_FILLED  # type: ignore[union-attr]
    assert h.om.get(unknown_id).state is S.CANCELED  # type: ignore[union-attr]
    cancelled_ids = [a[0] for n, a in venue.calls if n == "cancel_order"]
    assert all(f["id"] not in cancelled_ids for f in foreign)
    assert all(venue.orders[f["id"]]["status"] == "open" for f in foreign)


async def test_reconcile_can_adopt_unknown_own_orders(venue: FakeVenue, clock: ManualClock) -> None:
    h = Harness(venue, clock, unknown_own_orders="adopt")
    cid = ClientIdFactory("bs1", clock=ManualClock(1), rng=random.Random(3)).next()
    venue.add_order(cid)
    report = await h.om.reconcile(BTC)
    assert report.adopted == [cid]
    assert h.venue.count("cancel_order") == 0
    assert h.states(cid) == [S.OPEN]


async def test_reconcile_finds_out_what_became_of_orders_missing_from_the_listing(
    h: Harness,
) -> None:
    filled_id, gone_id, open_id = await h.quote(bid(60_000.0), bid(59_000.0), ask(61_000.0))
    h.venue.fill(filled_id, 0.01)
    h.venue.orders.pop(h.om.get(gone_id).exchange_id)  # type: ignore[union-attr, arg-type]

    report = await h.om.reconcile(BTC)

    assert sorted(report.looked_up) == sorted([filled_id, gone_id])
    assert report.refreshed == [open_id]
    assert h.om.get(filled_id).state is S.FILLED  # type: ignore[union-attr]
    assert h.om.get(gone_id).state is S.CANCELED  # type: ignore[union-attr]


@pytest.mark.parametrize("exists", [True, False])
async def test_reconcile_resolves_an_unknown_order(
    venue: FakeVenue, clock: ManualClock, exists: bool
) -> None:
    h = Harness(venue, clock, retries=0)
    h.venue.fail("create_order", ccxt.RequestTimeout("slow"), effect=exists)
    h.venue.fail("fetch_order", ccxt.RequestTimeout("still slow"))  # lookup gives up
    order = h.om.place(bid(60_000.0))
    await h.om.drain()
    assert isinstance(order, TrackedOrder)
    assert order.state is S.UNKNOWN

    await h.om.reconcile(BTC)

    assert order.state is (S.OPEN if exists else S.REJECTED)


async def test_an_order_inferred_gone_but_reported_live_is_adopted_again(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    exchange_side = dict(h.venue.find(cid))  # type: ignore[arg-type]
    h.venue.fail("cancel_order", ccxt.OrderNotFound("?"))
    h.venue.fail("fetch_order", ccxt.OrderNotFound("?"))
    h.om.cancel(cid)
    await h.om.drain()
    assert h.om.get(cid).state is S.CANCELED  # type: ignore[union-attr]

    h.om.on_order_update(exchange_side)  # the venue says: still open

    assert h.om.get(cid).state is S.OPEN  # type: ignore[union-attr]
    assert [o.client_id for o in h.om.open_orders(BTC)] == [cid]


async def test_reconcile_failure_is_raised_and_reported(h: Harness) -> None:
    h.venue.fail("fetch_open_orders", ccxt.AuthenticationError("no"))
    with pytest.raises(Exception, match="AuthenticationError"):
        await h.om.reconcile(BTC)
    assert [f.action for f in h.failures()] == ["reconcile"]


# ------------------------------------------------------------------ cancel_all, watch, notices


async def test_cancel_all_cancels_ours_including_one_still_being_created(h: Harness) -> None:
    (resting,) = await h.quote(bid(60_000.0))
    foreign = h.venue.add_order("web_1", price=50_000.0)
    held = h.venue.hold("create_order")
    pending = h.om.place(ask(61_000.0))
    assert isinstance(pending, TrackedOrder)
    await held.entered.wait()

    touched = h.om.cancel_all(BTC, reason="HALT")
    held.release()
    await h.om.drain()

    assert sorted(touched) == sorted([resting, pending.client_id])
    assert h.om.open_orders(BTC) == []
    assert pending.state is S.CANCELED
    assert h.venue.orders[foreign["id"]]["status"] == "open"


async def test_cancel_all_drops_replacements_waiting_for_cancels(h: Harness) -> None:
    await h.quote(bid(60_000.0))
    held = h.venue.hold("cancel_order")
    h.om.sync_quotes(BTC, [bid(59_000.0)])
    await held.entered.wait()
    h.om.cancel_all(BTC, reason="HALT")
    assert h.om.waiting_creates == 1
    held.release()
    await h.om.drain()
    assert h.om.open_orders(BTC) == []
    assert h.venue.count("create_order") == 1
    assert h.om.waiting_creates == 0  # dropped, not waiting any more


async def test_watch_feeds_pushes_and_reconciles_after_a_reconnect(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    seen = asyncio.Event()
    h.om.subscribe(lambda n: seen.set() if isinstance(n, OrderFilled) else None)
    task = asyncio.create_task(h.om.watch(BTC))
    order, trade = h.venue.fill(cid, 0.004)
    h.venue.order_pushes.put_nowait([order])
    h.venue.trade_pushes.put_nowait([trade])
    await seen.wait()
    assert h.om.get(cid).state is S.PARTIALLY_FILLED  # type: ignore[union-attr]

    reconciled = h.venue.count("fetch_open_orders")
    h.venue.order_pushes.put_nowait(ccxt.NetworkError("socket closed"))
    h.venue.order_pushes.put_nowait([])
    await h.venue.wait_calls("fetch_open_orders", reconciled + 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.sleep.delays  # backed off before resubscribing


async def test_notices_are_stamped_with_the_injected_clock(h: Harness) -> None:
    h.clock.set(T0_NS + 5 * NS_PER_SECOND)
    (_cid,) = await h.quote(bid(60_000.0))
    assert [n.ts_ns for n in h.notices] == [T0_NS + 5 * NS_PER_SECOND] * 2
    first = h.notices[0]
    assert isinstance(first, OrderStateChanged)
    assert (first.previous, first.state, first.event) == (None, S.PENDING_NEW, E.SUBMITTED)


async def test_a_failing_observer_does_not_stop_order_handling(h: Harness) -> None:
    def broken(_: OrderNotice) -> None:
        raise RuntimeError("journal disk full")

    h.om.subscribe(broken)
    (cid,) = await h.quote(bid(60_000.0))
    assert h.om.get(cid).state is S.OPEN  # type: ignore[union-attr]
    assert h.log.has("order_observer_failed")


async def test_finished_orders_are_forgotten_after_the_retention_time(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.om.cancel(cid)
    await h.om.drain()
    h.clock.advance(int(h.om.config.finished_retention_s * NS_PER_SECOND) + 1)
    h.om.sync_quotes(BTC, [])
    assert h.om.get(cid) is None


async def test_cancels_never_queue_behind_creates_in_the_rate_limiter(
    venue: FakeVenue, clock: ManualClock
) -> None:
    # The real asyncio-throttle limiters: two creates a second, cancels on their own.
    om = OrderManager(
        venue,
        clock=clock,
        rng=random.Random(1),
        log=null_logger(),
        config=OrderManagerConfig(rate_limit=2, cancel_rate_limit=10),
    )
    changed = asyncio.Event()
    om.subscribe(lambda _notice: changed.set())

    async def until(condition: Callable[[], bool]) -> None:
        async def notices() -> None:
            while not condition():
                changed.clear()
                await changed.wait()

        await asyncio.wait_for(notices(), timeout=5)

    om.sync_quotes(BTC, [bid(60_000.0 - i) for i in range(3)])  # the third must wait
    await until(lambda: len([o for o in om.open_orders(BTC) if o.state is S.OPEN]) == 2)
    om.cancel_all(BTC, reason="KILL_SWITCH")
    await until(lambda: venue.count("cancel_order") == 2)
    # Both resting quotes were withdrawn while the third create still waited its turn.
    assert venue.count("create_order") == 2
    await om.aclose()


async def test_a_syncs_notices_follow_its_orders_to_the_venue(h: Harness) -> None:
    """The observers' work on a sync's notices (journal, episodes, risk) runs once its
    calls have reached the venue, not before them; each order's notices in order."""
    at_venue: list[int] = []
    h.om.subscribe(lambda _notice: at_venue.append(h.venue.count("create_order")))
    before = len(h.notices)
    result = h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0), bid(59_998.0)])
    assert len(h.notices) == before  # held: the orders go first
    await h.om.drain()

    notices = [n for n in h.notices[before:] if isinstance(n, OrderStateChanged)]
    assert at_venue
    assert set(at_venue) == {3}  # every create had reached the venue
    submitted = [n.client_id for n in notices if n.previous is None]
    assert submitted == result.creating  # in ladder order
    for cid in result.creating:
        assert [n.state for n in notices if n.client_id == cid] == [
            OrderState.PENDING_NEW,
            OrderState.OPEN,
        ]


async def test_a_syncs_first_create_leaves_before_the_others_are_started(h: Harness) -> None:
    """The first create of a sync reaches the venue before the others are even
    tracked; they follow a loop turn later, with the ids and order the sync reported."""
    seen: list[tuple[int, int]] = []
    ids: list[str] = []
    create = h.venue.create_order

    async def counted(*args: Any, **kwargs: Any) -> Any:
        # get(), unlike open_orders(), does not take the sync's next turn early.
        tracked = sum(h.om.get(cid) is not None for cid in ids)
        seen.append((h.venue.count("create_order"), tracked))
        return await create(*args, **kwargs)

    h.venue.create_order = counted  # type: ignore[method-assign]
    result = h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0), bid(59_998.0)])
    ids += result.creating
    assert len(ids) == 3
    await h.om.drain()
    # The first call saw one order tracked (its own): the others came after it.
    assert seen == [(0, 1), (1, 3), (2, 3)]
    assert [o.client_id for o in h.om.open_orders(BTC)] == result.creating
    assert [o.price for o in h.om.open_orders(BTC)] == [60_000.0, 59_999.0, 59_998.0]


async def test_the_orders_a_sync_started_are_open_orders_at_once(h: Harness) -> None:
    """Whoever looks before the sync's next loop turn (a reading of the same event,
    a guard) sees every create it started, with the ids it reported."""
    result = h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0), bid(59_998.0)])
    assert [o.client_id for o in h.om.open_orders(BTC)] == result.creating
    assert h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0), bid(59_998.0)]).creating == []
    await h.om.drain()
    assert h.venue.count("create_order") == 3


async def test_a_kill_right_after_a_sync_drops_its_creates_not_yet_started(h: Harness) -> None:
    """cancel_all in the same loop turn as a sync (a guard firing on the next tick):
    the creates left for the next turn never leave; the one that did is cancelled."""
    result = h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0), bid(59_998.0)])
    touched = h.om.cancel_all(BTC, reason="KILL_SWITCH")
    await h.om.drain()
    assert touched == result.creating[:1]
    assert h.venue.count("create_order") == 1
    assert h.log.has("creates_dropped_unsent")
    assert all(h.om.get(cid) is None for cid in result.creating[1:])
    assert h.om.open_orders(BTC) == []


async def test_a_kill_across_markets_starts_no_create_of_a_sync_still_pending(
    h: Harness,
) -> None:
    """The kill switch cancels market by market: a sync's creates on the second market,
    not started yet, must not be started by the first market's cancel_all."""
    eth = "ETH/USDT"  # BTC/USDT's market structure under another name
    precision = h.venue._precision
    btc = precision.markets[BTC]
    clone = dict(btc, symbol=eth, id="ETHUSDT", lowercaseId="ethusdt", base="ETH", baseId="ETH")
    precision.set_markets([*precision.markets.values(), clone])
    h.venue.markets[eth] = precision.markets[eth]
    h.om.sync_quotes(BTC, [bid(60_000.0)])
    await h.om.drain()
    quotes = [bid(3_000.0 - i, symbol=eth) for i in range(3)]
    result = h.om.sync_quotes(eth, quotes)
    h.om.cancel_all(BTC, reason="KILL_SWITCH")
    h.om.cancel_all(eth, reason="KILL_SWITCH")
    await h.om.drain()
    eth_creates = [args for name, args in h.venue.calls if name == "create_order" and eth in args]
    assert len(eth_creates) == 1  # the first, started by the sync itself
    assert all(h.om.get(cid) is None for cid in result.creating[1:])
    assert h.om.open_orders() == []


async def test_after_calls_runs_once_every_order_is_out_and_before_its_notices(
    h: Harness,
) -> None:
    order: list[str] = []
    h.om.subscribe(lambda _n: order.append("notice"))
    h.om.after_calls(lambda: order.append("at once"))  # no sync waiting: runs now
    assert order == ["at once"]
    h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0)])
    h.om.after_calls(lambda: order.append(f"after {h.venue.count('create_order')} creates"))
    assert order == ["at once"]
    await h.om.drain()
    assert order[:3] == ["at once", "after 2 creates", "notice"]


@pytest.mark.parametrize("failing", [1, 2])
async def test_a_sync_that_fails_midway_still_publishes_what_it_started(
    h: Harness, failing: int
) -> None:
    """A bug starting a create: in the sync's own call (the first create) it reaches the
    caller; in the next loop turn (the others) it is logged. Either way what was started
    is published and nothing stays held."""
    start = h.om._start_create
    calls = 0

    def one_fails(prepared: Any, client_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == failing:
            raise RuntimeError("a bug in a create")
        return start(prepared, client_id)

    h.om._start_create = one_fails  # type: ignore[method-assign]
    before = len(h.notices)
    if failing == 1:
        # The first create fails before it is tracked: the second is never reached.
        with pytest.raises(RuntimeError):
            h.om.sync_quotes(BTC, [bid(59_000.0), bid(60_000.0)])
        await h.om.drain()
        assert h.notices[before:] == []
        assert h.om.open_orders(BTC) == []
        h.om._start_create = start  # type: ignore[method-assign]
        h.om.sync_quotes(BTC, [bid(60_000.0)])
        await h.om.drain()
    else:
        h.om.sync_quotes(BTC, [bid(60_000.0), bid(59_999.0)])
        await h.om.drain()
        assert h.log.has("create_start_failed", "exception")

    first = h.notices[before]
    assert isinstance(first, OrderStateChanged)
    assert first.previous is None  # the first create's notice was not lost
    assert [o.state for o in h.om.open_orders(BTC)] == [OrderState.OPEN]
    # Nothing is held any more: a later change is published at once.
    h.om.cancel_all(BTC, reason="TEST")
    assert isinstance(h.notices[-1], OrderStateChanged)
    assert h.notices[-1].state is OrderState.PENDING_CANCEL


async def test_closing_right_after_a_sync_loses_none_of_its_notices(h: Harness) -> None:
    before = len(h.notices)
    result = h.om.sync_quotes(BTC, [bid(60_000.0)])
    await h.om.aclose()  # the same loop turn: the create's task never took a step
    assert h.venue.count("create_order") == 0
    assert [n.client_id for n in h.notices[before:]] == result.creating


async def test_the_default_logger_and_throttler_work(venue: FakeVenue, clock: ManualClock) -> None:
    om = OrderManager(venue, clock=clock, rng=random.Random(1), log=null_logger())
    om.sync_quotes(BTC, [bid(60_000.0)])
    await om.drain()
    assert [o.state for o in om.open_orders(BTC)] == [S.OPEN]
    await om.aclose()
    await om.aclose()


async def test_an_unwanted_order_still_being_created_is_cancelled_once_it_opens(
    h: Harness,
) -> None:
    held = h.venue.hold("create_order")
    h.om.sync_quotes(BTC, [bid(60_000.0)])
    await held.entered.wait()

    result = h.om.sync_quotes(BTC, [])  # the strategy changed its mind meanwhile
    assert result.canceling == []  # nothing can be cancelled yet
    held.release()
    await h.om.drain()

    assert h.om.open_orders(BTC) == []
    assert h.venue.count("cancel_order") == 1


async def test_a_busy_order_wanted_again_is_not_cancelled(h: Harness) -> None:
    held = h.venue.hold("create_order")
    h.om.sync_quotes(BTC, [bid(60_000.0)])
    await held.entered.wait()
    h.om.sync_quotes(BTC, [])
    h.om.sync_quotes(BTC, [bid(60_000.0)])  # wanted after all
    held.release()
    await h.om.drain()

    assert [o.state for o in h.om.open_orders(BTC)] == [S.OPEN]
    assert h.venue.count("cancel_order") == 0


async def test_a_bare_cancel_reply_counts_as_canceled(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    real_cancel = h.venue.cancel_order

    async def bare(id: str, symbol: str | None = None, params: Any = None) -> dict[str, Any]:
        await real_cancel(id, symbol, params)
        return {"id": id}  # some venues answer with the id only

    h.venue.cancel_order = bare  # type: ignore[method-assign]
    h.om.cancel(cid)
    await h.om.drain()
    assert h.om.get(cid).state is S.CANCELED  # type: ignore[union-attr]


async def test_a_cancel_the_venue_accepts_but_does_not_carry_out_is_rolled_back(
    h: Harness,
) -> None:
    (cid,) = await h.quote(bid(60_000.0))

    async def ignored(id: str, symbol: str | None = None, params: Any = None) -> dict[str, Any]:
        return dict(h.venue.orders[id])  # still open

    h.venue.cancel_order = ignored  # type: ignore[method-assign]
    h.om.cancel(cid)
    await h.om.drain()

    order = h.om.get(cid)
    assert order is not None
    assert order.state is S.OPEN
    assert order.reason == "CANCEL_NOT_EFFECTIVE"


async def test_cancel_not_found_with_a_failing_lookup_is_treated_as_gone(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    h.venue.fail("cancel_order", ccxt.OrderNotFound("-2011"))
    h.venue.fail("fetch_order", ccxt.AuthenticationError("clock skew"))
    h.om.cancel(cid)
    await h.om.drain()

    order = h.om.get(cid)
    assert order is not None
    assert order.state is S.CANCELED
    assert order.gone_inferred
    assert order.reason.endswith("(unconfirmed)")


async def test_a_trade_reported_after_the_cancel_is_still_counted(h: Harness) -> None:
    (cid,) = await h.quote(bid(60_000.0))
    _, trade = h.venue.fill(cid, 0.004)  # the fill happened just before our cancel
    real_cancel = h.venue.cancel_order

    async def bare(id: str, symbol: str | None = None, params: Any = None) -> dict[str, Any]:
        await real_cancel(id, symbol, params)
        return {"id": id}  # says nothing about fills

    h.venue.cancel_order = bare  # type: ignore[method-assign]
    h.om.cancel(cid)
    await h.om.drain()
    assert h.om.get(cid).state is S.CANCELED  # type: ignore[union-attr]
    assert h.om.get(cid).filled == 0.0  # type: ignore[union-attr]

    h.om.on_trade_update(trade)  # the trade push arrives late

    order = h.om.get(cid)
    assert order is not None
    assert order.state is S.CANCELED  # a fact about the past, not a transition
    assert order.filled == pytest.approx(0.004)
    assert [f.amount for f in h.fills()] == [0.004]


async def test_watch_raises_operational_errors(h: Harness) -> None:
    h.venue.order_pushes.put_nowait(ccxt.AuthenticationError("bad key"))
    with pytest.raises(Exception, match="AuthenticationError") as caught:
        await h.om.watch(BTC)
    assert type(caught.value).__name__ == "OperationalError"


def test_reconcile_plan_ignores_stale_listings_and_other_symbols() -> None:
    from bot.orders.reconcile import plan_reconcile

    filled = tracked(S.FILLED, cid="bs1-a-1")
    gone = tracked(S.CANCELED, cid="bs1-a-2")
    gone.gone_inferred = True
    listing = [
        {"id": "1", "clientOrderId": "bs1-a-1", "symbol": BTC, "status": "open"},
        {"id": "2", "clientOrderId": "bs1-a-2", "symbol": BTC, "status": "open"},
        {"id": "3", "clientOrderId": "bs1-a-3", "symbol": "ETH/USDT", "status": "open"},
    ]
    by_cid = {o.client_id: o for o in (filled, gone)}

    plan = plan_reconcile(
        BTC,
        listing,
        tracked=[filled, gone],
        find=lambda u: by_cid.get(u.client_id or ""),
        is_ours=lambda c: bool(c) and str(c).startswith("bs1-"),
        known_client_ids=(),
        is_busy=lambda o: False,
    )

    assert plan.stale == [filled]  # finished by a venue report: the listing is old
    assert [u.client_id for u in plan.adopt] == ["bs1-a-2"]  # only inferred gone
    assert plan.stray == []
    assert plan.missing == []


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        ("buy", 61000.019, 61000.01),  # nearest would be 61000.02: one tick more aggressive
        ("sell", 61000.011, 61000.02),  # nearest would be 61000.01
        ("buy", 61000.01, 61000.01),  # already on the tick: unchanged
        ("sell", 61000.01, 61000.01),
    ],
)
def test_quotes_round_away_from_the_touch(side: str, price: float, expected: float) -> None:
    from bot.markets import offline_markets
    from bot.orders.quotes import passive_price

    market = (offline_markets("binance") or {})["BTC/USDT"]
    quote = Quote("BTC/USDT", side, price, 0.001)  # type: ignore[arg-type]

    assert passive_price(quote, market) == pytest.approx(expected, abs=1e-9)
