"""A report's recorder rebuilt from a daemon's journal (``backstop report``).

The journal's ``trace`` records carry the report's own rows (book, detector,
inventory); ``order`` records give our quotes (placed, ended) and ``fill`` records our
fills. Fed in journal order into the same :class:`~bot.report.ReportRecorder` a replay
fills live, they draw the same charts. A journal from before traces were written
still gives quotes, fills and episode numbers; its charts are then empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.detect.config import DetectorConfig
from bot.detect.machine import DetectorState
from bot.journal import records as rk
from bot.journal.reader import JournalReader
from bot.report.recorder import FillMark, QuoteMark, ReportRecorder

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
    kinds = [rk.TRACE, rk.ORDER, rk.FILL]
    for record in reader.records(
        kinds, since_ns=window.since_ns, until_ns=window.until_ns, symbol=window.symbol
    ):
        payload = record.payload
        symbol = payload.get("symbol")
        if not isinstance(symbol, str):
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


def _row(values: Sequence[float | None] | None) -> tuple[float, ...]:
    return tuple(_NAN if v is None else float(v) for v in values or ())
