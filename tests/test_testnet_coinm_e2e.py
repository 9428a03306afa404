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

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import e2e_support as e2e
import pytest
from daemon_process import Daemon
from e2e_support import EmulatedTestnet, market_running, run_faster
from futures_support import exchange_info

from bot.clock import WallClock
from bot.exchange_sim.futures_server import COINM, BinanceFuturesEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.feeds.stress import StressedFeed, parse_stress_spec

pytestmark = pytest.mark.e2e

KEY, SECRET = "coinm-e2e-key", "coinm-e2e-secret"
SYMBOL, RAW = "BTC/USD:BTC", "BTCUSD_PERP"
REPO = Path(__file__).resolve().parent.parent
PAPER_COINM = REPO / "config" / "paper-coinm.toml"
RECORDINGS = [
    REPO / "bot" / "data" / "cm_btcusd_perp_20240808.gz",
    REPO / "bot" / "data" / "cm_btcusd_perp_20240809.gz",
]
MARGIN = "0.3"
"""The futures wallet holds exactly the configured reserve (paper-coinm's 0.3 BTC)."""
SPEED = 3.0
HELD_AT_S = 0.0
"""The market stands still at its first book until the daemon watches it."""
FRACTURE = f"fracture:start_s={HELD_AT_S + e2e.CALM_S:g},hold_s=30,recover_s=30"
FUNDING_INTERVAL_S = 4.0
"""The venue pays funding every 4 s of its clock (the config says the same, in hours)."""
VENUE_FUNDING_RATE = "0.0002"
"""Not the configured 0.0001: the bot must take the venue's payments."""


def coinm_config(emu: BinanceFuturesEmulator, state_dir: Path) -> dict[str, Any]:
    """paper-coinm.toml on the emulator, its windows shortened for a 3x market."""
    config = rehearsal_config(emu, load_toml(PAPER_COINM), state_dir=state_dir)
    config["exchange"]["timeout_s"] = 10.0
    run_faster(config, SPEED)
    config["markets"][0]["perp"]["funding_interval_h"] = FUNDING_INTERVAL_S / 3600
    config["risk"]["guards"] = {"balance_check_s": 1.0}
    return config


CoinmTestnet = EmulatedTestnet[BinanceFuturesEmulator]


@asynccontextmanager
async def coinm_testnet(tmp_path: Path) -> AsyncIterator[CoinmTestnet]:
    coinm = exchange_info("coinm")
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
        replay = e2e.held_replay(RECORDINGS, speed=SPEED, held_at_s=HELD_AT_S)
        driver = MarketDriver(emu.engine, StressedFeed(replay, parse_stress_spec(FRACTURE)))
        state_dir = tmp_path / "state"
        path = tmp_path / "testnet-coinm.toml"
        path.write_text(toml_document(coinm_config(emu, state_dir)))
        net = CoinmTestnet(emu, driver, path, state_dir, KEY, SECRET)
        async with market_running(net, replay=replay, held_at_s=HELD_AT_S):
            yield net


def venue_holdings(net: CoinmTestnet) -> dict[str, float]:
    """The emulator's account as the bot's status shows an inverse perpetual:
    base = wallet + contracts x size / entry, quote = -contracts x size (BTC, USD)."""
    engine = net.emu.engine
    pos = engine.positions[RAW]
    wallet = engine.wallets["BTC"]
    size = pos.contracts * pos.spec.contract_size
    base = wallet + size / pos.entry if pos.contracts else wallet
    return {"BTC": float(base), "USD": float(-size)}


async def books_agree(net: CoinmTestnet) -> None:
    """Until the account the daemon reports equals the emulator's exactly."""
    await e2e.books_agree(net, SYMBOL, lambda: venue_holdings(net))


def reported(daemon: Daemon) -> dict[str, Any]:
    return e2e.reported(daemon, SYMBOL)


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
    """The position that earns the funding comes from a taker the test plays (it sells
    one contract into our best bid once one rests), not from the recording: whether a
    quote rests when one of the recording's sweeps passes is a race with wall-clock
    scheduling on a loaded machine. The recorded sweeps may still add fills; every
    assertion holds either way (the two books must agree exactly)."""
    async with coinm_testnet(tmp_path) as net:
        engine = net.emu.engine
        pos = engine.positions[RAW]
        daemon = await net.daemon().start()
        try:
            await e2e.watching(net, daemon)
            assert engine.margin_types[RAW] == "ISOLATED"
            assert pos.leverage == Decimal(5)
            await daemon.wait_event("detector_transition", state="engaged", within_s=60)
            lot = engine.rules[RAW].step_size
            # Until a position is open: the recording's own fills might just offset ours.
            while pos.contracts == 0:
                await e2e.taker_fills(net, RAW, "BUY", lot)
            paid = len(engine.income)
            await net.until(
                lambda: len(engine.income) > paid, within_s=30, what="funding on the position"
            )
            async with net.control() as control:
                await control.kill("e2e: freeze the books")
            await net.until(lambda: not net.ours_open(), within_s=30, what="flat at the venue")
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
                lambda: len(engine.income) > booked, within_s=30, what="funding while down"
            )
        pause_funding(net, True)
        # What follows is about the books, not the market (funding is paid on the
        # venue's events, and no more is due).
        await net.market_stops()
        again = await net.daemon().start()
        try:
            recovered = await again.wait_event("recovered", within_s=60)
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
