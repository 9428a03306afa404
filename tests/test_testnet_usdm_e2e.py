"""Perpetuals on the emulated USDⓈ-M testnet: the real daemon, real ccxt ``binanceusdm``.

The futures emulator (Binance's ``/fapi`` REST + ``/fstream`` websockets) replays the
bundled USD-M BTCUSDT recording under the fracture overlay in the test's event loop;
``backstop run`` runs in its own process on config/paper-usdm.toml rehearsed on it
(``exchange-sim --market usdm --write-config``). Assertions read the emulator's own
books (orders, fills, position, wallet), not the bot's word.
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
from bot.exchange_sim.futures_server import BinanceFuturesEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.feeds.replay import ReplayFeed
from bot.feeds.stress import StressedFeed, parse_stress_spec

pytestmark = pytest.mark.e2e

KEY, SECRET = "usdm-e2e-key", "usdm-e2e-secret"
SYMBOL, RAW = "BTC/USDT:USDT", "BTCUSDT"
PREFIX = "bs1-"
REPO = Path(__file__).resolve().parent.parent
PAPER_USDM = REPO / "config" / "paper-usdm.toml"
RECORDING = REPO / "bot" / "data" / "usdm_btcusdt_20240808.gz"
EXCHANGE_INFO = REPO / "bot" / "data" / "binance_exchange_info_symbols.json"
MARGIN = "20000"
"""The futures wallet holds exactly the configured reserve (paper-usdm's 20,000 USDT)."""
SPEED = 3.0
MIN_FILLS = 4
KILL_TO_FLAT_S = 2.0
FRACTURE = "fracture:start_s=40,hold_s=30,recover_s=30"
# The venue's funding rate is 0 (paper-usdm.toml configures 0.0001): the bot must take
# the venue's at start, and a funding time inside a test (00:00, 08:00, 16:00 UTC) then
# moves no wallet whatever mark each side takes for it.
VENUE_FUNDING_RATE = "0"


def _n(x: Decimal) -> str:
    return f"{x.normalize():f}"


def env() -> dict[str, str]:
    return {"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": SECRET}


def usdm_config(emu: BinanceFuturesEmulator, state_dir: Path) -> dict[str, Any]:
    """paper-usdm.toml on the emulator, its windows shortened for a 3x market."""
    config = rehearsal_config(emu, load_toml(PAPER_USDM), state_dir=state_dir)
    config["feed"]["stale_after_s"] = 5
    # No delay faults here: a generous REST timeout keeps a loaded CI machine from
    # turning a slow loopback reply into a failed start.
    config["exchange"]["timeout_s"] = 10.0
    market = config["markets"][0]
    market.update(baseline_window_s=6.0, engage_dwell_s=0.3, disengage_dwell_s=1.5)
    config["risk"]["guards"] = {"balance_check_s": 1.0}
    config["risk"]["max_orders_per_second"] *= SPEED
    config["risk"]["max_order_burst"] = round(config["risk"]["max_order_burst"] * SPEED)
    config["orders"] = {"rate_limit": round(8 * SPEED)}
    config["logging"] = {"format": "json", "level": "info"}
    return config


@dataclass
class FuturesTestnet:
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
async def futures_testnet(tmp_path: Path) -> AsyncIterator[FuturesTestnet]:
    usdm = json.loads(EXCHANGE_INFO.read_text())["usdm"]
    async with BinanceFuturesEmulator(
        exchange_info=[usdm],
        api_key=KEY,
        secret=SECRET,
        clock=WallClock(),
        balances={"USDT": MARGIN},
        funding_rate=VENUE_FUNDING_RATE,
    ) as emu:
        replay = ReplayFeed([RECORDING], clock=ManualClock(), speed=SPEED)
        driver = MarketDriver(emu.engine, StressedFeed(replay, parse_stress_spec(FRACTURE)))
        state_dir = tmp_path / "state"
        path = tmp_path / "testnet-usdm.toml"
        path.write_text(toml_document(usdm_config(emu, state_dir)))
        net = FuturesTestnet(emu, driver, path, state_dir)
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


def venue_holdings(net: FuturesTestnet) -> dict[str, float]:
    """The emulator's account as the bot's status shows a perpetual: base = contracts x
    size, quote = wallet - contracts x size x entry (base x mid + quote = equity)."""
    engine = net.emu.engine
    pos = engine.positions[RAW]
    size = pos.contracts * pos.spec.contract_size
    return {"BTC": float(size), "USDT": float(engine.wallets["USDT"] - size * pos.entry)}


async def books_agree(net: FuturesTestnet, within_s: float = 10.0) -> None:
    """Until the account the daemon reports equals the emulator's exactly (a fill
    reaches the bot a moment after the venue books it)."""
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
    """The market's account in the daemon's run summary (logged at exit)."""
    summary = daemon.events("run_summary")[-1]
    inventory: dict[str, Any] = summary["trading"]["markets"][SYMBOL]["inventory"]
    return inventory


async def test_the_daemon_backstops_a_perp_fracture_and_its_position_survives_a_restart(
    tmp_path: Path,
) -> None:
    async with futures_testnet(tmp_path) as net:
        daemon = await net.daemon().start()
        try:
            await daemon.wait_event("ready", within_s=30)
            # At start the bot set isolated margin and its leverage on the venue.
            assert net.emu.engine.margin_types[RAW] == "ISOLATED"
            assert net.emu.engine.positions[RAW].leverage == Decimal(5)
            await daemon.wait_event("detector_transition", state="engaged", within_s=30)
            await net.until(lambda: len(net.ours_open()) > 0, within_s=10, what="quotes rest")
            await net.until(
                lambda: (
                    len(net.emu.engine.trades) >= MIN_FILLS
                    and net.emu.engine.positions[RAW].contracts != 0
                ),
                within_s=40,
                what=f"{MIN_FILLS} fills, a position open",
            )
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
            recovered = await again.wait_event("position_recovered", within_s=30)
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
