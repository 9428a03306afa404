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
