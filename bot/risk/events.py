"""What the risk engine publishes: guard firings, market pauses, trading-state changes.

Every record is immutable and stamped with the engine's injected clock, so a replay
produces the same stream as the run it replays; the journal stores them as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class TradingState(StrEnum):
    """Account-wide, after Nautilus' ``TradingState``."""

    ACTIVE = "active"
    """Orders that pass the checks are allowed."""
    REDUCING = "reducing"
    """Only orders that reduce the net position are allowed."""
    HALTED = "halted"
    """No new orders at all; cancels are always allowed (they are never checked)."""


class MarketState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    """At least one reason holds the market: its quotes are pulled, new ones refused."""
    REDUCING = "reducing"
    """A position guard holds the market (a perpetual near liquidation, over its leverage
    or position limit): its quotes are pulled, and only orders that shrink the position
    are allowed."""


class GuardLevel(StrEnum):
    WARN = "warn"
    PAUSE = "pause"
    KILL = "kill"
    REDUCE = "reduce"
    """The market's quotes are pulled and only position-reducing orders allowed."""
    PAUSE_SIDE = "pause_side"
    """One side of the market may not grow the position (the other side is untouched)."""


class Guard(StrEnum):
    """Every guard, by name (the names used in settings, events and status)."""

    STALE_BOOK = "stale_book"
    INVALID_BOOK = "invalid_book"
    FEED_DISCONNECTED = "feed_disconnected"
    REJECT_BURST = "reject_burst"
    RATE_LIMITED = "rate_limited"
    BALANCE_MISMATCH = "balance_mismatch"
    DAILY_LOSS = "daily_loss"
    DRAWDOWN = "drawdown"
    FAT_FINGER = "fat_finger"
    # Perpetual futures (bot.positions.PositionReading): fixed levels, see PERP_LEVELS.
    LIQUIDATION_DISTANCE = "liquidation_distance"
    MAX_LEVERAGE = "max_leverage"
    POSITION_LIMIT = "position_limit"
    FUNDING_COST = "funding_cost"
    MARK_PRICE_BAND = "mark_price_band"

    @property
    def is_data(self) -> bool:
        """Data guards recover by themselves when the data is healthy again."""
        return self in _DATA_GUARDS


_DATA_GUARDS = frozenset(
    {Guard.STALE_BOOK, Guard.INVALID_BOOK, Guard.FEED_DISCONNECTED, Guard.MARK_PRICE_BAND}
)

PERP_LEVELS: Mapping[Guard, GuardLevel] = MappingProxyType(
    {
        Guard.LIQUIDATION_DISTANCE: GuardLevel.REDUCE,
        Guard.MAX_LEVERAGE: GuardLevel.REDUCE,
        Guard.POSITION_LIMIT: GuardLevel.REDUCE,
        Guard.FUNDING_COST: GuardLevel.PAUSE_SIDE,
        Guard.MARK_PRICE_BAND: GuardLevel.PAUSE,
    }
)
"""The perpetual guards' levels. Fixed: pulling quotes and reducing is the only sane
answer near liquidation, and a mark that disagrees with the tape is bad data."""

OPERATOR = "operator"
"""The pause reason key of an operator's pause (beside guard names)."""

_EMPTY: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """A guard fired (its condition became true). ``symbol`` None: account-wide.

    ``reason`` reads ``UPPER_SNAKE: k=v ...``; ``numbers`` holds the same values for
    metrics and the journal.
    """

    ts_ns: int
    guard: Guard
    level: GuardLevel
    symbol: str | None
    reason: str
    numbers: Mapping[str, float] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class MarketStateChanged:
    """A market was paused or resumed. ``reasons``: what holds it now (key -> reason).

    ``cause`` says what changed, e.g. ``GUARD: guard=stale_book`` or
    ``RECOVERED: guard=stale_book healthy_s=1.0``.
    """

    ts_ns: int
    symbol: str
    previous: MarketState
    state: MarketState
    reasons: Mapping[str, str]
    cause: str


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    ts_ns: int
    previous: TradingState
    state: TradingState
    reason: str
    who: str


RiskEvent = GuardEvent | MarketStateChanged | TradingStateChanged
RiskObserver = Callable[[RiskEvent], None]
