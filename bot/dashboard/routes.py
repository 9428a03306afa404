"""The operator dashboard, served by the control API's TCP listener (127.0.0.1).

Routes (mounted by :class:`bot.control.server.ControlServer` when ``control.dashboard``)::

    GET /dashboard, /dashboard/episodes, /dashboard/audit   the pages (no token: no data)
    GET /dashboard/static/NAME                              uPlot, the page's JS and CSS
    GET /dashboard/api/stream                               live updates (server-sent events)
    GET /dashboard/api/episodes                             the episode list (HTML fragment)
    GET /dashboard/api/episode?id=ID                        one episode's numbers (fragment)
    GET /dashboard/api/episode.png?id=ID                    its chart, drawn from the journal
    GET /dashboard/api/audit                                hash chain, kills and resumes

The pages and static files hold no data and need no token. Everything under ``api/``
needs a viewer token, and the actions are the control API's own ``POST /kill``,
``/pause``, ``/unpause``, ``/cancel-all`` and ``/resume`` with their roles: the page's
script sends them with the token the operator pasted (kept in the tab's
sessionStorage), as an ``Authorization`` header. A browser never attaches that header
by itself, and a cross-site script cannot add it without a CORS preflight this server
never grants, so no request forged from another site carries a role: that is the CSRF
defence, and why no cookie is used. The pages' Content-Security-Policy allows only this
origin's scripts (no inline script, no eval), which keeps a token pasted into the page
out of reach of injected markup; every value in the HTML is escaped on the server.

The live stream is read with ``fetch`` (an ``EventSource`` cannot send the header).
It sends the status, the overview's fragments and the new depth points every
``control.dashboard_refresh_s``, and at once on a kill-switch record or a risk event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from bot.control.api import ControlHandler, current_principal
from bot.dashboard import journal_views
from bot.dashboard.history import DepthHistory
from bot.dashboard.views import MarketLimits, market_html, options_html, page, summary_html
from bot.engine import Listener
from bot.errors import UserError
from bot.logs import Logger
from bot.settings.models import Settings

PREFIX = "/dashboard"
STATIC = {
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "LICENSE-uPlot.txt": "text/plain",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
_PAGES = {PREFIX: "overview", PREFIX + "/": "overview"} | {
    f"{PREFIX}/{name}": name for name in ("episodes", "audit")
}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
MIN_GAP_S = 0.1
"""Events come in bursts (a kill is several records): one update per this long at most."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@runtime_checkable
class DashboardSource(Protocol):
    """What the dashboard needs from the daemon besides the control API
    (:class:`bot.daemon.Daemon` has it; without it there are no charts or journal)."""

    def add_listener(self, listener: Listener) -> None: ...

    def fracture_thresholds(self, symbol: str) -> tuple[float | None, float | None]: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...

    async def journal_path(self) -> Path | None: ...


class NoJournal(UserError):
    http_status = 404


class Dashboard:
    def __init__(
        self,
        handler: ControlHandler,
        *,
        log: Logger,
        limits: Mapping[str, MarketLimits] | None = None,
        refresh_s: float = 0.5,
        history: DepthHistory | None = None,
    ) -> None:
        self._handler = handler
        self._log = log
        self._limits = dict(limits or {})
        self._refresh_s = refresh_s
        self._source = handler if isinstance(handler, DashboardSource) else None
        if history is None:
            history = DepthHistory(self._source.fracture_thresholds if self._source else None)
        self.history = history
        self._wakers: set[asyncio.Event] = set()
        self._closing = asyncio.Event()
        self._static = {
            name: resources.files("bot.control").joinpath(f"static/{name}").read_bytes()
            for name in STATIC
        }
        if self._source is not None:
            self._source.add_listener(history)
            self._source.on_change(self._wake_all)

    @classmethod
    def from_settings(
        cls, settings: Settings, handler: ControlHandler, *, log: Logger
    ) -> Dashboard | None:
        if not settings.control.dashboard:
            return None
        return cls(
            handler,
            log=log,
            limits=MarketLimits.from_settings(settings),
            refresh_s=settings.control.dashboard_refresh_s,
        )

    # ---- mounting -------------------------------------------------------------------------

    def is_public(self, request: web.Request) -> bool:
        """The pages and static files: no token needed (they hold no data)."""
        path = request.path
        return request.method == "GET" and (path in _PAGES or path.startswith(PREFIX + "/static/"))

    def mount(self, app: web.Application) -> None:
        for path, name in _PAGES.items():
            app.router.add_get(path, self._page_handler(name), allow_head=False)
        app.router.add_get(PREFIX + "/static/{name}", self._static_file, allow_head=False)
        app.router.add_get(PREFIX + "/api/stream", self._stream, allow_head=False)
        app.router.add_get(PREFIX + "/api/episodes", self._episodes, allow_head=False)
        app.router.add_get(PREFIX + "/api/episode", self._episode, allow_head=False)
        app.router.add_get(PREFIX + "/api/episode.png", self._episode_png, allow_head=False)
        app.router.add_get(PREFIX + "/api/audit", self._audit, allow_head=False)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_shutdown(self, app: web.Application) -> None:
        # Live streams never end by themselves: end them, or the server's shutdown
        # waits its whole timeout for them.
        self._closing.set()
        self._wake_all()

    def _wake_all(self) -> None:
        for wake in self._wakers:
            wake.set()

    # ---- pages and static files -----------------------------------------------------------

    def _page_handler(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            _check_host(request)
            return _html(page(name))

        return handler

    async def _static_file(self, request: web.Request) -> web.Response:
        _check_host(request)
        name = request.match_info["name"]
        body = self._static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=body,
            headers={**SECURITY_HEADERS, "Content-Type": f"{STATIC[name]}; charset=utf-8"},
        )

    # ---- the live stream ------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        _check_host(request)
        response = web.StreamResponse(
            headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
        )
        await response.prepare(request)
        principal = current_principal.get()
        wake = asyncio.Event()
        self._wakers.add(wake)
        try:
            await response.write(
                _event(
                    "hello",
                    {
                        "name": principal.name if principal else None,
                        "role": principal.role.label if principal else None,
                        "refresh_s": self._refresh_s,
                    },
                )
            )
            seq, first, last = 0, True, 0.0
            while not self._closing.is_set():
                wait = MIN_GAP_S - (time.monotonic() - last)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), wait)
                    if self._closing.is_set():
                        break
                wake.clear()
                payload, seq = await self._update(seq, first)
                await response.write(_event("update", payload))
                first, last = False, time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._refresh_s)
        except ConnectionError:
            pass  # the page went away
        finally:
            self._wakers.discard(wake)
        return response

    async def _update(self, seq: int, first: bool) -> tuple[dict[str, Any], int]:
        status = await self._handler.status()
        markets = [m for m in status.get("markets") or [] if isinstance(m, dict)]
        options = status.get("options")
        now_seq = self.history.seq
        depth = {
            symbol: self.history.columns(symbol, 0 if first else seq)
            for symbol in self.history.symbols()
        }
        payload = {
            "reset": first,
            "status": status,
            "summary": summary_html(status),
            "markets": [
                {
                    "symbol": str(m.get("symbol")),
                    "html": market_html(m, self._limits.get(str(m.get("symbol")))),
                }
                for m in markets
            ],
            "depth": depth,
            # The [options] panel; None when the daemon watches no option chain.
            "options": options_html(options) if isinstance(options, dict) else None,
        }
        return payload, now_seq

    # ---- the journal ----------------------------------------------------------------------

    async def _journal(self) -> Path:
        path = await self._source.journal_path() if self._source is not None else None
        if path is None:
            raise NoJournal("this daemon keeps no journal to read episodes or audit from")
        return path

    async def _episodes(self, request: web.Request) -> web.Response:
        _check_host(request)
        path = await self._journal()
        return _html(await asyncio.to_thread(journal_views.episodes_html, path))

    async def _episode(self, request: web.Request) -> web.Response:
        _check_host(request)
        episode_id = _episode_id(request)
        path = await self._journal()
        return _html(await asyncio.to_thread(journal_views.episode_html, path, episode_id))

    async def _episode_png(self, request: web.Request) -> web.Response:
        _check_host(request)
        episode_id = _episode_id(request)
        path = await self._journal()
        png = await asyncio.to_thread(
            journal_views.episode_png, path, episode_id, now_ns=self.history.latest_ns
        )
        return web.Response(body=png, headers={**SECURITY_HEADERS, "Content-Type": "image/png"})

    async def _audit(self, request: web.Request) -> web.Response:
        _check_host(request)
        path = await self._journal()
        return _html(await asyncio.to_thread(journal_views.audit_html, path))


def _check_host(request: web.Request) -> None:
    """Only a loopback name in ``Host``: a page from another site that re-points its own
    host name at 127.0.0.1 (DNS rebinding) gets nothing from here."""
    host = request.host.lower()
    name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    if name not in LOOPBACK_HOSTS:
        raise web.HTTPMisdirectedRequest(
            reason=f"the dashboard answers only to 127.0.0.1 or localhost, not {host!r}"
        )


def _episode_id(request: web.Request) -> str:
    episode_id = request.query.get("id", "").strip()
    if not episode_id:
        raise UserError(f"{request.path} needs ?id=EPISODE_ID (from the episode list)")
    return episode_id


def _html(body: str) -> web.Response:
    return web.Response(
        text=body, headers={**SECURITY_HEADERS, "Content-Type": "text/html; charset=utf-8"}
    )


def _event(name: str, data: Any) -> bytes:
    text = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False, default=str)
    return f"event: {name}\ndata: {text}\n\n".encode()


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (the page's ``JSON.parse`` refuses them): null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
