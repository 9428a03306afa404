"""Testnet mode end to end: the real daemon, real ccxt, real sockets, the local emulator.

The emulator (Binance Spot's REST + websocket protocol) runs in the test's event loop,
replaying the bundled recording; ``backstop run`` runs in its own process with a
testnet config whose ``exchange.urls_override`` points ccxt's sandbox URLs at it. No
bot code knows it is not talking to testnet.binance.vision. Assertions read the
emulator's own books (its order log, balances, trades), not the bot's word.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.clock import WallClock
from bot.exchange_sim import BinanceSpotEmulator
from tests.daemon_process import Daemon

pytestmark = pytest.mark.e2e

KEY, SECRET = "e2e-key", "e2e-secret"
EXCHANGE_INFO = Path(__file__).parent.parent / "bot" / "data" / "binance_exchange_info_symbols.json"
RESERVE = {"BTC": "0.05", "USDT": "5000"}


def toml_value(value: Any) -> str:
    if isinstance(value, Mapping):
        pairs = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, emu: BinanceSpotEmulator, state_dir: Path, **extra: Any) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "exchange": {
            "id": "binance",
            "options": {"fetchMarkets": {"types": ["spot"]}},
            "urls_override": emu.url_overrides(),
            "timeout_s": 2.0,
        },
        "feed": {"source": "live", "book_depth_limit": 1000},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    lines = ['mode = "testnet"', f"state_dir = {json.dumps(str(state_dir))}"]
    lines += [
        "[[markets]]",
        'symbol = "BTC/USDT"',
        "[markets.reserve]",
        f"base = {RESERVE['BTC']}",
        f"quote = {RESERVE['USDT']}",
    ]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def emulator() -> AsyncIterator[BinanceSpotEmulator]:
    spot = json.loads(EXCHANGE_INFO.read_text())["spot"]
    async with BinanceSpotEmulator(
        exchange_info=[spot], api_key=KEY, secret=SECRET, clock=WallClock(), balances=RESERVE
    ) as emu:
        yield emu


def env(secret: str = SECRET) -> dict[str, str]:
    return {"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": secret}


async def test_a_wrong_api_secret_stops_the_daemon_with_one_clear_line(tmp_path: Path) -> None:
    async with emulator() as emu:
        config = write_config(tmp_path / "testnet.toml", emu, tmp_path / "state")
        daemon = Daemon(["run", "--config", str(config), "--log-format", "json"], env("wrong"))
        await daemon.start()
        try:
            code = await daemon.wait(within_s=60)
        finally:
            await daemon.stop()
        output = "\n".join(daemon.lines)
        assert code == 2, output[-3000:]
        assert "binance refused the API credentials" in output
        assert "Traceback" not in output
        # Refused at the door: not one order was attempted.
        assert not [r for r in emu.requests if r[1] == "/api/v3/order"]
