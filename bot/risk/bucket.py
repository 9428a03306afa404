"""A token bucket on the injected clock: ``capacity`` orders at once, refilled at ``rate``/s.

Time is passed in (never read from the wall), so a replay limits orders per second of
*data* time, the same way live limits them per second of wall time.
"""

from __future__ import annotations

from bot.clock import NS_PER_SECOND


class TokenBucket:
    def __init__(self, *, rate_per_s: float, capacity: int, now_ns: int) -> None:
        if not rate_per_s > 0 or capacity < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and capacity >= 1")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._tokens = float(capacity)
        self._last_ns = now_ns

    def _refill(self, now_ns: int) -> None:
        if now_ns > self._last_ns:  # a clock that ties or steps back adds nothing
            elapsed_s = (now_ns - self._last_ns) / NS_PER_SECOND
            self._tokens = min(float(self.capacity), self._tokens + elapsed_s * self.rate_per_s)
            self._last_ns = now_ns

    def available(self, now_ns: int) -> float:
        self._refill(now_ns)
        return self._tokens

    def try_take(self, now_ns: int) -> bool:
        """Take one token if there is one; False (and nothing taken) otherwise."""
        self._refill(now_ns)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
