"""Episodes from a scripted run: detector readings, order notices and fills in, records out."""

from __future__ import annotations

import json

import pytest
from strategy_helpers import NS, SYMBOL, detector_update, fill, transition

from bot.book import Side
from bot.detector import Cause, DetectorState, Recovery, Rule, Trigger
from bot.episodes import EpisodeTracker
from bot.inventory import Inventory
from bot.orders.events import OrderStateChanged
from bot.orders.state import OrderEvent, OrderState

CALM, ARMING, ENGAGED, RECOVERING = (
    DetectorState.CALM,
    DetectorState.ARMING,
    DetectorState.ENGAGED,
    DetectorState.RECOVERING,
)
TRIGGER = Trigger(Rule.BASELINE, Side.BID, 300_000.0, 750_000.0, 2_500_000.0, 300_000.0, 2 * NS)
RECOVERY = Recovery(
    since_ns=7 * NS,
    ts_ns=17 * NS,
    depth=(1_600_000.0, 1_900_000.0),
    baseline=(2_450_000.0, 3_000_000.0),
    ratio=(0.65, 0.63),
    min_ratio=0.61,
    spread_bps=0.002,
    levels=(1_470_000.0, 1_800_000.0),
)


def placed(client_id: str, symbol: str = SYMBOL) -> OrderStateChanged:
    return OrderStateChanged(
        3 * NS, client_id, symbol, None, None, OrderState.PENDING_NEW, OrderEvent.SUBMITTED, 0, ""
    )


def test_a_scripted_episode_is_recorded_from_trigger_to_replenishment() -> None:
    inv = Inventory(SYMBOL, 2.0, 120_000.0)
    tracker = EpisodeTracker(SYMBOL)
    mid = 60_000.0

    def step(state: DetectorState, t: int, *causes: Cause, **kw: object) -> object:
        tr = None
        if causes:
            before = kw.pop("before")
            tr = transition(before, state, t * NS, *causes, recovery=kw.pop("recovery", None))  # type: ignore[arg-type]
        u = detector_update(state, ts_ns=t * NS, transition=tr, **kw)  # type: ignore[arg-type]
        return tracker.on_update(u, inv.view(mid), committed_quote=0.0)

    assert step(CALM, 1) is None
    assert step(ARMING, 2, Cause.FRACTURED, before=CALM, trigger=TRIGGER) is None
    assert tracker.current is None
    step(
        ENGAGED,
        3,
        Cause.ENGAGE_DWELL,
        before=ARMING,
        episode_trigger=TRIGGER,
        depth=(300_000.0, 400_000.0),
        baseline=(2_500_000.0, 3_000_000.0),
    )
    ep = tracker.current
    assert ep is not None
    assert ep.id == f"{SYMBOL}@{3 * NS}"
    assert ep.trigger == TRIGGER
    tracker.on_notice(placed("q1"), tag="backstop:bid:0")
    tracker.on_notice(placed("q2"), tag="backstop:ask:0")
    tracker.on_notice(placed("q3", symbol="ETH/USDT"), tag="backstop:bid:0")  # not ours
    buy = fill("buy", 59_990.0, 0.01, trade_id="1", fee=0.00001, fee_currency="BTC")
    inv.apply(buy)
    tracker.on_notice(buy, tag="backstop:bid:0", mid=mid)
    tracker.on_update(
        detector_update(ENGAGED, ts_ns=4 * NS, depth=(100_000.0, 500_000.0), health=0.1),
        inv.view(mid),
        committed_quote=3_000.0,
    )
    step(RECOVERING, 5, Cause.RECOVERED, before=ENGAGED, depth=(1.5e6, 1.9e6))
    step(ENGAGED, 6, Cause.RELAPSED, before=RECOVERING, depth=(1.4e6, 1.9e6))
    sell = fill("sell", 60_010.0, 0.004, trade_id="2", fee=0.24, fee_currency="USDT")
    inv.apply(sell)
    tracker.on_fill(sell, tag="backstop:ask:0", mid=mid)
    step(RECOVERING, 7, Cause.RECOVERED, before=ENGAGED, depth=(1.6e6, 1.9e6))
    ended = step(
        CALM,
        17,
        Cause.DISENGAGE_DWELL,
        before=RECOVERING,
        recovery=RECOVERY,
        depth=(1_600_000.0, 1_900_000.0),
    )
    assert ended is ep
    assert tracker.current is None
    assert tracker.finished == [ep]
    assert ep.end_ts_ns == 17 * NS
    assert ep.duration_s == pytest.approx(14.0)
    assert ep.recovery == RECOVERY
    assert ep.relapses == 1
    assert ep.quotes_placed == 2
    assert ep.fills == 2
    assert ep.depth_before == (300_000.0, 400_000.0)
    assert ep.depth_min == [100_000.0, 400_000.0]
    assert ep.depth_after == (1_600_000.0, 1_900_000.0)
    assert ep.min_health == 0.1
    assert ep.max_committed_quote == 3_000.0
    assert ep.bought.base == pytest.approx(0.01)
    assert ep.sold.quote == pytest.approx(240.04)
    assert ep.fees == {"BTC": 0.00001, "USDT": 0.24}
    assert ep.fees_quote == pytest.approx(0.00001 * 59_990 + 0.24)
    # Bought 0.01 for 599.9, paid 0.00001 BTC, sold 0.004 for 240.04 - 0.24; the 0.00599
    # left is worth 359.4 at the end mid: -599.9 + 239.8 + 359.4 = -0.7.
    assert ep.marked_pnl == pytest.approx(-0.7, abs=1e-9)
    assert ep.inventory_before.base == 2.0
    assert ep.inventory_after is not None
    assert ep.inventory_after.net_base == pytest.approx(0.00599)
    assert ep.realised_pnl == pytest.approx(inv.realised_pnl)

    # After the end: a late fill of a backstop quote, then the replenishment's.
    late = fill("sell", 60_005.0, 0.001, trade_id="3")
    tracker.on_fill(late, tag="backstop:ask:1", mid=mid)
    tracker.on_notice(placed("r1"), tag="replenish:sell")
    refill = fill(
        "sell", 60_000.01, 0.005, trade_id="4", fee=0.3, fee_currency="USDT", ts_ns=20 * NS
    )
    tracker.on_fill(refill, tag="replenish:sell", mid=mid)
    assert ep.late_fills == 1
    assert ep.sold.fills == 2
    assert ep.quotes_placed == 2  # replenishment orders are not backstop quotes
    r = ep.replenishment
    assert r.fills == 1
    assert r.sold.base == pytest.approx(0.005)
    assert r.fees_quote == pytest.approx(0.3)
    # Sold 0.01 over mid (a gain of 0.00005) and paid 0.3 in fees.
    assert r.cost_quote == pytest.approx(0.3 - 0.01 * 0.005)
    assert r.first_ts_ns == r.last_ts_ns == 20 * NS

    d = json.loads(json.dumps(tracker.to_dicts()))
    (rec,) = d
    assert rec["id"] == ep.id
    assert rec["trigger"]["rule"] == "baseline"
    assert rec["recovery"]["min_ratio"] == 0.61
    assert rec["volume"]["base"] == pytest.approx(0.015)
    assert rec["depth"]["min"] == [100_000.0, 400_000.0]
    assert rec["replenishment"]["cost_quote"] == pytest.approx(r.cost_quote)
    assert rec["active"] is False


def test_each_episode_gets_its_own_record_and_deterministic_id() -> None:
    tracker = EpisodeTracker(SYMBOL)
    inv = Inventory(SYMBOL, 1.0, 1_000.0)
    for start in (10, 100):
        tracker.on_update(
            detector_update(
                ENGAGED,
                ts_ns=start * NS,
                transition=transition(ARMING, ENGAGED, start * NS, Cause.ENGAGE_DWELL),
            ),
            inv.view(100.0),
        )
        tracker.on_update(
            detector_update(
                CALM,
                ts_ns=(start + 20) * NS,
                transition=transition(RECOVERING, CALM, (start + 20) * NS, Cause.DISENGAGE_DWELL),
            ),
            inv.view(100.0),
        )
    assert [e.id for e in tracker.episodes] == [f"{SYMBOL}@{10 * NS}", f"{SYMBOL}@{100 * NS}"]
    # A replenishment fill now belongs to the latest episode.
    tracker.on_fill(fill("buy", 100.0, 0.1), tag="replenish:buy", mid=None)
    assert tracker.episodes[1].replenishment.fills == 1
    assert tracker.episodes[1].replenishment.unpriced_fills == 1
    assert tracker.episodes[0].replenishment.fills == 0


def test_fills_before_any_episode_are_unattributed_and_an_open_episode_is_reported() -> None:
    tracker = EpisodeTracker(SYMBOL)
    inv = Inventory(SYMBOL, 1.0, 1_000.0)
    tracker.on_fill(fill("buy", 100.0, 0.1))
    assert tracker.unattributed_fills == 1
    # Joining mid-episode (no transition seen): the episode starts at the first reading.
    tracker.on_update(detector_update(RECOVERING, ts_ns=5 * NS), inv.view(100.0))
    (open_ep,) = tracker.to_dicts()
    assert open_ep["active"] is True
    assert open_ep["end_ts_ns"] is None
    assert open_ep["marked_pnl"] is None
    tracker.on_fill(fill("sell", 100.0, 0.1, symbol="ETH/USDT"))  # another market: ignored
    assert tracker.episodes[0].fills == 0


def test_the_start_record_built_later_is_the_episode_as_it_opened() -> None:
    """The journal builds an episode's start record after the trigger's orders have left
    (``EpisodeTracker.opening``); by then quotes were placed and may have filled. The
    record must still be the episode as the engaging reading left it."""
    inv = Inventory(SYMBOL, 2.0, 120_000.0)
    tracker = EpisodeTracker(SYMBOL)
    mid = 60_000.0
    view = inv.view(mid)
    update = detector_update(
        ENGAGED,
        ts_ns=3 * NS,
        transition=transition(ARMING, ENGAGED, 3 * NS, Cause.ENGAGE_DWELL),
        episode_trigger=TRIGGER,
        depth=(300_000.0, 400_000.0),
        baseline=(2_500_000.0, 3_000_000.0),
        spread_bps=42.0,
        health=0.2,
    )
    assert tracker.on_update(update, view, committed_quote=1_500.0) is None
    ep = tracker.current
    assert ep is not None
    at_open = json.loads(json.dumps(ep.to_dict()))

    tracker.on_notice(placed("q1"), tag="backstop:bid:0")
    buy = fill("buy", 59_990.0, 0.01, trade_id="1", fee=0.00001, fee_currency="BTC")
    inv.apply(buy)
    tracker.on_notice(buy, tag="backstop:bid:0", mid=mid)
    tracker.on_update(
        detector_update(ENGAGED, ts_ns=4 * NS, depth=(100_000.0, 500_000.0), health=0.1),
        inv.view(mid),
        committed_quote=3_000.0,
    )
    assert ep.to_dict() != at_open  # the live episode moved on

    later = tracker.opening(update, view, 1_500.0).to_dict()
    assert json.loads(json.dumps(later)) == at_open
    assert later["depth"]["min"] == [300_000.0, 400_000.0]
    assert later["max_spread_bps"] == 42.0
    assert later["min_health"] == 0.2
    assert later["max_committed_quote"] == 1_500.0
    assert later["quotes_placed"] == 0
