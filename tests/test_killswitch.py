"""The kill switch against the real PaperVenue + OrderManager: every trigger takes our
resting quotes to "no open order of ours confirmed", leaves foreign orders alone, and
the tripped state survives a restart until an operator resumes with a reason.

Data time is a ManualClock. With venue latency a "pump" task plays the feed: each loop
turn it moves data time 1 ms and republishes the book, which is when the paper venue's
matching engine handles requests that have arrived. Nothing sleeps to wait: tests await
the kill switch's own futures and records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ccxt
import pytest
from order_fakes import OpenThrottle, RecordingSleep, publish_book

from bot.book import OrderBook
from bot.clock import NS_PER_MS, NS_PER_SECOND, ManualClock
from bot.killswitch import (
    STATE_FILE,
    TRANSITIONS,
    KillEvent,
    KillRecord,
    KillState,
    KillSwitch,
    TripSource,
    link_risk,
)
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.orders import OrderManager, OrderManagerConfig, OrderState
from bot.risk import RiskEngine, TradingState
from bot.settings.models import KillSwitchSettings, RiskSettings
from bot.venues.paper import PaperVenue
from strategies.base import Quote

BTC = "BTC/USDT"
BIDS = [[59_990.0, 1.0], [59_980.0, 2.0]]
ASKS = [[60_010.0, 1.0], [60_020.0, 2.0]]
LADDER = [Quote(BTC, "buy", 59_900.0 - 10 * i, 0.01) for i in range(3)] + [
    Quote(BTC, "sell", 60_100.0 + 10 * i, 0.01) for i in range(3)
]
FOREIGN_ID = "human-7"


class PollSleep(RecordingSleep):
    """Advances data time instead of sleeping, and lets a test await a number of calls."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self._called = asyncio.Condition()

    async def __call__(self, seconds: float) -> None:
        await super().__call__(seconds)
        async with self._called:
            self._called.notify_all()

    async def calls(self, n: int) -> None:
        """Until ``n`` more calls have been made."""
        target = len(self.delays) + n
        async with self._called:
            await self._called.wait_for(lambda: len(self.delays) >= target)


class Desk:
    """One market on the paper venue, our order manager, and a kill switch on a state dir."""

    def __init__(
        self, clock: ManualClock, state_dir: Path, *, latency_ms: float = 0.0, **ks: Any
    ) -> None:
        markets = offline_markets("binance")
        assert markets is not None
        self.clock = clock
        self.state_dir = state_dir
        self.venue = PaperVenue(
            markets={BTC: markets[BTC]},
            balances={"USDT": 100_000.0, "BTC": 1.0},
            clock=clock,
            latency_ms=latency_ms,
        )
        self.book = OrderBook(BTC, clock=clock)
        self.om = OrderManager(
            self.venue,
            clock=clock,
            rng=random.Random(7),
            log=null_logger(),
            config=OrderManagerConfig(),
            throttler=OpenThrottle(),
            sleep=RecordingSleep(clock),
        )
        self.publish()
        self.config = KillSwitchSettings(**ks)
        self.sleep = PollSleep(clock)
        self.halted = False
        self.states_at_stop: list[OrderState] | None = None
        self.ks = self.switch()
        self.records: list[KillRecord] = []
        self.ks.subscribe(self.records.append)

    def switch(self) -> KillSwitch:
        """A kill switch on this desk's state dir (a new one = a restarted daemon)."""
        return KillSwitch(
            self.config,
            state_dir=self.state_dir,
            kill_file=self.state_dir / "KILL",
            orders=self.om,
            venue=self.venue,
            symbols=[BTC],
            clock=self.clock,
            log=null_logger(),
            sleep=self.sleep,
            stop_strategy=self.stop,
            resume_strategy=self.resume,
        )

    def stop(self) -> None:
        self.halted = True
        self.states_at_stop = [o.state for o in self.om.open_orders(BTC)]

    def resume(self) -> None:
        self.halted = False

    def publish(self) -> None:
        publish_book(self.venue, self.book, BTC, self.clock.now_ns(), BIDS, ASKS)

    @contextlib.asynccontextmanager
    async def flowing(self) -> AsyncIterator[None]:
        """Market data keeps arriving (1 ms of data time per loop turn) inside the block."""

        async def pump() -> None:
            while True:
                self.clock.advance(NS_PER_MS)
                self.publish()
                await asyncio.sleep(0)

        task = asyncio.create_task(pump())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def rest_quotes(self, *, foreign: bool = True) -> None:
        async with self.flowing():
            self.om.sync_quotes(BTC, LADDER)
            await self.om.drain()
            if foreign:
                await self.venue.create_order(
                    BTC, "limit", "buy", 0.01, 58_000.0, {"clientOrderId": FOREIGN_ID}
                )
        assert [o.state for o in self.om.open_orders(BTC)] == [OrderState.OPEN] * 6

    async def open_on_venue(self) -> tuple[list[str], list[str]]:
        """(our, foreign) client ids the venue lists as open."""
        listing = await self.venue.fetch_open_orders(BTC)
        ids = [str(o["clientOrderId"]) for o in listing]
        return [i for i in ids if self.om.is_ours(i)], [i for i in ids if not self.om.is_ours(i)]

    def next_record(self, action: str) -> asyncio.Future[KillRecord]:
        future: asyncio.Future[KillRecord] = asyncio.get_running_loop().create_future()

        def watch(record: KillRecord) -> None:
            if record.action == action and not future.done():
                future.set_result(record)
                unsubscribe()

        unsubscribe = self.ks.subscribe(watch)
        return future

    def saved(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.state_dir / STATE_FILE).read_text("utf-8"))
        return doc


@contextlib.asynccontextmanager
async def watching(ks: KillSwitch) -> AsyncIterator[None]:
    task = asyncio.create_task(ks.watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# =============================================================================== operator


@pytest.mark.parametrize("latency_ms", [0.0, 50.0])
async def test_operator_kill_cancels_every_order_of_ours_and_leaves_foreign_ones(
    clock: ManualClock, tmp_path: Path, latency_ms: float
) -> None:
    desk = Desk(clock, tmp_path, latency_ms=latency_ms)
    await desk.rest_quotes()
    assert await desk.open_on_venue() == (
        [o.client_id for o in desk.om.open_orders(BTC)],
        [FOREIGN_ID],
    )

    async with desk.flowing():
        started = time.perf_counter_ns()
        report = await desk.ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")
        wall_ns = time.perf_counter_ns() - started

    assert report.flat
    assert desk.ks.state is KillState.TRIPPED_FLAT
    assert await desk.open_on_venue() == ([], [FOREIGN_ID])
    assert desk.om.open_orders(BTC) == []
    assert (report.attempts, len(report.cancelled), report.remaining, report.foreign) == (
        1,
        6,
        (),
        1,
    )
    # The strategy was stopped before any cancel went out.
    assert desk.states_at_stop == [OrderState.OPEN] * 6
    assert [(r.action, r.previous, r.state) for r in desk.records] == [
        ("trip", KillState.ARMED, KillState.TRIPPED_CANCELLING),
        ("flat", KillState.TRIPPED_CANCELLING, KillState.TRIPPED_FLAT),
    ]
    assert (desk.records[0].reason, desk.records[0].source, desk.records[0].who) == (
        "OPERATOR: drill",
        "operator",
        "alice",
    )
    # Kill to flat, on the data clock: one trip of the venue latency for the cancels
    # (sent together), plus the pump's 1 ms steps.
    latency_ns = int(latency_ms * NS_PER_MS)
    assert latency_ns <= report.elapsed_ns < latency_ns + 10 * NS_PER_MS
    assert desk.records[-1].elapsed_ns == report.elapsed_ns
    assert wall_ns < NS_PER_SECOND
    print(
        f"\nkill-to-flat latency_ms={latency_ms:g}: data {report.elapsed_ns / 1e6:.1f} ms, "
        f"wall {wall_ns / 1e6:.2f} ms, cancelled {len(report.cancelled)}, "
        f"foreign left {report.foreign}"
    )


async def test_resume_is_refused_while_cancelling_and_accepted_with_a_reason_once_flat(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path, latency_ms=50.0)
    await desk.rest_quotes()
    assert desk.ks.resume("nothing to resume", who="alice") == "NOT_TRIPPED: state=armed"

    cancelling = desk.ks.trip_soon("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")
    # No data flows, so the cancels cannot reach the matching engine yet.
    await asyncio.sleep(0)
    assert desk.ks.state is KillState.TRIPPED_CANCELLING
    refused = desk.ks.resume("let me trade", who="alice")
    assert refused is not None
    assert refused.startswith("STILL_CANCELLING: since_s=0.000")
    # A second trigger while cancelling joins the same round.
    again = desk.ks.trip_soon("OPERATOR: again", source=TripSource.OPERATOR, who="bob")
    assert again is cancelling

    async with desk.flowing():
        report = await cancelling
    assert report.flat
    assert report.reason == "OPERATOR: drill"  # the first trigger's trip
    assert desk.ks.resume("   ", who="alice") == "REASON_REQUIRED: a resume needs a reason"
    assert desk.halted
    assert desk.ks.resume("drill over", who="alice") is None
    assert desk.ks.state is KillState.ARMED
    assert not desk.halted
    resume = desk.records[-1]
    assert (resume.action, resume.reason, resume.who, resume.previous) == (
        "resume",
        "drill over",
        "alice",
        KillState.TRIPPED_FLAT,
    )
    assert [r.action for r in desk.records] == ["trip", "trip", "flat", "resume"]


async def test_tripping_again_once_flat_cancels_again_and_times_the_new_trip(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes(foreign=False)
    await desk.ks.trip("OPERATOR: first", source=TripSource.OPERATOR, who="alice")
    clock.advance(60 * NS_PER_SECOND)
    report = await desk.ks.trip("OPERATOR: second", source=TripSource.OPERATOR, who="bob")
    assert report.flat
    assert report.elapsed_ns < NS_PER_SECOND
    assert (report.reason, report.who) == ("OPERATOR: second", "bob")
    assert desk.records[2].previous is KillState.TRIPPED_FLAT
    assert desk.saved()["reason"] == "OPERATOR: second"


# =============================================================================== confirmation


async def test_an_order_of_ours_the_manager_does_not_know_is_found_and_cancelled(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes()
    # Left by an earlier run (our prefix), unknown to this manager.
    await desk.venue.create_order(
        BTC, "limit", "sell", 0.01, 61_000.0, {"clientOrderId": "bs1-old-1"}
    )

    report = await desk.ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")

    assert report.flat
    assert report.attempts == 2  # the first listing still showed it; reconcile cancelled it
    assert desk.sleep.delays == [0.25]
    assert await desk.open_on_venue() == ([], [FOREIGN_ID])


class StuckOrders:
    """An order manager whose cancels never take."""

    def __init__(self) -> None:
        self.cancel_rounds = 0
        self.reconciles = 0

    def is_ours(self, client_id: str | None) -> bool:
        return bool(client_id) and str(client_id).startswith("bs1-")

    def cancel_all(self, symbol: str, *, reason: str) -> list[str]:
        self.cancel_rounds += 1
        return ["bs1-stuck-1"]

    async def drain(self) -> None:
        return None

    async def reconcile(self, symbol: str) -> None:
        self.reconciles += 1


class StuckVenue:
    def __init__(self) -> None:
        self.stuck = True
        self.listing_errors = 0

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        if self.listing_errors:
            self.listing_errors -= 1
            raise ccxt.NetworkError("binance GET /openOrders timed out")
        ours = [{"clientOrderId": "bs1-stuck-1"}] if self.stuck else []
        return [*ours, {"clientOrderId": None}]


def stuck_switch(
    clock: ManualClock, tmp_path: Path, sleep: PollSleep, **cfg: Any
) -> tuple[KillSwitch, StuckOrders, StuckVenue]:
    orders, venue = StuckOrders(), StuckVenue()
    ks = KillSwitch(
        KillSwitchSettings(**cfg),
        state_dir=tmp_path,
        kill_file=tmp_path / "KILL",
        orders=orders,
        venue=venue,
        symbols=[BTC],
        clock=clock,
        log=null_logger(),
        sleep=sleep,
    )
    return ks, orders, venue


async def test_when_flat_cannot_be_confirmed_it_stays_cancelling_and_keeps_retrying(
    clock: ManualClock, tmp_path: Path
) -> None:
    sleep = PollSleep(clock)
    ks, orders, venue = stuck_switch(clock, tmp_path, sleep, confirm_attempts=3)
    records: list[KillRecord] = []
    ks.subscribe(records.append)

    report = await ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")

    assert not report.flat
    assert ks.state is KillState.TRIPPED_CANCELLING
    assert (report.attempts, report.remaining, report.foreign) == (3, ("bs1-stuck-1",), 1)
    assert (orders.cancel_rounds, orders.reconciles) == (3, 3)
    assert sleep.delays == [0.25, 0.5]  # backoff between rounds, on the injected sleep
    assert report.elapsed_ns == int(0.75 * NS_PER_SECOND)
    assert records[-1].action == "not_flat"
    assert records[-1].numbers["remaining"] == 1
    assert (ks.resume("please", who="alice") or "").startswith("STILL_CANCELLING")

    # The watcher starts another round cancel_timeout_s later; this time it works.
    venue.stuck = False
    venue.listing_errors = 1  # and the first listing of that round fails: not confirmed
    flat: asyncio.Future[KillRecord] = asyncio.get_running_loop().create_future()
    ks.subscribe(lambda r: r.action == "flat" and not flat.done() and flat.set_result(r))
    async with watching(ks):
        record = await flat
    assert ks.state is KillState.TRIPPED_FLAT
    assert record.numbers["attempts"] == 2
    assert ks.last_report is not None
    assert ks.last_report.errors[0].startswith("LISTING_FAILED: symbol=BTC/USDT error=NetworkError")
    assert ks.resume("fixed", who="alice") is None


async def test_a_crashed_round_is_reported_and_retried_by_the_watcher(
    clock: ManualClock, tmp_path: Path
) -> None:
    sleep = PollSleep(clock)
    ks, orders, venue = stuck_switch(clock, tmp_path, sleep)
    venue.stuck = False
    crash = RuntimeError("bug in cancel_all")

    def broken(symbol: str, *, reason: str) -> list[str]:
        orders.cancel_all = StuckOrders().cancel_all  # type: ignore[method-assign]
        raise crash

    orders.cancel_all = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="bug in cancel_all"):
        await ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")
    assert ks.state is KillState.TRIPPED_CANCELLING
    flat: asyncio.Future[KillRecord] = asyncio.get_running_loop().create_future()
    ks.subscribe(lambda r: r.action == "flat" and not flat.done() and flat.set_result(r))
    async with watching(ks):
        await flat
    assert ks.state is KillState.TRIPPED_FLAT


# =============================================================================== persistence


async def test_a_restarted_daemon_stays_tripped_until_resumed_with_a_reason(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes()
    await desk.ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")
    saved = desk.saved()
    assert (saved["state"], saved["reason"], saved["source"], saved["who"]) == (
        "tripped_flat",
        "OPERATOR: drill",
        "operator",
        "alice",
    )
    assert saved["ts_ns"] == desk.records[0].ts_ns
    assert not (tmp_path / (STATE_FILE + ".tmp")).exists()

    desk.halted = False
    restarted = desk.switch()
    assert restarted.is_tripped
    assert desk.halted  # the strategy is stopped from the start
    # Flat was the old process's finding; the new one must confirm it again.
    assert restarted.state is KillState.TRIPPED_CANCELLING
    status = restarted.status()
    assert (status["state"], status["reason"], status["who"]) == (
        "tripped_cancelling",
        "OPERATOR: drill",
        "alice",
    )
    tripped_at = datetime.fromtimestamp(desk.records[0].ts_ns / NS_PER_SECOND, tz=UTC)
    assert status["since"] == tripped_at.isoformat()
    assert (restarted.resume("restart", who="bob") or "").startswith("STILL_CANCELLING")
    clock.advance(3600 * NS_PER_SECOND)  # the daemon was down for an hour
    report = await restarted.confirm_flat()
    assert report is not None
    assert report.flat
    assert report.elapsed_ns < NS_PER_SECOND  # this process's work, not the downtime
    assert await restarted.confirm_flat() is None  # confirmed: nothing more to do
    assert await desk.open_on_venue() == ([], [FOREIGN_ID])
    assert restarted.resume("post-mortem done", who="bob") is None
    saved = desk.saved()
    assert (saved["state"], saved["resumed_reason"], saved["resumed_by"]) == (
        "armed",
        "post-mortem done",
        "bob",
    )
    assert desk.switch().state is KillState.ARMED
    assert await desk.switch().confirm_flat() is None


async def test_the_watcher_confirms_a_restored_trip_by_itself(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes(foreign=False)
    await desk.ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")
    restarted = desk.switch()
    flat: asyncio.Future[KillRecord] = asyncio.get_running_loop().create_future()
    restarted.subscribe(lambda r: r.action == "flat" and not flat.done() and flat.set_result(r))
    async with watching(restarted):
        await flat
    assert restarted.state is KillState.TRIPPED_FLAT


async def test_an_unreadable_state_file_counts_as_tripped(
    clock: ManualClock, tmp_path: Path
) -> None:
    (tmp_path / STATE_FILE).write_text("{half a json", "utf-8")
    desk = Desk(clock, tmp_path)
    assert desk.ks.state is KillState.TRIPPED_CANCELLING
    assert str(desk.ks.status()["reason"]).startswith("STATE_FILE_UNREADABLE: path=")


async def test_stopping_a_killed_daemon_keeps_the_kill_and_its_reason_for_the_next_start(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes()
    await desk.ks.trip("OPERATOR: drill", source=TripSource.OPERATOR, who="alice")
    tripped_at = desk.ks.status()["since"]
    async with desk.flowing():
        await desk.ks.handle_signal(signal.SIGTERM)  # the service is stopped afterwards
    assert desk.ks.stop_requested.is_set()
    saved = desk.saved()
    assert (saved["reason"], saved["source"], saved["who"]) == (
        "OPERATOR: drill",
        "operator",
        "alice",
    )
    restarted = desk.switch().status()
    assert (restarted["reason"], restarted["since"]) == ("OPERATOR: drill", tripped_at)


# =============================================================================== other triggers


async def test_sigterm_during_active_quoting_cancels_everything_then_asks_the_daemon_to_stop(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path, latency_ms=20.0)
    await desk.rest_quotes()

    async def trader() -> None:
        # Requotes on every data update until the kill switch stops the strategy.
        while not desk.halted:
            desk.om.sync_quotes(BTC, LADDER)
            await asyncio.sleep(0)

    async with desk.flowing():
        quoting = asyncio.create_task(trader())
        undo = desk.ks.install_signal_handlers()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await desk.ks.stop_requested.wait()
        finally:
            undo()
        await quoting

    assert desk.ks.state is KillState.TRIPPED_FLAT
    assert await desk.open_on_venue() == ([], [FOREIGN_ID])
    trip = desk.records[0]
    assert (trip.reason, trip.source, trip.who) == (
        "SIGNAL: name=SIGTERM",
        "signal",
        "signal:SIGTERM",
    )
    # A graceful stop is routine: the next start does not wait for an operator.
    assert not (tmp_path / STATE_FILE).exists()
    assert desk.switch().state is KillState.ARMED


async def test_an_operator_kill_during_a_graceful_stop_is_what_the_next_start_remembers(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path, latency_ms=20.0)
    await desk.rest_quotes()
    stopping = desk.ks.handle_signal(signal.SIGINT)
    desk.ks.trip_soon("OPERATOR: stop for real", source=TripSource.OPERATOR, who="alice")
    async with desk.flowing():
        await stopping
    assert desk.ks.stop_requested.is_set()
    assert (desk.saved()["state"], desk.saved()["who"]) == ("tripped_flat", "alice")
    assert desk.switch().is_tripped


async def test_the_kill_file_trips_once_per_appearance(clock: ManualClock, tmp_path: Path) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes()
    kill_file = tmp_path / "KILL"
    flat = desk.next_record("flat")
    async with watching(desk.ks):
        await desk.sleep.calls(2)
        assert desk.ks.state is KillState.ARMED
        kill_file.write_text("maintenance: db migration\nsecond line ignored\n", "utf-8")
        record = await flat
        assert await desk.open_on_venue() == ([], [FOREIGN_ID])
        trip = desk.records[0]
        assert trip.reason == f"KILL_FILE: path={kill_file} note=maintenance: db migration"
        assert (trip.source, trip.who) == ("kill_file", "kill file")
        assert record.elapsed_ns is not None
        await desk.sleep.calls(3)  # still there: no second trip
        assert [r.action for r in desk.records] == ["trip", "flat"]
        assert desk.ks.resume("done", who="alice") == (
            f"KILL_FILE_PRESENT: path={kill_file} (remove it first)"
        )
        kill_file.unlink()
        await desk.sleep.calls(1)
        assert desk.ks.resume("done", who="alice") is None
        flat = desk.next_record("flat")
        kill_file.touch()  # a new appearance: trips again
        await flat
    assert [r.action for r in desk.records] == ["trip", "flat", "resume", "trip", "flat"]
    assert desk.records[3].reason == f"KILL_FILE: path={kill_file}"
    assert desk.saved()["source"] == "kill_file"


async def test_a_kill_guard_trips_the_switch_and_a_resume_makes_trading_active_again(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    await desk.rest_quotes()
    risk = RiskEngine(RiskSettings(), clock=clock, log=null_logger(), symbols=[BTC])
    unlink = link_risk(desk.ks, risk)
    flat = desk.next_record("flat")

    risk.on_equity(None, 0.0)
    risk.on_equity(None, -300.0)  # daily loss 300 >= 250: level kill

    record = await flat
    trip = desk.records[0]
    assert (trip.source, trip.who) == ("guard", "guard:daily_loss")
    assert trip.reason.startswith("DAILY_LOSS: loss=300 max=250")
    assert risk.trading_state is TradingState.HALTED
    assert record.state is KillState.TRIPPED_FLAT
    assert await desk.open_on_venue() == ([], [FOREIGN_ID])

    risk.on_equity(None, 0.0)  # marked back up; the kill latch holds until resumed
    assert desk.ks.resume("loss explained", who="alice") is None
    assert risk.trading_state is TradingState.ACTIVE
    unlink()
    # A restarted daemon that comes up tripped halts the risk engine when linked.
    await desk.ks.trip("OPERATOR: x", source=TripSource.OPERATOR, who="alice")
    fresh = RiskEngine(RiskSettings(), clock=clock, log=null_logger(), symbols=[BTC])
    link_risk(desk.switch(), fresh)
    assert fresh.trading_state is TradingState.HALTED


async def test_a_quiet_control_channel_trips_the_switch_when_configured(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path, control_loss_s=5.0)
    await desk.rest_quotes(foreign=False)
    flat = desk.next_record("flat")
    async with watching(desk.ks):
        for _ in range(10):  # heard every poll (1 s): stays armed
            desk.ks.control_heartbeat()
            await desk.sleep.calls(1)
        assert desk.ks.state is KillState.ARMED
        await flat
    trip = desk.records[0]
    assert trip.reason.startswith("CONTROL_LOST: quiet_s=")
    assert trip.reason.endswith("max_s=5")
    assert trip.source == "control_lost"
    assert await desk.open_on_venue() == ([], [])


async def test_a_lost_control_channel_only_trips_when_configured(
    clock: ManualClock, tmp_path: Path
) -> None:
    desk = Desk(clock, tmp_path)
    assert desk.ks.control_lost("socket closed") is None
    assert desk.ks.state is KillState.ARMED
    configured = Desk(clock, tmp_path / "b", control_loss_s=5.0)
    task = configured.ks.control_lost("socket closed")
    assert task is not None
    assert (await task).flat
    assert configured.records[0].reason == "CONTROL_LOST: detail=socket closed"


# =============================================================================== the table


def test_resume_is_the_only_way_back_to_armed_and_only_from_flat() -> None:
    into_armed = [key for key, target in TRANSITIONS.items() if target is KillState.ARMED]
    assert into_armed == [(KillState.TRIPPED_FLAT, KillEvent.RESUME)]
    assert all((state, KillEvent.TRIP) in TRANSITIONS for state in KillState)


def test_the_kill_switch_refuses_a_config_of_the_wrong_type(
    clock: ManualClock, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match="KillSwitchSettings"):
        KillSwitch(
            {},  # type: ignore[arg-type]
            state_dir=tmp_path,
            kill_file=tmp_path / "KILL",
            orders=StuckOrders(),
            venue=StuckVenue(),
            symbols=[BTC],
            clock=clock,
            log=null_logger(),
        )
