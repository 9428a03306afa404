from __future__ import annotations

# Imported first: otherwise a session that imports no hypothesis test (an e2e file on its
# own) imports it in hypothesis's terminal summary, where CPython 3.11.7's AST recursion
# depth bug (python/cpython#106905) broke pytest's rewrite of it in 4 of 37 such runs,
# ending a session whose tests had passed with a SystemError.
import hypothesis  # noqa: F401
import pytest

from bot.clock import ManualClock
from bot.logs import Logger, null_logger


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=1_723_161_255_000_000_000)


@pytest.fixture
def log() -> Logger:
    return null_logger()
