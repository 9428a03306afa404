"""Inventory accounting against hand-computed fills: balances, fees, average-cost PnL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_helpers import fill

from bot.inventory import Inventory, own_band_depth, resting_notional
from bot.orders.state import OrderState, TrackedOrder
from bot.settings.models import MarketSettings, ReserveSettings

EPS = 1e-9


def test_starts_from_the_market_reserve() -> None:
    inv = Inventory.from_market(
        MarketSettings(symbol="BTC/USDT", reserve=ReserveSettings(base=2.0, quote=120_000.0))
    )
    assert (inv.base, inv.quote, inv.net_base) == (2.0, 120_000.0, 0.0)
    assert inv.avg_cost is None
    assert inv.marked_pnl(60_000.0) == 0.0
    assert (inv.base_currency, inv.quote_currency) == ("BTC", "USDT")


def test_quote_fees_go_into_the_cost_basis_and_the_proceeds() -> None:
    inv = Inventory("BTC/USDT", 1.0, 10_000.0)
    assert inv.apply(fill("buy", 100.0, 0.5, trade_id="1", fee=0.05, fee_currency="USDT"))
    assert inv.apply(fill("buy", 110.0, 0.5, trade_id="2", fee=0.055, fee_currency="USDT"))
    # Position 1.0 bought for 50.05 + 55.055 = 105.105 quote.
    assert inv.avg_cost == pytest.approx(105.105, abs=EPS)
    assert inv.apply(fill("sell", 120.0, 0.4, trade_id="3", fee=0.048, fee_currency="USDT"))
    # Sold 0.4 for 48 - 0.048 = 47.952, i.e. 119.88 each: (119.88 - 105.105) x 0.4 = 5.91.
    assert inv.base_exact == Decimal("1.6")
    assert inv.quote_exact == Decimal("9942.847")
    assert inv.net_base == pytest.approx(0.6, abs=EPS)
    assert inv.realised_pnl == pytest.approx(5.91, abs=EPS)
    assert inv.avg_cost == pytest.approx(105.105, abs=EPS)
    # Marked at 115: (115 - 105.105) x 0.6 = 5.937.
    assert inv.unrealised_pnl(115.0) == pytest.approx(5.937, abs=EPS)
    assert inv.marked_pnl(115.0) == pytest.approx(11.847, abs=EPS)
    # ...which is the value change against holding the reserve: 0.6 x 115 - 57.153.
    assert inv.marked_pnl(115.0) == pytest.approx(0.6 * 115 + (9942.847 - 10_000), abs=EPS)
    assert inv.fees == {"USDT": Decimal("0.153")}
    assert inv.fees_quote == pytest.approx(0.153, abs=EPS)
    assert (inv.fills, inv.buys, inv.sells) == (3, 2, 1)
    assert inv.volume_base == pytest.approx(1.4, abs=EPS)
    assert inv.volume_quote == pytest.approx(153.0, abs=EPS)


def test_base_fees_reduce_the_base_received_as_on_binance_spot() -> None:
    inv = Inventory("BTC/USDT", 0.0, 1_000.0)
    inv.apply(fill("buy", 100.0, 1.0, trade_id="1", fee=0.001, fee_currency="BTC"))
    assert inv.base_exact == Decimal("0.999")
    assert inv.quote_exact == Decimal("900")
    assert inv.avg_cost == pytest.approx(100 / 0.999, abs=EPS)
    inv.apply(fill("sell", 101.0, 0.999, trade_id="2", fee=0.1, fee_currency="USDT"))
    assert inv.base_exact == 0
    assert inv.quote_exact == Decimal("1000.799")
    assert inv.avg_cost is None
    assert inv.realised_pnl == pytest.approx(0.799, abs=EPS)
    assert inv.marked_pnl(50.0) == pytest.approx(0.799, abs=EPS)  # flat: the mark is moot
    assert inv.fees == {"BTC": Decimal("0.001"), "USDT": Decimal("0.1")}
    assert inv.fees_quote == pytest.approx(0.001 * 100 + 0.1, abs=EPS)


def test_a_fill_through_flat_closes_at_average_cost_and_opens_the_other_way() -> None:
    inv = Inventory("BTC/USDT", 1.0, 1_000.0)
    inv.apply(fill("buy", 100.0, 1.0, trade_id="1"))
    inv.apply(fill("sell", 90.0, 3.0, trade_id="2"))
    assert inv.realised_pnl == pytest.approx(-10.0, abs=EPS)
    assert inv.net_base == pytest.approx(-2.0, abs=EPS)
    assert inv.avg_cost == pytest.approx(90.0, abs=EPS)
    # Short 2 from 90, marked at 80: +20.
    assert inv.unrealised_pnl(80.0) == pytest.approx(20.0, abs=EPS)
    assert inv.marked_pnl(80.0) == pytest.approx(-2 * 80 + 170, abs=EPS)
    inv.apply(fill("buy", 85.0, 2.0, trade_id="3"))
    assert inv.realised_pnl == pytest.approx(0.0, abs=EPS)
    assert inv.net_base == 0.0
    assert inv.quote_exact == Decimal("1000")


def test_each_trade_is_booked_once_and_other_markets_are_ignored() -> None:
    inv = Inventory("BTC/USDT", 1.0, 1_000.0)
    assert inv.apply(fill("buy", 100.0, 0.1, trade_id="7", client_id="a"))
    assert not inv.apply(fill("buy", 100.0, 0.1, trade_id="7", client_id="a"))
    assert inv.duplicates == 1
    assert inv.apply(fill("buy", 100.0, 0.1, trade_id="7", client_id="b"))  # another order
    assert not inv.apply(fill("buy", 100.0, 0.1, trade_id="8", symbol="ETH/USDT"))
    assert inv.base_exact == Decimal("1.2")
    assert inv.fills == 2


def test_a_fee_in_a_third_currency_is_recorded_but_not_taken_from_the_balances() -> None:
    inv = Inventory("BTC/USDT", 1.0, 1_000.0)
    inv.apply(fill("buy", 100.0, 0.1, fee=0.0003, fee_currency="BNB"))
    assert inv.base_exact == Decimal("1.1")
    assert inv.quote_exact == Decimal("990")
    assert inv.fees == {"BNB": Decimal("0.0003")}
    assert inv.fees_quote == 0.0


def test_bad_fills_are_refused_loudly() -> None:
    inv = Inventory("BTC/USDT", 1.0, 1_000.0)
    with pytest.raises(ValueError, match="price > 0"):
        inv.apply(fill("buy", 0.0, 0.1))
    assert inv.fills == 0


def order(side: str, price: float, amount: float, filled: float = 0.0) -> TrackedOrder:
    return TrackedOrder("c", "BTC/USDT", side, price, amount, OrderState.OPEN, filled=filled)  # type: ignore[arg-type]


def test_committed_quote_is_resting_notional_plus_the_position_at_mid() -> None:
    inv = Inventory("BTC/USDT", 1.0, 10_000.0)
    inv.apply(fill("buy", 100.0, 0.6))
    orders = [order("buy", 100.0, 0.2, filled=0.1), order("sell", 120.0, 0.3)]
    assert resting_notional(orders) == pytest.approx(10.0 + 36.0)
    assert inv.committed_quote(orders, 115.0) == pytest.approx(10.0 + 36.0 + 0.6 * 115)
    view = inv.view(115.0, orders)
    assert view.committed_quote == pytest.approx(115.0)
    assert view.net_base == pytest.approx(0.6)
    assert view.marked_pnl == pytest.approx(0.6 * 15)


def test_own_band_depth_counts_only_orders_within_the_band() -> None:
    orders = [
        order("buy", 99.95, 1.0),  # within 10 bps of 100
        order("buy", 99.8, 1.0),  # outside
        order("sell", 100.1, 2.0),  # on the edge: in
        order("sell", 100.2, 1.0),
    ]
    assert own_band_depth(orders, 100.0, 10.0) == pytest.approx((99.95, 200.2))


fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.decimals("0.01", "1000", places=2),
        st.decimals("0.0001", "5", places=4),
        st.sampled_from([None, "BTC", "USDT"]),
    ),
    max_size=30,
)


@given(fills=fills_strategy, mid=st.decimals("0.01", "2000", places=2))
@settings(max_examples=200, deadline=None)
def test_balances_are_exact_and_pnl_is_the_value_change_against_the_reserve(
    fills: list[tuple[str, Decimal, Decimal, str | None]], mid: Decimal
) -> None:
    inv = Inventory("BTC/USDT", 10.0, 10_000.0)
    base, quote = Decimal(10), Decimal(10_000)
    for i, (side, price, amount, fee_ccy) in enumerate(fills):
        fee = amount / 1000 if fee_ccy == "BTC" else price * amount / 1000
        inv.apply(
            fill(
                side,
                float(price),
                float(amount),
                trade_id=str(i),
                fee=float(fee) if fee_ccy else None,
                fee_currency=fee_ccy,
            )
        )
        sign = 1 if side == "buy" else -1
        base += sign * amount - (Decimal(repr(float(fee))) if fee_ccy == "BTC" else 0)
        quote -= sign * price * amount + (Decimal(repr(float(fee))) if fee_ccy == "USDT" else 0)
    assert inv.base_exact == base
    assert inv.quote_exact == quote
    value_change = float((base - 10) * mid + (quote - 10_000))
    assert inv.marked_pnl(float(mid)) == pytest.approx(value_change, rel=1e-9, abs=1e-6)
