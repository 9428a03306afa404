"""The kill switch: stop quoting, cancel every order of ours, confirm that none is left.

State machine (``TRANSITIONS``, checked before every change)::

    ARMED --trip--> TRIPPED_CANCELLING --confirmed flat--> TRIPPED_FLAT --resume--> ARMED
                        |  ^  (not confirmed: stays, retried)      |
                        +--+-- trip (another trigger) <------------+  trip again: cancel again

Triggers (:class:`TripSource`): an operator command, a ``kill``-level guard
(:func:`link_risk`), SIGTERM/SIGINT (graceful stop: cancel everything, then
:attr:`KillSwitch.stop_requested` is set so the daemon exits), the kill file appearing
(polled every ``poll_s``; once per appearance), and the control channel going quiet for
``control_loss_s`` (off unless configured).

On a trip: the strategy is stopped (``stop_strategy`` callback and :attr:`is_tripped`),
then in rounds: the order manager cancels every order of *ours* on every market
(``cancel_all`` per symbol; never the venue's ``cancel_all_orders``, which would also
cancel orders that are not ours), waits for the cancels, and lists the venue's open
orders, keeping those whose client id carries our prefix. None left: TRIPPED_FLAT, with
the kill-to-flat time on the injected clock. Some left (unknown to the manager, a
failed cancel): the manager reconciles them (adopting or cancelling them) and the next
round, after a backoff, cancels again. After ``confirm_attempts`` rounds it stays
TRIPPED_CANCELLING, says so loudly, and :meth:`KillSwitch.watch` starts another round
``cancel_timeout_s`` later.

A trip is persisted (atomic write of ``killswitch.json`` in the state dir): a restarted
daemon comes up tripped (cancelling until it confirms flat again) and stays so until
an operator resumes it with a reason. A signal's graceful stop is the exception: it is
a routine stop, so it does not make the next start wait for an operator. An unreadable
state file counts as tripped (it cannot show that the switch was armed). Every trip,
flat confirmation, failure to confirm and resume produces a :class:`KillRecord` with
who and why, for the journal.

Not done yet (TODO): flattening the inventory within a price limit after the cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.clock import NS_PER_SECOND, Clock
from bot.logs import Logger
from bot.settings.models import KillSwitchSettings

if TYPE_CHECKING:
    from bot.risk.engine import RiskEngine
    from bot.risk.events import RiskEvent
    from bot.settings.models import Settings

STATE_FILE = "killswitch.json"
_FORMAT_VERSION = 1
_MAX_NOTE_CHARS = 200
_MAX_RECORDS = 1000

Sleep = Callable[[float], Awaitable[None]]


class KillState(StrEnum):
    ARMED = "armed"
    """Trading allowed (as far as the kill switch is concerned)."""
    TRIPPED_CANCELLING = "tripped_cancelling"
    """Tripped; our orders are being cancelled, or could not yet be confirmed gone."""
    TRIPPED_FLAT = "tripped_flat"
    """Tripped; the venue lists no open order of ours. Only now may it be resumed."""


class KillEvent(StrEnum):
    TRIP = "trip"
    CONFIRMED_FLAT = "confirmed_flat"
    NOT_CONFIRMED = "not_confirmed"
    RESUME = "resume"


TRANSITIONS: Mapping[tuple[KillState, KillEvent], KillState] = MappingProxyType(
    {
        (KillState.ARMED, KillEvent.TRIP): KillState.TRIPPED_CANCELLING,
        (KillState.TRIPPED_CANCELLING, KillEvent.TRIP): KillState.TRIPPED_CANCELLING,
        (KillState.TRIPPED_FLAT, KillEvent.TRIP): KillState.TRIPPED_CANCELLING,
        (KillState.TRIPPED_CANCELLING, KillEvent.CONFIRMED_FLAT): KillState.TRIPPED_FLAT,
        (KillState.TRIPPED_CANCELLING, KillEvent.NOT_CONFIRMED): KillState.TRIPPED_CANCELLING,
        (KillState.TRIPPED_FLAT, KillEvent.RESUME): KillState.ARMED,
    }
)


class TripSource(StrEnum):
    OPERATOR = "operator"
    GUARD = "guard"
    SIGNAL = "signal"
    KILL_FILE = "kill_file"
    CONTROL_LOST = "control_lost"
    FLEET = "fleet"
    """A fleet kill through Redis (``backstop kill --fleet``; see :mod:`bot.fleet`)."""
    FLEET_LOST = "fleet_lost"
    """The fleet's Redis unreachable for ``fleet.dead_man_s`` (opt-in dead-man)."""
    RESTART = "restart"
    """Restored from the state dir at start-up."""

    @property
    def persists(self) -> bool:
        """Whether a trip from this source keeps the next start tripped."""
        return self is not TripSource.SIGNAL


RecordAction = Literal["trip", "flat", "not_flat", "resume"]


@dataclass(frozen=True, slots=True)
class KillRecord:
    """One trip, flat confirmation, failure to confirm, or resume: who, why, how long."""

    ts_ns: int
    action: RecordAction
    previous: KillState
    state: KillState
    reason: str
    source: str
    who: str
    elapsed_ns: int | None = None
    """Trip to flat (or to giving up), on the injected clock."""
    numbers: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class TripReport:
    """What one round of cancel-and-confirm found."""

    state: KillState
    flat: bool
    reason: str
    source: str
    who: str
    tripped_ns: int
    elapsed_ns: int
    """Trip to flat (or to giving up), on the injected clock; for a trip restored at
    start-up, from the start of this process's first round."""
    attempts: int
    cancelled: tuple[str, ...]
    """Client ids of our orders the rounds asked the manager to cancel."""
    remaining: tuple[str, ...]
    """Client ids of ours the venue still listed open at the last look."""
    foreign: int
    """Open orders without our prefix seen at the last look: never touched."""
    errors: tuple[str, ...] = ()


class OwnOrders(Protocol):
    """What the kill switch needs from :class:`bot.orders.OrderManager`."""

    def is_ours(self, client_id: str | None) -> bool: ...

    def cancel_all(self, symbol: str, *, reason: str) -> list[str]: ...

    async def drain(self) -> None: ...

    async def reconcile(self, symbol: str) -> Any: ...


class ListsOpenOrders(Protocol):
    """What the kill switch needs from the venue (ccxt's ``fetch_open_orders``)."""

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]: ...


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_SECOND, tz=UTC).isoformat()


class KillSwitch:
    def __init__(
        self,
        config: KillSwitchSettings,
        *,
        state_dir: Path,
        kill_file: Path,
        orders: OwnOrders,
        venue: ListsOpenOrders,
        symbols: Sequence[str],
        clock: Clock,
        log: Logger,
        sleep: Sleep = asyncio.sleep,
        stop_strategy: Callable[[], None] | None = None,
        resume_strategy: Callable[[], None] | None = None,
    ) -> None:
        if not isinstance(config, KillSwitchSettings):
            raise TypeError("config must be a KillSwitchSettings")
        self.config = config
        self.state_path = Path(state_dir) / STATE_FILE
        self.kill_file = Path(kill_file)
        self._orders = orders
        self._venue = venue
        self._symbols = list(symbols)
        self._clock = clock
        self._log = log
        self._sleep = sleep
        self._stop_strategy = stop_strategy
        self._resume_strategy = resume_strategy
        self._observers: list[Callable[[KillRecord], None]] = []
        self.records: deque[KillRecord] = deque(maxlen=_MAX_RECORDS)
        """Every record so far (the most recent :data:`_MAX_RECORDS`)."""
        self.last_report: TripReport | None = None
        self.stop_requested = asyncio.Event()
        """Set once a signal's graceful stop has cancelled (or given up): time to exit."""
        self._round: asyncio.Task[TripReport] | None = None
        self._next_round_ns: int | None = None
        self._heard_ns = clock.now_ns()
        self._persisted = False
        self._state = KillState.ARMED
        self._reason = ""
        self._source = ""
        self._who = ""
        self._tripped_ns = 0
        self._timer_ns: int | None = None  # kill-to-flat is measured from here
        self._restore()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        orders: OwnOrders,
        venue: ListsOpenOrders,
        clock: Clock,
        log: Logger,
        **kwargs: Any,
    ) -> KillSwitch:
        return cls(
            settings.killswitch,
            state_dir=settings.state_dir,
            kill_file=settings.kill_file_path,
            orders=orders,
            venue=venue,
            symbols=settings.symbols,
            clock=clock,
            log=log,
            **kwargs,
        )

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> KillState:
        return self._state

    @property
    def is_tripped(self) -> bool:
        """The flag the trader checks: no new quotes while True."""
        return self._state is not KillState.ARMED

    def add_symbols(self, symbols: Sequence[str]) -> None:
        """Markets whose orders a trip cancels too (option books trading through the same
        order manager and venue as the configured markets)."""
        self._symbols += [s for s in symbols if s not in self._symbols]

    def status(self) -> dict[str, Any]:
        """For ``backstop status`` (the control API's ``KillSwitchStatus`` keys and more)."""
        tripped = self.is_tripped
        report = self.last_report
        return {
            "state": self._state.value,
            "reason": self._reason if tripped else None,
            "source": self._source if tripped else None,
            "who": self._who if tripped else None,
            "since": _iso(self._tripped_ns) if tripped else None,
            "last_kill_to_flat_s": (
                report.elapsed_ns / NS_PER_SECOND if report is not None and report.flat else None
            ),
            "cancelling": self._round is not None and not self._round.done(),
        }

    def subscribe(self, observer: Callable[[KillRecord], None]) -> Callable[[], None]:
        """Call ``observer`` with every record as it happens; returns the unsubscribe."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    # ------------------------------------------------------------------ commands

    async def trip(self, reason: str, *, source: TripSource, who: str) -> TripReport:
        """Trip (or trip again) and wait until flat is confirmed or the round gives up.

        Cancelling the caller does not stop the cancellation.
        """
        return await asyncio.shield(self.trip_soon(reason, source=source, who=who))

    def trip_soon(self, reason: str, *, source: TripSource, who: str) -> asyncio.Task[TripReport]:
        """Trip now (state, strategy stop, persistence happen before this returns) and
        cancel in the background; the returned task ends with the round's report.

        For synchronous callers (observers, signal handlers); needs a running loop.
        """
        self._begin(reason, source, who)
        return self._ensure_round()

    async def confirm_flat(self) -> TripReport | None:
        """Run (or join) the cancel-and-confirm round of a trip not confirmed flat yet
        (restored at start-up, or given up for now); None unless TRIPPED_CANCELLING."""
        if self._state is not KillState.TRIPPED_CANCELLING:
            return None
        return await asyncio.shield(self._ensure_round())

    def check_resume(self, reason: str) -> str | None:
        """Why a resume would be refused now (``UPPER_SNAKE: k=v``), None if it would not."""
        if not " ".join(reason.split()):
            return "REASON_REQUIRED: a resume needs a reason"
        if self._state is KillState.ARMED:
            return "NOT_TRIPPED: state=armed"
        if self._state is KillState.TRIPPED_CANCELLING:
            report = self.last_report
            remaining = len(report.remaining) if report is not None else 0
            return (
                f"STILL_CANCELLING: since_s={self._since_s():.3f} "
                f"remaining={remaining} (resume only once no order of ours is open)"
            )
        if self.kill_file.exists():
            return f"KILL_FILE_PRESENT: path={self.kill_file} (remove it first)"
        return None

    def trip_key(self) -> str:
        """Identifies the current trip (a resume approval holds for this trip only)."""
        return f"{self._tripped_ns}:{self._source}:{self._who}"

    def resume(self, reason: str, *, who: str) -> str | None:
        """Re-arm: None if done, else why not (``UPPER_SNAKE: k=v``). Only from FLAT."""
        reason = " ".join(reason.split())
        denial = self.check_resume(reason)
        if denial is not None:
            return denial
        previous = self._state
        self._transition(KillEvent.RESUME)
        now = self._clock.now_ns()
        self._heard_ns = now  # a fresh start for the control-loss timer
        self._persisted = False
        self._write(
            {
                "state": KillState.ARMED.value,
                "resumed_reason": reason,
                "resumed_by": who,
                "ts_ns": now,
                "time": _iso(now),
                "last_trip": {"reason": self._reason, "source": self._source, "who": self._who},
            }
        )
        self._log.warning("kill_switch_resumed", reason=reason, who=who)
        self._record("resume", previous, reason=reason, source=TripSource.OPERATOR.value, who=who)
        self._reason = self._source = self._who = ""
        if self._resume_strategy is not None:
            self._resume_strategy()
        return None

    # ------------------------------------------------------------------ triggers

    def handle_signal(self, signum: int) -> asyncio.Task[TripReport]:
        """SIGTERM/SIGINT: the graceful stop. Sets :attr:`stop_requested` once cancelled."""
        name = signal.Signals(signum).name
        task = self.trip_soon(
            f"SIGNAL: name={name}", source=TripSource.SIGNAL, who=f"signal:{name}"
        )
        task.add_done_callback(lambda _: self.stop_requested.set())
        return task

    def install_signal_handlers(
        self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
    ) -> Callable[[], None]:
        """Route ``signals`` to :meth:`handle_signal` on the running loop; returns the undo."""
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, self.handle_signal, signum)

        def remove() -> None:
            for signum in signals:
                loop.remove_signal_handler(signum)

        return remove

    def control_heartbeat(self) -> None:
        """The control channel is alive (call on every authenticated control request)."""
        self._heard_ns = self._clock.now_ns()

    def control_lost(self, detail: str) -> asyncio.Task[TripReport] | None:
        """The control channel is gone: trip if ``control_loss_s`` is configured."""
        if self.config.control_loss_s is None:
            self._log.warning("control_channel_lost", detail=detail, action="none (not configured)")
            return None
        return self.trip_soon(
            f"CONTROL_LOST: detail={detail}", source=TripSource.CONTROL_LOST, who="control channel"
        )

    async def watch(self) -> None:
        """Poll the kill file and the control heartbeat every ``poll_s``, and retry rounds
        that could not confirm flat. Run it as a task for the daemon's lifetime.

        A trip restored from the state dir starts its round here.
        """
        cfg = self.config
        self._heard_ns = self._clock.now_ns()
        if self._state is KillState.TRIPPED_CANCELLING:
            self._ensure_round()
        present = False
        while True:
            exists = self.kill_file.exists()
            if exists and not present:
                note = self._kill_file_note()
                self.trip_soon(
                    f"KILL_FILE: path={self.kill_file}" + (f" note={note}" if note else ""),
                    source=TripSource.KILL_FILE,
                    who="kill file",
                )
            present = exists
            now = self._clock.now_ns()
            quiet_s = (now - self._heard_ns) / NS_PER_SECOND
            if (
                cfg.control_loss_s is not None
                and self._state is KillState.ARMED
                and quiet_s > cfg.control_loss_s
            ):
                self.trip_soon(
                    f"CONTROL_LOST: quiet_s={quiet_s:.3f} max_s={cfg.control_loss_s:g}",
                    source=TripSource.CONTROL_LOST,
                    who="control channel",
                )
            if (
                self._state is KillState.TRIPPED_CANCELLING
                and (self._round is None or self._round.done())
                and self._next_round_ns is not None
                and now >= self._next_round_ns
            ):
                self._ensure_round()
            await self._sleep(cfg.poll_s)

    # ------------------------------------------------------------------ the machine

    def _transition(self, event: KillEvent) -> KillState:
        target = TRANSITIONS.get((self._state, event))
        if target is None:  # callers check first; this is a bug
            raise RuntimeError(f"kill switch: no transition from {self._state} on {event}")
        self._state = target
        return target

    def _begin(self, reason: str, source: TripSource, who: str) -> None:
        previous = self._state
        self._transition(KillEvent.TRIP)
        now = self._clock.now_ns()
        if previous is not KillState.TRIPPED_CANCELLING:
            # A new trip (from armed, or again once flat): its own reason and timer;
            # except a graceful stop (a signal) of a daemon an operator or guard already
            # killed: the next start must still say why it was killed, and since when.
            if not (self._persisted and not source.persists):
                self._reason, self._source, self._who = reason, source.value, who
                self._tripped_ns = now
            self._timer_ns = now
        elif source.persists and not self._persisted:
            # An operator/guard trip joining a signal's graceful stop: it is what the
            # next start must remember.
            self._reason, self._source, self._who = reason, source.value, who
        if source.persists and not self._persisted:
            self._persisted = True
            self._persist_trip()
        elif self._persisted and previous is KillState.TRIPPED_FLAT:
            self._persist_trip()
        log = self._log.warning if source is TripSource.SIGNAL else self._log.error
        log(
            "kill_switch_tripped",
            reason=reason,
            source=source.value,
            who=who,
            previous=previous.value,
        )
        self._record("trip", previous, reason=reason, source=source.value, who=who)
        if previous is KillState.ARMED and self._stop_strategy is not None:
            self._stop_strategy()

    def _ensure_round(self) -> asyncio.Task[TripReport]:
        if self._round is None or self._round.done():
            self._next_round_ns = None
            if self._timer_ns is None:  # a restored trip: time this process's own work
                self._timer_ns = self._clock.now_ns()
            self._round = asyncio.get_running_loop().create_task(self._cancel_until_flat())
            self._round.add_done_callback(self._round_done)
        return self._round

    def _round_done(self, task: asyncio.Task[TripReport]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug, not the venue (venue errors are caught per call): report it, and let
        # the watcher try again rather than stay silently half-done.
        self._log.error("kill_switch_round_crashed", error=repr(task.exception()))
        timeout_ns = int(self.config.cancel_timeout_s * NS_PER_SECOND)
        self._next_round_ns = self._clock.now_ns() + timeout_ns

    async def _cancel_until_flat(self) -> TripReport:
        cfg = self.config
        cancelled: dict[str, None] = {}
        errors: list[str] = []
        remaining: list[tuple[str, str]] = []
        foreign = 0
        delay = cfg.confirm_backoff_s
        attempts = 0
        flat = False
        why = f"KILL_SWITCH: source={self._source}"
        while attempts < cfg.confirm_attempts:
            attempts += 1
            for symbol in self._symbols:
                cancelled.update(dict.fromkeys(self._orders.cancel_all(symbol, reason=why)))
            try:
                await asyncio.wait_for(self._orders.drain(), timeout=cfg.cancel_timeout_s)
            except TimeoutError:
                errors.append(f"DRAIN_TIMEOUT: timeout_s={cfg.cancel_timeout_s:g}")
            remaining, foreign, listing_errors = await self._list_ours()
            errors += listing_errors
            if not remaining and not listing_errors:
                flat = True
                break
            # Ours still open (unknown to the manager, a late create, a failed cancel):
            # let the manager learn them, so the next round can cancel them.
            for symbol in sorted({s for s, _ in remaining}):
                try:
                    await self._orders.reconcile(symbol)
                except Exception as err:
                    errors.append(f"RECONCILE_FAILED: symbol={symbol} error={err}")
            if attempts < cfg.confirm_attempts:
                await self._sleep(delay)
                delay = min(delay * 2, cfg.cancel_timeout_s)
        return self._finish(flat, attempts, list(cancelled), remaining, foreign, errors)

    async def _list_ours(self) -> tuple[list[tuple[str, str]], int, list[str]]:
        """(symbol, client id) of our open orders per the venue, foreign count, errors."""
        ours: list[tuple[str, str]] = []
        foreign = 0
        errors: list[str] = []
        for symbol in self._symbols:
            try:
                listing = await self._venue.fetch_open_orders(symbol)
            except Exception as err:  # the venue's answer or a network error: not confirmed
                errors.append(f"LISTING_FAILED: symbol={symbol} error={type(err).__name__}: {err}")
                continue
            for order in listing:
                cid = order.get("clientOrderId")
                if self._orders.is_ours(cid):
                    ours.append((symbol, str(cid)))
                else:
                    foreign += 1
        return ours, foreign, errors

    def _finish(
        self,
        flat: bool,
        attempts: int,
        cancelled: list[str],
        remaining: list[tuple[str, str]],
        foreign: int,
        errors: list[str],
    ) -> TripReport:
        now = self._clock.now_ns()
        elapsed = now - (self._timer_ns if self._timer_ns is not None else self._tripped_ns)
        previous = self._state
        numbers = {
            "attempts": attempts,
            "cancelled": len(cancelled),
            "remaining": len(remaining),
            "foreign": foreign,
            "elapsed_s": elapsed / NS_PER_SECOND,
        }
        if flat and previous is KillState.TRIPPED_CANCELLING:
            self._transition(KillEvent.CONFIRMED_FLAT)
            if self._persisted:
                self._persist_trip()
            self._log.warning("kill_switch_flat", **numbers)
            self._record("flat", previous, elapsed_ns=elapsed, numbers=numbers)
        else:
            if previous is KillState.TRIPPED_CANCELLING:
                self._transition(KillEvent.NOT_CONFIRMED)
            self._next_round_ns = now + int(self.config.cancel_timeout_s * NS_PER_SECOND)
            self._log.error(
                "kill_switch_not_flat",
                still_open=[cid for _, cid in remaining],
                errors=errors[-5:],
                **numbers,
            )
            self._record("not_flat", previous, elapsed_ns=elapsed, numbers=numbers)
        report = TripReport(
            state=self._state,
            flat=flat,
            reason=self._reason,
            source=self._source,
            who=self._who,
            tripped_ns=self._tripped_ns,
            elapsed_ns=elapsed,
            attempts=attempts,
            cancelled=tuple(cancelled),
            remaining=tuple(cid for _, cid in remaining),
            foreign=foreign,
            errors=tuple(errors),
        )
        self.last_report = report
        return report

    def _record(
        self,
        action: RecordAction,
        previous: KillState,
        *,
        reason: str | None = None,
        source: str | None = None,
        who: str | None = None,
        elapsed_ns: int | None = None,
        numbers: Mapping[str, float] | None = None,
    ) -> None:
        record = KillRecord(
            ts_ns=self._clock.now_ns(),
            action=action,
            previous=previous,
            state=self._state,
            reason=self._reason if reason is None else reason,
            source=self._source if source is None else source,
            who=self._who if who is None else who,
            elapsed_ns=elapsed_ns,
            numbers=MappingProxyType(dict(numbers or {})),
        )
        self.records.append(record)
        for observer in list(self._observers):
            try:
                observer(record)
            except Exception:  # a broken observer must not stop the kill switch
                self._log.exception("kill_switch_observer_failed", action=action)

    def _since_s(self) -> float:
        return (self._clock.now_ns() - self._tripped_ns) / NS_PER_SECOND

    def _kill_file_note(self) -> str:
        """The first line of the kill file, if any: operators can say why."""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = self.kill_file.read_text(encoding="utf-8")
            line = text.strip().splitlines()[0] if text.strip() else ""
            return " ".join(line.split())[:_MAX_NOTE_CHARS]
        return ""

    # ------------------------------------------------------------------ persistence

    def _persist_trip(self) -> None:
        self._write(
            {
                "state": self._state.value,
                "reason": self._reason,
                "source": self._source,
                "who": self._who,
                "ts_ns": self._tripped_ns,
                "time": _iso(self._tripped_ns),
            }
        )

    def _write(self, doc: dict[str, Any]) -> None:
        """Atomically replace the state file (write, fsync, rename, fsync the directory)."""
        doc = {"version": _FORMAT_VERSION, **doc}
        path = self.state_path
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            # Cancelling matters more than the file: carry on, but loudly.
            self._log.error("kill_switch_state_not_saved", path=str(path), error=str(err))

    def _restore(self) -> None:
        path = self.state_path
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            state = KillState(doc["state"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            self._restore_tripped(
                f"STATE_FILE_UNREADABLE: path={path} error={type(err).__name__}",
                TripSource.RESTART.value,
                "restart",
                self._clock.now_ns(),
            )
            return
        if state is KillState.ARMED:
            return
        self._restore_tripped(
            str(doc.get("reason") or "RESTORED"),
            str(doc.get("source") or TripSource.RESTART.value),
            str(doc.get("who") or "restart"),
            int(doc.get("ts_ns") or self._clock.now_ns()),
        )

    def _restore_tripped(self, reason: str, source: str, who: str, ts_ns: int) -> None:
        # Flat was true for the previous process; this one must see it again itself.
        self._state = KillState.TRIPPED_CANCELLING
        self._reason, self._source, self._who = reason, source, who
        self._tripped_ns = ts_ns
        self._persisted = True
        self._log.warning("kill_switch_restored_tripped", reason=reason, source=source, who=who)
        if self._stop_strategy is not None:
            self._stop_strategy()


def link_risk(killswitch: KillSwitch, risk: RiskEngine) -> Callable[[], None]:
    """Wire the two: a ``kill`` guard trips the switch; a trip halts trading; a resume
    makes trading ACTIVE again. Returns the function that unwires them.
    """
    from bot.risk.events import GuardEvent, GuardLevel, TradingState

    def on_risk(event: RiskEvent) -> None:
        if isinstance(event, GuardEvent) and event.level is GuardLevel.KILL:
            killswitch.trip_soon(event.reason, source=TripSource.GUARD, who=f"guard:{event.guard}")

    def on_kill(record: KillRecord) -> None:
        if record.action == "trip":
            risk.set_trading_state(TradingState.HALTED, reason=record.reason, who=record.who)
        elif record.action == "resume":
            risk.set_trading_state(TradingState.ACTIVE, reason=record.reason, who=record.who)

    if killswitch.is_tripped:
        status = killswitch.status()
        risk.set_trading_state(
            TradingState.HALTED, reason=str(status["reason"]), who=str(status["who"])
        )
    undo_risk = risk.subscribe(on_risk)
    undo_kill = killswitch.subscribe(on_kill)

    def unlink() -> None:
        undo_risk()
        undo_kill()

    return unlink
