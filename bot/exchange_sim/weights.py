"""Request weight accounting, as Binance does it for REQUEST_WEIGHT / 1 MINUTE.

The window is a fixed calendar minute of the emulator clock (Binance resets the
counter at the start of each minute, it is not a sliding window). Over the limit a
request is refused with 429 and ``Retry-After`` = seconds until the window resets.
"""

from __future__ import annotations

from bot.clock import Clock
from bot.exchange_sim.errors import ApiError

WINDOW_MS = 60_000
NS_PER_MS = 1_000_000


class RequestWeights:
    def __init__(self, clock: Clock, limit_per_minute: int = 6000) -> None:
        self._clock = clock
        self.limit = limit_per_minute
        self._window = -1
        self.used = 0

    def charge(self, weight: int) -> int:
        """Count ``weight`` for this request; the weight used in the window after it.

        Raises the 429 :class:`ApiError` when the window's limit would be exceeded
        (the refused request still counts, as on Binance).
        """
        now_ms = self._clock.now_ns() // NS_PER_MS
        window = now_ms // WINDOW_MS
        if window != self._window:
            self._window = window
            self.used = 0
        self.used += weight
        if self.used > self.limit:
            retry_after_s = max(1, -(-((window + 1) * WINDOW_MS - now_ms) // 1000))
            raise ApiError(
                429,
                -1003,
                f"Too much request weight used; current limit is {self.limit} request weight"
                " per 1 MINUTE. Please use WebSocket Streams for live updates to avoid"
                " polling the API.",
                {"Retry-After": str(retry_after_s), "X-MBX-USED-WEIGHT-1M": str(self.used)},
            )
        return self.used
