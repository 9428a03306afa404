"""The risk engine: every pre-trade denial, the trading states, and every guard's trigger,
level and recovery, on a ManualClock (no wall time anywhere)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bot.book import OrderBook
from bot.clock import NS_PER_SECOND, ManualClock
from bot.feeds.events import BookSnapshot, FeedState, FeedStatus, levels
from bot.inventory import Inventory
from bot.logs import null_logger
from bot.orders import OrderActionFailed, OrderFilled
from bot.risk import (
    Guard,
    GuardEvent,
    GuardLevel,
    MarketState,
    MarketStateChanged,
    QuoteContext,
    RiskEngine,
    RiskEvent,
    TokenBucket,
    TradingState,
    TradingStateChanged,
)
from bot.settings.models import GuardSettings, RiskSettings
from strategies.base import Quote

BTC = "BTC/USDT"
ETH = "ETH/USDT"
S = NS_PER_SECOND
CTX = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0)


def bid(price: float = 59_900.0, amount: float = 0.01, **kw: Any) -> Quote:
    return Quote(BTC, "buy", price, amount, **kw)


def ask(price: float = 60_100.0, amount: float = 0.01, **kw: Any) -> Quote:
    return Quote(BTC, "sell", price, amount, **kw)


def make(
    clock: ManualClock, guards: dict[str, Any] | None = None, **risk: Any
) -> tuple[RiskEngine, list[RiskEvent]]:
    config = RiskSettings(guards=GuardSettings(**(guards or {})), **risk)
    engine = RiskEngine(config, clock=clock, log=null_logger(), symbols=[BTC, ETH])
    events: list[RiskEvent] = []
    engine.subscribe(events.append)
    return engine, events


def guard_events(events: list[RiskEvent]) -> list[GuardEvent]:
    return [e for e in events if isinstance(e, GuardEvent)]


def market_changes(events: list[RiskEvent]) -> list[tuple[str, MarketState, str]]:
    return [(e.symbol, e.state, e.cause) for e in events if isinstance(e, MarketStateChanged)]


def book(clock: ManualClock, bids: float = 59_990.0, asks: float = 60_010.0) -> OrderBook:
    b = OrderBook(BTC, clock=clock)
    snap = BookSnapshot(BTC, clock.now_ns(), levels([[bids, 1.0]]), levels([[asks, 1.0]]))
    assert b.apply(snap) is None
    return b


def refresh(b: OrderBook, clock: ManualClock) -> None:
    snap = BookSnapshot(BTC, clock.now_ns(), levels([[59_990.0, 1.0]]), levels([[60_010.0, 1.0]]))
    assert b.apply(snap) is None


def failure(clock: ManualClock, error: str = "OrderRejected", symbol: str = BTC) -> Any:
    return OrderActionFailed(
        clock.now_ns(), "bs1-x-1", symbol, "create", error, f"CREATE_FAILED: {error}"
    )


# =============================================================================== pre-trade


def test_an_order_within_every_limit_is_allowed(clock: ManualClock) -> None:
    engine, events = make(clock)
    assert engine.check_quote(bid(), CTX) is None
    assert engine.check_quote(ask(), CTX) is None
    assert events == []


@pytest.mark.parametrize(
    ("risk", "quote", "ctx", "expected"),
    [
        ({}, bid(price=math.nan), CTX, "INVALID_QUOTE: field=price value=nan"),
        ({}, bid(amount=math.inf), CTX, "INVALID_QUOTE: field=amount value=inf"),
        ({}, bid(amount=0.0), CTX, "INVALID_QUOTE: field=amount value=0.0"),
        ({}, bid(price=-1.0), CTX, "INVALID_QUOTE: field=price value=-1.0"),
        ({}, Quote(BTC, "hold", 1.0, 1.0), CTX, "INVALID_QUOTE: field=side value='hold'"),  # type: ignore[arg-type]
        ({}, bid(), QuoteContext(mid=None), "NO_REFERENCE_PRICE: symbol=BTC/USDT mid=None"),
        ({}, bid(), QuoteContext(mid=math.nan), "NO_REFERENCE_PRICE: symbol=BTC/USDT mid=nan"),
        (
            {},
            bid(price=60_000.0 * 0.975),
            CTX,
            "PRICE_OUTSIDE_BAND: price=58500 mid=60000 distance_bps=250.0 max_bps=200",
        ),
        (
            {},
            ask(price=60_000.0 * 1.021),
            CTX,
            "PRICE_OUTSIDE_BAND: price=61260 mid=60000 distance_bps=210.0 max_bps=200",
        ),
        ({}, bid(price=60_010.0), CTX, "WOULD_CROSS: side=buy price=60010 best_ask=60010"),
        ({}, ask(price=59_980.0), CTX, "WOULD_CROSS: side=sell price=59980 best_bid=59990"),
        # Not post-only but not tagged as a taker: still refused.
        ({}, bid(price=60_020.0, post_only=False), CTX, "WOULD_CROSS: side=buy"),
        # Tagged as a taker but post-only: the venue would reject it anyway.
        ({}, bid(price=60_020.0, tag="taker:x"), CTX, "WOULD_CROSS: side=buy"),
        (
            {},
            bid(amount=0.02),
            CTX,
            "NOTIONAL_EXCEEDS_MAX_PER_ORDER: notional=1198 max=1000",
        ),
        (
            {"max_order_base": {"BTC": 0.005}},
            bid(),
            CTX,
            "AMOUNT_EXCEEDS_MAX_PER_ORDER: asset=BTC amount=0.01 max=0.005",
        ),
        (
            {},
            bid(),
            QuoteContext(mid=60_000.0, open_orders=10),
            "OPEN_ORDERS_EXCEED_MAX: symbol=BTC/USDT open=10 max=10",
        ),
        (
            {},
            bid(),
            QuoteContext(mid=60_000.0, market_committed_quote=4_500.0),
            "MARKET_NOTIONAL_EXCEEDS_MAX: symbol=BTC/USDT committed=4500 order=599 max=5000",
        ),
        (
            {},
            bid(),
            QuoteContext(mid=60_000.0, total_committed_quote=9_500.0),
            "TOTAL_NOTIONAL_EXCEEDS_MAX: committed=9500 order=599 max=10000",
        ),
        (
            {"max_position_base": {"BTC": 0.05}},
            bid(),
            QuoteContext(mid=60_000.0, position_base=0.03, resting_buy_base=0.015),
            "POSITION_EXCEEDS_MAX: asset=BTC side=buy position=0.03 position_after=0.055 max=0.05",
        ),
        (
            {"max_position_base": {"BTC": 0.05}},
            ask(),
            QuoteContext(mid=60_000.0, position_base=-0.045),
            "POSITION_EXCEEDS_MAX: asset=BTC side=sell position=-0.045 position_after=-0.055",
        ),
    ],
)
def test_each_pre_trade_check_denies_with_its_reason(
    clock: ManualClock, risk: dict[str, Any], quote: Quote, ctx: QuoteContext, expected: str
) -> None:
    engine, _ = make(clock, **risk)
    denial = engine.check_quote(quote, ctx)
    assert denial is not None
    assert denial.startswith(expected), denial
    assert engine.denials[expected.split(":")[0]] == 1


def test_a_tagged_taker_quote_may_cross_the_book_but_not_leave_the_band(
    clock: ManualClock,
) -> None:
    engine, _ = make(clock)
    replenish = bid(price=60_030.0, post_only=False, tag="replenish:buy")
    assert engine.check_quote(replenish, CTX) is None
    assert engine.check_quote(bid(price=60_020.0, post_only=False, tag="taker:1"), CTX) is None
    far = bid(price=60_000.0 * 1.03, post_only=False, tag="taker:1")
    assert (engine.check_quote(far, CTX) or "").startswith("PRICE_OUTSIDE_BAND")


def test_an_order_that_shrinks_an_oversized_position_is_never_refused(clock: ManualClock) -> None:
    engine, _ = make(clock, max_position_base={"BTC": 0.05})
    over = QuoteContext(mid=60_000.0, position_base=0.2)
    assert engine.check_quote(ask(), over) is None
    assert (engine.check_quote(bid(), over) or "").startswith("POSITION_EXCEEDS_MAX")


@pytest.mark.parametrize(
    ("quote", "expected"),
    [
        (bid(price=60_000.0 * 0.85), "FAT_FINGER_PRICE: price=51000 mid=60000 distance_bps=1500.0"),
        (bid(amount=1.0), "FAT_FINGER_NOTIONAL: notional=59900 max=5000"),
    ],
)
def test_a_fat_finger_is_refused_and_fires_its_guard_which_pauses_the_market(
    clock: ManualClock, quote: Quote, expected: str
) -> None:
    engine, events = make(clock)
    assert (engine.check_quote(quote, CTX) or "").startswith(expected)
    (event,) = guard_events(events)
    assert (event.guard, event.level, event.symbol) == (Guard.FAT_FINGER, GuardLevel.PAUSE, BTC)
    assert event.reason.startswith(expected)
    assert engine.market_state(BTC).state is MarketState.PAUSED
    assert engine.market_state(ETH).state is MarketState.ACTIVE
    # A sane order on the paused market is refused too until the cool-down has passed.
    assert (engine.check_quote(bid(), CTX) or "").startswith("MARKET_PAUSED: symbol=BTC/USDT")
    clock.advance(59 * S)
    engine.tick()
    assert engine.is_paused(BTC)
    clock.advance(1 * S)
    engine.tick()
    assert not engine.is_paused(BTC)
    assert market_changes(events)[-1] == (
        BTC,
        MarketState.ACTIVE,
        "RECOVERED: guard=fat_finger cooldown_s=60",
    )
    assert engine.check_quote(bid(), CTX) is None


def test_fat_finger_limits_default_to_five_times_the_policy_limits_and_can_be_set() -> None:
    default = RiskSettings()
    assert (default.fat_finger_bps_limit, default.fat_finger_quote_limit) == (1000.0, 5000.0)
    custom = RiskSettings(fat_finger_bps=300, fat_finger_order_quote=1500)
    assert (custom.fat_finger_bps_limit, custom.fat_finger_quote_limit) == (300.0, 1500.0)
    with pytest.raises(ValueError, match="at least price_band_bps"):
        RiskSettings(fat_finger_bps=100)
    with pytest.raises(ValueError, match="at least max_order_quote"):
        RiskSettings(fat_finger_order_quote=500)


def test_orders_per_second_is_a_token_bucket_on_the_injected_clock(clock: ManualClock) -> None:
    engine, _ = make(clock, max_orders_per_second=2, max_order_burst=3)
    assert [engine.check_quote(bid(), CTX) for _ in range(3)] == [None, None, None]
    assert engine.check_quote(bid(), CTX) == "ORDER_RATE_EXCEEDED: max_per_s=2 burst=3"
    # Checking without counting the rate (a desired set before the diff) takes nothing.
    assert engine.check_quote(bid(), CTX, count_rate=False) is None
    clock.advance(S // 2)  # one token back at 2/s
    assert engine.admit_order() is None
    assert engine.admit_order() is not None
    clock.advance(10 * S)  # refills to the burst size, no more
    assert [engine.admit_order() for _ in range(4)][-1] is not None


def test_order_room_is_what_the_rate_lets_out_now(clock: ManualClock) -> None:
    engine, _ = make(clock, max_orders_per_second=2, max_order_burst=3)
    assert engine.order_room() is None  # a full bucket: a whole burst
    assert engine.admit_order() is None
    assert engine.order_room() == 2
    assert [engine.admit_order() for _ in range(2)] == [None, None]
    assert engine.order_room() == 0
    clock.advance(S * 3 // 4)  # 1.5 tokens back at 2/s: one whole order
    assert engine.order_room() == 1
    assert engine.order_room() == 1  # reading it takes nothing
    clock.advance(10 * S)
    assert engine.order_room() is None
    # Creates already decided (waiting for their side's cancels) are spoken for.
    assert engine.order_room(reserved=2) == 1
    assert engine.order_room(reserved=5) == 0


def test_token_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=1, now_ns=10 * S)
    assert bucket.try_take(10 * S)
    assert not bucket.try_take(5 * S)
    assert bucket.try_take(11 * S)
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(rate_per_s=0.0, capacity=1, now_ns=0)


def test_a_desired_set_is_checked_as_if_each_allowed_quote_were_sent(clock: ManualClock) -> None:
    engine, _ = make(clock, max_open_orders_per_market=3, max_order_burst=1)
    ctx = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0, open_orders=1)
    result = engine.check_quotes([bid(), ask(), bid(59_800.0)], ctx)
    assert result.allowed == [bid(), ask()]
    ((quote, denial),) = result.denied
    assert quote == bid(59_800.0)
    assert denial == "OPEN_ORDERS_EXCEED_MAX: symbol=BTC/USDT open=3 max=3"
    # The rate is left to the point of sending: the one-token bucket is still full.
    assert engine.admit_order() is None


def test_quote_context_built_from_the_book_inventory_and_resting_orders(
    clock: ManualClock,
) -> None:
    inv = Inventory(BTC, 1.0, 100_000.0)
    inv.apply(OrderFilled(0, "bs1-a-1", BTC, "buy", "t1", 60_000.0, 0.1, None, None, None, None))
    resting = [bid(59_000.0, 0.02), ask(61_000.0, 0.03)]

    class Resting:
        def __init__(self, q: Quote) -> None:
            self.side, self.price, self.remaining = q.side, q.price, q.amount

    ctx = QuoteContext.build(
        book(clock), inv, [Resting(q) for q in resting], other_markets_quote=1_000.0
    )
    assert (ctx.mid, ctx.best_bid, ctx.best_ask) == (60_000.0, 59_990.0, 60_010.0)
    assert ctx.position_base == pytest.approx(0.1)
    assert (ctx.resting_buy_base, ctx.resting_sell_base, ctx.open_orders) == (0.02, 0.03, 2)
    expected = 59_000 * 0.02 + 61_000 * 0.03 + 0.1 * 60_000
    assert ctx.market_committed_quote == pytest.approx(expected)
    assert ctx.total_committed_quote == pytest.approx(expected + 1_000.0)
    assert QuoteContext.build(None, inv, []).mid is None


# =============================================================================== trading state


def test_halted_denies_every_order_and_the_change_is_published_with_a_timestamp(
    clock: ManualClock,
) -> None:
    engine, events = make(clock)
    assert engine.set_trading_state(TradingState.HALTED, reason="drill", who="test")
    assert engine.check_quote(bid(), CTX) == "TRADING_HALTED: reason=drill"
    assert events == [
        TradingStateChanged(
            clock.now_ns(), TradingState.ACTIVE, TradingState.HALTED, "drill", "test"
        )
    ]
    assert not engine.set_trading_state(TradingState.HALTED, reason="again")  # no change, no event
    assert len(events) == 1
    clock.advance(S)
    engine.set_trading_state(TradingState.ACTIVE, reason="resumed")
    assert engine.check_quote(bid(), CTX) is None
    last = events[-1]
    assert isinstance(last, TradingStateChanged)
    assert (last.ts_ns, last.state) == (clock.now_ns(), TradingState.ACTIVE)


def test_reducing_allows_only_orders_that_shrink_the_position(clock: ManualClock) -> None:
    engine, _ = make(clock)
    engine.set_trading_state(TradingState.REDUCING, reason="unwind")
    long = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0, position_base=0.02)
    assert engine.check_quote(ask(amount=0.01), long) is None
    assert engine.check_quote(bid(), long) == (
        "TRADING_REDUCING: side=buy amount=0.01 position=0.02"
    )
    assert (engine.check_quote(ask(amount=0.03), long) or "").startswith("TRADING_REDUCING")
    # Counting the sells already resting: a second 0.015 sell would flip the position.
    resting = QuoteContext(mid=60_000.0, position_base=0.02, resting_sell_base=0.015)
    assert (engine.check_quote(ask(amount=0.015), resting) or "").startswith("TRADING_REDUCING")
    flat = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0)
    assert engine.check_quote(ask(), flat) is not None
    short = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0, position_base=-0.01)
    assert engine.check_quote(bid(amount=0.01), short) is None


# =============================================================================== data guards


def test_stale_book_pauses_the_market_and_it_resumes_once_data_is_healthy_again(
    clock: ManualClock,
) -> None:
    engine, events = make(clock)  # stale after 5 s, healthy for 1 s to resume
    b = book(clock)
    engine.on_book(BTC, b)
    clock.advance(5 * S)
    engine.tick()
    assert guard_events(events) == []
    clock.advance(S // 10)
    engine.tick()
    (event,) = guard_events(events)
    assert (event.guard, event.level, event.symbol) == (Guard.STALE_BOOK, GuardLevel.PAUSE, BTC)
    assert event.reason == "STALE_BOOK: symbol=BTC/USDT age_s=5.100 max_s=5"
    assert event.numbers["age_s"] == pytest.approx(5.1)
    assert engine.market_state(BTC).state is MarketState.PAUSED
    assert engine.market_state(BTC).reasons.keys() == {"stale_book"}
    assert engine.guard_status(BTC)["stale_book"].startswith("pause: STALE_BOOK")
    assert engine.market_state(ETH).state is MarketState.ACTIVE
    assert (engine.check_quote(bid(), CTX) or "").startswith(
        "MARKET_PAUSED: symbol=BTC/USDT reasons=stale_book"
    )

    refresh(b, clock)
    engine.on_book(BTC, b)
    assert engine.is_paused(BTC)  # healthy, but not for long enough yet
    clock.advance(S)
    engine.tick()
    assert not engine.is_paused(BTC)
    assert market_changes(events) == [
        (BTC, MarketState.PAUSED, "GUARD: guard=stale_book"),
        (BTC, MarketState.ACTIVE, "RECOVERED: guard=stale_book healthy_s=1.000"),
    ]
    assert engine.guard_status(BTC)["stale_book"] == "ok"


def test_a_market_that_never_had_a_book_is_not_reported_stale(clock: ManualClock) -> None:
    engine, events = make(clock)
    clock.advance(3600 * S)
    engine.tick()
    assert events == []


def test_data_that_turns_bad_again_before_the_resume_delay_keeps_the_market_paused(
    clock: ManualClock,
) -> None:
    engine, events = make(clock)
    b = book(clock)
    engine.on_book(BTC, b)
    b.invalidate("gap")
    engine.on_book(BTC, b)
    assert engine.is_paused(BTC)
    refresh(b, clock)
    engine.on_book(BTC, b)
    clock.advance(S // 2)
    b.invalidate("gap again")
    engine.on_book(BTC, b)  # flapped: the healthy period starts over
    refresh(b, clock)
    engine.on_book(BTC, b)
    clock.advance(S // 2)
    engine.tick()
    assert engine.is_paused(BTC)
    clock.advance(S // 2)
    engine.tick()
    assert not engine.is_paused(BTC)
    # One firing per episode, not one per bad update.
    assert [e.guard for e in guard_events(events)] == [Guard.INVALID_BOOK]


def test_invalid_book_pauses_and_a_fresh_snapshot_resumes_immediately_with_no_delay(
    clock: ManualClock,
) -> None:
    engine, events = make(clock, guards={"data_resume_s": 0})
    b = book(clock)
    engine.on_book(BTC, b)
    b.invalidate("gap: expected 10 got 12")
    engine.on_book(BTC, b)
    (event,) = guard_events(events)
    assert event.reason == "INVALID_BOOK: symbol=BTC/USDT state=invalid"
    refresh(b, clock)
    engine.on_book(BTC, b)
    assert not engine.is_paused(BTC)


def test_feed_disconnect_pauses_and_reconnect_resumes(clock: ManualClock) -> None:
    engine, events = make(clock)
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.DISCONNECTED, "ws closed"))
    (event,) = guard_events(events)
    assert event.guard is Guard.FEED_DISCONNECTED
    assert event.reason == (
        "FEED_DISCONNECTED: symbol=BTC/USDT state=disconnected detail=ws closed"
    )
    assert engine.is_paused(BTC)
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.CONNECTED))
    assert engine.is_paused(BTC)
    clock.advance(S)
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.FALLBACK_REST, "polling"))
    assert not engine.is_paused(BTC)  # REST fallback still delivers data


@pytest.mark.parametrize(
    ("level", "paused", "trading"),
    [
        ("warn", False, TradingState.ACTIVE),
        ("pause", True, TradingState.ACTIVE),
        ("kill", False, TradingState.HALTED),
    ],
)
def test_a_guard_does_what_its_level_says(
    clock: ManualClock, level: str, paused: bool, trading: TradingState
) -> None:
    engine, events = make(clock, guards={"feed_disconnected": level})
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.DISCONNECTED))
    (event,) = guard_events(events)
    assert event.level is GuardLevel(level)
    assert engine.is_paused(BTC) is paused
    assert engine.trading_state is trading
    if trading is TradingState.HALTED:
        halted = [e for e in events if isinstance(e, TradingStateChanged)]
        assert halted[0].who == "guard:feed_disconnected"
        assert halted[0].reason == event.reason


def test_a_kill_guard_does_not_let_go_by_itself_and_fires_again_after_resume_if_still_true(
    clock: ManualClock,
) -> None:
    engine, events = make(clock, guards={"stale_book": "kill"})
    engine.on_book(BTC, book(clock))
    clock.advance(6 * S)
    engine.tick()
    assert engine.trading_state is TradingState.HALTED
    clock.advance(60 * S)
    engine.tick()
    assert engine.trading_state is TradingState.HALTED
    assert len(guard_events(events)) == 1
    engine.set_trading_state(TradingState.ACTIVE, reason="operator resume")
    engine.tick()
    assert engine.trading_state is TradingState.HALTED
    assert len(guard_events(events)) == 2


# =============================================================================== exchange guards


def test_post_only_quotes_refused_as_would_take_are_no_reject_burst(clock: ManualClock) -> None:
    engine, events = make(clock)  # 5 in 10 s
    for _ in range(8):
        engine.on_notice(failure(clock, "WouldTake"))
        clock.advance(S // 10)
    engine.tick()
    assert guard_events(events) == []
    assert not engine.is_paused(BTC)
    for _ in range(5):  # other refusals still count
        engine.on_notice(failure(clock))
    assert [e.guard for e in guard_events(events)] == [Guard.REJECT_BURST]


def test_a_burst_of_rejects_pauses_the_market_until_the_cooldown_after_it_clears(
    clock: ManualClock,
) -> None:
    engine, events = make(clock)  # 5 in 10 s; cool-down 60 s
    for _ in range(4):
        engine.on_notice(failure(clock))
        clock.advance(2 * S)
    assert guard_events(events) == []
    engine.on_notice(failure(clock))
    (event,) = guard_events(events)
    assert (event.guard, event.level, event.symbol) == (Guard.REJECT_BURST, GuardLevel.PAUSE, BTC)
    assert event.reason == "REJECT_BURST: symbol=BTC/USDT failures=5 window_s=10 max=5"
    assert engine.is_paused(BTC)
    assert not engine.is_paused(ETH)
    clock.advance(30 * S)
    engine.tick()  # the window has cleared, but the cool-down runs from the firing
    assert engine.is_paused(BTC)
    clock.advance(30 * S)
    engine.tick()
    assert not engine.is_paused(BTC)


def test_rejects_spread_out_over_more_than_the_window_do_not_fire(clock: ManualClock) -> None:
    engine, events = make(clock)
    for _ in range(20):
        engine.on_notice(failure(clock))
        clock.advance(3 * S)
    assert guard_events(events) == []


def test_without_a_cooldown_only_the_operator_resumes_a_non_data_pause(
    clock: ManualClock,
) -> None:
    engine, events = make(clock, guards={"pause_auto_resume": False, "reject_burst_count": 1})
    engine.on_notice(failure(clock))
    clock.advance(3600 * S)
    engine.tick()
    assert engine.is_paused(BTC)
    assert engine.unpause(BTC, who="alice") is None
    assert not engine.is_paused(BTC)
    assert market_changes(events)[-1] == (
        BTC,
        MarketState.ACTIVE,
        "UNPAUSED: who=alice lifted=reject_burst",
    )


def test_repeated_rate_limits_pause_every_market_and_are_not_counted_as_rejects(
    clock: ManualClock,
) -> None:
    engine, events = make(clock, guards={"reject_burst_count": 1})
    engine.on_notice(failure(clock, "RateLimited"))
    engine.on_notice(failure(clock, "RateLimited", symbol=ETH))
    assert guard_events(events) == []
    engine.on_notice(failure(clock, "RateLimited"))
    (event,) = guard_events(events)
    assert (event.guard, event.symbol) == (Guard.RATE_LIMITED, None)
    assert event.reason == "RATE_LIMITED: failures=3 window_s=60 max=3"
    assert engine.is_paused(BTC)
    assert engine.is_paused(ETH)
    assert engine.guard_status(None)["rate_limited"].startswith("pause: RATE_LIMITED")
    # A market first seen now joins the account-wide pause.
    engine.on_feed_status(FeedStatus("SOL/USDT", clock.now_ns(), FeedState.CONNECTED))
    assert engine.is_paused("SOL/USDT")
    clock.advance(61 * S)
    engine.tick()
    assert not any(engine.is_paused(s) for s in (BTC, ETH, "SOL/USDT"))


def test_other_notices_are_ignored(clock: ManualClock) -> None:
    engine, events = make(clock, guards={"reject_burst_count": 1})
    engine.on_notice(OrderFilled(0, "c", BTC, "buy", "t", 1.0, 1.0, None, None, None, None))
    assert events == []


def test_balances_disagreeing_beyond_tolerance_kill(clock: ManualClock) -> None:
    engine, events = make(clock)  # tolerance 1%, level kill
    expected = {"BTC": 1.0, "USDT": 50_000.0}
    engine.on_balances({"BTC": 1.005, "USDT": 50_000.0, "BNB": 3.0}, expected)
    assert events == []
    engine.on_balances({"BTC": 1.0, "USDT": 49_000.0}, expected)
    (event,) = guard_events(events)
    assert (event.guard, event.level, event.symbol) == (
        Guard.BALANCE_MISMATCH,
        GuardLevel.KILL,
        None,
    )
    assert event.reason == (
        "BALANCE_MISMATCH: currency=USDT venue=49000 bot=50000 diff=-1000 tolerance_fraction=0.01"
    )
    assert event.numbers["diff"] == -1000.0
    assert engine.trading_state is TradingState.HALTED
    assert engine.check_quote(bid(), CTX) == f"TRADING_HALTED: reason={event.reason}"


def test_a_balance_missing_on_the_venue_counts_as_zero(clock: ManualClock) -> None:
    engine, events = make(clock, guards={"balance_mismatch": "warn"})
    engine.on_balances({}, {"BTC": 0.5})
    (event,) = guard_events(events)
    assert "venue=0 bot=0.5" in event.reason
    assert engine.trading_state is TradingState.ACTIVE
    engine.on_balances({"BTC": 0.5}, {"BTC": 0.5})
    assert engine.guard_status(None)["balance_mismatch"] == "ok"


# =============================================================================== loss guards


def test_daily_loss_kills_and_a_new_utc_day_starts_from_the_equity_it_opens_with(
    clock: ManualClock,
) -> None:
    engine, events = make(clock)  # max_daily_loss_quote = 250
    engine.on_equity(BTC, 100.0)
    engine.on_equity(ETH, -249.0)  # total -149: a loss of 249 since the day opened at 100
    assert guard_events(events) == []
    engine.on_equity(ETH, -250.0)
    (event,) = guard_events(events)
    assert (event.guard, event.level) == (Guard.DAILY_LOSS, GuardLevel.KILL)
    assert event.reason == "DAILY_LOSS: loss=250 max=250 equity=-150 day_start=100"
    assert engine.trading_state is TradingState.HALTED
    # The operator resumes the same day: the limit still holds, so it trips again at once.
    engine.set_trading_state(TradingState.ACTIVE, reason="resume", who="alice")
    assert engine.trading_state is TradingState.HALTED
    assert len(guard_events(events)) == 2
    # Next UTC day: the day's loss is measured from the equity the day opens with.
    day = 86_400 * S
    clock.set((clock.now_ns() // day + 1) * day + S)
    engine.set_trading_state(TradingState.ACTIVE, reason="new day", who="alice")
    assert engine.trading_state is TradingState.ACTIVE
    engine.on_equity(ETH, -400.0)  # total -300: 150 below the day's opening -150
    assert engine.trading_state is TradingState.ACTIVE
    assert engine.loss()["daily_loss"] == pytest.approx(150.0)


def test_drawdown_from_peak_kills_and_resume_rebases_the_peak(clock: ManualClock) -> None:
    engine, events = make(clock, max_daily_loss_quote=10_000)  # max_drawdown_quote = 500
    for equity in (0.0, 300.0, 100.0, -199.0):
        engine.on_equity(None, equity)
    assert guard_events(events) == []
    engine.on_equity(None, -200.0)
    (event,) = guard_events(events)
    assert event.guard is Guard.DRAWDOWN
    assert event.reason == "DRAWDOWN: drawdown=500 max=500 equity=-200 peak=300"
    engine.set_trading_state(TradingState.ACTIVE, reason="acknowledged", who="alice")
    assert engine.trading_state is TradingState.ACTIVE
    assert engine.loss()["drawdown"] == 0.0
    engine.on_equity(None, -699.0)
    assert engine.trading_state is TradingState.ACTIVE
    engine.on_equity(None, -700.0)
    assert engine.trading_state is TradingState.HALTED


# =============================================================================== operator


def test_operator_pause_holds_until_unpause_and_data_guards_survive_an_unpause(
    clock: ManualClock,
) -> None:
    engine, events = make(clock)
    assert engine.pause("XRP/USDT", reason="x", who="bob") == "UNKNOWN_MARKET: symbol=XRP/USDT"
    assert engine.unpause(BTC) == "NOT_PAUSED: symbol=BTC/USDT"
    assert engine.pause(BTC, reason="listing news", who="bob") is None
    assert engine.market_state(BTC).reasons == {
        "operator": "OPERATOR_PAUSE: who=bob reason=listing news"
    }
    clock.advance(3600 * S)
    engine.tick()
    assert engine.is_paused(BTC)
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.DISCONNECTED))
    assert engine.unpause(BTC, who="bob") == (
        "STILL_PAUSED: symbol=BTC/USDT guards=feed_disconnected"
    )
    assert engine.market_state(BTC).reasons.keys() == {"feed_disconnected"}
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.CONNECTED))
    clock.advance(S)
    engine.tick()
    assert not engine.is_paused(BTC)
    assert [c[1] for c in market_changes(events)] == [MarketState.PAUSED, MarketState.ACTIVE]


def test_events_are_buffered_for_draining_and_a_broken_observer_does_not_stop_them(
    clock: ManualClock,
) -> None:
    engine, _ = make(clock)

    def broken(event: RiskEvent) -> None:
        raise RuntimeError("observer bug")

    engine.subscribe(broken)
    engine.on_feed_status(FeedStatus(BTC, clock.now_ns(), FeedState.DISCONNECTED))
    drained = engine.drain_events()
    assert [type(e).__name__ for e in drained] == ["GuardEvent", "MarketStateChanged"]
    assert engine.drain_events() == []
    snap = engine.snapshot()
    assert snap["markets"][BTC]["state"] == "paused"
    assert snap["trading_state"] == "active"


def test_the_engine_refuses_a_config_of_the_wrong_type(clock: ManualClock) -> None:
    with pytest.raises(TypeError, match="RiskSettings"):
        RiskEngine({"max_order_quote": 1}, clock=clock, log=null_logger())  # type: ignore[arg-type]


def test_guard_levels_and_limits_load_from_the_config_and_environment(tmp_path: Any) -> None:
    from bot.errors import ConfigError
    from bot.settings import load_settings

    cfg = tmp_path / "bot.toml"
    cfg.write_text('[risk.guards]\nstale_book_s = 2\nreject_burst = "warn"\n', "utf-8")
    s = load_settings(cfg, env={"BACKSTOP_RISK__GUARDS__STALE_BOOK": "kill"})
    assert (s.risk.guards.stale_book, s.risk.guards.stale_book_s) == ("kill", 2.0)
    assert s.risk.guards.reject_burst == "warn"
    with pytest.raises(ConfigError, match=r"risk\.guards\.drawdown"):
        load_settings(env={"BACKSTOP_RISK__GUARDS__DRAWDOWN": "explode"})
