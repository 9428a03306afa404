"""The one small interface every strategy implements.

A strategy reads the local book and the engine's depth sample and returns *intents*.
It never talks to an exchange: intents go through risk checks and the order manager,
which alone can reach a venue. That is what lets the same strategy run on replayed
data, the paper venue, a testnet or a live account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.book import OrderBook
from bot.feeds.events import Trade
from bot.monitor import DepthSample


@dataclass(frozen=True, slots=True)
class Quote:
    """Rest a limit order. ``tag`` groups a strategy's quotes (e.g. ladder rung)."""

    symbol: str
    side: Literal["buy", "sell"]
    price: float
    amount: float
    post_only: bool = True
    tag: str = ""


@dataclass(frozen=True, slots=True)
class CancelAll:
    """Withdraw every quote this strategy has on ``symbol``."""

    symbol: str
    reason: str


Intent = Quote | CancelAll


class Strategy(Protocol):
    name: str

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> Sequence[Intent]:
        """Called after every applied book update of a market the strategy trades."""
        ...

    def on_trade(self, trade: Trade) -> Sequence[Intent]:
        """Called on every public trade of a market the strategy trades."""
        ...
