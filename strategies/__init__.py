"""Strategies decide; they never talk to an exchange directly.

:data:`STRATEGIES` names every strategy ``backstop run --strategy NAME`` accepts;
:func:`make_strategy` builds one from the ``[strategy]`` settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from bot.errors import UserError
from bot.settings.models import StrategySettings, suggest
from strategies.backstop import BackstopStrategy
from strategies.base import Decision, MarketContext, Quote, Strategy
from strategies.market_maker import MarketMakerStrategy

__all__ = [
    "STRATEGIES",
    "BackstopStrategy",
    "Decision",
    "MarketContext",
    "MarketMakerStrategy",
    "Quote",
    "Strategy",
    "make_strategy",
]

Factory = Callable[[StrategySettings], Strategy]

STRATEGIES: Mapping[str, Factory] = MappingProxyType(
    {
        "backstop": lambda s: BackstopStrategy(s.backstop),
        "market-maker": lambda s: MarketMakerStrategy(s.market_maker),
    }
)
"""Strategy name -> factory taking the ``[strategy]`` settings. ``backstop`` is the default."""


def make_strategy(name: str | None = None, settings: StrategySettings | None = None) -> Strategy:
    """The strategy ``name`` (default: ``settings.name``) with its configured parameters.

    An unknown name is a :class:`~bot.errors.UserError` listing the valid ones.
    """
    settings = settings if settings is not None else StrategySettings()
    chosen = name if name is not None else settings.name
    factory = STRATEGIES.get(chosen)
    if factory is None:
        valid = ", ".join(sorted(STRATEGIES))
        raise UserError(
            f"unknown strategy {chosen!r}{suggest(chosen, list(STRATEGIES))}; "
            f"valid strategies: {valid}"
        )
    return factory(settings)
