"""Operator control: the control API on a real Unix socket (and TCP), its CLI commands,
metrics, health and the one-daemon-per-state-dir pid file."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bot.control import commands
from bot.control.api import CommandConflict, Health
from bot.control.client import (
    CommandFailed,
    ControlClient,
    ControlTarget,
    DaemonNotRunning,
)
from bot.control.metrics import Metrics
from bot.control.pidfile import AlreadyRunning, PidFile
from bot.control.server import ControlServer
from bot.errors import ConfigError, UserError
from bot.logs import Logger, make_logger
from bot.settings import load_settings

TOKEN = "tok-" + "s3cr3t-abcdefghijklmnop"
WRONG = "tok-" + "s3cr3t-abcdefghijklmnoq"  # a near miss: must not be logged either


class FakeHandler:
    """Stands in for the daemon: records every command it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.tripped = False
        self.health_result = Health(ok=True, detail={"engine": "running"})
        self.hang_health = False
        self.fail_with: BaseException | None = None

    def symbols(self) -> list[str]:
        return ["BTC/USDT", "ETH/USDT"]

    async def status(self) -> dict[str, Any]:
        return {
            "mode": "paper",
            "pid": 4242,
            "uptime_s": 3725.0,
            "kill_switch": {"state": "tripped_flat" if self.tripped else "armed"},
            "markets": [
                {
                    "symbol": "BTC/USDT",
                    "book": {"health": "ok", "age_s": 0.2, "mid": 60000.0, "spread_bps": 0.3},
                    "depth": [
                        {
                            "band_bps": 10,
                            "bid_quote": 120_000.0,
                            "ask_quote": 8_000.0,
                            "threshold_quote": 30_000.0,
                        },
                    ],
                    "engaged": True,
                    "detector": "engaged",
                    "paused": False,
                    "open_orders": 6,
                    "orders_held_back": 1_234,
                    "inventory": {"BTC": 0.5, "USDT": 25_000.0},
                    "committed_quote": 4_000.0,
                    "pnl": {"realised_quote": 12.5, "unrealised_quote": -2.5},
                    "guards": {"stale_book": "ok", "reject_burst": "warn: 3 rejects in 10s"},
                },
            ],
        }

    async def health(self) -> Health:
        if self.hang_health:
            await asyncio.Event().wait()
        return self.health_result

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def kill(self, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("kill", reason, source))
        self._maybe_fail()
        self.tripped = True
        return {"state": "tripped_flat", "cancelled": 6, "elapsed_s": 0.01}

    async def resume(self, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("resume", reason, source))
        if not self.tripped:
            raise CommandConflict("the kill switch is armed; there is nothing to resume")
        self.tripped = False
        return {"message": "kill switch re-armed"}

    async def pause(self, symbol: str, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("pause", symbol, reason, source))
        return {"symbol": symbol, "paused": True}

    async def unpause(self, symbol: str, source: str) -> dict[str, Any]:
        self.calls.append(("unpause", symbol, source))
        return {"symbol": symbol, "paused": False}

    async def cancel_all(self, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("cancel_all", reason, source))
        self._maybe_fail()
        return {"cancelled": 6}


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not tmp_path: a Unix socket path must fit in ~104 bytes, and pytest's tmp paths
    # with long test names do not.
    root = Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def log_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def logger(log_stream: io.StringIO) -> Logger:
    return make_logger("json", "debug", log_stream)


@pytest.fixture
async def server(
    handler: FakeHandler, state_dir: Path, logger: Logger
) -> AsyncIterator[ControlServer]:
    async with ControlServer(
        handler,
        socket_path=state_dir / "control.sock",
        log=logger,
        tcp_port=0,
        token=SecretStr(TOKEN),
        health_timeout_s=0.05,
    ) as srv:
        yield srv


@pytest.fixture
async def client(server: ControlServer) -> AsyncIterator[ControlClient]:
    async with ControlClient(ControlTarget(socket_path=server.socket_path)) as c:
        yield c


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_dead_socket(path: Path) -> None:
    """What kill -9 leaves behind: a socket file nobody listens on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()


async def raw(
    server: ControlServer,
    method: str,
    path: str,
    data: bytes | None = None,
    *,
    tcp: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request with an arbitrary body, on the socket or on TCP."""
    connector: aiohttp.BaseConnector = (
        aiohttp.TCPConnector() if tcp else aiohttp.UnixConnector(path=str(server.socket_path))
    )
    base = f"http://127.0.0.1:{server.tcp_port}" if tcp else "http://x"
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, base + path, data=data, headers=headers) as response,
    ):
        return response.status, json.loads(await response.text())


# --------------------------------------------------------------------------- endpoints


async def test_status_returns_the_daemon_snapshot_and_control_info(
    client: ControlClient, server: ControlServer
) -> None:
    data = await client.status()
    assert data["mode"] == "paper"
    assert data["kill_switch"]["state"] == "armed"
    assert data["markets"][0]["symbol"] == "BTC/USDT"
    assert data["control"] == {
        "auth_failures": 0,
        "socket": str(server.socket_path),
        "tcp": f"127.0.0.1:{server.tcp_port}",
    }


async def test_socket_is_private_and_removed_on_close(
    handler: FakeHandler, state_dir: Path, logger: Logger
) -> None:
    path = state_dir / "control.sock"
    srv = ControlServer(handler, socket_path=path, log=logger)
    async with srv:
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    assert not path.exists()
    await srv.aclose()  # idempotent


async def test_commands_reach_the_handler_with_reason_and_who_sent_them(
    client: ControlClient, handler: FakeHandler
) -> None:
    result = await client.kill("  feed looks wrong ")
    assert result["state"] == "tripped_flat"
    await client.resume("checked the feed")
    await client.pause("ETH/USDT", "maintenance")
    await client.unpause("ETH/USDT")
    await client.cancel_all("rebalancing")
    who = f"control socket (uid {os.getuid()}, pid {os.getpid()})"
    assert handler.calls == [
        ("kill", "feed looks wrong", who),
        ("resume", "checked the feed", who),
        ("pause", "ETH/USDT", "maintenance", who),
        ("unpause", "ETH/USDT", who),
        ("cancel_all", "rebalancing", who),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "/kill", None, 400, 'needs a JSON body like {"reason": '),
        ("POST", "/kill", b"stop now", 400, "not valid JSON"),
        ("POST", "/kill", b'["stop"]', 400, "must be a JSON object"),
        ("POST", "/kill", b'{"reason": ""}', 400, "'reason' is empty"),
        ("POST", "/kill", b'{"reason": "   "}', 400, "'reason' is empty"),
        ("POST", "/kill", b"{}", 400, "missing 'reason'"),
        ("POST", "/kill", b'{"reasn": "x"}', 400, "unknown field 'reasn' (did you mean 'reason'?)"),
        ("POST", "/kill", b'{"reason": 5}', 400, "'reason' must be a string"),
        ("POST", "/kill", b'{"reason": "a\\nforged line"}', 400, "one line"),
        ("POST", "/resume", b'{"reason": "' + b"x" * 501 + b'"}', 400, "over 500 characters"),
        ("POST", "/pause", b'{"symbol": "ETH/USDT"}', 400, "missing 'reason'"),
        (
            "POST",
            "/pause",
            b'{"symbol": "btcusdt", "reason": "x"}',
            400,
            "unknown symbol 'btcusdt' (did you mean 'BTC/USDT'?)",
        ),
        (
            "POST",
            "/unpause",
            b'{"symbol": "DOGE/USDT"}',
            400,
            "this daemon trades BTC/USDT, ETH/USDT",
        ),
        ("GET", "/nope", None, 404, "unknown endpoint '/nope'; endpoints: GET /status"),
        ("GET", "/kill", None, 405, "GET is not allowed on /kill; use POST"),
        ("POST", "/status", b"{}", 405, "use GET"),
        ("POST", "/cancel-all", b"\xff\xfe", 400, "not UTF-8"),
    ],
)
async def test_bad_commands_are_refused_with_a_clear_reason(
    server: ControlServer,
    handler: FakeHandler,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    fragment: str,
) -> None:
    got_status, data = await raw(server, method, path, body)
    assert got_status == status
    assert fragment in data["error"]
    assert handler.calls == []


async def test_handler_refusals_and_failures_map_to_http_errors(
    client: ControlClient, handler: FakeHandler, log_stream: io.StringIO
) -> None:
    with pytest.raises(CommandFailed) as refused:
        await client.resume("all good")
    assert refused.value.status == 409
    assert str(refused.value) == "the kill switch is armed; there is nothing to resume"

    handler.fail_with = UserError("no venue connection yet")
    with pytest.raises(CommandFailed) as bad:
        await client.kill("x")
    assert (bad.value.status, str(bad.value)) == (400, "no venue connection yet")

    handler.fail_with = RuntimeError("bug")
    with pytest.raises(CommandFailed) as crashed:
        await client.cancel_all("x")
    assert crashed.value.status == 500
    assert "internal error in the daemon (RuntimeError)" in str(crashed.value)
    assert "control_internal_error" in log_stream.getvalue()
    # ...and the server still serves.
    assert (await client.status())["mode"] == "paper"


async def test_healthz_reports_the_handlers_verdict(
    client: ControlClient, handler: FakeHandler
) -> None:
    ok = await client.health()
    assert ok.status == 200
    assert ok.data == {"status": "ok", "reasons": [], "engine": "running"}

    handler.health_result = Health(ok=False, reasons=("no book update for 12s on BTC/USDT",))
    sick = await client.health()
    assert sick.status == 503
    assert sick.data["reasons"] == ["no book update for 12s on BTC/USDT"]

    handler.hang_health = True
    stuck = await client.health()
    assert stuck.status == 503
    assert "did not answer its health check within 0.05s" in stuck.data["reasons"][0]


# --------------------------------------------------------------------------- TCP + token


async def test_tcp_refuses_missing_or_wrong_tokens_counts_them_and_never_logs_them(
    server: ControlServer,
    client: ControlClient,
    handler: FakeHandler,
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    status, data = await raw(server, "POST", "/kill", b'{"reason": "x"}', tcp=True)
    assert status == 401
    assert "missing bearer token" in data["error"]
    status, data = await raw(
        server, "GET", "/status", tcp=True, headers={"Authorization": f"Bearer {WRONG}"}
    )
    assert status == 401
    assert "wrong bearer token" in data["error"]
    # Unknown endpoints too: no probing the API without the token.
    status, _ = await raw(server, "GET", "/admin", tcp=True, headers={"Authorization": TOKEN})
    assert status == 401
    assert handler.calls == []

    assert server.auth_failures == 3
    assert (await client.status())["control"]["auth_failures"] == 3
    families = {f.name: f for f in text_string_to_metric_families(await client.metrics_text())}
    assert families["backstop_control_auth_failures"].samples[0].value == 3

    async with ControlClient(ControlTarget.tcp(server.tcp_port or 0, SecretStr(TOKEN))) as tcp:
        assert (await tcp.status())["mode"] == "paper"
        await tcp.kill("from the supervisor")
    assert handler.calls == [("kill", "from the supervisor", handler.calls[0][2])]
    assert handler.calls[0][2].startswith("control tcp (127.0.0.1:")
    assert server.auth_failures == 3

    logged = log_stream.getvalue() + caplog.text
    assert logged.count("control_auth_refused") == 3
    assert TOKEN not in logged
    assert WRONG not in logged
    assert "s3cr3t" not in logged


def primary_address() -> str | None:
    """This host's main non-loopback IPv4 address (a UDP connect sends no packet)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_tcp_is_bound_to_loopback_only(server: ControlServer) -> None:
    assert server.tcp_port
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=1):
        pass
    address = primary_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to test against")
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((address, server.tcp_port), timeout=1),
    ):
        pass


async def test_tcp_without_a_token_is_a_config_error(
    handler: FakeHandler, state_dir: Path, logger: Logger
) -> None:
    with pytest.raises(ConfigError, match="needs a bearer token"):
        ControlServer(handler, socket_path=state_dir / "c.sock", log=logger, tcp_port=0)


async def test_server_from_settings_reads_the_token_file(
    handler: FakeHandler, state_dir: Path, logger: Logger
) -> None:
    token_file = state_dir / "token"
    await asyncio.to_thread(write_file, token_file, TOKEN + "\n")
    settings = load_settings(
        env={
            "BACKSTOP_STATE_DIR": str(state_dir),
            "BACKSTOP_CONTROL__TCP_ENABLED": "true",
            "BACKSTOP_CONTROL__TCP_PORT": "0",
            "BACKSTOP_CONTROL__TOKEN_FILE": str(token_file),
        }
    )
    async with (
        ControlServer.from_settings(settings, handler, log=logger) as srv,
        ControlClient(ControlTarget.tcp(srv.tcp_port or 0, SecretStr(TOKEN))) as tcp,
    ):
        assert srv.socket_path == state_dir / "control.sock"
        assert (await tcp.status())["mode"] == "paper"


def test_control_token_comes_from_env_never_the_config_file(tmp_path: Path) -> None:
    s = load_settings(env={"BACKSTOP_CONTROL__TOKEN": TOKEN, "BACKSTOP_CONTROL__TCP_ENABLED": "1"})
    assert s.control.token is not None
    assert s.control.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(s) + s.model_dump_json()

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[control]\ntcp_enabled = true\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    assert "control.token: credentials must not be in the config file" in str(e.value)
    assert "BACKSTOP_CONTROL__TOKEN" in str(e.value)
    assert TOKEN not in str(e.value)

    with pytest.raises(ConfigError, match="needs a bearer token") as e:
        load_settings(env={"BACKSTOP_CONTROL__TCP_ENABLED": "true"})
    with pytest.raises(ConfigError, match="too short") as e:
        load_settings(env={"BACKSTOP_CONTROL__TOKEN": "hunter2"})
    assert "hunter2" not in str(e.value)


# --------------------------------------------------------------------------- socket file


async def test_a_stale_socket_from_a_dead_daemon_is_replaced(
    handler: FakeHandler, state_dir: Path, logger: Logger
) -> None:
    path = state_dir / "control.sock"
    await asyncio.to_thread(make_dead_socket, path)
    assert path.exists()
    async with (
        ControlServer(handler, socket_path=path, log=logger) as srv,
        ControlClient(ControlTarget(socket_path=srv.socket_path)) as c,
    ):
        assert (await c.status())["mode"] == "paper"


async def test_a_live_socket_or_another_file_is_never_taken_over(
    server: ControlServer, handler: FakeHandler, state_dir: Path, logger: Logger
) -> None:
    with pytest.raises(UserError, match="another process is serving the control socket"):
        await ControlServer(handler, socket_path=server.socket_path, log=logger).start()
    # The first server is untouched.
    async with ControlClient(ControlTarget(socket_path=server.socket_path)) as c:
        assert (await c.status())["mode"] == "paper"

    precious = state_dir / "notes.txt"
    precious.write_text("keep me")
    with pytest.raises(UserError, match="is not a socket; refusing to replace it"):
        await ControlServer(handler, socket_path=precious, log=logger).start()
    assert precious.read_text() == "keep me"


async def test_a_socket_path_too_long_for_the_os_is_a_clear_error(
    handler: FakeHandler, state_dir: Path, logger: Logger
) -> None:
    path = state_dir / ("d" * 120) / "control.sock"
    with pytest.raises(ConfigError, match="longer than the 103 a Unix socket path may have"):
        await ControlServer(handler, socket_path=path, log=logger).start()


# --------------------------------------------------------------------------- metrics


async def test_metrics_expose_what_the_daemon_records(
    server: ControlServer, client: ControlClient
) -> None:
    m = server.metrics
    m.set_depth(
        "BTC/USDT", 10, bid_quote=120_000.0, ask_quote=8_000.0, threshold_quote=(30_000.0, 25_000.0)
    )
    m.set_engaged("BTC/USDT", True)
    m.set_open_orders("BTC/USDT", 6, committed_quote=4_000.0)
    m.record_fill("BTC/USDT", "buy", 1_500.0)
    m.record_fill("BTC/USDT", "buy", 500.0)
    m.set_inventory("BTC/USDT", {"BTC": 0.5, "USDT": 25_000.0})
    m.set_pnl("BTC/USDT", realised_quote=12.5, unrealised_quote=-2.5)
    m.record_guard_trip("stale_book", "pause", "BTC/USDT")
    m.set_kill_switch("tripped_flat")
    m.observe_feed_latency("BTC/USDT", 0.004)
    m.observe_feed_latency("BTC/USDT", -0.001)  # clock skew: counted as 0
    m.set_feed_age("BTC/USDT", 0.25)

    text = await client.metrics_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    btc = {"symbol": "BTC/USDT"}
    assert value("backstop_depth_quote", band_bps="10", side="ask", **btc) == 8_000.0
    assert value("backstop_depth_threshold_quote", band_bps="10", side="bid", **btc) == 30_000.0
    assert value("backstop_depth_threshold_quote", band_bps="10", side="ask", **btc) == 25_000.0
    assert value("backstop_engaged", **btc) == 1
    assert value("backstop_open_orders", **btc) == 6
    assert value("backstop_committed_quote", **btc) == 4_000.0
    assert value("backstop_fills_total", side="buy", **btc) == 2
    assert value("backstop_filled_quote_total", side="buy", **btc) == 2_000.0
    assert value("backstop_inventory", asset="BTC", **btc) == 0.5
    assert value("backstop_pnl_quote", kind="unrealised", **btc) == -2.5
    assert value("backstop_guard_trips_total", guard="stale_book", level="pause", **btc) == 1
    assert value("backstop_kill_switch_state", state="tripped_flat") == 1
    assert value("backstop_kill_switch_state", state="armed") == 0
    assert value("backstop_feed_latency_seconds_count", **btc) == 2
    assert value("backstop_feed_latency_seconds_sum", **btc) == pytest.approx(0.004)
    assert value("backstop_feed_age_seconds", **btc) == 0.25


async def test_metrics_are_per_instance_not_in_the_global_registry() -> None:
    a, b = Metrics(), Metrics()
    a.record_fill("BTC/USDT", "sell", 10.0)
    a.record_auth_failure()
    b_text = b.render().decode()
    assert 'backstop_fills_total{side="sell",symbol="BTC/USDT"}' not in b_text
    assert "backstop_control_auth_failures_total 0.0" in b_text
    assert REGISTRY.get_sample_value("backstop_control_auth_failures_total") is None
    with pytest.raises(ValueError, match="unknown kill switch state"):
        a.set_kill_switch("tripped")


async def test_control_requests_are_counted_by_endpoint_and_status(
    server: ControlServer, client: ControlClient
) -> None:
    await client.status()
    await raw(server, "GET", "/nope")
    families = text_string_to_metric_families(server.metrics.render().decode())
    counted = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for f in families
        if f.name == "backstop_control_requests"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert counted[("/status", "200")] == 1
    assert counted[("unknown", "404")] == 1


# --------------------------------------------------------------------------- CLI commands


async def test_status_command_prints_a_table_or_json(
    server: ControlServer, state_dir: Path
) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await commands.status_async(state_dir, out=out, err=err) == 0
    text = out.getvalue()
    for expected in (
        "mode paper",
        "kill switch ARMED",
        "BTC/USDT",
        "120.0k / 8,000.00 (min 30.0k)",
        "guard BTC/USDT reject_burst: warn: 3 rejects in 10s",
        "BTC 0.5",
        "(1,234 held back)",
        "up 1h02m",
    ):
        assert expected in text, expected
    assert err.getvalue() == ""

    out = io.StringIO()
    assert await commands.status_async(state_dir, as_json=True, out=out, err=err) == 0
    assert json.loads(out.getvalue())["markets"][0]["open_orders"] == 6


async def test_commands_exit_codes_and_output(
    server: ControlServer, state_dir: Path, handler: FakeHandler
) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await commands.command_async(state_dir, "kill", reason="x", out=out, err=err) == 0
    assert (
        out.getvalue() == "kill switch tripped (state=tripped_flat, cancelled=6, elapsed_s=0.01)\n"
    )

    out = io.StringIO()
    assert await commands.command_async(state_dir, "resume", reason="ok", out=out, err=err) == 0
    assert out.getvalue() == "kill switch re-armed\n"
    assert err.getvalue() == ""

    # Refused by the daemon: its reason, exit 2.
    assert await commands.command_async(state_dir, "resume", reason="ok", out=out, err=err) == 2
    assert err.getvalue() == (
        "backstop resume: refused: the kill switch is armed; there is nothing to resume\n"
    )
    err = io.StringIO()
    assert await commands.command_async(state_dir, "pause", symbol="XRP/USDT", err=err) == 2
    assert "unknown symbol 'XRP/USDT'" in err.getvalue()

    # The daemon failed: exit 1.
    handler.fail_with = RuntimeError("bug")
    err = io.StringIO()
    assert await commands.command_async(state_dir, "cancel-all", out=out, err=err) == 1
    assert "internal error" in err.getvalue()

    # A missing reason never leaves the client.
    calls = len(handler.calls)
    err = io.StringIO()
    assert await commands.command_async(state_dir, "kill", reason=" ", err=err) == 2
    assert "--reason is required" in err.getvalue()
    assert len(handler.calls) == calls


async def test_sync_commands_default_reasons(
    server: ControlServer, state_dir: Path, handler: FakeHandler
) -> None:
    out, err = io.StringIO(), io.StringIO()
    # The CLI's own entry points run their own event loop: call them from a thread.
    assert await asyncio.to_thread(commands.pause, state_dir, "ETH/USDT", out=out, err=err) == 0
    assert await asyncio.to_thread(commands.cancel_all, state_dir, out=out, err=err) == 0
    assert await asyncio.to_thread(commands.unpause, state_dir, "ETH/USDT", out=out, err=err) == 0
    assert await asyncio.to_thread(commands.kill, state_dir, "stop", out=out, err=err) == 0
    assert await asyncio.to_thread(commands.resume, state_dir, "go", out=out, err=err) == 0
    assert await asyncio.to_thread(commands.status, state_dir, True, out=out, err=err) == 0
    assert [c[:3] for c in handler.calls[:2]] == [
        ("pause", "ETH/USDT", commands.DEFAULT_PAUSE_REASON),
        ("cancel_all", commands.DEFAULT_CANCEL_REASON, handler.calls[1][2]),
    ]
    assert [c[0] for c in handler.calls] == ["pause", "cancel_all", "unpause", "kill", "resume"]
    assert err.getvalue() == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["kill", "--reason", "r"],
        ["resume", "--reason", "r"],
        ["pause", "BTC/USDT"],
        ["unpause", "BTC/USDT"],
        ["cancel-all"],
    ],
)
def test_every_command_says_plainly_when_the_daemon_is_not_running(
    argv: list[str], state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse([*argv, "--state-dir", str(state_dir)])
    assert commands.is_control_command(args)
    assert commands.run_control_command(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"backstop is not running (no control socket at {state_dir / 'control.sock'})\n"
    )


def test_a_socket_left_by_a_dead_daemon_also_means_not_running(state_dir: Path) -> None:
    make_dead_socket(state_dir / "control.sock")
    err = io.StringIO()
    assert commands.status(state_dir, err=err) == 1
    assert err.getvalue().startswith("backstop is not running (no control socket at")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="backstop")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_control_commands(sub)
    return parser.parse_args(argv)


def test_argparse_requires_a_reason_for_kill_and_resume(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["kill"], ["resume"], ["pause"]):
        with pytest.raises(SystemExit) as e:
            parse(argv)
        assert e.value.code == 2
    assert "--reason" in capsys.readouterr().err
    args = parse(["pause", "BTC/USDT"])
    assert (args.state_dir, args.reason, args.symbol) == (Path("state"), None, "BTC/USDT")


async def test_cli_over_tcp_takes_the_token_from_env_only(
    server: ControlServer, handler: FakeHandler
) -> None:
    args = parse(["kill", "--reason", "via tcp", "--tcp", str(server.tcp_port)])
    err = io.StringIO()
    assert await asyncio.to_thread(commands.run_control_command, args, err=err, environ={}) == 2
    assert "set BACKSTOP_CONTROL__TOKEN or pass --token-file" in err.getvalue()

    out = io.StringIO()
    env = {"BACKSTOP_CONTROL__TOKEN": TOKEN}
    code = await asyncio.to_thread(
        commands.run_control_command, args, out=out, err=err, environ=env
    )
    assert code == 0
    assert handler.calls[0][:2] == ("kill", "via tcp")

    env = {"BACKSTOP_CONTROL__TOKEN": WRONG}
    err = io.StringIO()
    code = await asyncio.to_thread(commands.run_control_command, args, err=err, environ=env)
    assert code == 2
    assert "refused: wrong bearer token" in err.getvalue()
    assert WRONG not in err.getvalue()


async def test_client_reports_not_running_for_a_closed_tcp_port() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    async with ControlClient(ControlTarget.tcp(port, SecretStr(TOKEN))) as c:
        with pytest.raises(DaemonNotRunning, match=f"nothing listening on 127.0.0.1:{port}"):
            await c.status()


# --------------------------------------------------------------------------- pid file


def test_pid_file_refuses_a_second_daemon_on_the_same_state_dir(state_dir: Path) -> None:
    path = state_dir / "backstop.pid"
    with PidFile(path) as first:
        assert path.read_text() == f"{os.getpid()}\n"
        assert first.previous_pid is None
        with pytest.raises(AlreadyRunning) as e:
            PidFile(path).acquire()
        assert str(e.value).startswith(
            f"another backstop (pid {os.getpid()}) is running on state dir {state_dir}"
        )
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()
    with PidFile(path):  # free again once released
        pass


CHILD = """
import sys
from pathlib import Path
from bot.control.pidfile import PidFile
with PidFile(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


async def test_pid_file_from_another_process_blocks_then_a_killed_ones_is_taken_over(
    state_dir: Path,
) -> None:
    path = state_dir / "backstop.pid"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert await child.stdout.readline() == b"locked\n"
    with pytest.raises(AlreadyRunning, match=f"another backstop \\(pid {child.pid}\\)"):
        PidFile(path).acquire()

    child.send_signal(signal.SIGKILL)  # no clean-up: the file stays with its pid
    await child.wait()
    assert path.read_text() == f"{child.pid}\n"
    with PidFile(path) as taken:
        assert taken.previous_pid == child.pid
        assert path.read_text() == f"{os.getpid()}\n"


def test_human_status_shows_the_early_warning_level_and_its_main_driver() -> None:
    market = {
        "symbol": "BTC/USDT",
        "engaged": False,
        "detector": "calm",
        "warning": {
            "probability": 0.81,
            "level": "high",
            "alarm": True,
            "pre_armed": True,
            "top": [{"feature": "depth_ratio_10", "value": 0.3, "contribution": 2.1}],
        },
    }
    out = io.StringIO()
    commands.print_status({"mode": "paper", "markets": [market]}, out)
    assert "warning high 81% (depth_ratio_10), pre-armed" in out.getvalue()

    market["warning"] = {"probability": 0.2, "level": "low", "alarm": False, "top": []}
    out = io.StringIO()
    commands.print_status({"mode": "paper", "markets": [market]}, out)
    assert "warning low 20%" in out.getvalue()
    assert "depth_ratio_10" not in out.getvalue()
