"""ccxt market structures without the network, from bundled real Binance exchangeInfo entries.

Paper runs and replays must not need a connection, yet the rest of the bot wants the same
market dicts (precision, limits, contractSize, fees) that ``exchange.load_markets()`` would
give. Rather than re-implementing Binance's parsing, this runs ccxt's own ``fetch_markets``
on an exchange object whose REST layer answers the exchangeInfo endpoints from
``bot/data/binance_exchange_info_symbols.json`` and refuses every other request, so the
result is exactly what ccxt produces and no request can ever leave the machine.

The bundled file holds one real entry per Binance venue (``spot``: BTCUSDT, ``usdm``:
BTCUSDT perpetual, ``coinm``: BTCUSD_PERP), each with a ``_fees`` key of our own that sets
maker/taker (ccxt's built-in defaults are not the account's actual fees, so we record them
next to the entry instead).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

DATA_FILE = "binance_exchange_info_symbols.json"

# Which bundled section answers which ccxt implicit-API group's ``exchangeInfo`` call.
_SECTION_BY_API = {"public": "spot", "fapiPublic": "usdm", "dapiPublic": "coinm"}

# ccxt ids whose fetch_markets only asks for the sections above. ``binanceus`` and the
# like are different venues with their own listings, so they get no offline data.
OFFLINE_EXCHANGES = frozenset({"binance", "binanceusdm", "binancecoinm"})


class OfflineRequestError(RuntimeError):
    """ccxt tried a request the bundled data cannot answer (a ccxt change we must follow)."""


def _bundled_sections() -> dict[str, tuple[dict[str, Any], dict[str, float]]]:
    """Section name -> (raw exchangeInfo symbol entry, {"maker": .., "taker": ..})."""
    raw = json.loads(files("bot").joinpath("data", DATA_FILE).read_text(encoding="utf-8"))
    sections: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}
    for name, entry in raw.items():
        entry = dict(entry)
        fees = entry.pop("_fees")
        sections[name] = (entry, {"maker": float(fees["maker"]), "taker": float(fees["taker"])})
    return sections


def _section_of(market: Mapping[str, Any]) -> str:
    if market.get("spot"):
        return "spot"
    return "usdm" if market.get("linear") else "coinm"


def offline_markets(exchange_id: str) -> dict[str, dict[str, Any]] | None:
    """Unified symbol -> ccxt market dict for ``exchange_id``, or None if nothing is bundled.

    ``binance`` gives ``BTC/USDT``, ``BTC/USDT:USDT`` and ``BTC/USD:BTC``;
    ``binanceusdm`` and ``binancecoinm`` only their own venue's market, as ccxt would.
    Each call builds fresh dicts, so callers may mutate what they get.
    """
    if exchange_id not in OFFLINE_EXCHANGES:
        return None
    import ccxt  # deferred: importing ccxt costs ~0.3 s and most callers never get here

    sections = _bundled_sections()
    base_cls: type[Any] = getattr(ccxt, exchange_id)

    class _OfflineExchange(base_cls):  # type: ignore[misc]
        # Every ccxt REST call funnels through ``request``; answering here (instead of
        # patching an instance) keeps the rest of ccxt's market parsing untouched.
        def request(
            self,
            path: str,
            api: Any = "public",
            method: str = "GET",
            params: Any = None,
            config: Any = None,
        ) -> Any:
            group = api[0] if isinstance(api, list | tuple) else api
            section = _SECTION_BY_API.get(group)
            if path != "exchangeInfo" or section is None or section not in sections:
                raise OfflineRequestError(
                    f"offline markets: no bundled answer for {group} {method} {path}"
                )
            return {"symbols": [dict(sections[section][0])]}

    # No credentials, no rate limiter sleeps, no time sync: nothing here may touch the network.
    exchange = _OfflineExchange({"enableRateLimit": False})
    parsed = exchange.fetch_markets()
    for market in parsed:
        market.update(sections[_section_of(market)][1])
    exchange.set_markets(parsed)
    return {symbol: dict(market) for symbol, market in exchange.markets.items()}


def market_id_map(
    markets: Mapping[str, Mapping[str, Any]], *, market_type: str = "spot"
) -> dict[str, str]:
    """Exchange-native id (``"BTCUSDT"``) -> unified symbol (``"BTC/USDT"``) for one market type.

    Recorded streams name markets by native id, which Binance reuses across venues
    (``BTCUSDT`` is both the spot pair and the USD-M perpetual), so the map is per type:
    ``"spot"`` (default), ``"swap"`` or ``"future"``.
    """
    out: dict[str, str] = {}
    for symbol, market in markets.items():
        if market.get("type") != market_type:
            continue
        market_id = str(market["id"])
        if market_id in out and out[market_id] != symbol:
            raise ValueError(
                f"market id {market_id!r} is ambiguous among {market_type} markets: "
                f"{out[market_id]!r} and {symbol!r}"
            )
        out[market_id] = symbol
    return out


def markets_from_responses(
    exchange_id: str, responses: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """ccxt's own ``fetch_markets`` for ``exchange_id``, its REST calls answered offline.

    ``responses``: REST path -> the raw JSON the venue returns for it (e.g. Deribit's
    ``get_instruments`` result, for option markets); any other request raises
    :class:`OfflineRequestError`. For venues with no bundled data, and for tests.
    """
    import ccxt

    base_cls: type[Any] = getattr(ccxt, exchange_id)

    class _Answered(base_cls):  # type: ignore[misc]
        def request(
            self,
            path: str,
            api: Any = "public",
            method: str = "GET",
            params: Any = None,
            config: Any = None,
        ) -> Any:
            if path not in responses:
                raise OfflineRequestError(f"offline markets: no answer for {method} {path}")
            return responses[path]

    exchange = _Answered({"enableRateLimit": False})
    exchange.set_markets(exchange.fetch_markets())
    return {symbol: dict(market) for symbol, market in exchange.markets.items()}
