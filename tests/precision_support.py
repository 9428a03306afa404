"""What the precision tests share: ccxt's own exchange objects, offline, on the bundled
market definitions, to compare the bot's rounding with ccxt's."""

from __future__ import annotations

from typing import Any

import ccxt

from bot.markets import offline_markets

EXCHANGES = ("binance", "binanceusdm", "binancecoinm")


def offline_exchange(exchange_id: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """ccxt's (sync) exchange with the bundled markets set, and those markets."""
    markets = offline_markets(exchange_id) or {}
    ex = getattr(ccxt, exchange_id)({"enableRateLimit": False})
    ex.set_markets(list(markets.values()))
    return ex, markets
