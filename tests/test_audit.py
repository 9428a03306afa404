"""The audit trail: the hash chain catches edits and deletions and names the first
broken record; exports parse back; the ``backstop audit`` commands' exit statuses."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.clock import NS_PER_SECOND, ManualClock
from bot.journal import Journal, add_audit_commands, export, run_audit_command, verify
from bot.journal.audit import CSV_COLUMNS
from bot.journal.chain import link, record_text

BTC = "BTC/USDT"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * NS_PER_SECOND


def order(n: int, state: str = "open") -> dict[str, object]:
    return {
        "client_id": f"bs1-a-{n}",
        "symbol": BTC,
        "side": "buy",
        "price": 59_000.0 + n,
        "amount": 0.01,
        "filled": 0.0,
        "state": state,
        "event": "accepted",
        "reason": "",
    }


def fill(n: int) -> dict[str, object]:
    return {
        "client_id": f"bs1-a-{n}",
        "symbol": BTC,
        "side": "buy",
        "trade_id": f"t{n}",
        "price": 59_000.0 + n,
        "amount": 0.01,
        "fee_cost": 1e-05,
        "fee_currency": "BTC",
        "liquidity": "maker",
    }


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A journal of 10 records, one a minute from T0: orders, fills, an episode, a guard."""
    clock = ManualClock(T0_NS)
    j = Journal(tmp_path / "journal.sqlite", clock=clock)
    for n in range(3):
        j.append("order", order(n))
        clock.advance(60 * NS_PER_SECOND)
        j.append("fill", fill(n))
        clock.advance(60 * NS_PER_SECOND)
    j.append("episode", {"id": f"{BTC}@1", "symbol": BTC, "start_ts_ns": 1, "trigger": {"a": 1}})
    clock.advance(60 * NS_PER_SECOND)
    j.append("guard", {"guard": "stale_book", "level": "pause", "symbol": BTC})
    clock.advance(60 * NS_PER_SECOND)
    j.append("order", order(0, state="canceled"))
    clock.advance(60 * NS_PER_SECOND)
    assert j.close()  # + the close record: 10 records
    return tmp_path


def journal_of(state_dir: Path) -> Path:
    return state_dir / "journal.sqlite"


def sql(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, params)
    conn.commit()
    conn.close()


def test_an_untouched_journal_verifies_and_reports_its_head(state_dir: Path) -> None:
    report = verify(journal_of(state_dir))

    assert (report.ok, report.checked, report.head_id) == (True, 10, 10)
    conn = sqlite3.connect(journal_of(state_dir))
    assert report.head_hash == conn.execute("SELECT hash FROM records WHERE id = 10").fetchone()[0]
    conn.close()
    assert "10 records" in report.summary()


def test_an_edited_record_is_named(state_dir: Path) -> None:
    path = journal_of(state_dir)
    sql(path, "UPDATE records SET payload = replace(payload, '0.01', '0.02') WHERE id = 4")

    report = verify(path)
    assert (report.ok, report.broken_id, report.checked) == (False, 4, 3)
    assert "edited" in (report.reason or "")


@pytest.mark.parametrize("column", ["ts_ns", "kind", "symbol"])
def test_an_edit_of_any_column_is_caught(state_dir: Path, column: str) -> None:
    path = journal_of(state_dir)
    value = {"ts_ns": 1, "kind": "note", "symbol": "ETH/USDT"}[column]
    sql(path, f"UPDATE records SET {column} = ? WHERE id = 6", (value,))

    report = verify(path)
    assert (report.ok, report.broken_id) == (False, 6)


def test_an_edited_record_whose_hash_was_recomputed_breaks_the_next_link(state_dir: Path) -> None:
    path = journal_of(state_dir)
    conn = sqlite3.connect(path)
    ts_ns, kind, payload, prev = conn.execute(
        "SELECT ts_ns, kind, payload, prev_hash FROM records WHERE id = 4"
    ).fetchone()
    forged = payload.replace("0.01", "0.02")
    conn.execute(
        "UPDATE records SET payload = ?, hash = ? WHERE id = 4",
        (forged, link(prev, record_text(4, ts_ns, kind, forged))),
    )
    conn.commit()
    conn.close()

    report = verify(path)
    assert (report.ok, report.broken_id) == (False, 5)
    assert "prev_hash does not match record 4" in (report.reason or "")


@pytest.mark.parametrize(("deleted", "named"), [(1, 2), (5, 6), ((3, 4), 5)])
def test_a_deleted_record_is_named_by_the_gap_it_leaves(
    state_dir: Path, deleted: int | tuple[int, int], named: int
) -> None:
    path = journal_of(state_dir)
    ids = deleted if isinstance(deleted, tuple) else (deleted,)
    for record_id in ids:
        sql(path, "DELETE FROM records WHERE id = ?", (record_id,))

    report = verify(path)
    assert (report.ok, report.broken_id) == (False, named)
    assert "missing (deleted)" in (report.reason or "")


def test_a_cut_off_tail_is_caught_by_an_anchor_noted_earlier(state_dir: Path) -> None:
    path = journal_of(state_dir)
    head = verify(path)
    assert head.head_id is not None
    assert head.head_hash is not None
    sql(path, "DELETE FROM records WHERE id >= 9")

    assert verify(path).ok  # a shorter chain is still a chain...
    report = verify(path, anchor=(head.head_id, head.head_hash))
    assert (report.ok, report.broken_id) == (False, 10)
    assert "truncated" in (report.reason or "")


# ---------------------------------------------------------------------------- export


def test_jsonl_export_parses_back_to_the_journaled_records(state_dir: Path) -> None:
    out = io.StringIO()
    n = export(journal_of(state_dir), out, fmt="jsonl")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(lines) == 8  # episodes, orders and fills only
    assert [r["kind"] for r in lines] == ["order", "fill"] * 3 + ["episode", "order"]
    assert lines[1]["payload"] == fill(0)
    assert lines[1]["ts"] == "2026-11-25T12:01:00+00:00"
    conn = sqlite3.connect(journal_of(state_dir))
    assert [r["hash"] for r in lines] == [
        h for (h,) in conn.execute("SELECT hash FROM records WHERE kind != 'guard' AND id < 10")
    ]
    conn.close()


def test_csv_export_parses_back_with_the_same_payloads_and_respects_since(
    state_dir: Path,
) -> None:
    since = datetime(2026, 11, 25, 12, 3, tzinfo=UTC)
    as_jsonl, as_csv = io.StringIO(), io.StringIO()
    export(journal_of(state_dir), as_jsonl, fmt="jsonl", since=since)
    export(journal_of(state_dir), as_csv, fmt="csv", since=since)

    expected = [json.loads(line) for line in as_jsonl.getvalue().splitlines()]
    rows = list(csv.DictReader(io.StringIO(as_csv.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["record_id"] for r in expected] == [4, 5, 6, 7, 9]
    assert [int(r["record_id"]) for r in rows] == [4, 5, 6, 7, 9]
    assert [json.loads(r["payload"]) for r in rows] == [r["payload"] for r in expected]
    fill_row = rows[0]
    assert (fill_row["kind"], fill_row["trade_id"], float(fill_row["price"])) == (
        "fill",
        "t1",
        59_001.0,
    )
    episode_row = next(r for r in rows if r["kind"] == "episode")
    assert (episode_row["episode_id"], episode_row["client_id"]) == (f"{BTC}@1", "")


# ---------------------------------------------------------------------------- CLI


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="backstop")
    add_audit_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_audit_command(parse(*argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_cli_verify_exits_0_when_intact_and_1_naming_the_first_broken_record(
    state_dir: Path,
) -> None:
    status, out, _ = run("audit", "verify", "--state-dir", str(state_dir))
    assert status == 0
    assert "ok: 10 records" in out

    sql(journal_of(state_dir), "UPDATE records SET payload = '{}' WHERE id = 7")
    status, _, err = run("audit", "verify", "--journal", str(journal_of(state_dir)))
    assert status == 1
    assert "BROKEN at record 7" in err

    status, out, _ = run("audit", "verify", "--state-dir", str(state_dir), "--json")
    assert status == 1
    assert json.loads(out)["broken_id"] == 7


def test_cli_usage_errors_exit_2_with_one_line(tmp_path: Path, state_dir: Path) -> None:
    status, _, err = run("audit", "verify", "--state-dir", str(tmp_path / "nowhere"))
    assert status == 2
    assert "no journal at" in err
    status, _, err = run("audit", "export", "--state-dir", str(state_dir), "--since", "yesterday")
    assert status == 2
    assert "--since 'yesterday'" in err
    status, _, err = run("audit", "verify", "--state-dir", str(state_dir), "--anchor", "10")
    assert (status, err.count("\n")) == (2, 1)
    with pytest.raises(SystemExit):
        parse("audit", "verify", "--state-dir", "a", "--journal", "b")  # one or the other


def test_cli_export_writes_the_file_and_warns_when_the_chain_is_broken(
    state_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "review.csv"
    status, _, err = run(
        "audit",
        "export",
        "--state-dir",
        str(state_dir),
        "--since",
        "2026-11-25T12:05:00Z",
        "--format",
        "csv",
        "--out",
        str(target),
    )
    assert status == 0
    assert "exported 3 records" in err
    with target.open(newline="") as f:
        assert [r["kind"] for r in csv.DictReader(f)] == ["fill", "episode", "order"]

    sql(journal_of(state_dir), "DELETE FROM records WHERE id = 2")
    status, out, err = run("audit", "export", "--state-dir", str(state_dir), "--kinds", "fill")
    assert status == 1
    assert len(out.splitlines()) == 2  # still exported, for the review of what remains
    assert "WARNING" in err
    assert "BROKEN at record 3" in err
