"""Fault injection: make the emulated venue misbehave on demand, from tests or a CLI.

REST faults are queued per endpoint key ``"METHOD /api/v3/path"`` (or ``"*"`` for any
endpoint) and each queued fault is consumed by exactly one request, so a test can
say "the next 2 order placements get a 503" and know the third one goes through.
Delays work the same way, except that the delayed request still executes: only its
reply is late, as when a venue's answer is lost in transit.

Depth faults are queued per symbol and consumed by the next diff-depth message(s)
of that symbol. Websocket drops and stalls act at once on every open connection,
through the front end attached with :meth:`Faults.attach_websockets`.

Everything is deterministic: no randomness, faults fire in the order they were set.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.exchange_sim.errors import ApiError, order_rejected

ANY = "*"
DepthFault = Literal["gap", "swap"]


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


class WebsocketControl(Protocol):
    """What the websocket front end offers the fault injector."""

    def drop_all(self) -> int:
        """Close every connection abruptly; how many were open."""
        ...

    def stall(self, seconds: float) -> None:
        """Send nothing on any connection for ``seconds`` (queue meanwhile), then resume."""
        ...

    def resume(self) -> None:
        """End a stall now."""
        ...


class Faults:
    """Queued faults, checked by the server before an endpoint runs."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}
        self._rejects: deque[str] = deque()
        self._delays: dict[str, deque[float]] = {}
        self._depth: dict[str, deque[DepthFault]] = {}
        self._ws: WebsocketControl | None = None
        self.clock_skew_ms = 0
        """Added to the emulator's clock (auth checks, server time, event times)."""

    # ----- REST -------------------------------------------------------------------
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

    def delay_next(self, endpoint: str = ANY, n: int = 1, seconds: float = 1.0) -> None:
        """The replies to the next ``n`` calls to ``endpoint`` leave ``seconds`` late.

        The request itself executes at once (an order is placed, a cancel cancels),
        so a client whose timeout fires first does not know what happened - the
        situation the bot's lost-reply recovery exists for.
        """
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        self._delays.setdefault(endpoint, deque()).extend([seconds] * n)

    def take(self, endpoint: str) -> ApiError | None:
        """The fault for this request, if one is queued (consumes it)."""
        for key in (endpoint, ANY):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft().error()
        return None

    def take_order_reject(self) -> ApiError | None:
        return order_rejected(self._rejects.popleft()) if self._rejects else None

    def take_delay(self, endpoint: str) -> float:
        """Seconds to hold this request's reply (consumes a queued delay; 0 if none)."""
        for key in (endpoint, ANY):
            queue = self._delays.get(key)
            if queue:
                return queue.popleft()
        return 0.0

    # ----- market data streams -----------------------------------------------------
    def depth_gap(self, symbol: str, n: int = 1) -> None:
        """Silently skip the next diff-depth message of ``symbol`` (``n`` times).

        The client then sees ``U`` != previous ``u`` + 1, exactly as after a message
        lost by the venue, and must resync from a snapshot.
        """
        self._depth.setdefault(symbol, deque()).extend(["gap"] * n)

    def depth_out_of_order(self, symbol: str) -> None:
        """Send the next two diff-depth messages of ``symbol`` in swapped order."""
        self._depth.setdefault(symbol, deque()).append("swap")

    def take_depth_fault(self, symbol: str) -> DepthFault | None:
        queue = self._depth.get(symbol)
        return queue.popleft() if queue else None

    # ----- websocket connections ---------------------------------------------------
    def attach_websockets(self, control: WebsocketControl) -> None:
        self._ws = control

    def drop_websockets(self) -> int:
        """Close every websocket connection (streams and WebSocket API) abruptly."""
        return self._websockets().drop_all()

    def stall_websockets(self, seconds: float) -> None:
        """Keep every connection open but send nothing for ``seconds``, then resume.

        Events meanwhile are queued per connection, not lost, unless a queue
        overflows - then that client is disconnected, as Binance does.
        """
        if seconds <= 0:
            raise ValueError("a stall must last a positive number of seconds")
        self._websockets().stall(seconds)

    # ----- all ------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every queued fault, end a stall and reset the clock skew."""
        self._queues.clear()
        self._rejects.clear()
        self._delays.clear()
        self._depth.clear()
        self.clock_skew_ms = 0
        if self._ws is not None:
            self._ws.resume()

    def _push(self, endpoint: str, n: int, fault: Fault) -> None:
        self._queues.setdefault(endpoint, deque()).extend([fault] * n)

    def _websockets(self) -> WebsocketControl:
        if self._ws is None:
            raise RuntimeError("no websocket front end attached (is the emulator started?)")
        return self._ws
