"""Market rules: ccxt's rounding, and orders outside the limits refused before sending."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.markets import offline_markets
from bot.venues.rules import check_limits, prepare_order

SYM = "BTC/USDT"  # bundled Binance spot BTCUSDT: step 0.00001, tick 0.01, min notional 5


@pytest.fixture(scope="module")
def exchange() -> Any:
    markets = offline_markets("binance")
    assert markets is not None
    ex = ccxt.binance({"enableRateLimit": False})
    ex.set_markets(list(markets.values()))
    return ex


def test_rounds_with_ccxt_helpers(exchange: Any) -> None:
    p = prepare_order(exchange, SYM, "limit", "buy", 0.123456789, 61234.5678)
    # amount truncated to the lot step, price rounded to the tick: ccxt's own results.
    assert (p.amount, p.price) == ("0.12345", "61234.57")
    assert p.amount == exchange.amount_to_precision(SYM, 0.123456789)
    assert p.price == exchange.price_to_precision(SYM, 61234.5678)
    assert p.amount_dec == Decimal("0.12345")


def test_market_orders_have_no_price(exchange: Any) -> None:
    p = prepare_order(exchange, SYM, "market", "sell", 0.5, reference_price=60000.0)
    assert (p.type, p.amount, p.price, p.price_dec) == ("market", "0.5", None, None)


@pytest.mark.parametrize(
    ("type_", "amount", "price", "reference", "message"),
    [
        ("limit", 0.0001, 40000.0, None, "minimum notional 5"),  # 4 USDT < 5
        ("limit", 9000.1, 1.0, None, "maximum amount 9000"),
        ("limit", 200.0, 50000.0, None, "maximum notional 9000000"),
        ("limit", 0.001, 2_000_000.0, None, "maximum price 1000000"),
        ("market", 130.0, None, 60000.0, "market order amount 130 BTC is above the maximum"),
        ("market", 0.00005, None, 60000.0, "minimum notional 5"),
    ],
)
def test_orders_outside_the_limits_are_refused_with_the_reason(
    exchange: Any,
    type_: str,
    amount: float,
    price: float | None,
    reference: float | None,
    message: str,
) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="refused before sending") as info:
        prepare_order(exchange, SYM, type_, "buy", amount, price, reference_price=reference)
    assert message in str(info.value)
    assert SYM in str(info.value)


def test_max_notional_does_not_apply_to_market_orders_on_binance(exchange: Any) -> None:
    # NOTIONAL: applyMaxToMarket=false; 100 BTC x 100,000 = 10M > 9M still goes.
    p = prepare_order(exchange, SYM, "market", "buy", 100.0, reference_price=100_000.0)
    assert p.amount == "100"


def test_market_notional_is_unchecked_without_a_reference_price(exchange: Any) -> None:
    assert prepare_order(exchange, SYM, "market", "buy", 0.00005).amount == "0.00005"


@pytest.mark.parametrize(
    ("type_", "side", "amount", "price"),
    [
        ("limit", "buy", 0.000001, 60000.0),  # truncates to 0 lots (ccxt raises)
        ("limit", "buy", -1.0, 60000.0),
        ("limit", "buy", float("nan"), 60000.0),
        ("limit", "buy", 0.1, None),
        ("limit", "buy", 0.1, 0.001),  # rounds to a zero price
        ("limit", "buy", 0.1, float("inf")),
        ("stop", "buy", 0.1, 60000.0),
        ("limit", "long", 0.1, 60000.0),
    ],
)
def test_malformed_orders_are_invalid(
    exchange: Any, type_: str, side: str, amount: float, price: float | None
) -> None:
    with pytest.raises(ccxt.InvalidOrder):
        prepare_order(exchange, SYM, type_, side, amount, price)


def test_unknown_symbol_is_bad_symbol(exchange: Any) -> None:
    with pytest.raises(ccxt.BadSymbol):
        prepare_order(exchange, "DOGE/USDT", "limit", "buy", 1.0, 0.1)


def test_check_limits_on_a_bare_market_dict() -> None:
    market = {
        "symbol": "X/Y",
        "base": "X",
        "quote": "Y",
        "limits": {"amount": {"min": 1.0, "max": None}, "cost": {"min": 10.0}},
    }
    check_limits(market, "limit", Decimal(2), Decimal(5))
    with pytest.raises(ccxt.InvalidOrder, match="minimum amount"):
        check_limits(market, "limit", Decimal("0.5"), Decimal(100))
    with pytest.raises(ccxt.InvalidOrder, match="minimum notional"):
        check_limits(market, "limit", Decimal(1), Decimal(5))


async def test_works_on_a_real_async_exchange_object() -> None:
    """The real-exchange path uses the same function on a ccxt.pro/async exchange."""
    markets = offline_markets("binance")
    assert markets is not None
    ex = ccxt.async_support.binance({"enableRateLimit": False})
    try:
        ex.set_markets(list(markets.values()))
        p = prepare_order(ex, SYM, "limit", "sell", 0.0123456, 61000.004)
        assert (p.amount, p.price) == ("0.01234", "61000")
    finally:
        await ex.close()


@settings(max_examples=200, deadline=None)
@given(
    amount=st.floats(0.00001, 9000.0, allow_nan=False),
    price=st.floats(100.0, 999_999.0, allow_nan=False),
)
def test_prepared_orders_sit_on_the_exchange_grid(
    exchange: Any, amount: float, price: float
) -> None:
    try:
        p = prepare_order(exchange, SYM, "limit", "buy", amount, price)
    except ccxt.InvalidOrder:
        # Only the notional limits may refuse an order in these ranges.
        cost = Decimal(exchange.amount_to_precision(SYM, amount)) * Decimal(
            exchange.price_to_precision(SYM, price)
        )
        assert cost < 5 or cost > 9_000_000
        return
    a, pr = Decimal(p.amount), Decimal(p.price or "0")
    assert a % Decimal("0.00001") == 0
    assert pr % Decimal("0.01") == 0
    assert a <= Decimal(repr(amount)) < a + Decimal("0.00001")
    assert abs(pr - Decimal(repr(price))) <= Decimal("0.005")
