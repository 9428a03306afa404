"""Option books (monitoring) and greek limits: Black-76 by hand, band depth per strike and
expiry in premium and vega notional, and the delta/vega checks per order and in total.

Option markets are built by ccxt's own Deribit parser from instrument entries written
here in Deribit's documented ``public/get_instruments`` format (hand-made, not recorded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bot.book import OrderBook
from bot.clock import ManualClock
from bot.feeds.events import levels
from bot.markets import OfflineRequestError, markets_from_responses
from bot.monitor import DepthMonitor
from bot.risk.greeks import (
    GreekExposure,
    GreekLimits,
    black76,
    check_greeks,
    implied_vol,
    order_exposure,
)
from bot.risk.options import OptionBookMonitor, OptionSpec, option_band_depth

NOW_MS = 1_723_161_600_000  # 2024-08-09 00:00 UTC
EXPIRY_MS = 1_727_424_000_000  # 2024-09-27 08:00 UTC
T = (EXPIRY_MS - NOW_MS) / 1000 / (365 * 86_400)  # 4,262,400 s = 0.13516 years
CALL = "BTC/USD:BTC-240927-60000-C"
PUT = "BTC/USD:BTC-240927-60000-P"


def instrument(strike: int, kind: str) -> dict[str, Any]:
    letter = "C" if kind == "call" else "P"
    return {
        "tick_size": 0.0005,
        "taker_commission": 0.0003,
        "strike": float(strike),
        "settlement_period": "month",
        "settlement_currency": "BTC",
        "quote_currency": "BTC",
        "option_type": kind,
        "min_trade_amount": 0.1,
        "maker_commission": 0.0003,
        "kind": "option",
        "is_active": True,
        "instrument_name": f"BTC-27SEP24-{strike}-{letter}",
        "expiration_timestamp": EXPIRY_MS,
        "creation_timestamp": 1_700_000_000_000,
        "counter_currency": "USD",
        "contract_size": 1.0,
        "block_trade_commission": 0.0003,
        "base_currency": "BTC",
    }


def option_markets() -> dict[str, dict[str, Any]]:
    result = [instrument(60_000, "call"), instrument(60_000, "put")]
    return markets_from_responses("deribit", {"get_instruments": {"result": result}})


def test_black76_by_hand_at_the_money() -> None:
    # F = K = 60,000, t = 0.25, sigma = 0.5: d1 = 0.5 x 0.5 / 2 = 0.125, d2 = -0.125.
    # N(0.125) = 0.5497382, phi(0.125) = 0.3989423 x exp(-0.125^2 / 2) = 0.3958377.
    call = black76(60_000, 60_000, 0.25, 0.5, call=True)
    put = black76(60_000, 60_000, 0.25, 0.5, call=False)
    assert call.price == pytest.approx(60_000 * (0.5497382 - 0.4502618), abs=0.01)  # 5,968.6
    assert put.price == pytest.approx(call.price)  # parity at K = F: C - P = F - K = 0
    assert call.delta == pytest.approx(0.5497382, abs=1e-7)
    assert put.delta == pytest.approx(0.5497382 - 1, abs=1e-7)
    # vega = F phi(d1) sqrt(t) = 60,000 x 0.3958377 x 0.5 = 11,875.13 per 1.00 of vol.
    assert call.vega == pytest.approx(11_875.13, abs=0.01)
    assert call.vega_per_point == pytest.approx(118.7513, abs=1e-4)
    # Implied volatility inverts the price; a price below intrinsic has none.
    assert implied_vol(call.price, 60_000, 60_000, 0.25, True) == pytest.approx(0.5, abs=1e-8)
    assert implied_vol(100.0, 60_000, 50_000, 0.25, True) is None  # intrinsic is 10,000
    expired = black76(61_000, 60_000, 0.0, 0.5, call=True)
    assert (expired.price, expired.delta, expired.vega) == (1_000.0, 1.0, 0.0)


def test_option_markets_come_from_ccxt_structures() -> None:
    markets = option_markets()
    spec = OptionSpec.from_market(markets[CALL])
    assert (spec.strike, spec.expiry_ms, spec.call, spec.contract_size) == (
        60_000.0,
        EXPIRY_MS,
        True,
        1.0,
    )
    assert spec.premium_in_base  # Deribit quotes BTC options in BTC
    assert not OptionSpec.from_market(markets[PUT]).call
    with pytest.raises(OfflineRequestError):
        markets_from_responses("deribit", {})


def test_band_depth_in_premium_and_vega_notional_by_hand() -> None:
    spec = OptionSpec.from_market(option_markets()[CALL])
    bids = np.array([[0.0700, 10.0], [0.0695, 5.0], [0.0500, 100.0]])
    asks = np.array([[0.0710, 8.0], [0.0715, 4.0], [0.1000, 50.0]])
    depth = option_band_depth(
        spec, bids, asks, forward=60_000.0, ts_ns=NOW_MS * 1_000_000, band_vol_points=2.0
    )
    assert depth is not None
    # Mid premium 0.0705 BTC x 60,000 = 4,230 USD; its implied vol prices it back.
    assert depth.mid_premium_quote == pytest.approx(4_230.0)
    assert black76(60_000, 60_000, T, depth.iv_mid, True).price == pytest.approx(4_230.0)
    vpp = black76(60_000, 60_000, T, depth.iv_mid, True).vega_per_point  # about 87.6 USD
    assert 80 < vpp < 95
    # In the 2-point band: 0.0700 and 0.0695 (0.03 and 0.06 BTC x 60,000 / 87.6 = 0.34 and
    # 0.68 points from the mid), not 0.0500 (about 14 points away). Likewise the asks.
    assert (depth.bid.levels, depth.bid.contracts) == (2, 15.0)
    assert depth.bid.premium_quote == pytest.approx(10 * 0.07 * 60_000 + 5 * 0.0695 * 60_000)
    assert depth.bid.vega_quote == pytest.approx(15 * vpp)
    assert (depth.ask.levels, depth.ask.contracts) == (2, 12.0)
    assert depth.ask.premium_quote == pytest.approx(8 * 0.071 * 60_000 + 4 * 0.0715 * 60_000)
    assert depth.ask.vega_quote == pytest.approx(12 * vpp)
    # Half as wide a band keeps only the touch on each side.
    narrow = option_band_depth(
        spec, bids, asks, forward=60_000.0, ts_ns=NOW_MS * 1_000_000, band_vol_points=0.5
    )
    assert narrow is not None
    assert (narrow.bid.contracts, narrow.ask.contracts) == (10.0, 8.0)


def test_the_monitor_watches_every_option_book_against_the_underlying() -> None:
    clock = ManualClock(NOW_MS * 1_000_000)
    monitor = OptionBookMonitor.from_markets("BTC/USD:BTC", option_markets(), band_vol_points=2.0)
    depth_monitor = DepthMonitor.for_bands((10.0,), 1.0)

    def update(symbol: str, bids: list[list[float]], asks: list[list[float]]) -> None:
        book = OrderBook(symbol, clock=clock)
        assert book.apply_snapshot(levels(bids), levels(asks)) is None
        sample = depth_monitor.observe(book, clock.now_ns())
        assert sample is not None
        monitor.on_sample(symbol, book, sample)

    update(CALL, [[0.07, 10.0]], [[0.071, 8.0]])
    assert monitor.latest == {}  # no forward yet: nothing can be valued
    update("BTC/USD:BTC", [[59_999.5, 1000.0]], [[60_000.5, 1000.0]])
    assert monitor.forward == 60_000.0
    update(CALL, [[0.07, 10.0]], [[0.071, 8.0]])
    update(PUT, [[0.07, 3.0]], [[0.071, 2.0]])
    surface = monitor.surface()
    assert list(surface) == [(EXPIRY_MS, 60_000.0)]
    assert set(surface[(EXPIRY_MS, 60_000.0)]) == {"call", "put"}
    # A fracture on the call's bid: its vega depth falls, and the low is kept.
    before = monitor.latest[CALL].bid.vega_quote
    update(CALL, [[0.07, 1.0]], [[0.071, 8.0]])
    assert monitor.lows[(CALL, "bid")] == pytest.approx(before / 10)


def test_greek_limits_per_order_and_in_total() -> None:
    g = black76(60_000, 60_000, 0.25, 0.5, call=True)  # delta 0.5497, vega 118.75 / point
    limits = GreekLimits(
        max_delta_per_order=5.0,
        max_vega_per_order=1_000.0,
        max_delta_total=8.0,
        max_vega_total=2_000.0,
    )
    # Buying 10 calls: delta 10 x 0.5497 = 5.497 BTC > 5.
    order = order_exposure("buy", 10, 1.0, g)
    assert order.delta == pytest.approx(5.497382, abs=1e-6)
    denial = check_greeks(order, GreekExposure(), limits)
    assert denial is not None
    assert denial.startswith("DELTA_EXCEEDS_MAX_PER_ORDER")
    # 8 calls: delta 4.40, vega 950 per point: within the per-order caps...
    eight = order_exposure("buy", 8, 1.0, g)
    assert check_greeks(eight, GreekExposure(), limits) is None
    # ...but on top of a book at vega 1,200 it would be 2,150 > 2,000.
    denial = check_greeks(eight, GreekExposure(0.0, 1_200.0), limits)
    assert denial is not None
    assert denial.startswith("VEGA_EXCEEDS_MAX_TOTAL")
    # Selling them shrinks a book that is over its total: never refused for the total.
    assert (
        check_greeks(order_exposure("sell", 8, 1.0, g), GreekExposure(9.0, 2_500.0), limits) is None
    )
    # 9 vega-heavy contracts: 9 x 118.75 = 1,068.8 > 1,000 per order.
    denial = check_greeks(GreekExposure(0.1, 9 * g.vega_per_point), GreekExposure(), limits)
    assert denial is not None
    assert denial.startswith("VEGA_EXCEEDS_MAX_PER_ORDER")
