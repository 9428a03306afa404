"""The plain market maker: always two-sided, sized and skewed as configured, never crossing."""

from __future__ import annotations

import pytest
from strategy_helpers import (
    SYMBOL,
    book,
    budget_view,
    context,
    detector_update,
    inventory_view,
)

from bot.detector import DetectorState
from bot.settings.models import MarketMakerParams
from strategies.base import Quote
from strategies.market_maker import MarketMakerStrategy


def side(quotes: tuple[Quote, ...], name: str) -> list[Quote]:
    return [q for q in quotes if q.side == name]


@pytest.mark.parametrize("state", list(DetectorState))
def test_quotes_whatever_the_detector_says(state: DetectorState) -> None:
    s = MarketMakerStrategy(MarketMakerParams(levels=2))
    for update in (detector_update(state), None):
        d = s.decide(context(update))
        assert d.mode == "market-make"
        assert len(side(d.quotes, "buy")) == 2
        assert len(side(d.quotes, "sell")) == 2


def test_rungs_sit_at_the_configured_distances_with_the_configured_size() -> None:
    p = MarketMakerParams(levels=2, half_spread_bps=5, rung_spacing_bps=2, size_quote=300)
    d = MarketMakerStrategy(p).decide(context(None))  # balanced touch: fair = 60,000
    bids, asks = side(d.quotes, "buy"), side(d.quotes, "sell")
    assert [q.price for q in bids] == pytest.approx([59_970.0, 59_958.0])
    assert [q.price for q in asks] == pytest.approx([60_030.0, 60_042.0])
    assert [q.notional for q in d.quotes] == pytest.approx([300.0] * 4)
    assert all(q.post_only and q.symbol == SYMBOL for q in d.quotes)
    assert [q.tag for q in bids] == ["mm:bid:0", "mm:bid:1"]


def test_sizes_skew_with_inventory_and_stop_at_the_position_limit() -> None:
    p = MarketMakerParams(levels=1, size_quote=600, max_position_fraction=0.5)
    s = MarketMakerStrategy(p)
    # Position limit: 0.5 x 12,000 / 60,000 = 0.1 BTC.
    budget = budget_view(market_cap_quote=12_000.0, max_order_quote=1e9)
    long = s.decide(context(None, inventory=inventory_view(0.025), budget=budget))
    (bid,), (ask,) = side(long.quotes, "buy"), side(long.quotes, "sell")
    assert bid.notional == pytest.approx(600 * 0.75)  # q = +0.25
    assert ask.notional == pytest.approx(600 * 1.25)
    at_limit = s.decide(context(None, inventory=inventory_view(0.1), budget=budget))
    assert side(at_limit.quotes, "buy") == []
    (ask,) = side(at_limit.quotes, "sell")
    assert ask.notional == pytest.approx(1_200.0)


def test_both_sides_shrink_alike_to_fit_the_budget_room() -> None:
    p = MarketMakerParams(levels=2, size_quote=500, requote_bps=0)
    d = MarketMakerStrategy(p).decide(context(None, budget=budget_view(quote_room=1_000.0)))
    assert sum(q.notional for q in d.quotes) == pytest.approx(1_000.0)
    assert [q.notional for q in d.quotes] == pytest.approx([250.0] * 4)
    # Holding quotes between requotes, a binding room is used only up to the headroom.
    p = MarketMakerParams(levels=2, size_quote=500, requote_size_fraction=0.2)
    d = MarketMakerStrategy(p).decide(context(None, budget=budget_view(quote_room=1_000.0)))
    assert sum(q.notional for q in d.quotes) == pytest.approx(900.0)


def test_a_wide_book_is_quoted_inside_but_never_across() -> None:
    # Touch 59,000 / 61,000: 5 bps from fair is well inside the spread.
    ob = book(59_000.0, 61_000.0, bid_size=1.0, ask_size=1.0)
    d = MarketMakerStrategy().decide(context(None, ob=ob))
    assert all(59_000.0 < q.price < 61_000.0 for q in d.quotes)
    # A one-tick book with a lopsided touch: the microprice sits near the ask, and the
    # bids are held a tick under it.
    ob = book(59_999.99, 60_000.0, bid_size=100.0, ask_size=0.001)
    d = MarketMakerStrategy(MarketMakerParams(half_spread_bps=0.001)).decide(context(None, ob=ob))
    assert all(q.price <= 59_999.99 + 1e-9 for q in side(d.quotes, "buy"))
    assert all(q.price >= 60_000.0 for q in side(d.quotes, "sell"))


def test_quotes_stay_put_through_small_moves_and_follow_big_ones() -> None:
    s = MarketMakerStrategy(MarketMakerParams(requote_bps=1.0))
    first = s.decide(context(None, ob=book(59_999.99, 60_000.01)))
    assert s.decide(context(None, ob=book(60_002.99, 60_003.01))).quotes == first.quotes  # 0.5 bp
    moved = s.decide(context(None, ob=book(60_011.99, 60_012.01)))  # 2 bps
    assert moved.quotes != first.quotes
    assert max(q.price for q in side(moved.quotes, "buy")) == pytest.approx(60_012 * (1 - 5e-4))


def test_short_of_order_rate_only_the_side_the_market_came_toward_is_replaced() -> None:
    s = MarketMakerStrategy(MarketMakerParams(requote_bps=1.0))
    first = s.decide(context(None, ob=book(59_999.99, 60_000.01)))
    # Up 2 bps with room for one order (a fresh ladder is four): the bids, now further
    # below fair, stay; the asks, now closer above it, are replaced.
    up = book(60_011.99, 60_012.01)
    moved = s.decide(context(None, ob=up, order_room=1))
    assert side(moved.quotes, "buy") == side(first.quotes, "buy")
    assert min(q.price for q in side(moved.quotes, "sell")) == pytest.approx(60_012 * (1 + 5e-4))
    # With room for them all, both sides follow.
    s = MarketMakerStrategy(MarketMakerParams(requote_bps=1.0))
    s.decide(context(None, ob=book(59_999.99, 60_000.01)))
    both = s.decide(context(None, ob=up, order_room=4))
    assert side(both.quotes, "buy") != side(first.quotes, "buy")
