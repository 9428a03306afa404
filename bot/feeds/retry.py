"""Reconnect backoff for feeds: exponential, jittered, capped, with an injected RNG.

The ccxt error translation lives in :func:`bot.exchanges.map_ccxt_error` (venue code
needs it too); this module only decides *how long* to wait.
"""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with "equal jitter".

    Attempt ``n`` waits a uniform random time in ``[b/2, b]`` where
    ``b = min(max_s, initial_s * 2**n)``. Half the delay is fixed so that delays
    never shrink while ``b`` is still growing (each step's minimum equals the
    previous step's maximum); the random half spreads out many clients (or many
    symbols on one connection) that failed at the same instant.

    A rate-limit response jumps ``rate_limit_extra_steps`` further up the ladder,
    so after being told to slow down we wait longer than after a network blip,
    and keep waiting longer for later failures until :meth:`reset`.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        rng: random.Random,
        *,
        rate_limit_extra_steps: int = 2,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng
        self._extra = rate_limit_extra_steps
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self, *, rate_limited: bool = False) -> float:
        """Seconds to wait before the next attempt; advances the ladder."""
        if rate_limited:
            self._attempt += self._extra
        # Cap the exponent as well as the delay: 2**n overflows a float at n=1024.
        exponent = min(self._attempt, 64)
        base = min(self._max_s, self._initial_s * 2.0**exponent)
        self._attempt += 1
        return base / 2 + self._rng.uniform(0.0, base / 2)

    def reset(self) -> None:
        """Back to the first step, after the connection has been healthy for a while."""
        self._attempt = 0
