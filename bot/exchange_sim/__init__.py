"""A local exchange that speaks Binance's Spot testnet protocol, for real ccxt.

First slice: the REST API (``/api/v3``) with signatures, request weights, Binance's
error codes and fault injection. Websocket streams come in a later slice.
"""

from bot.exchange_sim.engine import SimOrder, SimTrade, SpotEngine
from bot.exchange_sim.errors import ApiError
from bot.exchange_sim.faults import Faults
from bot.exchange_sim.server import BinanceSpotEmulator
from bot.exchange_sim.symbols import SymbolRules

__all__ = [
    "ApiError",
    "BinanceSpotEmulator",
    "Faults",
    "SimOrder",
    "SimTrade",
    "SpotEngine",
    "SymbolRules",
]
