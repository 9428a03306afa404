"""The intervention policy: when the backstop may engage, where, how far and how it quotes.

Whoever funds the reserve agrees to one policy file (TOML, see
``config/policies/example.toml``), kept apart from the operational settings::

    name = "..."                     free text, shown in reports
    [activation]                     the fracture detector's thresholds (every market)
    [markets."ETH/USDT".activation]  per-market overrides of [activation]
    [scope]                          markets, max reserve per episode, max episode length
    [quoting]                        the backstop's quoting limits (ladder, spreads, sizes)
    [replenishment]                  how the reserve is rebalanced after an episode

Every key has the same default as the setting it governs, so a policy states the whole
rule book even where it is silent. Its **version** is :attr:`LoadedPolicy.hash`: the
sha256 of the canonical JSON of the normalised policy (every key, defaults filled in),
so comments and layout do not change it and any change of substance does.

**Which settings it owns** (:data:`ACTIVATION_FIELDS`, :data:`QUOTING_FIELDS`,
:data:`REPLENISHMENT_FIELDS`): the detector fields of ``[[markets]]`` and every field of
``[strategy.backstop]``. ``[scope]`` has no settings counterpart: it is enforced by
:class:`bot.governance.gate.GovernedStrategy`. With a policy file, an owned field the
operational config leaves unset takes the policy's value; one it sets to the *same*
value is accepted; one it sets to a *different* value is refused at load (the operator
cannot loosen, or quietly change, what was agreed). Without a policy file the bot runs
under the *implicit* policy read from its settings, journaled and hashed the same way.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
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
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.journal.chain import canonical_json
from bot.settings.models import BackstopParams, MarketSettings, Settings

MAX_POLICY_BYTES = 64 * 1024

_M = MarketSettings.model_fields
_B = BackstopParams.model_fields

ACTIVATION_FIELDS: tuple[str, ...] = (
    "baseline_fraction",
    "baseline_window_s",
    "depth_floor_quote",
    "max_depth_drop_per_s",
    "max_spread_bps",
    "engage_dwell_s",
    "recovery_fraction",
    "disengage_dwell_s",
)
"""``[activation]`` keys: the same-named fields of each ``[[markets]]`` table."""

QUOTING_FIELDS: tuple[str, ...] = (
    "levels",
    "base_spread_bps",
    "vol_mult",
    "stress_spread_bps",
    "rung_spacing_bps",
    "max_half_spread_bps",
    "fallback_sigma_bps",
    "target_fraction",
    "min_side_fraction",
    "max_position_fraction",
    "requote_bps",
    "requote_size_fraction",
    "requote_within_rate",
)
"""``[quoting]`` keys: the same-named fields of ``[strategy.backstop]``."""

REPLENISHMENT_FIELDS: Mapping[str, str] = {
    "mode": "replenish",
    "max_cost_bps": "replenish_max_cost_bps",
}
"""``[replenishment]`` key -> its ``[strategy.backstop]`` field."""


class ActivationPolicy(BaseModel):
    """When the backstop engages and stands down (see :mod:`bot.detector`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_fraction: float = _M["baseline_fraction"].default
    baseline_window_s: float = _M["baseline_window_s"].default
    depth_floor_quote: float = _M["depth_floor_quote"].default
    max_depth_drop_per_s: float = _M["max_depth_drop_per_s"].default
    max_spread_bps: float = _M["max_spread_bps"].default
    engage_dwell_s: float = _M["engage_dwell_s"].default
    recovery_fraction: float = _M["recovery_fraction"].default
    disengage_dwell_s: float = _M["disengage_dwell_s"].default


class ActivationOverride(BaseModel):
    """A market's exceptions to ``[activation]`` (unset keys inherit it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_fraction: float | None = None
    baseline_window_s: float | None = None
    depth_floor_quote: float | None = None
    max_depth_drop_per_s: float | None = None
    max_spread_bps: float | None = None
    engage_dwell_s: float | None = None
    recovery_fraction: float | None = None
    disengage_dwell_s: float | None = None


class MarketPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    activation: ActivationOverride = Field(default_factory=ActivationOverride)


class ScopePolicy(BaseModel):
    """Where and how far the backstop may intervene."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    markets: list[str] = Field(min_length=1)
    """The markets it may quote in (ccxt unified symbols); any other is watched only."""
    max_reserve_quote_per_episode: PositiveFloat | None = None
    """Collateral one episode may put at risk in its market: |position| x mid plus the
    notional of its quotes. None: only the risk settings' caps apply."""
    max_episode_s: PositiveFloat | None = None
    """An episode engaged longer than this stops quoting until the detector stands down.
    None: no limit."""

    @field_validator("markets")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            try:
                MarketSettings(symbol=symbol)  # the same unified-symbol check as the settings
            except ValidationError as e:
                raise ValueError(_first_error(e)) from None
        if len(set(value)) != len(value):
            raise ValueError("a market is listed twice")
        return value


class QuotingPolicy(BaseModel):
    """The backstop's quoting limits (see :mod:`strategies.backstop`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: PositiveInt = _B["levels"].default
    base_spread_bps: float = _B["base_spread_bps"].default
    vol_mult: float = _B["vol_mult"].default
    stress_spread_bps: float = _B["stress_spread_bps"].default
    rung_spacing_bps: float = _B["rung_spacing_bps"].default
    max_half_spread_bps: float = _B["max_half_spread_bps"].default
    fallback_sigma_bps: float = _B["fallback_sigma_bps"].default
    target_fraction: float = _B["target_fraction"].default
    min_side_fraction: float = _B["min_side_fraction"].default
    max_position_fraction: float = _B["max_position_fraction"].default
    requote_bps: float = _B["requote_bps"].default
    requote_size_fraction: float = _B["requote_size_fraction"].default
    requote_within_rate: bool = _B["requote_within_rate"].default


class ReplenishmentPolicy(BaseModel):
    """How the reserve is rebalanced after an episode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["off", "passive", "cost_limited"] = _B["replenish"].default
    max_cost_bps: NonNegativeFloat = _B["replenish_max_cost_bps"].default


class Policy(BaseModel):
    """One version of the intervention policy. Build it with :func:`parse_policy`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    activation: ActivationPolicy = Field(default_factory=ActivationPolicy)
    markets: dict[str, MarketPolicy] = Field(default_factory=dict)
    scope: ScopePolicy
    quoting: QuotingPolicy = Field(default_factory=QuotingPolicy)
    replenishment: ReplenishmentPolicy = Field(default_factory=ReplenishmentPolicy)

    @model_validator(mode="after")
    def _valid_as_settings(self) -> Policy:
        # The settings models hold the ranges and cross-field rules (recovery above the
        # fracture level...): checking the effective values against them keeps one
        # source of truth.
        for symbol in dict.fromkeys([*self.scope.markets, *self.markets]):
            try:
                MarketSettings(symbol=symbol, **self.activation_for(symbol))
            except ValidationError as e:
                where = "activation" if symbol not in self.markets else f"markets.{symbol!r}"
                raise ValueError(f"{where}: {_first_error(e)}") from None
        try:
            self.backstop_params()
        except ValidationError as e:
            raise ValueError(f"quoting/replenishment: {_first_error(e)}") from None
        return self

    def activation_for(self, symbol: str) -> dict[str, Any]:
        """The detector fields for ``symbol``: ``[activation]`` with its overrides."""
        values = self.activation.model_dump()
        market = self.markets.get(symbol)
        if market is not None:
            values.update(
                {k: v for k, v in market.activation.model_dump().items() if v is not None}
            )
        return values

    def backstop_fields(self) -> dict[str, Any]:
        """Every ``[strategy.backstop]`` field, as this policy sets it."""
        values = self.quoting.model_dump()
        replenishment = self.replenishment.model_dump()
        values.update({REPLENISHMENT_FIELDS[k]: v for k, v in replenishment.items()})
        return values

    def backstop_params(self) -> BackstopParams:
        return BackstopParams(**self.backstop_fields())

    def in_scope(self, symbol: str) -> bool:
        return symbol in self.scope.markets

    def canonical(self) -> dict[str, Any]:
        """The normalised policy as JSON values (what is hashed and journaled)."""
        dump: dict[str, Any] = self.model_dump(mode="json")
        return dump

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.canonical()).encode("utf-8")).hexdigest()


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy with its version and where it came from."""

    policy: Policy
    hash: str
    source: str
    """The file it was read from, ``"settings"`` (implicit) or ``"control API"``."""
    text: str | None = None
    """The file's text as written (comments included), when there is one."""

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def implicit(self) -> bool:
        return self.source == IMPLICIT_SOURCE

    def record(self) -> dict[str, Any]:
        """The ``policy`` journal payload's description of this version."""
        return {
            "hash": self.hash,
            "name": self.policy.name,
            "source": self.source,
            "policy": self.policy.canonical(),
            "text": self.text,
        }


IMPLICIT_SOURCE = "settings"


def parse_policy(text: str, *, origin: str) -> Policy:
    """Parse and validate policy TOML; a :class:`ConfigError` names ``origin`` and the key."""
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise ConfigError(f"{origin}: policy is over {MAX_POLICY_BYTES // 1024} KB")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: policy TOML syntax error: {e}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append(f"{loc}: {msg}" if loc else msg)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{origin}: policy: {problems[0]}{more}") from None


def loaded(policy: Policy, *, source: str, text: str | None = None) -> LoadedPolicy:
    return LoadedPolicy(policy, policy.digest(), source, text)


def load_policy_text(text: str, *, source: str) -> LoadedPolicy:
    return loaded(parse_policy(text, origin=source), source=source, text=text)


def load_policy_file(path: Path) -> LoadedPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"governance.policy_file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"governance.policy_file {path}: cannot read it: {e}") from None
    return load_policy_text(text, source=str(path))


def implicit_policy(settings: Settings) -> LoadedPolicy:
    """The policy the settings amount to, for a bot started without a policy file."""
    markets = settings.markets
    first = markets[0]
    activation = {f: getattr(first, f) for f in ACTIVATION_FIELDS}
    overrides: dict[str, Any] = {}
    for m in markets[1:]:
        diff = {f: getattr(m, f) for f in ACTIVATION_FIELDS if getattr(m, f) != activation[f]}
        if diff:
            overrides[m.symbol] = {"activation": diff}
    bp = settings.strategy.backstop
    policy = Policy.model_validate(
        {
            "name": "implicit: from the operational settings (no policy file)",
            "activation": activation,
            "markets": overrides,
            "scope": {"markets": [m.symbol for m in markets]},
            "quoting": {f: getattr(bp, f) for f in QUOTING_FIELDS},
            "replenishment": {k: getattr(bp, v) for k, v in REPLENISHMENT_FIELDS.items()},
        }
    )
    return loaded(policy, source=IMPLICIT_SOURCE)


@dataclass(frozen=True, slots=True)
class Conflict:
    """An owned field the operational settings set to something else than the policy."""

    loc: tuple[str | int, ...]
    have: Any
    want: Any

    @property
    def path(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out


def conflicts(settings: Settings, policy: Policy) -> list[Conflict]:
    """Owned fields the settings set explicitly to a value the policy does not have."""
    found: list[Conflict] = []
    for i, m in enumerate(settings.markets):
        want = policy.activation_for(m.symbol)
        for f in ACTIVATION_FIELDS:
            if f in m.model_fields_set and getattr(m, f) != want[f]:
                found.append(Conflict(("markets", i, f), getattr(m, f), want[f]))
    bp = settings.strategy.backstop
    for f, v in policy.backstop_fields().items():
        if f in bp.model_fields_set and getattr(bp, f) != v:
            found.append(Conflict(("strategy", "backstop", f), getattr(bp, f), v))
    return found


def apply_policy(settings: Settings, policy: LoadedPolicy) -> Settings:
    """``settings`` with every owned field set from ``policy`` (check :func:`conflicts` first)."""
    p = policy.policy
    if settings.strategy.name != "backstop":
        raise ConfigError(
            f"the policy {policy.source} governs the backstop strategy; strategy "
            f"{settings.strategy.name!r} cannot run under it (it is for rehearsals: run it "
            "without governance.policy_file)"
        )
    markets = [
        MarketSettings.model_validate({**m.model_dump(), **p.activation_for(m.symbol)})
        for m in settings.markets
    ]
    backstop = BackstopParams.model_validate(
        {**settings.strategy.backstop.model_dump(), **p.backstop_fields()}
    )
    strategy = settings.strategy.model_copy(update={"backstop": backstop})
    out = settings.model_copy(update={"markets": markets, "strategy": strategy})
    out._policy = policy
    return out


def policy_of(settings: Settings) -> LoadedPolicy:
    """The policy ``settings`` run under: the loaded file's, else the implicit one."""
    attached = getattr(settings, "_policy", None)
    if isinstance(attached, LoadedPolicy):
        return attached
    return implicit_policy(settings)


def market_settings(market: MarketSettings, policy: Policy) -> MarketSettings:
    """``market`` with the policy's activation fields (for a change at run time)."""
    return market.model_copy(update=policy.activation_for(market.symbol))
