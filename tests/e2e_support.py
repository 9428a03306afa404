"""What the testnet e2e tests share: an emulated venue, the market replayed onto it, and
the daemon run against it (spot, USDⓈ-M and COIN-M alike).

Each test file keeps what is its own (the emulator's form, the config it rehearses, how
the venue's account reads as the bot's inventory); the waiting on the emulator's own
events and the comparison of the two books are written once here.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from daemon_process import Daemon

from bot.control.client import ControlClient, ControlTarget
from bot.exchange_sim import BinanceSpotEmulator, SimOrder
from bot.exchange_sim.market import MarketDriver

PREFIX = "bs1-"
"""The bot's client order ids start with this: the venue's orders that are ours."""

EmuT = TypeVar("EmuT", bound=BinanceSpotEmulator)
Holdings = dict[str, float]


@dataclass
class EmulatedTestnet(Generic[EmuT]):
    emu: EmuT
    driver: MarketDriver
    config: Path
    state_dir: Path
    key: str
    secret: str
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def env(self, secret: str | None = None) -> dict[str, str]:
        return {
            "BACKSTOP_EXCHANGE__API_KEY": self.key,
            "BACKSTOP_EXCHANGE__SECRET": self.secret if secret is None else secret,
        }

    def daemon(self, secret: str | None = None) -> Daemon:
        return Daemon(["run", "--config", str(self.config)], self.env(secret))

    def ours(self) -> list[SimOrder]:
        return [o for o in self.emu.engine.orders.values() if o.client_order_id.startswith(PREFIX)]

    def ours_open(self) -> list[SimOrder]:
        return [o for o in self.ours() if o.is_open]

    async def until(self, predicate: Callable[[], bool], *, within_s: float, what: str) -> None:
        """Await the emulator's own events until ``predicate`` holds."""

        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), within_s)
        except TimeoutError:
            raise AssertionError(f"not within {within_s}s: {what}") from None

    def control(self) -> ControlClient:
        return ControlClient(ControlTarget.for_state_dir(self.state_dir))


@asynccontextmanager
async def market_running(net: EmulatedTestnet[Any]) -> AsyncIterator[None]:
    """The recording replayed onto the venue, which has a book before this yields."""
    unsubscribe = net.emu.engine.subscribe(lambda _event: net.changed.set())
    market = asyncio.ensure_future(net.driver.run())
    try:
        await net.driver.wait_applied(1)
        yield
    finally:
        unsubscribe()
        market.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await market


def run_faster(config: dict[str, Any], speed: float) -> None:
    """A daemon's windows and rates are wall time; the market runs at ``speed`` x, so the
    detector's windows are shortened and the order rates raised by about that factor
    (else quotes wait in the rate limiter while the market moves ``speed`` x faster).
    Logs are JSON, for :class:`Daemon` to read."""
    config["feed"]["stale_after_s"] = 5
    market = config["markets"][0]
    market.update(baseline_window_s=6.0, engage_dwell_s=0.3, disengage_dwell_s=1.5)
    config["risk"]["max_orders_per_second"] *= speed
    config["risk"]["max_order_burst"] = round(config["risk"]["max_order_burst"] * speed)
    config["orders"] = {"rate_limit": round(8 * speed)}
    config["logging"] = {"format": "json", "level": "info"}


async def books_agree(
    net: EmulatedTestnet[Any],
    symbol: str,
    venue: Callable[[], Holdings],
    *,
    same: Callable[[Holdings, Holdings], bool] = operator.eq,
    within_s: float = 10.0,
) -> None:
    """Until the inventory the daemon reports for ``symbol`` is the venue's account.

    A fill (or a funding payment) reaches the bot a moment after the venue books it (its
    report is on the websocket), so the two may differ for that moment; they must then
    agree. The status is asked again on each venue event and at least every 0.5 s, as
    the bot's side may catch up with no further event at the venue.
    """
    last: tuple[Any, Any] = (None, None)

    async def agreed() -> None:
        nonlocal last
        async with net.control() as control:
            while True:
                status = await control.status()
                market = next(m for m in status["markets"] if m["symbol"] == symbol)
                last = (market["inventory"], venue())
                if same(*last):
                    return
                net.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(net.changed.wait(), 0.5)

    try:
        await asyncio.wait_for(agreed(), within_s)
    except TimeoutError:
        raise AssertionError(f"bot {last[0]} != venue {last[1]} for {within_s}s") from None


def reported(daemon: Daemon, symbol: str) -> dict[str, Any]:
    """The market's account in the daemon's run summary (logged at exit)."""
    summary = daemon.events("run_summary")[-1]
    inventory: dict[str, Any] = summary["trading"]["markets"][symbol]["inventory"]
    return inventory
