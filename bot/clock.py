"""Injected time.

Everything that needs "now" takes a :class:`Clock`. Live runs use :class:`WallClock`;
replay and tests use :class:`ManualClock`, which the replay driver advances to each
event's receive time, so a replay is deterministic and runs as fast as the CPU allows.
"""

from __future__ import annotations

import time
from typing import Protocol

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the Unix epoch."""
        ...


class WallClock:
    """The system clock."""

    def now_ns(self) -> int:
        return time.time_ns()


class ManualClock:
    """A clock that only moves when told to; never moves backwards."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def now_ns(self) -> int:
        return self._now_ns

    def set(self, ns: int) -> None:
        # Recorded receive stamps can tie or (rarely) step back by a few ns across
        # streams; time as seen by the bot must stay monotonic.
        if ns > self._now_ns:
            self._now_ns = ns

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError("a clock cannot move backwards")
        self._now_ns += ns
