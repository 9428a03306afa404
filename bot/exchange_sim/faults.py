"""Fault injection: make chosen endpoints misbehave on demand, from tests or a CLI.

Faults are queued per endpoint key ``"METHOD /api/v3/path"`` (or ``"*"`` for any
endpoint) and each queued fault is consumed by exactly one request, so a test can
say "the next 2 order placements get a 503" and know the third one goes through.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bot.exchange_sim.errors import ApiError, order_rejected

ANY = "*"


@dataclass(frozen=True)
class Fault:
    status: int
    code: int
    msg: str
    retry_after_s: int | None = None
    text: str | None = None

    def error(self) -> ApiError:
        headers = {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        return ApiError(self.status, self.code, self.msg, headers, text=self.text)


class Faults:
    """Queued faults, checked by the server before an endpoint runs."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}
        self._rejects: deque[str] = deque()

    def fail_next(
        self, endpoint: str = ANY, n: int = 1, status: int = 503, *, json_body: bool = False
    ) -> None:
        """The next ``n`` calls to ``endpoint`` answer ``status`` (a 5xx by default).

        By default the body is a gateway's plain text (what a 502/503 from the load
        balancer looks like); ``json_body=True`` sends Binance's own -1001 JSON error
        instead, which ccxt maps by code rather than by HTTP status.
        """
        msg = "Internal error; unable to process your request. Please try again."
        text = None if json_body else f"{status} Service Unavailable"
        self._push(endpoint, n, Fault(status, -1001, msg, text=text))

    def rate_limit_next(self, endpoint: str = ANY, n: int = 1, retry_after_s: int = 1) -> None:
        """The next ``n`` calls to ``endpoint`` get a 429 with ``Retry-After``."""
        self._push(
            endpoint,
            n,
            Fault(429, -1003, "Too many requests; injected by the emulator.", retry_after_s),
        )

    def ban_next(self, endpoint: str = ANY, n: int = 1, retry_after_s: int = 120) -> None:
        """The next ``n`` calls get a 418 (Binance's IP ban after ignoring 429s)."""
        self._push(
            endpoint,
            n,
            Fault(418, -1003, "Way too much request weight used; IP banned.", retry_after_s),
        )

    def reject_next_orders(self, n: int = 1, msg: str = "Order rejected by the emulator.") -> None:
        """The next ``n`` order placements are refused with -2010 ``msg``."""
        self._rejects.extend([msg] * n)

    def clear(self) -> None:
        self._queues.clear()
        self._rejects.clear()

    def take(self, endpoint: str) -> ApiError | None:
        """The fault for this request, if one is queued (consumes it)."""
        for key in (endpoint, ANY):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft().error()
        return None

    def take_order_reject(self) -> ApiError | None:
        return order_rejected(self._rejects.popleft()) if self._rejects else None

    def _push(self, endpoint: str, n: int, fault: Fault) -> None:
        self._queues.setdefault(endpoint, deque()).extend([fault] * n)
