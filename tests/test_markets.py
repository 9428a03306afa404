"""Offline ccxt markets built from the bundled real Binance exchangeInfo entries."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from bot.markets import market_id_map, offline_markets


def _markets(exchange_id: str) -> dict[str, dict[str, Any]]:
    markets = offline_markets(exchange_id)
    assert markets is not None
    return markets


def test_binance_has_spot_usdm_and_coinm_markets() -> None:
    assert set(_markets("binance")) == {"BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC"}


def test_spot_market_matches_exchange_info_filters() -> None:
    m = _markets("binance")["BTC/USDT"]
    assert (m["id"], m["type"], m["spot"], m["contract"]) == ("BTCUSDT", "spot", True, False)
    assert (m["base"], m["quote"]) == ("BTC", "USDT")
    assert m["precision"]["price"] == pytest.approx(0.01)  # PRICE_FILTER tickSize
    assert m["precision"]["amount"] == pytest.approx(0.00001)  # LOT_SIZE stepSize
    assert m["limits"]["amount"]["min"] == pytest.approx(0.00001)
    assert m["limits"]["cost"]["min"] == pytest.approx(5.0)  # NOTIONAL minNotional
    assert (m["maker"], m["taker"]) == (0.001, 0.001)  # from the bundled _fees
    assert m["active"] is True
    assert "_fees" not in m["info"]


def test_usdm_perpetual_is_linear_with_unit_contracts() -> None:
    m = _markets("binance")["BTC/USDT:USDT"]
    assert (m["type"], m["linear"], m["inverse"], m["settle"]) == ("swap", True, False, "USDT")
    assert m["contractSize"] == 1
    assert m["precision"]["price"] == pytest.approx(0.1)
    assert m["precision"]["amount"] == pytest.approx(0.001)
    assert (m["maker"], m["taker"]) == (0.0002, 0.0004)


def test_coinm_perpetual_is_inverse_with_100_usd_contracts() -> None:
    m = _markets("binance")["BTC/USD:BTC"]
    assert m["id"] == "BTCUSD_PERP"
    assert (m["type"], m["linear"], m["inverse"], m["settle"]) == ("swap", False, True, "BTC")
    assert m["contractSize"] == 100
    assert m["precision"]["amount"] == pytest.approx(1.0)
    assert (m["maker"], m["taker"]) == (0.0001, 0.0005)


def test_venue_specific_ids_only_get_their_own_market() -> None:
    assert set(_markets("binanceusdm")) == {"BTC/USDT:USDT"}
    assert set(_markets("binancecoinm")) == {"BTC/USD:BTC"}


@pytest.mark.parametrize("exchange_id", ["kraken", "binanceus", "okx"])
def test_exchanges_without_bundled_data_get_none(exchange_id: str) -> None:
    assert offline_markets(exchange_id) is None


def test_no_network_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("offline_markets tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert "BTC/USDT" in _markets("binance")


def test_each_call_returns_fresh_dicts() -> None:
    first = _markets("binance")
    first["BTC/USDT"]["active"] = False
    del first["BTC/USD:BTC"]
    second = _markets("binance")
    assert second["BTC/USDT"]["active"] is True
    assert "BTC/USD:BTC" in second


def test_market_id_map_per_type() -> None:
    markets = _markets("binance")
    assert market_id_map(markets) == {"BTCUSDT": "BTC/USDT"}
    assert market_id_map(markets, market_type="swap") == {
        "BTCUSDT": "BTC/USDT:USDT",
        "BTCUSD_PERP": "BTC/USD:BTC",
    }


def test_market_id_map_refuses_ambiguous_ids() -> None:
    markets = {
        "A/B": {"id": "AB", "type": "spot"},
        "A/B2": {"id": "AB", "type": "spot"},
    }
    with pytest.raises(ValueError, match="ambiguous"):
        market_id_map(markets)
