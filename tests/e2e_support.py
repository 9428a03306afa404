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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

from daemon_process import Daemon

from bot.clock import ManualClock
from bot.control.client import ControlClient, ControlTarget
from bot.exchange_sim import BinanceSpotEmulator, SimOrder, SimTrade
from bot.exchange_sim.engine import Side
from bot.exchange_sim.market import MarketDriver
from bot.feeds.events import MarketEvent
from bot.feeds.replay import ReplayFeed
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
    released: asyncio.Event = field(default_factory=asyncio.Event)
    market: asyncio.Future[None] | None = None
    """The recording's replay onto the venue (:func:`market_running`)."""

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

    async def market_stops(self) -> None:
        """No more market events: the venue keeps its book as it is.

        For a part of a test the market's motion is not about: a replay that fell
        behind its schedule on a loaded machine hands the event loop over only every
        few dozen events, and the venue's REST replies then take seconds.
        """
        if self.market is not None:
            self.market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.market

    def release(self) -> None:
        """A market held by :func:`market_running` moves on (at once if not held)."""
        self.released.set()


CALM_S = 24.0
"""Data seconds of calm market a daemon watches, once a held market moves on, before a
test's fracture begins: 8 s at 3x, above the 6 s its baseline needs to warm up
(``baseline_window_s``, :func:`run_faster`), so the fracture is measured against it."""
HOLD_SLACK_S = 1.0
"""How much data past the hold point is still unpaced: the replay must not have pulled
its first paced event (which anchors its pacing to the wall clock) while it stands
still, or it would race through the time it stood to catch up."""


def held_replay(paths: Sequence[Path], *, speed: float, held_at_s: float) -> ReplayFeed:
    """The recording, unpaced up to just past ``held_at_s`` (see :func:`market_running`)."""
    return ReplayFeed(paths, clock=ManualClock(), speed=speed, unpaced_s=held_at_s + HOLD_SLACK_S)


@asynccontextmanager
async def market_running(
    net: EmulatedTestnet[Any], *, replay: ReplayFeed | None = None, held_at_s: float = 0.0
) -> AsyncIterator[None]:
    """The recording replayed onto the venue, which has a book before this yields.

    With ``replay`` (a :func:`held_replay`), the market stands still ``held_at_s`` into
    the recording (at once, unpaced) until :meth:`EmulatedTestnet.release`: what the
    daemon sees of the market then does not depend on how long it took to start (a
    loaded machine takes several seconds, and a fracture that began meanwhile would be
    half over, before its detector has a baseline). See :func:`watching`.
    """
    unsubscribe = net.emu.engine.subscribe(lambda _event: net.changed.set())
    driver = net.driver
    if replay is None:
        net.release()

    def reached(event: MarketEvent) -> bool:
        assert replay is not None
        first = replay.stats.first_ts_ns
        return (
            driver.stats.events["snapshot"] > 0
            and first is not None
            and event.ts_ns >= first + held_at_s * 1e9
        )

    async def play() -> None:
        if replay is not None:
            await driver.run_until(reached)
            await net.released.wait()
        await driver.run()

    market = net.market = asyncio.ensure_future(play())
    try:
        await driver.wait_applied(1)
        yield
    finally:
        unsubscribe()
        market.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await market


async def watching(net: EmulatedTestnet[Any], daemon: Daemon, *, within_s: float = 60.0) -> None:
    """Once the daemon is ready and its book stream connected, a held market moves on."""
    await daemon.wait_event("ready", within_s=within_s)
    await daemon.wait_event("feed_status", state="connected", within_s=within_s)
    net.release()


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
    within_s: float = 30.0,
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
