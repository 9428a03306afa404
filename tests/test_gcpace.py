"""The collector is run early only when asked, and never when someone turned it off."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paper_runs import paper_run

import bot.trader as trader_module
from bot.detect.machine import DetectorState
from bot.detector import DetectorUpdate, FractureDetector
from bot.orders import gcpace
from bot.orders.gcpace import collect_young


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def _young_cycle() -> weakref.ref[_Node]:
    gc.collect()  # counters at zero: no automatic pass before the test's own call
    return weakref.ref(_Node())


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_young_cyclic_garbage_is_collected_at_once(collector_on: None) -> None:
    ref = _young_cycle()
    assert ref() is not None

    assert collect_young() is True
    assert ref() is None


def test_a_disabled_collector_is_left_alone(collector_on: None) -> None:
    ref = _young_cycle()
    gc.disable()
    try:
        assert collect_young() is False
        assert ref() is not None
    finally:
        gc.enable()
    gc.collect()
    assert ref() is None


# --------------------------------------------------------------------------- in a run


async def test_a_run_collects_once_after_each_event_that_starts_arming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_on: None
) -> None:
    run = await paper_run(tmp_path, "fracture:start_s=65", feed={"duration_s": 80.0})
    assert run.trader is not None
    assert len(run.trader.desks) == 1  # one market: every reading is the one watched
    armed: list[int] = []  # reading number of each move into ARMING
    readings = 0
    update = FractureDetector.update

    def watched(self: FractureDetector, *args: Any, **kwargs: Any) -> DetectorUpdate:
        nonlocal readings
        result = update(self, *args, **kwargs)
        readings += 1
        t = result.transition
        if t is not None and t.to_state is DetectorState.ARMING:
            armed.append(readings)
        return result

    collected: list[tuple[int, bool]] = []  # (readings so far, ran)

    def recorded() -> bool:
        ran = gcpace.collect_young()
        collected.append((readings, ran))
        return ran

    monkeypatch.setattr(FractureDetector, "update", watched)
    monkeypatch.setattr(trader_module, "collect_young", recorded)
    await run.execute()

    assert armed  # the fracture armed the detector (then engaged it)
    # Once per arming event, after that event and before the next reading.
    assert collected == [(n, True) for n in armed]
