"""Visual episode reports: record a run compactly, then draw it as PNGs and one HTML page.

:class:`ReportRecorder` is fed while the bot runs (engine listener plus detector,
order-notice and inventory hooks) and keeps bounded time series per market;
:func:`render_report` turns it and the run's episodes (``Episode.to_dict()``) into a
self-contained HTML report with an overview and one chart and table per episode.
"""

from bot.report.html import render_report
from bot.report.recorder import MarketTrace, ReportRecorder

__all__ = ["MarketTrace", "ReportRecorder", "render_report"]
