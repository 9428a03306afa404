"""A bot config for rehearsing against the emulator: any config, switched to testnet
mode with every ccxt URL pointed at a running :class:`BinanceSpotEmulator` (or its
USDⓈ-M futures sibling).

Used by ``backstop exchange-sim --write-config`` (an operator rehearses a config or a
kill-switch drill before the real testnet), by the end-to-end tests and by the kill
latency benchmark. Nothing in the bot knows it is not talking to Binance's testnet.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.exchange_sim.server import BinanceSpotEmulator

REHEARSAL_TIMEOUT_S = 2.0
"""ccxt's REST timeout against the emulator: loopback answers in milliseconds, so a
reply later than this is a delay fault, and the bot should find that out quickly."""


def rehearsal_config(
    emu: BinanceSpotEmulator, base: Mapping[str, Any], *, state_dir: Path
) -> dict[str, Any]:
    """``base`` (a parsed config, e.g. config/paper.toml) in testnet mode on ``emu``."""
    config: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain data
    config["mode"] = "testnet"
    config["state_dir"] = str(state_dir)
    config["exchange"] = {
        # binance (spot) or binanceusdm (the futures emulator), with the options it
        # needs there (spot: list spot markets only, as the venue has no others).
        "id": emu.ccxt_id,
        "options": json.loads(json.dumps(emu.ccxt_options)),
        "urls_override": emu.url_overrides(websockets=True),
        "timeout_s": REHEARSAL_TIMEOUT_S,
    }
    feed = dict(config.get("feed") or {})
    feed["source"] = "live"
    feed.pop("replay_files", None)
    feed.pop("speed", None)
    config["feed"] = feed
    return config


def load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def toml_document(config: Mapping[str, Any]) -> str:
    """``config`` as TOML: one ``key = value`` line per top-level key, tables inline.

    Enough for the bot's settings tree (strings, numbers, booleans, lists, tables);
    keys are always quoted, so dotted URL paths such as ``ws.ws-api.spot`` survive.
    """
    return "".join(f"{json.dumps(str(k))} = {_value(v)}\n" for k, v in config.items())


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        pairs = (f"{json.dumps(str(k))} = {_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if value is None:
        raise ValueError("TOML has no null: leave the key out instead")
    return json.dumps(value)
