"""A report's recorder rebuilt from a daemon's journal (``backstop report``).

The journal's ``trace`` records carry the report's own rows (book, detector,
inventory); ``order`` records give our quotes (placed, ended) and ``fill`` records our
fills. Fed in journal order into the same :class:`~bot.report.ReportRecorder` a replay
fills live, they draw the same charts. A journal from before traces were written
still gives quotes, fills and episode numbers; its charts are then empty.

Option books are not drawn (as in a live run's report): their ``option_episode``
records give the same table of option episodes, appended after the charts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.detect.config import DetectorConfig
from bot.detect.machine import DetectorState
from bot.journal import records as rk
from bot.journal.reader import JournalReader
from bot.report.recorder import FillMark, QuoteMark, ReportRecorder

if TYPE_CHECKING:
    from collections.abc import Callable

_TERMINAL = frozenset({"filled", "canceled", "rejected"})
_NAN = float("nan")


@dataclass(frozen=True, slots=True)
class JournalWindow:
    """What to draw: all of ``[since_ns, until_ns)`` (None: unbounded) on ``symbol``."""

    since_ns: int | None = None
    until_ns: int | None = None
    symbol: str | None = None


def episode_window(
    episode: Mapping[str, Any], margin_s: float, *, now_ns: int | None = None
) -> JournalWindow:
    """An episode and ``margin_s`` either side of it (an open episode: up to ``now_ns``)."""
    margin = round(margin_s * 1e9)
    start = int(episode["start_ts_ns"])
    end = episode.get("end_ts_ns")
    until = int(end) + margin if end is not None else now_ns
    return JournalWindow(start - margin, until, str(episode.get("symbol") or "") or None)


def recorder_from_journal(
    reader: JournalReader,
    window: JournalWindow,
    *,
    detectors: Mapping[str, DetectorConfig] | None = None,
) -> ReportRecorder:
    recorder = ReportRecorder(detectors)
    options = option_episodes(reader, window)
    recorder.skip.update(str(e["symbol"]) for e in options)
    section = _option_section(options)
    if section is not None:
        recorder.appendix.append(section)
    kinds = [rk.TRACE, rk.ORDER, rk.FILL]
    for record in reader.records(
        kinds, since_ns=window.since_ns, until_ns=window.until_ns, symbol=window.symbol
    ):
        payload = record.payload
        symbol = payload.get("symbol")
        if not isinstance(symbol, str) or symbol in recorder.skip:
            continue
        trace = recorder.market(symbol)
        if record.kind == rk.TRACE:
            bands = tuple(float(b) for b in payload.get("bands_bps") or ())
            trace.push_book(record.ts_ns, bands, _row(payload.get("book")))
            trace.push_detector(
                record.ts_ns, DetectorState(payload["state"]), _row(payload.get("detector"))
            )
            trace.push_inventory(record.ts_ns, _row(payload.get("inventory")))
        elif record.kind == rk.ORDER:
            placed = None
            if payload.get("previous") is None and payload.get("price") is not None:
                placed = QuoteMark(
                    client_id=str(payload["client_id"]),
                    side=str(payload.get("side")),
                    price=float(payload["price"]),
                    amount=float(payload.get("amount") or 0.0),
                    tag=str(payload.get("tag") or ""),
                    placed_ns=record.ts_ns,
                )
            state = payload.get("state")
            trace.order_changed(
                record.ts_ns,
                str(payload["client_id"]),
                placed=placed,
                terminal_state=state if state in _TERMINAL else None,
            )
        else:
            trace.add_fill(
                FillMark(
                    record.ts_ns,
                    str(payload["client_id"]),
                    str(payload.get("side")),
                    float(payload["price"]),
                    float(payload["amount"]),
                )
            )
    return recorder


def option_episodes(reader: JournalReader, window: JournalWindow) -> list[dict[str, Any]]:
    """The option episodes overlapping ``window``, each in its latest (final) record, in
    order of start. ``window.symbol`` selects an option, or every option on an underlying."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for record in reader.records([rk.OPTION_EPISODE]):
        e = dict(record.payload)
        if window.symbol is not None and window.symbol not in (e["symbol"], e.get("underlying")):
            continue
        start_ns = int(e["start_ms"]) * 1_000_000
        end = e.get("end_ms")
        end_ns = None if end is None else int(end) * 1_000_000
        if window.until_ns is not None and start_ns >= window.until_ns:
            continue
        if window.since_ns is not None and end_ns is not None and end_ns < window.since_ns:
            continue
        latest[(str(e["symbol"]), int(e["start_ms"]))] = e
    return sorted(latest.values(), key=lambda e: (int(e["start_ms"]), str(e["symbol"])))


def _option_section(episodes: list[dict[str, Any]]) -> Callable[[], str] | None:
    if not episodes:
        return None
    from bot.options.episodes import episodes_html

    first = episodes[-1]  # the latest session's caps and labels
    html = episodes_html(
        episodes,
        dict(first.get("caps") or {}),
        synthetic=bool(first.get("synthetic")),
        underlying=str(first.get("underlying") or "?"),
    )
    return lambda: html


def _row(values: Sequence[float | None] | None) -> tuple[float, ...]:
    return tuple(_NAN if v is None else float(v) for v in values or ())
