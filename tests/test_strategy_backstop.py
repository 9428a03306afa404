"""The backstop strategy: quiet when calm, a capped two-sided ladder while engaged,
replenishment after, and the strategy registry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_helpers import (
    RULES,
    SYMBOL,
    book,
    budget_view,
    context,
    detector_update,
    inventory_view,
    sample_of,
)

from bot.book import OrderBook
from bot.budget import Budget
from bot.clock import ManualClock
from bot.detector import DetectorState, FractureDetector
from bot.engine import Engine, Market
from bot.errors import UserError
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import StressedFeed, parse_stress_spec
from bot.inventory import Inventory
from bot.logs import Logger
from bot.markets import offline_markets
from bot.monitor import DepthMonitor, DepthSample
from bot.settings import load_settings
from bot.settings.models import BackstopParams, StrategySettings
from strategies import STRATEGIES, BackstopStrategy, MarketMakerStrategy, make_strategy
from strategies.base import Decision, MarketContext, MarketRules, Quote
from strategies.ladder import microprice

CALM, ARMING, ENGAGED, RECOVERING = (
    DetectorState.CALM,
    DetectorState.ARMING,
    DetectorState.ENGAGED,
    DetectorState.RECOVERING,
)
CONFIG = Path(__file__).resolve().parent.parent / "config" / "paper.toml"
# Sizes exactly as computed: no requote headroom left under the limits.
EXACT = BackstopParams(requote_bps=0)


def bids(d: Decision) -> list[Quote]:
    return [q for q in d.quotes if q.side == "buy"]


def asks(d: Decision) -> list[Quote]:
    return [q for q in d.quotes if q.side == "sell"]


def total(quotes: list[Quote]) -> float:
    return sum(q.notional for q in quotes)


def inner_bps(d: Decision, fair: float) -> float:
    return (fair - max(q.price for q in bids(d))) / fair * 1e4


# --------------------------------------------------------------------------- when to quote


@pytest.mark.parametrize("state", [CALM, ARMING])
def test_no_quotes_unless_the_detector_is_active(state: DetectorState) -> None:
    d = BackstopStrategy().decide(context(detector_update(state)))
    assert d.quotes == ()
    assert d.mode == "idle"


def test_no_detector_means_no_backstop_quotes() -> None:
    assert BackstopStrategy().decide(context(None)).quotes == ()


@pytest.mark.parametrize("state", [ENGAGED, RECOVERING])
def test_engaged_or_recovering_quotes_a_two_sided_post_only_ladder(state: DetectorState) -> None:
    d = BackstopStrategy(BackstopParams(levels=3)).decide(context(detector_update(state)))
    assert d.mode == "backstop"
    assert len(bids(d)) == 3
    assert len(asks(d)) == 3
    assert all(q.post_only and q.symbol == SYMBOL for q in d.quotes)
    assert [q.tag for q in bids(d)] == ["backstop:bid:0", "backstop:bid:1", "backstop:bid:2"]
    # Inner rungs first, both sides interleaved: a budget that trims in order cuts outer rungs.
    assert [q.side for q in d.quotes] == ["buy", "sell"] * 3
    assert [q.price for q in bids(d)] == sorted((q.price for q in bids(d)), reverse=True)
    assert [q.price for q in asks(d)] == sorted(q.price for q in asks(d))


def test_ladder_prices_follow_the_documented_formula() -> None:
    # Equal touch sizes: the microprice is the mid, 60,000. sigma 1 bp, stress 0.5:
    # half = 1 + 1 x 1 + 4 x 0.5 = 4 bps, rungs 1 bp apart.
    p = BackstopParams(base_spread_bps=1, vol_mult=1, stress_spread_bps=4, rung_spacing_bps=1)
    d = BackstopStrategy(p).decide(context(detector_update(health=0.5, sigma_bps=1.0)))
    assert [q.price for q in bids(d)] == pytest.approx([59_976.0, 59_970.0, 59_964.0])
    assert [q.price for q in asks(d)] == pytest.approx([60_024.0, 60_030.0, 60_036.0])


def test_microprice_leans_toward_the_thin_side_and_is_the_mid_when_balanced() -> None:
    ob = book(100.0, 101.0, bid_size=3.0, ask_size=1.0)
    assert microprice(ob, sample_of(ob)) == pytest.approx((100 * 1 + 101 * 3) / 4)
    ob = book(100.0, 101.0, bid_size=2.0, ask_size=2.0)
    assert microprice(ob, sample_of(ob)) == pytest.approx(100.5)


def test_volatility_falls_back_to_the_configured_sigma_while_warming_up() -> None:
    p = BackstopParams(base_spread_bps=1, vol_mult=2, stress_spread_bps=0, fallback_sigma_bps=3)
    d = BackstopStrategy(p).decide(context(detector_update(sigma_bps=None)))
    assert inner_bps(d, 60_000.0) == pytest.approx(1 + 2 * 3)


@given(
    sigma=st.floats(0, 20),
    more_sigma=st.floats(0.01, 20),
    health=st.floats(0.01, 1),
    less_health=st.floats(0.01, 1),
)
@settings(max_examples=50, deadline=None)
def test_spreads_widen_with_volatility_and_with_stress(
    sigma: float, more_sigma: float, health: float, less_health: float
) -> None:
    s = BackstopStrategy(BackstopParams(max_half_spread_bps=1_000, requote_bps=0))
    ob = book()

    def half(sig: float, h: float) -> float:
        return inner_bps(s.decide(context(detector_update(sigma_bps=sig, health=h), ob=ob)), 6e4)

    base = half(sigma, health)
    assert half(sigma + more_sigma, health) > base
    assert half(sigma, max(0.0, health - less_health)) > base  # less health = more stress


def test_half_spread_is_capped() -> None:
    p = BackstopParams(max_half_spread_bps=8.0)
    d = BackstopStrategy(p).decide(context(detector_update(sigma_bps=50.0, health=0.0)))
    assert inner_bps(d, 60_000.0) == pytest.approx(8.0)


# --------------------------------------------------------------------------- sizes


def test_each_side_is_sized_to_its_depth_deficit_when_the_budget_allows() -> None:
    # target 0.6 x 20,000 baseline - 10,000 depth = 2,000 missing on the bid side;
    # the ask side has 11,500: 500 missing, under the 625 two-sided minimum (0.25 x 5,000 / 2).
    u = detector_update(depth=(10_000.0, 11_500.0), baseline=(20_000.0, 20_000.0))
    d = BackstopStrategy(EXACT).decide(context(u, budget=budget_view(quote_room=5_000.0)))
    assert total(bids(d)) == pytest.approx(2_000.0)
    assert total(asks(d)) == pytest.approx(625.0)
    # Split evenly over the rungs.
    assert [q.notional for q in bids(d)] == pytest.approx([2_000.0 / 3] * 3)


def test_a_healthy_side_still_quotes_the_minimum_share_so_the_ladder_stays_two_sided() -> None:
    u = detector_update(depth=(1_000.0, 50_000.0), baseline=(20_000.0, 20_000.0))
    d = BackstopStrategy(BackstopParams(min_side_fraction=0.2, requote_bps=0)).decide(
        context(u, budget=budget_view(quote_room=4_000.0, max_order_quote=1e9))
    )
    assert total(asks(d)) == pytest.approx(0.2 * 4_000.0 / 2)
    assert total(bids(d)) == pytest.approx(4_000.0 - 400.0)  # the rest of the room


def test_sizes_are_capped_by_the_budget_room_and_the_per_order_max() -> None:
    u = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6))  # a 1.8M deficit per side
    d = BackstopStrategy(EXACT).decide(context(u, budget=budget_view(quote_room=5_000.0)))
    assert total(list(d.quotes)) == pytest.approx(5_000.0)
    assert total(bids(d)) == pytest.approx(2_500.0)
    d = BackstopStrategy(EXACT).decide(
        context(u, budget=budget_view(quote_room=1e9, max_order_quote=300.0))
    )
    assert all(q.notional <= 300.0 * (1 + 1e-12) for q in d.quotes)
    assert total(bids(d)) == pytest.approx(900.0)


def test_without_a_baseline_the_budget_alone_sizes_the_ladder() -> None:
    u = detector_update(depth=(5e6, 5e6), baseline=(None, None))
    d = BackstopStrategy(EXACT).decide(context(u, budget=budget_view(quote_room=3_000.0)))
    assert total(list(d.quotes)) == pytest.approx(3_000.0)


def test_balances_above_the_floor_cap_each_side() -> None:
    u = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6))
    b = budget_view(quote_room=1e9, max_order_quote=1e9, quote_available=1_001.0, fee_rate=0.001)
    d = BackstopStrategy(EXACT).decide(context(u, budget=b))
    assert total(bids(d)) * 1.001 == pytest.approx(1_001.0)
    b = budget_view(quote_room=1e9, max_order_quote=1e9, base_available=0.01, fee_rate=0.0)
    d = BackstopStrategy(EXACT).decide(context(u, budget=b))
    assert sum(q.amount for q in asks(d)) <= 0.01 * (1 + 1e-12)


def test_sizes_skew_with_inventory_and_the_growing_side_stops_at_the_limit() -> None:
    u = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6))
    budget = budget_view(quote_room=1e9, max_order_quote=1e9, market_cap_quote=12_000.0)
    # Limit: 0.5 x 12,000 / 60,000 = 0.1 BTC.
    s = BackstopStrategy(
        BackstopParams(max_position_fraction=0.5, min_side_fraction=0.0, requote_bps=0)
    )
    flat = s.decide(context(u, budget=budget, inventory=inventory_view(0.0)))
    long = s.decide(context(u, budget=budget, inventory=inventory_view(0.05)))
    short = s.decide(context(u, budget=budget, inventory=inventory_view(-0.05)))
    # Flat: the same notional each side (the bids' amounts, priced lower, bind a hair).
    assert total(bids(flat)) == pytest.approx(total(asks(flat)), rel=1e-3)
    assert total(bids(long)) < total(bids(flat)) < total(bids(short))
    assert total(asks(long)) > total(asks(short))
    # If every bid of the long book filled, the position would still be within the limit.
    assert 0.05 + sum(q.amount for q in bids(long)) <= 0.1 + 1e-12
    at_limit = s.decide(context(u, budget=budget, inventory=inventory_view(0.1)))
    assert bids(at_limit) == []
    assert asks(at_limit)
    at_short_limit = s.decide(context(u, budget=budget, inventory=inventory_view(-0.12)))
    assert asks(at_short_limit) == []
    assert bids(at_short_limit)


def test_rungs_too_small_for_the_market_minimum_are_dropped() -> None:
    # Binance: 5 USDT minimum + one amount step (0.6 USDT at 60k) of rounding headroom.
    u = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6))
    s = BackstopStrategy(BackstopParams(levels=3, min_side_fraction=0.0, requote_bps=0))
    d = s.decide(context(u, budget=budget_view(quote_room=24.0)))  # 12 a side
    assert len(bids(d)) == 2
    assert all(q.notional == pytest.approx(6.0) for q in d.quotes)
    assert [q.tag for q in bids(d)] == ["backstop:bid:0", "backstop:bid:1"]  # inner kept
    assert all(q.notional >= RULES.min_notional(q.price) for q in d.quotes)
    d = s.decide(context(u, budget=budget_view(quote_room=10.0)))  # 5 a side: none
    assert d.quotes == ()


@given(
    bid=st.floats(10.0, 100_000.0),
    spread_ticks=st.integers(1, 5_000),
    bid_size=st.floats(1e-4, 100.0),
    ask_size=st.floats(1e-4, 100.0),
    sigma=st.one_of(st.none(), st.floats(0, 100)),
    health=st.floats(0, 1),
    net=st.floats(-1.0, 1.0),
    base_spread=st.floats(0.01, 20),
)
@settings(max_examples=150, deadline=None)
def test_quotes_never_cross_the_book_or_each_other(
    bid: float,
    spread_ticks: int,
    bid_size: float,
    ask_size: float,
    sigma: float | None,
    health: float,
    net: float,
    base_spread: float,
) -> None:
    tick = 0.01
    bid = round(bid, 2)
    ask = round(bid + spread_ticks * tick, 2)
    ob = book(bid, ask, bid_size, ask_size, depth_levels=0)
    p = BackstopParams(base_spread_bps=base_spread, max_half_spread_bps=200)
    ctx = context(
        detector_update(sigma_bps=sigma, health=health),
        ob=ob,
        inventory=inventory_view(net),
        budget=budget_view(quote_room=1e6, max_order_quote=1e6, market_cap_quote=1e9),
    )
    d = BackstopStrategy(p).decide(ctx)
    for q in d.quotes:
        assert math.isfinite(q.price)
        assert q.price > 0
        assert q.amount > 0
        if q.side == "buy":
            assert q.price <= ask - tick * (1 - 1e-9)
        else:
            assert q.price >= bid + tick * (1 - 1e-9)
    if bids(d) and asks(d):
        # At least a tick apart each side of fair: still apart once rounded to ticks.
        assert min(q.price for q in asks(d)) - max(q.price for q in bids(d)) >= 2 * tick * (
            1 - 1e-6
        )


# --------------------------------------------------------------------------- requoting


def test_the_resting_ladder_is_kept_while_fresh_prices_stay_within_the_tolerance() -> None:
    s = BackstopStrategy(BackstopParams(requote_bps=1.0, requote_size_fraction=0.2))
    first = s.decide(context(detector_update(sigma_bps=1.0)))
    # Volatility ticks up by 0.3 bps: every rung moves 0.3 bps -- the ladder stays.
    again = s.decide(context(detector_update(sigma_bps=1.3)))
    assert again.quotes == first.quotes
    # A 1.5 bp move is past the tolerance: a fresh ladder.
    moved = s.decide(context(detector_update(sigma_bps=2.5)))
    assert moved.quotes != first.quotes
    assert inner_bps(moved, 60_000.0) == pytest.approx(1 + 2.5 + 4 * 0.5)


def test_a_limit_sized_ladder_leaves_headroom_and_is_replaced_once_it_no_longer_fits() -> None:
    # requote_size_fraction 0.2: fresh ladders use 90% of a binding limit.
    s = BackstopStrategy(BackstopParams(requote_bps=5.0, requote_size_fraction=0.2))
    u = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6))
    first = s.decide(context(u, budget=budget_view(quote_room=3_000.0)))
    assert total(list(first.quotes)) == pytest.approx(2_700.0)
    # The room moves a little either way (the position's value follows the mid): held.
    assert s.decide(context(u, budget=budget_view(quote_room=3_300.0))).quotes == first.quotes
    assert s.decide(context(u, budget=budget_view(quote_room=2_800.0))).quotes == first.quotes
    # Less room than the resting ladder needs: replaced at once.
    smaller = s.decide(context(u, budget=budget_view(quote_room=2_650.0)))
    assert total(list(smaller.quotes)) == pytest.approx(0.9 * 2_650.0)
    # The book moves up 4.5 bps: within the 5 bp tolerance, but the inner resting ask
    # (60,024) would now sit under the best bid -- replaced.
    up = book(60_026.99, 60_027.01)
    moved = s.decide(context(u, ob=up, budget=budget_view(quote_room=2_650.0)))
    assert moved.quotes != smaller.quotes
    assert min(q.price for q in asks(moved)) > 60_026.99


def test_sizes_no_limit_binds_get_no_headroom() -> None:
    u = detector_update(depth=(10_000.0, 10_000.0), baseline=(20_000.0, 20_000.0))
    d = BackstopStrategy().decide(context(u, budget=budget_view(quote_room=5_000.0)))
    assert total(bids(d)) == pytest.approx(2_000.0)  # the deficit itself


def test_a_new_episode_starts_from_a_fresh_ladder() -> None:
    s = BackstopStrategy(BackstopParams(requote_bps=5.0))
    first = s.decide(context(detector_update(sigma_bps=1.0)))
    assert s.decide(context(detector_update(CALM))).quotes == ()
    again = s.decide(context(detector_update(sigma_bps=1.5)))
    assert again.quotes != first.quotes


# Three rungs a side: a fresh ladder is six creates; five is short of it.
SHORT = 5


def test_short_of_order_rate_a_ladder_further_out_than_wanted_is_kept() -> None:
    first_ctx = context(detector_update(sigma_bps=3.0))
    # Volatility down 2 bps: fresh rungs 2 bps closer to fair, past the 1 bp tolerance;
    # the resting ones are further out than wanted, which only risks less.
    calmer = detector_update(sigma_bps=1.0)
    s = BackstopStrategy(BackstopParams(requote_bps=1.0))
    first = s.decide(first_ctx)
    assert s.decide(context(calmer, order_room=SHORT)).quotes == first.quotes
    # Room for the whole fresh ladder, or a full bucket (None): replaced as before.
    for room in (6, None):
        s = BackstopStrategy(BackstopParams(requote_bps=1.0))
        s.decide(first_ctx)
        moved = s.decide(context(calmer, order_room=room))
        assert moved.quotes != first.quotes
        assert inner_bps(moved, 60_000.0) == pytest.approx(1 + 1 + 4 * 0.5)
    # Turned off: replaced however short the rate is.
    s = BackstopStrategy(BackstopParams(requote_bps=1.0, requote_within_rate=False))
    s.decide(first_ctx)
    assert s.decide(context(calmer, order_room=0)).quotes != first.quotes


def test_short_of_order_rate_a_ladder_closer_in_than_wanted_is_replaced() -> None:
    s = BackstopStrategy(BackstopParams(requote_bps=1.0))
    s.decide(context(detector_update(sigma_bps=1.0)))
    # Volatility up 2 bps: every resting rung sits 2 bps closer to fair than asked for.
    wider = s.decide(context(detector_update(sigma_bps=3.0), order_room=0))
    assert inner_bps(wider, 60_000.0) == pytest.approx(1 + 3 + 4 * 0.5)


def test_short_of_order_rate_only_the_side_the_market_moved_toward_is_replaced() -> None:
    s = BackstopStrategy(BackstopParams(requote_bps=1.0))
    first = s.decide(context(detector_update()))
    # The book moves up 3 bps: resting bids are 3 bps further below fair (kept), resting
    # asks 3 bps closer above it (replaced).
    up = book(59_999.99 + 18.0, 60_000.01 + 18.0)
    fresh = BackstopStrategy(BackstopParams(requote_bps=1.0)).decide(
        context(detector_update(), ob=up)
    )
    mixed = s.decide(context(detector_update(), ob=up, order_room=SHORT))
    assert bids(mixed) == bids(first)
    assert asks(mixed) == asks(fresh) != asks(first)
    assert [q.side for q in mixed.quotes] == ["buy", "sell"] * 3
    # Held as the resting ladder from then on: the same reading again changes nothing.
    assert s.decide(context(detector_update(), ob=up, order_room=0)).quotes == mixed.quotes


def test_short_of_order_rate_a_side_larger_than_wanted_is_replaced_a_smaller_one_kept() -> None:
    # No limit binds: each side is sized to its deficit.
    def reading(sigma: float, depth: float) -> MarketContext:
        u = detector_update(sigma_bps=sigma, depth=(depth, depth), baseline=(20_000.0, 20_000.0))
        return context(u, budget=budget_view(quote_room=5_000.0), order_room=SHORT)

    s = BackstopStrategy(BackstopParams(requote_bps=1.0, requote_size_fraction=0.2))
    first = s.decide(reading(3.0, 10_000.0))
    assert total(bids(first)) == pytest.approx(2_000.0)
    # The deficit grows (more depth gone): the resting, smaller ladder is kept...
    assert s.decide(reading(1.0, 8_000.0)).quotes == first.quotes
    # ...it shrinks by half (the book heals): the resting one is too large, replaced.
    healed = s.decide(reading(1.0, 11_000.0))
    assert total(bids(healed)) == pytest.approx(1_000.0)


def test_short_of_order_rate_a_kept_ladder_still_fits_the_room() -> None:
    s = BackstopStrategy(BackstopParams(requote_bps=1.0))
    u = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6), sigma_bps=2.5)
    first = s.decide(context(u, budget=budget_view(quote_room=3_000.0)))
    calmer = detector_update(depth=(0.0, 0.0), baseline=(3e6, 3e6), sigma_bps=0.0)
    kept = s.decide(context(calmer, budget=budget_view(quote_room=3_000.0), order_room=0))
    assert kept.quotes == first.quotes
    # Less room than the resting ladder (2,700) needs, though each rung is within the
    # size tolerance of its fresh one: replaced, short of rate or not.
    smaller = s.decide(context(calmer, budget=budget_view(quote_room=2_650.0), order_room=0))
    assert total(list(smaller.quotes)) == pytest.approx(0.9 * 2_650.0)


# --------------------------------------------------------------------------- replenishment


def calm_ctx(net: float, params_rules: MarketRules = RULES) -> MarketContext:
    return context(detector_update(CALM), inventory=inventory_view(net), rules=params_rules)


def test_passive_replenishment_quotes_at_the_touch_on_the_restoring_side() -> None:
    s = BackstopStrategy(BackstopParams(replenish="passive"))
    d = s.decide(calm_ctx(0.01))  # long 0.01 BTC after an episode: sell it back at the ask
    assert d.mode == "replenish"
    assert d.quotes == (Quote(SYMBOL, "sell", 60_000.01, 0.01, True, "replenish:sell"),)
    d = s.decide(calm_ctx(-0.01))
    assert d.quotes == (Quote(SYMBOL, "buy", 59_999.99, 0.01, True, "replenish:buy"),)


def test_cost_limited_replenishment_may_cross_up_to_the_cost_limit() -> None:
    s = BackstopStrategy(BackstopParams(replenish="cost_limited", replenish_max_cost_bps=5))
    (q,) = s.decide(calm_ctx(-0.01)).quotes
    assert q.side == "buy"
    assert not q.post_only
    assert q.price == pytest.approx(60_000.0 * 1.0005)
    (q,) = s.decide(calm_ctx(0.01)).quotes
    assert q.price == pytest.approx(60_000.0 * 0.9995)


def test_replenishment_is_capped_by_the_per_order_max() -> None:
    s = BackstopStrategy(BackstopParams(replenish="passive"))
    budget = budget_view(max_order_quote=600)
    ctx = context(detector_update(CALM), inventory=inventory_view(0.5), budget=budget)
    (q,) = s.decide(ctx).quotes
    assert q.notional == pytest.approx(600.0)


def test_no_replenishment_when_off_while_arming_or_for_a_dust_imbalance() -> None:
    assert BackstopStrategy(BackstopParams(replenish="off")).decide(calm_ctx(0.01)).quotes == ()
    s = BackstopStrategy(BackstopParams(replenish="passive"))
    arming = context(detector_update(ARMING), inventory=inventory_view(0.01))
    assert s.decide(arming).quotes == ()
    assert s.decide(calm_ctx(0.00005)).quotes == ()  # 3 USDT: under the 5 USDT minimum
    assert s.decide(calm_ctx(0.0)).quotes == ()


# --------------------------------------------------------------------------- registry


def test_registry_builds_each_strategy_with_its_configured_parameters() -> None:
    assert set(STRATEGIES) == {"backstop", "market-maker"}
    cfg = StrategySettings.model_validate(
        {"backstop": {"levels": 5}, "market_maker": {"size_quote": 50}}
    )
    backstop = make_strategy(None, cfg)
    assert isinstance(backstop, BackstopStrategy)
    assert backstop.params.levels == 5
    mm = make_strategy("market-maker", cfg)
    assert isinstance(mm, MarketMakerStrategy)
    assert mm.params.size_quote == 50
    assert mm.name == "market-maker"


def test_unknown_strategy_is_a_user_error_listing_the_valid_names() -> None:
    with pytest.raises(UserError) as info:
        make_strategy("backstp")
    msg = str(info.value)
    assert "'backstp'" in msg
    assert "did you mean 'backstop'" in msg
    assert "backstop, market-maker" in msg


# --------------------------------------------------------------------------- real data


async def test_default_config_quotes_within_its_caps_only_while_the_fracture_is_engaged(
    log: Logger,
) -> None:
    """config/paper.toml + the default ``fracture`` overlay on the bundled real sample."""
    cfg = load_settings(CONFIG, env={})
    market = cfg.markets[0]
    ccxt_market = offline_markets("binance")[market.symbol]  # type: ignore[index]
    rules = MarketRules.from_market(ccxt_market)
    fee = max(float(ccxt_market["maker"]), float(ccxt_market["taker"]))
    strategy = make_strategy(None, cfg.strategy)
    budget = Budget.from_settings(cfg)
    inventory = Inventory.from_market(market)
    detector = FractureDetector.from_market(market)
    seen: list[tuple[DetectorState, Decision, float, int]] = []

    class Listener:
        def on_sample(self, symbol: str, ob: OrderBook, sample: DepthSample) -> None:
            update = detector.update(sample)
            exposure = budget.exposure(inventory, sample.mid, fee_rate=fee, rules=rules)
            ctx = MarketContext(
                symbol,
                sample.ts_ns,
                ob,
                sample,
                update,
                inventory.view(sample.mid),
                budget.view(exposure),
                rules,
            )
            decision = strategy.decide(ctx)
            fit = budget.fit(decision.quotes, exposure)
            # The strategy already sized within the budget: nothing to trim or refuse.
            assert fit.quotes == decision.quotes
            seen.append((update.state, decision, fit.committed_quote, len(fit.refused)))

        def on_trade(self, trade: object) -> None:
            pass

    clock = ManualClock()
    replay = ReplayFeed(bundled_sample_paths(), clock=clock, symbol_map={"BTCUSDT": "BTC/USDT"})
    engine = Engine(
        feed=StressedFeed(replay, parse_stress_spec("fracture")),
        markets={
            market.symbol: Market(
                market.symbol,
                OrderBook(market.symbol, clock=clock),
                DepthMonitor.for_bands(market.bands_bps, market.reference_notional_quote),
            )
        },
        log=log,
        listeners=[Listener()],
    )
    await engine.run()
    quoting = [s for s in seen if s[1].quotes]
    assert len(quoting) > 100
    assert all(state.active for state, *_ in quoting)
    assert all(not s[1].quotes for s in seen if not s[0].active)
    assert max(c for _, _, c, _ in seen) <= cfg.risk.max_notional_per_market_quote
    # Engaged on a 90% fracture of a ~$2.5M band: the budget, not the deficit, binds,
    # less the requote headroom (half of requote_size_fraction).
    engaged = [d for state, d, _, _ in quoting if state is ENGAGED]
    assert engaged
    headroom = 1 - cfg.strategy.backstop.requote_size_fraction / 2
    assert total(list(engaged[0].quotes)) == pytest.approx(
        cfg.risk.max_notional_per_market_quote * headroom, rel=1e-3
    )
    assert all(q.notional <= cfg.risk.max_order_quote for d in engaged for q in d.quotes)
