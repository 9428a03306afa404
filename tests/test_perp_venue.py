"""The perpetual futures paper venue: positions, isolated margin, reduce-only, funding and
liquidation, with the spot venue's matching engine and ccxt's own structure validators.

Numbers are hand-computed in the comments; markets are the bundled Binance ones
(``BTC/USDT:USDT`` linear 1 BTC contracts, ``BTC/USD:BTC`` inverse 100 USD contracts).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import ccxt.test.exchange.base as ccxt_checks
import pytest

from bot.book import OrderBook
from bot.clock import NS_PER_MS, ManualClock
from bot.feeds.events import Trade, levels
from bot.markets import offline_markets
from bot.monitor import DepthMonitor
from bot.venues.perp import PerpPaperVenue, PerpTerms

D = Decimal
LINEAR = "BTC/USDT:USDT"
INVERSE = "BTC/USD:BTC"
FEES = {"maker": 0.0002, "taker": 0.0004}
NS = 1_000_000_000
MIDNIGHT_NS = 1_723_161_600 * NS  # a funding time (00:00 UTC)

check_order = ccxt_checks.test_order
check_trade = ccxt_checks.test_trade
check_balance = ccxt_checks.test_balance
check_position = ccxt_checks.test_position


def markets(exchange: str) -> dict[str, dict[str, Any]]:
    m = offline_markets(exchange)
    assert m is not None
    return m


class Tape:
    """A public book and trades for one market, driven by hand on the manual clock."""

    def __init__(self, venue: PerpPaperVenue, clock: ManualClock, symbol: str) -> None:
        self.venue, self.clock, self.symbol = venue, clock, symbol
        self.book = OrderBook(symbol, clock=clock)
        self.monitor = DepthMonitor.for_bands((10.0,), 1000.0)

    def snapshot(self, bid: float, ask: float, size: float = 5.0, *, after_ms: int = 1) -> None:
        self.clock.advance(after_ms * NS_PER_MS)
        tick = 0.1
        bids = [[round(bid - i * tick, 1), size] for i in range(5)]
        asks = [[round(ask + i * tick, 1), size] for i in range(5)]
        assert self.book.apply_snapshot(levels(bids), levels(asks)) is None
        sample = self.monitor.observe(self.book, self.clock.now_ns())
        assert sample is not None
        self.venue.on_sample(self.symbol, self.book, sample)

    def trade(self, price: float, amount: float, side: str, *, after_ms: int = 1) -> None:
        self.clock.advance(after_ms * NS_PER_MS)
        aggressor = "buy" if side == "buy" else "sell"
        self.venue.on_trade(Trade(self.symbol, self.clock.now_ns(), price, amount, aggressor, "t"))


def make(
    clock: ManualClock, symbol: str = LINEAR, balance: float = 10_000.0, **terms: Any
) -> tuple[PerpPaperVenue, Tape]:
    exchange = "binanceusdm" if symbol == LINEAR else "binancecoinm"
    settle = "USDT" if symbol == LINEAR else "BTC"
    venue = PerpPaperVenue(
        markets=markets(exchange),
        balances={settle: balance},
        clock=clock,
        fees={symbol: FEES},
        exchange_id=exchange,
        terms={symbol: PerpTerms(**{"leverage": 5.0, "max_leverage": 10.0, **terms})},
    )
    tape = Tape(venue, clock, symbol)
    # 5 BTC a level (linear), 500 contracts of 100 USD a level (inverse).
    tape.snapshot(60_000.0, 60_000.1, 5.0 if symbol == LINEAR else 500.0)
    return venue, tape


def checker(exchange: str) -> Any:
    ex = getattr(ccxt, exchange)({"enableRateLimit": False})
    ex.set_markets(list(markets(exchange).values()))
    return ex


async def test_a_maker_fill_opens_a_long_with_isolated_margin(clock: ManualClock) -> None:
    venue, tape = make(clock)
    order = await venue.create_order(LINEAR, "limit", "buy", 0.1, 60_000.0, {"postOnly": True})
    assert order["reduceOnly"] is False
    balance = await venue.fetch_balance()
    # Resting: its initial margin 0.1 x 60,000 / 5 = 1,200 plus its fee at the taker rate
    # (6,000 x 0.0004 = 2.4) had to be free; 1,200 is now used.
    assert balance["USDT"]["used"] == pytest.approx(1_200.0)

    tape.trade(59_999.9, 0.5, "sell")  # trades through our bid: we fill as maker
    pos = venue.position(LINEAR)
    assert (pos.contracts, pos.entry, pos.margin) == (D("0.1"), D(60_000), D(1_200))
    balance = await venue.fetch_balance()
    # Wallet 10,000 - maker fee 6,000 x 0.0002 = 9,998.8; the margin moved to the position.
    assert balance["USDT"]["total"] == pytest.approx(9_998.8)
    assert balance["USDT"]["used"] == pytest.approx(1_200.0)
    assert balance["USDT"]["free"] == pytest.approx(8_798.8)

    ex = checker("binanceusdm")
    now = clock.now_ns() // NS_PER_MS
    check_balance(ex, {}, "fetchBalance", balance)
    (trade,) = await venue.fetch_my_trades(LINEAR)
    check_trade(ex, {}, "fetchMyTrades", trade, LINEAR, now, False)
    assert trade["cost"] == pytest.approx(6_000.0)  # value: 0.1 x 1 x 60,000
    assert trade["fee"] == {"cost": pytest.approx(1.2), "currency": "USDT", "rate": 0.0002}
    check_order(ex, {}, "fetchOrder", await venue.fetch_order(order["id"], LINEAR), LINEAR, now)
    (p,) = await venue.fetch_positions([LINEAR])
    check_position(ex, {}, "fetchPositions", p, LINEAR, now)
    assert (p["side"], p["contracts"], p["entryPrice"], p["marginMode"]) == (
        "long",
        0.1,
        60_000.0,
        "isolated",
    )
    # Liquidation (long): (N x E - M) / (N x (1 - mmr)) = (6,000 - 1,200) / (0.1 x 0.975).
    assert p["liquidationPrice"] == pytest.approx(4_800 / 0.0975)
    assert p["maintenanceMargin"] == pytest.approx(0.1 * 60_000.05 * 0.025)  # at the mid


async def test_inverse_contracts_are_valued_in_the_coin(clock: ManualClock) -> None:
    venue, _tape = make(clock, INVERSE, balance=1.0)
    # Taker buy of 50 contracts: walks the ask at 60,000.1. Value 50 x 100 / 60,000.1 BTC.
    order = await venue.create_order(INVERSE, "limit", "buy", 50, 60_000.1)
    value = 5_000 / 60_000.1
    assert order["status"] == "closed"
    assert order["cost"] == pytest.approx(value)
    (trade,) = order["trades"]
    assert trade["fee"]["currency"] == "BTC"
    assert trade["fee"]["cost"] == pytest.approx(value * 0.0004)
    pos = venue.position(INVERSE)
    assert pos.contracts == 50
    assert float(pos.margin) == pytest.approx(value / 5)
    balance = await venue.fetch_balance()
    assert balance["BTC"]["total"] == pytest.approx(1.0 - value * 0.0004)
    (p,) = await venue.fetch_positions()
    check_position(
        checker("binancecoinm"), {}, "fetchPositions", p, INVERSE, clock.now_ns() // 10**6
    )
    assert p["contractSize"] == 100
    # Long inverse: N (1 + mmr) / (M + N / E) with N = 5,000 USD.
    assert p["liquidationPrice"] == pytest.approx(5_000 * 1.025 / (value / 5 + value))


async def test_margin_must_be_free_for_the_opening_part_only(clock: ManualClock) -> None:
    venue, _tape = make(clock, balance=1_000.0)
    # 0.1 @ 59,000 needs 5,900 / 5 = 1,180 (+ fee): more than the 1,000 wallet.
    with pytest.raises(ccxt.InsufficientFunds):
        await venue.create_order(LINEAR, "limit", "buy", 0.1, 59_000.0)
    await venue.create_order(LINEAR, "limit", "buy", 0.05, 60_000.1)  # takes: long 0.05
    # Margin used 0.05 x 60,000.1 / 5 = 600.001; free about 400 - 1.2 fee. A sell of 0.05
    # only closes the long, so it needs no margin (only its fee) ...
    await venue.create_order(LINEAR, "limit", "sell", 0.05, 61_000.0)
    # ... but with that sell already closing the long, all of another 0.1 would open a
    # short: 0.1 x 61,000 / 5 = 1,220 > what is free.
    with pytest.raises(ccxt.InsufficientFunds):
        await venue.create_order(LINEAR, "limit", "sell", 0.1, 61_000.0)


async def test_reduce_only_orders(clock: ManualClock) -> None:
    venue, tape = make(clock)
    with pytest.raises(ccxt.InvalidOrder, match="ReduceOnly"):  # nothing to reduce
        await venue.create_order(LINEAR, "limit", "sell", 0.1, 61_000.0, {"reduceOnly": True})
    await venue.create_order(LINEAR, "limit", "buy", 0.1, 60_000.1)  # long 0.1
    with pytest.raises(ccxt.InvalidOrder, match="ReduceOnly"):  # would flip to a short
        await venue.create_order(LINEAR, "limit", "sell", 0.2, 61_000.0, {"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder, match="ReduceOnly"):  # would grow the long
        await venue.create_order(LINEAR, "limit", "buy", 0.1, 59_000.0, {"reduceOnly": True})
    near = await venue.create_order(LINEAR, "limit", "sell", 0.06, 60_500.0, {"reduceOnly": True})
    far = await venue.create_order(LINEAR, "limit", "sell", 0.06, 60_600.0, {"reduceOnly": True})
    assert near["reduceOnly"] is True
    # The near one fills: 0.04 left to close, so the far one (0.06) can no longer only
    # reduce: the venue expires it, as Binance does.
    tape.trade(60_500.1, 0.5, "buy")
    assert (await venue.fetch_order(near["id"], LINEAR))["status"] == "closed"
    assert (await venue.fetch_order(far["id"], LINEAR))["status"] == "canceled"
    assert venue.position(LINEAR).contracts == D("0.04")


async def test_funding_is_paid_at_the_funding_time_from_the_configured_rate(
    clock: ManualClock,
) -> None:
    venue, tape = make(clock, funding_rate=0.0001)
    await venue.create_order(LINEAR, "limit", "sell", 0.2, 60_000.0)  # takes the bid: short
    wallet = (await venue.fetch_balance())["USDT"]["total"]
    rate = await venue.fetch_funding_rate(LINEAR)
    assert rate["fundingRate"] == 0.0001
    assert rate["fundingTimestamp"] == MIDNIGHT_NS // NS_PER_MS

    clock.set(MIDNIGHT_NS - 2 * NS)
    tape.snapshot(61_000.0, 61_000.1)
    assert venue.funding_history == []
    clock.set(MIDNIGHT_NS + NS // 2)
    tape.snapshot(61_000.0, 61_000.1)  # first book update after 00:00: mark (mid) 61,000.05
    # The short receives 0.2 x 61,000.05 x 0.0001 = 1.22001 USDT, into its margin.
    (paid,) = venue.funding_history
    assert (paid.ts_ms, paid.amount) == (MIDNIGHT_NS // NS_PER_MS, D("1.220001"))
    assert (await venue.fetch_balance())["USDT"]["total"] == pytest.approx(wallet + 1.220001)
    assert venue.position(LINEAR).funding == D("1.220001")
    tape.snapshot(61_000.0, 61_000.1)  # once per funding time
    assert len(venue.funding_history) == 1
    (row,) = await venue.fetch_funding_history(LINEAR)
    assert row["amount"] == pytest.approx(1.220001)


async def test_the_mark_reaching_the_liquidation_price_liquidates(clock: ManualClock) -> None:
    venue, tape = make(clock, leverage=10.0)
    await venue.create_order(LINEAR, "limit", "buy", 0.1, 60_000.1)  # long 0.1 @ 60,000.1
    resting = await venue.create_order(LINEAR, "limit", "buy", 0.01, 50_000.0)
    pos = venue.position(LINEAR)
    # 10x: margin 600.001; liquidation (6,000.01 - 600.001) / (0.1 x 0.975) = 55,384.7...
    liq = pos.liquidation_price()
    assert liq is not None
    assert float(liq) == pytest.approx(5_400.009 / 0.0975)
    wallet = (await venue.fetch_balance())["USDT"]["total"]
    tape.snapshot(55_400.0, 55_400.1)  # above it: nothing
    assert venue.liquidations == []
    tape.snapshot(55_300.0, 55_300.1)  # through it
    (liquidation,) = venue.liquidations
    assert liquidation.margin_lost == D("600.001")
    assert venue.position(LINEAR).contracts == 0
    assert (await venue.fetch_balance())["USDT"]["total"] == pytest.approx(wallet - 600.001)
    assert (await venue.fetch_order(resting["id"], LINEAR))["status"] == "canceled"
    assert await venue.fetch_positions() == []


async def test_leverage_is_capped(clock: ManualClock) -> None:
    venue, _tape = make(clock, max_leverage=8.0)
    with pytest.raises(ccxt.BadRequest):
        await venue.set_leverage(20, LINEAR)
    await venue.set_leverage(2, LINEAR)
    await venue.create_order(LINEAR, "limit", "buy", 0.1, 60_000.1)
    assert venue.position(LINEAR).margin == D("0.1") * D("60000.1") / 2
    with pytest.raises(ccxt.BadRequest):  # not while a position is open
        await venue.set_leverage(3, LINEAR)
    with pytest.raises(ValueError, match="cap"):
        make(ManualClock(), leverage=20.0, max_leverage=10.0)


async def test_spot_markets_on_the_same_venue_keep_the_spot_account(clock: ManualClock) -> None:
    venue = PerpPaperVenue(
        markets=markets("binance"),
        balances={"USDT": 100_000.0, "BTC": 1.0},
        clock=clock,
        exchange_id="binance",
    )
    tape = Tape(venue, clock, "BTC/USDT")
    tape.snapshot(60_000.0, 60_000.1)
    await venue.create_order("BTC/USDT", "limit", "buy", 0.1, 60_000.1)
    balance = await venue.fetch_balance()
    # Spot: base and quote move (fee 0.1 % in the BTC received), no position.
    assert balance["BTC"]["total"] == pytest.approx(1.0 + 0.1 * 0.999)
    assert balance["USDT"]["total"] == pytest.approx(100_000.0 - 6_000.01)
    with pytest.raises(ccxt.InvalidOrder):
        await venue.create_order("BTC/USDT", "limit", "sell", 0.1, 61_000.0, {"reduceOnly": True})
    assert await venue.fetch_positions() == []
