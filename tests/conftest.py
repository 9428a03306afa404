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

These tests run the daemon in its own process against the emulator in real time. Their
fills no longer race the recording (the test plays the taker once a quote rests, see
``tests/e2e_support.py``), but three wall-clock races remain on a loaded 2-core machine,
measured over 36 runs without reruns: the spot rehearsal at 3x speed trips the
``reject_burst`` guard when the bot resends a post-only price the venue has just refused
(its book lags the venue's; 2 of 17 runs), a restart's recovery takes longer than the
test waits (2 of 8 COIN-M runs), and a request times out at start-up. A rerun separates
those from a real failure; every rerun is listed in the summary (``R``), so a test that
needs them is visible, not hidden."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.flaky(reruns=E2E_RERUNS))
