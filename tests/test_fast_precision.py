"""The bot's own rounding (bot.venues.rules) against ccxt's, digit for digit.

The order path rounds every quote's price and amount; doing it with ccxt's
``decimal_to_precision`` cost tens of microseconds per order. The replacement must
give exactly ccxt's strings (and ccxt's errors) for the bundled markets, for any
number, including prices the order manager first snaps away from the touch.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from precision_support import EXCHANGES, offline_exchange

from bot.orders.quotes import passive_price
from bot.venues.rules import (
    TickRounding,
    amount_to_precision,
    check_limits,
    limits_of,
    price_to_precision,
)
from strategies.base import Quote


def _numbers(rng: random.Random, scale: float, n: int) -> list[float | int]:
    """Random magnitudes around ``scale``, grid points, half ticks and awkward floats."""
    out: list[float | int] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            out.append(rng.uniform(0, 2 * scale))
        elif kind < 0.6:
            out.append(10 ** rng.uniform(-9, 7))
        elif kind < 0.8:
            digits = rng.randint(0, 10)
            out.append(round(rng.uniform(0, 2 * scale), digits))
        else:
            out.append(rng.randint(1, 10**6))
    # Ties and near-ties on common grids, and values ccxt prints in exponent form.
    out += [0.005, 0.015, 0.025, 1e-05, 1.5e-05, 4.9999999e-06, 5e-06, 1e-07, 61800.005]
    out += [61800.015, 61800.0049999, 0.1 + 0.2, 2.675, 1e21, 123456789.123456789, 1, 7]
    return out


def _ccxt(fn: Any, symbol: str, value: float | int) -> tuple[str, str]:
    try:
        return "ok", str(fn(symbol, value))
    except Exception as e:  # compared by type and message
        return type(e).__name__, str(e)


def _outcome(fn: Any, *args: Any) -> tuple[str, str]:
    try:
        return "ok", str(fn(*args))
    except Exception as e:
        return type(e).__name__, ""


def _ours(fn: Any, ex: Any, symbol: str, value: float | int) -> tuple[str, str]:
    try:
        return "ok", fn(ex, symbol, value)
    except Exception as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("exchange_id", EXCHANGES)
def test_rounding_matches_ccxt_on_random_values(exchange_id: str) -> None:
    rng = random.Random(7)
    ex, markets = offline_exchange(exchange_id)
    assert markets
    for symbol, market in markets.items():
        for scale in (1e-3, 1.0, 60_000.0, float(market["precision"]["price"] or 1) * 1e3):
            for value in _numbers(rng, scale, 400):
                assert _ours(amount_to_precision, ex, symbol, value) == _ccxt(
                    ex.amount_to_precision, symbol, value
                ), (symbol, value)
                assert _ours(price_to_precision, ex, symbol, value) == _ccxt(
                    ex.price_to_precision, symbol, value
                ), (symbol, value)


@pytest.mark.parametrize("exchange_id", EXCHANGES)
def test_passive_prices_round_like_ccxt(exchange_id: str) -> None:
    """The order manager snaps a bid down and an ask up, then rounds: same digits."""
    rng = random.Random(11)
    ex, markets = offline_exchange(exchange_id)
    for symbol, market in markets.items():
        for _ in range(2000):
            price = rng.uniform(1, 100_000)
            for side in ("buy", "sell"):
                quote = Quote(symbol=symbol, side=side, price=price, amount=1.0, tag="t")
                snapped = passive_price(quote, market)
                ours = price_to_precision(ex, symbol, snapped)
                assert ours == ex.price_to_precision(symbol, snapped), (symbol, side, price)
                tick = Decimal(str(market["precision"]["price"]))
                # Never more aggressive than asked.
                if side == "buy":
                    assert Decimal(ours) <= Decimal(str(price))
                else:
                    assert Decimal(ours) >= Decimal(str(price)) - tick


def test_errors_and_odd_inputs_are_ccxts() -> None:
    ex, _ = offline_exchange("binance")
    symbol = "BTC/USDT"
    for value in (0.0, 1e-9, -1.0, -0.004, float("nan"), float("inf"), "0.5", "61800.123"):
        assert _ours(amount_to_precision, ex, symbol, value) == _ccxt(  # type: ignore[arg-type]
            ex.amount_to_precision, symbol, value
        ), value
        assert _ours(price_to_precision, ex, symbol, value) == _ccxt(  # type: ignore[arg-type]
            ex.price_to_precision, symbol, value
        ), value
    with pytest.raises(ccxt.BadSymbol):
        amount_to_precision(ex, "NOPE/USDT", 1.0)


def test_tick_rounding_covers_other_tick_sizes() -> None:
    """Ticks the bundled markets do not use (5, 10, 0.5, 0.25, 1e-8) still follow ccxt."""
    from ccxt.base.decimal_to_precision import (
        NO_PADDING,
        ROUND,
        TICK_SIZE,
        TRUNCATE,
        decimal_to_precision,
    )

    rng = random.Random(3)
    for tick in (5, 10, 100, 0.5, 0.25, 1e-8, 0.0001, 2.5, 1):
        rounding = TickRounding.for_tick(tick)
        assert rounding is not None
        for value in _numbers(rng, tick * 1000, 300):
            for mode, truncate in ((TRUNCATE, True), (ROUND, False)):
                want = _outcome(decimal_to_precision, value, mode, tick, TICK_SIZE, NO_PADDING)
                got = _outcome(rounding.round, value, truncate)
                assert got == want, (tick, value, mode)
    assert TickRounding.for_tick(0) is None
    assert TickRounding.for_tick(math.nan) is None
    assert TickRounding.for_tick("0.01") is None


def test_cached_limits_are_the_markets_own() -> None:
    _, markets = offline_exchange("binance")
    market = markets["BTC/USDT"]
    assert limits_of(market) is limits_of(market)
    with pytest.raises(ccxt.InvalidOrder, match="below the minimum notional 5"):
        check_limits(market, "limit", Decimal("0.0001"), Decimal("100"))
    check_limits(market, "limit", Decimal("0.001"), Decimal("60000"))
    # A reloaded (new) structure is read afresh, not served from the cache.
    changed = dict(market, limits=dict(market["limits"], cost={"min": 1000.0, "max": None}))
    with pytest.raises(ccxt.InvalidOrder, match="minimum notional 1000"):
        check_limits(changed, "limit", Decimal("0.001"), Decimal("60000"))
