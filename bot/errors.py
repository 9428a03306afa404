"""The bot's exception tree, named by what the caller must do about each error.

ccxt's many exception classes are mapped onto these at the venue/feed boundary
(``raise ... from e``) so the rest of the bot only has to decide between a few
actions: fix the input, retry later, back off, or stop and call a human.
"""

from __future__ import annotations


class BackstopError(Exception):
    """Base class for every error the bot raises on purpose."""


class UserError(BackstopError):
    """A mistake in what the user asked for. Reported in one line, never a traceback.

    ``exit_code`` is what the CLI exits with.
    """

    exit_code = 2


class ConfigError(UserError):
    """Bad configuration; the message names the source (file, env var), field and problem."""


class TemporaryError(BackstopError):
    """Usually resolves itself after a while (network blip, exchange hiccup): retry with backoff."""


class RateLimited(TemporaryError):
    """The venue asked us to slow down. Back off longer than for a plain temporary error,
    and at least ``retry_after_s`` when the venue said how long (``Retry-After``):
    calling again sooner is what gets an IP banned (Binance's 418)."""

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OperationalError(BackstopError):
    """Needs manual intervention (bad credentials, unknown symbol on the venue, banned IP)."""


class OrderRejected(BackstopError):
    """The venue refused this order as sent (invalid, post-only would cross, not funded).

    Do not retry it unchanged; report it (risk guards count bursts of these).
    """


class WouldTake(OrderRejected):
    """A post-only order the venue refused because it would have crossed: the venue's
    book is already through our price, which ours has not seen yet. Nothing happened
    (no fill, no fee); resending the same price before our book catches up would be
    refused again (:class:`bot.orders.fence.WouldTakeFence`)."""


class NeverSent(BackstopError):
    """A request the bot withdrew before it left the rate limiter (a create a kill or a
    pause no longer wants): the venue never saw it. Not a failure: nothing to report,
    nothing for the guards to count."""


class OrderNotFound(BackstopError):
    """The venue does not know this order id: treat the order as gone, then confirm with a fetch."""
