"""Every ready config in config/ loads and validates, and names real markets.

Credentials come through the env mapping (never the process environment), as an
operator's would. Binance symbols are checked against the bundled offline markets (ccxt's
own parser on real exchangeInfo entries); Bybit and OKX have no offline data here, so
their configs use the unified spot symbol BTC/USDT, which both list.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import ccxt
import ccxt.pro
import pytest

from bot.errors import ConfigError
from bot.markets import offline_markets
from bot.settings import load_settings, validate_symbols
from bot.settings.models import DeadManSettings, FleetSettings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
CREDS = {"BACKSTOP_EXCHANGE__API_KEY": "key-123", "BACKSTOP_EXCHANGE__SECRET": "secret-456"}
LIVE_CONFIRMED = {**CREDS, "BACKSTOP_CONFIRM_LIVE": "true"}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_config_loads_with_what_its_mode_needs(path: Path) -> None:
    settings = load_settings(path, env=LIVE_CONFIRMED)

    assert settings.mode in ("paper", "testnet", "live")
    assert settings.markets


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
def test_paper_on_live_public_data_for_each_venue(exchange: str) -> None:
    path = CONFIG_DIR / f"paper-live-{exchange}.toml"
    # No credentials at all: paper mode on a public book needs none.
    settings = load_settings(path, env={})

    assert settings.mode == "paper"
    assert settings.feed.source == "live"
    assert settings.exchange.id == exchange
    assert settings.symbols == ["BTC/USDT"]
    assert settings.state_dir == Path(f"state/paper-live-{exchange}")
    assert settings.markets[0].reserve.quote > 0  # something to paper-trade with
    # ccxt builds the exchange with these options, and the book is streamed (ccxt.pro).
    built = getattr(ccxt, exchange)({"options": dict(settings.exchange.options)})
    assert built.options["defaultType"] == "spot"
    assert getattr(ccxt.pro, exchange)().has["watchOrderBook"]


def test_binance_configs_name_markets_binance_lists() -> None:
    markets = offline_markets("binance")
    assert markets is not None
    for name in ("paper-live-binance.toml", "testnet-binance.toml", "paper.toml"):
        settings = load_settings(CONFIG_DIR / name, env=CREDS)
        validate_symbols(settings, markets, source="binance (bundled offline markets)")


def test_the_usdm_testnet_config_trades_the_futures_sandbox_in_isolated_margin() -> None:
    settings = load_settings(CONFIG_DIR / "testnet-binance-usdm.toml", env=CREDS)
    markets = offline_markets("binanceusdm")
    assert markets is not None
    validate_symbols(settings, markets, source="binanceusdm (bundled offline markets)")
    exchange = ccxt.binanceusdm({"options": dict(settings.exchange.options)})
    exchange.set_sandbox_mode(True)

    assert settings.mode == "testnet"
    assert settings.exchange.id == "binanceusdm"
    assert settings.feed.source == "live"
    assert "testnet.binancefuture.com/fapi" in str(exchange.urls["api"]["fapiPrivate"])
    (market,) = settings.markets
    assert markets[market.symbol]["linear"]
    assert markets[market.symbol]["contract"]
    # The reserve is margin in the settle currency; the leverage is what the start sets.
    assert (market.reserve.base, market.reserve.quote) == (0, 1000.0)
    assert market.perp.leverage <= market.perp.max_leverage


def test_the_coinm_testnet_config_trades_the_inverse_perp_in_btc_margin() -> None:
    settings = load_settings(CONFIG_DIR / "testnet-binance-coinm.toml", env=CREDS)
    markets = offline_markets("binancecoinm")
    assert markets is not None
    validate_symbols(settings, markets, source="binancecoinm (bundled offline markets)")
    exchange = ccxt.binancecoinm({"options": dict(settings.exchange.options)})
    exchange.set_sandbox_mode(True)

    assert settings.mode == "testnet"
    assert settings.exchange.id == "binancecoinm"
    assert settings.feed.source == "live"
    assert "testnet.binancefuture.com/dapi" in str(exchange.urls["api"]["dapiPrivate"])
    (market,) = settings.markets
    assert markets[market.symbol]["inverse"]
    assert markets[market.symbol]["contractSize"] == 100
    # The reserve is margin in the settle currency (BTC); the leverage is what the start sets.
    assert (market.reserve.base, market.reserve.quote) == (0.02, 0)
    assert market.perp.leverage <= market.perp.max_leverage


def test_the_bybit_testnet_config_trades_the_sandbox_with_env_credentials() -> None:
    settings = load_settings(CONFIG_DIR / "testnet-bybit.toml", env=CREDS)
    exchange = ccxt.bybit({"options": dict(settings.exchange.options)})
    exchange.set_sandbox_mode(True)

    assert settings.mode == "testnet"
    assert settings.exchange.id == "bybit"
    assert settings.exchange.credentials_present()
    assert settings.feed.source == "live"
    assert "testnet" in str(exchange.urls["api"])
    # Bybit's cancel-all-after defaults to derivatives: the config asks for spot.
    assert settings.deadman.enabled
    assert settings.deadman.params == {"type": "spot"}


def test_the_bybit_testnet_config_without_credentials_says_where_they_go() -> None:
    with pytest.raises(ConfigError) as missing:
        load_settings(CONFIG_DIR / "testnet-bybit.toml", env={})

    assert "BACKSTOP_EXCHANGE__API_KEY" in str(missing.value)
    assert "never in the config file" in str(missing.value)


def test_paper_toml_documents_every_fleet_and_deadman_key() -> None:
    text = (CONFIG_DIR / "paper.toml").read_text()
    doc = tomllib.loads(text)

    for table, model in (("fleet", FleetSettings), ("deadman", DeadManSettings)):
        assert table in doc
        section = text[text.index(f"[{table}]") :]
        for key in model.model_fields:
            if key == "password":  # a secret: never in a config file
                assert "password" not in doc[table]
                continue
            assert re.search(rf"^#? ?{key} = ", section, re.MULTILINE), f"{table}.{key}"
    # What the file sets is the default, so copying it changes nothing.
    assert FleetSettings(**doc["fleet"]) == FleetSettings()
    assert DeadManSettings(**doc["deadman"]) == DeadManSettings()
