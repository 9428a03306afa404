"""The exchange-side dead-man switch's timing and states, on an injected clock.

The one place this suite uses a fake exchange: the local emulator speaks Binance spot,
and neither Binance spot nor the emulator has a cancel-all-after call (ccxt's
``binance.has['cancelAllOrdersAfter']`` is not set). The fake exposes only what the
switch touches: ``has`` and ``cancel_all_orders_after``, with ccxt's signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ccxt
import pytest

from bot.clock import NS_PER_SECOND, ManualClock
from bot.deadman import DISARM_WITH_ZERO, DeadManState, DeadManSwitch, supported
from bot.errors import OperationalError
from bot.logs import Logger
from bot.settings import load_settings
from bot.settings.models import DeadManSettings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
CREDS = {"BACKSTOP_EXCHANGE__API_KEY": "k", "BACKSTOP_EXCHANGE__SECRET": "s"}


class Venue:
    """``has`` and ``cancel_all_orders_after``; ``fail`` makes the next calls raise."""

    def __init__(self, clock: ManualClock) -> None:
        self.has: dict[str, Any] = {"cancelAllOrdersAfter": True}
        self.calls: list[tuple[float, int, dict[str, Any]]] = []
        self.fail: Exception | None = None
        self._clock = clock

    async def cancel_all_orders_after(self, timeout: int, params: dict[str, Any] = {}) -> Any:  # noqa: ASYNC109, B006
        self.calls.append((self._clock.now_ns() / NS_PER_SECOND, timeout, dict(params)))
        if self.fail is not None:
            raise self.fail
        return {"code": "0"}


class Stop(Exception):
    """Ends :meth:`DeadManSwitch.run` after the scripted number of steps."""


class Steps:
    """An injected sleep: advances the clock by the asked delay, runs ``before`` hooks
    keyed by step number, and stops the loop after ``steps`` sleeps."""

    def __init__(self, clock: ManualClock, steps: int) -> None:
        self.clock = clock
        self.steps = steps
        self.delays: list[float] = []
        self.before: dict[int, Any] = {}

    async def __call__(self, seconds: float) -> None:
        if len(self.delays) == self.steps:
            raise Stop
        self.delays.append(seconds)
        self.clock.advance(round(seconds * NS_PER_SECOND))
        hook = self.before.get(len(self.delays))
        if hook is not None:
            hook()


def make(
    clock: ManualClock, log: Logger, steps: int = 0, **kwargs: Any
) -> tuple[DeadManSwitch, Venue, Steps]:
    venue = Venue(clock)
    sleep = Steps(clock, steps)
    config = DeadManSettings(timeout_s=60, interval_s=15, params={"type": "spot"})
    switch = DeadManSwitch(venue, config, clock=clock, log=log, sleep=sleep, **kwargs)
    return switch, venue, sleep


def t0(clock: ManualClock) -> float:
    return clock.now_ns() / NS_PER_SECOND


async def test_start_arms_the_timer_and_the_loop_rearms_it_every_interval(
    clock: ManualClock, log: Logger
) -> None:
    switch, venue, sleep = make(clock, log, steps=3)
    start = t0(clock)
    await switch.arm_once()
    with pytest.raises(Stop):
        await switch.run()

    assert [(round(t - start), ms, p) for t, ms, p in venue.calls] == [
        (0, 60_000, {"type": "spot"}),
        (15, 60_000, {"type": "spot"}),
        (30, 60_000, {"type": "spot"}),
        (45, 60_000, {"type": "spot"}),
    ]
    assert sleep.delays == [15, 15, 15]
    assert switch.state is DeadManState.ARMED
    # The exchange cancels 60 s after the last successful re-arm, not after the first.
    assert switch.deadline_ns == clock.now_ns() + 60 * NS_PER_SECOND
    assert switch.status()["seconds_left"] == 60


async def test_a_failed_rearm_is_retried_sooner_and_recovers(
    clock: ManualClock, log: Logger
) -> None:
    switch, venue, sleep = make(clock, log, steps=3)
    await switch.arm_once()
    sleep.before[1] = lambda: setattr(venue, "fail", ccxt.NetworkError("timed out"))
    sleep.before[2] = lambda: setattr(venue, "fail", None)
    with pytest.raises(Stop):
        await switch.run()

    # 15 s: re-arm fails -> retry a quarter interval later (3.75 s), succeeds, back to 15 s.
    assert sleep.delays == [15, 3.75, 15]
    assert switch.state is DeadManState.ARMED
    assert switch.failures == 1
    assert "NetworkError" in (switch.last_error or "")
    assert switch.rearms == 3


async def test_the_timer_lapses_when_no_rearm_succeeds_for_timeout_s(
    clock: ManualClock, log: Logger
) -> None:
    lapses: list[str] = []
    switch, venue, _ = make(clock, log, steps=30, on_lapse=lapses.append)
    await switch.arm_once()
    armed_at = t0(clock)
    venue.fail = ccxt.ExchangeNotAvailable("maintenance")
    with pytest.raises(Stop):
        await switch.run()

    failing_times = [t - armed_at for t, _, _ in venue.calls[1:]]
    lapse_calls = [t for t in failing_times if t >= 60]
    assert switch.state is DeadManState.LAPSED
    # Flagged at the first failed attempt at or after the deadline, and only once.
    assert len(lapses) == 1
    assert lapse_calls
    assert lapse_calls[0] == pytest.approx(60.0)
    assert "EXCHANGE_DEADMAN_LAPSED" in lapses[0]
    assert all(t < 60 for t in failing_times[: failing_times.index(lapse_calls[0])])


async def test_an_unhealthy_bot_stops_rearming_so_the_exchange_cancels(
    clock: ManualClock, log: Logger
) -> None:
    healthy = [True]
    lapses: list[str] = []
    switch, venue, sleep = make(
        clock, log, steps=8, healthy=lambda: healthy[0], on_lapse=lapses.append
    )
    start = t0(clock)
    await switch.arm_once()
    sleep.before[2] = lambda: healthy.__setitem__(0, False)
    with pytest.raises(Stop):
        await switch.run()

    # Armed at 0 and re-armed at 15; then unhealthy: no call at all, lapse at 15 + 60.
    assert [round(t - start) for t, _, _ in venue.calls] == [0, 15]
    assert t0(clock) - start >= 75
    assert switch.state is DeadManState.LAPSED
    assert len(lapses) == 1


async def test_a_clean_stop_disarms_where_the_venue_can_and_nothing_is_open(
    clock: ManualClock, log: Logger
) -> None:
    switch, venue, _ = make(clock, log, can_disarm=True, flat=lambda: True)
    await switch.start()
    await switch.aclose()

    assert [ms for _, ms, _ in venue.calls] == [60_000, 0]
    assert switch.state is DeadManState.DISARMED


async def test_a_stop_with_orders_still_open_leaves_the_timer_to_cancel_them(
    clock: ManualClock, log: Logger
) -> None:
    switch, venue, _ = make(clock, log, can_disarm=True, flat=lambda: False)
    await switch.start()
    await switch.aclose()

    assert [ms for _, ms, _ in venue.calls] == [60_000]
    assert switch.state is DeadManState.RELEASED


async def test_a_venue_without_a_disarm_is_left_to_run_out(
    clock: ManualClock, log: Logger
) -> None:
    switch, venue, _ = make(clock, log, can_disarm=False)
    await switch.start()
    await switch.aclose()

    assert [ms for _, ms, _ in venue.calls] == [60_000]
    assert switch.state is DeadManState.RELEASED


async def test_a_first_arm_the_venue_refuses_stops_the_start(
    clock: ManualClock, log: Logger
) -> None:
    switch, venue, _ = make(clock, log)
    venue.fail = ccxt.PermissionDenied("DCP not enabled for this account")
    with pytest.raises(OperationalError) as refused:
        await switch.start()

    assert "DCP not enabled" in str(refused.value)
    assert "deadman.enabled = false" in str(refused.value)
    assert switch.state is DeadManState.IDLE


class Orders:
    def __init__(self) -> None:
        self.open: dict[str, list[str]] = {}

    def open_orders(self, symbol: str) -> list[str]:
        return self.open.get(symbol, [])


def test_wired_for_testnet_on_a_venue_that_has_it_and_nowhere_else(
    clock: ManualClock, log: Logger
) -> None:
    testnet = load_settings(CONFIG_DIR / "testnet-bybit.toml", env=CREDS)
    paper = load_settings(CONFIG_DIR / "paper.toml", env={})
    off = load_settings(
        CONFIG_DIR / "testnet-bybit.toml", env={**CREDS, "BACKSTOP_DEADMAN__ENABLED": "false"}
    )
    no_call = Venue(clock)
    no_call.has = {"cancelAllOrdersAfter": None}  # what ccxt's binance says
    startup: list[Any] = []
    closers: list[Any] = []

    def wire(settings: Any, venue: Any) -> DeadManSwitch | None:
        return DeadManSwitch.wire(
            settings, venue, Orders(), startup=startup, closers=closers, clock=clock, log=log
        )

    assert wire(paper, Venue(clock)) is None
    assert wire(off, Venue(clock)) is None
    assert wire(testnet, no_call) is None
    assert startup == []
    assert closers == []
    wired = wire(testnet, Venue(clock))
    assert wired is not None
    assert startup == [wired.start]
    assert closers == [wired.aclose]
    assert wired.config.params == {"type": "spot"}  # Bybit's product, from the config


def test_ccxt_support_matches_what_the_switch_relies_on() -> None:
    assert supported(ccxt.okx())
    assert supported(ccxt.bybit())
    assert supported(ccxt.kraken())
    assert not supported(ccxt.binance())
    assert set(ccxt.exchanges) >= DISARM_WITH_ZERO


def test_interval_must_leave_room_for_a_retry_before_the_timeout() -> None:
    with pytest.raises(ValueError, match="at most half of timeout_s"):
        DeadManSettings(timeout_s=20, interval_s=15)
    with pytest.raises(ValueError, match="greater than or equal to 10"):
        DeadManSettings(timeout_s=5)
