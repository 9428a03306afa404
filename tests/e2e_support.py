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
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

from daemon_process import Daemon

from bot.control.client import ControlClient, ControlTarget
from bot.exchange_sim import BinanceSpotEmulator, SimOrder, SimTrade
from bot.exchange_sim.engine import Side
from bot.exchange_sim.market import MarketDriver
from bot.venues.matching import RestingOrder

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


def taker_hits(
    net: EmulatedTestnet[Any], symbol: str, side: Side, qty: Decimal | None = None
) -> list[SimTrade]:
    """A taker trades ``qty`` (None: all) of our best ``side`` quote on the venue's
    ``symbol`` (its id, e.g. ``BTCUSDT``) now; the print's fills of ours.

    It sells through our best bid (``side="BUY"``) or buys through our best ask: a
    print one tick beyond our price which, in the emulator's fill model, means our
    level was taken first, us included, and ``qty`` of our quote fills at its price,
    as maker (the emulator's own matcher books it). A print *at* our price would first
    fill the queue the venue estimates ahead of us, a float-derived size, so the fill
    would not be an exact lot. The fill reaches the bot the way any fill does, on the
    user-data websocket. No quote of ours resting: ``[]``.
    """
    engine = net.emu.engine
    ours = [
        resting
        for resting in engine.books[symbol].matcher.orders.values()
        if engine.orders[int(resting.order_id)].side == side
        and engine.orders[int(resting.order_id)].client_order_id.startswith(PREFIX)
    ]
    if not ours:
        return []
    # Best price, then first in time: a print through it fills it before any other.
    best = min(ours, key=RestingOrder.priority)
    order = engine.orders[int(best.order_id)]
    take = best.remaining if qty is None else min(qty, best.remaining)
    tick = engine.rules[symbol].tick_size
    through = order.price - tick if side == "BUY" else order.price + tick
    aggressor = "sell" if side == "BUY" else "buy"
    trades = engine.market_trade(symbol, float(through), float(take), aggressor)
    filled = sum((t.qty for t in trades if t.order_id == order.order_id), Decimal(0))
    assert filled == take, f"a print of {take} at {through} filled {filled} of {order}"
    return trades


async def taker_fills(
    net: EmulatedTestnet[Any],
    symbol: str,
    side: Side,
    qty: Decimal | None = None,
    *,
    within_s: float = 30.0,
) -> list[SimTrade]:
    """Once a ``side`` quote of ours rests at the venue, a taker fills ``qty`` of it.

    The recorded market fills our quotes only if they happen to rest when one of its
    sweeps passes: a race with the daemon's scheduling on a loaded machine. A test that
    needs a fill plays the taker itself. The print is made in the same event-loop turn
    as the check that the quote rests (the predicate below), so the venue cannot have
    cancelled it in between.
    """
    trades: list[SimTrade] = []

    def hit() -> bool:
        trades.extend(taker_hits(net, symbol, side, qty))
        return bool(trades)

    what = f"a {side.lower()} quote of ours rests, for a taker to fill"
    await net.until(hit, within_s=within_s, what=what)
    return trades


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
