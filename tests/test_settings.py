"""Settings: source priority, credentials handling, and one clear ConfigError per mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.errors import ConfigError
from bot.markets import offline_markets
from bot.settings import Settings, load_settings, validate_symbols

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
CREDS = {"BACKSTOP_EXCHANGE__API_KEY": "key-123", "BACKSTOP_EXCHANGE__SECRET": "hush-456"}
SECRET = "hush-456"


def write(tmp_path: Path, text: str, name: str = "bot.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(
    config: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    secrets_dir: Path | None = None,
) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(config, env=env or {}, overrides=overrides, secrets_dir=secrets_dir)
    # A user mistake is reported in one message, not a chained traceback.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None
    return str(info.value)


# --------------------------------------------------------------------------- defaults / configs


def test_defaults_are_a_paper_replay_of_btc_usdt() -> None:
    s = load_settings(env={})
    assert s.mode == "paper"
    assert s.feed.source == "replay"
    assert s.exchange.id == "binance"
    assert s.symbols == ["BTC/USDT"]
    assert s.markets[0].bands_bps == [10.0, 50.0, 200.0]
    assert s.exchange.api_key is None


def test_resolved_paths_default_under_state_dir_and_follow_explicit_settings() -> None:
    s = load_settings(env={}, overrides={"state_dir": "/var/lib/backstop"})
    assert s.kill_file_path == Path("/var/lib/backstop/KILL")
    assert s.control_socket_path == Path("/var/lib/backstop/control.sock")
    assert s.journal_path == Path("/var/lib/backstop/journal.sqlite")
    s = load_settings(
        env={},
        overrides={
            "killswitch": {"kill_file": "/tmp/stop"},
            "control": {"socket": "/run/b.sock"},
            "journal": {"path": "/data/j.sqlite"},
        },
    )
    assert s.kill_file_path == Path("/tmp/stop")
    assert s.control_socket_path == Path("/run/b.sock")
    assert s.journal_path == Path("/data/j.sqlite")


def test_settings_are_frozen() -> None:
    s = load_settings(env={})
    with pytest.raises(ValidationError):
        s.mode = "live"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.feed.speed = 3  # type: ignore[misc]


def test_paper_config_loads() -> None:
    s = load_settings(CONFIG_DIR / "paper.toml", env={})
    assert s.mode == "paper"
    assert s.feed.source == "replay"
    assert s.symbols == ["BTC/USDT"]
    assert s.markets[0].reserve.base > 0
    assert s.markets[0].reserve.quote > 0


def test_strategy_section_defaults_to_the_backstop_with_documented_parameters() -> None:
    s = load_settings(env={})
    assert s.strategy.name == "backstop"
    assert s.strategy.backstop.levels == 3
    assert s.strategy.backstop.replenish == "passive"
    assert s.strategy.market_maker.half_spread_bps == 5.0
    assert s.markets[0].reserve.floor_fraction == 0.1
    # The paper config spells every strategy key out with its default value.
    paper = load_settings(CONFIG_DIR / "paper.toml", env={})
    assert paper.strategy == s.strategy
    assert paper.markets[0].reserve.floor_fraction == 0.1


def test_strategy_is_chosen_and_tuned_from_toml_env_or_command_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        [strategy]
        name = "market-maker"
        [strategy.market_maker]
        size_quote = 50
        [strategy.backstop]
        replenish = "cost_limited"
        """,
    )
    s = load_settings(cfg, env={"BACKSTOP_STRATEGY__MARKET_MAKER__LEVELS": "4"})
    assert s.strategy.name == "market-maker"
    assert s.strategy.market_maker.size_quote == 50
    assert s.strategy.market_maker.levels == 4
    assert s.strategy.backstop.replenish == "cost_limited"
    s = load_settings(cfg, env={}, overrides={"strategy": {"name": "backstop"}})
    assert s.strategy.name == "backstop"


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ('[strategy]\nname = "backstp"', ["strategy.name", "'backstop' or 'market-maker'"]),
        ("[strategy.backstop]\nlevel = 4", ["strategy.backstop.level", "did you mean 'levels'"]),
        ('[strategy.backstop]\nreplenish = "always"', ["strategy.backstop.replenish"]),
        ("[strategy.market_maker]\nhalf_spread_bps = 0", ["strategy.market_maker.half_spread"]),
        (
            '[[markets]]\nsymbol = "BTC/USDT"\nreserve = { floor_fraction = 1 }',
            ["markets[0].reserve.floor_fraction", "less than 1"],
        ),
    ],
)
def test_strategy_and_reserve_mistakes_name_the_field(
    tmp_path: Path, toml: str, fragments: list[str]
) -> None:
    msg = config_error(write(tmp_path, toml))
    for fragment in fragments:
        assert fragment in msg


def test_testnet_config_loads_with_credentials_from_env() -> None:
    s = load_settings(CONFIG_DIR / "testnet-binance.toml", env=CREDS)
    assert s.mode == "testnet"
    assert s.exchange.id == "binance"
    assert s.feed.source == "live"
    assert s.exchange.credentials_present()


def test_testnet_config_without_credentials_says_where_to_put_them() -> None:
    msg = config_error(CONFIG_DIR / "testnet-binance.toml")
    assert "testnet-binance.toml" in msg
    assert "exchange.api_key" in msg
    assert "BACKSTOP_EXCHANGE__API_KEY" in msg
    assert "BACKSTOP_EXCHANGE__SECRET" in msg


def test_live_example_refuses_until_confirmed() -> None:
    msg = config_error(CONFIG_DIR / "live.example.toml", env=CREDS)
    assert "live.example.toml" in msg
    assert "confirm_live" in msg
    s = load_settings(
        CONFIG_DIR / "live.example.toml", env={**CREDS, "BACKSTOP_CONFIRM_LIVE": "true"}
    )
    assert s.mode == "live"
    assert s.confirm_live is True


def test_live_confirmed_but_without_credentials_is_refused() -> None:
    msg = config_error(
        CONFIG_DIR / "live.example.toml",
        env={"BACKSTOP_CONFIRM_LIVE": "true", "BACKSTOP_EXCHANGE__API_KEY": "k"},
    )
    assert "exchange.secret" in msg
    assert "BACKSTOP_EXCHANGE__SECRET" in msg


# --------------------------------------------------------------------------- priority


def test_priority_cli_over_env_over_toml_over_defaults(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'state_dir = "from-file"\n[feed]\nspeed = 1\n')
    env = {"BACKSTOP_FEED__SPEED": "2"}
    assert load_settings(cfg, env=env, overrides={"feed": {"speed": 3}}).feed.speed == 3
    assert load_settings(cfg, env=env).feed.speed == 2
    assert load_settings(cfg, env={}).feed.speed == 1
    assert load_settings(env={}).feed.speed == 0
    # Tables merge key by key across sources: the file's other keys survive.
    s = load_settings(cfg, env={"BACKSTOP_FEED__DURATION_S": "30"}, overrides={"mode": "paper"})
    assert (s.feed.speed, s.feed.duration_s, s.state_dir) == (1, 30, Path("from-file"))


def test_lists_from_a_higher_source_replace_the_whole_list(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        [[markets]]
        symbol = "BTC/USDT"
        [[markets]]
        symbol = "ETH/USDT"
        """,
    )
    assert load_settings(cfg, env={}).symbols == ["BTC/USDT", "ETH/USDT"]
    env = {"BACKSTOP_MARKETS": '[{"symbol": "SOL/USDT", "bands_bps": [5, 25]}]'}
    s = load_settings(cfg, env=env)
    assert s.symbols == ["SOL/USDT"]
    assert s.markets[0].bands_bps == [5, 25]


def test_cli_none_values_mean_flag_not_given(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'mode = "paper"\n[feed]\nspeed = 4\n')
    s = load_settings(cfg, env={}, overrides={"mode": None, "feed": {"speed": None}})
    assert s.feed.speed == 4


def test_env_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKSTOP_LOGGING__LEVEL", "debug")
    assert load_settings().logging.level == "debug"
    # ...and an explicit mapping is used instead of it.
    assert load_settings(env={}).logging.level == "info"


# --------------------------------------------------------------------------- credentials


def test_credentials_from_env_are_secret() -> None:
    s = load_settings(env=CREDS)
    assert s.exchange.api_key is not None
    assert s.exchange.secret is not None
    assert s.exchange.secret.get_secret_value() == SECRET
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.exchange), str(s.model_dump())):
        assert SECRET not in text
    config = s.exchange.ccxt_config()
    assert config["apiKey"] == "key-123"
    assert config["secret"] == SECRET
    assert "password" not in config


def test_credentials_from_a_secrets_dir_both_spellings(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "BACKSTOP_EXCHANGE__API_KEY").write_text("key-from-file\n")
    (secrets / "exchange__secret").write_text(SECRET)
    s = load_settings(env={}, secrets_dir=secrets)
    assert s.exchange.api_key is not None
    assert s.exchange.secret is not None
    assert s.exchange.api_key.get_secret_value() == "key-from-file"
    assert s.exchange.secret.get_secret_value() == SECRET
    # The same directory named by BACKSTOP_SECRETS_DIR.
    s = load_settings(env={"BACKSTOP_SECRETS_DIR": str(secrets)})
    assert s.exchange.credentials_present()
    # Environment variables outrank the secrets directory.
    s = load_settings(env={"BACKSTOP_EXCHANGE__SECRET": "env-wins"}, secrets_dir=secrets)
    assert s.exchange.secret is not None
    assert s.exchange.secret.get_secret_value() == "env-wins"


def test_missing_secrets_dir_is_an_error(tmp_path: Path) -> None:
    msg = config_error(env={"BACKSTOP_SECRETS_DIR": str(tmp_path / "nope")})
    assert "BACKSTOP_SECRETS_DIR" in msg
    assert "does not exist" in msg


@pytest.mark.parametrize(
    ("table", "key"),
    [
        (f'api_key = "{SECRET}"', "exchange.api_key"),
        (f'secret = "{SECRET}"', "exchange.secret"),
        (f'apiKey = "{SECRET}"', "exchange.apiKey"),
        (f'options = {{ secret = "{SECRET}" }}', "exchange.options.secret"),
    ],
)
def test_credentials_in_the_config_file_are_refused(tmp_path: Path, table: str, key: str) -> None:
    cfg = write(tmp_path, f'[exchange]\nid = "binance"\n{table}\n')
    msg = config_error(cfg)
    assert str(cfg) in msg
    assert key in msg
    assert "must not be in the config file" in msg
    assert "BACKSTOP_EXCHANGE__API_KEY" in msg
    assert SECRET not in msg


def test_credentials_on_the_command_line_are_refused() -> None:
    msg = config_error(overrides={"exchange": {"api_key": SECRET}})
    assert msg.startswith("command line: exchange.api_key:")
    assert SECRET not in msg


def test_secret_values_never_appear_in_error_messages(tmp_path: Path) -> None:
    # A misspelled credential variable is an unknown key; its value must not be echoed.
    msg = config_error(env={"BACKSTOP_EXCHANGE__APIKEY": SECRET})
    assert "BACKSTOP_EXCHANGE__APIKEY" in msg
    assert "unknown key 'apikey'" in msg
    assert "did you mean 'api_key'" in msg
    assert SECRET not in msg
    secrets = tmp_path / "s"
    secrets.mkdir()
    (secrets / "exchange__secrett").write_text(SECRET)
    msg = config_error(secrets_dir=secrets)
    assert "exchange__secrett" in msg
    assert SECRET not in msg


# --------------------------------------------------------------------------- file errors


@pytest.mark.parametrize(
    ("toml", "field", "reason"),
    [
        ('modee = "paper"', "modee", "unknown key 'modee' (did you mean 'mode'?)"),
        ("[feed]\nsped = 2", "feed.sped", "unknown key 'sped' (did you mean 'speed'?)"),
        ('[feed]\nspeed = "fast"', "feed.speed", "must be a valid number"),
        ('mode = "production"', "mode", "must be 'paper', 'testnet' or 'live'"),
        ("[risk]\nmax_order_quote = -5", "risk.max_order_quote", "greater than 0"),
        (
            '[[markets]]\nsymbol = "BTC/USDT"\nreserve = { base = -1 }',
            "markets[0].reserve.base",
            "greater than or equal to 0",
        ),
        ('[exchange]\nid = "binanse"', "exchange.id", "unknown exchange id 'binanse'"),
        ('[[markets]]\nsymbol = "BTCUSDT"', "markets[0].symbol", "did you mean 'BTC/USDT'"),
        (
            '[[markets]]\nsymbol = "BTC/USDT"\nbands_bps = [10, 200, 50]',
            "markets[0].bands_bps[2]",
            "strictly increasing",
        ),
        ('[[markets]]\nsymbol = "BTC/USDT"\nbands_bps = []', "markets[0].bands_bps", "at least"),
        ("[[markets]]\nbands_bps = [10]", "markets[0].symbol", "required key is missing"),
        (
            '[[markets]]\nsymbol = "BTC/USDT"\nrecovery_fraction = 0.2',
            "markets[0].recovery_fraction",
            "above baseline_fraction",
        ),
        (
            '[[markets]]\nsymbol = "ETH/USDT"\n[[markets]]\nsymbol = "ETH/USDT"',
            "markets[1].symbol",
            "listed twice",
        ),
        ("markets = []", "markets", "at least one market"),
        ('[markets]\nsymbol = "BTC/USDT"', "markets", "[[markets]]"),
        (
            "[risk]\nmax_order_quote = 900\nmax_notional_per_market_quote = 100",
            "risk.max_notional_per_market_quote",
            "at least max_order_quote",
        ),
    ],
)
def test_bad_config_file_names_file_field_and_reason(
    tmp_path: Path, toml: str, field: str, reason: str
) -> None:
    cfg = write(tmp_path, toml + "\n")
    msg = config_error(cfg)
    assert msg.startswith(f"{cfg}: {field}: "), msg
    assert reason in msg


def test_unknown_exchange_suggests_close_ids(tmp_path: Path) -> None:
    msg = config_error(write(tmp_path, '[exchange]\nid = "binanse"\n'))
    assert "did you mean 'binance'" in msg


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'mode = "paper"\n[feed]\nspeed = = 2\n')
    msg = config_error(cfg)
    assert msg.startswith(f"{cfg}: TOML syntax error")
    assert "line 3" in msg


def test_missing_config_file(tmp_path: Path) -> None:
    msg = config_error(tmp_path / "absent.toml")
    assert str(tmp_path / "absent.toml") in msg
    assert "does not exist" in msg


def test_several_problems_are_reported_in_one_message(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[feed]\nspeed = -1\n[risk]\nmax_order_quote = 0\n")
    msg = config_error(cfg)
    assert "feed.speed" in msg
    assert "risk.max_order_quote" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------- env / CLI errors


def test_bad_env_var_names_the_variable() -> None:
    msg = config_error(env={"BACKSTOP_FEED__SPEED": "-2"})
    assert msg.startswith("environment variable BACKSTOP_FEED__SPEED: feed.speed: ")
    assert "greater than or equal to 0" in msg


def test_bad_json_in_env_var() -> None:
    msg = config_error(env={"BACKSTOP_MARKETS": "BTC/USDT"})
    assert msg.startswith("environment variable BACKSTOP_MARKETS: markets: ")
    assert "JSON" in msg


def test_error_inside_env_json_list_names_the_variable_and_item() -> None:
    msg = config_error(env={"BACKSTOP_MARKETS": '[{"symbol": "ETH-USDT"}]'})
    assert msg.startswith("environment variable BACKSTOP_MARKETS: markets[0].symbol: ")
    assert "did you mean 'ETH/USDT'" in msg


def test_unknown_backstop_env_var_is_refused() -> None:
    msg = config_error(env={"BACKSTOP_MODEE": "live"})
    assert "BACKSTOP_MODEE" in msg
    assert "did you mean 'mode'" in msg


def test_env_error_is_attributed_to_env_even_when_the_file_sets_the_section(
    tmp_path: Path,
) -> None:
    cfg = write(tmp_path, "[feed]\nspeed = 1\n")
    msg = config_error(cfg, env={"BACKSTOP_FEED__STALE_AFTER_S": "0"})
    assert msg.startswith("environment variable BACKSTOP_FEED__STALE_AFTER_S: feed.stale_after_s")


def test_bad_cli_override_says_command_line() -> None:
    msg = config_error(overrides={"feed": {"speed": -3}})
    assert msg.startswith("command line: feed.speed: ")
    msg = config_error(overrides={"mode": "yolo"})
    assert msg.startswith("command line: mode: ")


# --------------------------------------------------------------------------- safety checks


def test_live_mode_from_cli_names_the_command_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[feed]\nsource = "live"\n')
    msg = config_error(cfg, env=CREDS, overrides={"mode": "live"})
    assert msg.startswith("command line: confirm_live: ")
    s = load_settings(cfg, env=CREDS, overrides={"mode": "live", "confirm_live": True})
    assert s.mode == "live"


def test_trading_modes_refuse_recorded_data() -> None:
    msg = config_error(env=CREDS, overrides={"mode": "testnet"})
    assert "feed.source" in msg
    assert "live feed" in msg


def test_testnet_needs_an_exchange_with_a_sandbox() -> None:
    msg = config_error(
        env=CREDS,
        overrides={"mode": "testnet", "feed": {"source": "live"}, "exchange": {"id": "kraken"}},
    )
    assert msg.startswith("command line: exchange.id: ")
    assert "no testnet" in msg


def test_live_feed_needs_ccxt_pro_support() -> None:
    # coinmate is a ccxt REST exchange without websocket support in ccxt.pro.
    msg = config_error(overrides={"feed": {"source": "live"}, "exchange": {"id": "coinmate"}})
    assert msg.startswith("command line: exchange.id: ")
    assert "ccxt.pro" in msg


def test_paper_mode_needs_no_credentials() -> None:
    s = load_settings(env={}, overrides={"feed": {"source": "live"}})
    assert s.mode == "paper"
    assert not s.exchange.credentials_present()


def test_settings_built_directly_enforce_the_same_safety() -> None:
    with pytest.raises(ValidationError):
        Settings(mode="live", feed={"source": "live"})


# --------------------------------------------------------------------------- symbols on venue


def test_validate_symbols_accepts_symbols_on_the_venue(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[[markets]]\nsymbol = "BTC/USDT"\n[[markets]]\nsymbol = "BTC/USD:BTC"\n',
    )
    markets = offline_markets("binance")
    assert markets is not None
    validate_symbols(load_settings(cfg, env={}), markets, source="bundled offline markets")


def test_validate_symbols_names_file_field_and_suggests(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[[markets]]\nsymbol = "BTC/USDT"\n[[markets]]\nsymbol = "BTC/USDC"\n',
    )
    markets = offline_markets("binance")
    assert markets is not None
    with pytest.raises(ConfigError) as info:
        validate_symbols(load_settings(cfg, env={}), markets, source="bundled offline markets")
    msg = str(info.value)
    assert msg.startswith(f"{cfg}: markets[1].symbol: ")
    assert "symbol 'BTC/USDC' is not on exchange 'binance'" in msg
    assert "did you mean 'BTC/USDT'" in msg


def test_validate_symbols_refuses_inactive_markets() -> None:
    markets = offline_markets("binance")
    assert markets is not None
    markets["BTC/USDT"]["active"] = False
    with pytest.raises(ConfigError, match="not active"):
        validate_symbols(load_settings(env={}), markets, source="test")


def test_a_fleet_password_in_the_config_file_is_refused(tmp_path: Path) -> None:
    cfg = write(tmp_path, f'[fleet]\nenabled = false\npassword = "{SECRET}"\n')
    msg = config_error(cfg)
    assert str(cfg) in msg
    assert "fleet.password" in msg
    assert "BACKSTOP_FLEET__PASSWORD" in msg
    assert SECRET not in msg
