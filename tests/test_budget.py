"""The budget: every cap trims or refuses with its reason, and no scenario can exceed a cap."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_helpers import RULES, SYMBOL, fill

from bot.budget import (
    BAD_QUOTE,
    BASE_BALANCE,
    MARKET_CAP,
    ORDER_CAP,
    POSITION_CAP,
    QUOTE_BALANCE,
    TOTAL_CAP,
    Budget,
    BudgetLimits,
    Exposure,
)
from bot.inventory import Inventory
from bot.orders.state import OrderState, TrackedOrder
from bot.settings import load_settings
from strategies.base import MarketRules, Quote

MID = 60_000.0
LIMITS = BudgetLimits(max_order_quote=1_000, max_market_quote=5_000, max_total_quote=10_000)


def buy(notional: float, price: float = MID, tag: str = "") -> Quote:
    return Quote(SYMBOL, "buy", price, notional / price, tag=tag)


def sell(notional: float, price: float = MID, tag: str = "") -> Quote:
    return Quote(SYMBOL, "sell", price, notional / price, tag=tag)


def notional(quotes: tuple[Quote, ...]) -> float:
    return sum(q.notional for q in quotes)


def test_quotes_within_every_cap_pass_unchanged() -> None:
    desired = [buy(900), sell(900), buy(900), sell(900)]
    fit = Budget(LIMITS).fit(desired, Exposure(SYMBOL, MID))
    assert fit.quotes == tuple(desired)
    assert fit.refused == fit.trimmed == ()
    assert fit.committed_quote == pytest.approx(3_600.0)


def test_quotes_sized_to_the_whole_view_pass_the_fit_untouched() -> None:
    budget = Budget(LIMITS)
    e = Exposure(SYMBOL, MID, net_base=0.01, rules=RULES)  # 600 of position: 4,400 of room
    view = budget.view(e)
    per = view.max_order_quote
    rest = view.quote_room - 4 * per
    desired = [buy(per, MID - 5 * i) for i in range(1, 3)] + [
        sell(per, MID + 5 * i) for i in (1, 2)
    ]
    desired.append(sell(rest, MID + 20))
    fit = budget.fit(desired, e)
    assert fit.quotes == tuple(desired)
    assert fit.committed_quote <= LIMITS.max_market_quote


def test_per_order_cap_trims_an_oversized_quote() -> None:
    fit = Budget(LIMITS).fit([buy(1_500, tag="x")], Exposure(SYMBOL, MID, rules=RULES))
    (q,) = fit.quotes
    # Priced at the worst rounding: half a tick above the quote's price.
    assert (q.price + 0.005) * q.amount == pytest.approx(1_000.0)
    assert q.tag == "x"
    (note,) = fit.trimmed
    assert note.reason == ORDER_CAP
    assert note.kept_amount == q.amount


def test_market_cap_counts_the_position_and_leaving_orders() -> None:
    # 0.05 BTC long at 60,000 = 3,000, plus 500 being cancelled: 1,500 of room left.
    e = Exposure(SYMBOL, MID, net_base=0.05, leaving_quote=500.0)
    fit = Budget(LIMITS).fit([buy(1_000), buy(1_000), buy(1_000)], e)
    assert [round(q.notional) for q in fit.quotes] == [1_000, 500]
    assert [n.reason for n in fit.trimmed] == [MARKET_CAP]
    assert [n.reason for n in fit.refused] == [MARKET_CAP]
    assert fit.committed_quote == pytest.approx(5_000.0)


def test_total_cap_counts_the_other_markets() -> None:
    e = Exposure(SYMBOL, MID, other_markets_quote=9_400.0)
    fit = Budget(LIMITS).fit([sell(500), sell(500)], e)
    assert notional(fit.quotes) == pytest.approx(600.0)
    assert fit.trimmed[0].reason == TOTAL_CAP


def test_buys_need_quote_and_sells_need_base_above_the_floor_with_fees() -> None:
    e = Exposure(SYMBOL, MID, quote_free=500.5, base_free=0.01, fee_rate=0.001)
    fit = Budget(LIMITS).fit([buy(900), sell(900)], e)
    b, s = fit.quotes
    assert b.notional * 1.001 == pytest.approx(500.5)
    assert s.amount * 1.001 == pytest.approx(0.01)
    assert {n.reason for n in fit.trimmed} == {QUOTE_BALANCE, BASE_BALANCE}


def test_position_cap_bounds_the_position_if_every_order_filled() -> None:
    limits = BudgetLimits(max_position_base={"BTC": 0.02})
    e = Exposure(SYMBOL, MID, net_base=0.015, max_position_base=0.02)
    fit = Budget(limits).fit([buy(600), sell(600)], e)
    b, s = fit.quotes
    assert b.amount == pytest.approx(0.005)
    assert s.amount == pytest.approx(0.01)
    assert fit.trimmed[0].reason == POSITION_CAP


def test_position_reducing_quotes_are_funded_first() -> None:
    # Long 0.07 BTC (4,200): only 800 of room. The sell (reduces) gets it, not the buy
    # listed first.
    e = Exposure(SYMBOL, MID, net_base=0.07)
    fit = Budget(LIMITS).fit([buy(800, tag="b"), sell(800, tag="s")], e)
    assert [q.tag for q in fit.quotes] == ["s"]
    assert fit.refused[0].quote.tag == "b"
    assert fit.refused[0].reason == MARKET_CAP


def test_a_trim_below_the_market_minimum_is_a_refusal() -> None:
    e = Exposure(SYMBOL, MID, net_base=0.0, leaving_quote=4_997.0, rules=RULES)
    fit = Budget(LIMITS).fit([buy(100)], e)  # 3 USDT of room: under Binance's 5 USDT
    assert fit.quotes == ()
    assert fit.refused[0].reason == MARKET_CAP
    assert "room" in str(fit.refused[0])


@pytest.mark.parametrize(
    "quote",
    [
        Quote("ETH/USDT", "buy", 3_000.0, 0.1),
        Quote(SYMBOL, "buy", math.nan, 0.1),
        Quote(SYMBOL, "sell", MID, 0.0),
        Quote(SYMBOL, "hold", MID, 0.1),  # type: ignore[arg-type]
    ],
)
def test_malformed_quotes_are_refused(quote: Quote) -> None:
    fit = Budget(LIMITS).fit([quote], Exposure(SYMBOL, MID))
    assert fit.quotes == ()
    assert fit.refused[0].reason == BAD_QUOTE


def test_exposure_and_view_from_an_inventory_and_leaving_orders() -> None:
    cfg = load_settings(
        env={},
        overrides={
            "markets": [
                {
                    "symbol": SYMBOL,
                    "reserve": {"base": 2.0, "quote": 120_000.0, "floor_fraction": 0.1},
                }
            ],
            "risk": {"max_position_base": {"BTC": 0.5}},
        },
    )
    budget = Budget.from_settings(cfg)
    inv = Inventory.from_market(cfg.markets[0])
    inv.apply(fill("buy", MID, 0.01))  # long 0.01, 600 USDT spent
    leaving = [
        TrackedOrder("a", SYMBOL, "sell", 60_100.0, 0.02, OrderState.PENDING_CANCEL),
        TrackedOrder("b", SYMBOL, "buy", 59_900.0, 0.01, OrderState.PENDING_CANCEL),
    ]
    e = budget.exposure(
        inv, MID, leaving=leaving, other_markets_quote=1_000.0, fee_rate=0.001, rules=RULES
    )
    assert e.base_free == pytest.approx(2.01 - 0.2)
    assert e.quote_free == pytest.approx(119_400.0 - 12_000.0)
    assert e.leaving_quote == pytest.approx(0.02 * 60_100 + 0.01 * 59_900)
    assert e.leaving_sell_base == pytest.approx(0.02)
    assert e.leaving_buy_base == pytest.approx(0.01)
    assert e.max_position_base == 0.5
    view = budget.view(e)
    committed = 600.0 + e.leaving_quote
    assert view.quote_room == pytest.approx(
        min(5_000.0 - committed, 10_000.0 - 1_000.0 - committed) * (1 - 0.01 / MID), rel=1e-8
    )
    assert view.base_available == pytest.approx(1.81 - 0.02 * 1.001)
    assert view.quote_available == pytest.approx(107_400.0 - 599.0 * 1.001)
    # Less the price rounding margin the fit counts (a tick over the price: 1.7e-7).
    assert view.max_order_quote == pytest.approx(cfg.risk.max_order_quote * (1 - 0.01 / MID))


# --------------------------------------------------------------------------- the property

money = st.floats(0.0, 20_000.0)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[BudgetLimits, Exposure, list[Quote]]:
    order = draw(st.floats(1.0, 5_000.0))
    market = order + draw(money)
    total = market + draw(money)
    mid = draw(st.floats(100.0, 100_000.0))
    # Position cap, balances and other markets' use in units of the per-market cap, so
    # every limit binds in some scenarios and none in others.
    unit = market / mid
    pos_cap = draw(st.one_of(st.none(), st.floats(0.0, 2.0).map(lambda f: f * unit)))
    limits = BudgetLimits(order, market, total, {"BTC": pos_cap} if pos_cap is not None else {})
    rules = draw(st.sampled_from([MarketRules(), RULES, MarketRules(price_tick=1.0, cost_min=10)]))
    exposure = Exposure(
        SYMBOL,
        mid,
        net_base=draw(st.floats(-0.8, 0.8)) * unit,
        base_free=draw(st.floats(-0.2, 1.5)) * unit,
        quote_free=draw(st.floats(-0.2, 1.5)) * market,
        leaving_quote=draw(st.floats(0.0, 0.5)) * market,
        leaving_buy_base=draw(st.floats(0.0, 0.2)) * unit,
        leaving_buy_quote=draw(st.floats(0.0, 0.2)) * market,
        leaving_sell_base=draw(st.floats(0.0, 0.2)) * unit,
        other_markets_quote=draw(st.floats(0.0, 1.0)) * total,
        fee_rate=draw(st.sampled_from([0.0, 0.001, 0.01])),
        max_position_base=pos_cap,
        rules=rules,
    )
    quotes = draw(
        st.lists(
            st.builds(
                lambda side, price, notional: Quote(SYMBOL, side, price, notional / price),
                st.sampled_from(["buy", "sell"]),
                st.floats(0.5, 1.5).map(lambda f: f * mid),
                st.floats(1e-3, 2.0).map(lambda f: f * order),
            ),
            max_size=12,
        )
    )
    return limits, exposure, quotes


REL = 1e-9


@given(scenarios())
@settings(max_examples=400, deadline=None)
def test_no_scenario_commits_more_than_any_cap(
    scenario: tuple[BudgetLimits, Exposure, list[Quote]],
) -> None:
    limits, e, desired = scenario
    fit = Budget(limits).fit(desired, e)
    half_tick = e.rules.price_tick / 2
    kept = fit.quotes
    # Every desired quote is accounted for: kept (maybe trimmed) or refused, never grown.
    assert len(kept) + len(fit.refused) == len(desired)
    for q in kept:
        assert any(
            (d.side, d.price, d.tag) == (q.side, q.price, q.tag) and q.amount <= d.amount
            for d in desired
        )
        assert (q.price + half_tick) * q.amount <= limits.max_order_quote * (1 + REL)
    if not kept:
        return
    added = sum((q.price + half_tick) * q.amount for q in kept)
    after = e.committed_quote + added
    assert fit.committed_quote == pytest.approx(after)
    assert after <= limits.max_market_quote * (1 + REL)
    assert after + e.other_markets_quote <= limits.max_total_quote * (1 + REL)
    fee = 1 + e.fee_rate
    buys = [q for q in kept if q.side == "buy"]
    sells = [q for q in kept if q.side == "sell"]
    if buys:
        spend = sum(q.price * q.amount for q in buys) * fee
        assert spend <= (e.quote_free - e.leaving_buy_quote * fee) * (1 + REL) + 1e-9
    if sells:
        sold = sum(q.amount for q in sells) * fee
        assert sold <= (e.base_free - e.leaving_sell_base * fee) * (1 + REL) + 1e-12
    cap = e.max_position_base
    if cap is not None:
        if buys:
            assert e.net_base + e.leaving_buy_base + sum(q.amount for q in buys) <= cap + 1e-9
        if sells:
            assert e.net_base - e.leaving_sell_base - sum(q.amount for q in sells) >= -cap - 1e-9
