"""Every venue call the manager makes: rate limited, retried by error class, paused on 429.

- Calls go through a throttler (``asyncio_throttle.Throttler`` by default): cancels
  through their own, so a kill never queues behind creates (``cancel_rate_limit``).
- :class:`~bot.errors.TemporaryError` is retried ``retries`` times (the caller decides:
  0 for a create, whose outcome is unknown after a timeout), with jittered backoff.
- :class:`~bot.errors.RateLimited` pauses *every* call for the backoff delay (the venue
  counts all our requests, not just the refused one) and is re-sent up to
  ``rate_limited_retries`` times: the venue did not act on a refused request.
- Anything else is raised at once, mapped to :mod:`bot.errors` with the ccxt error as cause.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from asyncio_throttle.throttler import Throttler

from bot.clock import NS_PER_SECOND, Clock
from bot.errors import BackstopError, RateLimited, TemporaryError
from bot.exchanges import map_ccxt_error
from bot.feeds.retry import Backoff
from bot.logs import Logger
from bot.orders.config import OrderManagerConfig

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class Throttle(Protocol):
    """An async context manager admitting one call per entry (asyncio_throttle.Throttler)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any: ...


class VenueCalls:
    def __init__(
        self,
        *,
        config: OrderManagerConfig,
        clock: Clock,
        rng: random.Random,
        log: Logger,
        sleep: Sleep = asyncio.sleep,
        throttler: Throttle | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._log = log
        self.sleep = sleep
        self._throttler: Throttle = throttler or Throttler(
            rate_limit=config.rate_limit, period=config.rate_period_s
        )
        self._cancel_throttler: Throttle = throttler or Throttler(
            rate_limit=config.cancel_rate_limit, period=config.rate_period_s
        )
        self._pause_until_ns = 0

    async def call(
        self, fn: Callable[[], Awaitable[T]], *, retries: int, cancel: bool = False
    ) -> T:
        """One venue call through the rate limiter, with the retry policy of the module doc.

        ``cancel=True`` uses the cancels' own limiter (see ``cancel_rate_limit``).
        Raises :mod:`bot.errors` classes only (ccxt errors are mapped, cause kept).
        """
        throttler = self._cancel_throttler if cancel else self._throttler
        # Built on the first failure: almost every call succeeds at once, and the order
        # path pays for each object made before the create leaves.
        backoff: Backoff | None = None
        temporary_left = retries
        rate_limited_left = self._config.rate_limited_retries
        while True:
            if self._pause_until_ns > 0:
                await self._respect_pause()
            try:
                async with throttler:
                    return await fn()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = e if isinstance(e, BackstopError) else map_ccxt_error(e)
                if backoff is None:
                    backoff = self.backoff()
                if isinstance(err, RateLimited):
                    delay = max(backoff.next_delay(rate_limited=True), err.retry_after_s or 0.0)
                    until = self._clock.now_ns() + int(delay * NS_PER_SECOND)
                    self._pause_until_ns = max(self._pause_until_ns, until)
                    self._log.warning("venue_rate_limited", delay_s=round(delay, 3), error=str(err))
                    if rate_limited_left <= 0:
                        raise err from e
                    rate_limited_left -= 1
                    continue
                if isinstance(err, TemporaryError) and temporary_left > 0:
                    temporary_left -= 1
                    delay = backoff.next_delay()
                    self._log.info("venue_call_retry", delay_s=round(delay, 3), error=str(err))
                    await self.sleep(delay)
                    continue
                if err is e:
                    raise
                raise err from e

    async def _respect_pause(self) -> None:
        while (wait_ns := self._pause_until_ns - self._clock.now_ns()) > 0:
            await self.sleep(wait_ns / NS_PER_SECOND)

    def backoff(self) -> Backoff:
        return Backoff(self._config.backoff_initial_s, self._config.backoff_max_s, self._rng)
