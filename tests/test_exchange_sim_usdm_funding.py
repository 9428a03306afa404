"""Funding payments from the venue, through real ccxt ``binanceusdm`` and the USD-M emulator.

On an exchange account the bot books the venue's own funding payments
(``fetch_funding_history``, Binance ``GET /fapi/v1/income``), once each by the venue's
``tranId``, journaled, and read again at a restart: its wallet, isolated margin and
funding equal the emulator's exactly, across restarts, and whichever reaches the bot
first, a funding payment or a later fill that shrinks the position.

The emulator's clock is the wall clock shifted by the test (ccxt is told the shift as
Binance's ``timeDifference``, so its signed requests stay inside the venue's window):
it starts a minute past an hour and jumps past the next hours, the funding times.
Figures are hand-computed from the bundled BTCUSDT perpetual (taker 0.04 %).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from futures_support import (
    HOUR_NS,
    MINUTE_NS,
    Session,
    ShiftedClock,
    assert_books_agree,
    exchange_info,
)

from bot.exchange_sim.futures_server import BinanceFuturesEmulator
from bot.inventory import PerpInventory
from bot.journal import records as rk
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.orders.events import OrderFilled
from bot.recovery import VenueFunding, _fill_from_journal
from bot.settings import Settings, load_settings

PERP, RAW = "BTC/USDT:USDT", "BTCUSDT"
KEY, SECRET = "funding-key", "funding-secret"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        None,
        overrides={
            "state_dir": str(tmp_path),
            "exchange": {"id": "binanceusdm"},
            "markets": [
                {
                    "symbol": PERP,
                    "reserve": {"quote": 10000.0},
                    "perp": {"leverage": 5, "max_leverage": 10, "funding_interval_h": 1.0},
                }
            ],
        },
        env={"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": SECRET},
    )


@asynccontextmanager
async def emulator(clock: ShiftedClock) -> AsyncIterator[BinanceFuturesEmulator]:
    usdm = exchange_info("usdm")
    async with BinanceFuturesEmulator(
        exchange_info=[usdm],
        api_key=KEY,
        secret=SECRET,
        clock=clock,
        balances={"USDT": "10000"},
        funding_interval_s=3600.0,
    ) as emu:
        emu.engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.1", "5")])
        yield emu


async def test_venue_funding_is_booked_once_and_survives_restarts(settings: Settings) -> None:
    start = (time.time_ns() // HOUR_NS + 1) * HOUR_NS + MINUTE_NS
    clock = ShiftedClock(start)
    first_funding = start - MINUTE_NS + HOUR_NS
    async with emulator(clock) as emu:
        one = Session(settings, emu, clock, key=KEY, secret=SECRET)
        await one.start()
        assert emu.engine.margin_types[RAW] == "ISOLATED"
        # Long 0.1 @ 60,000.1 at 5x: fee 2.400004, margin 1,200.002.
        await one.take("buy", 0.1, 60000.1, 1)
        clock.jump_to(first_funding + MINUTE_NS)  # past the funding time ...
        emu.engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.2", "5")])
        # ... paid at mark 60,000.1: 0.1 x 60,000.1 x 1 bp = 0.600001 out of the margin.
        # Then 0.04 of the long is sold @ 60,000 (realised -0.004, fee 0.96), which
        # leaves 0.06 / 0.1 of the margin: (1,200.002 - 0.600001) x 0.6 = 719.6411994.
        await one.take("sell", 0.04, 60000.0, 2)
        await one.crash()

        # Restarted: both fills and the payment were made while the bot was down.
        two = Session(settings, emu, clock, key=KEY, secret=SECRET)
        report = (await two.start()).markets[PERP]
        assert (report.fills_missed, report.funding_missed, report.funding_restored) == (2, 1, 0)
        assert_books_agree(two, emu)
        assert two.inventory.position.funding == Decimal("-0.600001")
        assert two.inventory.position.margin == Decimal("719.6411994")
        assert two.inventory.wallet == Decimal("9996.035995")  # 10,000 - 2.400004 - 0.600001
        # - 0.004 - 0.96

        # Running: the next hour pays 0.06 x 61,000.1 x 1 bp = 0.3660006.
        clock.jump_to(first_funding + HOUR_NS + MINUTE_NS)
        emu.engine.seed_book(RAW, bids=[("61000", "5")], asks=[("61000.2", "5")])
        two.follow_venue_clock()
        assert await two.funding.sync(two.venue) == 1
        assert await two.funding.sync(two.venue) == 0  # read again: booked once
        assert_books_agree(two, emu)
        assert two.inventory.position.margin == Decimal("719.2751988")
        assert two.inventory.funding_payments == 2
        await two.crash()

        # Restarted again: the journal has both payments, the venue nothing new.
        three = Session(settings, emu, clock, key=KEY, secret=SECRET)
        report = (await three.start()).markets[PERP]
        assert (report.funding_missed, report.funding_restored) == (0, 2)
        assert_books_agree(three, emu)
        payments = list(three.journal.reader.records([rk.FUNDING], symbol=PERP))
        assert [(r.payload["amount"], r.payload["source"]) for r in payments] == [
            ("-0.60000100", "reconcile"),
            ("-0.36600060", "venue"),
        ]
        await three.crash()
    assert len(emu.engine.income) == 2


async def test_a_payment_booked_after_a_later_fill_reaches_the_margin_as_at_its_time(
    settings: Settings,
) -> None:
    """While running, the fill stream can beat the income poll: the margin still agrees."""
    start = (time.time_ns() // HOUR_NS + 1) * HOUR_NS + MINUTE_NS
    clock = ShiftedClock(start)
    async with emulator(clock) as emu:
        session = Session(settings, emu, clock, key=KEY, secret=SECRET)
        await session.start()
        await session.take("sell", 0.2, 60000.0, 1)  # short 0.2
        clock.jump_to(start + HOUR_NS)
        emu.engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.2", "5")])
        # Short 0.2 receives 0.2 x 60,000.1 x 1 bp = 1.200002; then half is bought back.
        await session.take("buy", 0.1, 60000.2, 2)
        # The bot hears of both fills first (as its order stream would report them) ...
        prefix = settings.orders.client_id_prefix
        await session.journal.reconcile_fills(session.venue, PERP, prefix)
        for payload in session.journal.reader.fills(PERP):
            session.inventory.apply(_fill_from_journal(payload))
        # ... and of the payment at its next poll.
        session.follow_venue_clock()
        assert await session.funding.sync(session.venue) == 1
        assert_books_agree(session, emu)
        assert session.inventory.position.funding == Decimal("1.200002")
        await session.crash()


async def test_the_running_bot_reads_income_only_after_a_funding_time(settings: Settings) -> None:
    """Income reads weigh 30 on Binance (ccxt's throttle then holds the next requests):
    the balance check reads it once after each funding time, again every 30 s for five
    minutes while the payment is missing, and every 15 minutes anyway."""
    hour = (time.time_ns() // HOUR_NS + 1) * HOUR_NS
    clock = ShiftedClock(hour + 10 * MINUTE_NS)
    async with emulator(clock) as emu:
        session = Session(settings, emu, clock, key=KEY, secret=SECRET)
        session.funding = VenueFunding(session.journal, log=null_logger(), clock=clock)
        await session.start()
        await session.take("buy", 0.1, 60000.1, 1)

        def income_reads() -> int:
            return sum(1 for _m, path, _s in emu.requests if path == "/fapi/v1/income")

        checked: list[int] = []

        async def balance_check(_venue: object) -> None:
            checked.append(income_reads())

        check = session.funding.then(balance_check)

        async def at(ns: int) -> None:
            clock.jump_to(ns)
            emu.engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.2", "5")])
            session.follow_venue_clock()
            await check(session.venue)

        before = income_reads()  # the start's read
        await check(session.venue)  # 10 minutes past the hour: nothing due
        await at(hour + HOUR_NS + MINUTE_NS)  # a minute after a funding time: read, paid
        await at(hour + HOUR_NS + 2 * MINUTE_NS)  # its payment is in: no read
        await at(hour + HOUR_NS + 17 * MINUTE_NS)  # 16 minutes since the last read: read
        await session.take("sell", 0.1, 60000.0, 2)  # flat: the next hour pays nothing
        await at(hour + 2 * HOUR_NS + MINUTE_NS)  # read: nothing yet
        await at(hour + 2 * HOUR_NS + MINUTE_NS + 10**9)  # a second later: no read
        await at(hour + 2 * HOUR_NS + MINUTE_NS + 31 * 10**9)  # 31 s later: read again
        await at(hour + 2 * HOUR_NS + 7 * MINUTE_NS)  # past five minutes: given up
        reads = [n - before for n in checked]
        assert reads == [0, 1, 1, 2, 3, 3, 4, 4]
        assert session.inventory.funding_payments == 1
        await session.crash()


async def test_paper_inventories_keep_paying_funding_themselves(settings: Settings) -> None:
    """Without a venue's payments (paper mode) the inventory pays at its own times."""
    market = offline_markets("binanceusdm")[PERP]
    inv = PerpInventory.from_market(settings.markets[0], market)
    assert not inv.venue_funding
    inv.apply(OrderFilled(0, "bs-1", PERP, "buy", "1", 60000.0, 0.1, None, None, None, 0))
    inv.mark(1, 60000.0)
    inv.mark(HOUR_NS + 1, 60000.0)
    assert inv.funding_payments == 1
    inv.venue_funding = True
    inv.mark(2 * HOUR_NS + 1, 60000.0)
    assert inv.funding_payments == 1  # the venue's payments only, from now on


async def test_the_funding_guard_follows_the_venues_rate(settings: Settings) -> None:
    """The rate the funding guard judges is read at start, then again with each income
    read that is due (after a funding time, every 15 minutes): not only once a run."""
    hour = (time.time_ns() // HOUR_NS + 1) * HOUR_NS
    clock = ShiftedClock(hour + 10 * MINUTE_NS)
    async with emulator(clock) as emu:
        session = Session(settings, emu, clock, key=KEY, secret=SECRET)
        session.funding = VenueFunding(session.journal, log=null_logger(), clock=clock)
        await session.start()
        at_start = session.inventory.funding_rate
        assert at_start == emu.engine.funding_rate

        def rate_reads() -> int:
            return sum(1 for _m, path, _s in emu.requests if path == "/fapi/v1/premiumIndex")

        async def balance_check(_venue: object) -> None:
            pass

        check = session.funding.then(balance_check)
        emu.engine.funding_rate = Decimal("0.004")  # the venue's rate moves
        before = rate_reads()
        await check(session.venue)  # nothing due: no read, the guard keeps the old rate
        assert (rate_reads(), session.inventory.funding_rate) == (before, at_start)

        clock.jump_to(hour + HOUR_NS + MINUTE_NS)  # a minute after a funding time
        emu.engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.2", "5")])
        session.follow_venue_clock()
        await check(session.venue)
        assert rate_reads() == before + 1
        assert session.inventory.funding_rate == Decimal("0.004")
        position = session.inventory.mark(clock.now_ns(), 60000.1, None)
        assert position is not None
        assert position.funding_rate == 0.004  # what the funding guard reads
        await session.crash()
