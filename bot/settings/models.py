"""The settings model tree: frozen pydantic models, one per section of the config.

Sources, priorities and error messages live in :mod:`bot.settings.loading`; the
package docstring (:mod:`bot.settings`) explains them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
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
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    SettingsConfigDict,
)

from bot.options.settings import OptionsSettings

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
CREDENTIAL_KEYS = frozenset(
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
        "tokens",
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
# Shortest control API bearer token accepted (a guessable token on TCP is no lock).
MIN_TOKEN_CHARS = 16
# A role token's name: ROLE.NAME (see bot.governance.roles).
_TOKEN_NAME_RE = re.compile(r"^(viewer|operator|admin)\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_COMMON_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "TRY", "BTC", "ETH", "BNB")


def _bad(message: str, **ctx: Any) -> PydanticCustomError:
    """A validation error whose message we wrote (no pydantic "Value error, " prefix).

    ``ctx`` may carry ``subloc`` (path below the validated item that the error is about)
    and ``blame`` (absolute path of the setting whose source the message should name).
    """
    return PydanticCustomError("backstop", message.replace("{", "{{").replace("}", "}}"), ctx)


def suggest(word: str, choices: Sequence[str], n: int = 3) -> str:
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
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    """How long one REST call may take before ccxt gives up on it (ccxt ``timeout``).
    An order create that times out is looked up by its client id, never re-sent."""
    keep_warm_s: float = Field(default=10.0, ge=0, lt=15)
    """Ask the venue's server time (weight 1) through the connections orders and
    cancels use once they have been idle this long, so the first order of an episode
    does not wait for a new TCP + TLS connection (aiohttp closes idle ones after 15 s,
    hence below 15). 0 = off."""
    urls_override: dict[str, str] = Field(default_factory=dict)
    """Repoint single ccxt API URLs, applied after sandbox selection: dotted paths into
    ccxt's ``urls["api"]`` (``public``, ``private``, ``ws.spot``, ``ws.ws-api.spot`` ...)
    -> ``http(s)://`` or ``ws(s)://`` URLs. For a local exchange emulator (``backstop
    exchange-sim`` prints the table) or an egress proxy. Checked at load: an unknown
    path is an error, so a typo cannot leave one endpoint on the real venue."""

    @field_validator("urls_override")
    @classmethod
    def _urls_are_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for path, url in value.items():
            if not url.startswith(("http://", "https://", "ws://", "wss://")):
                raise _bad(f"{url!r} is not an http(s):// or ws(s):// URL", subloc=(path,))
        return value

    @field_validator("id")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import ccxt  # deferred: ~0.3 s, and only settings validation needs it here

        known: list[str] = list(ccxt.exchanges)
        if value not in known:
            raise _bad(
                f"unknown exchange id {value!r}{suggest(value, known)}; "
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
    floor_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """This fraction of the starting base and of the starting quote is never used: a
    buy may only spend quote above ``quote x floor_fraction``, a sell only base above
    ``base x floor_fraction`` (enforced by :mod:`bot.budget`)."""


class PerpSettings(BaseModel):
    """A perpetual futures market (ccxt ``swap``, linear or inverse): ``[markets.perp]``.

    Ignored for spot markets. Margin is isolated; the reserve is the margin, in the
    settle currency (``reserve.quote`` USDT for ``BTC/USDT:USDT``, ``reserve.base`` BTC
    for ``BTC/USD:BTC``). See docs/derivatives.md.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    leverage: float = Field(default=5.0, gt=0.0, le=125.0)
    """Isolated-margin leverage set on the market: initial margin = notional / leverage."""
    max_leverage: float = Field(default=10.0, gt=0.0, le=125.0)
    """The position's effective leverage (notional at mark / (margin + unrealised PnL))
    above this: quotes pulled, only reducing orders until it is back under."""
    maintenance_margin_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    """None = the market's own (Binance ``maintMarginPercent``, 2.5% for the bundled BTC perps)."""
    funding_rate: float = Field(default=0.0001, ge=-0.05, le=0.05)
    """Paper venue funding rate per interval (positive: longs pay shorts). The bundled
    recordings carry no funding stream, so paper runs take it from here."""
    funding_interval_h: float = Field(default=8.0, gt=0.0, le=24.0)
    """Funding is paid at every multiple of this many hours since 00:00 UTC."""
    max_funding_rate: float = Field(default=0.001, gt=0.0)
    """|funding rate| above this: the side that pays it (buys when positive) is not
    quoted, except orders that reduce the position."""
    max_position_contracts: PositiveFloat | None = None
    """Largest |position| in contracts (None = no contract cap)."""
    max_position_notional_quote: PositiveFloat | None = None
    """Largest |position| notional at mark, in quote (None = no notional cap)."""
    min_liquidation_distance_bps: NonNegativeFloat = 500.0
    """Mark closer than this to the liquidation price: quotes pulled, only reducing orders."""
    mark_last_band_bps: PositiveFloat = 50.0
    """Mark price and last trade price further apart than this: the market is paused."""

    @model_validator(mode="after")
    def _leverage_within_cap(self) -> PerpSettings:
        if self.leverage > self.max_leverage:
            raise _bad(
                f"must be at most max_leverage ({self.max_leverage:g}), got {self.leverage:g}",
                subloc=("leverage",),
            )
        return self


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
    perp: PerpSettings = Field(default_factory=PerpSettings)
    """Perpetual futures terms and limits (contract markets only)."""

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


GuardLevel = Literal["warn", "pause", "kill"]
"""What a guard does when it fires: ``warn`` (record only), ``pause`` (pull the market's
quotes; resumes on its own, see :class:`GuardSettings`) or ``kill`` (trip the kill
switch: everything stops until an operator resumes)."""


class GuardSettings(BaseModel):
    """Guards watched on every book update, order notice and timer tick (``[risk.guards]``).

    Data guards (``stale_book``, ``invalid_book``, ``feed_disconnected``) at level
    ``pause`` resume the market by themselves once its data has been healthy for
    ``data_resume_s``. Other guards at level ``pause`` resume once their condition has
    cleared and ``pause_cooldown_s`` has passed since they last fired, or when an
    operator unpauses the market (or only then, with ``pause_auto_resume`` false). See
    :mod:`bot.risk.engine`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stale_book: GuardLevel = "pause"
    stale_book_s: PositiveFloat = 5.0
    """A market whose book has not been updated for this long is stale."""
    invalid_book: GuardLevel = "pause"
    """The book is invalid (a sequence gap, invalidated, crossed) until the next snapshot."""
    feed_disconnected: GuardLevel = "pause"
    data_resume_s: NonNegativeFloat = 1.0
    """Data must be healthy this long before a data guard lets the market quote again
    (stops a flapping feed from pulling and re-placing quotes on every flap)."""
    reject_burst: GuardLevel = "pause"
    reject_burst_count: PositiveInt = 5
    """This many failed order actions (rejects, errors; not rate limits, nor post-only
    quotes refused as would-take) on one market..."""
    reject_burst_window_s: PositiveFloat = 10.0
    """...within this many seconds fire the guard."""
    rate_limited: GuardLevel = "pause"
    rate_limited_count: PositiveInt = 3
    """This many order actions that failed for good with a rate limit, account-wide..."""
    rate_limited_window_s: PositiveFloat = 60.0
    """...within this many seconds fire the guard (a pause then applies to every market)."""
    balance_mismatch: GuardLevel = "kill"
    balance_tolerance_fraction: NonNegativeFloat = 0.01
    """A venue balance further than this fraction from the bot's accounting is a mismatch."""
    balance_check_s: PositiveFloat = 30.0
    """How often (wall time) a daemon on a live feed compares the venue's balances with
    its accounting."""
    balance_confirm_s: NonNegativeFloat = 2.0
    """A disagreement is looked at again after this long before the guard fires: a fill
    the venue has booked may still be on its way to the bot (0: fire at once)."""
    daily_loss: GuardLevel = "kill"
    """Fires when the day's (UTC, injected clock) loss reaches ``risk.max_daily_loss_quote``."""
    drawdown: GuardLevel = "kill"
    """Fires when equity falls ``risk.max_drawdown_quote`` below its peak."""
    fat_finger: GuardLevel = "pause"
    """An order beyond the fat-finger limits is always refused; this is what else happens."""
    pause_cooldown_s: NonNegativeFloat = 60.0
    """How long a non-data guard keeps its market paused after it fired (and at least
    until its condition has cleared)."""
    pause_auto_resume: bool = True
    """False: a non-data guard's pause lasts until an operator unpauses the market."""


class RiskSettings(BaseModel):
    """Hard limits every order must pass. Defaults are deliberately small."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_quote: PositiveFloat = 1_000.0
    max_order_base: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Asset code -> largest amount of one order in that base asset (e.g. {"BTC": 0.2})."""
    max_notional_per_market_quote: PositiveFloat = 5_000.0
    max_total_notional_quote: PositiveFloat = 10_000.0
    max_position_base: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Asset code -> largest absolute position in that asset (e.g. {"BTC": 0.5})."""
    max_orders_per_second: PositiveFloat = 5.0
    max_order_burst: PositiveInt = 10
    """Orders that may be sent at once before ``max_orders_per_second`` applies (a token
    bucket of this size, refilled at that rate): room for a fresh two-sided ladder."""
    max_open_orders_per_market: PositiveInt = 10
    max_daily_loss_quote: PositiveFloat = 250.0
    max_drawdown_quote: PositiveFloat = 500.0
    price_band_bps: PositiveFloat = 200.0
    """Orders priced further than this from mid are refused."""
    fat_finger_bps: PositiveFloat | None = None
    """An order priced this far from mid must be a bug: refused, and the ``fat_finger``
    guard fires. None = 5 x ``price_band_bps``."""
    fat_finger_order_quote: PositiveFloat | None = None
    """Likewise for one order's notional. None = 5 x ``max_order_quote``."""
    taker_tag_prefixes: list[str] = Field(default_factory=lambda: ["taker:", "replenish:"])
    """A quote with ``post_only`` false whose tag starts with one of these is a deliberate
    taker order and may cross the book (still within the price band); any other quote
    that would cross is refused."""
    guards: GuardSettings = Field(default_factory=GuardSettings)

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

    @field_validator("fat_finger_bps")
    @classmethod
    def _fat_finger_beyond_band(cls, value: float | None, info: ValidationInfo) -> float | None:
        band = info.data.get("price_band_bps")
        if value is not None and band is not None and value < band:
            raise _bad(f"must be at least price_band_bps ({band:g}), got {value:g}")
        return value

    @field_validator("fat_finger_order_quote")
    @classmethod
    def _fat_finger_beyond_order(cls, value: float | None, info: ValidationInfo) -> float | None:
        order = info.data.get("max_order_quote")
        if value is not None and order is not None and value < order:
            raise _bad(f"must be at least max_order_quote ({order:g}), got {value:g}")
        return value

    @property
    def fat_finger_bps_limit(self) -> float:
        return self.fat_finger_bps if self.fat_finger_bps is not None else 5 * self.price_band_bps

    @property
    def fat_finger_quote_limit(self) -> float:
        if self.fat_finger_order_quote is not None:
            return self.fat_finger_order_quote
        return 5 * self.max_order_quote


class BackstopParams(BaseModel):
    """The ``backstop`` strategy (see :mod:`strategies.backstop` for the formulas).

    While the detector is engaged or recovering it keeps ``levels`` post-only quotes a
    side around the top-of-book microprice. The innermost rung sits
    ``base_spread_bps + vol_mult x sigma_bps + stress_spread_bps x stress`` from it
    (capped at ``max_half_spread_bps``), the next ones ``rung_spacing_bps`` further out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: PositiveInt = 3
    """Quotes per side."""
    base_spread_bps: PositiveFloat = 1.0
    """Distance of the innermost rung from the fair price on a calm, healthy book."""
    vol_mult: NonNegativeFloat = 1.0
    """Added distance per bp/sqrt(s) of the detector's volatility estimate."""
    stress_spread_bps: NonNegativeFloat = 4.0
    """Added distance at full stress (1 - health = 1: the band is empty)."""
    rung_spacing_bps: NonNegativeFloat = 1.0
    """Distance between successive rungs of one side."""
    max_half_spread_bps: PositiveFloat = 50.0
    """The innermost rung is never further from the fair price than this."""
    fallback_sigma_bps: NonNegativeFloat = 2.0
    """Volatility assumed while the detector's estimate is still warming up."""
    target_fraction: float = Field(default=0.6, gt=0.0, le=1.0)
    """Size each side to bring first-band depth back to this fraction of its baseline
    (the default matches the detector's default ``recovery_fraction``)."""
    min_side_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    """A side with no depth deficit still quotes this fraction of half the budget room,
    so the ladder stays two-sided."""
    max_position_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    """Net position (vs the reserve's start) is held within this fraction of the
    per-market notional cap: sizes skew linearly with the position and the side that
    would grow it stops at the limit, leaving cap room to unwind."""
    replenish: Literal["off", "passive", "cost_limited"] = "passive"
    """After an episode, rebalance the reserve back to its starting base amount:
    ``off``; ``passive`` = one post-only quote at the touch; ``cost_limited`` = a limit
    order that may cross the spread, priced at most ``replenish_max_cost_bps`` from mid."""
    replenish_max_cost_bps: NonNegativeFloat = 5.0
    requote_bps: NonNegativeFloat = 2.0
    """Keep the resting ladder while every freshly computed price is within this of it,
    every size within ``requote_size_fraction`` of it, none crosses and all still fit
    the limits: no cancel/replace storm on every tick. 0 = requote on every change."""
    requote_size_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Also: a fresh ladder uses only ``1 - requote_size_fraction / 2`` of a binding
    limit (room, balances, position), so small moves of that limit keep it valid."""
    requote_within_rate: bool = True
    """While the order rate (``risk.max_orders_per_second``) has no room for a whole
    fresh ladder, keep each side whose resting rungs are no more aggressive than the
    fresh ones (nor larger, beyond the tolerances), instead of cancelling every rung
    for replacements the rate limit would hold back. A side the market moved toward is
    still replaced at once. Needs ``requote_bps`` > 0."""


class MarketMakerParams(BaseModel):
    """The ``market-maker`` strategy: always-on two-sided quotes, for comparison."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: PositiveInt = 2
    """Quotes per side."""
    half_spread_bps: PositiveFloat = 5.0
    """Distance of the innermost rung from the fair (microprice)."""
    rung_spacing_bps: NonNegativeFloat = 2.0
    size_quote: PositiveFloat = 200.0
    """Notional of each rung before inventory skew."""
    max_position_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    """As for the backstop: the net position is held within this fraction of the
    per-market notional cap."""
    requote_bps: NonNegativeFloat = 2.0
    """As for the backstop: how far prices may drift before the quotes are replaced."""
    requote_size_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    requote_within_rate: bool = True
    """As for the backstop: keep quotes out of tolerance, but no more aggressive than
    fresh ones, while the order rate has no room to replace them."""


class StrategySettings(BaseModel):
    """Which strategy quotes, and each one's parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["backstop", "market-maker"] = "backstop"
    backstop: BackstopParams = Field(default_factory=BackstopParams)
    market_maker: MarketMakerParams = Field(default_factory=MarketMakerParams)
    rehearse_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    """While a market is arming, rehearse the reading that would engage it this often:
    the strategy's engaged decision, the budget, the risk checks and the order manager's
    rounding, with nothing sent or kept, so the trigger finds that code and its data in
    the processor's caches (between two live messages ~100 ms apart they are evicted;
    docs/benchmarks.md, Reaction). Runs with a live feed or a paced replay (speed > 0),
    never in an as-fast-as-possible one. 0 = off."""


class KillSwitchSettings(BaseModel):
    """The kill switch (:mod:`bot.killswitch`): what trips it and how it confirms it is flat."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kill_file: Path | None = None
    """When this file appears the kill switch trips (once per appearance); an operator
    resume is refused while it exists. None = state_dir/KILL."""
    poll_s: PositiveFloat = 1.0
    """How often the kill file (and the control heartbeat) is checked."""
    cancel_timeout_s: PositiveFloat = 10.0
    """Longest wait for the order manager's cancels in one confirmation attempt, and the
    pause before a new round of attempts when a round could not confirm flat."""
    confirm_attempts: PositiveInt = 5
    """Rounds of cancel-then-list-open-orders before giving up (loudly) for now."""
    confirm_backoff_s: PositiveFloat = 0.25
    """Wait before the second round; doubles each round, at most ``cancel_timeout_s``."""
    control_loss_s: PositiveFloat | None = None
    """Trip when the control channel has not been heard from for this long (a dead
    man's switch: something must call the heartbeat). None = off."""


class ControlSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    socket: Path | None = None
    """Unix socket for the control commands (mode 0600); None = state_dir/control.sock."""
    tcp_enabled: bool = False
    """Also serve the control API on TCP, bound to 127.0.0.1 only, behind a bearer token
    (for a local Prometheus or supervisor that cannot use a Unix socket)."""
    tcp_port: int = Field(default=8787, ge=0, le=65535)
    """TCP port on 127.0.0.1; 0 = any free port (tests)."""
    token: SecretStr | None = None
    """Bearer token for TCP: from ``BACKSTOP_CONTROL__TOKEN`` or a secrets-dir file
    (``control__token``), never from the config file or the command line."""
    token_file: Path | None = None
    """Or a file holding the token (e.g. a systemd credential); read when the server starts.
    This single token (``token`` or ``token_file``) has the admin role."""
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    """Role tokens, ``{"ROLE.NAME": token}`` with ROLE ``viewer``, ``operator`` or ``admin``
    (``admin.alice``): from ``BACKSTOP_CONTROL__TOKENS`` (JSON) or a secrets-dir file,
    never from the config file. See docs/governance.md."""
    tokens_dir: Path | None = None
    """Or a directory of token files named ``ROLE.NAME`` (one token each); read when the
    server starts."""
    socket_role: Literal["viewer", "operator", "admin"] = "admin"
    """The role of a request on the Unix socket (mode 0600) that shows no token. A request
    that shows one gets that token's role."""
    dashboard: bool = False
    """Serve the operator dashboard (``/dashboard``) on the TCP listener: needs
    ``tcp_enabled``; the page asks for a role token (docs/runbook.md)."""
    dashboard_refresh_s: float = Field(default=0.5, gt=0.0, le=60.0)
    """How often the dashboard's live stream sends an update (a kill or pause is sent at
    once)."""

    @field_validator("tokens")
    @classmethod
    def _role_tokens(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, token in value.items():
            if not _TOKEN_NAME_RE.match(name):
                raise _bad(
                    f"token name {name!r} must be ROLE.NAME with ROLE viewer, operator or "
                    "admin (e.g. admin.alice)"
                )
            if len(token.get_secret_value().strip()) < MIN_TOKEN_CHARS:
                raise _bad(f"token {name}: too short: use at least {MIN_TOKEN_CHARS} characters")
        return value

    @field_validator("token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never includes the value: error reports must not leak it.
        if value is not None and len(value.get_secret_value().strip()) < MIN_TOKEN_CHARS:
            raise _bad(
                f"too short: use at least {MIN_TOKEN_CHARS} random characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @model_validator(mode="after")
    def _tcp_needs_a_token(self) -> ControlSettings:
        if (
            self.tcp_enabled
            and self.token is None
            and self.token_file is None
            and not self.tokens
            and self.tokens_dir is None
        ):
            raise _bad(
                f"the TCP control API needs a bearer token: set {ENV_PREFIX}CONTROL__TOKEN "
                "(or a control__token file in the secrets directory) or control.token_file",
                subloc=("tcp_enabled",),
            )
        if self.token is not None and self.token_file is not None:
            raise _bad(
                "both a token and control.token_file are set; keep one so it is clear "
                "which token the server accepts",
                subloc=("token_file",),
            )
        if self.dashboard and not self.tcp_enabled:
            # A browser cannot reach the Unix socket: the page lives on the TCP listener.
            raise _bad(
                "the dashboard is served on the TCP listener (127.0.0.1): set "
                "control.tcp_enabled = true (and a token) as well",
                subloc=("dashboard",),
            )
        return self


class GovernanceSettings(BaseModel):
    """The intervention policy and the controls around it (docs/governance.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_file: Path | None = None
    """The policy file (TOML): activation criteria, scope, quoting limits, replenishment.
    It owns those settings (a config value that contradicts it is refused at load), is
    journaled with its hash at start and at every change (``backstop policy set``).
    None: the bot runs under the implicit policy its settings amount to."""
    two_person_resume: bool = False
    """Resuming after a kill tripped by a loss guard (daily_loss, drawdown) needs two
    different admins' approvals."""
    approval_ttl_s: PositiveFloat = 3600.0
    """A first approval not completed within this long lapses."""
    evidence: bool = True
    """Journal the market data behind each decision of an episode (``audit replay``)."""
    evidence_top_levels: int = Field(default=5, ge=1, le=50)
    """Book levels per side kept with each journaled decision."""
    checkpoint_s: PositiveFloat = 1.0
    """While calm, the detector's state is kept (in memory) this often: an episode's
    evidence starts from the last such checkpoint before it."""


class FleetSettings(BaseModel):
    """Fleet coordination through Redis (:mod:`bot.fleet`): a fleet kill stream every
    daemon follows, a heartbeat/status key per daemon, and an opt-in dead-man."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    """``redis://HOST:PORT/DB``, ``rediss://`` (TLS) or ``unix:///path/redis.sock``. No
    password in it: the URL is printed by ``backstop config`` and logged."""
    password: SecretStr | None = None
    """Redis password (AUTH): from ``BACKSTOP_FLEET__PASSWORD`` or a secrets-dir file."""
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$")
    """This daemon's name in the fleet; None = ``<hostname>:<absolute state_dir>``
    (unique, since one daemon owns a state dir)."""
    key_prefix: str = Field(default="backstop:fleet", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    """Every key and channel of the fleet starts with this (several fleets, one Redis)."""
    heartbeat_s: float = Field(default=1.0, gt=0.0, le=60.0)
    """How often the daemon refreshes its status key (which expires after 10 heartbeats)."""
    dead_man_s: PositiveFloat | None = None
    """Trip the kill switch when Redis has not answered for this long. None = off."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        from redis.asyncio.connection import parse_url

        hint = "use redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///path/redis.sock"
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a port that is not a number
            parse_url(value)
        except ValueError as e:
            raise _bad(f"not a Redis URL ({e}); {hint}") from None
        if parts.scheme in ("redis", "rediss") and not parts.hostname:
            raise _bad(f"no host in {value!r}; {hint}")
        if parts.scheme == "unix" and not parts.path:
            raise _bad(f"no socket path in {value!r}; {hint}")
        if parts.password:
            # The message must not repeat the URL: it holds the password.
            raise _bad(
                f"the URL holds a password: remove it and set {ENV_PREFIX}FLEET__PASSWORD "
                "(or a fleet__password file in the secrets directory)"
            )
        return value

    @model_validator(mode="after")
    def _dead_man_beyond_heartbeats(self) -> FleetSettings:
        if self.dead_man_s is not None and self.dead_man_s < 2 * self.heartbeat_s:
            raise _bad(
                f"must be at least two heartbeats ({2 * self.heartbeat_s:g} s with "
                f"heartbeat_s = {self.heartbeat_s:g}), or one slow round trip trips the daemon "
                f"(got {self.dead_man_s:g})",
                subloc=("dead_man_s",),
            )
        return self


class DeadManSettings(BaseModel):
    """The exchange-side dead-man switch (:mod:`bot.deadman`): ccxt's
    ``cancel_all_orders_after``, re-armed while the bot is healthy, so that the exchange
    itself cancels the account's orders if the process or its host dies. Testnet and
    live only, on venues whose ccxt class has it (``has['cancelAllOrdersAfter']``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """On wherever the venue supports it; false = rely on the bot's own kill switch only."""
    timeout_s: float = Field(default=60.0, ge=10.0, le=120.0)
    """The exchange cancels every order of the account this long after the last re-arm
    (10-120 s: the range OKX, Kraken and Bybit all accept)."""
    interval_s: PositiveFloat = 15.0
    """Re-arm this often; after a failed re-arm, retry every quarter of it."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Extra ccxt params for the call, e.g. ``{ type = "spot" }`` on Bybit (whose
    default product is derivatives)."""

    @model_validator(mode="after")
    def _rearm_well_before_timeout(self) -> DeadManSettings:
        if self.interval_s * 2 > self.timeout_s:
            raise _bad(
                f"must be at most half of timeout_s ({self.timeout_s:g}) so one failed "
                f"re-arm can be retried before the exchange cancels (got {self.interval_s:g})",
                subloc=("interval_s",),
            )
        return self


class JournalSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    """SQLite journal; None = state_dir/journal.sqlite."""
    synchronous: Literal["NORMAL", "FULL"] = "FULL"


class OrderManagerConfig(BaseModel):
    """Parameters
    ----------
    client_id_prefix:
        Marks this bot's orders (``{prefix}-...``). Orders without it are never touched.
    rate_limit / rate_period_s:
        At most ``rate_limit`` venue calls per ``rate_period_s`` from the manager
        (creates, lookups, reconcile listings), via asyncio-throttle.
    cancel_rate_limit:
        Cancels have their own limiter (per ``rate_period_s``), so withdrawing quotes,
        a kill above all, never waits behind a busy minute of creates. Venues count
        cancels far more leniently than new orders (Binance: request weight 1, no
        order-count limit), hence the higher default.
    retries:
        How many times a *temporary* failure (network, timeout, exchange hiccup) of a
        cancel or lookup is retried. A create is never re-sent after a temporary
        failure: its outcome is unknown and is looked up instead.
    rate_limited_retries:
        How many times a call refused with a rate limit (the venue did not act on it,
        so this is safe for creates too) is re-sent after backing off.
    unknown_lookups:
        How many lookups by client id must say "not found" before an order whose
        create timed out is declared never placed. The first comes after one backoff
        delay, giving a slow request time to reach the venue.
    backoff_initial_s / backoff_max_s:
        Jittered exponential backoff between retries (longer after a rate limit).
    unknown_own_orders:
        What reconciliation does with open orders that carry our prefix but that
        neither the manager nor the journal knows: ``cancel`` (default: we cannot
        know what they were for) or ``adopt`` them as live quotes.
    finished_retention_s:
        How long finished orders stay tracked, to recognise late updates for them.
    max_unmatched_trades:
        Fills whose order id is not yet known (the websocket beat the REST reply) are
        held this many at most, until the order's id is learnt.
    would_take_hold_s:
        After the venue refuses a post-only quote as would-take, quotes at that price
        or through it on that side are held back until our book shows what the venue
        saw, or for this long at most (:mod:`bot.orders.fence`); 0 turns it off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id_prefix: str = Field(default="bs1", pattern=r"^[A-Za-z0-9]{1,12}$")
    rate_limit: int = Field(default=8, gt=0)
    cancel_rate_limit: int = Field(default=40, gt=0)
    rate_period_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=0)
    rate_limited_retries: int = Field(default=3, ge=0)
    unknown_lookups: int = Field(default=3, ge=1)
    backoff_initial_s: float = Field(default=0.25, gt=0)
    backoff_max_s: float = Field(default=8.0, gt=0)
    unknown_own_orders: Literal["adopt", "cancel"] = "cancel"
    finished_retention_s: float = Field(default=60.0, ge=0)
    max_unmatched_trades: int = Field(default=1000, ge=0)
    would_take_hold_s: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> OrderManagerConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self


class PaperSettings(BaseModel):
    """The paper venue (simulated fills on the real book); see docs/paper-fills.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: NonNegativeFloat = 50.0
    """Data time between sending a request and the simulated exchange acting on it."""


class LoggingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class WarningSettings(BaseModel):
    """The early warning (:mod:`bot.warning`, docs/early-warning.md): a model reads the
    book on every update and gives the probability that a depth fracture starts within
    a few seconds. Shown in status, metrics and the journal; it acts only with
    ``pre_arm``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """Compute the warning (about 5 us per book update)."""
    model: Path | None = None
    """Model file from ``backstop model train``; None = the one shipped with the package."""
    pre_arm: bool = False
    """While the warning is up, the detector engages after ``pre_arm_engage_dwell_s``
    instead of the market's ``engage_dwell_s``. It never places an order by itself: a
    fracture rule must still hold, and every quote passes the same budget and risk."""
    pre_arm_engage_dwell_s: NonNegativeFloat = 0.25
    """The engage dwell while pre-armed (never longer than the market's own)."""


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
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    killswitch: KillSwitchSettings = Field(default_factory=KillSwitchSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    paper: PaperSettings = Field(default_factory=PaperSettings)
    orders: OrderManagerConfig = Field(default_factory=OrderManagerConfig)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    deadman: DeadManSettings = Field(default_factory=DeadManSettings)
    governance: GovernanceSettings = Field(default_factory=GovernanceSettings)
    warning: WarningSettings = Field(default_factory=WarningSettings)
    options: OptionsSettings | None = None
    """Option books on ``options.underlying`` (docs/options.md); None: none."""

    # Field path -> where its value came from, filled by load_settings, so that errors
    # found later (a symbol missing on the venue) can still name the file or variable.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    # The policy file's LoadedPolicy (bot.governance.policy) once load_settings applied it.
    _policy: Any = PrivateAttr(default=None)

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
                env_names = ", ".join(env_name(("exchange", m)) for m in missing)
                raise _bad(
                    f"mode {self.mode!r} needs exchange credentials but {names} "
                    f"{'is' if len(missing) == 1 else 'are'} not set: set the environment "
                    f"variable(s) {env_names}, or put files of those names in the secrets "
                    f"directory ({SECRETS_DIR_ENV}); never in the config file",
                    subloc=("exchange", missing[0]),
                    blame=("mode",),
                )
        if self.exchange.urls_override:
            from bot.exchanges import unknown_url_paths

            unknown, known = unknown_url_paths(
                exchange_id, self.exchange.urls_override, sandbox=self.mode == "testnet"
            )
            if unknown:
                raise _bad(
                    f"no such ccxt URL {unknown[0]!r} for exchange {exchange_id!r} "
                    f"(known: {', '.join(known)})",
                    subloc=("exchange", "urls_override"),
                )
        if self.feed.source == "live":
            import ccxt.pro

            if exchange_id not in ccxt.pro.exchanges:
                raise _bad(
                    f"exchange {exchange_id!r} has no websocket support in ccxt.pro, which "
                    'the live feed needs; use feed.source = "replay" or another exchange',
                    subloc=("exchange", "id"),
                )
        if self.options is not None and self.options.underlying not in self.symbols:
            raise _bad(
                f"{self.options.underlying!r} is not a configured market (configured: "
                f"{', '.join(self.symbols)}); the underlying must be one of [[markets]]",
                subloc=("options", "underlying"),
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


def env_name(loc: tuple[str | int, ...], prefix: str = ENV_PREFIX) -> str:
    return (prefix + ENV_NESTED_DELIMITER.join(str(p) for p in loc)).upper()
