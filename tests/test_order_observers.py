"""Order notices reach exactly the observers subscribed when each notice is published."""

from __future__ import annotations

import random

from bot.clock import ManualClock
from bot.logs import null_logger
from bot.orders import OrderManagerConfig, OrderTracker
from bot.orders.events import OrderNotice, OrderStateChanged
from bot.orders.ids import ClientIdFactory
from bot.orders.state import OrderState, TrackedOrder


def _tracker() -> tuple[OrderTracker, ClientIdFactory]:
    clock = ManualClock(1_000)
    ids = ClientIdFactory("bs1", clock=clock, rng=random.Random(7))
    tracker = OrderTracker(ids=ids, clock=clock, log=null_logger(), config=OrderManagerConfig())
    return tracker, ids


def _order(ids: ClientIdFactory) -> TrackedOrder:
    return TrackedOrder(ids.next(), "BTC/USDT", "buy", 60_000.0, 0.01, OrderState.PENDING_NEW)


def test_unsubscribed_observers_get_nothing_more_and_others_keep_getting_notices() -> None:
    tracker, ids = _tracker()
    a: list[OrderNotice] = []
    b: list[OrderNotice] = []
    stop_a = tracker.subscribe(a.append)
    tracker.subscribe(b.append)
    first = _order(ids)
    tracker.add(first)
    stop_a()
    stop_a()  # twice is harmless
    second = _order(ids)
    tracker.add(second)
    late: list[OrderNotice] = []
    tracker.subscribe(late.append)
    third = _order(ids)
    tracker.add(third)

    assert [n.client_id for n in a] == [first.client_id]
    assert [n.client_id for n in b] == [first.client_id, second.client_id, third.client_id]
    assert [n.client_id for n in late] == [third.client_id]
    assert all(isinstance(n, OrderStateChanged) and n.previous is None for n in b)


def test_an_observer_leaving_during_a_notice_does_not_stop_that_notice_reaching_the_rest() -> None:
    tracker, ids = _tracker()
    seen: list[str] = []
    stop: list[object] = []

    def leaver(notice: OrderNotice) -> None:
        seen.append(f"leaver:{notice.client_id}")
        unsubscribe = stop[0]
        assert callable(unsubscribe)
        unsubscribe()

    stop.append(tracker.subscribe(leaver))
    tracker.subscribe(lambda n: seen.append(f"other:{n.client_id}"))
    first, second = _order(ids), _order(ids)
    tracker.add(first)
    tracker.add(second)

    assert seen == [
        f"leaver:{first.client_id}",
        f"other:{first.client_id}",
        f"other:{second.client_id}",
    ]
