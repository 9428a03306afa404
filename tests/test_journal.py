"""The journal: schema migrations, non-blocking appends without loss, crash safety,
every event source recorded, and the recovery helpers against the real PaperVenue."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from order_fakes import OpenThrottle, RecordingSleep

from bot.book import OrderBook
from bot.clock import NS_PER_MS, ManualClock
from bot.episodes import Episode
from bot.feeds.events import BookSnapshot, Trade, levels
from bot.journal import (
    SCHEMA_VERSION,
    Journal,
    JournalClosed,
    JournalReader,
    JournalSchemaError,
    canonical_json,
    migrate,
    verify,
)
from bot.journal.chain import GENESIS_HASH, link, record_text
from bot.journal.reader import TERMINAL_STATE_VALUES
from bot.killswitch import KillRecord, KillState
from bot.logs import Logger, null_logger
from bot.markets import offline_markets
from bot.monitor import DepthSample
from bot.orders import OrderFilled, OrderManager, OrderManagerConfig, OrderNotice
from bot.orders.state import TERMINAL_STATES
from bot.risk.events import (
    Guard,
    GuardEvent,
    GuardLevel,
    MarketState,
    MarketStateChanged,
    TradingState,
    TradingStateChanged,
)
from bot.settings.loading import load_settings
from bot.venues.paper import PaperVenue
from strategies.base import InventoryView, Quote

BTC = "BTC/USDT"
REPO = Path(__file__).resolve().parent.parent


def fill(n: int, client_id: str = "bs1-t-1", **extra: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "symbol": BTC,
        "side": "buy",
        "trade_id": str(n),
        "price": 60_000.0 + n,
        "amount": 0.001,
        **extra,
    }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


@pytest.fixture
def journal(path: Path, clock: ManualClock) -> Iterator[Journal]:
    j = Journal(path, clock=clock)
    yield j
    j.close()


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


# ---------------------------------------------------------------------------- schema


def test_an_empty_file_is_migrated_to_the_current_schema_once(path: Path) -> None:
    j = Journal(path)
    assert (j.schema_before, j.schema_version) == (0, SCHEMA_VERSION)
    j.close()
    assert [r[0] for r in rows(path, "SELECT version FROM schema_version ORDER BY version")] == [
        1,
        2,
        3,
    ]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    views = {r[0] for r in rows(path, "SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert {"orders", "fills", "episodes", "guard_events", "kills", "balances"} <= views
    assert {"funding_payments", "option_episodes"} <= views

    again = Journal(path)
    assert (again.schema_before, again.schema_version) == (SCHEMA_VERSION, SCHEMA_VERSION)
    again.close()
    assert len(rows(path, "SELECT version FROM schema_version")) == SCHEMA_VERSION


def write_v1(path: Path, payloads: list[tuple[str, dict[str, Any]]]) -> None:
    """A version-1 journal as the v1 code wrote it (no symbol/client_id/ref columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == (0, 1)
    prev = GENESIS_HASH
    for i, (kind, payload) in enumerate(payloads, start=1):
        text = canonical_json(payload)
        digest = link(prev, record_text(i, 1000 + i, kind, text))
        conn.execute(
            "INSERT INTO records (id, ts_ns, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (i, 1000 + i, kind, text, prev, digest),
        )
        prev = digest
    conn.close()


async def test_a_v1_journal_is_upgraded_with_its_chain_intact_and_extended(path: Path) -> None:
    write_v1(path, [("fill", fill(1)), ("fill", fill(2)), ("guard", {"guard": "stale_book"})])
    assert "symbol" not in {r[1] for r in rows(path, "PRAGMA table_info(records)")}

    j = Journal(path)
    assert (j.schema_before, j.schema_version) == (1, SCHEMA_VERSION)
    j.append("fill", fill(3))
    await j.flush()
    j.close()

    # Backfilled columns, the new view, and one chain across both schema versions.
    assert rows(path, "SELECT id, symbol, client_id, ref FROM records WHERE kind = 'fill'") == [
        (1, BTC, "bs1-t-1", "1"),
        (2, BTC, "bs1-t-1", "2"),
        (4, BTC, "bs1-t-1", "3"),
    ]
    assert [r[0] for r in rows(path, "SELECT trade_id FROM fills ORDER BY record_id")] == [
        "1",
        "2",
        "3",
    ]
    report = verify(path)
    assert (report.ok, report.checked, report.schema_version) == (True, 5, SCHEMA_VERSION)


async def test_a_v2_journal_gains_views_over_its_funding_and_option_episodes(path: Path) -> None:
    """v3 adds views for the record kinds journaled since v2; records written under v2
    show in them, and so do later ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=2) == (0, 2)
    conn.close()
    j = Journal(path)  # v2 -> v3
    assert (j.schema_before, j.schema_version) == (2, SCHEMA_VERSION)
    funding = {
        "symbol": "BTC/USDT:USDT",
        "id": "7001",
        "amount": "-0.25",
        "currency": "USDT",
        "time_ms": 1_700_000_000_000,
        "source": "venue",
    }
    episode = {
        "symbol": "BTC-27DEC24-60000-C",
        "start_ms": 1_700_000_000_000,
        "end_ms": None,
        "quotes": 4,
        "refused": 1,
        "fills": 2,
        "filled_contracts": 0.2,
        "min_bid_vega": None,
        "min_ask_vega": 3.5,
        "baseline_vega": [10.0, None],
        "peak_abs_net_delta": 0.4,
        "peak_abs_vega": 12.5,
        "peak_abs_gamma": 0.001,
        "underlying": "BTC/USDT:USDT",
        "synthetic": True,
        "caps": {"max_abs_delta": 1.0},
    }
    j.append("funding", funding)
    j.append("option_episode", episode)
    await j.flush()
    j.close()
    assert rows(
        path, "SELECT symbol, payment_id, amount, currency, time_ms, source FROM funding_payments"
    ) == [("BTC/USDT:USDT", "7001", "-0.25", "USDT", 1_700_000_000_000, "venue")]
    assert rows(
        path,
        "SELECT symbol, underlying, start_ms, end_ms, quotes, refused, fills, filled_contracts,"
        " peak_abs_net_delta, peak_abs_vega, peak_abs_gamma, synthetic FROM option_episodes",
    ) == [
        (
            "BTC-27DEC24-60000-C",
            "BTC/USDT:USDT",
            1_700_000_000_000,
            None,
            4,
            1,
            2,
            0.2,
            0.4,
            12.5,
            0.001,
            1,  # SQLite's JSON true
        )
    ]
    assert verify(path).ok


def test_a_failed_migration_leaves_the_previous_version_intact(path: Path) -> None:
    write_v1(path, [("fill", fill(1)), ("fill", fill(1))])  # the same fill twice

    with pytest.raises(JournalSchemaError, match="same fill"):
        Journal(path)

    assert rows(path, "SELECT MAX(version) FROM schema_version") == [(1,)]
    assert "symbol" not in {r[1] for r in rows(path, "PRAGMA table_info(records)")}
    assert verify(path).ok


def test_a_newer_journal_or_a_foreign_database_is_refused(tmp_path: Path, path: Path) -> None:
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99, 0, 'from the future')")
    conn.commit()
    conn.close()
    with pytest.raises(JournalSchemaError, match="newer"):
        Journal(path)
    with pytest.raises(JournalSchemaError):
        JournalReader(path)

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(JournalSchemaError, match="not a backstop journal"):
        Journal(other)


# ---------------------------------------------------------------------------- chain encoding

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_the_hashed_text_is_the_canonical_json_of_the_record(payload: dict[str, Any]) -> None:
    text = canonical_json(payload)

    assert record_text(7, 123, "fill", text) == canonical_json(
        {"ts_ns": 123, "payload": payload, "kind": "fill", "id": 7}
    )
    assert canonical_json(json.loads(text)) == text  # stable: parsing it back changes nothing
    assert text.isascii()
    assert " " not in canonical_json({"b": 1, "a": [1.5, 2]})


def test_canonical_json_sorts_keys_writes_floats_as_repr_and_names_non_finite_floats() -> None:
    assert canonical_json({"b": 0.1, "a": 1e-7, "c": 1.0}) == '{"a":1e-07,"b":0.1,"c":1.0}'
    text = canonical_json({"x": float("inf"), "y": [float("-inf"), float("nan")], 2: "k"})
    assert json.loads(text) == {"x": "inf", "y": ["-inf", "nan"], "2": "k"}


# ---------------------------------------------------------------------------- appending


async def test_flush_returns_once_every_record_is_readable_by_another_connection(
    journal: Journal, path: Path
) -> None:
    for n in range(500):
        assert journal.append("fill", fill(n))
    await journal.flush()

    assert journal.pending == 0
    assert rows(path, "SELECT COUNT(*) FROM records")[0][0] == 500
    assert journal.stats.committed == 500
    assert journal.stats.batches < 500  # group commits
    await journal.flush()  # nothing pending: returns at once


async def test_the_same_fill_is_journaled_once(journal: Journal) -> None:
    journal.append("fill", fill(1))
    journal.append("fill", fill(2))
    journal.append("fill", fill(1, price=1.0))  # a replay of trade 1
    journal.append("fill", fill(1, client_id="bs1-t-2"))  # same trade id, other order
    await journal.flush()

    assert [(f["client_id"], f["trade_id"]) for f in journal.reader.fills()] == [
        ("bs1-t-1", "1"),
        ("bs1-t-1", "2"),
        ("bs1-t-2", "1"),
    ]
    assert journal.stats.duplicates == 1


class _HeldLock:
    """Another connection holding the database's write lock: the writer cannot commit."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


async def test_a_full_queue_sets_backpressure_and_loses_nothing(path: Path) -> None:
    j = Journal(path, queue_size=4, max_batch=2)
    held = _HeldLock(path)  # a writer slower than the appends
    accepted = [j.append("fill", fill(n)) for n in range(50)]

    # The writer holds at most one batch, the queue four: the rest waits in the overflow.
    assert accepted[:4] == [True] * 4
    assert accepted.count(False) >= 50 - 4 - 2
    assert j.backpressure
    assert j.stats.max_overflow >= 44

    held.release()
    await j.flush()
    assert not j.backpressure
    assert [f["trade_id"] for f in j.reader.fills()] == [str(n) for n in range(50)]  # in order
    j.close()
    assert verify(path).ok


def _capturing_logger(event_name: str, seen: threading.Event) -> Logger:
    def processor(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if event.get("event") == event_name:
            seen.set()
        raise structlog.DropEvent

    logger: Logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[processor],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return logger


async def test_failed_commits_are_retried_until_they_succeed(path: Path) -> None:
    failed = threading.Event()
    j = Journal(
        path,
        busy_timeout_s=0.01,
        retry_s=0.01,
        log=_capturing_logger("journal_commit_failed", failed),
    )
    held = _HeldLock(path)
    for n in range(10):
        j.append("fill", fill(n))
    assert await asyncio.to_thread(failed.wait, 10)  # the bound only guards a hang
    assert j.backpressure  # do not quote while the journal cannot write
    assert j.stats.commit_errors >= 1

    held.release()
    await j.flush()
    assert j.error is None
    assert not j.backpressure
    assert len(j.reader.fills()) == 10
    j.close()
    assert verify(path).ok


async def test_close_is_idempotent_marks_a_clean_shutdown_and_refuses_later_records(
    path: Path,
) -> None:
    j = Journal(path)
    assert j.previous_shutdown_clean is None  # nothing journaled yet
    j.append("start", {"version": "test"})
    assert await j.aclose()
    assert j.close()
    with pytest.raises(JournalClosed):
        j.append("fill", fill(1))

    again = Journal(path)
    assert again.previous_shutdown_clean is True
    again.close()


def test_flush_sync_for_code_outside_the_event_loop(journal: Journal) -> None:
    journal.append("fill", fill(1))
    assert journal.flush_sync(timeout=10)
    assert journal.reader.count("fill") == 1


# ---------------------------------------------------------------------------- sources


def _inventory() -> InventoryView:
    return InventoryView(
        base=1.0,
        quote=60_000.0,
        start_base=1.0,
        start_quote=60_000.0,
        net_base=0.0,
        avg_cost=None,
        realised_pnl=0.0,
        unrealised_pnl=0.0,
        fees_quote=0.0,
        committed_quote=0.0,
        mid=60_000.0,
    )


async def test_every_event_source_is_recorded_in_one_line_each(
    journal: Journal, clock: ManualClock
) -> None:
    t = clock.now_ns()
    episode = Episode(
        id=f"{BTC}@{t}",
        symbol=BTC,
        start_ts_ns=t,
        trigger=None,
        inventory_before=_inventory(),
        depth_before=(1.0, float("inf")),
        baseline_before=(None, 3.0),
    )
    journal.record(episode.to_dict())
    journal.record(
        GuardEvent(
            t, Guard.STALE_BOOK, GuardLevel.PAUSE, BTC, "STALE_BOOK: age_s=6", {"age_s": 6.0}
        )
    )
    journal.record(
        MarketStateChanged(
            t, BTC, MarketState.ACTIVE, MarketState.PAUSED, {"stale_book": "x"}, "GUARD: g"
        )
    )
    journal.record(
        TradingStateChanged(t, TradingState.ACTIVE, TradingState.HALTED, "KILL", "operator")
    )
    journal.record(
        KillRecord(
            t, "trip", KillState.ARMED, KillState.TRIPPED_CANCELLING, "OP: x", "operator", "me"
        )
    )
    journal.record_balance(
        {"info": {}, "BTC": {"free": "0.5", "used": "0.1", "total": "0.6"}, "free": {}}
    )
    episode.end_ts_ns = t + 5
    journal.record_episode(episode.to_dict())
    await journal.flush()

    r = journal.reader
    assert [rec.kind for rec in r.records()] == [
        "episode",
        "guard",
        "market_state",
        "trading_state",
        "kill",
        "balance",
        "episode",
    ]
    assert r.query("SELECT guard, level, symbol FROM guard_events") == [
        ("stale_book", "pause", BTC)
    ]
    assert r.query("SELECT action, source, who FROM kills") == [("trip", "operator", "me")]
    assert r.query("SELECT balances FROM balances") == [
        ('{"BTC":{"free":0.5,"total":0.6,"used":0.1}}',)
    ]
    (final,) = r.episodes()
    assert (final["id"], final["end_ts_ns"], final["active"]) == (episode.id, t + 5, False)
    assert final["depth"]["before"] == [1.0, "inf"]  # JSON has no infinity
    assert [x[0] for x in r.query("SELECT episode_id FROM episodes")] == [episode.id] * 2
    with pytest.raises(TypeError):
        journal.record(object())


def test_the_start_record_fingerprints_the_settings_without_their_secrets(
    journal: Journal, tmp_path: Path
) -> None:
    secret = "s3cr3t-value-never-stored"
    env = {"BACKSTOP_EXCHANGE__API_KEY": "key-never-stored", "BACKSTOP_EXCHANGE__SECRET": secret}
    settings_a = load_settings(overrides={"state_dir": str(tmp_path)}, env=env)
    settings_b = load_settings(overrides={"state_dir": str(tmp_path)}, env={})
    settings_c = load_settings(overrides={"state_dir": str(tmp_path / "x")}, env=env)
    for s in (settings_a, settings_b, settings_c):
        journal.record_start(s)
    assert journal.flush_sync(timeout=10)

    texts = [r[0] for r in journal.reader.query("SELECT payload FROM records")]
    assert not any(secret in t or "key-never-stored" in t for t in texts)
    a, b, c = (json.loads(t) for t in texts)
    assert a["fingerprint"] == b["fingerprint"]  # secrets are not configuration
    assert a["fingerprint"] != c["fingerprint"]
    assert a["credentials"] == {"api_key": True, "password": False, "secret": True}
    assert a["version"]
    assert a["settings"]["state_dir"] == str(tmp_path)


# ---------------------------------------------------------------------------- crash safety

_CHILD = """
import asyncio, sys
from bot.journal import Journal

async def main(path, start):
    j = Journal(path)
    j.append("start", {"version": "crash-test"})
    n = start
    while True:
        for _ in range(50):
            j.append("fill", {"client_id": "bs1-k-1", "symbol": "BTC/USDT", "side": "buy",
                              "trade_id": str(n), "price": 100.0, "amount": 0.5})
            n += 1
        await j.flush()
        print(n, flush=True)  # acknowledged: everything below n is committed

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _burst_then_sigkill(path: Path, start: int, acks: int) -> int:
    """Run the child until it acknowledged ``acks`` bursts, SIGKILL it mid-burst;
    returns the last count it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    for _ in range(acks):
        line = proc.stdout.readline()
        assert line.endswith("\n"), f"the child died: {proc.wait()}"
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # acknowledgements printed before the kill landed
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    printed = [line for line in (line + rest).split("\n") if line]
    return int(printed[-1])


def test_sigkill_mid_burst_loses_no_acknowledged_record(path: Path) -> None:
    path.parent.mkdir(parents=True)
    acknowledged = _burst_then_sigkill(path, 0, acks=10)
    committed = rows(path, "SELECT COUNT(*) FROM records WHERE kind = 'fill'")[0][0]
    assert committed >= acknowledged

    # Restart on the same journal, append, and kill again.
    again = _burst_then_sigkill(path, committed, acks=10)
    j = Journal(path)
    assert j.previous_shutdown_clean is False  # the last session did not close
    trade_ids = [int(f["trade_id"]) for f in j.reader.fills()]
    j.close()

    assert len(trade_ids) >= again
    assert trade_ids == list(range(len(trade_ids)))  # no gap, no duplicate, no torn record
    report = verify(path)
    assert report.ok, report.summary()


# ---------------------------------------------------------------------------- recovery

BIDS = [[59_990.0, 1.0], [59_980.0, 2.0]]
ASKS = [[60_010.0, 1.0], [60_020.0, 2.0]]


class Paper:
    """A PaperVenue on a fixed book, an OrderManager on it, the journal subscribed."""

    def __init__(self, clock: ManualClock, journal: Journal, seed: int = 9) -> None:
        markets = offline_markets("binance")
        assert markets is not None
        self.clock = clock
        self.venue = PaperVenue(
            markets={BTC: markets[BTC]},
            balances={"USDT": 10_000.0, "BTC": 0.1},
            clock=clock,
            latency_ms=0.0,
        )
        self.book = OrderBook(BTC, clock=clock)
        now = clock.now_ns()
        assert self.book.apply(BookSnapshot(BTC, now, levels(BIDS), levels(ASKS))) is None
        sample = DepthSample(
            ts_ns=now,
            best_bid=BIDS[0][0],
            best_ask=ASKS[0][0],
            mid=60_000.0,
            spread_bps=0.0,
            bands_bps=(),
            depth=np.zeros((2, 0, 2)),
            buy_slippage_bps=None,
            sell_slippage_bps=None,
        )
        self.venue.on_sample(BTC, self.book, sample)
        self.om = self.manager(journal, seed)

    def manager(self, journal: Journal, seed: int) -> OrderManager:
        om = OrderManager(
            self.venue,
            clock=self.clock,
            rng=random.Random(seed),
            log=null_logger(),
            config=OrderManagerConfig(client_id_prefix="bs1"),
            throttler=OpenThrottle(),
            sleep=RecordingSleep(self.clock),
            known_client_ids=journal.known_client_ids,
        )
        om.subscribe(journal.order_observer(om.get))
        return om

    async def quote(self, *quotes: Quote) -> None:
        self.om.sync_quotes(BTC, quotes)
        await self.om.drain()

    def trade(self, price: float, side: str) -> None:
        self.clock.advance(10 * NS_PER_MS)
        self.venue.on_trade(Trade(BTC, self.clock.now_ns(), price, 5.0, side, "p1"))  # type: ignore[arg-type]

    async def fill_seen_by_the_manager(self, price: float, side: str) -> None:
        filled = asyncio.Event()

        def on(n: OrderNotice) -> None:
            if isinstance(n, OrderFilled):
                filled.set()

        unsubscribe = self.om.subscribe(on)
        watcher = asyncio.create_task(self.om.watch(BTC))
        for _ in range(5):  # a few loop turns: the watcher subscribes (no time passes)
            await asyncio.sleep(0)
        self.trade(price, side)
        await asyncio.wait_for(filled.wait(), timeout=5)  # the bound only guards a hang
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        unsubscribe()

    async def balances(self) -> dict[str, float]:
        b = await self.venue.fetch_balance()
        return {ccy: float(b[ccy]["total"]) for ccy in ("BTC", "USDT")}


def test_the_terminal_states_match_the_order_state_machine() -> None:
    assert frozenset(s.value for s in TERMINAL_STATES) == TERMINAL_STATE_VALUES


async def test_orders_open_at_a_crash_are_known_and_adopted_after_restart(
    clock: ManualClock, path: Path
) -> None:
    journal = Journal(path, clock=clock)
    paper = Paper(clock, journal)
    await paper.quote(Quote(BTC, "buy", 59_000.0, 0.01), Quote(BTC, "sell", 61_000.0, 0.01))
    await paper.quote(Quote(BTC, "sell", 61_000.0, 0.01))  # the bid is cancelled
    await journal.flush()
    (bid_id,) = [
        o["client_id"] for o in journal.reader.order_states().values() if o["side"] == "buy"
    ]
    (ask,) = journal.open_orders_at_crash()
    assert (ask["side"], ask["price"], ask["amount"], ask["state"]) == (
        "sell",
        61_000.0,
        0.01,
        "open",
    )
    journal.close()  # the process dies here; the ask still rests on the venue

    restarted = Journal(path, clock=clock)
    assert set(restarted.known_client_ids()) == {bid_id, ask["client_id"]}
    om = paper.manager(restarted, seed=10)  # a new session: new client-id stem
    report = await om.reconcile(BTC)

    assert report.adopted == [ask["client_id"]]  # known from the journal, not a stray
    assert report.canceled == []
    await restarted.flush()
    assert restarted.reader.order_states()[ask["client_id"]]["event"] == "adopted"
    restarted.close()


async def test_fills_missed_in_a_crash_are_reconciled_and_inventory_matches_the_venue(
    clock: ManualClock, path: Path
) -> None:
    journal = Journal(path, clock=clock)
    paper = Paper(clock, journal)
    before = await paper.balances()
    await paper.quote(Quote(BTC, "buy", 59_990.0, 0.01), Quote(BTC, "sell", 60_010.0, 0.01))
    await paper.fill_seen_by_the_manager(59_980.0, "sell")  # our bid fills, journaled
    await journal.flush()
    (seen,) = journal.reader.fills(BTC)
    assert journal.last_fill_ts(BTC) == seen["venue_ts_ms"]

    # The bot is down: our ask fills, and so does an order of ours the journal never
    # heard of (its create was in flight at the crash).
    paper.trade(60_020.0, "buy")
    await paper.venue.create_order(
        BTC, "limit", "sell", 0.02, 60_015.0, {"clientOrderId": "bs1-lost-1"}
    )
    paper.trade(60_020.0, "buy")
    await journal.aclose()

    restarted = Journal(path, clock=clock)
    added = await restarted.reconcile_fills(paper.venue, BTC, "bs1")

    ask_id = next(o for o in restarted.reader.order_states().values() if o["side"] == "sell")
    assert sorted((f["client_id"], f["amount"], f["source"]) for f in added) == sorted(
        [(ask_id["client_id"], 0.01, "reconcile"), ("bs1-lost-1", 0.02, "reconcile")]
    )
    assert await restarted.reconcile_fills(paper.venue, BTC, "bs1") == []  # idempotent
    after = await paper.balances()
    position = restarted.reader.position(BTC)
    assert position["BTC"] == pytest.approx(after["BTC"] - before["BTC"], abs=1e-12)
    assert position["USDT"] == pytest.approx(after["USDT"] - before["USDT"], abs=1e-9)
    restarted.close()
    assert verify(path).ok


async def test_reconcile_fills_leaves_out_orders_without_our_prefix(
    clock: ManualClock, path: Path
) -> None:
    journal = Journal(path, clock=clock)
    paper = Paper(clock, journal)
    await paper.venue.create_order(
        BTC, "limit", "sell", 0.01, 60_015.0, {"clientOrderId": "bs10-other-bot-1"}
    )
    await paper.venue.create_order(
        BTC, "limit", "sell", 0.01, 60_016.0, {"clientOrderId": "manual"}
    )
    paper.trade(60_020.0, "buy")
    assert len(await paper.venue.fetch_my_trades(BTC)) == 2

    assert await journal.reconcile_fills(paper.venue, BTC, "bs1") == []
    assert journal.reader.count("fill") == 0
    journal.close()
