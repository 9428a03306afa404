"""Binance's answer to a client that ignores ``Retry-After``: an IP ban (HTTP 418).

Binance documents that "repeatedly violating rate limits and/or failing to back off
after receiving 429s will result in an automated IP ban (HTTP status 418)". The rule
here: once a 429 says ``Retry-After: N``, every request before those N seconds are up
is a violation; the ``violations_to_ban``-th violation bans the client for ``ban_s``
seconds (Binance: 2 minutes, growing for repeat offenders), and every request during
a ban gets the 418 with the seconds left. A client that waits out ``Retry-After`` is
never banned. The emulator serves one client (the bot on loopback), so "IP" is the
whole emulator.
"""

from __future__ import annotations

from bot.clock import Clock
from bot.exchange_sim.errors import ApiError

NS_PER_S = 1_000_000_000


class BanPolicy:
    def __init__(self, clock: Clock, *, violations_to_ban: int = 3, ban_s: int = 120) -> None:
        if violations_to_ban < 1 or ban_s < 1:
            raise ValueError("violations_to_ban and ban_s must be at least 1")
        self._clock = clock
        self.violations_to_ban = violations_to_ban
        self.ban_s = ban_s
        self._back_off_until_ns = 0
        self._banned_until_ns = 0
        self.violations = 0
        """Requests received while told to back off (all time)."""
        self.bans = 0
        self._strikes = 0  # violations since the last 429

    def check(self) -> None:
        """Before serving a request: raise the 418 if banned (or banned by this one)."""
        now = self._clock.now_ns()
        if now < self._banned_until_ns:
            raise self._ban_error(now)
        if now < self._back_off_until_ns:
            self.violations += 1
            self._strikes += 1
            if self._strikes >= self.violations_to_ban:
                self.bans += 1
                self._banned_until_ns = now + self.ban_s * NS_PER_S
                raise self._ban_error(now)

    def told_to_back_off(self, retry_after_s: int) -> None:
        """A 429 went out with ``Retry-After: retry_after_s``."""
        until = self._clock.now_ns() + retry_after_s * NS_PER_S
        if until > self._back_off_until_ns:
            self._back_off_until_ns = until
        self._strikes = 0

    def reset(self) -> None:
        """Forget any back-off and lift any ban (the admin API's ``clear``)."""
        self._back_off_until_ns = self._banned_until_ns = 0
        self._strikes = 0

    def _ban_error(self, now: int) -> ApiError:
        left_s = max(1, -(-(self._banned_until_ns - now) // NS_PER_S))
        return ApiError(
            418,
            -1003,
            f"Way too much request weight used; IP banned until "
            f"{self._banned_until_ns // 1_000_000}. Please use WebSocket Streams for live "
            "updates to avoid bans.",
            {"Retry-After": str(left_s)},
        )
