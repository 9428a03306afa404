"""``backstop exchange-sim``: its arguments, the server it runs, and the fault client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import sys
import tomllib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.cli import build_parser, main
from bot.clock import WallClock
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchange_sim.cli import (
    DEFAULT_BALANCES,
    KEY_ENV,
    SECRET_ENV,
    SimOptions,
    fault_body,
    options_from_args,
    run_exchange_sim_command,
    send_fault,
    serve,
)
from bot.feeds.replay import bundled_sample_paths

EXCHANGE_INFO = Path(__file__).parent.parent / "bot" / "data" / "binance_exchange_info_symbols.json"
REPO = Path(__file__).parent.parent


def parse(*argv: str) -> Any:
    return build_parser().parse_args(["exchange-sim", *argv])


def counting_token() -> Any:
    calls: list[int] = []

    def token(n: int) -> str:
        calls.append(n)
        return f"tok{len(calls)}x{n}"

    return token


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_exchange_sim_command(
        parse(*argv), out=out, err=err, environ=environ or {}, token=counting_token()
    )
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------- arguments


def test_defaults() -> None:
    options = options_from_args(parse(), environ={}, token=counting_token())
    assert options.replay == tuple(bundled_sample_paths())
    assert (options.speed, options.duration_s, options.loop) == (1.0, None, False)
    assert (options.host, options.port) == ("127.0.0.1", 0)
    assert options.stress is None
    assert options.balances == DEFAULT_BALANCES
    # A random pair when none is given (the generator is injected).
    assert (options.api_key, options.secret) == ("tok1x16", "tok2x32")


def test_options_from_flags_and_environment() -> None:
    args = parse(
        "--replay",
        str(bundled_sample_paths()[0]),
        "--stress",
        "fracture:fraction=0.5",
        "--speed",
        "0",
        "--duration",
        "30",
        "--port",
        "8765",
        "--balance",
        "usdt=2500.5",
        "--balance",
        "BTC=0",
        "--loop",
    )
    env = {KEY_ENV: "env-key", SECRET_ENV: "env-secret"}
    options = options_from_args(args, environ=env, token=counting_token())
    assert options.replay == (bundled_sample_paths()[0],)
    assert options.stress is not None
    assert options.stress.fraction == 0.5  # type: ignore[union-attr]
    assert (options.speed, options.duration_s, options.port, options.loop) == (
        0.0,
        30.0,
        8765,
        True,
    )
    assert options.balances == {"USDT": Decimal("2500.5"), "BTC": Decimal(0)}
    assert (options.api_key, options.secret) == ("env-key", "env-secret")
    # Flags win over the environment.
    flagged = options_from_args(
        parse("--api-key", "k", "--secret", "s"), environ=env, token=counting_token()
    )
    assert (flagged.api_key, flagged.secret) == ("k", "s")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--balance", "USDT"], "--balance 'USDT': expected ASSET=AMOUNT"),
        (["--balance", "USDT=lots"], "--balance 'USDT=lots': expected ASSET=AMOUNT"),
        (["--balance", "USDT=-1"], "expected ASSET=AMOUNT with AMOUNT a number >= 0"),
        (["--balance", "BTC=1", "--balance", "btc=2"], "--balance: BTC given twice"),
        (["--replay", "/no/such/recording.gz"], "replay file /no/such/recording.gz: no such"),
        (["--stress", "earthquake"], "unknown stress scenario 'earthquake'"),
        (["--speed", "-1"], "--speed must be >= 0"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--port", "70000"], "--port must be 0..65535"),
        (["--api-key", "k"], "give both an API key and a secret"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("backstop exchange-sim: error: ")
    assert message in err


def test_a_recording_of_a_symbol_the_emulator_does_not_list_is_refused(tmp_path: Path) -> None:
    # A capture's symbol comes from its stream names; this one records ETHUSDT.
    message = {"stream": "ethusdt@trade", "data": {"e": "trade", "s": "ETHUSDT"}}
    line = json.dumps(message, separators=(",", ":"))
    capture = tmp_path / "eth.txt"
    capture.write_text(f"1723161253000000000 {line}\n")
    code, _out, err = run("--replay", str(capture))
    assert code == 2
    assert "records ETHUSDT, but the emulator lists only BTCUSDT" in err


def test_fault_arguments_become_the_admin_apis_json() -> None:
    args = parse(
        "fault", "--url", "http://127.0.0.1:1", "fail", "--endpoint", "POST /api/v3/order",
        "--n", "2", "--status", "503",
    )  # fmt: skip
    assert fault_body(args) == {
        "kind": "fail",
        "endpoint": "POST /api/v3/order",
        "n": 2,
        "status": 503,
    }
    stall = parse("fault", "--url", "http://x", "ws_stall", "--seconds", "1.5")
    assert fault_body(stall) == {"kind": "ws_stall", "seconds": 1.5}


# ---------------------------------------------------------------------- the server


def options(**kw: Any) -> SimOptions:
    base: dict[str, Any] = {
        "replay": tuple(bundled_sample_paths()),
        "stress": None,
        "speed": 0.0,
        "duration_s": 5.0,
        "host": "127.0.0.1",
        "port": 0,
        "balances": {"USDT": Decimal(1000)},
        "api_key": "k",
        "secret": "s",
        "loop": False,
    }
    base.update(kw)
    return SimOptions(**base)


async def test_serves_the_replay_and_prints_the_url_and_the_bots_url_table() -> None:
    seen: list[BinanceSpotEmulator] = []
    out, err = io.StringIO(), io.StringIO()
    code = await serve(options(), out=out, err=err, on_ready=seen.append)
    assert code == 0  # the replay ended, so did the emulator
    (emu,) = seen
    first, *rest = out.getvalue().splitlines()
    assert f"listening on {emu.base_url} (api key k, secret s)" in first
    table = tomllib.loads("\n".join(line for line in rest if not line.startswith("#")))
    assert table["exchange"]["urls_override"] == emu.url_overrides(websockets=True)
    assert "replay pass 1 ended" in err.getvalue()
    assert emu.engine.books["BTCUSDT"].last_update_id > 1  # the market was played in
    assert emu.engine.balance("USDT").free == 1000
    with pytest.raises(aiohttp.ClientConnectionError):  # and it no longer listens
        async with aiohttp.ClientSession() as s, s.get(emu.base_url + "/api/v3/ping"):
            pass


async def test_write_config_gives_a_testnet_config_the_bot_loads(tmp_path: Path) -> None:
    from bot.settings import load_settings

    seen: list[BinanceSpotEmulator] = []
    out = io.StringIO()
    path = tmp_path / "rehearse.toml"
    code = await serve(
        options(write_config=path), out=out, err=io.StringIO(), on_ready=seen.append
    )
    assert code == 0
    (emu,) = seen
    creds = {"BACKSTOP_EXCHANGE__API_KEY": "k", "BACKSTOP_EXCHANGE__SECRET": "s"}
    settings = load_settings(path, env=creds)
    assert settings.mode == "testnet"
    assert settings.feed.source == "live"
    assert settings.exchange.urls_override == emu.url_overrides(websockets=True)
    assert settings.state_dir == tmp_path / "rehearse-state"
    assert [m.symbol for m in settings.markets] == ["BTC/USDT"]  # the paper config's
    assert "BACKSTOP_EXCHANGE__API_KEY=k BACKSTOP_EXCHANGE__SECRET=s backstop run" in (
        out.getvalue()
    )


class PassLog(io.StringIO):
    """stderr that tells when the server has reported ``n`` finished replay passes."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.ended = 0
        self.done = asyncio.Event()

    def write(self, s: str) -> int:
        self.ended += s.count("ended:")
        if self.ended >= self.n:
            self.done.set()
        return super().write(s)


async def test_loops_the_replay_until_stopped() -> None:
    stop = asyncio.Event()
    err = PassLog(2)

    async def stop_after_two_passes() -> None:
        await err.done.wait()
        stop.set()

    watcher = asyncio.create_task(stop_after_two_passes())
    code = await asyncio.wait_for(
        serve(options(duration_s=2.0, loop=True), out=io.StringIO(), err=err, stop=stop),
        timeout=30,
    )
    await watcher
    assert code == 0
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("backstop exchange-sim: replay pass 1 ended: ")
    assert lines[1].startswith("backstop exchange-sim: replay pass 2 ended: ")
    assert len(lines) <= 3  # stopped during (or right after) the third pass


# ---------------------------------------------------------------------- the fault client


@pytest.fixture
async def emulator() -> AsyncIterator[BinanceSpotEmulator]:
    entry = json.loads(EXCHANGE_INFO.read_text())["spot"]
    async with BinanceSpotEmulator(
        exchange_info=[entry], api_key="k", secret="s", clock=WallClock()
    ) as emu:
        yield emu


async def depth_status(emu: BinanceSpotEmulator) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(emu.base_url + "/api/v3/depth", params={"symbol": "BTCUSDT"}) as r,
    ):
        return r.status


async def test_fault_client_injects_a_fault(emulator: BinanceSpotEmulator) -> None:
    out, err = io.StringIO(), io.StringIO()
    body = {"kind": "fail", "endpoint": "GET /api/v3/depth", "n": 1, "status": 503}
    assert await send_fault(emulator.base_url + "/", body, out=out, err=err) == 0
    assert json.loads(out.getvalue()) == {"ok": True}
    assert err.getvalue() == ""
    assert await depth_status(emulator) == 503
    assert await depth_status(emulator) == 200  # one request, as asked


async def test_fault_client_reports_a_refusal_in_one_line(emulator: BinanceSpotEmulator) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await send_fault(emulator.base_url, {"kind": "earthquake"}, out=out, err=err)
    assert code == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert err.getvalue().startswith("backstop exchange-sim fault: refused (400): field 'kind'")


async def test_fault_client_reports_an_unreachable_emulator(
    emulator: BinanceSpotEmulator,
) -> None:
    url = emulator.base_url
    await emulator.close()  # nothing listens on its port any more
    out, err = io.StringIO(), io.StringIO()
    assert await send_fault(url, {"kind": "clear"}, out=out, err=err) == 2
    assert err.getvalue() == (
        f"backstop exchange-sim fault: cannot reach the emulator at {url}: connection refused\n"
    )
    bad = io.StringIO()
    assert await send_fault("127.0.0.1:1", {"kind": "clear"}, out=out, err=bad) == 2
    assert "--url must be http(s)://HOST:PORT" in bad.getvalue()


# ---------------------------------------------------------------------- the real command


async def test_the_command_serves_takes_faults_and_stops_on_sigterm() -> None:
    """``backstop exchange-sim`` and ``backstop exchange-sim fault`` as a user runs them."""
    env = {**os.environ, KEY_ENV: "key", SECRET_ENV: "secret"}
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "exchange-sim", "--speed", "0", "--loop",
        "--duration", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = (await asyncio.wait_for(server.stdout.readline(), timeout=30)).decode()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) \(api key key,", first)
        assert match, first
        url = match.group(1)
        # The fault client through ``backstop``'s own entry point (in a thread: it runs
        # its own event loop), against the server process.
        argv = ["exchange-sim", "fault", "--url", url, "ban", "--endpoint", "GET /api/v3/time"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = await asyncio.to_thread(main, argv)
        assert (code, out.getvalue(), err.getvalue()) == (0, '{"ok": true}\n', "")
        async with aiohttp.ClientSession() as s, s.get(url + "/api/v3/time") as r:
            assert r.status == 418
        server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(server.communicate(), timeout=30)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert server.returncode == 0
    assert b"Traceback" not in stderr
