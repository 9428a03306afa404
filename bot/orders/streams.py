"""Following a private websocket stream (``watch_orders``/``watch_my_trades``) forever.

ccxt.pro returns from each ``watch_*`` call with the updates since the previous one and
reconnects when called again after an error. What a dead stream carried is lost, so
after every reconnect the caller's ``catch_up`` (a reconcile) runs, once the new
subscription is on its way, so that nothing falls between the listing and the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bot.errors import BackstopError, RateLimited, TemporaryError
from bot.exchanges import map_ccxt_error
from bot.logs import Logger
from bot.orders.calls import VenueCalls

Watch = Callable[[str], Awaitable[list[dict[str, Any]]]]


async def follow(
    watch: Watch,
    symbol: str,
    handle: Callable[[dict[str, Any]], None],
    *,
    catch_up: Callable[[], Awaitable[bool]],
    calls: VenueCalls,
    log: Logger,
    name: str,
) -> None:
    """Feed every pushed item to ``handle`` until cancelled.

    Temporary errors: back off (longer after a rate limit), resubscribe, then
    ``catch_up()`` (retried after the next push while it returns False). Any other
    error is raised, mapped to :mod:`bot.errors`.
    """
    backoff = calls.backoff()
    reconnected = False
    while True:
        pending = asyncio.ensure_future(watch(symbol))
        try:
            if reconnected:
                await asyncio.sleep(0)  # let the subscription go out first
                reconnected = not await catch_up()
            items = await pending
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as e:
            err = e if isinstance(e, BackstopError) else map_ccxt_error(e)
            if not isinstance(err, TemporaryError):
                raise err from e
            delay = backoff.next_delay(rate_limited=isinstance(err, RateLimited))
            log.warning("order_stream_error", stream=name, delay_s=delay, error=str(err))
            await calls.sleep(delay)
            reconnected = True
            continue
        backoff.reset()
        for item in items:
            handle(item)
