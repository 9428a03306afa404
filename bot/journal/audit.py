"""The audit trail: check the journal's hash chain, export it for review.

``backstop audit verify`` recomputes every record's hash from its content and the
previous record's hash (see :mod:`bot.journal.chain`) and names the first record where
the chain breaks: an edited record fails its own hash; a deleted one leaves a gap in
the ids and breaks the ``prev_hash`` of the record after it. Cutting off the *tail*
leaves a valid shorter chain, so the report gives the head (id and hash) to compare
with one noted earlier (``--anchor ID:HASH``).

``backstop audit export`` writes episodes, orders and fills (every record of those
kinds, with its id and hash, so each line can be checked against the journal) as JSON
lines or CSV, for whoever governs the reserve.

Exit statuses: 0 ok; 1 the chain is broken (an export is still written, with a warning);
2 usage (no journal there, a bad date or anchor).
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from bot.clock import NS_PER_SECOND
from bot.errors import UserError
from bot.journal import records as rk
from bot.journal.chain import GENESIS_HASH, link, record_text
from bot.journal.reader import JournalReader, open_readonly
from bot.journal.schema import SCHEMA_VERSION, JournalSchemaError, columns, current_version

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2

ExportFormat = Literal["jsonl", "csv"]
EXPORT_KINDS: tuple[str, ...] = (rk.EPISODE, rk.ORDER, rk.FILL)
DEFAULT_JOURNAL = "journal.sqlite"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    path: str
    checked: int
    """Records whose chain link was checked (all of them when ok)."""
    schema_version: int
    head_id: int | None
    head_hash: str | None
    broken_id: int | None = None
    """The first record where the chain breaks."""
    reason: str | None = None

    def summary(self) -> str:
        if self.ok:
            head = (
                f"head record {self.head_id} hash {self.head_hash}"
                if self.head_id is not None
                else "empty journal"
            )
            return f"ok: {self.checked} records chain correctly ({head})"
        return (
            f"BROKEN at record {self.broken_id}: {self.reason} ({self.checked} checked before it)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ts_iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_SECOND, tz=UTC).isoformat()


def verify(
    path: Path | str, *, anchor: tuple[int, str] | None = None, batch: int = 5000
) -> VerifyReport:
    """Check the whole chain (any schema version); never writes to the file."""
    path = Path(path)
    conn = open_readonly(path)
    try:
        version = current_version(conn)
        if version > SCHEMA_VERSION:
            raise JournalSchemaError(
                f"{path} has schema version {version}, newer than this backstop "
                f"({SCHEMA_VERSION}); verify it with a newer backstop"
            )
        derived = {"symbol", "client_id", "ref"} <= columns(conn)
        sql = "SELECT id, ts_ns, kind, payload, prev_hash, hash" + (
            ", symbol, client_id, ref" if derived else ""
        )
        cursor = conn.execute(sql + " FROM records ORDER BY id")
        expected_id, running, checked = 1, GENESIS_HASH, 0
        anchor_seen = anchor is None

        def broken(record_id: int, reason: str) -> VerifyReport:
            return VerifyReport(False, str(path), checked, version, None, None, record_id, reason)

        while rows := cursor.fetchmany(batch):
            for row in rows:
                record_id, ts_ns, kind, payload, prev_hash, digest = row[:6]
                if not isinstance(record_id, int) or record_id != expected_id:
                    if isinstance(record_id, int) and record_id > expected_id:
                        missing = (
                            f"record {expected_id}"
                            if record_id == expected_id + 1
                            else f"records {expected_id} to {record_id - 1}"
                        )
                        return broken(record_id, f"{missing} missing (deleted)")
                    return broken(record_id, f"unexpected id (expected {expected_id})")
                if prev_hash != running:
                    before = f"record {record_id - 1}'s hash" if record_id > 1 else "the genesis"
                    return broken(
                        record_id,
                        f"prev_hash does not match {before}: an earlier record was "
                        "edited and re-hashed, or replaced",
                    )
                if not isinstance(ts_ns, int) or not isinstance(kind, str):
                    return broken(record_id, "ts_ns or kind has the wrong type (edited)")
                if not isinstance(payload, str) or not isinstance(digest, str):
                    return broken(record_id, "payload or hash has the wrong type (edited)")
                if link(prev_hash, record_text(record_id, ts_ns, kind, payload)) != digest:
                    return broken(record_id, "hash does not match the record's content (edited)")
                if derived:
                    try:
                        body = json.loads(payload)
                    except ValueError:
                        return broken(record_id, "payload is not JSON")
                    if not isinstance(body, dict):
                        return broken(record_id, "payload is not a JSON object")
                    want = rk.derived_columns(kind, body)
                    for name, have, should in zip(
                        ("symbol", "client_id", "ref"), row[6:9], want, strict=True
                    ):
                        if have != should:
                            return broken(
                                record_id,
                                f"column {name} is {have!r} but the payload says {should!r} "
                                "(edited)",
                            )
                if anchor is not None and record_id == anchor[0]:
                    if digest != anchor[1]:
                        return broken(record_id, f"hash differs from the anchor {anchor[1]}")
                    anchor_seen = True
                running = digest
                expected_id = record_id + 1
                checked += 1
        if not anchor_seen:
            assert anchor is not None
            return broken(
                anchor[0], f"anchor record {anchor[0]} is gone: the journal was truncated"
            )
        head_id = expected_id - 1 if checked else None
        return VerifyReport(
            True, str(path), checked, version, head_id, running if checked else None
        )
    finally:
        conn.close()


# ---------------------------------------------------------------------------- export

CSV_COLUMNS: tuple[str, ...] = (
    "record_id",
    "ts",
    "ts_ns",
    "kind",
    "symbol",
    "client_id",
    "episode_id",
    "side",
    "price",
    "amount",
    "filled",
    "state",
    "event",
    "trade_id",
    "fee_cost",
    "fee_currency",
    "liquidity",
    "reason",
    "hash",
    "payload",
)


def _csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    payload: Mapping[str, Any] = row["payload"]
    out: dict[str, Any] = {}
    for key in CSV_COLUMNS:
        if key in row and key != "payload":
            value = row[key]
        elif key == "episode_id":
            value = payload.get("id") if row["kind"] == rk.EPISODE else None
        else:
            value = payload.get(key)
        # Nested values (an episode's trigger) are in the payload column only.
        out[key] = "" if value is None or isinstance(value, dict | list) else value
    out["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return out


def export_rows(
    reader: JournalReader,
    *,
    since: datetime | None = None,
    kinds: Iterable[str] = EXPORT_KINDS,
) -> Iterable[dict[str, Any]]:
    since_ns = None if since is None else int(since.timestamp() * NS_PER_SECOND)
    for r in reader.records(list(kinds), since_ns=since_ns):
        yield {
            "record_id": r.id,
            "ts": _ts_iso(r.ts_ns),
            "ts_ns": r.ts_ns,
            "kind": r.kind,
            "hash": r.hash,
            "payload": r.payload,
        }


def export(
    path: Path | str,
    out: TextIO,
    *,
    since: datetime | None = None,
    fmt: ExportFormat = "jsonl",
    kinds: Sequence[str] = EXPORT_KINDS,
) -> int:
    """Write the records of ``kinds`` at or after ``since`` to ``out``; returns how many.

    JSON lines: one object per record, ``{"record_id", "ts", "ts_ns", "kind", "hash",
    "payload"}``. CSV: :data:`CSV_COLUMNS`, the common fields flattened and the whole
    payload as JSON in the last column.
    """
    if fmt not in ("jsonl", "csv"):
        raise UserError(f"unknown export format {fmt!r}: use jsonl or csv")
    unknown = sorted(set(kinds) - rk.KINDS)
    if unknown:
        raise UserError(f"unknown record kind(s) {unknown}: choose from {sorted(rk.KINDS)}")
    n = 0
    with JournalReader(path) as reader:
        rows = export_rows(reader, since=since, kinds=kinds)
        if fmt == "jsonl":
            for row in rows:
                out.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")
                n += 1
        else:
            writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(_csv_row(row))
                n += 1
    return n


# ---------------------------------------------------------------------------- CLI


def parse_since(text: str) -> datetime:
    """ISO date or date-time; a time without offset is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--since {text!r} is not an ISO date or time (e.g. 2026-11-25 or 2026-11-25T14:00:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_anchor(text: str) -> tuple[int, str]:
    record_id, sep, digest = text.partition(":")
    if not sep or not record_id.isdigit() or len(digest) != 64:
        raise UserError(f"--anchor {text!r} must be ID:HASH (a record id and its 64-hex hash)")
    return int(record_id), digest.lower()


def add_journal_flags(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--state-dir",
        type=Path,
        default=Path("state"),
        help=f"the bot's state dir (journal at STATE_DIR/{DEFAULT_JOURNAL}; default: state)",
    )
    where.add_argument("--journal", type=Path, metavar="PATH", help="the journal file itself")


def add_audit_commands(subparsers: Any) -> None:
    """Register ``audit verify|export`` on ``parser.add_subparsers(dest="command")``."""
    audit = subparsers.add_parser(
        "audit",
        help="check the journal's hash chain, or export it for review",
        description="The journal is a hash chain: every record's hash covers its content "
        "and the previous record's hash, so an edit or deletion is detectable.",
    )
    sub = audit.add_subparsers(
        dest="audit_command", required=True, metavar="{verify,export,replay}"
    )
    p = sub.add_parser(
        "verify",
        help="check the whole chain; exit 1 naming the first broken record",
    )
    add_journal_flags(p)
    p.add_argument(
        "--anchor",
        metavar="ID:HASH",
        help="a head noted earlier (from a previous verify): also fail if it is gone",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = sub.add_parser(
        "export",
        help="export episodes, orders and fills as JSON lines or CSV",
    )
    add_journal_flags(p)
    p.add_argument("--since", metavar="ISO", help="only records at or after this time (UTC)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    p.add_argument(
        "--kinds",
        default=",".join(EXPORT_KINDS),
        help=f"comma-separated record kinds (default: {','.join(EXPORT_KINDS)})",
    )
    # Imported here: the replay loads the detector and strategies, verify/export do not.
    from bot.governance.replay import add_replay_command

    add_replay_command(sub)


def is_audit_command(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) == "audit"


def journal_path_from_args(args: argparse.Namespace) -> Path:
    journal: Path | None = getattr(args, "journal", None)
    if journal is not None:
        return journal
    state_dir: Path = getattr(args, "state_dir", None) or Path("state")
    return state_dir / DEFAULT_JOURNAL


def run_audit_command(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``audit verify`` or ``audit export``; returns the exit status."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    action = getattr(args, "audit_command", None)
    if action == "replay":
        from bot.governance.replay import run_replay_command

        return run_replay_command(args, out=stdout, err=stderr)
    path = journal_path_from_args(args)
    try:
        if action == "verify":
            anchor = parse_anchor(args.anchor) if args.anchor else None
            report = verify(path, anchor=anchor)
            if args.json:
                print(json.dumps(report.to_dict(), indent=2), file=stdout)
            else:
                print(f"{path}: {report.summary()}", file=stdout if report.ok else stderr)
            return EXIT_OK if report.ok else EXIT_BROKEN
        if action == "export":
            since = parse_since(args.since) if args.since else None
            kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
            report = verify(path)
            if args.out is not None:
                with args.out.open("w", encoding="utf-8", newline="") as f:
                    n = export(path, f, since=since, fmt=args.format, kinds=kinds)
                print(f"exported {n} records to {args.out}", file=stderr)
            else:
                export(path, stdout, since=since, fmt=args.format, kinds=kinds)
            if not report.ok:
                print(
                    f"WARNING: {path}: the journal's chain is {report.summary()}; the "
                    "export cannot be trusted past that record",
                    file=stderr,
                )
                return EXIT_BROKEN
            return EXIT_OK
    except UserError as e:
        print(f"backstop audit {action}: {e}", file=stderr)
        return EXIT_USAGE
    except JournalSchemaError as e:
        print(f"backstop audit {action}: {e}", file=stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:  # not a database, or damaged beyond reading
        print(f"backstop audit {action}: {path}: unreadable: {e}", file=stderr)
        return EXIT_BROKEN
    print("backstop audit: choose verify, export or replay", file=stderr)
    return EXIT_USAGE
