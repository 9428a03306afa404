"""Talking to a running daemon's control API (what ``backstop status``/``kill``... use)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import SecretStr

from bot.control.api import SOCKET_NAME
from bot.errors import BackstopError, OperationalError, TemporaryError, UserError

DEFAULT_TIMEOUT_S = 30.0
"""Long enough for a kill to cancel everything and confirm (cancel_timeout_s is 10 s)."""


class DaemonNotRunning(OperationalError):
    """Nothing answers at the target: no socket file, or nobody listening on it."""


class CommandFailed(BackstopError):
    """The daemon answered with an error; ``status`` is the HTTP status, the message its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def is_user_mistake(self) -> bool:
        return 400 <= self.status < 500


@dataclass(frozen=True)
class ControlTarget:
    """Where the daemon listens: a Unix socket, or 127.0.0.1:port with a bearer token."""

    socket_path: Path | None = None
    tcp_port: int | None = None
    token: SecretStr | None = None
    host: str = "127.0.0.1"

    @classmethod
    def for_state_dir(cls, state_dir: Path | str, token: SecretStr | None = None) -> ControlTarget:
        """The state dir's socket; with ``token``, act as that token's role and name."""
        return cls(socket_path=Path(state_dir) / SOCKET_NAME, token=token)

    @classmethod
    def tcp(cls, port: int, token: SecretStr, host: str = "127.0.0.1") -> ControlTarget:
        return cls(tcp_port=port, token=token, host=host)

    def describe(self) -> str:
        if self.socket_path is not None:
            return f"control socket at {self.socket_path}"
        return f"{self.host}:{self.tcp_port}"

    def not_running(self) -> str:
        if self.socket_path is not None:
            return f"backstop is not running (no control socket at {self.socket_path})"
        return f"backstop is not running (nothing listening on {self.host}:{self.tcp_port})"


@dataclass(frozen=True)
class ControlResponse:
    status: int
    data: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ControlClient:
    """``async with ControlClient(target) as client: await client.kill("reason")``.

    Raises :class:`DaemonNotRunning` when nothing listens, :class:`CommandFailed` when
    the daemon refuses (its reason as the message), :class:`TemporaryError` on timeout
    and :class:`OperationalError` for anything else that went wrong on the way.
    """

    def __init__(self, target: ControlTarget, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if (target.socket_path is None) == (target.tcp_port is None):
            raise UserError("a control target is either a Unix socket or a TCP port")
        self.target = target
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> tuple[aiohttp.ClientSession, str]:
        target = self.target
        if self._session is None:
            connector: aiohttp.BaseConnector
            if target.socket_path is not None:
                connector = aiohttp.UnixConnector(path=str(target.socket_path))
            else:
                connector = aiohttp.TCPConnector()
            headers = {}
            if target.token is not None:
                headers["Authorization"] = f"Bearer {target.token.get_secret_value()}"
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        # The host part of the URL is ignored on a Unix socket.
        base = (
            "http://backstop"
            if target.socket_path is not None
            else (f"http://{target.host}:{target.tcp_port}")
        )
        return self._session, base

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> ControlResponse:
        """One call; returns the answer whatever its status (see the raising helpers)."""
        target = self.target
        if target.socket_path is not None and not target.socket_path.exists():
            raise DaemonNotRunning(target.not_running())
        session, base = self._open()
        try:
            async with session.request(method, base + path, json=body) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, ConnectionRefusedError | FileNotFoundError):
                raise DaemonNotRunning(target.not_running()) from None
            if isinstance(e.os_error, PermissionError):
                raise OperationalError(
                    f"permission denied on the {target.describe()} (mode 0600: run this "
                    "as the user the daemon runs as)"
                ) from None
            raise OperationalError(f"cannot connect to the {target.describe()}: {e}") from None
        except TimeoutError:
            raise TemporaryError(
                f"backstop did not answer within {self._timeout_s:g}s ({target.describe()})"
            ) from None
        except aiohttp.ClientError as e:
            raise OperationalError(
                f"control request to the {target.describe()} failed: {type(e).__name__}: {e}"
            ) from None
        try:
            data = json.loads(text) if text else {}
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise OperationalError(
                f"unexpected answer from the {target.describe()} (HTTP {status}, not a JSON "
                "object): is that a backstop control socket?"
            )
        return ControlResponse(status, data)

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Like :meth:`request` but an error answer raises :class:`CommandFailed`."""
        response = await self.request(method, path, body)
        if not response.ok:
            message = response.data.get("error") or f"HTTP {response.status}"
            raise CommandFailed(response.status, str(message))
        return response.data

    # ---- the commands -----------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self.call("GET", "/status")

    async def kill(self, reason: str) -> dict[str, Any]:
        return await self.call("POST", "/kill", {"reason": reason})

    async def resume(self, reason: str) -> dict[str, Any]:
        return await self.call("POST", "/resume", {"reason": reason})

    async def pause(self, symbol: str, reason: str) -> dict[str, Any]:
        return await self.call("POST", "/pause", {"symbol": symbol, "reason": reason})

    async def unpause(self, symbol: str) -> dict[str, Any]:
        return await self.call("POST", "/unpause", {"symbol": symbol})

    async def cancel_all(self, reason: str) -> dict[str, Any]:
        return await self.call("POST", "/cancel-all", {"reason": reason})

    async def policy(self) -> dict[str, Any]:
        return await self.call("GET", "/policy")

    async def set_policy(self, text: str, reason: str) -> dict[str, Any]:
        return await self.call("POST", "/policy", {"policy": text, "reason": reason})

    async def health(self) -> ControlResponse:
        """``/healthz``: 200 or 503, both with a JSON body (so not raising on 503)."""
        return await self.request("GET", "/healthz")

    async def metrics_text(self) -> str:
        if self.target.socket_path is not None and not self.target.socket_path.exists():
            raise DaemonNotRunning(self.target.not_running())
        session, base = self._open()
        try:
            async with session.get(base + "/metrics") as response:
                text = await response.text()
                if response.status != 200:
                    raise CommandFailed(response.status, text.strip() or "metrics refused")
                return text
        except aiohttp.ClientConnectorError:
            raise DaemonNotRunning(self.target.not_running()) from None
        except TimeoutError:
            raise TemporaryError(f"backstop did not answer within {self._timeout_s:g}s") from None
