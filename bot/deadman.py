"""The exchange-side dead-man switch: ccxt's ``cancel_all_orders_after``, kept armed.

The bot's own kill switch needs the bot alive. If the process hangs, is SIGKILLed or its
host loses power, only the exchange can still cancel its orders. Venues that offer a
cancel-all-after timer (``exchange.has['cancelAllOrdersAfter']`` in ccxt: OKX, Kraken,
Kraken Futures, Bybit...) cancel every order of the account once the timer runs out;
the bot re-arms it every ``deadman.interval_s`` while it is healthy, so the timer only
ever runs out when the bot cannot re-arm it.

States (:class:`DeadManState`)::

    IDLE --start: armed--> ARMED --re-arm failed--> FAILING --re-armed--> ARMED
                             |                         |
                             |          deadline passed without a re-arm
                             |                         v
                             |                      LAPSED (the exchange has cancelled)
                             +--stop, nothing of ours open, venue can disarm--> DISARMED
                             +--stop otherwise--> RELEASED (timer left to run out)

A clean stop disarms the timer (``cancel_all_orders_after(0)``, on venues where 0 means
"cancel the timer") only when no order of ours is left open: a stop that leaves orders
behind (a crash unwinding through the stop path) leaves the timer to cancel them.

What it cancels is the venue's choice: **every** order of the account (or product), not
only the bot's. Run the bot in its own (sub-)account.

Binance spot has no such call in ccxt (nor does the local exchange emulator, which
speaks Binance spot): there the kill switch is the only line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from bot.clock import NS_PER_SECOND, Clock
from bot.errors import OperationalError
from bot.logs import Logger
from bot.settings.models import DeadManSettings

if TYPE_CHECKING:
    from bot.settings.models import Settings

# ccxt ids whose cancel-all-after treats a timeout of 0 as "cancel the timer" (their
# docstrings say so). Elsewhere (Bybit's DCP window) 0 is not a disarm: we stop re-arming.
DISARM_WITH_ZERO = frozenset({"okx", "kraken", "krakenfutures"})
RETRY_FRACTION = 0.25
"""After a failed re-arm, the next try comes this fraction of ``interval_s`` later."""

Sleep = Callable[[float], Awaitable[None]]


class DeadManState(StrEnum):
    IDLE = "idle"
    ARMED = "armed"
    FAILING = "failing"
    LAPSED = "lapsed"
    DISARMED = "disarmed"
    RELEASED = "released"


class CancelAllAfter(Protocol):
    """What the switch needs from a ccxt exchange."""

    has: Mapping[str, Any]

    # ccxt's own signature (hence the name ``timeout``: milliseconds, not an asyncio timeout).
    async def cancel_all_orders_after(
        self,
        timeout: int,  # noqa: ASYNC109
        params: dict[str, Any] = ...,
    ) -> Any: ...


class HasOpenOrders(Protocol):
    """What :meth:`DeadManSwitch.wire` needs from the order manager."""

    def open_orders(self, symbol: str) -> Sequence[Any]: ...


def supported(exchange: object) -> bool:
    has = getattr(exchange, "has", None)
    return isinstance(has, Mapping) and bool(has.get("cancelAllOrdersAfter"))


class DeadManSwitch:
    def __init__(
        self,
        exchange: CancelAllAfter,
        config: DeadManSettings,
        *,
        clock: Clock,
        log: Logger,
        sleep: Sleep = asyncio.sleep,
        healthy: Callable[[], bool] = lambda: True,
        flat: Callable[[], bool] = lambda: True,
        can_disarm: bool = False,
        on_lapse: Callable[[str], None] | None = None,
        venue: str = "exchange",
    ) -> None:
        self.config = config
        self._exchange = exchange
        self._clock = clock
        self._log = log.bind(deadman=venue)
        self._sleep = sleep
        self._healthy = healthy
        self._flat = flat
        self._can_disarm = can_disarm
        self._on_lapse = on_lapse
        self._venue = venue
        self._params = dict(config.params)
        self.state = DeadManState.IDLE
        self.deadline_ns: int | None = None
        """When the exchange cancels if no re-arm succeeds before (per our clock)."""
        self.rearms = 0
        self.failures = 0
        self.last_error: str | None = None
        self._unhealthy = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def wire(
        cls,
        settings: Settings,
        exchange: object,
        orders: HasOpenOrders,
        *,
        startup: list[Callable[[], Awaitable[object]]],
        closers: list[Callable[[], Awaitable[None]]],
        clock: Clock,
        log: Logger,
        healthy: Callable[[], bool] = lambda: True,
    ) -> DeadManSwitch | None:
        """Build it for a testnet/live run when configured and supported: arm it among
        ``startup`` (before trading) and stop it among ``closers``. None otherwise."""
        venue = str(getattr(exchange, "id", "exchange"))
        if settings.mode == "paper" or not settings.deadman.enabled:
            return None
        if not supported(exchange):
            log.info(
                "exchange_deadman_unavailable",
                exchange=venue,
                why="ccxt has no cancel_all_orders_after for this venue; only the kill "
                "switch cancels our orders",
            )
            return None
        symbols = list(settings.symbols)
        switch = cls(
            exchange,  # type: ignore[arg-type]  # checked by supported()
            settings.deadman,
            clock=clock,
            log=log,
            healthy=healthy,
            flat=lambda: not any(orders.open_orders(s) for s in symbols),
            can_disarm=venue in DISARM_WITH_ZERO,
            venue=venue,
        )
        startup.append(switch.start)
        closers.append(switch.aclose)
        return switch

    # ------------------------------------------------------------------ queries

    def status(self) -> dict[str, Any]:
        left = None
        if self.deadline_ns is not None and self.state in (
            DeadManState.ARMED,
            DeadManState.FAILING,
        ):
            left = max(0.0, (self.deadline_ns - self._clock.now_ns()) / NS_PER_SECOND)
        return {
            "state": self.state.value,
            "timeout_s": self.config.timeout_s,
            "seconds_left": left,
            "rearms": self.rearms,
            "failures": self.failures,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Arm the exchange's timer, then keep it armed in the background.

        A first arm the venue refuses stops the start: a dead-man that was asked for
        and silently is not there is worse than none.
        """
        if not await self.arm_once():
            raise OperationalError(
                f"exchange dead-man switch: {self._venue} refused cancel_all_orders_after "
                f"({self.last_error}); fix the account or set deadman.enabled = false"
            )
        self._task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        """Re-arm every ``interval_s`` while healthy; retry sooner after a failure."""
        while True:
            ok = self.state is DeadManState.ARMED
            await self._sleep(self.config.interval_s * (1.0 if ok else RETRY_FRACTION))
            if not self._healthy():
                if not self._unhealthy:
                    self._unhealthy = True
                    self._log.warning(
                        "exchange_deadman_not_rearmed",
                        why="the bot reports itself unhealthy",
                        seconds_left=self.status()["seconds_left"],
                    )
                self._check_lapse()
                continue
            self._unhealthy = False
            await self.arm_once()

    async def arm_once(self) -> bool:
        timeout_ms = round(self.config.timeout_s * 1000)
        try:
            await self._exchange.cancel_all_orders_after(timeout_ms, dict(self._params))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            if self.state is DeadManState.ARMED:
                self.state = DeadManState.FAILING
            self._log.warning(
                "exchange_deadman_rearm_failed",
                error=self.last_error,
                seconds_left=self.status()["seconds_left"],
            )
            self._check_lapse()
            return False
        first = self.state is DeadManState.IDLE
        recovered = self.state in (DeadManState.FAILING, DeadManState.LAPSED)
        self.state = DeadManState.ARMED
        self.deadline_ns = self._clock.now_ns() + round(self.config.timeout_s * NS_PER_SECOND)
        self.rearms += 1
        if first or recovered:
            self._log.info(
                "exchange_deadman_armed",
                timeout_s=self.config.timeout_s,
                interval_s=self.config.interval_s,
                recovered=recovered,
            )
        return True

    def _check_lapse(self) -> None:
        if (
            self.state in (DeadManState.ARMED, DeadManState.FAILING)
            and self.deadline_ns is not None
            and self._clock.now_ns() >= self.deadline_ns
        ):
            self.state = DeadManState.LAPSED
            reason = (
                f"EXCHANGE_DEADMAN_LAPSED: venue={self._venue} timeout_s={self.config.timeout_s:g}"
                f" last_error={self.last_error or 'none'}"
            )
            self._log.error(
                "exchange_deadman_lapsed",
                reason=reason,
                consequence="the exchange cancels every open order of the account",
            )
            if self._on_lapse is not None:
                self._on_lapse(reason)

    async def aclose(self) -> None:
        """Stop re-arming; disarm the timer if nothing of ours is open and the venue can."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.state not in (DeadManState.ARMED, DeadManState.FAILING):
            return
        if not self._can_disarm:
            self.state = DeadManState.RELEASED
            self._log.info(
                "exchange_deadman_released",
                why="this venue has no disarm: the timer runs out and cancels whatever "
                "order of the account is open then",
                seconds_left=self.status()["seconds_left"],
            )
            return
        if not self._flat():
            self.state = DeadManState.RELEASED
            self._log.warning(
                "exchange_deadman_released",
                why="orders of ours are still open: the exchange's timer is left to "
                "cancel them",
                seconds_left=self.status()["seconds_left"],
            )
            return
        try:
            await self._exchange.cancel_all_orders_after(0, dict(self._params))
        except Exception as e:
            self.state = DeadManState.RELEASED
            self.last_error = f"{type(e).__name__}: {e}"
            self._log.warning("exchange_deadman_not_disarmed", error=self.last_error)
            return
        self.state = DeadManState.DISARMED
        self._log.info("exchange_deadman_disarmed")
