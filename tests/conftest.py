from __future__ import annotations

import pytest

from bot.clock import ManualClock
from bot.logs import Logger, null_logger


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=1_723_161_255_000_000_000)


@pytest.fixture
def log() -> Logger:
    return null_logger()


E2E_RERUNS = 2
"""How often an ``e2e`` test is re-run before it counts as failed.

These tests run the daemon in its own process against the emulator in real time, and
the fills they wait for come from one or two aggressive sweeps in the recorded market:
whether our quotes rest at that instant depends on wall-clock scheduling on a loaded
2-core machine. A rerun separates that race from a real failure; every rerun is listed
in the summary (``R``), so a test that needs them is visible, not hidden."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.flaky(reruns=E2E_RERUNS))
