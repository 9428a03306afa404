"""Perpetual futures accounting by hand-computed examples: linear (USDT-margined) and
inverse (coin-margined) contracts, isolated margin, funding and liquidation prices.

Every expected number is written out as the arithmetic that produces it, so a reader
can check it with a pencil. Market definitions are the bundled real Binance ones:
``BTC/USDT:USDT`` (linear, 1 BTC contracts, maker 0.02 %, taker 0.04 %, maintenance 2.5 %)
and ``BTC/USD:BTC`` (inverse, 100 USD contracts, maker 0.01 %, taker 0.05 %,
maintenance 2.5 %).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bot.inventory import Inventory, PerpInventory, inventory_for
from bot.markets import offline_markets
from bot.orders.events import OrderFilled
from bot.positions import (
    ContractSpec,
    IsolatedPosition,
    PerpLimits,
    funding_times,
    maintenance_rate,
    order_margin,
)
from bot.settings.models import MarketSettings, PerpSettings, ReserveSettings

D = Decimal
LINEAR = "BTC/USDT:USDT"
INVERSE = "BTC/USD:BTC"
NS = 1_000_000_000
MIDNIGHT_NS = 1_723_161_600 * NS  # 2024-08-09 00:00:00 UTC, a funding time


def market(symbol: str) -> dict[str, Any]:
    exchange = "binanceusdm" if symbol == LINEAR else "binancecoinm"
    markets = offline_markets(exchange)
    assert markets is not None
    return markets[symbol]


def position(symbol: str, leverage: int = 5) -> IsolatedPosition:
    m = market(symbol)
    return IsolatedPosition(ContractSpec.from_market(m), D(leverage), maintenance_rate(m))


def fill(symbol: str, side: str, amount: float, price: float, fee: float, n: int) -> OrderFilled:
    settle = "USDT" if symbol == LINEAR else "BTC"
    return OrderFilled(
        ts_ns=n,
        client_id=f"c{n}",
        symbol=symbol,
        side="buy" if side == "buy" else "sell",
        trade_id=str(n),
        price=price,
        amount=amount,
        fee_cost=fee,
        fee_currency=settle,
        taker_or_maker="maker",
        venue_ts_ms=None,
    )


# --------------------------------------------------------------------------- contracts


def test_the_bundled_markets_say_what_a_contract_is() -> None:
    linear = ContractSpec.from_market(market(LINEAR))
    inverse = ContractSpec.from_market(market(INVERSE))

    assert (linear.contract_size, linear.inverse, linear.settle) == (D(1), False, "USDT")
    assert (inverse.contract_size, inverse.inverse, inverse.settle) == (D(100), True, "BTC")
    assert maintenance_rate(market(LINEAR)) == D("0.025")  # maintMarginPercent 2.5000
    assert maintenance_rate(market(INVERSE), 0.01) == D("0.01")  # configured overrides it
    # Notional: linear = contracts x size x price; inverse = contracts x size / price.
    assert linear.value(D("0.1"), D(60_000)) == D("0.1") * 1 * 60_000 == D(6_000)
    assert inverse.value(D(100), D(50_000)) == D(100) * 100 / D(50_000) == D("0.2")
    assert inverse.notional_quote(D(100), D(50_000)) == D(10_000)  # USD


def test_funding_times_are_every_interval_since_midnight_utc() -> None:
    start = MIDNIGHT_NS - 345 * NS  # 23:54:15

    assert funding_times(start, MIDNIGHT_NS - 1, 8 * 3600) == []
    assert funding_times(start, MIDNIGHT_NS, 8 * 3600) == [MIDNIGHT_NS]
    assert funding_times(MIDNIGHT_NS, MIDNIGHT_NS + 60 * NS, 8 * 3600) == []
    # A 1-minute interval: 23:55, 23:56, ..., 00:00 (six of them).
    assert len(funding_times(start, MIDNIGHT_NS, 60)) == 6


# --------------------------------------------------------------------------- linear


def test_linear_position_margin_pnl_funding_and_liquidation_by_hand() -> None:
    pos = position(LINEAR)  # leverage 5, mmr 2.5 %
    wallet = D(10_000)

    # 1. buy 0.1 @ 60,000 as maker: value 0.1 x 60,000 = 6,000; fee 6,000 x 0.0002 = 1.2;
    #    initial margin 6,000 / 5 = 1,200 moves into the position.
    wallet += pos.fill("buy", D("0.1"), D(60_000), D(6_000) * D("0.0002"))
    assert wallet == D("9998.8")
    assert pos.margin == D(1_200)

    # 2. buy 0.1 @ 62,000 as maker: fee 6,200 x 0.0002 = 1.24, margin + 6,200 / 5 = 1,240;
    #    entry (0.1 x 60,000 + 0.1 x 62,000) / 0.2 = 61,000.
    wallet += pos.fill("buy", D("0.1"), D(62_000), D(6_200) * D("0.0002"))
    assert (pos.contracts, pos.entry, pos.margin) == (D("0.2"), D(61_000), D(2_440))
    assert wallet == D("9997.56")

    # 3. at mark 61,500: unrealised 0.2 x (61,500 - 61,000) = 100; maintenance
    #    0.2 x 61,500 x 0.025 = 307.5; effective leverage 12,300 / (2,440 + 100).
    assert pos.unrealised(D(61_500)) == D(100)
    assert pos.maintenance(D(61_500)) == D("307.5")
    assert pos.effective_leverage(D(61_500)) == D(12_300) / D(2_540)
    # Liquidation (long): (N x E - M) / (N x (1 - mmr)) = (12,200 - 2,440) / 0.195.
    liq = pos.liquidation_price()
    assert liq == (D("0.2") * 61_000 - 2_440) / (D("0.2") * D("0.975"))
    assert float(liq) == pytest.approx(50_051.282051282)
    # There, margin + unrealised = maintenance, by definition.
    assert pos.margin + pos.unrealised(liq) == pytest.approx(pos.maintenance(liq))

    # 4. sell 0.05 @ 63,000 as taker: closes 0.05, realised 0.05 x (63,000 - 61,000) = 100;
    #    fee 0.05 x 63,000 x 0.0004 = 1.26; a quarter of the margin (610) is released.
    wallet += pos.fill("sell", D("0.05"), D(63_000), D("0.05") * 63_000 * D("0.0004"))
    assert (pos.contracts, pos.entry, pos.margin) == (D("0.15"), D(61_000), D(1_830))
    assert pos.realised == D(100)
    assert wallet == D("9997.56") + 100 - D("1.26") == D("10096.30")

    # 5. funding at mark 62,000, rate +0.01 %: the long pays 0.15 x 62,000 x 0.0001 = 0.93,
    #    out of its isolated margin.
    paid = pos.apply_funding(D(62_000), D("0.0001"))
    assert paid == D("-0.93")
    assert pos.margin == D("1829.07")

    # 6. sell 0.25 @ 60,000: closes 0.15 (realised 0.15 x (60,000 - 61,000) = -150) and
    #    opens a 0.1 short at 60,000 with margin 0.1 x 60,000 / 5 = 1,200.
    pos.fill("sell", D("0.25"), D(60_000), D(0))
    assert (pos.contracts, pos.entry, pos.margin) == (D("-0.1"), D(60_000), D(1_200))
    assert pos.realised == D(100) - 150
    # Liquidation (short): (M + N x E) / (N x (1 + mmr)) = (1,200 + 6,000) / 0.1025.
    assert pos.liquidation_price() == (D(1_200) + 6_000) / (D("0.1") * D("1.025"))


def test_linear_inventory_books_fills_and_funding_like_the_arithmetic() -> None:
    settings = MarketSettings(
        symbol=LINEAR,
        reserve=ReserveSettings(quote=10_000, floor_fraction=0.1),
        perp=PerpSettings(leverage=5, funding_rate=0.0001),
    )
    inv = inventory_for(settings, market(LINEAR))
    assert isinstance(inv, PerpInventory)

    inv.mark(MIDNIGHT_NS - 60 * NS, 60_000.0)
    assert inv.apply(fill(LINEAR, "buy", 0.1, 60_000.0, 1.2, 1))
    assert inv.apply(fill(LINEAR, "buy", 0.1, 62_000.0, 1.24, 2))
    assert not inv.apply(fill(LINEAR, "buy", 0.1, 62_000.0, 1.24, 2))  # seen: ignored
    inv.mark(MIDNIGHT_NS - 1, 61_500.0)

    view = inv.view(61_500.0)
    assert inv.net_units == pytest.approx(0.2)
    assert view.net_base == pytest.approx(0.2)  # 0.2 contracts x 1 BTC
    assert view.avg_cost == pytest.approx(61_000.0)
    assert view.unrealised_pnl == pytest.approx(100.0)  # 0.2 x (61,500 - 61,000)
    assert view.realised_pnl == pytest.approx(-2.44)  # fees 1.2 + 1.24
    # Equity = wallet + unrealised = 9,997.56 + 100 = base x mid + quote.
    assert inv.equity_quote(61_500.0) == pytest.approx(10_097.56)
    assert view.base * 61_500.0 + view.quote == pytest.approx(10_097.56)
    # Committed collateral = orders' initial margin (none) + maintenance 307.5.
    assert inv.committed_quote([], 61_500.0) == pytest.approx(307.5)
    # Free margin = wallet 9,997.56 - floor 1,000 - position margin 2,440.
    assert inv.margin_free([], 0.1) == D("9997.56") - 1_000 - 2_440

    reading = inv.mark(MIDNIGHT_NS, 62_000.0)  # the 00:00 funding time: pays 0.2 x 62,000 x 1bp
    assert inv.position.funding == D("-1.24")
    assert inv.wallet == D("9997.56") - D("1.24")
    assert inv.funding_payments == 1
    assert reading.contracts == pytest.approx(0.2)
    assert reading.notional_quote == pytest.approx(12_400.0)
    assert reading.liquidation_price == pytest.approx(
        float((D("0.2") * 61_000 - (2_440 - D("1.24"))) / (D("0.2") * D("0.975")))
    )
    assert inv.balances() == {"USDT": pytest.approx(9_996.32)}


# --------------------------------------------------------------------------- inverse


def test_inverse_position_margin_pnl_funding_and_liquidation_by_hand() -> None:
    pos = position(INVERSE)  # 100 USD contracts, leverage 5, mmr 2.5 %
    wallet = D(1)  # BTC

    # 1. sell 100 @ 50,000 as maker: value 100 x 100 / 50,000 = 0.2 BTC; fee 0.2 x 0.0001;
    #    margin 0.2 / 5 = 0.04 BTC.
    wallet += pos.fill("sell", D(100), D(50_000), D("0.2") * D("0.0001"))
    assert (pos.contracts, pos.entry, pos.margin) == (D(-100), D(50_000), D("0.04"))
    assert wallet == D("0.99998")

    # 2. sell 100 @ 40,000: value 10,000 / 40,000 = 0.25 BTC, margin + 0.05; entry is the
    #    harmonic mean: 200 / (100 / 50,000 + 100 / 40,000) = 200 / 0.0045 = 44,444.44...
    wallet += pos.fill("sell", D(100), D(40_000), D("0.25") * D("0.0001"))
    assert pos.entry == D(200) / (D(100) / 50_000 + D(100) / 40_000)
    assert float(pos.entry) == pytest.approx(44_444.444444)
    assert pos.margin == D("0.09")
    assert wallet == D("0.999955")

    # 3. buy 100 @ 40,000 as taker closes half: realised -100 x 100 x (1/E - 1/40,000)
    #    = -10,000 x (0.0000225 - 0.000025) = +0.025 BTC; fee 0.25 x 0.0005 = 0.000125;
    #    half the margin is released.
    wallet += pos.fill("buy", D(100), D(40_000), D("0.25") * D("0.0005"))
    assert pos.realised == pytest.approx(D("0.025"))
    assert pos.margin == D("0.045")
    assert wallet == pytest.approx(D("0.999955") + D("0.025") - D("0.000125"))

    # 4. Liquidation (short): N (1 - mmr) / (N / E - M), N = 100 x 100 = 10,000 USD:
    #    10,000 x 0.975 / (10,000 / 44,444.44 - 0.045) = 9,750 / (0.225 - 0.045) = 54,166.67.
    liq = pos.liquidation_price()
    assert liq is not None
    assert float(liq) == pytest.approx(9_750 / 0.18)
    assert pos.margin + pos.unrealised(liq) == pytest.approx(pos.maintenance(liq))
    # Unrealised at 45,000: -10,000 x (1/44,444.44 - 1/45,000) = -0.0027778 BTC.
    assert float(pos.unrealised(D(45_000))) == pytest.approx(-10_000 * (0.0000225 - 1 / 45_000))

    # 5. funding at mark 45,000, +0.01 %: the short receives 10,000 / 45,000 x 0.0001.
    assert float(pos.apply_funding(D(45_000), D("0.0001"))) == pytest.approx(
        10_000 / 45_000 * 0.0001
    )


def test_an_inverse_long_is_never_liquidated_only_at_one_x_or_less_short() -> None:
    long = position(INVERSE, leverage=1)
    long.fill("buy", D(100), D(50_000), D(0))
    # Long: N (1 + mmr) / (M + N / E) = 10,000 x 1.025 / (0.2 + 0.2) = 25,625.
    assert long.liquidation_price() == D(10_000) * D("1.025") / (D("0.2") + D("0.2"))
    short = position(INVERSE, leverage=1)
    short.fill("sell", D(100), D(50_000), D(0))
    # Short at 1x: N / E - M = 0.2 - 0.2 = 0: no price liquidates it.
    assert short.liquidation_price() is None


def test_inverse_inventory_values_in_quote_at_the_mid() -> None:
    settings = MarketSettings(
        symbol=INVERSE,
        reserve=ReserveSettings(base=1.0, floor_fraction=0.0),
        perp=PerpSettings(leverage=5),
    )
    inv = inventory_for(settings, market(INVERSE))
    assert isinstance(inv, PerpInventory)
    inv.apply(fill(INVERSE, "sell", 100, 50_000.0, 0.00002, 1))
    inv.mark(1, 45_000.0)

    view = inv.view(45_000.0)
    # Short 100 contracts of 100 USD: -10,000 USD, i.e. -10,000 / 45,000 BTC at the mid.
    assert view.net_base == pytest.approx(-10_000 / 45_000)
    # Unrealised: -10,000 x (1/50,000 - 1/45,000) BTC = +0.0222 BTC, x 45,000 = 1,000 USD.
    assert view.unrealised_pnl == pytest.approx(1_000.0)
    assert view.realised_pnl == pytest.approx(-0.00002 * 45_000)  # the fee, in USD
    # Equity = (wallet + unrealised) x mid = base x mid + quote, at any mid.
    for mid in (45_000.0, 52_000.0):
        equity = (0.99998 - 10_000 * (1 / 50_000 - 1 / mid)) * mid
        assert inv.equity_quote(mid) == pytest.approx(equity)
        assert view.base * mid + view.quote == pytest.approx(equity)
    # Committed collateral: maintenance 10,000 / 45,000 x 0.025 BTC, in USD at 45,000 = 250.
    assert inv.committed_quote([], 45_000.0) == pytest.approx(250.0)


def test_a_perpetual_reserve_must_be_its_margin() -> None:
    wrong = MarketSettings(symbol=LINEAR, reserve=ReserveSettings(base=1.0, quote=1_000))
    with pytest.raises(ValueError, match=r"reserve\.base to 0"):
        inventory_for(wrong, market(LINEAR))
    spot = inventory_for(MarketSettings(symbol="BTC/USDT"), None)
    assert isinstance(spot, Inventory)


# --------------------------------------------------------------------------- order margin


class _O:
    def __init__(self, side: str, price: float, remaining: float) -> None:
        self.side, self.price, self.remaining = side, price, remaining


def test_orders_that_only_close_the_position_need_no_margin() -> None:
    pos = position(LINEAR)
    pos.fill("buy", D("0.3"), D(60_000), D(0))  # long 0.3
    rows = [
        ("sell", D(60_100), D("0.2")),
        ("sell", D(60_200), D("0.2")),
        ("buy", D(59_900), D("0.1")),
    ]
    # Sells close up to 0.3 (the nearest first): 0.2 @ 60,100 free, 0.1 @ 60,200 free,
    # 0.1 @ 60,200 opens a short: 0.1 x 60,200 / 5 = 1,204. The buy grows the long:
    # 0.1 x 59,900 / 5 = 1,198.
    assert order_margin(pos, rows) == D(1_204) + D(1_198)


def test_inventory_collateral_is_orders_initial_margin_plus_position_maintenance() -> None:
    settings = MarketSettings(symbol=LINEAR, reserve=ReserveSettings(quote=10_000))
    inv = inventory_for(settings, market(LINEAR))
    assert isinstance(inv, PerpInventory)
    inv.apply(fill(LINEAR, "buy", 0.1, 60_000.0, 0.0, 1))
    orders = [_O("buy", 59_000.0, 0.2), _O("sell", 61_000.0, 0.1)]
    # Buy 0.2 @ 59,000 opens: 11,800 / 5 = 2,360; the sell only closes: 0. Position
    # maintenance at 60,500: 0.1 x 60,500 x 0.025 = 151.25.
    assert inv.committed_quote(orders, 60_500.0) == pytest.approx(2_360 + 151.25)


def test_limits_reach_the_risk_reading() -> None:
    settings = MarketSettings(
        symbol=LINEAR,
        reserve=ReserveSettings(quote=1_000),
        perp=PerpSettings(leverage=5, max_position_contracts=0.5, min_liquidation_distance_bps=800),
    )
    inv = inventory_for(settings, market(LINEAR))
    assert isinstance(inv, PerpInventory)
    inv.apply(fill(LINEAR, "buy", 0.01, 60_000.0, 0.0, 1))
    reading = inv.mark(1, 60_000.0, 60_010.0)
    assert reading.limits == PerpLimits(
        max_leverage=10.0,
        min_liquidation_distance_bps=800.0,
        max_funding_rate=0.001,
        mark_last_band_bps=50.0,
        max_position_contracts=0.5,
        max_position_notional_quote=None,
    )
    # Long 0.01 @ 60,000 at 5x: liquidation (600 - 120) / (0.01 x 0.975) = 49,230.77, which
    # is 1,794.9 bps below the mark; the last trade is 10 / 60,000 = 1.67 bps away.
    assert reading.liquidation_distance_bps == pytest.approx((60_000 - 480 / 0.00975) / 6)
    assert reading.mark_last_bps == pytest.approx(10 / 60_000 * 1e4)
