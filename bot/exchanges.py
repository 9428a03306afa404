"""Building ccxt exchange objects, and translating ccxt's errors into the bot's.

Everything that talks to a venue gets its exchange from :func:`make_exchange`, so
rate limiting, sandbox selection, credentials and URL overrides are decided in one
place. :func:`map_ccxt_error` is the single translation from ccxt's ~40 exception
classes to the four actions in :mod:`bot.errors` (retry, back off, stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import functools
import time
from collections.abc import Mapping
from typing import Any

import ccxt

from bot.errors import (
    BackstopError,
    ConfigError,
    OperationalError,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    TemporaryError,
    WouldTake,
)


def make_exchange(
    exchange_id: str,
    *,
    sandbox: bool,
    api_key: str | None = None,
    secret: str | None = None,
    password: str | None = None,
    options: Mapping[str, Any] | None = None,
    pro: bool = True,
    url_overrides: Mapping[str, str] | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> Any:
    """Create an async ccxt exchange (``ccxt.pro`` by default, websockets + REST).

    - Rate limiting is always on: ccxt then spaces REST calls by each endpoint's cost.
    - ``sandbox=True`` switches to the venue's testnet URLs (``set_sandbox_mode``);
      a venue without a testnet is a :class:`ConfigError`, never a silent fall back
      to the real venue.
    - Credentials are optional: public market data needs none.
    - ``options`` is deep-merged by ccxt into the exchange's default ``options``
      (e.g. ``{"fetchMarkets": {"types": ["spot"]}}``).
    - ``url_overrides`` repoints individual API URLs, applied *after* sandbox
      selection. Keys are dotted paths into ``exchange.urls["api"]``, the dict
      ccxt reads every request's base URL from. For Binance spot::

          {"public": "http://127.0.0.1:8080/api/v3",   # REST market data
           "private": "http://127.0.0.1:8080/api/v3",  # REST trading
           "ws.spot": "ws://127.0.0.1:8080/ws"}        # websocket streams

      A path that does not exist is a :class:`ConfigError` listing the ones that
      do, so a typo cannot leave one endpoint silently pointing at the real venue.
    - ``extra_config`` is passed to the ccxt constructor as is (``timeout`` in ms,
      ``aiohttp_trust_env``, ``session``, proxies ...); it cannot override the
      settings above.

    Constructing an exchange makes no network calls; the caller owns it and must
    ``await exchange.close()``.
    """
    # Imported here: ccxt.pro and aiohttp cost ~30 MB that a paper replay never uses
    # (it needs only map_ccxt_error from this module).
    import ccxt.async_support
    import ccxt.pro

    module: Any = ccxt.pro if pro else ccxt.async_support
    available: list[str] = list(module.exchanges)
    if exchange_id not in available:
        kind = "ccxt.pro (websocket)" if pro else "ccxt"
        raise ConfigError(f"exchange {exchange_id!r} is not supported by {kind}")

    config: dict[str, Any] = dict(extra_config or {})
    config["enableRateLimit"] = True
    if options:
        config["options"] = dict(options)
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    if password is not None:
        config["password"] = password

    exchange = getattr(module, exchange_id)(config)
    _credit_idle_time(exchange)
    if sandbox:
        try:
            exchange.set_sandbox_mode(True)
        # ccxt raises NotSupported when `urls` lacks a "test" entry, but many
        # exchanges carry `"test": None`, which fails inside ccxt with TypeError.
        except (ccxt.NotSupported, TypeError, KeyError) as e:
            raise ConfigError(f"exchange {exchange_id!r} has no sandbox/testnet") from e
    if url_overrides:
        _apply_url_overrides(exchange, url_overrides)
    return exchange


# What a reader copies from its trading exchange: credentials, transport and proxy
# settings. Not ``session``: the reader keeps its own connections, so a slow read
# never holds the socket a cancel is waiting for.
_READER_CONFIG = (
    "apiKey", "secret", "password", "uid", "accountId", "login", "privateKey",
    "walletAddress", "token", "twofa", "timeout", "rateLimit", "headers", "userAgent",
    "verify", "aiohttp_trust_env", "proxies", "proxy", "proxyUrl", "proxy_url",
    "httpProxy", "http_proxy", "httpsProxy", "https_proxy", "socksProxy", "socks_proxy",
    "isSandboxModeEnabled",
)  # fmt: skip


def make_reader(trading: Any) -> Any:
    """A second exchange of ``trading``'s class for bookkeeping reads, with its own throttle.

    ccxt's client-side throttle is a token bucket per instance that charges each
    request its endpoint weight: after a weight-30 income read on the trading
    instance, its next request (a kill's cancel) waits ~1.5 s. A reader moves that
    debt to a bucket of its own. It shares the trading exchange's credentials, URLs
    (sandbox + overrides), its ``options`` *by reference* (Binance's
    ``timeDifference`` and cached account state stay one truth) and its loaded
    markets (no second ``load_markets``). The venue's server-side weight limit is
    per IP/account, so both still draw on one budget there.

    The caller owns it and must ``await reader.close()``.
    """
    config: dict[str, Any] = {}
    for key in _READER_CONFIG:
        value = getattr(trading, key, None)
        if value is not None:
            config[key] = value
    config["enableRateLimit"] = True
    reader = type(trading)(config)
    _credit_idle_time(reader)
    reader.urls = copy.deepcopy(trading.urls)
    reader.options = trading.options
    if trading.markets:
        reader.set_markets_from_exchange(trading)
    return reader


def _credit_idle_time(exchange: Any) -> None:
    """Give ``exchange`` a throttle that also refills while no request is queued.

    ccxt's leaky bucket refills only while requests wait in it (ccxt/ccxt#25556), so
    the debt of the last request is paid by the next one however long after: a
    weight-20 book snapshot an hour ago still holds the next cancel ~1 s. Capacity
    stays ccxt's (1), so the pace never exceeds ccxt's own; only idle time counts.
    """
    bucket = getattr(exchange, "tokenBucket", None)
    if isinstance(bucket, dict) and getattr(exchange, "throttler", None) is not None:
        exchange.throttler = _idle_credit_throttler()(bucket, exchange.asyncio_loop)


class AbortedBeforeSent(Exception):
    """A request withdrawn while it still waited in ccxt's rate limiter: never sent."""


class QueuedRequest:
    """A request on its way through ccxt's rate limiter (see :data:`QUEUED_REQUEST`).

    ``sent`` turns True once the limiter lets it go (from then on the venue may act on
    it); until then :meth:`withdraw` makes it fail with :class:`AbortedBeforeSent`
    without ever being sent.
    """

    __slots__ = ("_queue", "_waiting", "sent")

    def __init__(self) -> None:
        self._waiting: asyncio.Future[Any] | None = None
        self._queue: Any = None
        self.sent = False

    def waiting_on(self, admission: asyncio.Future[Any], queue: Any) -> None:
        if self.sent or self._waiting is not None:
            return  # a second request in the same call: the first decides
        self._waiting, self._queue = admission, queue
        admission.add_done_callback(self._admitted)

    def _admitted(self, admission: asyncio.Future[Any]) -> None:
        if not admission.cancelled() and admission.exception() is None:
            self.sent = True

    def withdraw(self) -> bool:
        """Stop the request if it has not left the limiter; True if it was stopped."""
        waiting = self._waiting
        if self.sent or waiting is None or waiting.done():
            return False
        # Its place in the limiter's queue costs nothing now: what queues behind it (a
        # kill's cancels) does not wait for a request that is never sent. The entry
        # stays (ccxt's loop reads the queue's head without checking it is empty).
        for i, (future, _cost) in enumerate(self._queue):
            if future is waiting:
                self._queue[i] = (future, 0)
                break
        waiting.set_exception(AbortedBeforeSent())
        return True


QUEUED_REQUEST: contextvars.ContextVar[QueuedRequest | None] = contextvars.ContextVar(
    "backstop_queued_request", default=None
)
"""Set around a venue call that may be withdrawn (a create): the bot's throttle tells
it when ccxt's limiter admits the request (:class:`bot.venues.ccxt_venue.CcxtVenue`)."""


@functools.cache
def _idle_credit_throttler() -> type[Any]:
    from ccxt.async_support.base.throttler import Throttler

    class IdleCreditThrottler(Throttler):  # type: ignore[misc]
        def __init__(self, config: dict[str, Any], loop: Any = None) -> None:
            super().__init__(config, loop)
            # Idle from the start: its bucket starts full anyway, and an object not used
            # yet (a canceller before the first kill) is kept warm like the others.
            self._idle_since: float | None = time.monotonic()

        def __call__(self, cost: float | None = None) -> Any:
            if not self.running and self._idle_since is not None:
                idle_ms = (time.monotonic() - self._idle_since) * 1000
                c = self.config
                c["tokens"] = min(c["tokens"] + idle_ms * c["refillRate"], c["capacity"])
            admission = super().__call__(cost)
            queued = QUEUED_REQUEST.get()
            if queued is not None:
                queued.waiting_on(admission, self.queue)
            return admission

        async def looper(self) -> None:
            try:
                await super().looper()
            finally:
                # No await between the loop's last refill and here: nothing admitted since.
                self._idle_since = time.monotonic()

        def idle_s(self) -> float | None:
            """Seconds since the last request left (or since it was made), None while
            requests queue."""
            if self.running or self._idle_since is None:
                return None
            return time.monotonic() - self._idle_since

    return IdleCreditThrottler


def _apply_url_overrides(exchange: Any, overrides: Mapping[str, str]) -> None:
    api = exchange.urls.get("api")
    if not isinstance(api, dict):
        raise ConfigError(f"exchange {exchange.id!r} has no per-endpoint API URLs to override")
    for path, url in overrides.items():
        node = _url_parent(api, path)
        if node is None:
            known = sorted(_url_paths(api))
            raise ConfigError(
                f"url override {path!r}: no such URL for exchange {exchange.id!r}"
                f" (known: {', '.join(known)})"
            )
        node[path.split(".")[-1]] = url


def unknown_url_paths(
    exchange_id: str, overrides: Mapping[str, str], *, sandbox: bool
) -> tuple[list[str], list[str]]:
    """``(override paths ccxt does not have, the paths it has)``, without a network call."""
    import ccxt.async_support
    import ccxt.pro

    exchange = getattr(ccxt.pro, exchange_id, None) or getattr(ccxt.async_support, exchange_id)
    instance = exchange()
    if sandbox:
        # Settings report a missing sandbox themselves; here it only means "no test URLs".
        with contextlib.suppress(ccxt.NotSupported, TypeError, KeyError):
            instance.set_sandbox_mode(True)
    api = instance.urls.get("api")
    api = api if isinstance(api, dict) else {}
    unknown = [path for path in overrides if _url_parent(api, path) is None]
    return unknown, sorted(_url_paths(api))


def _url_parent(api: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The dict holding ``path``'s last key, if ``path`` names a URL string in ``api``."""
    parts = path.split(".")
    node: Any = api
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get(parts[-1]), str):
        return None
    return node


def _url_paths(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in node.items():
        if isinstance(value, str):
            paths.append(prefix + key)
        elif isinstance(value, Mapping):
            paths.extend(_url_paths(value, f"{prefix}{key}."))
    return paths


# Most specific first: the first matching class wins, so subclasses must precede
# their parents (RateLimitExceeded is a NetworkError, PermissionDenied an
# AuthenticationError, BadSymbol a BadRequest ...).
_ERROR_MAP: tuple[tuple[type[Exception], type[BackstopError]], ...] = (
    # Slow down: the venue is counting our requests (DDoSProtection is what ccxt
    # raises for Cloudflare blocks and Binance's 418 pre-ban warnings).
    (ccxt.RateLimitExceeded, RateLimited),
    (ccxt.DDoSProtection, RateLimited),
    # Transport trouble, exchange down or in maintenance, a book whose sequence
    # broke (InvalidNonce/ChecksumError): retry, a fresh snapshot fixes the book.
    (ccxt.NetworkError, TemporaryError),
    # The parent of NetworkError: an exchange-side failure such as Binance's -1001
    # "internal error; unable to process your request" - retry, as freqtrade does.
    (ccxt.OperationFailed, TemporaryError),
    (ccxt.BadResponse, TemporaryError),
    (ccxt.CancelPending, TemporaryError),
    # Retrying cannot fix these: credentials, permissions, a banned or restricted
    # account/location, a symbol the venue does not list, a call the venue or
    # ccxt does not support, an instance we closed ourselves.
    (ccxt.AuthenticationError, OperationalError),
    (ccxt.BadSymbol, OperationalError),
    (ccxt.BadRequest, OperationalError),
    (ccxt.ArgumentsRequired, OperationalError),
    (ccxt.NotSupported, OperationalError),
    (ccxt.OperationRejected, OperationalError),
    (ccxt.InvalidProxySettings, OperationalError),
    (ccxt.ExchangeClosedByUser, OperationalError),
    # Order-level outcomes. OrderNotFound is an InvalidOrder in ccxt, so it comes
    # first: on a cancel it means "already gone", not "refused".
    (ccxt.OrderNotFound, OrderNotFound),
    # Also InvalidOrders: a post-only order that would have taken (Binance spot -2010
    # "Order would immediately match and take"; futures -5022, which ccxt files with
    # -5021/-2020 under OrderNotFillable: FOK and IOC outcomes the bot never sends).
    (ccxt.OrderImmediatelyFillable, WouldTake),
    (ccxt.OrderNotFillable, WouldTake),
    (ccxt.InsufficientFunds, OrderRejected),
    (ccxt.InvalidOrder, OrderRejected),
    (ccxt.InvalidAddress, OperationalError),
    # Any other exchange error is usually a venue hiccup with an unmapped code:
    # retry with backoff (freqtrade does the same); repeats show up in the stats.
    (ccxt.ExchangeError, TemporaryError),
    (ccxt.UnsubscribeError, TemporaryError),
    # ccxt wraps transport errors itself; a raw socket error or timeout that
    # slips through is still a transport error.
    (OSError, TemporaryError),
)


def map_ccxt_error(e: BaseException) -> BackstopError:
    """The :mod:`bot.errors` exception for a ccxt exception, with ``e`` as its cause.

    Use as ``raise map_ccxt_error(e) from e``. ``OSError``/``TimeoutError`` count as
    :class:`TemporaryError`. Anything else unknown maps to :class:`OperationalError`
    (stop and look) rather than being retried forever.
    """
    context = e.__context__
    if not isinstance(e, ccxt.BaseError) and isinstance(context, ccxt.BaseError):
        # ccxt sometimes fails while handling its own error (binance's user-stream
        # subscribe raises KeyError('spot') over the AuthenticationError it caught): the
        # venue's answer is the context, and it is what the operator must read.
        mapped_context = map_ccxt_error(context)
        mapped_context.__cause__ = e
        return mapped_context
    target: type[BackstopError] = OperationalError
    for source, mapped in _ERROR_MAP:
        if isinstance(e, source):
            target = mapped
            break
    message = f"{type(e).__name__}: {e}"
    err = (
        RateLimited(message, retry_after_s=retry_after_of(e))
        if target is RateLimited
        else target(message)
    )
    err.__cause__ = e
    return err


RETRY_AFTER_ATTR = "retry_after_s"
"""Set on a ccxt rate-limit exception by whoever saw the reply's ``Retry-After``
(:class:`bot.venues.ccxt_venue.CcxtVenue`); ccxt itself drops the header."""


def retry_after_of(e: BaseException) -> float | None:
    value = getattr(e, RETRY_AFTER_ATTR, None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def note_retry_after(e: BaseException, headers: Mapping[str, Any] | None) -> None:
    """Copy ``Retry-After`` (seconds) from the reply's ``headers`` onto ``e``."""
    if not headers:
        return
    raw = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        seconds = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return  # an HTTP date: rare from exchanges, and the backoff still applies
    if seconds is not None and seconds > 0:
        setattr(e, RETRY_AFTER_ATTR, seconds)
