"""The control API: HTTP on a Unix socket (and optionally 127.0.0.1 + bearer token).

Endpoints (JSON in, JSON out; every refusal is a 4xx with ``{"error": "..."}``)::

    GET  /status                       what the daemon is doing (see api.DaemonStatus)
    POST /kill      {"reason": ...}    trip the kill switch
    POST /resume    {"reason": ...}    re-arm it
    POST /pause     {"symbol", "reason"}
    POST /unpause   {"symbol"}
    POST /cancel-all {"reason": ...}
    GET  /healthz                      200 healthy / 503 with reasons
    GET  /metrics                      Prometheus text format
    GET  /policy                       the intervention policy in force
    POST /policy    {"policy": TOML, "reason": ...}   put a new policy in force
    GET  /dashboard...                 the operator dashboard (TCP only, when enabled:
                                       bot.dashboard.routes)

Who may do what (:mod:`bot.governance.roles`): every endpoint needs a role (viewer,
operator, admin), which a request gets from its bearer token, or on the Unix socket
(mode 0600: the daemon's user) without a token from ``control.socket_role``. TCP
always needs a token. Refused tokens are counted (``/status`` control.auth_failures and
a metric) and logged without the token, right or wrong: a near-miss is almost the
secret. A role too low for the endpoint is refused with 403 (logged with the token's
name).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from bot.control.api import (
    MAX_POLICY_CHARS,
    MAX_REASON_CHARS,
    ControlHandler,
    current_principal,
)
from bot.control.metrics import Metrics
from bot.dashboard import Dashboard
from bot.errors import BackstopError, ConfigError, OperationalError, TemporaryError, UserError
from bot.governance.roles import Principal, Role, TokenRegistry, required_role
from bot.logs import Logger
from bot.settings.models import MIN_TOKEN_CHARS, Settings, suggest

TCP_HOST = "127.0.0.1"
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), including the NUL.
MAX_SOCKET_PATH_BYTES = 103
MAX_BODY_BYTES = 64 * 1024
# In-flight requests get this long to finish when the server stops (a kill command
# mid-way is allowed to complete; a stuck client is not allowed to hold up shutdown).
SHUTDOWN_TIMEOUT_S = 2.0

_ENDPOINTS = (
    ("GET", "/status"),
    ("POST", "/kill"),
    ("POST", "/resume"),
    ("POST", "/pause"),
    ("POST", "/unpause"),
    ("POST", "/cancel-all"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/policy"),
    ("POST", "/policy"),
)
_ENDPOINT_LIST = ", ".join(f"{m} {p}" for m, p in _ENDPOINTS)

_TRANSPORT = web.AppKey("transport", str)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    """A request refused with this status and message (turned into a JSON error)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(data: Any) -> str:
    # default=str: Paths, Decimals and datetimes in a status document still serialise.
    return json.dumps(data, default=str)


def _json(data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response(dict(data), status=status, dumps=_dumps)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _peer(request: web.Request, transport: str) -> tuple[str, int | None]:
    """Who sent this request, for the journal (the peer's uid/pid on a Unix socket), and
    the peer's uid when the socket can tell."""
    if transport == "tcp":
        peer = request.transport.get_extra_info("peername") if request.transport else None
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
        return f"control tcp ({where})", None
    sock = request.transport.get_extra_info("socket") if request.transport else None
    so_peercred = getattr(socket, "SO_PEERCRED", None)  # Linux only
    if sock is not None and so_peercred is not None:
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", creds)
            return f"control socket (uid {uid}, pid {pid})", int(uid)
        except OSError:
            pass
    return "control socket", None


def _peer_source(request: web.Request, transport: str) -> str:
    return _peer(request, transport)[0]


class ControlServer:
    """The control API for one daemon. ``async with ControlServer(...) as server:``.

    ``tcp_port`` None serves only the Unix socket; an int (0 = any free port) also
    serves 127.0.0.1 and then a token is required. ``tokens`` are the role tokens
    (:class:`~bot.governance.roles.TokenRegistry`); ``token`` alone is the single admin
    token of earlier versions. ``socket_role``: the role of a tokenless request on the
    Unix socket. Build it from settings with :meth:`from_settings`.
    """

    def __init__(
        self,
        handler: ControlHandler,
        *,
        socket_path: Path,
        log: Logger,
        metrics: Metrics | None = None,
        tcp_port: int | None = None,
        token: SecretStr | None = None,
        tokens: TokenRegistry | None = None,
        socket_role: Role = Role.ADMIN,
        health_timeout_s: float = 2.0,
        dashboard: Dashboard | None = None,
    ) -> None:
        if tokens is None:
            usable = token is not None and len(token.get_secret_value()) >= MIN_TOKEN_CHARS
            tokens = TokenRegistry({"admin": token} if token is not None and usable else {})
        if tcp_port is not None and not len(tokens):
            raise ConfigError(
                "the TCP control API needs a bearer token of at least "
                f"{MIN_TOKEN_CHARS} characters (BACKSTOP_CONTROL__TOKEN or control.token_file)"
            )
        if dashboard is not None and tcp_port is None:
            raise ConfigError("the dashboard is served on the TCP listener: enable it too")
        self._handler = handler
        self.socket_path = socket_path
        self._log = log
        self.metrics = metrics if metrics is not None else Metrics()
        self._want_tcp_port = tcp_port
        self._tokens = tokens
        self._socket_role = socket_role
        self._health_timeout_s = health_timeout_s
        self._dashboard = dashboard
        self.auth_failures = 0
        self.tcp_port: int | None = None
        """The bound TCP port once started (useful with port 0), else None."""
        self._runners: list[web.AppRunner] = []
        self._socket_inode: int | None = None
        self._started = False
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        handler: ControlHandler,
        *,
        log: Logger,
        metrics: Metrics | None = None,
    ) -> ControlServer:
        control = settings.control
        return cls(
            handler,
            socket_path=settings.control_socket_path,
            log=log,
            metrics=metrics,
            tcp_port=control.tcp_port if control.tcp_enabled else None,
            tokens=TokenRegistry.from_settings(control),
            socket_role=Role.parse(control.socket_role),
            dashboard=Dashboard.from_settings(settings, handler, log=log),
        )

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise RuntimeError("a closed ControlServer cannot be restarted; make a new one")
        self._started = True
        try:
            unix_sock = self._bind_unix()
            await self._serve(self._make_app("unix"), unix_sock)
            if self._want_tcp_port is not None:
                tcp_sock = self._bind_tcp(self._want_tcp_port)
                self.tcp_port = tcp_sock.getsockname()[1]
                await self._serve(self._make_app("tcp"), tcp_sock)
        except BaseException:
            await self.aclose()
            raise
        self._log.info(
            "control_listening",
            socket=str(self.socket_path),
            tcp=f"{TCP_HOST}:{self.tcp_port}" if self.tcp_port is not None else None,
        )

    async def aclose(self) -> None:
        """Stop serving and remove our socket file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        runners, self._runners = self._runners, []
        for runner in runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._unlink_socket()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _serve(self, app: web.Application, sock: socket.socket) -> None:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        self._runners.append(runner)
        await runner.setup()
        await web.SockSite(runner, sock).start()

    def _bind_unix(self) -> socket.socket:
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise ConfigError(
                f"control socket path {path} is {len(os.fsencode(path))} bytes, longer than "
                f"the {MAX_SOCKET_PATH_BYTES} a Unix socket path may have; use a shorter "
                "state dir or set control.socket"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OperationalError(
                f"cannot create {path.parent} for the control socket: {e}"
            ) from None
        self._remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            # Nobody can connect before listen(), which SockSite calls later: tightening
            # the mode here, between bind and listen, leaves no window at the umask's mode.
            os.chmod(path, 0o600)
            self._socket_inode = os.stat(path).st_ino
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"control socket {path} appeared while starting: is another backstop "
                    "starting on this state dir?"
                ) from None
            raise OperationalError(f"cannot create control socket {path}: {e}") from None
        sock.setblocking(False)
        return sock

    @staticmethod
    def _remove_stale_socket(path: Path) -> None:
        """Remove a socket file left by a dead daemon; refuse to touch anything else."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise UserError(
                f"{path} exists and is not a socket; refusing to replace it with the control "
                "socket (move it away or set control.socket)"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            # Nobody listening: the file outlived its daemon (kill -9, crash).
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        except OSError as e:
            raise OperationalError(
                f"cannot check the existing control socket {path}: {e}"
            ) from None
        finally:
            probe.close()
        raise UserError(
            f"another process is serving the control socket {path}; is another backstop "
            "running on this state dir?"
        )

    def _bind_tcp(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((TCP_HOST, port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"control TCP port {TCP_HOST}:{port} is already in use; set "
                    "control.tcp_port to a free port"
                ) from None
            raise OperationalError(f"cannot listen on {TCP_HOST}:{port}: {e}") from None
        sock.setblocking(False)
        return sock

    def _unlink_socket(self) -> None:
        # Only our own socket: a successor daemon may already have bound a new one there.
        inode, self._socket_inode = self._socket_inode, None
        if inode is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.socket_path).st_ino == inode:
                self.socket_path.unlink()

    # ---- the web app --------------------------------------------------------------------

    def _make_app(self, transport: str) -> web.Application:
        middlewares: list[Middleware] = [
            self._errors_middleware(transport),
            self._auth_middleware(transport),
        ]
        app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
        app[_TRANSPORT] = transport
        app.router.add_get("/status", self._status, allow_head=False)
        app.router.add_post("/kill", self._kill)
        app.router.add_post("/resume", self._resume)
        app.router.add_post("/pause", self._pause)
        app.router.add_post("/unpause", self._unpause)
        app.router.add_post("/cancel-all", self._cancel_all)
        app.router.add_get("/healthz", self._healthz, allow_head=False)
        app.router.add_get("/metrics", self._metrics, allow_head=False)
        app.router.add_get("/policy", self._policy, allow_head=False)
        app.router.add_post("/policy", self._set_policy)
        if transport == "tcp" and self._dashboard is not None:
            self._dashboard.mount(app)
        return app

    def _errors_middleware(self, transport: str) -> Middleware:
        @web.middleware
        async def errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
            route = request.match_info.route.resource
            endpoint = route.canonical if route is not None else "unknown"
            try:
                response = await handler(request)
            except _Refused as e:
                response = _error(e.status, e.message)
            except UserError as e:
                response = _error(getattr(e, "http_status", 400), str(e))
            except web.HTTPNotFound:
                response = _error(
                    404, f"unknown endpoint {request.path!r}; endpoints: {_ENDPOINT_LIST}"
                )
            except web.HTTPMethodNotAllowed as e:
                allowed = ", ".join(sorted(e.allowed_methods))
                response = _error(
                    405,
                    f"{request.method} is not allowed on {request.path}; use {allowed}",
                    headers={"Allow": allowed},
                )
            except web.HTTPRequestEntityTooLarge:
                response = _error(413, f"request body over {MAX_BODY_BYTES} bytes")
            except web.HTTPException as e:
                response = _error(e.status, e.reason)
            except TemporaryError as e:
                self._log.warning("control_command_failed", path=request.path, error=str(e))
                response = _error(503, f"temporarily failed, try again: {e}")
            except BackstopError as e:
                self._log.error("control_command_failed", path=request.path, error=str(e))
                response = _error(500, f"{type(e).__name__}: {e}")
            except Exception as e:
                self._log.exception("control_internal_error", path=request.path)
                response = _error(
                    500, f"internal error in the daemon ({type(e).__name__}); see its log"
                )
            self.metrics.record_control_request(endpoint, response.status)
            self._log.debug(
                "control_request",
                transport=transport,
                method=request.method,
                path=request.path,
                status=response.status,
            )
            return response

        return errors

    def _auth_middleware(self, transport: str) -> Middleware:
        tokens = self._tokens

        @web.middleware
        async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
            if (
                transport == "tcp"
                and self._dashboard is not None
                and self._dashboard.is_public(request)
            ):
                return await handler(request)  # the pages hold no data; their API does
            via, uid = _peer(request, transport)
            header = request.headers.get("Authorization")
            if header is None and transport == "unix":
                principal = Principal(self._socket_role, None, via, uid)
            else:
                scheme, _, presented = (header or "").partition(" ")
                found = tokens.match(presented) if scheme.lower() == "bearer" else None
                if found is None:
                    why = "missing bearer token" if not header else "wrong bearer token"
                    self._refuse_token(request, via, why)
                principal = Principal(found[1], found[0], via, uid)
            route = request.match_info.route.resource
            path = route.canonical if route is not None else request.path
            needed = required_role(request.method, path)
            if principal.role < needed:
                self._log.warning(
                    "control_forbidden",
                    who=principal.describe(),
                    role=principal.role.label,
                    needed=needed.label,
                    method=request.method,
                    path=path,
                )
                raise _Refused(
                    403,
                    f"{principal.identity} has the {principal.role.label} role; "
                    f"{request.method} {path} needs {needed.label} (docs/governance.md)",
                )
            reset = current_principal.set(principal)
            try:
                return await handler(request)
            finally:
                current_principal.reset(reset)

        return auth

    def _refuse_token(self, request: web.Request, via: str, why: str) -> NoReturn:
        self.auth_failures += 1
        self.metrics.record_auth_failure()
        # Never log the header: a wrong token is often the right one with a typo.
        self._log.warning(
            "control_auth_refused",
            reason=why,
            peer=via,
            path=request.path,
            failures=self.auth_failures,
        )
        raise _Refused(401, f"{why}: send 'Authorization: Bearer <token>'")

    # ---- endpoints ------------------------------------------------------------------------

    def _source(self, request: web.Request) -> str:
        principal = current_principal.get()
        if principal is not None:
            return principal.describe()
        return _peer_source(request, request.app[_TRANSPORT])

    async def _status(self, request: web.Request) -> web.Response:
        data = dict(await self._handler.status())
        data["control"] = {
            "auth_failures": self.auth_failures,
            "socket": str(self.socket_path),
            "tcp": f"{TCP_HOST}:{self.tcp_port}" if self.tcp_port is not None else None,
        }
        return _json(data)

    async def _kill(self, request: web.Request) -> web.Response:
        body = await _body(request, required=("reason",))
        return _json(await self._handler.kill(body["reason"], self._source(request)))

    async def _resume(self, request: web.Request) -> web.Response:
        body = await _body(request, required=("reason",))
        return _json(await self._handler.resume(body["reason"], self._source(request)))

    async def _pause(self, request: web.Request) -> web.Response:
        body = await _body(request, required=("symbol", "reason"))
        symbol = self._known_symbol(body["symbol"])
        return _json(await self._handler.pause(symbol, body["reason"], self._source(request)))

    async def _unpause(self, request: web.Request) -> web.Response:
        body = await _body(request, required=("symbol",))
        symbol = self._known_symbol(body["symbol"])
        return _json(await self._handler.unpause(symbol, self._source(request)))

    async def _cancel_all(self, request: web.Request) -> web.Response:
        body = await _body(request, required=("reason",))
        return _json(await self._handler.cancel_all(body["reason"], self._source(request)))

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            health = await asyncio.wait_for(self._handler.health(), self._health_timeout_s)
        except TimeoutError:
            return _json(
                {
                    "status": "unhealthy",
                    "reasons": [
                        f"the daemon did not answer its health check within "
                        f"{self._health_timeout_s:g}s (engine stuck?)"
                    ],
                },
                503,
            )
        except Exception as e:
            self._log.exception("control_health_check_failed")
            return _json(
                {"status": "unhealthy", "reasons": [f"health check failed: {type(e).__name__}"]},
                503,
            )
        data = {"status": "ok" if health.ok else "unhealthy", "reasons": list(health.reasons)}
        data.update(health.detail)
        return _json(data, 200 if health.ok else 503)

    async def _policy(self, request: web.Request) -> web.Response:
        get = getattr(self._handler, "policy", None)
        if get is None:
            raise _Refused(404, "this daemon runs no intervention policy")
        return _json(await get())

    async def _set_policy(self, request: web.Request) -> web.Response:
        put = getattr(self._handler, "set_policy", None)
        if put is None:
            raise _Refused(404, "this daemon runs no intervention policy")
        body = await _body(request, required=("policy", "reason"), text=("policy",))
        return _json(await put(body["policy"], body["reason"], self._source(request)))

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type}
        )

    def _known_symbol(self, symbol: str) -> str:
        known = list(self._handler.symbols())
        if symbol in known:
            return symbol
        squashed = {_squash(s): s for s in known}
        hint = (
            f" (did you mean {squashed[_squash(symbol)]!r}?)"
            if _squash(symbol) in squashed
            else suggest(symbol, known)
        )
        raise _Refused(
            400, f"unknown symbol {symbol!r}{hint}; this daemon trades {', '.join(known) or '-'}"
        )


def _squash(symbol: str) -> str:
    """``btc-usdt`` and ``BTCUSDT`` both squash to ``BTCUSDT`` (for "did you mean")."""
    return "".join(c for c in symbol.upper() if c.isalnum())


_EXAMPLES = {
    "reason": "why (it is logged and journaled)",
    "symbol": "BTC/USDT",
    "policy": "the policy file's TOML text",
}


async def _body(
    request: web.Request, *, required: tuple[str, ...], text: tuple[str, ...] = ()
) -> dict[str, str]:
    """The request's JSON object with exactly the ``required`` string fields.

    Fields in ``text`` may span lines (a policy file) and be up to
    :data:`MAX_POLICY_CHARS` long; the others are one line of :data:`MAX_REASON_CHARS`.
    """
    example = _dumps({k: _EXAMPLES.get(k, "...") for k in required})
    where = f"{request.method} {request.path}"
    raw = await request.read()
    if not raw.strip():
        raise _Refused(400, f"{where} needs a JSON body like {example}")
    try:
        # Decode first: json.loads(bytes) would guess UTF-16/32 from the first bytes.
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Refused(400, f"{where}: body is not UTF-8 text; send JSON like {example}") from None
    except json.JSONDecodeError as e:
        raise _Refused(
            400, f"{where}: body is not valid JSON ({e.msg} at character {e.pos}); send {example}"
        ) from None
    if not isinstance(data, dict):
        raise _Refused(400, f"{where}: body must be a JSON object like {example}")
    for key in data:
        if key not in required:
            raise _Refused(
                400,
                f"{where}: unknown field {key!r}{suggest(str(key), list(required))}; "
                f"it takes {', '.join(required)}",
            )
    out: dict[str, str] = {}
    for key in required:
        value = data.get(key)
        if value is None:
            raise _Refused(400, f"{where}: missing {key!r}: send {example}")
        if not isinstance(value, str):
            raise _Refused(400, f"{where}: {key!r} must be a string, got {type(value).__name__}")
        value = value.strip()
        if not value:
            raise _Refused(400, f"{where}: {key!r} is empty: say {_EXAMPLES.get(key, 'it')}")
        if key in text:
            if len(value) > MAX_POLICY_CHARS:
                raise _Refused(400, f"{where}: {key!r} is over {MAX_POLICY_CHARS} characters")
            if any((ord(c) < 32 and c not in "\n\r\t") or ord(c) == 127 for c in value):
                raise _Refused(400, f"{where}: {key!r} holds control characters")
            out[key] = value + "\n"
            continue
        if len(value) > MAX_REASON_CHARS:
            raise _Refused(400, f"{where}: {key!r} is over {MAX_REASON_CHARS} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            # One line each: reasons go to logs and the journal, where a newline could
            # forge an extra record.
            raise _Refused(400, f"{where}: {key!r} must be one line without control characters")
        out[key] = value
    return out
