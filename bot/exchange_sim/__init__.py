"""A local exchange that speaks Binance's Spot testnet protocol, for real ccxt.

The REST API (``/api/v3``) with signatures, request weights and Binance's error
codes; the websocket market streams and the WebSocket API's user data stream for
ccxt.pro; fault injection from Python (:class:`Faults`) or over the admin API
(``/_sim/faults``, ``/_sim/state``).
"""

from bot.exchange_sim.engine import SimOrder, SimTrade, SpotEngine
from bot.exchange_sim.errors import ApiError
from bot.exchange_sim.faults import Faults
from bot.exchange_sim.server import BinanceSpotEmulator
from bot.exchange_sim.symbols import SymbolRules
from bot.exchange_sim.ws import WebsocketHub, WsStats

__all__ = [
    "ApiError",
    "BinanceSpotEmulator",
    "Faults",
    "SimOrder",
    "SimTrade",
    "SpotEngine",
    "SymbolRules",
    "WebsocketHub",
    "WsStats",
]
