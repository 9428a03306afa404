"""Operator control: the control API server, its client and CLI commands, metrics, pid file.

The daemon implements :class:`ControlHandler` and serves it with :class:`ControlServer`;
``backstop status|kill|resume|pause|unpause|cancel-all|policy`` (:mod:`bot.control.commands`)
talk to it over the Unix socket in the state dir.
"""

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
