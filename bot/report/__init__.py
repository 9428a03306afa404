"""Visual episode reports: record a run compactly, then draw it as PNGs and one HTML page.

:class:`ReportRecorder` is fed while the bot runs (engine listener plus detector,
order-notice and inventory hooks) and keeps bounded time series per market;
:func:`render_report` turns it and the run's episodes (``Episode.to_dict()``) into a
self-contained HTML report with an overview and one chart and table per episode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.report.recorder import MarketTrace, ReportRecorder

if TYPE_CHECKING:
    from bot.report.html import render_report

__all__ = ["MarketTrace", "ReportRecorder", "render_report"]


def __getattr__(name: str) -> Any:
    # Drawing needs matplotlib (~40 MB resident): only a run that writes a report, or
    # 'backstop report', pays for it; a daemon that only records does not.
    if name == "render_report":
        from bot.report.html import render_report

        return render_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
