"""Operator control: the control API server, its client and CLI commands, metrics, pid file.

The daemon implements :class:`ControlHandler` and serves it with :class:`ControlServer`;
``backstop status|kill|resume|pause|unpause|cancel-all|policy`` (:mod:`bot.control.commands`)
talk to it over the Unix socket in the state dir.

The names below are imported on first use (PEP 562): the server and the client pull in
aiohttp (~30 MB), which ``backstop run`` without a control socket never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.control.api import (
        SOCKET_NAME,
        CommandConflict,
        CommandRefused,
        ControlHandler,
        DaemonStatus,
        Health,
        MarketStatus,
    )
    from bot.control.client import (
        CommandFailed,
        ControlClient,
        ControlResponse,
        ControlTarget,
        DaemonNotRunning,
    )
    from bot.control.metrics import Metrics
    from bot.control.pidfile import PID_FILE_NAME, AlreadyRunning, PidFile
    from bot.control.server import ControlServer

_WHERE: dict[str, str] = {
    "SOCKET_NAME": "api",
    "CommandConflict": "api",
    "CommandRefused": "api",
    "ControlHandler": "api",
    "DaemonStatus": "api",
    "Health": "api",
    "MarketStatus": "api",
    "CommandFailed": "client",
    "ControlClient": "client",
    "ControlResponse": "client",
    "ControlTarget": "client",
    "DaemonNotRunning": "client",
    "Metrics": "metrics",
    "PID_FILE_NAME": "pidfile",
    "AlreadyRunning": "pidfile",
    "PidFile": "pidfile",
    "ControlServer": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "PID_FILE_NAME",
    "SOCKET_NAME",
    "AlreadyRunning",
    "CommandConflict",
    "CommandFailed",
    "CommandRefused",
    "ControlClient",
    "ControlHandler",
    "ControlResponse",
    "ControlServer",
    "ControlTarget",
    "DaemonNotRunning",
    "DaemonStatus",
    "Health",
    "MarketStatus",
    "Metrics",
    "PidFile",
]
