"""The dashboard's episodes and audit pages, read from the daemon's journal.

The same code as ``backstop report`` and ``backstop audit verify``: episodes are the
journal's episode records, an episode's chart is :func:`bot.report.charts.episode_figure`
drawn from :func:`bot.report.from_journal.recorder_from_journal`, and the chain status
is :func:`bot.journal.audit.verify`. Blocking (SQLite, matplotlib): the routes call these
in a worker thread so the daemon's event loop keeps trading.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.clock import NS_PER_SECOND
from bot.dashboard.views import esc, num
from bot.errors import UserError
from bot.journal import records as rk
from bot.journal.audit import verify
from bot.journal.reader import JournalReader

LAST_KILLS = 20
_CACHE_SIZE = 16
# One chart at a time (matplotlib is not meant to draw from several threads at once),
# and it guards the cache.
_DRAW_LOCK = threading.Lock()
_png_cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()


class NoSuchEpisode(UserError):
    http_status = 404


def utc(ts_ns: Any) -> str:
    if not isinstance(ts_ns, int):
        return "-"
    when = datetime.fromtimestamp(ts_ns / NS_PER_SECOND, tz=UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _episodes(path: Path) -> list[dict[str, Any]]:
    with JournalReader(path) as reader:
        return reader.episodes()


def _find(path: Path, episode_id: str) -> tuple[dict[str, Any], int]:
    """The episode and its number among its market's episodes (as the report numbers)."""
    episodes = _episodes(path)
    for ep in episodes:
        if str(ep.get("id")) == episode_id:
            mine = [e for e in episodes if e.get("symbol") == ep.get("symbol")]
            return ep, 1 + mine.index(ep)
    raise NoSuchEpisode(f"no episode {episode_id!r} in the journal")


def episodes_html(path: Path) -> str:
    """Every episode, newest first, each with a button for its numbers and chart."""
    episodes = _episodes(path)
    if not episodes:
        return '<p class="muted" data-testid="no-episodes">No episode yet.</p>'
    rows: list[str] = []
    for ep in reversed(episodes):
        trigger = ep.get("trigger") or {}
        rule = str(trigger.get("rule") or "-")
        if trigger.get("side"):
            rule += f" / {trigger['side']}"
        end = ep.get("end_ts_ns")
        rows.append(
            '<tr data-testid="episode-row">'
            f"<td>{esc(ep.get('symbol'))}</td><td>{esc(utc(ep.get('start_ts_ns')))}</td>"
            f"<td>{esc(utc(end)) if end is not None else '<b>ongoing</b>'}</td>"
            f"<td>{num(ep.get('duration_s'), 1)}</td>"
            f"<td>{esc(rule)}</td>"
            f"<td>{num(ep.get('fills'))}</td><td>{num(ep.get('marked_pnl'))}</td>"
            f"<td>{num(ep.get('max_committed_quote'))}</td>"
            f'<td><button type="button" class="show-episode" data-episode="{esc(ep.get("id"))}">'
            "numbers and chart</button></td></tr>"
        )
    return (
        f"<h2>Episodes ({len(episodes)})</h2>"
        '<table class="grid episodes"><tr><th>market</th><th>start (UTC, data time)</th>'
        "<th>end</th><th>duration (s)</th><th>trigger</th><th>fills</th>"
        "<th>marked PnL</th><th>max committed</th><th></th></tr>" + "".join(rows) + "</table>"
        '<p class="muted">An episode\'s numbers are journaled when it starts and when it ends: '
        "an ongoing one shows its start; its chart is drawn up to now.</p>"
    )


def episode_html(path: Path, episode_id: str) -> str:
    """One episode's numbers (the report's table); the page then loads its chart."""
    from bot.report.html import episode_rows  # matplotlib: only when an episode is opened

    ep, number = _find(path, episode_id)
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in episode_rows(ep))
    return (
        f"<h2>Episode {number}: {esc(episode_id)}</h2>"
        f'<table class="kv numbers">{rows}</table>'
        f'<figure class="episode-chart" data-episode="{esc(episode_id)}">'
        '<p class="muted">Drawing the chart from the journal…</p></figure>'
    )


def episode_png(path: Path, episode_id: str, *, now_ns: int | None) -> bytes:
    """The report's chart of one episode, drawn from the journal (30 s either side).

    ``now_ns`` ends the window of an episode still going on (the daemon's data time).
    """
    from bot.report.charts import episode_figure, png_bytes
    from bot.report.cli import CONTEXT_S, _detectors
    from bot.report.from_journal import episode_window, recorder_from_journal

    ep, number = _find(path, episode_id)
    end = ep.get("end_ts_ns")
    # An ended episode's chart never changes: drawn once. An ongoing one is redrawn.
    key = (str(path), episode_id, int(end) if end is not None else -1)
    with _DRAW_LOCK:
        if end is not None and key in _png_cache:
            _png_cache.move_to_end(key)
            return _png_cache[key]
        with JournalReader(path) as reader:
            window = episode_window(ep, CONTEXT_S, now_ns=now_ns)
            recorder = recorder_from_journal(reader, window, detectors=_detectors(reader))
        trace = recorder.markets.get(str(ep.get("symbol")))
        if trace is None:
            raise NoSuchEpisode(f"the journal holds no market data for episode {episode_id!r}")
        fig, _ = episode_figure(
            trace, ep, number=number, margin_ns=round(CONTEXT_S * NS_PER_SECOND)
        )
        png = png_bytes(fig)
        if end is not None:
            _png_cache[key] = png
            while len(_png_cache) > _CACHE_SIZE:
                _png_cache.popitem(last=False)
    return png


def audit_html(path: Path) -> str:
    """The hash chain's status and the latest kill-switch records (trips, resumes)."""
    report = verify(path)
    with JournalReader(path) as reader:
        kills = list(reader.records([rk.KILL]))[-LAST_KILLS:]
    verdict = (
        f'<p class="chain chain-{"ok" if report.ok else "broken"}" data-testid="chain" '
        f'data-ok="{"true" if report.ok else "false"}"><b>Journal hash chain: '
        f"{'OK' if report.ok else 'BROKEN'}</b>: {esc(report.summary())}</p>"
    )
    rows = "".join(_kill_row(r.ts_ns, r.payload) for r in reversed(kills))
    table = (
        '<table class="grid kills"><tr><th>when (UTC, data time)</th><th>action</th>'
        "<th>state</th><th>reason</th><th>source</th><th>who</th><th>took (s)</th></tr>"
        f"{rows}</table>"
        if kills
        else '<p class="muted">No kill or resume journaled.</p>'
    )
    return (
        f"<h2>Audit: {esc(path.name)}</h2>{verdict}"
        f"<h3>Kills and resumes (latest {LAST_KILLS}, newest first)</h3>{table}"
    )


def _kill_row(ts_ns: int, kill: Mapping[str, Any]) -> str:
    elapsed = kill.get("elapsed_ns")
    took = num(elapsed / NS_PER_SECOND, 3) if isinstance(elapsed, int) else "-"
    return (
        f'<tr data-testid="kill-row" data-action="{esc(kill.get("action"))}">'
        f"<td>{esc(utc(ts_ns))}</td><td>{esc(kill.get('action'))}</td>"
        f"<td>{esc(kill.get('state'))}</td><td>{esc(kill.get('reason'))}</td>"
        f"<td>{esc(kill.get('source'))}</td><td>{esc(kill.get('who'))}</td><td>{took}</td></tr>"
    )
