"""The inverse perpetual on the emulated COIN-M testnet: the real daemon, real ccxt
``binancecoinm``, and funding paid by the venue while the bot holds a position.

The futures emulator in COIN-M form (``/dapi`` REST + ``/dstream`` websockets) replays
the bundled BTCUSD_PERP recording under the fracture overlay in the test's event loop,
and pays funding every few seconds of its (wall) clock; ``backstop run`` runs in its
own process on config/paper-coinm.toml rehearsed on it (``exchange-sim --market coinm
--write-config``). The bot books the venue's funding payments (not its own), so its
wallet, isolated margin and funding equal the emulator's exactly, in BTC, and again
after a restart that finds the payments made while it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from daemon_process import Daemon

from bot.clock import ManualClock, WallClock
from bot.control.client import ControlClient, ControlTarget
from bot.exchange_sim.engine import SimOrder
from bot.exchange_sim.futures_server import COINM, BinanceFuturesEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.feeds.replay import ReplayFeed
from bot.feeds.stress import StressedFeed, parse_stress_spec

pytestmark = pytest.mark.e2e

KEY, SECRET = "coinm-e2e-key", "coinm-e2e-secret"
SYMBOL, RAW = "BTC/USD:BTC", "BTCUSD_PERP"
PREFIX = "bs1-"
REPO = Path(__file__).resolve().parent.parent
PAPER_COINM = REPO / "config" / "paper-coinm.toml"
RECORDINGS = [
    REPO / "bot" / "data" / "cm_btcusd_perp_20240808.gz",
    REPO / "bot" / "data" / "cm_btcusd_perp_20240809.gz",
]
EXCHANGE_INFO = REPO / "bot" / "data" / "binance_exchange_info_symbols.json"
MARGIN = "0.3"
"""The futures wallet holds exactly the configured reserve (paper-coinm's 0.3 BTC)."""
SPEED = 3.0
FRACTURE = "fracture:start_s=20,hold_s=30,recover_s=30"
FUNDING_INTERVAL_S = 4.0
"""The venue pays funding every 4 s of its clock (the config says the same, in hours)."""
VENUE_FUNDING_RATE = "0.0002"
"""Not the configured 0.0001: the bot must take the venue's payments."""


def env() -> dict[str, str]:
    return {"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": SECRET}


def coinm_config(emu: BinanceFuturesEmulator, state_dir: Path) -> dict[str, Any]:
    """paper-coinm.toml on the emulator, its windows shortened for a 3x market."""
    config = rehearsal_config(emu, load_toml(PAPER_COINM), state_dir=state_dir)
    config["feed"]["stale_after_s"] = 5
    config["exchange"]["timeout_s"] = 10.0
    market = config["markets"][0]
    market.update(baseline_window_s=6.0, engage_dwell_s=0.3, disengage_dwell_s=1.5)
    market["perp"]["funding_interval_h"] = FUNDING_INTERVAL_S / 3600
    config["risk"]["guards"] = {"balance_check_s": 1.0}
    config["risk"]["max_orders_per_second"] *= SPEED
    config["risk"]["max_order_burst"] = round(config["risk"]["max_order_burst"] * SPEED)
    config["orders"] = {"rate_limit": round(8 * SPEED)}
    config["logging"] = {"format": "json", "level": "info"}
    return config


@dataclass
class CoinmTestnet:
    emu: BinanceFuturesEmulator
    driver: MarketDriver
    config: Path
    state_dir: Path
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def daemon(self) -> Daemon:
        return Daemon(["run", "--config", str(self.config)], env())

    def ours(self) -> list[SimOrder]:
        return [o for o in self.emu.engine.orders.values() if o.client_order_id.startswith(PREFIX)]

    def ours_open(self) -> list[SimOrder]:
        return [o for o in self.ours() if o.is_open]

    async def until(self, predicate: Callable[[], bool], *, within_s: float, what: str) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), within_s)
        except TimeoutError:
            raise AssertionError(f"not within {within_s}s: {what}") from None

    def control(self) -> ControlClient:
        return ControlClient(ControlTarget.for_state_dir(self.state_dir))


@asynccontextmanager
async def coinm_testnet(tmp_path: Path) -> AsyncIterator[CoinmTestnet]:
    coinm = json.loads(EXCHANGE_INFO.read_text())["coinm"]
    async with BinanceFuturesEmulator(
        market=COINM,
        exchange_info=[coinm],
        api_key=KEY,
        secret=SECRET,
        clock=WallClock(),
        balances={"BTC": MARGIN},
        funding_rate=VENUE_FUNDING_RATE,
        funding_interval_s=FUNDING_INTERVAL_S,
        # A daemon slowed by a loaded machine falls behind the diffs: let it catch up
        # rather than be disconnected as a slow consumer (not what this test is about).
        ws_queue_size=16_384,
    ) as emu:
        replay = ReplayFeed(RECORDINGS, clock=ManualClock(), speed=SPEED)
        driver = MarketDriver(emu.engine, StressedFeed(replay, parse_stress_spec(FRACTURE)))
        state_dir = tmp_path / "state"
        path = tmp_path / "testnet-coinm.toml"
        path.write_text(toml_document(coinm_config(emu, state_dir)))
        net = CoinmTestnet(emu, driver, path, state_dir)
        unsubscribe = emu.engine.subscribe(lambda _event: net.changed.set())
        market = asyncio.ensure_future(driver.run())
        try:
            await driver.wait_applied(1)
            yield net
        finally:
            unsubscribe()
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market


def venue_holdings(net: CoinmTestnet) -> dict[str, float]:
    """The emulator's account as the bot's status shows an inverse perpetual:
    base = wallet + contracts x size / entry, quote = -contracts x size (BTC, USD)."""
    engine = net.emu.engine
    pos = engine.positions[RAW]
    wallet = engine.wallets["BTC"]
    size = pos.contracts * pos.spec.contract_size
    base = wallet + size / pos.entry if pos.contracts else wallet
    return {"BTC": float(base), "USD": float(-size)}


async def books_agree(net: CoinmTestnet, within_s: float = 10.0) -> None:
    """Until the account the daemon reports equals the emulator's exactly (a fill or a
    funding payment reaches the bot a moment after the venue books it)."""
    last: tuple[Any, Any] = (None, None)

    async def agreed() -> None:
        nonlocal last
        async with net.control() as control:
            while True:
                status = await control.status()
                market = next(m for m in status["markets"] if m["symbol"] == SYMBOL)
                last = (market["inventory"], venue_holdings(net))
                if last[0] == last[1]:
                    return
                net.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(net.changed.wait(), 0.5)

    try:
        await asyncio.wait_for(agreed(), within_s)
    except TimeoutError:
        raise AssertionError(f"bot {last[0]} != venue {last[1]} for {within_s}s") from None


def reported(daemon: Daemon) -> dict[str, Any]:
    summary = daemon.events("run_summary")[-1]
    inventory: dict[str, Any] = summary["trading"]["markets"][SYMBOL]["inventory"]
    return inventory


def pause_funding(net: CoinmTestnet, paused: bool) -> None:
    """No funding time comes while paused (the books can then be compared at rest)."""
    net.emu.engine.funding_interval_s = 1e12 if paused else FUNDING_INTERVAL_S


def assert_bot_is_venue(inventory: dict[str, Any], net: CoinmTestnet) -> None:
    """The account the daemon reported at exit is the emulator's, to the last digit."""
    engine = net.emu.engine
    pos = engine.positions[RAW]
    position = inventory["position"]
    assert inventory["fills"] == len(engine.trades)
    assert inventory["funding_payments"] == len(engine.income)
    assert position["contracts"] == float(pos.contracts)
    assert position["entry_price"] == (float(pos.entry) if pos.contracts else None)
    assert position["isolated_margin"] == float(pos.margin)
    assert position["realised"] == float(pos.realised)
    assert position["fees"] == float(pos.fees)
    assert position["funding"] == float(pos.funding)
    assert position["wallet"] == float(engine.wallets["BTC"])
    assert engine.wallets["BTC"] == Decimal(MARGIN) + pos.realised + pos.funding - pos.fees


async def test_the_daemon_books_the_coinm_venues_funding_across_a_restart(
    tmp_path: Path,
) -> None:
    async with coinm_testnet(tmp_path) as net:
        engine = net.emu.engine
        pos = engine.positions[RAW]
        daemon = await net.daemon().start()
        try:
            await daemon.wait_event("ready", within_s=30)
            assert engine.margin_types[RAW] == "ISOLATED"
            assert pos.leverage == Decimal(5)
            await daemon.wait_event("detector_transition", state="engaged", within_s=30)
            await net.until(lambda: pos.contracts != 0, within_s=30, what="a position open")
            paid = len(engine.income)
            await net.until(
                lambda: len(engine.income) > paid, within_s=10, what="funding on the position"
            )
            async with net.control() as control:
                await control.kill("e2e: freeze the books")
            await net.until(lambda: not net.ours_open(), within_s=5, what="flat at the venue")
            pause_funding(net, True)
            await books_agree(net)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(within_s=30) == 0
        finally:
            await daemon.stop()
        assert_bot_is_venue(reported(daemon), net)
        booked = len(engine.income)
        print(
            f"\nCOIN-M e2e: {len(net.ours())} orders, {len(engine.trades)} fills, position "
            f"{pos.contracts.normalize():f} contracts @ {pos.entry:.2f}, "
            f"margin {pos.margin:.8f} BTC, "
            f"funding {pos.funding:.8f} BTC in {booked} payments, realised "
            f"{pos.realised:.8f}, fees {pos.fees:.8f}, wallet {engine.wallets['BTC']:.8f}"
        )

        # While the bot is down the venue pays on the position the kill left open.
        pause_funding(net, False)
        if pos.contracts:
            await net.until(
                lambda: len(engine.income) > booked, within_s=10, what="funding while down"
            )
        pause_funding(net, True)
        again = await net.daemon().start()
        try:
            recovered = await again.wait_event("recovered", within_s=30)
            await again.wait_event("ready", within_s=30)
            await books_agree(net)
            again.signal(signal.SIGTERM)
            assert await again.wait(within_s=30) == 0
        finally:
            await again.stop()
        market = recovered["markets"][SYMBOL]
        assert market["funding_restored"] == booked
        assert market["funding_missed"] == len(engine.income) - booked
        assert market["funding_missed"] >= (1 if pos.contracts else 0)
        assert_bot_is_venue(reported(again), net)
