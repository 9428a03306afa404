"""``backstop exchange-sim --market usdm``: the futures emulator from the command line."""

from __future__ import annotations

import io
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.cli import build_parser
from bot.errors import UserError
from bot.exchange_sim.cli import options_from_args, serve
from bot.exchange_sim.futures_server import BinanceFuturesEmulator
from bot.exchange_sim.server import BinanceSpotEmulator
from bot.settings import load_settings

CREDS = {"BACKSTOP_EXCHANGE__API_KEY": "k", "BACKSTOP_EXCHANGE__SECRET": "s"}


def parse(*argv: str) -> Any:
    return build_parser().parse_args(["exchange-sim", *argv])


def test_usdm_defaults_to_the_usdm_recording_and_a_usdt_wallet() -> None:
    options = options_from_args(
        parse("--market", "usdm"), environ={"BACKSTOP_SIM_API_KEY": "k", "BACKSTOP_SIM_SECRET": "s"}
    )
    assert options.market == "usdm"
    assert [p.name for p in options.replay] == ["usdm_btcusdt_20240808.gz"]
    assert options.balances == {"USDT": Decimal(100_000)}
    assert (options.funding_rate, options.funding_interval_s) == (Decimal("0.0001"), 28_800.0)


def test_a_bad_funding_interval_is_one_line() -> None:
    with pytest.raises(UserError, match="--funding-interval must be > 0"):
        options_from_args(parse("--market", "usdm", "--funding-interval", "0"), environ={})


async def test_serves_usdm_and_writes_a_perp_testnet_config_the_bot_loads(
    tmp_path: Path,
) -> None:
    seen: list[BinanceSpotEmulator] = []
    out = io.StringIO()
    path = tmp_path / "rehearse-usdm.toml"
    args = parse(
        "--market",
        "usdm",
        "--speed",
        "0",
        "--duration",
        "2",
        "--write-config",
        str(path),
        "--funding-rate",
        "0.0002",
        "--balance",
        "USDT=5000",
    )
    options = options_from_args(
        args, environ={"BACKSTOP_SIM_API_KEY": "k", "BACKSTOP_SIM_SECRET": "s"}
    )
    code = await serve(options, out=out, err=io.StringIO(), on_ready=seen.append)
    assert code == 0
    (emu,) = seen
    assert isinstance(emu, BinanceFuturesEmulator)
    assert emu.engine.funding_rate == Decimal("0.0002")
    assert emu.engine.wallets == {"USDT": Decimal(5000)}
    assert emu.engine.books["BTCUSDT"].last_update_id > 1  # the USD-M market was played in
    lines = [line for line in out.getvalue().splitlines() if line.startswith(("[", "urls_"))]
    table = tomllib.loads("\n".join(lines))
    assert table["exchange"]["urls_override"]["ws.linear"] == emu.ws_base_url + "/fstream/ws"
    settings = load_settings(path, env=CREDS)
    assert settings.mode == "testnet"
    assert settings.exchange.id == "binanceusdm"
    assert [m.symbol for m in settings.markets] == ["BTC/USDT:USDT"]  # paper-usdm's market
    assert settings.markets[0].perp.leverage == 5
