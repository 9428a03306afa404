"""What the control server needs from the daemon, and what it may raise back.

The server knows nothing about engines, books or venues: the daemon hands it a
:class:`ControlHandler`. That keeps the HTTP layer testable with a fake and keeps the
engine free of HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from bot.errors import UserError
from bot.governance.roles import Principal

SOCKET_NAME = "control.sock"
"""The control socket's file name in the state dir (unless ``control.socket`` says otherwise)."""

MAX_REASON_CHARS = 500
MAX_POLICY_CHARS = 48 * 1024

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
"""Who sent the request being handled (its token's name and role, or the socket peer).

Set by the server around every handler call, so a handler that needs more than the
``source`` string (the two-person rule counts identities) can read it without every
handler's signature changing."""


class CommandRefused(UserError):
    """The daemon will not do this as asked (unknown symbol, nothing to resume...).

    Raise it (or any :class:`~bot.errors.UserError`) from a handler method: the operator
    gets the message and HTTP ``http_status`` (400 unless a subclass says otherwise).
    """

    http_status = 400


class CommandConflict(CommandRefused):
    """The command does not fit the current state (resume while armed, unpause while running)."""

    http_status = 409


@dataclass(frozen=True)
class Health:
    """The daemon's own verdict for ``/healthz``.

    ``ok`` False (with ``reasons`` saying why) answers 503, so a supervisor restarts or
    pages. A tripped kill switch is *not* unhealthy: the daemon is doing its job.
    """

    ok: bool
    reasons: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)


class ControlHandler(Protocol):
    """Implemented by the daemon. Every command is journaled by the daemon with ``source``.

    ``source`` says who asked, as the server saw it (``"control socket (uid 1000, pid
    4242)"`` or ``"control tcp (127.0.0.1:53211)"``); reasons are already stripped,
    non-empty, one line and at most :data:`MAX_REASON_CHARS` long. Symbols passed to
    ``pause``/``unpause`` are already checked against :meth:`symbols`.
    """

    def symbols(self) -> Sequence[str]:
        """The markets this daemon trades (ccxt unified symbols)."""
        ...

    async def status(self) -> dict[str, Any]:
        """A JSON-able snapshot; :class:`DaemonStatus` lists the keys ``backstop status`` shows."""
        ...

    async def health(self) -> Health:
        """Engine alive (event loop turning, feeds processed recently)? Must answer fast."""
        ...

    async def kill(self, reason: str, source: str) -> dict[str, Any]: ...

    async def resume(self, reason: str, source: str) -> dict[str, Any]: ...

    async def pause(self, symbol: str, reason: str, source: str) -> dict[str, Any]: ...

    async def unpause(self, symbol: str, source: str) -> dict[str, Any]: ...

    async def cancel_all(self, reason: str, source: str) -> dict[str, Any]: ...


class GovernanceHandler(Protocol):
    """Optional: a daemon that runs under an intervention policy (``/policy``)."""

    async def policy(self) -> dict[str, Any]:
        """The policy in force: hash, name, source, the normalised policy, its text."""
        ...

    async def set_policy(self, text: str, reason: str, source: str) -> dict[str, Any]:
        """Take a new policy (TOML text) now; refuse with :class:`CommandRefused`."""
        ...


# ---- the status document: every key optional, the CLI shows what is there ----------
#
# Command results are free-form dicts; a "message" key, when present, is what the CLI
# prints (e.g. "kill switch tripped: 3 orders cancelled, none left open (0.12 s)").


class KillSwitchStatus(TypedDict, total=False):
    state: str
    """``armed``, ``tripped_cancelling`` or ``tripped_flat``."""
    reason: str | None
    source: str | None
    since: str | None
    """ISO 8601 time of the trip."""


class BookStatus(TypedDict, total=False):
    health: str
    """``ok``, ``stale``, ``invalid`` (gap, crossed) or ``disconnected``."""
    age_s: float | None
    """Seconds since the last book update."""
    mid: float | None
    spread_bps: float | None


class DepthBand(TypedDict, total=False):
    band_bps: float
    bid_quote: float
    ask_quote: float
    threshold_quote: float | None
    """Depth below this (per side) counts as a fracture."""
    baseline_quote: float | None


class PnlStatus(TypedDict, total=False):
    realised_quote: float
    unrealised_quote: float
    total_quote: float


class MarketStatus(TypedDict, total=False):
    symbol: str
    book: BookStatus
    depth: list[DepthBand]
    engaged: bool
    detector: str
    """Detector state name (``idle``, ``engaged``, ``recovering``...)."""
    paused: bool
    pause_reason: str | None
    open_orders: int
    inventory: dict[str, float]
    """Asset code -> amount held for this market's reserve."""
    committed_quote: float
    """Quote value locked in open orders."""
    pnl: PnlStatus
    guards: dict[str, str]
    """Guard name -> ``ok`` or ``<level>: <why>`` (``warn``, ``pause``, ``kill``)."""


class DaemonStatus(TypedDict, total=False):
    mode: str
    pid: int
    uptime_s: float
    kill_switch: KillSwitchStatus
    policy: dict[str, Any] | None
    """The intervention policy in force (hash, name, source) and a pending resume
    approval (:meth:`bot.governance.runtime.Governance.status`)."""
    markets: list[MarketStatus]
    guards: dict[str, str]
    """Guards that are not per market (total notional, daily loss, exchange errors)."""
    pnl: PnlStatus
    control: dict[str, Any]
    """Filled in by the server: auth failures, where it listens."""
