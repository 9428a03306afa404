"""Reading the journal: records in order, and the views the reports and recovery need.

A :class:`JournalReader` opens the file read-only (``mode=ro``), so it never migrates,
locks out or changes the journal; with WAL it sees every committed record, also while
the daemon is writing. It needs schema version 2 or later (the indexed columns);
:func:`bot.journal.audit.verify` reads any version.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bot.errors import UserError
from bot.journal import records as rk
from bot.journal.schema import SCHEMA_VERSION, JournalSchemaError, current_version

# bot.orders.state.TERMINAL_STATES by value (importing bot.orders loads ccxt; a test
# keeps the two in step).
TERMINAL_STATE_VALUES = frozenset({"filled", "canceled", "rejected"})


class JournalNotFound(UserError):
    """No journal at that path."""


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    ts_ns: int
    kind: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


def open_readonly(path: Path | str) -> sqlite3.Connection:
    path = Path(path)
    if not path.is_file():
        raise JournalNotFound(f"no journal at {path}")
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute("PRAGMA query_only = ON")
    return conn


class JournalReader:
    """Read-only queries. Safe to share between threads (calls are serialised)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = open_readonly(self.path)
        self._lock = threading.Lock()
        try:
            version = current_version(self._conn)
        except BaseException:
            self._conn.close()
            raise
        if version < 2 or version > SCHEMA_VERSION:
            self._conn.close()
            raise JournalSchemaError(
                f"{self.path} has journal schema version {version}; this reader needs 2 to "
                f"{SCHEMA_VERSION} (an older journal is upgraded when the bot opens it)"
            )
        self.schema_version = version

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ raw access

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, tuple(params)))

    def records(
        self,
        kinds: Iterable[str] | None = None,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        symbol: str | None = None,
        after_id: int = 0,
        batch: int = 1000,
    ) -> Iterator[Record]:
        """Records in chain order (by id), filtered; fetched ``batch`` at a time."""
        where = ["id > ?"]
        params: list[Any] = []
        wanted = sorted(set(kinds)) if kinds is not None else None
        if wanted is not None:
            where.append(f"kind IN ({','.join('?' * len(wanted))})")
            params += wanted
        if since_ns is not None:
            where.append("ts_ns >= ?")
            params.append(since_ns)
        if until_ns is not None:
            where.append("ts_ns < ?")
            params.append(until_ns)
        if symbol is not None:
            where.append("symbol = ?")
            params.append(symbol)
        sql = (
            "SELECT id, ts_ns, kind, payload, prev_hash, hash FROM records WHERE "
            + " AND ".join(where)
            + " ORDER BY id LIMIT ?"
        )
        last = after_id
        while True:
            rows = self.query(sql, [last, *params, batch])
            for row in rows:
                yield Record(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            row = self.query("SELECT COUNT(*) FROM records")[0]
        else:
            row = self.query("SELECT COUNT(*) FROM records WHERE kind = ?", (kind,))[0]
        return int(row[0])

    def head(self) -> tuple[int, str] | None:
        """(id, hash) of the last record, None when empty."""
        rows = self.query("SELECT id, hash FROM records ORDER BY id DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    # ------------------------------------------------------------------ typed views

    def fills(
        self,
        symbol: str | None = None,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> list[dict[str, Any]]:
        """Fill payloads (each with ``record_id`` and ``ts_ns``), in journal order."""
        return [
            {"record_id": r.id, "ts_ns": r.ts_ns, **r.payload}
            for r in self.records([rk.FILL], symbol=symbol, since_ns=since_ns, until_ns=until_ns)
        ]

    def orders(
        self,
        symbol: str | None = None,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every order state change, in journal order."""
        return [
            {"record_id": r.id, "ts_ns": r.ts_ns, **r.payload}
            for r in self.records([rk.ORDER], symbol=symbol, since_ns=since_ns, until_ns=until_ns)
        ]

    def episodes(
        self, symbol: str | None = None, *, since_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """The latest record of each episode (its final state if it ended), by start.

        ``since_ns`` keeps episodes still active at or ending after that time.
        """
        latest: dict[str, dict[str, Any]] = {}
        for r in self.records([rk.EPISODE], symbol=symbol):
            ep_id = str(r.payload.get("id", r.id))
            latest[ep_id] = r.payload
        episodes = list(latest.values())
        if since_ns is not None:
            episodes = [
                e for e in episodes if e.get("end_ts_ns") is None or int(e["end_ts_ns"]) >= since_ns
            ]
        return sorted(episodes, key=lambda e: (int(e.get("start_ts_ns") or 0), str(e.get("id"))))

    def order_states(self, symbol: str | None = None) -> dict[str, dict[str, Any]]:
        """Each client id's latest journaled state change (with the first known side,
        price and amount filled in if the latest lacks them)."""
        sql = (
            "SELECT client_id, payload FROM records WHERE kind = ? AND client_id IS NOT NULL"
            + (" AND symbol = ?" if symbol is not None else "")
            + " ORDER BY id"
        )
        params: list[Any] = [rk.ORDER] + ([symbol] if symbol is not None else [])
        states: dict[str, dict[str, Any]] = {}
        for client_id, text in self.query(sql, params):
            payload = json.loads(text)
            before = states.get(client_id)
            if before is not None:
                for key in ("side", "price", "amount", "tag", "exchange_id"):
                    if payload.get(key) is None and before.get(key) is not None:
                        payload[key] = before[key]
            states[client_id] = payload
        return states

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Orders whose latest journaled state is not terminal (oldest change first)."""
        return [
            p
            for p in self.order_states(symbol).values()
            if p.get("state") not in TERMINAL_STATE_VALUES
        ]

    def client_ids(self) -> set[str]:
        rows = self.query("SELECT DISTINCT client_id FROM records WHERE client_id IS NOT NULL")
        return {str(r[0]) for r in rows}

    def has_fill(self, client_id: str, trade_id: str) -> bool:
        rows = self.query(
            "SELECT 1 FROM records WHERE kind = 'fill' AND client_id = ? AND ref = ? LIMIT 1",
            (client_id, trade_id),
        )
        return bool(rows)

    def last_fill_ms(self, symbol: str) -> int | None:
        """Venue timestamp (ms) of the latest journaled fill on ``symbol`` (our clock's
        stamp where the venue gave none)."""
        rows = self.query(
            "SELECT MAX(COALESCE(json_extract(payload, '$.venue_ts_ms'), ts_ns / 1000000))"
            " FROM records WHERE kind = 'fill' AND symbol = ?",
            (symbol,),
        )
        value = rows[0][0] if rows else None
        return None if value is None else int(value)

    def exchange_ids(self, symbol: str | None = None) -> dict[str, str]:
        """Exchange order id -> client id, from the order records."""
        sql = (
            "SELECT DISTINCT json_extract(payload, '$.exchange_id'), client_id FROM records"
            " WHERE kind = 'order' AND client_id IS NOT NULL"
            " AND json_extract(payload, '$.exchange_id') IS NOT NULL"
            + (" AND symbol = ?" if symbol is not None else "")
        )
        rows = self.query(sql, [symbol] if symbol is not None else [])
        return {str(r[0]): str(r[1]) for r in rows}

    def position(self, symbol: str) -> dict[str, float]:
        """What the journaled fills did to the account: currency -> net change, fees
        included (buys add base and spend quote; fees are taken in their currency)."""
        base, _, quote = symbol.split(":")[0].partition("/")
        totals: dict[str, float] = {base: 0.0, quote: 0.0}
        for f in self.fills(symbol):
            amount, price = float(f["amount"]), float(f["price"])
            sign = 1.0 if f.get("side") == "buy" else -1.0
            totals[base] += sign * amount
            totals[quote] -= sign * amount * price
            fee, ccy = f.get("fee_cost"), f.get("fee_currency")
            if fee and ccy:
                totals[ccy] = totals.get(ccy, 0.0) - float(fee)
        return totals

    def sessions(self) -> list[dict[str, Any]]:
        """Each ``start`` record, with ``clean`` set when a ``close`` follows it."""
        out: list[dict[str, Any]] = []
        for r in self.records([rk.START, rk.CLOSE]):
            if r.kind == rk.START:
                out.append({"record_id": r.id, "ts_ns": r.ts_ns, "clean": False, **r.payload})
            elif out:
                out[-1]["clean"] = True
        return out
