"""The bot's settings: one frozen pydantic model tree, loaded by pydantic-settings.

Sources, highest priority first (nested tables merge key by key; lists replace whole):

1. command-line overrides (``load_settings(overrides=...)``, nested dicts),
2. ``BACKSTOP_*`` environment variables, nested with ``__`` (``BACKSTOP_FEED__SPEED=2``;
   lists and tables as JSON: ``BACKSTOP_MARKETS='[{"symbol": "ETH/USDT"}]'``),
3. a secrets directory (``secrets_dir=`` or ``BACKSTOP_SECRETS_DIR``): one file per value,
   named like the environment variable (``BACKSTOP_EXCHANGE__API_KEY``) or like the nested
   key (``exchange__api_key``); the Docker/Kubernetes way to hand over credentials,
4. the TOML config file (``--config``),
5. the defaults below.

Exchange credentials are accepted only from 2 and 3: a config file gets committed and
copied around, and command-line arguments show up in ``ps`` and shell history.

Every mistake comes out as one :class:`bot.errors.ConfigError` whose message names where
the bad value came from (the file, ``environment variable BACKSTOP_...``, a secrets file
or ``command line``), the field (``markets[0].bands_bps``) and what is wrong. Secret
values never appear in messages or reprs.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from bot.errors import ConfigError

ENV_PREFIX = "BACKSTOP_"
ENV_NESTED_DELIMITER = "__"
SECRETS_DIR_ENV = ENV_PREFIX + "SECRETS_DIR"
# BACKSTOP_* variables that are not settings fields but are still ours (so not typos).
RESERVED_ENV_VARS = frozenset({SECRETS_DIR_ENV})

CREDENTIAL_FIELDS = ("api_key", "secret", "password")
# ccxt's names for credentials -> our field names. Exchanges that require any other
# credential (uid, privateKey, walletAddress...) cannot be traded by this bot yet.
_CCXT_CREDENTIALS = {"apiKey": "api_key", "secret": "secret", "password": "password"}
# Keys that look like a credential wherever they appear in a config file, normalised
# (lower case, no "_" or "-"), so that typos such as ``apikey`` are refused too rather
# than reported as an unknown key with the secret echoed back.
_CREDENTIAL_KEYS = frozenset(
    {
        "apikey",
        "key",
        "secret",
        "secretkey",
        "apisecret",
        "password",
        "passphrase",
        "privatekey",
        "uid",
        "token",
        "walletaddress",
        "twofa",
        "login",
        "accountid",
    }
)

_CODE = r"[A-Za-z0-9][A-Za-z0-9._]*"
# ccxt unified symbols: BASE/QUOTE (spot), BASE/QUOTE:SETTLE (perpetual), optionally
# followed by -EXPIRY[-STRIKE-TYPE] (dated futures, options).
_SYMBOL_RE = re.compile(rf"^{_CODE}/{_CODE}(:{_CODE}(-[A-Za-z0-9.]+)*)?$")
_COMMON_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")


def _bad(message: str, **ctx: Any) -> PydanticCustomError:
    """A validation error whose message we wrote (no pydantic "Value error, " prefix).

    ``ctx`` may carry ``subloc`` (path below the validated item that the error is about)
    and ``blame`` (absolute path of the setting whose source the message should name).
    """
    return PydanticCustomError("backstop", message.replace("{", "{{").replace("}", "}}"), ctx)


def _suggest(word: str, choices: Sequence[str], n: int = 3) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in choices}
        matches = [lowered[word.lower()]] if word.lower() in lowered else []
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def _guess_symbol(text: str) -> str | None:
    """A unified symbol the user probably meant by ``text`` (``BTCUSDT`` -> ``BTC/USDT``)."""
    candidate = text.strip().upper()
    for sep in ("-", "_", " "):
        if candidate.count(sep) == 1:
            candidate = candidate.replace(sep, "/")
    if _SYMBOL_RE.match(candidate):
        return candidate
    for quote in _COMMON_QUOTES:
        if candidate.endswith(quote) and len(candidate) > len(quote):
            guess = f"{candidate[: -len(quote)]}/{quote}"
            if _SYMBOL_RE.match(guess):
                return guess
    return None


# --------------------------------------------------------------------------- models


class ExchangeSettings(BaseModel):
    """Which venue (a ccxt exchange id) and how to authenticate with it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = "binance"
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    password: SecretStr | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    """ccxt ``options`` (e.g. ``{"defaultType": "swap"}``), passed to the constructor as is."""

    @field_validator("id")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import ccxt  # deferred: ~0.3 s, and only settings validation needs it here

        known: list[str] = list(ccxt.exchanges)
        if value not in known:
            raise _bad(
                f"unknown exchange id {value!r}{_suggest(value, known)}; "
                f"it must be one of ccxt's {len(known)} exchange ids (ccxt.exchanges)"
            )
        return value

    def credentials_present(self, names: Sequence[str] = ("api_key", "secret")) -> bool:
        """True when every named credential is set and non-empty."""
        for name in names:
            value: SecretStr | None = getattr(self, name)
            if value is None or not value.get_secret_value():
                return False
        return True

    def ccxt_config(self) -> dict[str, Any]:
        """The dict for ``getattr(ccxt, id)(config)``: credentials (revealed) and options.

        Never log the result. Sandbox mode is not a constructor option in ccxt: call
        ``exchange.set_sandbox_mode(True)`` after construction in testnet mode.
        """
        config: dict[str, Any] = {"enableRateLimit": True, "options": dict(self.options)}
        for ccxt_name, field in _CCXT_CREDENTIALS.items():
            value: SecretStr | None = getattr(self, field)
            if value is not None and value.get_secret_value():
                config[ccxt_name] = value.get_secret_value()
        return config


class ReserveSettings(BaseModel):
    """The capped inventory the backstop may quote from, per market."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: NonNegativeFloat = 0.0
    quote: NonNegativeFloat = 0.0


class MarketSettings(BaseModel):
    """One market to watch and, when its depth fractures, to backstop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    """ccxt unified symbol: ``BTC/USDT`` (spot) or ``BTC/USDT:USDT`` (perpetual)."""
    bands_bps: list[PositiveFloat] = Field(default_factory=lambda: [10.0, 50.0, 200.0])
    """Depth is measured within each of these distances from mid, in basis points."""
    depth_floor_quote: NonNegativeFloat = 0.0
    """Absolute floor on quote depth within the first band; 0 disables it."""
    baseline_fraction: float = Field(default=0.3, gt=0.0, le=1.0)
    """A fracture is depth below this fraction of its rolling baseline."""
    baseline_window_s: PositiveFloat = 60.0
    max_depth_drop_per_s: NonNegativeFloat = 0.0
    """Also a fracture: losing this fraction of the baseline per second; 0 disables it."""
    max_spread_bps: PositiveFloat = 50.0
    engage_dwell_s: NonNegativeFloat = 1.0
    """How long a fracture must last before the backstop engages."""
    recovery_fraction: float = Field(default=0.6, gt=0.0, le=1.0)
    """Depth back above this fraction of baseline counts as recovered."""
    disengage_dwell_s: NonNegativeFloat = 10.0
    """How long the recovery must last before the backstop stands down."""
    reference_notional_quote: PositiveFloat = 50_000.0
    """Notional whose fill cost (slippage) is tracked as a depth measure."""
    reserve: ReserveSettings = Field(default_factory=ReserveSettings)

    @field_validator("symbol")
    @classmethod
    def _unified_symbol(cls, value: str) -> str:
        if not _SYMBOL_RE.match(value):
            guess = _guess_symbol(value)
            hint = f"; did you mean {guess!r}?" if guess and guess != value else ""
            raise _bad(
                f"{value!r} is not a ccxt unified symbol: write BASE/QUOTE for spot "
                f"(e.g. 'BTC/USDT') or BASE/QUOTE:SETTLE for a perpetual (e.g. 'BTC/USDT:USDT')"
                f"{hint}"
            )
        return value

    @field_validator("bands_bps")
    @classmethod
    def _increasing_bands(cls, value: list[float]) -> list[float]:
        if not value:
            raise _bad("needs at least one band (in basis points from mid, e.g. [10, 50, 200])")
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise _bad(
                    f"bands must be strictly increasing, but band {i} ({value[i]:g}) is not "
                    f"above band {i - 1} ({value[i - 1]:g})",
                    subloc=(i,),
                )
        if value[-1] > 10_000:
            raise _bad(
                f"{value[-1]:g} bps is more than 100% of the price", subloc=(len(value) - 1,)
            )
        return value

    @field_validator("recovery_fraction")
    @classmethod
    def _recovery_above_fracture(cls, value: float, info: ValidationInfo) -> float:
        baseline_fraction = info.data.get("baseline_fraction")
        if baseline_fraction is not None and value <= baseline_fraction:
            raise _bad(
                f"must be above baseline_fraction ({baseline_fraction:g}), otherwise the "
                f"backstop would count a still-fractured book as recovered (got {value:g})"
            )
        return value


class FeedSettings(BaseModel):
    """Where market data comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["replay", "live"] = "replay"
    replay_files: list[Path] = Field(default_factory=list)
    """Recordings to replay in order (chained); empty means the bundled sample."""
    speed: NonNegativeFloat = 0.0
    """0 = as fast as possible, 1 = real time, N = N times real time."""
    duration_s: PositiveFloat | None = None
    """Stop after this much (data) time; None = until the data ends / forever."""
    book_depth_limit: PositiveInt = 1000
    rest_fallback: bool = True
    rest_poll_interval_s: PositiveFloat = 1.0
    reconnect_initial_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0
    stale_after_s: PositiveFloat = 5.0

    @field_validator("reconnect_max_s")
    @classmethod
    def _max_above_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("reconnect_initial_s")
        if initial is not None and value < initial:
            raise _bad(f"must be at least reconnect_initial_s ({initial:g}), got {value:g}")
        return value


class RiskSettings(BaseModel):
    """Hard limits every order must pass. Defaults are deliberately small."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_quote: PositiveFloat = 1_000.0
    max_notional_per_market_quote: PositiveFloat = 5_000.0
    max_total_notional_quote: PositiveFloat = 10_000.0
    max_position_base: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Asset code -> largest absolute position in that asset (e.g. {"BTC": 0.5})."""
    max_orders_per_second: PositiveFloat = 5.0
    max_open_orders_per_market: PositiveInt = 10
    max_daily_loss_quote: PositiveFloat = 250.0
    max_drawdown_quote: PositiveFloat = 500.0
    price_band_bps: PositiveFloat = 200.0
    """Orders priced further than this from mid are refused."""

    @field_validator("max_notional_per_market_quote")
    @classmethod
    def _market_cap_covers_order(cls, value: float, info: ValidationInfo) -> float:
        order = info.data.get("max_order_quote")
        if order is not None and value < order:
            raise _bad(f"must be at least max_order_quote ({order:g}), got {value:g}")
        return value

    @field_validator("max_total_notional_quote")
    @classmethod
    def _total_cap_covers_market(cls, value: float, info: ValidationInfo) -> float:
        per_market = info.data.get("max_notional_per_market_quote")
        if per_market is not None and value < per_market:
            raise _bad(
                f"must be at least max_notional_per_market_quote ({per_market:g}), got {value:g}"
            )
        return value


class KillSwitchSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kill_file: Path | None = None
    """While this file exists the bot cancels everything and stops; None = state_dir/KILL."""
    cancel_timeout_s: PositiveFloat = 10.0


class ControlSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    socket: Path | None = None
    """Unix socket for the control commands; None = state_dir/control.sock."""


class JournalSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    """SQLite journal; None = state_dir/journal.sqlite."""
    synchronous: Literal["NORMAL", "FULL"] = "FULL"


class LoggingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything the bot is told. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        # An exported-but-empty variable (``BACKSTOP_EXCHANGE__SECRET=``) means "not set".
        env_ignore_empty=True,
    )

    mode: Literal["paper", "testnet", "live"] = "paper"
    confirm_live: bool = False
    """Live mode refuses to start unless this is true (and credentials are present)."""
    state_dir: Path = Path("state")
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    markets: list[MarketSettings] = Field(
        default_factory=lambda: [MarketSettings(symbol="BTC/USDT")]
    )
    feed: FeedSettings = Field(default_factory=FeedSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    killswitch: KillSwitchSettings = Field(default_factory=KillSwitchSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    # Field path -> where its value came from, filled by load_settings, so that errors
    # found later (a symbol missing on the venue) can still name the file or variable.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("markets")
    @classmethod
    def _unique_symbols(cls, value: list[MarketSettings]) -> list[MarketSettings]:
        if not value:
            raise _bad('needs at least one market (e.g. [[markets]] symbol = "BTC/USDT")')
        first_index: dict[str, int] = {}
        for i, market in enumerate(value):
            if market.symbol in first_index:
                first = first_index[market.symbol]
                raise _bad(
                    f"symbol {market.symbol!r} is listed twice (markets[{first}] and "
                    f"markets[{i}]); each market may appear once",
                    subloc=(i, "symbol"),
                )
            first_index[market.symbol] = i
        return value

    @model_validator(mode="after")
    def _safe_to_start(self) -> Settings:
        """Refuse combinations that would trade by accident or cannot work at all."""
        import ccxt

        exchange_id = self.exchange.id
        if self.mode in ("testnet", "live"):
            if self.feed.source != "live":
                raise _bad(
                    f"mode {self.mode!r} places real orders, so it needs the live feed "
                    f'(feed.source = "live"), not recorded data',
                    subloc=("feed", "source"),
                    blame=("mode",),
                )
            if self.mode == "live" and not self.confirm_live:
                raise _bad(
                    "mode is 'live' but confirm_live is not true: live trading must be "
                    "confirmed explicitly (confirm_live = true in the config, "
                    "BACKSTOP_CONFIRM_LIVE=true, or the command line's confirmation flag)",
                    subloc=("confirm_live",),
                    blame=("mode",),
                )
            exchange = getattr(ccxt, exchange_id)()
            if self.mode == "testnet" and not exchange.urls.get("test"):
                raise _bad(
                    f"exchange {exchange_id!r} has no testnet (sandbox) in ccxt; use mode "
                    f"'paper' or an exchange with a sandbox (e.g. 'binance')",
                    subloc=("exchange", "id"),
                )
            required = [k for k, v in exchange.requiredCredentials.items() if v]
            unsupported = [k for k in required if k not in _CCXT_CREDENTIALS]
            if unsupported:
                raise _bad(
                    f"exchange {exchange_id!r} needs credentials this bot cannot pass yet "
                    f"({', '.join(unsupported)})",
                    subloc=("exchange", "id"),
                )
            missing = [
                _CCXT_CREDENTIALS[k]
                for k in required
                if not self.exchange.credentials_present((_CCXT_CREDENTIALS[k],))
            ]
            if missing:
                names = " and ".join(f"exchange.{m}" for m in missing)
                env_names = ", ".join(_env_name(("exchange", m)) for m in missing)
                raise _bad(
                    f"mode {self.mode!r} needs exchange credentials but {names} "
                    f"{'is' if len(missing) == 1 else 'are'} not set: set the environment "
                    f"variable(s) {env_names}, or put files of those names in the secrets "
                    f"directory ({SECRETS_DIR_ENV}); never in the config file",
                    subloc=("exchange", missing[0]),
                    blame=("mode",),
                )
        if self.feed.source == "live":
            import ccxt.pro

            if exchange_id not in ccxt.pro.exchanges:
                raise _bad(
                    f"exchange {exchange_id!r} has no websocket support in ccxt.pro, which "
                    'the live feed needs; use feed.source = "replay" or another exchange',
                    subloc=("exchange", "id"),
                )
        return self

    # ---- resolved paths: defaults live under state_dir, computed, never stored

    @property
    def kill_file_path(self) -> Path:
        return self.killswitch.kill_file or self.state_dir / "KILL"

    @property
    def control_socket_path(self) -> Path:
        return self.control.socket or self.state_dir / "control.sock"

    @property
    def journal_path(self) -> Path:
        return self.journal.path or self.state_dir / "journal.sqlite"

    @property
    def symbols(self) -> list[str]:
        return [m.symbol for m in self.markets]

    def market(self, symbol: str) -> MarketSettings:
        for m in self.markets:
            if m.symbol == symbol:
                return m
        raise KeyError(symbol)

    def origin(self, field_path: str) -> str | None:
        """Where ``field_path`` (e.g. ``"markets[0].symbol"``) was set, if load_settings knows."""
        return self._origins.get(field_path)


# --------------------------------------------------------------------------- sources


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source reading a given mapping instead of ``os.environ``.

    Lets tests (and embedders) pass an environment without touching the process's.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self._environ.items()
            if not (self.env_ignore_empty and v == "")
        }


@dataclass(frozen=True)
class _Source:
    """One place settings came from, with what it contributed (for naming it in errors)."""

    kind: Literal["cli", "env", "secrets", "file", "defaults"]
    source: PydanticBaseSettingsSource | None
    data: Mapping[str, Any]
    file: Path | None = None
    environ: Mapping[str, str] | None = None
    secrets_prefix: str = ""

    def describe(self, loc: tuple[str | int, ...]) -> str:
        if self.kind == "cli":
            return "command line"
        if self.kind == "file":
            return str(self.file)
        if self.kind == "defaults":
            return "built-in defaults"
        names = list(_env_name_candidates(loc, self.secrets_prefix))
        if self.kind == "env":
            present = {k.upper(): k for k in (self.environ or {})}
            found = next((present[n] for n in names if n in present), names[0] if names else "")
            return f"environment variable {found}"
        assert self.file is not None
        on_disk = (
            {p.name.upper(): p.name for p in self.file.iterdir()} if self.file.is_dir() else {}
        )
        found = next((on_disk[n] for n in names if n in on_disk), names[0] if names else "")
        return f"secrets file {self.file / found}"


def _env_name(loc: tuple[str | int, ...], prefix: str = ENV_PREFIX) -> str:
    return (prefix + ENV_NESTED_DELIMITER.join(str(p) for p in loc)).upper()


def _env_name_candidates(loc: tuple[str | int, ...], prefix: str) -> Iterator[str]:
    """Variable names that could have set ``loc``, most specific first.

    Lists arrive as one JSON value, so the path stops at the first list index.
    """
    dict_path: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        dict_path.append(part)
    for n in range(len(dict_path), 0, -1):
        yield _env_name(tuple(dict_path[:n]), prefix)


def _walk(data: Any, loc: tuple[str | int, ...]) -> bool:
    """Whether ``data`` decides the merged value at ``loc``: it holds the whole path, or a
    list or scalar on the way (only tables merge across sources; anything else replaces
    lower-priority values whole, so a missing key inside a list element is still ours)."""
    node = data
    for part in loc:
        if not (isinstance(node, Mapping) and part in node):
            return False
        node = node[part]
        if not isinstance(node, Mapping):
            return True
    return True


def _owner(sources: Sequence[_Source], loc: tuple[str | int, ...]) -> _Source | None:
    """The source whose value ended up at ``loc`` after merging (None: a default)."""
    for src in sources:  # highest priority first
        if _walk(src.data, loc):
            return src
    return None


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(settings)"


def _is_secret_path(loc: Sequence[str | int]) -> bool:
    return any(
        isinstance(p, str)
        and (
            p in CREDENTIAL_FIELDS
            or p == "options"
            or p.replace("_", "").lower() in _CREDENTIAL_KEYS
        )
        for p in loc
    )


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The settings model class that holds the key at ``loc`` (for "did you mean")."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        candidates = [annotation, *(inner or ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _reason(error: Mapping[str, Any], loc: tuple[str | int, ...], origin: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        hint = _suggest(key, list(model.model_fields)) if model else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    message = message.replace("Input should be", "must be")
    if kind == "backstop" or _is_secret_path(loc):
        return message
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message += f" (got {shown})"
    if kind == "list_type" and loc == ("markets",) and origin == "file":
        message += "; in TOML write one [[markets]] table per market"
    return message


def _describe_validation_error(exc: ValidationError, sources: Sequence[_Source]) -> str:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        loc: tuple[str | int, ...] = tuple(error["loc"]) + tuple(ctx.get("subloc", ()))
        blame: tuple[str | int, ...] = tuple(ctx.get("blame", loc))
        owner = _owner(sources, blame) or _Source("defaults", None, {})
        problems.append(
            f"{owner.describe(blame)}: {_field_path(loc)}: {_reason(error, loc, owner.kind)}"
        )
    if len(problems) > 3:
        problems = [*problems[:3], f"and {len(problems) - 3} more problem(s)"]
    return "; ".join(problems)


# --------------------------------------------------------------------------- loading


def _drop_none(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """CLI flags not given arrive as None: they mean "not set", not "set to None"."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        out[key] = _drop_none(value) if isinstance(value, Mapping) else value
    return out


def _credential_keys(data: Mapping[str, Any]) -> list[str]:
    """Dotted paths of credential-like keys in a config's [exchange] table."""
    exchange = data.get("exchange")
    if not isinstance(exchange, Mapping):
        return []
    found = [
        f"exchange.{k}"
        for k in exchange
        if k in CREDENTIAL_FIELDS or k.replace("_", "").replace("-", "").lower() in _CREDENTIAL_KEYS
    ]
    options = exchange.get("options")
    if isinstance(options, Mapping):
        found += [
            f"exchange.options.{k}"
            for k in options
            if str(k).replace("_", "").replace("-", "").lower() in _CREDENTIAL_KEYS
        ]
    return found


def _where_credentials_go() -> str:
    env = ", ".join(_env_name(("exchange", f)) for f in CREDENTIAL_FIELDS)
    return (
        f"set them in environment variables ({env}) or as files of those names in a secrets "
        f"directory (set {SECRETS_DIR_ENV})"
    )


def _check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse BACKSTOP_* variables that set nothing: a typo must not silently fall back."""
    fields = list(Settings.model_fields)
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV_VARS:
            continue
        top = upper[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER)[0].lower()
        if top not in fields:
            raise ConfigError(
                f"environment variable {name}: unknown setting {top!r}"
                f"{_suggest(top, fields)}; settings variables are {ENV_PREFIX}<FIELD> or "
                f"{ENV_PREFIX}<SECTION>{ENV_NESTED_DELIMITER}<FIELD>"
            )


def _read_toml(config_file: Path) -> TomlConfigSettingsSource:
    if not config_file.exists():
        raise ConfigError(f"{config_file}: config file does not exist")
    if not config_file.is_file():
        raise ConfigError(f"{config_file}: config path is not a file")
    try:
        return TomlConfigSettingsSource(Settings, toml_file=config_file)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{config_file}: TOML syntax error: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config_file}: cannot read config file: {e}") from None


def _secrets_sources(directory: Path, origin: str) -> list[_Source]:
    if not directory.exists():
        raise ConfigError(f"{origin}: secrets directory {directory} does not exist")
    if not directory.is_dir():
        raise ConfigError(f"{origin}: secrets path {directory} is not a directory")
    sources: list[_Source] = []
    # Two spellings: the env-var name (BACKSTOP_EXCHANGE__API_KEY) and the bare nested key
    # (exchange__api_key), as Docker/Kubernetes secrets are usually named either way.
    for prefix in (ENV_PREFIX, ""):
        try:
            src = NestedSecretsSettingsSource(
                SecretsSettingsSource(Settings, secrets_dir=directory),
                secrets_dir_missing="error",
                secrets_prefix=prefix,
            )
            data = src()
        except (SettingsError, OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"secrets directory {directory}: {_scrub(str(e))}") from None
        sources.append(_Source("secrets", src, data, file=directory, secrets_prefix=prefix))
    return sources


def _scrub(message: str) -> str:
    # pydantic-settings' parse errors name the field, never the value; keep it that way.
    return message.split("\n", 1)[0]


def _record_origins(settings: Settings, sources: Sequence[_Source]) -> None:
    paths: list[tuple[str | int, ...]] = [("exchange", "id"), ("mode",)]
    paths += [("markets", i, "symbol") for i in range(len(settings.markets))]
    origins: dict[str, str] = {}
    for loc in paths:
        owner = _owner(sources, loc)
        origins[_field_path(loc)] = owner.describe(loc) if owner else "built-in defaults"
    settings._origins = origins


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
) -> Settings:
    """Build the settings: overrides > env > secrets dir > TOML file > defaults.

    ``overrides`` are the command line's values as nested dicts (``{"feed": {"speed": 2}}``;
    None values mean "flag not given"). ``env`` defaults to ``os.environ``. ``secrets_dir``
    defaults to ``$BACKSTOP_SECRETS_DIR`` when that is set. Raises :class:`ConfigError`
    with one message naming the source, the field and the problem.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    _check_env_names(environ)

    # Highest priority first; each keeps what it contributed so errors can name it.
    sources: list[_Source] = []
    cli = _drop_none(overrides or {})
    cli_source = InitSettingsSource(Settings, init_kwargs=cli)
    sources.append(_Source("cli", cli_source, cli_source()))
    leaked = _credential_keys(cli)
    if leaked:
        raise ConfigError(
            f"command line: {leaked[0]}: credentials are not accepted on the command line "
            f"(they would show in the process list and shell history); {_where_credentials_go()}"
        )

    env_source = _MappingEnvSource(Settings, environ)
    try:
        env_data = env_source()
    except SettingsError as e:
        field = re.search(r'field "([^"]+)"', str(e))
        name = _env_name((field.group(1),)) if field else ENV_PREFIX + "*"
        raise ConfigError(
            f"environment variable {name}: {field.group(1) if field else 'value'}: "
            f"not valid JSON (lists and tables must be given as JSON)"
        ) from None
    sources.append(_Source("env", env_source, env_data, environ=environ, secrets_prefix=ENV_PREFIX))

    if secrets_dir is not None:
        sources += _secrets_sources(secrets_dir, "command line")
    else:
        from_env = next((v for k, v in environ.items() if k.upper() == SECRETS_DIR_ENV and v), None)
        if from_env:
            sources += _secrets_sources(Path(from_env), f"environment variable {SECRETS_DIR_ENV}")

    if config_file is not None:
        toml_source = _read_toml(config_file)
        toml_data = toml_source()
        leaked = _credential_keys(toml_data)
        if leaked:
            raise ConfigError(
                f"{config_file}: {leaked[0]}: credentials must not be in the config file "
                f"(config files get committed and copied); remove it and "
                f"{_where_credentials_go()}"
            )
        sources.append(_Source("file", toml_source, toml_data, file=config_file))

    built = tuple(s.source for s in sources if s.source is not None)
    try:
        settings = Settings(_build_sources=((*built, DefaultSettingsSource(Settings)), cli))
    except ValidationError as e:
        raise ConfigError(_describe_validation_error(e, sources)) from None
    except SettingsError as e:
        raise ConfigError(f"settings: {_scrub(str(e))}") from None
    _record_origins(settings, sources)
    return settings


def validate_symbols(settings: Settings, markets: Mapping[str, Any], *, source: str) -> None:
    """Check every configured symbol exists (and is active) in ``markets``.

    ``markets`` is ccxt's ``exchange.markets`` (or :func:`bot.markets.offline_markets`);
    ``source`` says where it came from, e.g. ``"binance (bundled offline markets)"``.
    """
    available = list(markets)
    for i, market in enumerate(settings.markets):
        path = f"markets[{i}].symbol"
        origin = settings.origin(path) or "settings"
        symbol = market.symbol
        if symbol not in markets:
            hint = _suggest(symbol, available)
            if not hint:
                related = [s for s in available if s.split(":")[0] == symbol.split(":")[0]]
                if related:
                    hint = " (this exchange has " + " and ".join(repr(s) for s in related[:3]) + ")"
            raise ConfigError(
                f"{origin}: {path}: symbol {symbol!r} is not on exchange "
                f"{settings.exchange.id!r} (markets from {source}){hint}"
            )
        info = markets[symbol]
        if isinstance(info, Mapping) and info.get("active") is False:
            raise ConfigError(
                f"{origin}: {path}: symbol {symbol!r} is not active on exchange "
                f"{settings.exchange.id!r} (trading halted or delisted; markets from {source})"
            )
