"""Normalised market-data events: what every feed yields and the engine consumes.

Prices and sizes arrive as ``(n, 2)`` float64 arrays of ``[price, size]`` rows. Feeds
convert but do not judge them: validation (NaN, negative, crossed, out of order) is
the order book's job, so that every source is held to the same rules and counted in
one place.

``ts_ns`` is when the bot received the event, on the bot's clock (the recorder's
receive stamp in a replay). ``exchange_ts_ns`` is the exchange's own stamp when the
message carries one; the two differ by clock offset as well as latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

Levels = npt.NDArray[np.float64]
"""``(n, 2)`` array of ``[price, size]`` rows."""

EMPTY_LEVELS: Levels = np.empty((0, 2), dtype=np.float64)


def levels(rows: object) -> Levels:
    """Convert ``[[price, size], ...]`` (numbers or numeric strings) to :data:`Levels`.

    Raises ``ValueError`` when the rows are not numeric pairs; feeds count that as
    a malformed message.
    """
    arr = np.asarray(rows, dtype=np.float64)
    if arr.size == 0:
        return EMPTY_LEVELS
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"expected [[price, size], ...], got shape {arr.shape}")
    # Some venues append extra columns (order count, liquidation count); keep two.
    return arr[:, :2] if arr.shape[1] > 2 else arr


# The events below are built once per message on the hot path: plain slotted classes,
# since a frozen dataclass's __init__ costs ~5x as much. Nothing assigns to an event
# after it is built (treat them as immutable); Trade keeps the hash a frozen one had.


@dataclass(slots=True)
class BookSnapshot:
    """The full book (or its top N levels) at ``update_id``."""

    symbol: str
    ts_ns: int
    bids: Levels
    asks: Levels
    update_id: int | None = None
    exchange_ts_ns: int | None = None


@dataclass(slots=True)
class BookDelta:
    """Absolute new sizes for some levels; size 0 removes the level.

    ``first_id``/``last_id`` are the update-id range the message covers (Binance
    ``U``/``u``), ``prev_id`` the previous message's ``last_id`` when the venue
    sends it (Binance futures ``pu``).
    """

    symbol: str
    ts_ns: int
    bids: Levels
    asks: Levels
    first_id: int | None = None
    last_id: int | None = None
    prev_id: int | None = None
    exchange_ts_ns: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class Trade:
    """A public trade. ``side`` is the aggressor's side."""

    symbol: str
    ts_ns: int
    price: float
    amount: float
    side: Literal["buy", "sell"]
    trade_id: str
    exchange_ts_ns: int | None = None


class FeedState(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RESYNCING = "resyncing"
    FALLBACK_REST = "fallback_rest"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A change in a feed's health. Data guards act on these."""

    symbol: str
    ts_ns: int
    state: FeedState
    detail: str = ""


MarketEvent = BookSnapshot | BookDelta | Trade | FeedStatus
