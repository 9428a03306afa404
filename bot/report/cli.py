"""``backstop report``: draw a daemon's episodes from its journal.

    backstop report [--state-dir DIR | --journal PATH] --out report.html
                    [--episode ID | --since ISO [--until ISO]] [--symbol SYM]

With ``--episode``: that episode, with 30 s of context either side. With ``--since``
(and ``--until``): every episode in that period and the market over it. With neither:
the whole journal. With ``--governance``: the transparency report instead
(:mod:`bot.governance.report`: per ``--period``, episodes, reserve used and
replenished, costs, policy versions, kills and resumes), HTML or ``.md``.

The journal's own hash chain is verified first; a broken chain is reported, and the
report is still drawn, marked as drawn from an unverified journal.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from bot.clock import NS_PER_SECOND
from bot.detect.config import DetectorConfig
from bot.errors import UserError
from bot.journal import records as rk
from bot.journal.audit import add_journal_flags, journal_path_from_args, parse_since, verify
from bot.journal.reader import JournalReader
from bot.report.from_journal import JournalWindow, episode_window, recorder_from_journal

EXIT_OK = 0
EXIT_USAGE = 2
CONTEXT_S = 30.0


def add_report_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="draw episodes from a daemon's journal (HTML with PNG charts)",
        description="Charts of depth against the fracture threshold, the bot's quotes and "
        "fills, inventory, committed collateral and PnL, from the journal.",
    )
    add_journal_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--episode", metavar="ID", help="one episode (see 'audit export')")
    which.add_argument("--since", metavar="ISO", help="from this time (UTC)")
    p.add_argument("--until", metavar="ISO", help="up to this time (UTC; with --since)")
    p.add_argument("--symbol", metavar="SYM", help="one market only, e.g. BTC/USDT")
    p.add_argument("--out", type=Path, required=True, metavar="PATH.html")
    p.add_argument(
        "--governance",
        action="store_true",
        help="the transparency report for the reserve's funders (PATH.html or PATH.md)",
    )
    p.add_argument(
        "--period",
        choices=("day", "week", "month", "all"),
        default="day",
        help="with --governance: one section per UTC day (default), week, month, or all",
    )


def is_report_command(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) == "report"


def run_report_command(args: argparse.Namespace, *, err: TextIO | None = None) -> int:
    stderr = err or sys.stderr
    path = journal_path_from_args(args)
    if getattr(args, "governance", False):
        return _governance(args, path, stderr)
    try:
        files = draw(
            path,
            args.out,
            episode_id=args.episode,
            since=args.since,
            until=args.until,
            symbol=args.symbol,
            err=stderr,
        )
    except UserError as e:
        print(f"backstop report: {e}", file=stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:
        print(f"backstop report: {path}: unreadable: {e}", file=stderr)
        return EXIT_USAGE
    print(f"report written: {', '.join(str(f) for f in files)}", file=stderr)
    return EXIT_OK


def _governance(args: argparse.Namespace, path: Path, stderr: TextIO) -> int:
    from bot.governance import report as governance

    try:
        if args.episode is not None:
            raise UserError("--governance reports periods: use --since/--until, not --episode")
        if args.until is not None and args.since is None:
            raise UserError("--until needs --since")
        built = governance.build(
            path, since_ns=_ns(args.since), until_ns=_ns(args.until), period=args.period
        )
    except UserError as e:
        print(f"backstop report: {e}", file=stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:
        print(f"backstop report: {path}: unreadable: {e}", file=stderr)
        return EXIT_USAGE
    out = governance.write(built, args.out)
    if not built.chain_ok:
        print(f"WARNING: {path}: {built.chain}", file=stderr)
    print(f"governance report written: {out}", file=stderr)
    return EXIT_OK


def draw(
    journal: Path,
    out: Path,
    *,
    episode_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    symbol: str | None = None,
    err: TextIO | None = None,
) -> list[Path]:
    if until is not None and since is None:
        raise UserError("--until needs --since")
    report = verify(journal)
    title = f"backstop: {journal}"
    if not report.ok:
        title += " (UNVERIFIED journal)"
        print(f"WARNING: {journal}: {report.summary()}", file=err or sys.stderr)
    with JournalReader(journal) as reader:
        detectors = _detectors(reader)
        episodes = reader.episodes(symbol)
        if episode_id is not None:
            chosen = [e for e in episodes if str(e.get("id")) == episode_id]
            if not chosen:
                known = ", ".join(str(e.get("id")) for e in episodes[-5:]) or "none"
                raise UserError(f"no episode {episode_id!r} in {journal} (latest: {known})")
            window = episode_window(chosen[0], CONTEXT_S, now_ns=time.time_ns())
            episodes = chosen
            title += f", episode {episode_id}"
        else:
            since_ns = _ns(since)
            until_ns = _ns(until)
            window = JournalWindow(since_ns, until_ns, symbol)
            episodes = [e for e in episodes if _overlaps(e, since_ns, until_ns)]
        recorder = recorder_from_journal(reader, window, detectors=detectors)
    if not recorder.markets:
        raise UserError(f"{journal} has nothing to draw in that period")
    from bot.report.html import render_report  # matplotlib: only when drawing

    return render_report(recorder, episodes, out, title=title)


def _ns(text: str | None) -> int | None:
    return None if text is None else int(parse_since(text).timestamp() * NS_PER_SECOND)


def _overlaps(episode: Mapping[str, Any], since_ns: int | None, until_ns: int | None) -> bool:
    start = int(episode["start_ts_ns"])
    end = episode.get("end_ts_ns")
    if until_ns is not None and start >= until_ns:
        return False
    return since_ns is None or end is None or int(end) >= since_ns


def _detectors(reader: JournalReader) -> dict[str, DetectorConfig]:
    """The detector settings of the latest session (for the charts' labels)."""
    from bot.settings.models import MarketSettings

    latest: Mapping[str, Any] | None = None
    for record in reader.records([rk.START]):
        latest = record.payload
    markets = ((latest or {}).get("settings") or {}).get("markets") or []
    out: dict[str, DetectorConfig] = {}
    for raw in markets:
        try:
            market = MarketSettings.model_validate(raw)
        except ValueError:
            continue  # a journal from another version: labels fall back to defaults
        out[market.symbol] = DetectorConfig.from_market(market)
    return out
