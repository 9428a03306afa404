"""What the futures emulator's tests share: the bundled exchange info, the bot's ccxt
adapter on the emulator, a bot restarted on a journal (:class:`Session`) and the venue's
clock that tests move forward (:class:`ShiftedClock`).

Used by the USDⓈ-M, COIN-M, funding and recovery tests; each keeps its own figures.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.app import build_trader
from bot.clock import WallClock
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchange_sim.futures_server import BinanceFuturesEmulator
from bot.exchanges import make_exchange
from bot.inventory import PerpInventory
from bot.journal import Journal
from bot.killswitch import KillSwitch
from bot.logs import null_logger
from bot.recovery import Recovery, VenueFunding, recover
from bot.settings import Settings
from bot.trader import Trader
from bot.venues.ccxt_venue import CcxtVenue

EXCHANGE_INFO = Path(__file__).parent.parent / "bot" / "data" / "binance_exchange_info_symbols.json"
HOUR_NS = 3_600 * 10**9
MINUTE_NS = 60 * 10**9


def exchange_info(market: str) -> dict[str, Any]:
    """The bundled exchangeInfo entry of ``market`` (spot, usdm or coinm)."""
    entry: dict[str, Any] = json.loads(EXCHANGE_INFO.read_text())[market]
    return entry


@asynccontextmanager
async def ccxt_venue(
    exchange_id: str, emu: BinanceSpotEmulator, key: str, secret: str
) -> AsyncIterator[CcxtVenue]:
    """The bot's adapter over ccxt.pro ``exchange_id`` in sandbox mode, on the emulator."""
    ex = make_exchange(
        exchange_id,
        sandbox=True,
        api_key=key,
        secret=secret,
        url_overrides=emu.url_overrides(websockets=True),
    )
    v = CcxtVenue(ex, log=null_logger())
    try:
        await v.load_markets()
        yield v
    finally:
        await v.close()


def start_trader(
    settings: Settings, markets: Mapping[str, Any], venue: CcxtVenue, journal: Journal
) -> tuple[Trader, KillSwitch]:
    """The trader a daemon builds at start, on the emulated venue (no feed, no throttle)."""
    return build_trader(
        settings,
        settings.markets,
        markets,
        venue,
        clock=WallClock(),
        log=null_logger(),
        state_dir=settings.state_dir,
        journal=journal,
        throttler=None,
        rng=random.Random(),
    )


class ShiftedClock:
    """The wall clock plus an offset the test moves forward (the venue's clock)."""

    def __init__(self, start_ns: int) -> None:
        self._offset = start_ns - time.time_ns()

    def now_ns(self) -> int:
        return time.time_ns() + self._offset

    def jump_to(self, ns: int) -> None:
        assert ns > self.now_ns()
        self._offset = ns - time.time_ns()

    @property
    def offset_ms(self) -> int:
        return self._offset // 1_000_000


class Session:
    """What a testnet daemon builds at start, minus the feed (tests/test_recovery.py)."""

    def __init__(
        self,
        settings: Settings,
        emu: BinanceFuturesEmulator,
        clock: ShiftedClock,
        *,
        key: str,
        secret: str,
    ) -> None:
        exchange = make_exchange(
            settings.exchange.id,
            sandbox=True,
            api_key=key,
            secret=secret,
            pro=False,
            url_overrides=emu.url_overrides(),
        )
        # ccxt spaces requests by Binance's weights (an income read weighs 30: 1.5 s);
        # a local venue with no limits of its own needs no spacing.
        exchange.enableRateLimit = False
        self._clock = clock
        self.venue = CcxtVenue(exchange, log=null_logger())
        self.journal = Journal(settings.journal_path, clock=WallClock())
        self.journal.record_start(settings)
        self.settings = settings
        self.symbol = settings.markets[0].symbol
        self.funding = VenueFunding(self.journal, log=null_logger())
        self.trader: Trader | None = None

    def follow_venue_clock(self) -> None:
        # ccxt signs with milliseconds() - timeDifference: the venue's time.
        self.venue.exchange.options["timeDifference"] = -self._clock.offset_ms

    async def start(self) -> Recovery:
        self.follow_venue_clock()
        markets = await self.venue.load_markets()
        self.trader, _killswitch = start_trader(self.settings, markets, self.venue, self.journal)
        return await recover(
            self.trader,
            self.venue,
            self.journal,
            exchange_id=self.settings.exchange.id,
            prefix=self.settings.orders.client_id_prefix,
            log=null_logger(),
            funding=self.funding,
        )

    @property
    def inventory(self) -> PerpInventory:
        assert self.trader is not None
        inventory = self.trader.desks[self.symbol].inventory
        assert isinstance(inventory, PerpInventory)
        return inventory

    async def take(self, side: str, amount: float, price: float, n: int) -> None:
        """A taker order of ours (the client-id prefix) the bot's stream never saw."""
        self.follow_venue_clock()
        client_id = f"{self.settings.orders.client_id_prefix}-t{n}"
        await self.venue.create_order(
            self.symbol, "limit", side, amount, price, {"clientOrderId": client_id}
        )

    async def crash(self) -> None:
        if self.trader is not None:
            await self.trader.manager.aclose()
        await self.journal.flush()  # committed, but no clean close record
        self.journal.close(timeout=5)
        await self.venue.close()


def assert_books_agree(session: Session, emu: BinanceFuturesEmulator) -> None:
    """The bot's account is the venue's, to the last digit."""
    inv = session.inventory
    pos = emu.engine.positions[session.venue.markets[session.symbol]["id"]]
    assert inv.wallet == emu.engine.wallets[inv.spec.settle]
    assert inv.position.contracts == pos.contracts
    assert inv.position.entry == pos.entry
    assert inv.position.margin == pos.margin
    assert inv.position.funding == pos.funding
    assert inv.position.realised == pos.realised
    assert inv.position.fees == pos.fees
