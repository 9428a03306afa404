"""The operator dashboard: pages served by the daemon's control API (docs/runbook.md).

:class:`Dashboard` mounts the pages, the live stream and the journal views on the
control API's TCP listener; :mod:`bot.dashboard.views` renders the HTML,
:mod:`bot.dashboard.journal_views` reads episodes and the audit trail from the journal,
:class:`DepthHistory` keeps the recent depth the live charts start from. The page's
script, CSS and the vendored uPlot are in ``bot/control/static/``.
"""

from bot.dashboard.history import DepthHistory
from bot.dashboard.routes import Dashboard, DashboardSource

__all__ = ["Dashboard", "DashboardSource", "DepthHistory"]
