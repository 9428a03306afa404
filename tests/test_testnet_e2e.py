"""LocalTestnet mode end to end: the real daemon, real ccxt, real sockets, the local emulator.

The emulator (Binance Spot's REST + websocket protocol) runs in the test's event loop,
replaying the bundled recording; ``backstop run`` runs in its own process with a
testnet config whose ``exchange.urls_override`` points ccxt's sandbox URLs at it. No
bot code knows it is not talking to testnet.binance.vision. Assertions read the
emulator's own books (its order log, balances, trades), not the bot's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_process import Daemon

from bot.clock import ManualClock, WallClock
from bot.control.client import ControlClient, ControlTarget
from bot.exchange_sim import BinanceSpotEmulator, SimOrder
from bot.exchange_sim.market import MarketDriver
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import StressedFeed, parse_stress_spec

pytestmark = pytest.mark.e2e

KEY, SECRET = "e2e-key", "e2e-secret"
SYMBOL, RAW = "BTC/USDT", "BTCUSDT"
PREFIX = "bs1-"
REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
EXCHANGE_INFO = REPO / "bot" / "data" / "binance_exchange_info_symbols.json"
# The emulator's account holds exactly the configured reserve, so the bot's inventory
# and the venue's balances must agree to the last satoshi, not within a tolerance.
RESERVE = {"BTC": "2", "USDT": "120000"}
SPEED = 3.0
"""The emulator replays the recording at 3x: a minute of market in twenty seconds."""
# The recording's sell-off starts about 200 s in; tests skip to just before it.
SKIP_S = 130.0
FRACTURE = "fracture:start_s=160,hold_s=40,recover_s=40"


def toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        pairs = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def emulated_config(
    emu: BinanceSpotEmulator, state_dir: Path, strategy: str, speed: float
) -> dict[str, Any]:
    """config/paper.toml, switched to testnet mode on the emulator.

    A daemon's windows and rates are wall time; the market runs at ``speed`` x, so the
    detector's windows are shortened and the order rates raised by about that factor
    (else quotes wait in the rate limiter while the market moves ``speed`` x faster).
    """
    config: dict[str, Any] = tomllib.loads(PAPER.read_text())
    config["mode"] = "testnet"
    config["state_dir"] = str(state_dir)
    config["exchange"] = {
        "id": "binance",
        "options": {"fetchMarkets": {"types": ["spot"]}},
        "urls_override": emu.url_overrides(websockets=True),
        "timeout_s": 2.0,
    }
    config["feed"] = {"source": "live", "book_depth_limit": 1000, "stale_after_s": 5}
    market = config["markets"][0]
    market.update(baseline_window_s=6.0, engage_dwell_s=0.3, disengage_dwell_s=1.5)
    config["strategy"]["name"] = strategy
    config["risk"]["guards"]["balance_check_s"] = 1.0
    config["risk"]["max_orders_per_second"] *= speed
    config["risk"]["max_order_burst"] = round(config["risk"]["max_order_burst"] * speed)
    config["orders"] = {"rate_limit": round(8 * speed)}
    config["logging"] = {"format": "json", "level": "info"}
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text("".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in config.items()))
    return path


def env(secret: str = SECRET) -> dict[str, str]:
    return {"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": secret}


@dataclass
class LocalTestnet:
    emu: BinanceSpotEmulator
    driver: MarketDriver
    config: Path
    state_dir: Path
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def daemon(self, secret: str = SECRET) -> Daemon:
        return Daemon(["run", "--config", str(self.config)], env(secret))

    def ours(self) -> list[SimOrder]:
        return [o for o in self.emu.engine.orders.values() if o.client_order_id.startswith(PREFIX)]

    def ours_open(self) -> list[SimOrder]:
        return [o for o in self.ours() if o.is_open]

    def totals(self) -> dict[str, float]:
        return {a: float(b.free + b.locked) for a, b in self.emu.engine.balances.items()}

    async def until(self, predicate: Callable[[], bool], *, within_s: float, what: str) -> None:
        """Await the emulator's own events until ``predicate`` holds."""

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
async def local_testnet(
    tmp_path: Path,
    *,
    stress: str | None = None,
    strategy: str = "backstop",
    config_changes: Callable[[dict[str, Any]], None] | None = None,
    speed: float = SPEED,
    unpaced_s: float = 0.0,
) -> AsyncIterator[LocalTestnet]:
    spot = json.loads(EXCHANGE_INFO.read_text())["spot"]
    async with BinanceSpotEmulator(
        exchange_info=[spot], api_key=KEY, secret=SECRET, clock=WallClock(), balances=RESERVE
    ) as emu:
        data_clock = ManualClock()
        replay = ReplayFeed(
            bundled_sample_paths(), clock=data_clock, speed=speed, unpaced_s=unpaced_s
        )
        feed = replay if stress is None else StressedFeed(replay, parse_stress_spec(stress))
        driver = MarketDriver(emu.engine, feed)
        state_dir = tmp_path / "state"
        config = emulated_config(emu, state_dir, strategy, speed)
        if config_changes is not None:
            config_changes(config)
        net = LocalTestnet(emu, driver, write_config(tmp_path / "testnet.toml", config), state_dir)
        unsubscribe = emu.engine.subscribe(lambda _event: net.changed.set())
        market = asyncio.ensure_future(driver.run())
        try:
            await driver.wait_applied(1)  # the venue has a book before the bot connects
            first_ns = replay.stats.first_ts_ns
            assert first_ns is not None
            # Skip to the interesting part of the recording before the bot connects.
            await net.until(
                lambda: data_clock.now_ns() >= first_ns + unpaced_s * 1e9,
                within_s=60,
                what=f"the market reaches {unpaced_s:g} s into the recording",
            )
            yield net
        finally:
            unsubscribe()
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market


async def started(net: LocalTestnet, secret: str = SECRET) -> Daemon:
    daemon = await net.daemon(secret).start()
    await daemon.wait_event("recovered", within_s=30)
    return daemon


async def test_a_wrong_api_secret_stops_the_daemon_with_one_clear_line(tmp_path: Path) -> None:
    async with local_testnet(tmp_path) as net:
        daemon = await net.daemon(secret="wrong").start()
        try:
            code = await daemon.wait(within_s=60)
        finally:
            await daemon.stop()
        output = "\n".join(daemon.lines)
        assert code == 2, output[-3000:]
        assert "binance refused the API credentials" in output
        assert "Traceback" not in output
        # Refused at the door: not one order was attempted.
        assert not [r for r in net.emu.requests if r[1] == "/api/v3/order"]


async def test_the_daemon_backstops_a_fracture_on_the_emulated_testnet(tmp_path: Path) -> None:
    async with local_testnet(tmp_path, stress=FRACTURE, unpaced_s=SKIP_S) as net:
        daemon = await started(net)
        try:
            await daemon.wait_event("detector_transition", state="engaged", within_s=60)
            # The quotes are on the venue's book (its own order log, not the bot's word).
            await net.until(lambda: len(net.ours_open()) > 0, within_s=10, what="quotes rest")
            await net.until(
                lambda: bool(net.emu.engine.trades), within_s=30, what="a quote is filled"
            )
            await daemon.wait_for(
                lambda r: r.get("event") == "detector_transition" and r.get("state") == "calm",
                within_s=60,
                what="the backstop steps back",
            )
            await net.until(lambda: not net.ours_open(), within_s=10, what="quotes withdrawn")
            async with net.control() as control:
                status = await control.status()
            daemon.signal(signal.SIGTERM)
            code = await daemon.wait(within_s=30)
        finally:
            await daemon.stop()

        placed = net.ours()
        assert len(placed) >= 4
        assert len({o.client_order_id for o in placed}) == len(placed)
        assert {o.side for o in placed} == {"BUY", "SELL"}  # two-sided
        fills = net.emu.engine.trades
        assert fills
        # The bot's books and the venue's agree exactly (the account is the reserve).
        market = next(m for m in status["markets"] if m["symbol"] == SYMBOL)
        totals = net.totals()
        assert market["inventory"]["BTC"] == pytest.approx(totals["BTC"], abs=1e-9)
        assert market["inventory"]["USDT"] == pytest.approx(totals["USDT"], abs=1e-6)
        # No guard fired: the book never went stale, balances always agreed.
        assert not daemon.events("guard"), daemon.events("guard")
        assert code == 0, "\n".join(daemon.lines[-30:])
        assert not net.ours_open()
