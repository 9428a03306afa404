"""The market as the bot saw it, journaled, so an episode can be drawn after the fact.

A report of a replay is drawn from memory (:class:`~bot.report.ReportRecorder`); a
daemon's episodes are drawn from its journal (``backstop report``), which therefore
needs the same three series: the book (bid, ask, spread, depth per band), the detector
(depth against its fracture and recovery levels, state) and the inventory (balances,
committed collateral, PnL, fees). :class:`JournalTrace` writes them as ``trace``
records, thinned in data time: at most one per ``coarse_s`` while the detector is calm,
one per ``fine_s`` while it is active (arming, engaged, recovering), and always at a
detector transition, so an episode's edges are exact. A calm day costs ~86,400 small
records per market; an hour-long episode ~14,400 more at the default 0.25 s.

The rows are the report's own columns (:func:`bot.report.recorder.book_row` ...), so
the journal and an in-memory recorder draw the same chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.journal import records as rk

if TYPE_CHECKING:
    from bot.detect.config import DetectorConfig
    from bot.detect.report import DetectorUpdate
    from bot.journal.writer import Journal
    from bot.monitor import DepthSample
    from strategies.base import InventoryView

NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class _Cursor:
    last_ns: int | None = None


class JournalTrace:
    """Called by the trader after each detector reading of each market."""

    def __init__(
        self,
        journal: Journal,
        detectors: dict[str, DetectorConfig],
        *,
        coarse_s: float = 1.0,
        fine_s: float = 0.25,
    ) -> None:
        if not (coarse_s > 0 and fine_s > 0):
            raise ValueError("coarse_s and fine_s must be > 0")
        self._journal = journal
        self._detectors = detectors
        self._coarse_ns = round(coarse_s * NS_PER_S)
        self._fine_ns = round(fine_s * NS_PER_S)
        self._cursors: dict[str, _Cursor] = {}
        self.written = 0

    def on_reading(
        self,
        symbol: str,
        sample: DepthSample,
        update: DetectorUpdate,
        view: InventoryView,
        committed_quote: float,
    ) -> None:
        cursor = self._cursors.setdefault(symbol, _Cursor())
        ts = sample.ts_ns
        step = self._fine_ns if update.state.value != "calm" else self._coarse_ns
        due = cursor.last_ns is None or ts - cursor.last_ns >= step
        if not (due or update.transition is not None):
            return
        cursor.last_ns = ts
        config = self._detectors.get(symbol)
        # Built when the journal releases this event's records (its orders have left):
        # everything it reads is never changed once built (sample, update, view, config)
        # or a number.
        self._journal.append_deferred(
            rk.TRACE,
            lambda: _payload(symbol, sample, update, view, committed_quote, config),
            ts_ns=ts,
        )
        self.written += 1


def _payload(
    symbol: str,
    sample: DepthSample,
    update: DetectorUpdate,
    view: InventoryView,
    committed_quote: float,
    config: DetectorConfig | None,
) -> dict[str, Any]:
    from bot.report.recorder import book_row, detector_row, inventory_row

    return {
        "symbol": symbol,
        "state": update.state.value,
        "bands_bps": list(sample.bands_bps),
        "book": _finite(book_row(sample)),
        "detector": _finite(detector_row(update, config)),
        "inventory": _finite(inventory_row(view, committed_quote)),
    }


_INFINITE = (float("inf"), float("-inf"))


def _finite(values: tuple[float, ...]) -> list[float | None]:
    """JSON has no NaN: a missing value (no baseline yet) is stored as null."""
    return [v if v == v and v not in _INFINITE else None for v in values]
