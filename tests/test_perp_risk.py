"""Risk, collateral and strategy on perpetual futures: the position guards (liquidation
distance, leverage, position limit, funding cost, mark vs last), contract-aware
pre-trade checks, the budget on collateral, and the backstop's reduce-only mode.

Hand-computed numbers are in the comments next to each assertion.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.budget import MARGIN_BALANCE, MARKET_CAP, Budget, BudgetLimits
from bot.clock import ManualClock
from bot.detector import DetectorState
from bot.inventory import PerpInventory, inventory_for
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.orders.events import OrderFilled
from bot.positions import PerpLimits, PositionReading
from bot.risk import (
    GuardEvent,
    GuardLevel,
    MarketState,
    MarketStateChanged,
    QuoteContext,
    RiskEngine,
    RiskEvent,
)
from bot.risk.events import Guard
from bot.settings.models import (
    BackstopParams,
    GuardSettings,
    MarketSettings,
    PerpSettings,
    ReserveSettings,
    RiskSettings,
)
from strategies.backstop import BackstopStrategy
from strategies.base import MarketRules, Quote
from tests.strategy_helpers import book, budget_view, context, detector_update, inventory_view

LINEAR = "BTC/USDT:USDT"
INVERSE = "BTC/USD:BTC"
NS = 1_000_000_000
LIMITS = PerpLimits(
    max_leverage=8.0,
    min_liquidation_distance_bps=500.0,
    max_funding_rate=0.001,
    mark_last_band_bps=50.0,
    max_position_contracts=1.0,
    max_position_notional_quote=50_000.0,
)


def market(symbol: str) -> dict[str, Any]:
    m = offline_markets("binanceusdm" if symbol == LINEAR else "binancecoinm")
    assert m is not None
    return m[symbol]


def reading(**kw: Any) -> PositionReading:
    base: dict[str, Any] = {
        "symbol": LINEAR,
        "ts_ns": 0,
        "contracts": 0.5,
        "notional_quote": 30_000.0,
        "mark": 60_000.0,
        "last": 60_000.0,
        "liquidation_price": 49_000.0,
        "leverage": 5.0,
        "funding_rate": 0.0001,
        "limits": LIMITS,
    }
    base.update(kw)
    return PositionReading(**base)


def engine(clock: ManualClock, **guards: Any) -> tuple[RiskEngine, list[RiskEvent]]:
    config = RiskSettings(
        max_order_quote=100_000,
        max_notional_per_market_quote=100_000,
        max_total_notional_quote=100_000,
        guards=GuardSettings(**guards),
    )
    risk = RiskEngine(config, clock=clock, log=null_logger(), symbols=[LINEAR])
    events: list[RiskEvent] = []
    risk.subscribe(events.append)
    return risk, events


def ctx(position: float, **kw: Any) -> QuoteContext:
    return QuoteContext(
        mid=60_000.0,
        best_bid=59_999.9,
        best_ask=60_000.1,
        position_base=position,
        leverage=5.0,
        perp=LIMITS,
        **kw,
    )


def q(side: str, price: float, amount: float, symbol: str = LINEAR) -> Quote:
    return Quote(symbol, "buy" if side == "buy" else "sell", price, amount)


# --------------------------------------------------------------------------- guards


def test_near_liquidation_the_market_pulls_quotes_and_only_reduces(clock: ManualClock) -> None:
    risk, events = engine(clock, pause_cooldown_s=10)
    # Long 0.5 at mark 60,000 with liquidation at 57,500: 416.7 bps away, under 500.
    risk.on_position(reading(liquidation_price=57_500.0))

    (fired,) = [e for e in events if isinstance(e, GuardEvent)]
    assert (fired.guard, fired.level) == (Guard.LIQUIDATION_DISTANCE, GuardLevel.REDUCE)
    assert "distance_bps=416.7" in fired.reason
    (change,) = [e for e in events if isinstance(e, MarketStateChanged)]
    assert change.state is MarketState.REDUCING  # the trader cancels every quote on this
    assert risk.is_reducing(LINEAR)
    assert not risk.is_paused(LINEAR)
    assert risk.market_state(LINEAR).state is MarketState.REDUCING

    long = ctx(0.5)
    denial = risk.check_quote(q("buy", 59_990.0, 0.1), long, count_rate=False)
    assert denial is not None
    assert denial.startswith("MARKET_REDUCING")
    assert risk.check_quote(q("sell", 60_010.0, 0.5), long, count_rate=False) is None
    denial = risk.check_quote(q("sell", 60_010.0, 0.6), long, count_rate=False)  # would flip
    assert denial is not None
    assert denial.startswith("MARKET_REDUCING")

    # Far again: it lets go only after the cool-down since it fired.
    clock.advance(5 * NS)
    risk.on_position(reading(liquidation_price=50_000.0))
    assert risk.is_reducing(LINEAR)
    clock.advance(6 * NS)
    risk.on_position(reading(liquidation_price=50_000.0))
    assert not risk.is_reducing(LINEAR)
    assert risk.market_state(LINEAR).state is MarketState.ACTIVE


def test_over_leverage_or_over_the_position_limit_also_reduces(clock: ManualClock) -> None:
    risk, _ = engine(clock)
    risk.on_position(reading(leverage=9.5))  # max 8
    assert risk.market_state(LINEAR).reasons.keys() == {"max_leverage"}
    risk2, _ = engine(clock)
    risk2.on_position(reading(contracts=1.2, notional_quote=72_000.0))  # max 1 contract, 50k
    (reason,) = risk2.market_state(LINEAR).reasons.values()
    assert "contracts=1.2 max_contracts=1" in reason
    assert "max_notional=50000" in reason
    assert risk2.guard_status(LINEAR)["position_limit"].startswith("reduce:")


def test_extreme_funding_pauses_the_side_that_pays_it(clock: ManualClock) -> None:
    risk, events = engine(clock)
    risk.on_position(reading(funding_rate=0.002))  # longs pay 0.2 % per interval

    assert risk.paused_sides(LINEAR) == frozenset({"buy"})
    assert not risk.is_paused(LINEAR)
    assert not risk.is_reducing(LINEAR)
    (fired,) = [e for e in events if isinstance(e, GuardEvent)]
    assert fired.level is GuardLevel.PAUSE_SIDE
    grow_long = risk.check_quote(q("buy", 59_990.0, 0.1), ctx(0.5), count_rate=False)
    assert grow_long is not None
    assert grow_long.startswith("SIDE_PAUSED")
    assert risk.check_quote(q("sell", 60_010.0, 0.1), ctx(0.5), count_rate=False) is None
    # Buying back a short only shrinks it: allowed.
    assert risk.check_quote(q("buy", 59_990.0, 0.1), ctx(-0.5), count_rate=False) is None

    risk.on_position(reading(funding_rate=-0.003))  # now the shorts pay
    assert risk.paused_sides(LINEAR) == frozenset({"sell"})
    risk.on_position(reading(funding_rate=0.0001))
    assert risk.paused_sides(LINEAR) == frozenset()


def test_a_mark_far_from_the_last_trade_pauses_like_bad_data(clock: ManualClock) -> None:
    risk, _ = engine(clock, data_resume_s=1.0)
    risk.on_position(reading(last=60_400.0))  # 66.7 bps from the mark, band 50

    assert risk.is_paused(LINEAR)
    assert "mark_price_band" in risk.market_state(LINEAR).reasons
    clock.advance(NS // 2)
    risk.on_position(reading(last=60_010.0))
    assert risk.is_paused(LINEAR)  # healthy for 0.5 s only
    clock.advance(NS)
    risk.on_position(reading(last=60_010.0))
    assert not risk.is_paused(LINEAR)


def test_a_spot_market_shows_no_perpetual_guards(clock: ManualClock) -> None:
    risk, _ = engine(clock)
    assert "liquidation_distance" not in risk.guard_status(LINEAR)
    risk.on_position(reading())
    assert risk.guard_status(LINEAR)["liquidation_distance"] == "ok"


# --------------------------------------------------------------------------- checks


def test_pre_trade_checks_count_contracts_notional_and_margin(clock: ManualClock) -> None:
    risk, _ = engine(clock)
    # 0.5 long + 0.6 buy = 1.1 contracts > 1.
    denial = risk.check_quote(q("buy", 59_990.0, 0.6), ctx(0.5), count_rate=False)
    assert denial is not None
    assert denial.startswith("CONTRACTS_EXCEED_MAX")
    # 0.8 contracts x 1 x 65,000 = 52,000 USDT > 50,000 (within 1 contract).
    limits = PerpLimits(max_position_notional_quote=50_000.0)
    c = QuoteContext(mid=65_000.0, leverage=5.0, perp=limits)
    denial = risk.check_quote(q("sell", 65_000.0, 0.8), c, count_rate=False)
    assert denial is not None
    assert denial.startswith("POSITION_NOTIONAL_EXCEEDS_MAX")

    # Caps compare collateral: a 0.5 buy at 60,000 commits 30,000 / 5 = 6,000 of margin.
    tight = RiskEngine(
        RiskSettings(
            max_order_quote=40_000,
            max_notional_per_market_quote=40_000,
            max_total_notional_quote=40_000,
        ),
        clock=clock,
        log=null_logger(),
        symbols=[LINEAR],
    )
    base = QuoteContext(
        mid=60_000.0, leverage=5.0, market_committed_quote=33_000.0, total_committed_quote=33_000.0
    )
    assert tight.check_quote(q("buy", 60_000.0, 0.5), base, count_rate=False) is None
    over = QuoteContext(
        mid=60_000.0, leverage=5.0, market_committed_quote=34_001.0, total_committed_quote=34_001.0
    )
    denial = tight.check_quote(q("buy", 60_000.0, 0.5), over, count_rate=False)
    assert denial is not None
    assert "order=6000" in denial
    # Inverse: 300 contracts of 100 USD are 30,000 USD of notional at any price.
    inverse = QuoteContext(mid=60_000.0, rules=MarketRules(contract_size=100, inverse=True))
    assert inverse.notional(q("buy", 60_000.0, 300, INVERSE)) == 30_000.0
    assert inverse.collateral(q("buy", 60_000.0, 300, INVERSE)) == 30_000.0  # spot-like: 1x


def test_the_quote_context_of_a_perpetual_is_in_contracts() -> None:
    settings = MarketSettings(
        symbol=INVERSE,
        reserve=ReserveSettings(base=1.0),
        perp=PerpSettings(leverage=4, max_position_contracts=500),
    )
    inv = inventory_for(settings, market(INVERSE))
    assert isinstance(inv, PerpInventory)
    inv.apply(_fill(INVERSE, "sell", 200, 50_000.0))
    c = QuoteContext.build(None, inv, [])
    assert (c.position_base, c.leverage, c.rules.contract_size, c.rules.inverse) == (
        -200.0,
        4.0,
        100.0,
        True,
    )
    assert c.perp is not None
    assert c.perp.max_position_contracts == 500


# --------------------------------------------------------------------------- budget


def _fill(symbol: str, side: str, amount: float, price: float) -> OrderFilled:
    return OrderFilled(
        0,
        "c",
        symbol,
        "buy" if side == "buy" else "sell",
        "t",
        price,
        amount,
        0.0,
        None,
        None,
        None,
    )


def linear_inventory(position: float = 0.0) -> PerpInventory:
    settings = MarketSettings(
        symbol=LINEAR,
        reserve=ReserveSettings(quote=10_000, floor_fraction=0.1),
        perp=PerpSettings(leverage=5),
    )
    inv = inventory_for(settings, market(LINEAR))
    assert isinstance(inv, PerpInventory)
    if position:
        inv.apply(_fill(LINEAR, "buy", position, 60_000.0))
    inv.mark(0, 60_000.0)
    return inv


def test_the_budget_caps_collateral_on_a_perpetual() -> None:
    budget = Budget(
        BudgetLimits(max_order_quote=10_000, max_market_quote=2_000, max_total_quote=5_000),
        {LINEAR: 0.1},
    )
    rules = MarketRules.from_market(market(LINEAR))
    e = budget.exposure(linear_inventory(), 60_000.0, fee_rate=0.0004, rules=rules)
    assert e.margin is not None
    assert e.committed_quote == 0.0
    # Free margin: wallet 10,000 - floor 1,000 = 9,000.
    assert e.margin.free_quote == pytest.approx(9_000.0)

    fit = budget.fit([q("buy", 60_000.0, 0.1), q("buy", 59_990.0, 0.1)], e)
    # Initial margin per contract with the half-tick margin: 60,000.05 / 5 = 12,000.01,
    # so the first 0.1 commits 1,200.001 of the 2,000 cap; the second is trimmed to what
    # is left: 799.999 / (59,990.05 / 5) contracts.
    assert fit.quotes[0].amount == 0.1
    (trimmed,) = fit.trimmed
    assert trimmed.reason == MARKET_CAP
    assert trimmed.kept_amount == pytest.approx(799.999 / (59_990.05 / 5), rel=1e-9)
    assert fit.committed_quote == pytest.approx(2_000.0)

    # The view hands the strategy notional: (2,000 - 0) x 5 leverage, less the tick margin.
    view = budget.view(e)
    assert view.quote_room == pytest.approx(10_000.0, rel=1e-5)
    assert view.closing_is_free


def test_closing_a_position_needs_no_margin_room() -> None:
    budget = Budget(
        BudgetLimits(max_order_quote=50_000, max_market_quote=200, max_total_quote=200),
        {LINEAR: 0.1},
    )
    rules = MarketRules.from_market(market(LINEAR))
    inv = linear_inventory(position=0.3)
    e = budget.exposure(inv, 60_000.0, fee_rate=0.0004, rules=rules)
    # Maintenance of the long: 0.3 x 60,000 x 2.5 % = 450, already over the 200 cap.
    assert e.committed_quote == pytest.approx(450.0)
    fit = budget.fit([q("buy", 59_990.0, 0.01), q("sell", 60_010.0, 0.3)], e)
    # The sell only closes the long: kept whole. The buy would add margin: refused.
    assert [(x.side, x.amount) for x in fit.quotes] == [("sell", 0.3)]
    assert [n.reason for n in fit.refused] == [MARKET_CAP]


def test_the_margin_balance_bounds_what_opens() -> None:
    budget = Budget(
        BudgetLimits(max_order_quote=1e9, max_market_quote=1e9, max_total_quote=1e9), {LINEAR: 0.1}
    )
    rules = MarketRules.from_market(market(LINEAR))
    inv = linear_inventory()
    e = budget.exposure(inv, 60_000.0, fee_rate=0.0004, rules=rules)
    fit = budget.fit([q("buy", 60_000.0, 1.0)], e)
    # 9,000 free / (initial margin 12,000.01 + fee 60,000 x 0.0004 = 24) per contract.
    (note,) = fit.trimmed
    assert note.reason == MARGIN_BALANCE
    assert note.kept_amount == pytest.approx(9_000 / (12_000.01 + 24), rel=1e-9)


# --------------------------------------------------------------------------- strategy


def test_in_reduce_only_mode_the_backstop_asks_only_to_shrink_the_position() -> None:
    s = BackstopStrategy(BackstopParams())
    base = context(
        detector_update(DetectorState.ENGAGED),
        inventory=inventory_view(0.2),
        # A perpetual's view: closing needs no room, even with none left.
        budget=budget_view(quote_room=0.0, max_order_quote=50_000.0, closing_is_free=True),
    )
    reduce = type(base)(
        **{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "reduce_only": True}
    )
    decision = s.decide(reduce)
    (quote,) = decision.quotes
    # Long 0.2: one post-only sell at the best ask for all of it.
    assert (quote.side, quote.price, quote.amount, quote.post_only) == (
        "sell",
        60_000.01,
        0.2,
        True,
    )
    assert quote.tag.startswith("reduce:")


def test_the_ladder_sizes_contracts_on_an_inverse_market() -> None:
    rules = MarketRules(
        price_tick=0.1, amount_step=1, amount_min=1, contract_size=100, inverse=True
    )
    s = BackstopStrategy(BackstopParams(levels=1, min_side_fraction=1.0))
    c = context(
        detector_update(DetectorState.ENGAGED, baseline=(None, None)),
        ob=book(60_000.0, 60_000.1),
        budget=budget_view(quote_room=20_000.0, max_order_quote=50_000.0),
        rules=rules,
    )
    decision = s.decide(c)
    bid, ask = decision.quotes
    # Each side gets notional in USD; the amount is USD / 100 per contract.
    for quote in (bid, ask):
        assert rules.notional(quote.price, quote.amount) == pytest.approx(quote.amount * 100)
        assert 10 <= quote.amount <= 100
    # Paused sides are not quoted.
    paused = type(c)(
        **{**{f: getattr(c, f) for f in c.__dataclass_fields__}, "paused_sides": frozenset({"buy"})}
    )
    assert [x.side for x in s.decide(paused).quotes] == ["sell"]
