"""Fleet coordination through Redis: one kill for every daemon, heartbeats, a dead-man.

When an operator runs one daemon per account on several hosts, ``backstop kill --fleet``
must reach all of them at once. Redis does the carrying (no protocol of our own). Keys,
all under ``fleet.key_prefix`` (default ``backstop:fleet``)::

    {prefix}:kill            a Redis stream, one entry per fleet kill (reason, who, sent_ns)
    {prefix}:daemon:{name}   a daemon's status (JSON), refreshed every heartbeat_s and
                             expiring after ten: its heartbeat. Removed on a clean stop.
    {prefix}:acks            a pub/sub channel: each daemon's outcome of a fleet kill

The kill channel is a stream rather than a pub/sub channel because pub/sub forgets: a
daemon whose connection drops for a second would miss a kill sent in that second. A
daemon follows the stream with ``XREAD BLOCK`` (woken at once by a new entry) from the
position it had when it joined, and after a lost connection it goes on from the last
entry it saw, so a kill sent while it was cut off still reaches it once Redis is back.
A daemon started *after* a kill is not tripped by it (its own state dir says whether it
was tripped before).

A fleet kill trips the daemon's kill switch with source ``fleet`` and the sender as
``who``, exactly like an operator's kill over the control socket; the daemon then
publishes whether it confirmed flat. ``dead_man_s`` (opt-in) trips a daemon whose Redis
has not answered for that long (source ``fleet_lost``): a daemon that cannot hear a
fleet kill stops quoting rather than trade on unsupervised.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import socket
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

import redis.asyncio as redis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bot.clock import NS_PER_SECOND, Clock
from bot.errors import ConfigError, OperationalError
from bot.killswitch import KillRecord, KillState, TripSource
from bot.logs import Logger
from bot.settings.models import ENV_NESTED_DELIMITER, ENV_PREFIX, FleetSettings

if TYPE_CHECKING:
    from bot.app import Run
    from bot.killswitch import KillSwitch
    from bot.settings.models import Settings

STREAM_MAXLEN = 1000
"""Fleet kills kept in the stream (approximately): the newest matter, the rest is history."""
HEARTBEATS_PER_TTL = 10
"""A status key outlives this many missed heartbeats before Redis drops it: a daemon
starved of CPU for a few heartbeats must still count as a member the sender waits for
(a crashed one shows as "no answer", with the age of its last heartbeat)."""
DEFAULT_WAIT_S = 30.0
"""How long ``backstop kill --fleet`` waits for every daemon to confirm flat."""

ERRORS = (RedisError, OSError)
"""What a lost or refused connection raises (redis-py wraps most, not all, socket errors)."""

StatusSource = Callable[[], Awaitable[Mapping[str, Any]]]
Sleep = Callable[[float], Awaitable[None]]


class MonotonicClock:
    """Elapsed time that no NTP step can shorten or stretch (for the dead-man)."""

    def now_ns(self) -> int:
        return time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def kill_stream(self) -> str:
        return f"{self.prefix}:kill"

    @property
    def acks(self) -> str:
        return f"{self.prefix}:acks"

    def daemon(self, name: str) -> str:
        return f"{self.prefix}:daemon:{name}"

    @property
    def daemon_pattern(self) -> str:
        return f"{self.prefix}:daemon:*"


@dataclass(frozen=True, slots=True)
class FleetKill:
    """One entry of the kill stream."""

    id: str
    reason: str
    who: str
    sent_ns: int

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> FleetKill:
        try:
            sent_ns = int(fields.get("sent_ns", "0"))
        except ValueError:
            sent_ns = 0
        reason = " ".join(str(fields.get("reason") or "").split()) or "fleet kill"
        who = " ".join(str(fields.get("who") or "").split()) or "fleet"
        return cls(entry_id, reason, who, sent_ns)


@dataclass(frozen=True, slots=True)
class FleetAck:
    """A daemon's answer to one fleet kill, published on the acks channel."""

    kill_id: str
    name: str
    state: str
    flat: bool
    elapsed_s: float
    cancelled: int
    remaining: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FleetAck | None:
        try:
            data = json.loads(text)
            return cls(
                kill_id=str(data["kill_id"]),
                name=str(data["name"]),
                state=str(data["state"]),
                flat=bool(data["flat"]),
                elapsed_s=float(data["elapsed_s"]),
                cancelled=int(data["cancelled"]),
                remaining=int(data["remaining"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def connect(config: FleetSettings, *, timeout_s: float) -> redis.Redis:
    """A client for the fleet's Redis that fails fast (our loops do the retrying)."""
    password = config.password.get_secret_value() if config.password is not None else None
    client: redis.Redis = redis.Redis.from_url(
        config.redis_url,
        password=password,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return client


def default_name(settings: Settings) -> str:
    # One daemon owns a state dir (pid-file locked), so host + state dir is unique.
    return f"{socket.gethostname()}:{Path(settings.state_dir).resolve()}"


def _stream_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """XREAD's entries, oldest first, from either reply shape (RESP2 list, RESP3 dict)."""
    streams = reply.items() if isinstance(reply, Mapping) else (reply or [])
    out: list[tuple[str, dict[str, str]]] = []
    for _name, entries in streams:
        for entry_id, fields in entries or []:
            out.append((str(entry_id), {str(k): str(v) for k, v in (fields or {}).items()}))
    return out


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class FleetMember:
    """One daemon's membership: ``async with FleetMember(...):`` for the daemon's life.

    Joining fails with :class:`OperationalError` when Redis does not answer: a daemon
    configured for a fleet must not start deaf to fleet kills. After that, a lost
    connection is retried for as long as the daemon runs (and trips it after
    ``dead_man_s`` when that is set).
    """

    def __init__(
        self,
        config: FleetSettings,
        *,
        name: str,
        killswitch: KillSwitch,
        status: StatusSource,
        log: Logger,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self.name = name
        self.keys = Keys(config.key_prefix)
        self._killswitch = killswitch
        self._status = status
        self._log = log.bind(fleet=name)
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._sleep = sleep
        hb = config.heartbeat_s
        self._cmd = connect(config, timeout_s=max(hb, 1.0))
        # XREAD BLOCK holds its connection for up to one heartbeat: its own client, with
        # a read timeout beyond that block (a silent network still fails, just later).
        self._block_ms = max(1, round(hb * 1000))
        self._reader = connect(config, timeout_s=hb + max(hb, 1.0))
        self._last_id = "0-0"
        self._last_ok_ns = self._clock.now_ns()
        self._lost: str | None = None
        self._awaiting_flat: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.kills_received: list[FleetKill] = []

    @classmethod
    def for_run(
        cls, settings: Settings, run: Run, *, log: Logger
    ) -> AbstractAsyncContextManager[Any]:
        """The fleet membership ``backstop run`` enters: a no-op unless ``fleet.enabled``
        and the run trades (has a kill switch)."""
        if not settings.fleet.enabled or run.trader is None or run.killswitch is None:
            return contextlib.nullcontext()
        from bot.daemon import Daemon

        daemon = Daemon(run, log=log)
        return cls(
            settings.fleet,
            name=settings.fleet.name or default_name(settings),
            killswitch=run.killswitch,
            status=daemon.status,
            log=log,
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FleetMember:
        try:
            await self._cmd.ping()
            # Follow the stream from its current end: kills sent before we joined are
            # not ours to obey (a trip of ours before then is in our own state dir).
            latest = await self._cmd.xrevrange(self.keys.kill_stream, count=1)
        except ERRORS as e:
            await self._close_clients()
            raise OperationalError(
                f"fleet: cannot reach Redis at fleet.redis_url = {self.config.redis_url}: "
                f"{_describe(e)}"
            ) from None
        if latest:
            self._last_id = str(latest[0][0])
        self._last_ok_ns = self._clock.now_ns()
        self._unsubscribe = self._killswitch.subscribe(self._on_kill_record)
        await self._heartbeat_once()
        self._spawn(self._follow_kills())
        self._spawn(self._heartbeat())
        self._log.info(
            "fleet_joined",
            redis=self.config.redis_url,
            prefix=self.config.key_prefix,
            heartbeat_s=self.config.heartbeat_s,
            dead_man_s=self.config.dead_man_s,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Leaving cleanly: the key goes now rather than expire (it would look like a crash).
        with contextlib.suppress(*ERRORS):
            await self._cmd.delete(self.keys.daemon(self.name))
        await self._close_clients()
        self._log.info("fleet_left")

    async def _close_clients(self) -> None:
        for client in (self._cmd, self._reader):
            with contextlib.suppress(*ERRORS):
                await client.aclose()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("fleet_task_crashed", error=repr(task.exception()))

    # ------------------------------------------------------------------ connection health

    @property
    def connected(self) -> bool:
        return self._lost is None

    def _reached(self) -> None:
        self._last_ok_ns = self._clock.now_ns()
        if self._lost is not None:
            self._log.warning("fleet_reconnected", was=self._lost)
            self._lost = None

    def _unreachable(self, err: BaseException) -> None:
        if self._lost is None:
            self._lost = _describe(err)
            self._log.warning(
                "fleet_connection_lost",
                error=self._lost,
                dead_man_s=self.config.dead_man_s,
                action="trip after dead_man_s" if self.config.dead_man_s else "keep retrying",
            )
        self.check_dead_man()

    def check_dead_man(self) -> None:
        """Trip when Redis has been silent for ``dead_man_s`` and the switch is armed."""
        limit = self.config.dead_man_s
        if limit is None or self._killswitch.state is not KillState.ARMED:
            return
        quiet_s = (self._clock.now_ns() - self._last_ok_ns) / NS_PER_SECOND
        if quiet_s > limit:
            self._killswitch.trip_soon(
                f"FLEET_LOST: quiet_s={quiet_s:.3f} max_s={limit:g} "
                f"error={self._lost or 'unknown'}",
                source=TripSource.FLEET_LOST,
                who=f"fleet dead-man ({self.name})",
            )

    # ------------------------------------------------------------------ loops

    async def _heartbeat(self) -> None:
        while True:
            await self._sleep(self.config.heartbeat_s)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        try:
            await self.publish_status()
        except ERRORS as e:
            self._unreachable(e)
        else:
            self._reached()

    async def publish_status(self) -> None:
        doc = await self._status_doc()
        ttl_ms = max(1, round(self.config.heartbeat_s * HEARTBEATS_PER_TTL * 1000))
        await self._cmd.set(self.keys.daemon(self.name), json.dumps(doc, default=str), px=ttl_ms)

    async def _status_doc(self) -> dict[str, Any]:
        try:
            full = dict(await self._status())
        except Exception as e:  # a status bug must not stop the heartbeat
            full = {"status_error": _describe(e)}
        markets = full.get("markets")
        compact = [
            {k: m.get(k) for k in ("symbol", "open_orders", "engaged", "paused")}
            for m in (markets if isinstance(markets, list) else [])
            if isinstance(m, Mapping)
        ]
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "ts_ns": time.time_ns(),
            "mode": full.get("mode"),
            "source": full.get("source"),
            "kill_switch": self._killswitch.status(),
            "markets": compact,
            "pnl": full.get("pnl"),
            "last_fleet_kill": self._last_id if self.kills_received else None,
        }

    async def _follow_kills(self) -> None:
        backoff = min(0.1, self.config.heartbeat_s)
        while True:
            try:
                reply = await self._reader.xread(
                    {self.keys.kill_stream: self._last_id}, block=self._block_ms, count=16
                )
            except ERRORS as e:
                self._unreachable(e)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.config.heartbeat_s)
                continue
            self._reached()
            backoff = min(0.1, self.config.heartbeat_s)
            for entry_id, fields in _stream_entries(reply):
                self._last_id = entry_id
                kill = FleetKill.from_entry(entry_id, fields)
                self.kills_received.append(kill)
                self._spawn(self._obey(kill))

    async def _obey(self, kill: FleetKill) -> None:
        self._log.error("fleet_kill_received", kill_id=kill.id, reason=kill.reason, who=kill.who)
        report = await self._killswitch.trip(kill.reason, source=TripSource.FLEET, who=kill.who)
        if not report.flat:
            # Answered "not flat yet" below; the kill switch keeps cancelling, and its
            # flat record (see _on_kill_record) sends the final answer.
            self._awaiting_flat = kill.id
        await self._ack(
            FleetAck(
                kill_id=kill.id,
                name=self.name,
                state=report.state.value,
                flat=report.flat,
                elapsed_s=report.elapsed_ns / NS_PER_SECOND,
                cancelled=len(report.cancelled),
                remaining=len(report.remaining),
            )
        )

    def _on_kill_record(self, record: KillRecord) -> None:
        if record.action == "resume":
            # A fresh start for the dead-man too, as for the control-loss timer.
            self._last_ok_ns = self._clock.now_ns()
            self._awaiting_flat = None
        elif record.action == "flat" and self._awaiting_flat is not None:
            kill_id, self._awaiting_flat = self._awaiting_flat, None
            numbers = record.numbers
            ack = FleetAck(
                kill_id=kill_id,
                name=self.name,
                state=record.state.value,
                flat=True,
                elapsed_s=(record.elapsed_ns or 0) / NS_PER_SECOND,
                cancelled=int(numbers.get("cancelled", 0)),
                remaining=0,
            )
            self._spawn(self._ack(ack))

    async def _ack(self, ack: FleetAck) -> None:
        try:
            await self._cmd.publish(self.keys.acks, ack.to_json())
            await self.publish_status()
        except ERRORS as e:
            self._log.warning("fleet_ack_failed", kill_id=ack.kill_id, error=_describe(e))


# ---------------------------------------------------------------------- the sender


@dataclass(frozen=True, slots=True)
class KillOutcome:
    """What ``backstop kill --fleet`` learnt: the kill's id, who answered, how fast."""

    kill_id: str
    members: tuple[str, ...]
    """Daemons heartbeating when the kill was sent."""
    acks: Mapping[str, tuple[FleetAck, float]]
    """Name -> its latest answer and the seconds from sending to that answer."""
    heartbeat_age_s: Mapping[str, float | None]
    """Name -> how old its last heartbeat was when the kill went out."""

    @property
    def flat(self) -> list[str]:
        return sorted(n for n, (ack, _) in self.acks.items() if ack.flat)

    @property
    def unconfirmed(self) -> list[str]:
        expected = set(self.members) | set(self.acks)
        return sorted(n for n in expected if n not in self.flat)


async def fleet_members(client: redis.Redis, keys: Keys) -> dict[str, dict[str, Any]]:
    """Name -> status document of every daemon whose heartbeat key is alive."""
    found: dict[str, dict[str, Any]] = {}
    names = [key async for key in client.scan_iter(match=keys.daemon_pattern, count=100)]
    if not names:
        return found
    values = await client.mget(names)
    for key, value in zip(names, values, strict=True):
        if value is None:
            continue  # expired between SCAN and MGET
        name = str(key)[len(keys.daemon("")) :]
        try:
            found[name] = json.loads(value)
        except ValueError:
            found[name] = {}
    return found


async def send_fleet_kill(
    config: FleetSettings,
    *,
    reason: str,
    who: str,
    wait_s: float = DEFAULT_WAIT_S,
    clock: Clock | None = None,
) -> KillOutcome:
    """Publish one fleet kill and collect the answers until every daemon that was
    heartbeating confirmed flat, or ``wait_s`` passed. Raises :class:`OperationalError`
    when Redis does not answer."""
    keys = Keys(config.key_prefix)
    mono: Clock = clock if clock is not None else MonotonicClock()
    client = connect(config, timeout_s=5.0)
    try:
        async with _acks_subscription(client, keys) as pubsub:
            members = await fleet_members(client, keys)
            sent = mono.now_ns()
            now_wall = time.time_ns()
            ages = {n: _age_s(doc, now_wall) for n, doc in members.items()}
            kill_id = str(
                await client.xadd(
                    keys.kill_stream,
                    {"reason": reason, "who": who, "sent_ns": str(time.time_ns())},
                    maxlen=STREAM_MAXLEN,
                    approximate=True,
                )
            )
            acks: dict[str, tuple[FleetAck, float]] = {}
            deadline = sent + int(wait_s * NS_PER_SECOND)
            while True:
                expected = set(members) | set(acks)
                if expected and all(n in acks and acks[n][0].flat for n in expected):
                    break
                left_s = (deadline - mono.now_ns()) / NS_PER_SECOND
                if left_s <= 0:
                    break
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left_s)
                if message is None or message.get("type") != "message":
                    continue
                ack = FleetAck.from_json(str(message.get("data")))
                if ack is not None and ack.kill_id == kill_id:
                    acks[ack.name] = (ack, (mono.now_ns() - sent) / NS_PER_SECOND)
    except ERRORS as e:
        raise OperationalError(
            f"fleet: cannot reach Redis at fleet.redis_url = {config.redis_url}: {_describe(e)}"
        ) from None
    finally:
        with contextlib.suppress(*ERRORS):
            await client.aclose()
    return KillOutcome(
        kill_id=kill_id, members=tuple(sorted(members)), acks=acks, heartbeat_age_s=ages
    )


def _age_s(doc: Mapping[str, Any], now_ns: int) -> float | None:
    ts = doc.get("ts_ns")
    return max(0.0, (now_ns - ts) / NS_PER_SECOND) if isinstance(ts, int) else None


@asynccontextmanager
async def _acks_subscription(client: redis.Redis, keys: Keys) -> AsyncIterator[Any]:
    # Subscribed (and confirmed) before the kill goes out, so no answer can be missed.
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(keys.acks)
        confirm = await pubsub.get_message(timeout=5.0)
        if confirm is None or confirm.get("type") != "subscribe":
            raise OperationalError("fleet: Redis did not confirm the acks subscription")
        yield pubsub
    finally:
        with contextlib.suppress(*ERRORS):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def describe_outcome(outcome: KillOutcome, wait_s: float) -> list[str]:
    lines: list[str] = []
    for name in sorted(set(outcome.members) | set(outcome.acks)):
        answer = outcome.acks.get(name)
        if answer is None:
            age = outcome.heartbeat_age_s.get(name)
            seen = f" (last heartbeat {age:.1f} s before the kill)" if age is not None else ""
            lines.append(f"  {name}: NO ANSWER within {wait_s:g} s{seen}")
            continue
        ack, after_s = answer
        if ack.flat:
            lines.append(
                f"  {name}: flat, {ack.cancelled} orders cancelled "
                f"(confirmed {after_s:.3f} s after sending)"
            )
        else:
            lines.append(
                f"  {name}: NOT confirmed flat ({ack.remaining} of its orders still open; "
                "it keeps cancelling)"
            )
    total = len(set(outcome.members) | set(outcome.acks))
    if total == 0:
        lines.insert(
            0,
            f"fleet kill {outcome.kill_id} sent, but no daemon of this fleet is "
            "heartbeating on this Redis: nothing confirmed it",
        )
        return lines
    slowest = max((t for _, t in outcome.acks.values()), default=0.0)
    lines.insert(
        0,
        f"fleet kill {outcome.kill_id}: {len(outcome.flat)} of {total} daemons confirmed "
        f"flat" + (f" within {slowest:.3f} s" if outcome.acks else ""),
    )
    return lines


# ---------------------------------------------------------------------- CLI: kill --fleet


def add_fleet_kill_flags(kill: argparse.ArgumentParser) -> None:
    """``backstop kill --fleet``: the flags, added to the ``kill`` subcommand."""
    group = kill.add_argument_group("fleet (with --fleet)")
    group.add_argument(
        "--fleet",
        action="store_true",
        help="kill every daemon of the fleet through Redis instead of one over its socket",
    )
    group.add_argument(
        "--config",
        type=Path,
        help="take the [fleet] table (redis_url, key_prefix) from this config file",
    )
    group.add_argument(
        "--redis-url", metavar="URL", help="the fleet's Redis (default: fleet.redis_url)"
    )
    group.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"wait this long for every daemon to confirm flat (default {DEFAULT_WAIT_S:g})",
    )


def wants_fleet_kill(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) == "kill" and bool(getattr(args, "fleet", False))


def fleet_settings_for_sender(
    config_file: Path | None, redis_url: str | None, environ: Mapping[str, str]
) -> FleetSettings:
    """The [fleet] table alone: flag > ``BACKSTOP_FLEET__*`` > config file > defaults.

    Only the fleet table is read, so an operator's machine can send a kill without the
    daemons' exchange credentials or anything else their configs need.
    """
    data: dict[str, Any] = {}
    origin = "built-in defaults"
    if config_file is not None:
        try:
            doc = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as e:
            reason = e.strerror or str(e)
            raise ConfigError(f"{config_file}: cannot read config file: {reason}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{config_file}: TOML syntax error: {e}") from None
        table = doc.get("fleet", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{config_file}: fleet: must be a table ([fleet])")
        data.update(table)
        origin = str(config_file)
    prefix = f"{ENV_PREFIX}FLEET{ENV_NESTED_DELIMITER}"
    for key, value in environ.items():
        if key.upper().startswith(prefix) and value != "":
            data[key[len(prefix) :].lower()] = value
            origin = f"environment variable {key}"
    if redis_url is not None:
        data["redis_url"] = redis_url
        origin = "command line (--redis-url)"
    try:
        return FleetSettings.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{origin}: fleet.{loc or '(table)'}: {message}") from None


def sender_identity() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def run_fleet_kill(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``backstop kill --fleet --reason TEXT``: 0 every daemon confirmed flat, 1 not
    (or Redis unreachable, or nobody listening), 2 a usage mistake."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    env = os.environ if environ is None else environ
    reason = " ".join(str(args.reason or "").split())
    if not reason:
        print("backstop kill: --reason is required: say why (it is journaled)", file=stderr)
        return 2
    if args.wait <= 0:
        print("backstop kill: --wait must be positive", file=stderr)
        return 2
    try:
        config = fleet_settings_for_sender(args.config, args.redis_url, env)
    except ConfigError as e:
        print(f"backstop kill: error: {e}", file=stderr)
        return 2
    try:
        outcome = asyncio.run(
            send_fleet_kill(config, reason=reason, who=sender_identity(), wait_s=args.wait)
        )
    except OperationalError as e:
        print(f"backstop kill: {e}", file=stderr)
        return 1
    for line in describe_outcome(outcome, args.wait):
        print(line, file=stdout)
    everyone = set(outcome.members) | set(outcome.acks)
    return 0 if everyone and not outcome.unconfirmed else 1
