"""Perpetuals on the emulated USDⓈ-M testnet: the real daemon, real ccxt ``binanceusdm``.

The futures emulator (Binance's ``/fapi`` REST + ``/fstream`` websockets) replays the
bundled USD-M BTCUSDT recording under the fracture overlay in the test's event loop;
``backstop run`` runs in its own process on config/paper-usdm.toml rehearsed on it
(``exchange-sim --market usdm --write-config``). Assertions read the emulator's own
books (orders, fills, position, wallet), not the bot's word.
"""

from __future__ import annotations

import asyncio
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
from bot.exchange_sim.futures_server import BinanceFuturesEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.feeds.stress import StressedFeed, parse_stress_spec

pytestmark = pytest.mark.e2e

KEY, SECRET = "usdm-e2e-key", "usdm-e2e-secret"
SYMBOL, RAW = "BTC/USDT:USDT", "BTCUSDT"
REPO = Path(__file__).resolve().parent.parent
PAPER_USDM = REPO / "config" / "paper-usdm.toml"
RECORDING = REPO / "bot" / "data" / "usdm_btcusdt_20240808.gz"
MARGIN = "20000"
"""The futures wallet holds exactly the configured reserve (paper-usdm's 20,000 USDT)."""
SPEED = 3.0
MIN_FILLS = 4
LADDER = 6
"""paper-usdm.toml quotes 3 levels a side."""
KILL_TO_FLAT_S = 2.0
HELD_AT_S = 16.0
"""The market stands still this far into the recording until the daemon watches it."""
FRACTURE = f"fracture:start_s={HELD_AT_S + e2e.CALM_S:g},hold_s=30,recover_s=30"
# The venue's funding rate is 0 (paper-usdm.toml configures 0.0001): the bot must take
# the venue's at start, and a funding time inside a test (00:00, 08:00, 16:00 UTC) then
# moves no wallet whatever mark each side takes for it.
VENUE_FUNDING_RATE = "0"


def _n(x: Decimal) -> str:
    return f"{x.normalize():f}"


def usdm_config(emu: BinanceFuturesEmulator, state_dir: Path) -> dict[str, Any]:
    """paper-usdm.toml on the emulator, its windows shortened for a 3x market."""
    config = rehearsal_config(emu, load_toml(PAPER_USDM), state_dir=state_dir)
    # No delay faults here: a generous REST timeout keeps a loaded CI machine from
    # turning a slow loopback reply into a failed start.
    config["exchange"]["timeout_s"] = 10.0
    run_faster(config, SPEED)
    config["risk"]["guards"] = {"balance_check_s": 1.0}
    return config


FuturesTestnet = EmulatedTestnet[BinanceFuturesEmulator]


@asynccontextmanager
async def futures_testnet(tmp_path: Path) -> AsyncIterator[FuturesTestnet]:
    usdm = exchange_info("usdm")
    async with BinanceFuturesEmulator(
        exchange_info=[usdm],
        api_key=KEY,
        secret=SECRET,
        clock=WallClock(),
        balances={"USDT": MARGIN},
        funding_rate=VENUE_FUNDING_RATE,
    ) as emu:
        replay = e2e.held_replay([RECORDING], speed=SPEED, held_at_s=HELD_AT_S)
        driver = MarketDriver(emu.engine, StressedFeed(replay, parse_stress_spec(FRACTURE)))
        state_dir = tmp_path / "state"
        path = tmp_path / "testnet-usdm.toml"
        path.write_text(toml_document(usdm_config(emu, state_dir)))
        net = FuturesTestnet(emu, driver, path, state_dir, KEY, SECRET)
        async with market_running(net, replay=replay, held_at_s=HELD_AT_S):
            yield net


def venue_holdings(net: FuturesTestnet) -> dict[str, float]:
    """The emulator's account as the bot's status shows a perpetual: base = contracts x
    size, quote = wallet - contracts x size x entry (base x mid + quote = equity)."""
    engine = net.emu.engine
    pos = engine.positions[RAW]
    size = pos.contracts * pos.spec.contract_size
    return {"BTC": float(size), "USDT": float(engine.wallets["USDT"] - size * pos.entry)}


async def books_agree(net: FuturesTestnet) -> None:
    """Until the account the daemon reports equals the emulator's exactly."""
    await e2e.books_agree(net, SYMBOL, lambda: venue_holdings(net))


def reported(daemon: Daemon) -> dict[str, Any]:
    return e2e.reported(daemon, SYMBOL)


async def taker_fills_until_a_position(net: FuturesTestnet, fills: int) -> None:
    """A taker sells a lot into our best bid, ``fills`` times and until a position is
    open (the recording's own fills might just offset ours), the bot booking each fill
    before the next (so each finds the bot's quotes as its fills left them)."""
    engine = net.emu.engine
    lot = engine.rules[RAW].step_size
    hits = 0
    while hits < fills or engine.positions[RAW].contracts == 0:
        await e2e.taker_fills(net, RAW, "BUY", lot)
        hits += 1
        await books_agree(net)


async def test_the_daemon_backstops_a_perp_fracture_and_its_position_survives_a_restart(
    tmp_path: Path,
) -> None:
    """The bot quotes the perp's fracture, builds a position from fills, kills to flat,
    and a restart finds that position on the venue and in its journal.

    The fills come from a taker the test plays (it sells one lot into our best bid,
    once one rests, then waits for the bot to book it, ``MIN_FILLS`` times), not from
    the recording: whether a quote rests when one of the recording's sweeps passes is a
    race with wall-clock scheduling on a loaded machine. The recorded sweeps may still
    add fills; every assertion holds either way (the two books must agree exactly).
    """
    async with futures_testnet(tmp_path) as net:
        daemon = await net.daemon().start()
        try:
            await e2e.watching(net, daemon)
            # At start the bot set isolated margin and its leverage on the venue.
            assert net.emu.engine.margin_types[RAW] == "ISOLATED"
            assert net.emu.engine.positions[RAW].leverage == Decimal(5)
            await daemon.wait_event("detector_transition", state="engaged", within_s=60)
            await net.until(lambda: len(net.ours_open()) > 0, within_s=30, what="quotes rest")
            # The first ladder's creates leave ccxt's throttle one per 200 ms (fapi order
            # cost 4 x 50 ms), and a cancel queues behind them: a kill before they are all
            # at the venue would time that queue, not the kill (as a recorded fill, which
            # came seconds later, never did).
            await net.until(
                lambda: len(net.ours()) >= LADDER, within_s=30, what="the first ladder placed"
            )
            await taker_fills_until_a_position(net, MIN_FILLS)
            async with net.control() as control:
                loop = asyncio.get_running_loop()
                sent = loop.time()
                reply = asyncio.ensure_future(control.kill("e2e: freeze the books"))
                await net.until(lambda: not net.ours_open(), within_s=5, what="flat at the venue")
                flat_s = loop.time() - sent
                await reply
            await books_agree(net)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(within_s=30) == 0
        finally:
            await daemon.stop()
        inventory = reported(daemon)

        engine = net.emu.engine
        pos = engine.positions[RAW]
        ours = net.ours()
        assert {o.side for o in ours} == {"BUY", "SELL"}
        assert all(o.time_in_force == "GTX" for o in ours)  # post-only on futures
        # The kill switch's one-second target is held by the spot e2e on an idle
        # machine; here the same path on /fapi is checked with room for a loaded one.
        assert flat_s < KILL_TO_FLAT_S, (
            f"kill to flat took {flat_s:.3f} s: {daemon.events('kill_switch_flat')}"
        )
        fills = engine.trades
        assert inventory["fills"] == len(fills)
        # The position and the wallet the bot reports are the venue's, to the last digit.
        position = inventory["position"]
        assert position["contracts"] == float(pos.contracts) != 0
        assert position["entry_price"] == float(pos.entry)
        assert position["isolated_margin"] == float(pos.margin)
        assert position["wallet"] == float(engine.wallets["USDT"])
        # PnL in the settle currency: closed PnL and fees are the venue's own.
        assert position["realised"] == float(pos.realised)
        assert position["fees"] == float(pos.fees)
        assert engine.wallets["USDT"] == Decimal(MARGIN) + pos.realised - pos.fees
        print(
            f"\nUSD-M e2e: {len(ours)} orders, {len(fills)} fills, position "
            f"{_n(pos.contracts)} @ {pos.entry:.6f}, margin {_n(pos.margin)}, realised "
            f"{_n(pos.realised)}, fees {_n(pos.fees)}, wallet {_n(engine.wallets['USDT'])}, "
            f"kill to flat {flat_s:.3f} s"
        )

        # A restart rebuilds the position from the journal and finds it on the venue.
        placed = len(net.ours())
        again = await net.daemon().start()
        try:
            recovered = await again.wait_event("position_recovered", within_s=60)
            await again.wait_event("ready", within_s=30)
            await books_agree(net)
            await net.driver.wait_applied(net.driver.stats.applied + 200)
            again.signal(signal.SIGTERM)
            await again.wait(within_s=30)
        finally:
            await again.stop()
        assert recovered["contracts"] == float(pos.contracts)  # signed: short < 0
        # The venue reports the entry to 8 decimals (positionRisk); the journal's is
        # exact, and the two agree within the start check's tolerance.
        assert recovered["entry"] == float(f"{pos.entry:.8f}")
        assert recovered["funding_rate"] == 0.0  # the venue's, not the configured 0.0001
        assert len(net.ours()) == placed  # the kill holds across the restart


async def test_a_venue_position_the_journal_cannot_explain_stops_the_start(
    tmp_path: Path,
) -> None:
    async with futures_testnet(tmp_path) as net:
        book = net.emu.engine.books[RAW].public
        await net.until(lambda: book.best_ask() is not None, within_s=10, what="a book")
        ask = book.best_ask()
        assert ask is not None
        # Someone else on the account buys 0.01 before the bot's first start.
        net.emu.engine.place(
            symbol=RAW,
            side="BUY",
            order_type="LIMIT",
            time_in_force="IOC",
            price=Decimal(repr(ask)) + 100,
            qty=Decimal("0.010"),
            client_order_id="manual-1",
        )
        assert net.emu.engine.positions[RAW].contracts == Decimal("0.010")

        # Held in cross margin (Binance's default): the venue refuses isolated (-4048).
        output = await refused_start(net)
        assert "refused to set BTC/USDT:USDT to isolated margin at 5x" in output
        assert "-4048" in output

        # Held in isolated margin at the bot's leverage: the venue accepts the set-up,
        # but the journal (empty) cannot explain the position.
        net.emu.engine.margin_types[RAW] = "ISOLATED"
        net.emu.engine.positions[RAW].leverage = Decimal(5)
        output = await refused_start(net)
        assert "holds long 0.01 contracts @" in output
        assert "but the journal's fills make no position" in output
        assert "refusing to start on a position the bot cannot account for" in output
        assert not net.ours()  # not one order placed


async def refused_start(net: FuturesTestnet) -> str:
    """Start the daemon, expect it to stop at once with one clear line; its output."""
    daemon = await net.daemon().start()
    try:
        code = await daemon.wait(within_s=30)
    finally:
        await daemon.stop()
    output = "\n".join(daemon.lines)
    assert code == 2, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in daemon.lines if line.startswith("backstop: error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]
