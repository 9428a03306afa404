"""Risk: pre-trade checks, the trading state and the guards (issue 6).

Modules, one concept each: :mod:`~bot.risk.checks` (pure pre-trade checks and the
:class:`QuoteContext` they read), :mod:`~bot.risk.bucket` (the order-rate token bucket),
:mod:`~bot.risk.events` (what the engine publishes), :mod:`~bot.risk.config` and
:mod:`~bot.risk.engine` (state, guards, and the checks that need state). The kill
switch that acts on ``kill`` guards is :mod:`bot.killswitch`. Options:
:mod:`~bot.risk.greeks` (Black-76, implied volatility, greek limits) and
:mod:`~bot.risk.options` (option books' band depth in premium and vega notional).
"""

from bot.risk.bucket import TokenBucket
from bot.risk.checks import CHECKS, QuoteContext, check_order, is_taker, reduces_position
from bot.risk.config import GuardSettings, RiskSettings
from bot.risk.engine import MarketRisk, QuotesCheck, RiskEngine
from bot.risk.events import (
    OPERATOR,
    Guard,
    GuardEvent,
    GuardLevel,
    MarketState,
    MarketStateChanged,
    RiskEvent,
    RiskObserver,
    TradingState,
    TradingStateChanged,
)

__all__ = [
    "CHECKS",
    "OPERATOR",
    "Guard",
    "GuardEvent",
    "GuardLevel",
    "GuardSettings",
    "MarketRisk",
    "MarketState",
    "MarketStateChanged",
    "QuoteContext",
    "QuotesCheck",
    "RiskEngine",
    "RiskEvent",
    "RiskObserver",
    "RiskSettings",
    "TokenBucket",
    "TradingState",
    "TradingStateChanged",
    "check_order",
    "is_taker",
    "reduces_position",
]
