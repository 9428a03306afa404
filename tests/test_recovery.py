"""Starting on an exchange account after a crash, through real ccxt and the emulator.

Session 1 places a quote and "dies" (its objects are dropped without cancelling);
while it is down the emulator fills part of the quote. Session 2 is built from
scratch on the same journal, as a restarted daemon would be, and must find its
order, journal the fill it missed, and agree with the venue's balances exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from futures_support import exchange_info, start_trader

from bot.clock import WallClock
from bot.errors import UserError
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchanges import make_exchange
from bot.journal import Journal
from bot.killswitch import KillSwitch
from bot.logs import null_logger
from bot.orders import TrackedOrder
from bot.recovery import recover
from bot.settings import Settings, load_settings
from bot.trader import Trader
from bot.venues.ccxt_venue import CcxtVenue
from strategies.base import Quote

KEY, SECRET = "recovery-key", "recovery-secret"
BTC = "BTC/USDT"
# The account holds more than the reserve: the rest is the operator's.
ACCOUNT = {"BTC": "1", "USDT": "100000"}
RESERVE = {"base": 0.05, "quote": 5000.0}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        None,
        overrides={
            "state_dir": str(tmp_path),
            "markets": [{"symbol": BTC, "reserve": RESERVE}],
        },
    )


@asynccontextmanager
async def emulator() -> AsyncIterator[BinanceSpotEmulator]:
    spot = exchange_info("spot")
    async with BinanceSpotEmulator(
        exchange_info=[spot], api_key=KEY, secret=SECRET, clock=WallClock(), balances=ACCOUNT
    ) as emu:
        emu.engine.seed_book(
            "BTCUSDT", bids=[("60000", "1"), ("59990", "2")], asks=[("60010", "1"), ("60020", "2")]
        )
        yield emu


class Session:
    """What a daemon builds at start in testnet mode, minus the feed."""

    def __init__(self, settings: Settings, emu: BinanceSpotEmulator, secret: str = SECRET) -> None:
        exchange = make_exchange(
            "binance",
            sandbox=True,
            api_key=KEY,
            secret=secret,
            pro=False,
            options={"fetchMarkets": {"types": ["spot"]}},
            url_overrides=emu.url_overrides(),
        )
        self.venue = CcxtVenue(exchange, log=null_logger())
        self.journal = Journal(settings.journal_path, clock=WallClock())
        self.settings = settings
        self.trader: Trader | None = None
        self.killswitch: KillSwitch | None = None

    async def start(self) -> None:
        markets = await self.venue.load_markets()
        self.trader, self.killswitch = start_trader(
            self.settings, markets, self.venue, self.journal
        )

    async def recover(self) -> Any:
        assert self.trader is not None
        return await recover(
            self.trader,
            self.venue,
            self.journal,
            exchange_id="binance",
            prefix=self.settings.orders.client_id_prefix,
            log=null_logger(),
        )

    async def close(self, *, crash: bool = False) -> None:
        if self.trader is not None:
            await self.trader.manager.aclose()
        if crash:
            await self.journal.flush()  # committed, but no clean close record
        else:
            await self.journal.aclose()
        await self.venue.close()


async def place_bid(session: Session, price: float, amount: float) -> TrackedOrder:
    assert session.trader is not None
    manager = session.trader.manager
    placed = manager.place(Quote(BTC, "buy", price, amount))
    assert isinstance(placed, TrackedOrder), placed
    await manager.drain()
    return placed


async def test_restart_adopts_its_order_and_journals_the_fill_it_missed(
    settings: Settings,
) -> None:
    async with emulator() as emu:
        first = Session(settings, emu)
        await first.start()
        await first.recover()
        order = await place_bid(first, 59_000.0, 0.01)
        assert order.exchange_id is not None
        await first.close(crash=True)

        # While the bot is down, the market fills 0.004 of the resting bid.
        trade = emu.engine.fill_resting(int(order.exchange_id), "0.004")

        second = Session(settings, emu)
        await second.start()
        result = await second.recover()
        assert second.trader is not None
        report = result.markets[BTC]
        assert report.fills_missed == 1
        assert report.adopted == [order.client_id]
        assert report.canceled == []
        adopted = second.trader.manager.get(order.client_id)
        assert adopted is not None
        assert adopted.filled == pytest.approx(0.004)

        inventory = second.trader.desks[BTC].inventory
        fee = float(trade.commission)  # Binance takes it from the BTC received
        assert float(inventory.base) == pytest.approx(RESERVE["base"] + 0.004 - fee, abs=1e-12)
        assert float(inventory.quote) == pytest.approx(RESERVE["quote"] - 0.004 * 59_000.0)

        # The bot's accounting plus the operator's untouched funds is the venue, exactly.
        venue_totals = {asset: float(b.free + b.locked) for asset, b in emu.engine.balances.items()}
        expected = second.trader.expected_balances()
        for asset in ("BTC", "USDT"):
            assert expected[asset] == pytest.approx(venue_totals[asset], abs=1e-9)
        await second.close()


async def test_a_third_start_does_not_count_the_missed_fill_twice(settings: Settings) -> None:
    async with emulator() as emu:
        first = Session(settings, emu)
        await first.start()
        await first.recover()
        order = await place_bid(first, 59_000.0, 0.01)
        await first.close(crash=True)
        assert order.exchange_id is not None
        emu.engine.fill_resting(int(order.exchange_id), "0.01")

        for _ in range(2):
            session = Session(settings, emu)
            await session.start()
            result = await session.recover()
            assert session.trader is not None
            inventory = session.trader.desks[BTC].inventory
            assert inventory.fills == 1
            await session.close()
        assert result.markets[BTC].fills_missed == 0
        assert result.markets[BTC].fills_restored == 1


async def test_an_order_of_ours_that_no_journal_knows_is_cancelled(settings: Settings) -> None:
    async with emulator() as emu:
        # Placed with our prefix by something that left no journal (a wiped state dir).
        stray, _ = emu.engine.place(
            symbol="BTCUSDT",
            side="SELL",
            order_type="LIMIT",
            time_in_force="GTC",
            price=Decimal("61000"),
            qty=Decimal("0.01"),
            client_order_id="bs1-lostsession-1",
        )
        foreign, _ = emu.engine.place(
            symbol="BTCUSDT",
            side="SELL",
            order_type="LIMIT",
            time_in_force="GTC",
            price=Decimal("61500"),
            qty=Decimal("0.01"),
            client_order_id="human-order-1",
        )
        session = Session(settings, emu)
        await session.start()
        result = await session.recover()
        report = result.markets[BTC]
        assert report.canceled == ["bs1-lostsession-1"]
        assert report.foreign == 1
        assert emu.engine.orders[stray.order_id].status == "CANCELED"
        assert emu.engine.orders[foreign.order_id].status == "NEW"  # never touch others'
        await session.close()


async def test_a_wrong_secret_is_one_clear_error_at_start(settings: Settings) -> None:
    async with emulator() as emu:
        session = Session(settings, emu, secret="not-the-secret")
        await session.start()  # markets are public: this part works
        with pytest.raises(UserError, match="refused the API credentials"):
            await session.recover()
        await session.close()
