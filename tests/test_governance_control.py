"""Roles on the control API, the two-person resume, and policy changes on a running daemon.

The server runs on a real Unix socket (and TCP); the daemon tests drive the real stack
assembled on the bundled recording (paper venue, kill switch, journal), not executing
the feed: the kill switch trips and confirms flat against the paper venue as it would.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.app import Run, assemble
from bot.control import commands
from bot.control.api import Health
from bot.control.client import CommandFailed, ControlClient, ControlTarget
from bot.control.server import ControlServer
from bot.daemon import Daemon
from bot.errors import ConfigError
from bot.governance.roles import Role, TokenRegistry
from bot.journal import records as rk
from bot.journal.reader import JournalReader
from bot.killswitch import KillState, TripSource
from bot.logs import Logger, make_logger, null_logger
from bot.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
EXAMPLE = REPO / "config" / "policies" / "example.toml"

TOKENS = {
    "viewer.grafana": "view-" + "v" * 24,
    "operator.oncall": "oper-" + "o" * 24,
    "admin.alice": "alice-" + "a" * 24,
    "admin.bob": "bob-" + "b" * 24,
}


class Handler:
    """A daemon stand-in that records who asked for what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def symbols(self) -> list[str]:
        return ["BTC/USDT"]

    async def status(self) -> dict[str, Any]:
        return {"mode": "paper"}

    async def health(self) -> Health:
        return Health(ok=True)

    async def kill(self, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("kill", source))
        return {"message": "tripped"}

    async def resume(self, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("resume", source))
        return {"message": "re-armed"}

    async def pause(self, symbol: str, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("pause", source))
        return {}

    async def unpause(self, symbol: str, source: str) -> dict[str, Any]:
        self.calls.append(("unpause", source))
        return {}

    async def cancel_all(self, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("cancel_all", source))
        return {}

    async def policy(self) -> dict[str, Any]:
        return {"hash": "h"}

    async def set_policy(self, text: str, reason: str, source: str) -> dict[str, Any]:
        self.calls.append(("set_policy", source))
        return {"message": "ok"}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must fit in ~104 bytes: not pytest's long tmp paths.
    root = Path(tempfile.mkdtemp(prefix="bsg-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def log_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def logger(log_stream: io.StringIO) -> Logger:
    return make_logger("json", "debug", log_stream)


def registry() -> TokenRegistry:
    return TokenRegistry({k: SecretStr(v) for k, v in TOKENS.items()})


@pytest.fixture
async def server(short_dir: Path, logger: Logger) -> AsyncIterator[tuple[ControlServer, Handler]]:
    handler = Handler()
    async with ControlServer(
        handler, socket_path=short_dir / "c.sock", log=logger, tcp_port=0, tokens=registry()
    ) as srv:
        yield srv, handler


async def call(
    srv: ControlServer, method: str, path: str, body: Any = None, *, token: str | None, tcp: bool
) -> tuple[int, dict[str, Any]]:
    connector: aiohttp.BaseConnector = (
        aiohttp.TCPConnector() if tcp else aiohttp.UnixConnector(path=str(srv.socket_path))
    )
    base = f"http://127.0.0.1:{srv.tcp_port}" if tcp else "http://x"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, base + path, json=body, headers=headers) as r,
    ):
        text = await r.text()
        is_json = r.content_type == "application/json"
        return r.status, json.loads(text) if is_json else {"text": text}


ROLE_MATRIX = [
    # (method, path, body, lowest role that may)
    ("GET", "/status", None, "viewer"),
    ("GET", "/metrics", None, "viewer"),
    ("GET", "/policy", None, "viewer"),
    ("POST", "/kill", {"reason": "r"}, "operator"),
    ("POST", "/pause", {"symbol": "BTC/USDT", "reason": "r"}, "operator"),
    ("POST", "/cancel-all", {"reason": "r"}, "operator"),
    ("POST", "/resume", {"reason": "r"}, "admin"),
    ("POST", "/policy", {"policy": "x = 1", "reason": "r"}, "admin"),
]


async def test_each_role_may_do_its_own_commands_and_no_more(
    server: tuple[ControlServer, Handler],
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    srv, handler = server
    ranks = {"viewer": 1, "operator": 2, "admin": 3}
    for name, token in TOKENS.items():
        role = name.split(".")[0]
        for method, path, body, needed in ROLE_MATRIX:
            status, data = await call(srv, method, path, body, token=token, tcp=True)
            if ranks[role] >= ranks[needed]:
                assert status == 200, (name, path, data)
            else:
                assert status == 403, (name, path, data)
                assert data["error"] == (
                    f"{name} has the {role} role; {method} {path} needs {needed} "
                    "(docs/governance.md)"
                )
    # Commands carry who asked: the transport and the token's name.
    assert ("resume", handler.calls[-2][1]) == handler.calls[-2]
    assert handler.calls[-2][1].startswith("control tcp (127.0.0.1:")
    assert handler.calls[-2][1].endswith(", token admin.bob")
    logged = log_stream.getvalue() + caplog.text
    assert "control_forbidden" in logged
    assert '"who": "control tcp' in logged
    for token in TOKENS.values():
        assert token not in logged
    assert srv.auth_failures == 0


async def test_the_socket_stays_private_and_a_token_there_sets_the_role(
    short_dir: Path, logger: Logger
) -> None:
    handler = Handler()
    async with ControlServer(
        handler,
        socket_path=short_dir / "c.sock",
        log=logger,
        tokens=registry(),
        socket_role=Role.VIEWER,
    ) as srv:
        assert stat.S_IMODE(srv.socket_path.stat().st_mode) == 0o600
        # Without a token: control.socket_role (viewer here).
        assert (await call(srv, "GET", "/status", token=None, tcp=False))[0] == 200
        status, data = await call(srv, "POST", "/kill", {"reason": "r"}, token=None, tcp=False)
        assert status == 403
        assert "has the viewer role" in data["error"]
        # With one: its role and name.
        oncall = TOKENS["operator.oncall"]
        assert (await call(srv, "POST", "/kill", {"reason": "r"}, token=oncall, tcp=False))[
            0
        ] == 200
        assert handler.calls[-1][1].endswith(", token operator.oncall")
        assert handler.calls[-1][1].startswith("control socket (uid ")
        # A wrong token is refused on the socket too (and counted).
        status, data = await call(srv, "GET", "/status", token="x" * 30, tcp=False)
        assert status == 401
        assert srv.auth_failures == 1


async def test_role_tokens_come_from_env_and_a_directory_and_the_old_token_is_admin(
    short_dir: Path, logger: Logger
) -> None:
    tokens_dir = short_dir / "tokens"
    tokens_dir.mkdir()
    (tokens_dir / "admin.bob").write_text(TOKENS["admin.bob"] + "\n")
    (tokens_dir / "viewer.grafana").write_text(TOKENS["viewer.grafana"])
    legacy = "legacy-" + "l" * 24
    settings = load_settings(
        env={
            "BACKSTOP_STATE_DIR": str(short_dir / "state"),
            "BACKSTOP_CONTROL__TCP_ENABLED": "true",
            "BACKSTOP_CONTROL__TCP_PORT": "0",
            "BACKSTOP_CONTROL__TOKEN": legacy,
            "BACKSTOP_CONTROL__TOKENS": json.dumps({"operator.oncall": TOKENS["operator.oncall"]}),
            "BACKSTOP_CONTROL__TOKENS_DIR": str(tokens_dir),
        }
    )
    assert "oper-" not in settings.model_dump_json() + repr(settings)
    handler = Handler()
    async with ControlServer.from_settings(settings, handler, log=logger) as srv:
        cases = [
            (legacy, "POST", "/resume", 200),  # the single token of old: admin
            (TOKENS["admin.bob"], "POST", "/policy", 200),
            (TOKENS["operator.oncall"], "POST", "/resume", 403),
            (TOKENS["viewer.grafana"], "POST", "/kill", 403),
            (TOKENS["admin.alice"], "GET", "/status", 401),  # not configured
        ]
        for token, method, path, expected in cases:
            body = {"reason": "r", **({"policy": "x = 1"} if path == "/policy" else {})}
            got, _ = await call(
                srv, method, path, body if method == "POST" else None, token=token, tcp=True
            )
            assert got == expected, (path, token[:5])
        assert handler.calls[0][1].endswith(", token admin")

    (tokens_dir / "root").write_text("r" * 30)
    with pytest.raises(ConfigError, match=r"must be ROLE\.NAME"):
        TokenRegistry.from_settings(settings.control)
    (tokens_dir / "root").unlink()
    (tokens_dir / "admin.carol").write_text(TOKENS["admin.bob"])
    with pytest.raises(ConfigError, match="are the same token"):
        TokenRegistry.from_settings(settings.control)


# --------------------------------------------------------------------------- the daemon


async def idle_run(settings: Any) -> Run:
    run = await assemble(settings, log=null_logger())
    assert run.trader is not None
    return run


async def close(run: Run) -> None:
    assert run.trader is not None
    await run.trader.stop()
    for closer in reversed(run.closers):
        await closer()


def daemon_settings(root: Path, **governance: Any) -> Any:
    return load_settings(
        PAPER,
        env={"BACKSTOP_CONTROL__TOKENS": json.dumps(TOKENS)},
        overrides={
            "state_dir": root / "state",
            "journal": {"path": root / "journal.sqlite"},
            "control": {"socket": root / "c.sock"},
            "governance": governance,
        },
    )


def cli(root: Path, *argv: str) -> tuple[int, str]:
    """A control command as `backstop ...` runs it (in a thread: it has its own loop)."""
    from bot.cli import build_parser

    where = [] if argv[:2] == ("policy", "hash") else ["--socket", str(root / "c.sock")]
    args: argparse.Namespace = build_parser().parse_args([*argv, *where])
    out, err = io.StringIO(), io.StringIO()
    code = commands.run_control_command(args, out=out, err=err, environ={})
    return code, out.getvalue() + err.getvalue()


def token_file(root: Path, name: str) -> str:
    path = root / name
    path.write_text(TOKENS[name])
    return str(path)


async def journaled(run: Run, kind: str) -> list[dict[str, Any]]:
    assert run.trader is not None
    assert run.trader.journal is not None
    await run.trader.journal.flush()
    with JournalReader(run.trader.journal.path) as reader:
        return [r.payload for r in reader.records([kind])]


async def test_a_loss_kill_needs_two_different_admins_to_resume(short_dir: Path) -> None:
    settings = daemon_settings(short_dir, two_person_resume=True)
    run = await idle_run(settings)
    ks = run.killswitch
    assert ks is not None
    alice, bob = token_file(short_dir, "admin.alice"), token_file(short_dir, "admin.bob")
    oncall = token_file(short_dir, "operator.oncall")
    try:
        async with ControlServer.from_settings(
            settings, Daemon(run, log=null_logger()), log=null_logger()
        ):
            await ks.trip(
                "DAILY_LOSS: loss=2600 max=2500", source=TripSource.GUARD, who="guard:daily_loss"
            )
            assert ks.state is KillState.TRIPPED_FLAT

            code, text = await asyncio.to_thread(
                cli, short_dir, "resume", "--reason", "loss reviewed", "--token-file", alice
            )
            assert code == 0
            assert "approval 1 of 2 recorded (admin.alice)" in text
            assert ks.state is KillState.TRIPPED_FLAT

            code, text = await asyncio.to_thread(
                cli, short_dir, "resume", "--reason", "again", "--token-file", alice
            )
            assert code == 2
            assert "APPROVAL_ALREADY_GIVEN: admin.alice already approved" in text
            code, text = await asyncio.to_thread(
                cli, short_dir, "resume", "--reason", "me too", "--token-file", oncall
            )
            assert code == 2
            assert "operator.oncall has the operator role" in text
            assert ks.state is KillState.TRIPPED_FLAT

            code, text = await asyncio.to_thread(
                cli, short_dir, "resume", "--reason", "agreed", "--token-file", bob
            )
            assert code == 0, text
            assert ks.state is KillState.ARMED

            # An operator's kill on top of a loss kill does not make it a one-admin resume.
            await ks.trip("DRAWDOWN: dd=5100", source=TripSource.GUARD, who="guard:drawdown")
            await ks.trip("looking into it", source=TripSource.OPERATOR, who="oncall")
            code, text = await asyncio.to_thread(
                cli, short_dir, "resume", "--reason", "fixed", "--token-file", bob
            )
            assert "approval 1 of 2" in text
            code, _ = await asyncio.to_thread(
                cli, short_dir, "resume", "--reason", "ok", "--token-file", alice
            )
            assert code == 0
            assert ks.state is KillState.ARMED

            # Any other kill: one admin (here the socket's own user) resumes it.
            await ks.trip("drill", source=TripSource.OPERATOR, who="oncall")
            code, text = await asyncio.to_thread(cli, short_dir, "resume", "--reason", "drill over")
            assert code == 0, text
            assert ks.state is KillState.ARMED

        kills = [k for k in await journaled(run, rk.KILL) if k["action"] == "resume"]
        assert "approved by admin.alice, admin.bob" in kills[0]["who"]
        assert kills[0]["who"].endswith("approved by admin.alice, admin.bob")
        approvals = await journaled(run, rk.APPROVAL)
        assert [(a["state"], a["approver"]) for a in approvals[:4]] == [
            ("pending", "admin.alice"),
            ("refused", "admin.alice"),
            ("approved", "admin.bob"),
            ("pending", "admin.bob"),
        ]
        assert approvals[2]["approvers"] == ["admin.alice", "admin.bob"]
        assert approvals[0]["trip"]["who"] == "guard:daily_loss"
    finally:
        await close(run)


async def test_a_policy_change_needs_an_admin_and_a_reason_and_applies_at_once(
    short_dir: Path,
) -> None:
    policy_file = short_dir / "policy.toml"
    policy_file.write_text(EXAMPLE.read_text())
    settings = daemon_settings(short_dir, policy_file=policy_file)
    run = await idle_run(settings)
    assert run.trader is not None
    assert run.governance is not None
    desk = run.trader.desks["BTC/USDT"]
    old_hash = run.governance.policy.hash
    new_text = EXAMPLE.read_text().replace("baseline_fraction = 0.3", "baseline_fraction = 0.4")
    new_text = new_text.replace("levels = 3", "levels = 2")
    socket = ControlTarget(socket_path=short_dir / "c.sock")

    def as_(name: str) -> ControlTarget:
        return ControlTarget(socket_path=short_dir / "c.sock", token=SecretStr(TOKENS[name]))

    try:
        async with ControlServer.from_settings(
            settings, Daemon(run, log=null_logger()), log=null_logger()
        ):
            async with ControlClient(as_("viewer.grafana")) as viewer:
                shown = await viewer.policy()
                assert shown["hash"] == old_hash
                assert shown["text"] == EXAMPLE.read_text()
                assert (await viewer.status())["policy"]["hash"] == old_hash
            async with ControlClient(as_("operator.oncall")) as operator:
                with pytest.raises(CommandFailed, match="needs admin") as e:
                    await operator.set_policy(new_text, "tighter")
                assert e.value.status == 403
            async with ControlClient(as_("admin.alice")) as admin:
                for reason, text, fragment in [
                    ("", new_text, "'reason' is empty"),
                    ("typo", new_text.replace("levels = 2", "levles = 2"), "quoting.levles"),
                ]:
                    with pytest.raises(CommandFailed, match=fragment):
                        await admin.set_policy(text, reason)
                assert run.governance.policy.hash == old_hash
                result = await admin.set_policy(new_text, "funders asked for a later trigger")
                with pytest.raises(CommandFailed, match="POLICY_UNCHANGED") as e:
                    await admin.set_policy(new_text, "twice")
                assert e.value.status == 409
            async with ControlClient(socket) as plain:
                assert (await plain.policy())["hash"] == result["hash"]

        new_hash = result["hash"]
        assert result["previous_hash"] == old_hash
        assert new_hash != old_hash
        # In force at once, no restart: detector, strategy, the desk's settings, the file.
        assert desk.detector.config.baseline_fraction == 0.4
        assert desk.settings.baseline_fraction == 0.4
        assert run.trader.strategy.inner.params.levels == 2  # type: ignore[attr-defined]
        assert policy_file.read_text() == new_text
        records = await journaled(run, rk.POLICY)
        assert [r["action"] for r in records] == ["start", "change"]
        change = records[1]
        assert (change["previous_hash"], change["hash"]) == (old_hash, new_hash)
        assert change["reason"] == "funders asked for a later trigger"
        assert change["who"].endswith(", token admin.alice")
        assert change["text"] == new_text
        assert change["policy"]["activation"]["baseline_fraction"] == 0.4
    finally:
        await close(run)


async def test_without_a_policy_file_the_running_policy_cannot_be_changed(
    short_dir: Path,
) -> None:
    settings = daemon_settings(short_dir)
    run = await idle_run(settings)
    try:
        async with (
            ControlServer.from_settings(
                settings, Daemon(run, log=null_logger()), log=null_logger()
            ),
            ControlClient(ControlTarget(socket_path=short_dir / "c.sock")) as admin,
        ):
            assert (await admin.policy())["source"] == "settings"
            with pytest.raises(CommandFailed, match="NO_POLICY_FILE") as e:
                await admin.set_policy(EXAMPLE.read_text(), "try")
            assert e.value.status == 409
    finally:
        await close(run)


def test_policy_hash_checks_a_file_offline(tmp_path: Path) -> None:
    code, text = cli(tmp_path, "policy", "hash", str(EXAMPLE))
    assert code == 0
    from bot.governance.policy import load_policy_file

    assert text.startswith(load_policy_file(EXAMPLE).hash + "  ")
    bad = tmp_path / "bad.toml"
    bad.write_text("[scope]\n")
    code, text = cli(tmp_path, "policy", "hash", str(bad))
    assert code == 2
    assert "scope.markets" in text


def test_a_loss_trip_before_a_restart_still_needs_two_admins() -> None:
    from bot.governance.approvals import ResumeApprovals

    def kill(action: str, who: str, source: str = "guard") -> dict[str, Any]:
        return {"action": action, "source": source, "who": who, "reason": "r", "ts_ns": 1}

    # What the journal holds since the last resume, replayed at start.
    approvals = ResumeApprovals(enabled=True, now_ns=lambda: 0)
    approvals.load(
        [kill("trip", "guard:drawdown"), kill("flat", ""), kill("trip", "oncall", "operator")]
    )
    assert approvals.needed == 2
    assert approvals.approve("admin.alice", "x", trip="t").pending
    assert approvals.approve("admin.alice", "x", trip="t").refused is not None
    assert approvals.approve("admin.bob", "y", trip="t").done
    # A first approval lapses (TTL) or dies with a new trip.
    clock = [0]
    lapsing = ResumeApprovals(enabled=True, ttl_s=60, now_ns=lambda: clock[0])
    lapsing.load([kill("trip", "guard:daily_loss")])
    assert lapsing.approve("admin.alice", "x", trip="t").pending
    clock[0] = 61 * 10**9
    assert lapsing.pending() is None
    assert lapsing.approve("admin.bob", "y", trip="t").pending  # starts over
    assert lapsing.approve("admin.alice", "z", trip="t2").pending  # another trip: over again
    # Off, or any other trip: one admin.
    off = ResumeApprovals(enabled=False)
    off.load([kill("trip", "guard:daily_loss")])
    assert off.approve("admin.alice", "x", trip="t").done
    other = ResumeApprovals(enabled=True)
    other.load([kill("trip", "guard:balance_mismatch")])
    assert other.approve("admin.alice", "x", trip="t").done
