"""The journal: an append-only, hash-chained SQLite log written by a background thread.

**Never blocks the hot path.** :meth:`Journal.append` hands the record to a writer
thread through a bounded ``queue.Queue``; it never waits. Payloads the journal builds
itself (orders, fills, risk events, episodes, traces: fresh dicts nobody changes later)
are handed over as they are and encoded to canonical JSON on the writer thread; others
are encoded by ``append``. Either way the stored text, and so the hash chain, is the
same. When the queue is full the record goes to an overflow list instead (never
dropped), ``append`` returns False and :attr:`Journal.backpressure` is set: the trader
must stop quoting until the writer has caught up (the flag clears once the overflow is
empty and the queue is at most half full, so quoting does not flap on the boundary).
Records keep their append order across the queue and the overflow list: once anything
is in the overflow list, later records go there too, and the writer takes the overflow
list only after emptying the queue.

**Held during an event.** Between :meth:`Journal.hold` and :meth:`Journal.release` (the
trader holds from a book sample until that event's orders have left), appended records
wait in a list on the caller's thread, in order, and may be *deferred*: built by a
function at release (:meth:`Journal.append_deferred`). So nothing on the way from a
market event to its orders builds payloads or wakes the writer thread (which would then
compete for the GIL at every event-loop turn before the orders are sent). The stored
records, their order and their chain are the same as without holding; they reach the
writer a few loop turns later. :meth:`flush`, :meth:`flush_sync` and :meth:`close`
release first.

**Group commits.** The writer takes whatever is queued (up to ``max_batch`` records)
and commits it in one transaction, so under load each fsync carries many records and
at low load a record is committed as soon as the writer sees it (no timer to wait for).

**Durability.** WAL mode with ``synchronous=FULL`` by default: SQLite then fsyncs the
WAL at every commit, so a committed transaction survives power loss as well as a
killed process. ``NORMAL`` in WAL mode survives a killed process but may lose the last
transactions on power loss: a fill the venue has executed but the journal forgot is
exactly what a restart must not have to guess, so FULL is the default and group
commits pay for it. A record is *committed* (and :meth:`Journal.flush` returns) only
after its transaction's COMMIT returned.

**Failures.** A commit that fails (disk full, I/O error, the file locked by another
process) is rolled back and retried with the same records after ``retry_s``, with
backpressure set meanwhile; nothing is skipped. The only records ever not written are
those still pending when :meth:`Journal.close` gives up after its timeout (it says how
many). The same fill (client id and trade id) is stored once: later copies are
counted in :attr:`JournalStats.duplicates` and skipped, so replays of the venue's
trade history are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from bot import __version__
from bot.clock import Clock, WallClock
from bot.journal import records as rk
from bot.journal.chain import GENESIS_HASH, link, record_text
from bot.journal.reader import JournalReader
from bot.journal.records import Entry, RawEntry, make_entry, make_raw_entry
from bot.journal.schema import migrate
from bot.logs import Logger, null_logger
from bot.orders.events import OrderFilled, OrderNotice, OrderStateChanged

if TYPE_CHECKING:
    from bot.killswitch import KillRecord
    from bot.orders.state import TrackedOrder
    from bot.risk.events import RiskEvent
    from bot.settings.models import Settings
    from bot.venues.base import Venue

Synchronous = Literal["NORMAL", "FULL"]

PayloadBuilder = Callable[[], Mapping[str, Any]]


class _Deferred(NamedTuple):
    """A held record whose payload is built at release (see :meth:`Journal.append_deferred`)."""

    seq: int
    kind: str
    ts_ns: int
    build: PayloadBuilder


_WAKE = object()  # put on the queue to wake the writer (close); never written
_INSERT = (
    "INSERT INTO records (id, ts_ns, kind, payload, prev_hash, hash, symbol, client_id, ref)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class JournalClosed(RuntimeError):
    """A record was appended after :meth:`Journal.close`: it cannot be journaled."""


@dataclass(slots=True)
class JournalStats:
    appended: int = 0
    committed: int = 0
    """Records written (duplicates not included)."""
    duplicates: int = 0
    """Fills skipped because the same (client id, trade id) was already journaled."""
    batches: int = 0
    largest_batch: int = 0
    overflowed: int = 0
    """Appends that found the queue full (kept in the overflow list)."""
    max_overflow: int = 0
    commit_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Waiter:
    seq: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def connect(
    path: Path, synchronous: Synchronous, busy_timeout_s: float = 5.0
) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN/COMMIT), WAL, durable as asked.

    ``busy_timeout_s``: how long a write waits for another connection's lock before
    failing (and being retried).
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


class Journal:
    """The bot's journal. Create it with :meth:`open` (or the constructor); every
    ``record_*``/``append`` call is non-blocking and meant for the event loop's thread.

    Opening migrates the file to the current schema (:mod:`bot.journal.schema`) and
    starts the writer thread. Wiring, one line per source::

        manager.subscribe(journal.order_observer(manager.get))
        risk.subscribe(journal.record_risk_event)
        killswitch.subscribe(journal.record_kill)
        journal.record_episode(episode.to_dict())   # at an episode's start and end
        journal.record_start(settings)              # once, at start-up
        OrderManager(..., known_client_ids=journal.known_client_ids)

    Parameters
    ----------
    synchronous:
        ``FULL`` (default) or ``NORMAL``; see the module docstring.
    clock:
        Stamps records that carry no time of their own (start, close, balances).
    queue_size:
        Records the queue holds before :attr:`backpressure` is set.
    max_batch:
        Most records committed in one transaction.
    retry_s:
        Pause before retrying a failed commit.
    busy_timeout_s:
        How long a commit waits for a lock held by another connection.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Synchronous = "FULL",
        clock: Clock | None = None,
        log: Logger | None = None,
        queue_size: int = 10_000,
        max_batch: int = 1_000,
        retry_s: float = 0.5,
        busy_timeout_s: float = 5.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be at least 1")
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self._clock: Clock = clock if clock is not None else WallClock()
        self._log = log if log is not None else null_logger()
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._busy_timeout_s = busy_timeout_s
        self.stats = JournalStats()
        self.error: BaseException | None = None
        """The last commit failure (None once a commit succeeds again)."""

        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, synchronous, busy_timeout_s)
        try:
            self.schema_before, self.schema_version = migrate(conn, now_ns=self._clock.now_ns)
            self.previous_shutdown_clean = self._previous_shutdown_clean(conn)
        finally:
            conn.close()

        self._queue: queue.Queue[Entry | RawEntry | object] = queue.Queue(maxsize=queue_size)
        self._low_water = queue_size // 2
        self._overflow: list[Entry | RawEntry] = []
        # Records appended while held (see hold()), in sequence order; None: not holding.
        self._held: list[Entry | RawEntry | _Deferred] | None = None
        self._lock = threading.Lock()  # guards _overflow, _seq and the queue-or-overflow choice
        self._seq = 0  # last sequence number handed out
        self._done_seq = 0  # every entry up to this one is committed (or a duplicate)
        self._done = threading.Condition()
        self._waiters: list[_Waiter] = []
        self.backpressure_event = threading.Event()
        """Set while the trader must not quote (records are waiting in the overflow
        list, or commits are failing)."""
        self._closing = False
        self._closed = False
        self._abandon = threading.Event()
        self._known_ids: set[str] | None = None
        self._fill_keys: set[tuple[str, str]] | None = None
        self._reader: JournalReader | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"journal-writer:{self.path.name}", daemon=True
        )
        self._thread.start()

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock, log: Logger, **kwargs: Any) -> Journal:
        """The journal the settings name (``journal.path``, ``journal.synchronous``)."""
        return cls(
            settings.journal_path,
            synchronous=settings.journal.synchronous,
            clock=clock,
            log=log,
            **kwargs,
        )

    @staticmethod
    def _previous_shutdown_clean(conn: sqlite3.Connection) -> bool | None:
        """Whether the last session ended with a ``close`` record; None: no session yet."""
        row = conn.execute(
            "SELECT kind FROM records WHERE kind IN (?, ?) ORDER BY id DESC LIMIT 1",
            (rk.START, rk.CLOSE),
        ).fetchone()
        return None if row is None else row[0] == rk.CLOSE

    # ------------------------------------------------------------------ state

    @property
    def backpressure(self) -> bool:
        """True while quoting must pause: the journal is not keeping up."""
        return self.backpressure_event.is_set()

    @property
    def pending(self) -> int:
        """Records appended but not yet committed."""
        return self._seq - self._done_seq

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ appending

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        ts_ns: int | None = None,
        owned: bool = False,
    ) -> bool:
        """Queue one record. Never blocks and never drops it.

        Returns False when the queue was full: the record is kept (in order) in the
        overflow list and :attr:`backpressure` is set; the caller should pause quoting.
        ``ts_ns`` defaults to the journal's clock. ``owned``: the payload is handed over
        (a fresh structure nobody changes afterwards), so the writer thread encodes it,
        off the caller's path; otherwise it is encoded now.
        """
        if self._closing:
            raise JournalClosed(f"journal {self.path} is closed; cannot record {kind!r}")
        ts = self._clock.now_ns() if ts_ns is None else ts_ns
        # Encoded outside the lock: here, or on the writer thread for a handed-over payload.
        draft: Entry | RawEntry = (
            make_raw_entry(0, kind, ts, payload) if owned else make_entry(0, kind, ts, payload)
        )
        with self._lock:
            self._seq += 1
            entry = draft._replace(seq=self._seq)
            self.stats.appended += 1
            if self._held is not None:
                self._held.append(entry)
                return True
            return self._enqueue(entry)

    def append_deferred(
        self, kind: str, build: PayloadBuilder, *, ts_ns: int | None = None
    ) -> bool:
        """:meth:`append` a payload that ``build()`` makes (a fresh mapping, handed over).

        While the journal is held, ``build`` runs at :meth:`release`, in the record's
        place: it must then give what it would give now (read only what does not change
        before the release: frozen values, or state the same event cannot change again).
        Otherwise it runs at once.
        """
        if self._held is None:
            return self.append(kind, build(), ts_ns=ts_ns, owned=True)
        if self._closing:
            raise JournalClosed(f"journal {self.path} is closed; cannot record {kind!r}")
        ts = self._clock.now_ns() if ts_ns is None else int(ts_ns)
        with self._lock:
            self._seq += 1
            self.stats.appended += 1
            if self._held is not None:
                self._held.append(_Deferred(self._seq, kind, ts, build))
                return True
            draft = make_raw_entry(self._seq, kind, ts, build())
            return self._enqueue(draft)

    def hold(self) -> None:
        """Keep appended records on this side until :meth:`release` (idempotent)."""
        if self._held is None and not self._closing:
            self._held = []

    def release(self) -> bool:
        """Build the deferred payloads and hand every held record to the writer, in order.

        Returns False if some had to go to the overflow list (:attr:`backpressure`).
        """
        if self._held is None:
            # Not holding (most events: trades): nothing to hand over. Only this
            # thread's hold() sets it, so the unlocked read cannot miss a hold.
            return True
        ok = True
        while True:
            with self._lock:
                held = self._held
                if not held:
                    self._held = None
                    return ok
                # Still holding while the payloads are built: a record appended
                # meanwhile (a later sequence number) waits for the next round.
                self._held = []
            entries = [self._built(h) if isinstance(h, _Deferred) else h for h in held]
            with self._lock:
                for entry in entries:
                    ok = self._enqueue(entry) and ok

    def _built(self, held: _Deferred) -> RawEntry:
        try:
            payload = held.build()
        except Exception as e:  # a bug in a builder: the record keeps its number and place
            self._log.exception("journal_deferred_build_failed", kind=held.kind)
            payload = {"deferred_build_failed": repr(e)}
        return make_raw_entry(held.seq, held.kind, held.ts_ns, payload)

    def _enqueue(self, entry: Entry | RawEntry) -> bool:
        """Queue (or overflow) one numbered entry; the caller holds ``_lock``."""
        if self._known_ids is not None and entry.client_id is not None:
            self._known_ids.add(entry.client_id)
        if not self._overflow:
            try:
                self._queue.put_nowait(entry)
                return True
            except queue.Full:
                pass
        self._overflow.append(entry)
        self.stats.overflowed += 1
        self.stats.max_overflow = max(self.stats.max_overflow, len(self._overflow))
        if not self.backpressure_event.is_set():
            self.backpressure_event.set()
            self._log.warning(
                "journal_backpressure", queued=self._queue.qsize(), overflow=len(self._overflow)
            )
        return False

    # The record_* helpers return nothing, so each can be passed as an observer as is;
    # callers check :attr:`backpressure` (set when a record had to wait in the overflow).

    def _put(self, kind: str, payload: Mapping[str, Any], *, ts_ns: int | None = None) -> None:
        # The payloads built here are fresh dicts of plain values: the writer encodes them.
        self.append(kind, payload, ts_ns=ts_ns, owned=True)

    def record_notice(self, notice: OrderNotice, order: TrackedOrder | None = None) -> None:
        """An order manager notice; ``order`` (the tracked order) adds side, price, amount."""
        if isinstance(notice, OrderStateChanged):
            # Built at release when held: the notice is frozen, and what the payload
            # reads of the order (side, price, amount, tag, post_only) is fixed at its
            # creation.
            self.append_deferred(
                rk.ORDER, lambda: rk.order_payload(notice, order), ts_ns=notice.ts_ns
            )
        elif isinstance(notice, OrderFilled):
            if not self._first_time_fill(notice.client_id, notice.trade_id):
                # After a restart the venue may report a trade a previous session already
                # journaled; a second record would count it twice in every position.
                self._log.debug(
                    "fill_already_journaled", client_id=notice.client_id, trade_id=notice.trade_id
                )
                return
            self._put(rk.FILL, rk.fill_payload(notice, order), ts_ns=notice.ts_ns)
        else:
            self._put(rk.ORDER_FAILED, rk.failure_payload(notice), ts_ns=notice.ts_ns)

    def _first_time_fill(self, client_id: str, trade_id: str) -> bool:
        if self._fill_keys is None:
            self._fill_keys = {
                (str(f.get("client_id")), str(f.get("trade_id"))) for f in self.reader.fills()
            }
        key = (client_id, trade_id)
        if key in self._fill_keys:
            return False
        self._fill_keys.add(key)
        return True

    def order_observer(
        self, lookup: Callable[[str], TrackedOrder | None] | None = None
    ) -> Callable[[OrderNotice], None]:
        """An observer for ``OrderManager.subscribe``: ``manager.subscribe(
        journal.order_observer(manager.get))``."""

        def observe(notice: OrderNotice) -> None:
            client_id = notice.client_id
            order = lookup(client_id) if lookup is not None and client_id is not None else None
            self.record_notice(notice, order)

        return observe

    def record_episode(self, episode: Mapping[str, Any]) -> None:
        """``Episode.to_dict()``: at its start and at its end (stamped with that time).

        The mapping is journaled as it is when the writer gets to it: pass a fresh one
        (``to_dict()`` builds one) and do not change it afterwards.
        """
        end, start = episode.get("end_ts_ns"), episode.get("start_ts_ns")
        ts = end if isinstance(end, int) else start if isinstance(start, int) else None
        self._put(rk.EPISODE, episode, ts_ns=ts)

    def record_episode_start(self, build: PayloadBuilder, ts_ns: int) -> None:
        """:meth:`record_episode` for an episode's start, its ``to_dict()`` made by
        ``build`` (see :meth:`append_deferred`: at release when the journal is held)."""
        self.append_deferred(rk.EPISODE, build, ts_ns=ts_ns)

    def record_risk_event(self, event: RiskEvent) -> None:
        self._put(rk.risk_kind(event), rk.risk_payload(event), ts_ns=event.ts_ns)

    def record_kill(self, record: KillRecord) -> None:
        self._put(rk.KILL, rk.kill_payload(record), ts_ns=record.ts_ns)

    def record_start(self, settings: Settings, *, version: str = __version__) -> None:
        """The config fingerprint at start (hash of the secret-free settings and version)."""
        self.append(rk.START, rk.start_payload(settings, version))

    def record_balance(
        self, balance: Mapping[str, Any], *, source: str = "venue", ts_ns: int | None = None
    ) -> None:
        """A ccxt balance structure (``fetch_balance``) as a snapshot."""
        self.append(rk.BALANCE, rk.balance_payload(balance, source=source), ts_ns=ts_ns)

    def record(self, obj: object) -> None:
        """Any of the above, by type (an episode as its ``to_dict()`` mapping)."""
        from bot.killswitch import KillRecord
        from bot.orders.events import OrderActionFailed, OrderFilled, OrderStateChanged
        from bot.risk.events import GuardEvent, MarketStateChanged, TradingStateChanged

        if isinstance(obj, OrderStateChanged | OrderFilled | OrderActionFailed):
            return self.record_notice(obj)
        if isinstance(obj, GuardEvent | MarketStateChanged | TradingStateChanged):
            return self.record_risk_event(obj)
        if isinstance(obj, KillRecord):
            return self.record_kill(obj)
        if isinstance(obj, Mapping):
            return self.record_episode(obj)
        to_dict = getattr(obj, "to_dict", None)
        if callable(to_dict) and type(obj).__name__ == "Episode":
            return self.record_episode(to_dict())
        raise TypeError(f"the journal does not know how to record a {type(obj).__name__}")

    # ------------------------------------------------------------------ waiting

    async def flush(self) -> None:
        """Wait until every record appended so far is committed (or a duplicate fill).

        Bound it with ``asyncio.timeout`` if need be: while commits fail it waits.
        """
        self.release()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._done:
            target = self._seq
            if self._done_seq >= target:
                return
            self._waiters.append(_Waiter(target, loop, future))
        try:
            await future
        finally:
            with self._done:
                self._waiters = [w for w in self._waiters if w.future is not future]

    def flush_sync(self, timeout: float | None = None) -> bool:
        """Blocking :meth:`flush` for threads and scripts; False on timeout."""
        self.release()
        with self._done:
            target = self._seq
            return self._done.wait_for(lambda: self._done_seq >= target, timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Record a clean shutdown, commit everything and stop the writer. Idempotent.

        Blocks (up to ``timeout``): call it last, after the event loop's work is done,
        or use :meth:`aclose`. False if records were still pending at the timeout (they
        are not journaled; the count is logged).
        """
        if self._closed:
            return self.pending == 0
        if not self._closing:
            self.release()
            self.append(rk.CLOSE, {"clean": True, "stats": self.stats.to_dict()})
            self._closing = True
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_WAKE)
        self._thread.join(timeout)
        if self._thread.is_alive():
            lost = self.pending
            self._log.error("journal_close_timed_out", pending=lost, error=repr(self.error))
            self._abandon.set()
            self._thread.join(5.0)
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return self.pending == 0

    async def aclose(self, wait_s: float | None = 30.0) -> bool:
        """:meth:`close` without blocking the event loop."""
        return await asyncio.to_thread(self.close, wait_s)

    # ------------------------------------------------------------------ reading back

    @property
    def reader(self) -> JournalReader:
        """A read-only view of what is committed (not what is still queued)."""
        if self._reader is None:
            self._reader = JournalReader(self.path)
        return self._reader

    def known_client_ids(self) -> Collection[str]:
        """Every client id journaled or appended: the ``known_client_ids`` provider of
        :class:`bot.orders.OrderManager` (its reconcile adopts these orders instead of
        treating them as strays)."""
        if self._known_ids is None:
            ids = self.reader.client_ids()
            with self._lock:
                self._known_ids = ids
        return self._known_ids

    def last_fill_ts(self, symbol: str) -> int | None:
        """Venue timestamp (ms) of the last committed fill on ``symbol``."""
        return self.reader.last_fill_ms(symbol)

    def open_orders_at_crash(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Orders whose last committed state is not terminal (FILLED/CANCELED/REJECTED):
        after a crash, what may still rest on the venue."""
        return self.reader.open_orders(symbol)

    async def reconcile_fills(self, venue: Venue, symbol: str, prefix: str) -> list[dict[str, Any]]:
        """Fills of ours the venue reports that the journal lacks, journaled now (see
        :func:`bot.journal.recovery.reconcile_fills`)."""
        from bot.journal.recovery import reconcile_fills

        return await reconcile_fills(self, venue, symbol, prefix)

    # ------------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    conn = self._commit(conn, batch)
                    if conn is None:
                        return  # close() gave up waiting
        except BaseException as e:  # pragma: no cover - a bug; say so loudly, keep the data
            self.error = e
            self.backpressure_event.set()
            self._log.error("journal_writer_died", error=repr(e))
            raise
        finally:
            if conn is not None:
                conn.close()

    def _next_batch(self) -> list[Entry] | None:
        """Queued entries (oldest first), then the overflow list once the queue is empty,
        each encoded (here, on the writer thread) if it was handed over raw.

        Blocks until there is something; None once closing and everything is taken.
        """
        batch = self._take_batch()
        if batch is None:
            return None
        return [e.encoded() if isinstance(e, RawEntry) else e for e in batch]

    def _take_batch(self) -> list[Entry | RawEntry] | None:
        first: Entry | RawEntry | None = None
        while True:
            batch: list[Entry | RawEntry] = [first] if first is not None else []
            first = None
            emptied = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    emptied = True
                    break
                if isinstance(item, Entry | RawEntry):
                    batch.append(item)
            if emptied:
                # Everything in the overflow list is newer than everything queued
                # (append sends nothing to the queue while the list is not empty).
                with self._lock:
                    room = self._max_batch - len(batch)
                    batch += self._overflow[:room]
                    del self._overflow[:room]
            if batch:
                return batch
            if self._closing:
                # close() sets the flag after appending its record: if the flag is
                # seen, that record is visible in the queue or the overflow list.
                with self._lock:
                    if self._queue.empty() and not self._overflow:
                        return None
                continue
            # Empty queue and overflow list: the next entry can only arrive on the queue.
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Entry | RawEntry):
                first = item

    def _commit(
        self, conn: sqlite3.Connection | None, batch: list[Entry]
    ) -> sqlite3.Connection | None:
        """Write ``batch`` in one transaction, retrying until it is committed. Returns
        the connection to use next time, None if :meth:`close` gave up meanwhile."""
        while True:
            try:
                if conn is None:
                    conn = connect(self.path, self.synchronous, self._busy_timeout_s)
                written, duplicates = self._write(conn, batch)
                break
            except sqlite3.Error as e:
                self.stats.commit_errors += 1
                self.error = e
                self.backpressure_event.set()
                self._log.error("journal_commit_failed", error=repr(e), records=len(batch))
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    if not isinstance(e, sqlite3.OperationalError):
                        conn.close()  # reconnect: the connection itself may be broken
                        conn = None
                if self._abandon.wait(self._retry_s):
                    if conn is not None:
                        conn.close()
                    return None
        self.error = None
        self.stats.committed += written
        self.stats.duplicates += duplicates
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        with self._lock:
            if not self._overflow and self._queue.qsize() <= self._low_water:
                self.backpressure_event.clear()
        with self._done:
            self._done_seq = batch[-1].seq
            self._done.notify_all()
            ready = [w for w in self._waiters if w.seq <= self._done_seq]
            self._waiters = [w for w in self._waiters if w.seq > self._done_seq]
        for w in ready:
            with contextlib.suppress(RuntimeError):  # the waiter's loop is already closed
                w.loop.call_soon_threadsafe(_resolve, w.future)
        return conn

    @staticmethod
    def _write(conn: sqlite3.Connection, batch: list[Entry]) -> tuple[int, int]:
        conn.execute("BEGIN IMMEDIATE")
        # The chain's tail is read inside the write lock, never cached: correct even if
        # another process appended meanwhile.
        row = conn.execute("SELECT id, hash FROM records ORDER BY id DESC LIMIT 1").fetchone()
        last_id, prev = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)
        written = duplicates = 0
        for e in batch:
            record_id = last_id + 1
            digest = link(prev, record_text(record_id, e.ts_ns, e.kind, e.text))
            try:
                conn.execute(
                    _INSERT,
                    (
                        record_id,
                        e.ts_ns,
                        e.kind,
                        e.text,
                        prev,
                        digest,
                        e.symbol,
                        e.client_id,
                        e.ref,
                    ),
                )
            except sqlite3.IntegrityError:
                if e.kind != rk.FILL:
                    raise
                duplicates += 1  # this fill is already journaled
                continue
            last_id, prev = record_id, digest
            written += 1
        conn.execute("COMMIT")
        return written, duplicates
