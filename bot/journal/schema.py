"""The journal's SQLite schema and its migrations.

``schema_version`` holds one row per migration applied (version, when, what); the
database's version is the largest. :func:`migrate` brings a database of any earlier
version (or an empty file) up to :data:`SCHEMA_VERSION`, one version per transaction,
so a crash mid-migration leaves the previous version intact. A database *newer* than
this code is refused rather than written to.

- v1: ``records`` (the hash-chained log: id, ts_ns, kind, payload, prev_hash, hash).
- v2: indexed copies of payload fields (``symbol``, ``client_id``, ``ref``), backfilled
  from the payloads; at most one fill per (client_id, trade id); per-kind views.
- v3: views over the kinds added since (``funding_payments``, ``option_episodes``).

The hash covers id, ts_ns, kind and payload only (see :mod:`bot.journal.chain`), so a
migration may add derived columns without touching the chain; verification checks
that those columns still match the payloads.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.errors import OperationalError

SCHEMA_VERSION = 3


class JournalSchemaError(OperationalError):
    """The file is not a journal this code can use (newer schema, failed migration)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY,"
        " applied_ts_ns INTEGER NOT NULL,"
        " description TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE records ("
        " id INTEGER PRIMARY KEY,"  # no AUTOINCREMENT: ids are assigned by the writer
        " ts_ns INTEGER NOT NULL,"
        " kind TEXT NOT NULL,"
        " payload TEXT NOT NULL,"
        " prev_hash TEXT NOT NULL,"
        " hash TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX records_kind_ts ON records(kind, ts_ns)")


# kind -> (view name, columns as "json path" or "column AS name")
_VIEWS: dict[str, tuple[str, Sequence[str]]] = {
    "start": ("config_fingerprints", ("version", "fingerprint", "mode", "settings")),
    "order": (
        "orders",
        (
            "client_id",
            "exchange_id",
            "symbol",
            "side",
            "price",
            "amount",
            "filled",
            "previous",
            "state",
            "event",
            "reason",
            "tag",
        ),
    ),
    "fill": (
        "fills",
        (
            "client_id",
            "exchange_id",
            "symbol",
            "side",
            "trade_id",
            "price",
            "amount",
            "fee_cost",
            "fee_currency",
            "liquidity",
            "venue_ts_ms",
            "source",
        ),
    ),
    "order_failed": ("order_failures", ("client_id", "symbol", "action", "error", "reason")),
    "balance": ("balances", ("source", "balances")),
    "episode": (
        "episodes",
        ("id AS episode_id", "symbol", "start_ts_ns", "end_ts_ns", "active", "trigger"),
    ),
    "guard": ("guard_events", ("guard", "level", "symbol", "reason", "numbers")),
    "market_state": ("market_states", ("symbol", "previous", "state", "reasons", "cause")),
    "trading_state": ("trading_states", ("previous", "state", "reason", "who")),
    "kill": (
        "kills",
        ("action", "previous", "state", "reason", "source", "who", "elapsed_ns"),
    ),
}


# Views added in v3, for the record kinds journaled since v2 (as _VIEWS).
_VIEWS_V3: dict[str, tuple[str, Sequence[str]]] = {
    "funding": (
        "funding_payments",
        ("symbol", "id AS payment_id", "amount", "currency", "time_ms", "source"),
    ),
    "option_episode": (
        "option_episodes",
        (
            "symbol",
            "underlying",
            "start_ms",
            "end_ms",
            "quotes",
            "refused",
            "fills",
            "filled_contracts",
            "peak_abs_net_delta",
            "peak_abs_vega",
            "peak_abs_gamma",
            "synthetic",
        ),
    ),
}


def _view_sql(kind: str, name: str, columns: Sequence[str]) -> str:
    selects = []
    for column in columns:
        path, _, alias = column.partition(" AS ")
        selects.append(f"json_extract(payload, '$.{path}') AS {alias or path}")
    extra = ", payload AS summary" if kind == "episode" else ""
    return (
        f"CREATE VIEW {name} AS SELECT id AS record_id, ts_ns, {', '.join(selects)}{extra}, hash"
        f" FROM records WHERE kind = '{kind}'"
    )


def _text(path: str) -> str:
    return (
        f"CASE WHEN json_type(payload, '$.{path}') = 'text'"
        f" THEN json_extract(payload, '$.{path}') END"
    )


def _v2(conn: sqlite3.Connection) -> None:
    for column in ("symbol", "client_id", "ref"):
        conn.execute(f"ALTER TABLE records ADD COLUMN {column} TEXT")
    # The same rule as records.derived_columns (only JSON strings are copied).
    conn.execute(
        f"UPDATE records SET symbol = {_text('symbol')}, client_id = {_text('client_id')},"
        f" ref = CASE kind WHEN 'fill' THEN {_text('trade_id')}"
        f" WHEN 'episode' THEN {_text('id')} END"
    )
    conn.execute("CREATE INDEX records_kind_symbol_ts ON records(kind, symbol, ts_ns)")
    conn.execute("CREATE INDEX records_client ON records(client_id, id)")
    try:
        conn.execute(
            "CREATE UNIQUE INDEX records_fill_once ON records(client_id, ref) WHERE kind = 'fill'"
        )
    except sqlite3.IntegrityError as e:
        raise JournalSchemaError(
            "the journal holds the same fill (client id and trade id) twice; remove the "
            "duplicate (keep the first) before upgrading"
        ) from e
    for kind, (name, columns) in _VIEWS.items():
        conn.execute(_view_sql(kind, name, columns))


def _v3(conn: sqlite3.Connection) -> None:
    for kind, (name, columns) in _VIEWS_V3.items():
        conn.execute(_view_sql(kind, name, columns))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "hash-chained records log", _v1),
    Migration(2, "indexed symbol/client_id/ref, one fill per trade id, per-kind views", _v2),
    Migration(3, "funding_payments and option_episodes views", _v3),
)
assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def current_version(conn: sqlite3.Connection) -> int:
    """0 for an empty database; raises for a file that has tables but is not a journal."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise JournalSchemaError(
                f"not a backstop journal (it has tables {sorted(tables)} but no schema_version)"
            )
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(
    conn: sqlite3.Connection,
    target: int = SCHEMA_VERSION,
    *,
    now_ns: Callable[[], int] = time.time_ns,
) -> tuple[int, int]:
    """Apply the migrations up to ``target``; returns (version before, version after).

    ``conn`` must be in autocommit mode (``isolation_level=None``): each migration runs
    in its own ``BEGIN IMMEDIATE`` transaction, which also keeps a second process from
    migrating the same file at the same time.
    """
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"no schema version {target}")
    before = current_version(conn)
    if before > SCHEMA_VERSION:
        raise JournalSchemaError(
            f"the journal has schema version {before}, newer than this backstop knows "
            f"({SCHEMA_VERSION}); upgrade backstop to use it"
        )
    version = before
    for migration in MIGRATIONS:
        if migration.version <= version or migration.version > target:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the lock: another process may have migrated meanwhile.
            if current_version(conn) >= migration.version:
                conn.execute("COMMIT")
                version = migration.version
                continue
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_version (version, applied_ts_ns, description) VALUES (?, ?, ?)",
                (migration.version, now_ns(), migration.description),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = migration.version
    return before, version


def columns(conn: sqlite3.Connection, table: str = "records") -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
