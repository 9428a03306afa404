"""``[options]``: the option chain to watch, its fracture detector, greek limits, quoting
and delta hedging. Validated here; cross-checks against ``[[markets]]`` (the underlying
must be a configured market) are done by :class:`bot.settings.Settings`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, model_validator
from pydantic_core import PydanticCustomError


def _bad(message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("backstop", message.replace("{", "{{").replace("}", "}}"), ctx)


class SyntheticChainSettings(BaseModel):
    """``[options.synthetic]``: a deterministic option chain priced off the underlying.

    SYNTHETIC DATA: there is no option recording; every option book is Black-76 on the
    underlying's mid with this smile, plus seeded size noise (docs/options.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    expiries: list[str] = Field(min_length=1, max_length=8)
    """ISO 8601 UTC expiry times (``2024-08-09T08:00:00Z``); one per day at most (the
    Deribit-style symbol carries the date only)."""
    strikes: list[PositiveFloat] = Field(min_length=1, max_length=40)
    atm_vol: PositiveFloat = 0.5
    """Volatility at the money (1.00 = 100 %)."""
    skew: float = -0.1
    """Vol += skew x ln(K / F)."""
    smile: NonNegativeFloat = 1.0
    """Vol += smile x ln(K / F)^2."""
    step_s: PositiveFloat = 1.0
    """Data seconds between two snapshots of the chain."""
    levels: int = Field(default=5, ge=1, le=50)
    half_spread_vol_points: PositiveFloat = 1.0
    """The synthetic touch is this many vol points either side of the surface."""
    level_size: PositiveFloat = 5.0
    """Contracts per level, before noise."""
    size_noise: float = Field(default=0.3, ge=0.0, lt=1.0)
    """Each level's size is ``level_size x (1 + U(-noise, noise))``."""
    trade_probability: float = Field(default=0.2, ge=0.0, le=1.0)
    """Per option and step: chance of one synthetic print at the touch (random side)."""
    trade_size: PositiveFloat = 1.0
    seed: int = Field(default=0, ge=0)
    stress: str | None = None
    """A scaling stress scenario (``backstop run --list-stress``) applied to the option
    books only, e.g. ``"fracture:band_bps=3000,start_s=120"``; ``--stress`` on the command
    line applies to every book, the underlying's included."""

    @model_validator(mode="after")
    def _stress_parses(self) -> SyntheticChainSettings:
        if self.stress is None:
            return self
        from bot.feeds.stress import FeedStall, parse_stress_spec

        try:
            spec = parse_stress_spec(self.stress)
        except Exception as e:  # the parser's UserError names the bad parameter
            raise _bad(str(e), subloc=("stress",)) from None
        if isinstance(spec, FeedStall):
            raise _bad("feed-stall cannot apply to option books alone", subloc=("stress",))
        return self

    @model_validator(mode="after")
    def _expiries_parse(self) -> SyntheticChainSettings:
        days: dict[str, int] = {}
        for i, text in enumerate(self.expiries):
            try:
                expiry_ms(text)
            except ValueError:
                raise _bad(
                    f"{text!r} is not an ISO 8601 UTC time (e.g. 2024-08-09T08:00:00Z)",
                    subloc=("expiries", i),
                ) from None
            day = text[:10]
            if day in days:
                raise _bad(
                    f"two expiries on {day} (expiries[{days[day]}] and expiries[{i}]): "
                    "option symbols carry the date only",
                    subloc=("expiries", i),
                )
            days[day] = i
        return self


def expiry_ms(text: str) -> int:
    """``2024-08-09T08:00:00Z`` -> epoch milliseconds (UTC; a naive time is UTC)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


class OptionDetectorSettings(BaseModel):
    """``[options.detector]``: the fracture detector on each option's vega depth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    depth_floor_vega: NonNegativeFloat = 0.0
    """Fracture: a side's vega depth (USD per vol point) under this. 0 disables."""
    baseline_fraction: float | None = Field(default=0.3, gt=0.0, le=1.0)
    baseline_window_s: PositiveFloat = 30.0
    recovery_fraction: float = Field(default=0.6, gt=0.0, le=1.0)
    engage_dwell_s: NonNegativeFloat = 1.0
    disengage_dwell_s: NonNegativeFloat = 10.0

    @model_validator(mode="after")
    def _recovery_above_fracture(self) -> OptionDetectorSettings:
        if self.baseline_fraction is not None and self.recovery_fraction < self.baseline_fraction:
            raise _bad(
                f"must be >= baseline_fraction ({self.baseline_fraction:g}): recovery is "
                "the higher level",
                subloc=("recovery_fraction",),
            )
        return self


class GreekLimitSettings(BaseModel):
    """``[options.limits]``: delta in BTC, vega in USD per vol point, gamma in BTC of delta
    per 1 % move of the underlying; and the premium sanity band."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_delta_per_order: PositiveFloat = 0.5
    max_vega_per_order: PositiveFloat = 200.0
    max_delta_total: PositiveFloat = 2.0
    max_vega_total: PositiveFloat = 600.0
    max_gamma_per_order: PositiveFloat | None = None
    """``|gamma x F / 100| x contracts``: the delta one order adds per 1 % move (None: no
    cap)."""
    max_gamma_total: PositiveFloat | None = None
    """The worst case of the options' gamma (position plus resting orders), same unit:
    what a 1 % move does to the delta before the hedge trades."""
    premium_band_vol_points: PositiveFloat = 10.0
    """An option order's price must lie within the Black-76 prices at the book's mid
    implied volatility -/+ this many vol points (PRICE_OUTSIDE_PREMIUM_BAND)."""
    premium_band_min_ticks: int = Field(default=5, ge=0, le=1000)
    """...or within this many ticks of the model price at that volatility: near expiry
    one tick is many vol points, and a flattening order crosses the touch."""

    @model_validator(mode="after")
    def _order_within_total(self) -> GreekLimitSettings:
        for greek in ("delta", "vega", "gamma"):
            per, total = (
                getattr(self, f"max_{greek}_per_order"),
                getattr(self, f"max_{greek}_total"),
            )
            if per is not None and total is not None and per > total:
                raise _bad(
                    f"must be at most max_{greek}_total ({total:g}), got {per:g}",
                    subloc=(f"max_{greek}_per_order",),
                )
        return self


class OptionQuotingSettings(BaseModel):
    """``[options.quoting]``: the backstop's quotes on a fractured option book."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    half_spread_vol_points: PositiveFloat = 1.0
    """Bid at iv - this, ask at iv + this (plus stress)."""
    stress_vol_points: NonNegativeFloat = 1.0
    """Added x ``stress`` (1 - detector health)."""
    target_fraction: float = Field(default=0.6, gt=0.0, le=1.0)
    """Quote up to ``target_fraction x baseline - depth`` of vega per side."""
    max_contracts_per_order: PositiveFloat = 5.0
    stop_before_expiry_s: NonNegativeFloat = 30.0
    """No quotes this close to expiry: delta jumps between 0 and 1 there (gamma)."""
    flatten_before_expiry_s: NonNegativeFloat = 0.0
    """From this long before an expiry (0: never), its options are no longer backstopped:
    their positions are closed by ``flatten:`` orders through the touch, so settlement
    leaves no delta behind it. At least ``stop_before_expiry_s`` when set."""
    flatten_ticks: int = Field(default=2, ge=0, le=100)
    """A flattening order's limit: this many ticks through the opposite touch."""
    fee_rate: NonNegativeFloat = 0.0003
    """Paper fee per contract, as a fraction of the underlying (Deribit: 0.03 %), capped
    at 12.5 % of the premium."""


class HedgeSettings(BaseModel):
    """``[options.hedge]``: delta hedging on the underlying (a perpetual)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    hedge_at_fraction: float = Field(default=0.7, gt=0.0, lt=1.0)
    """Hedge when |options delta + underlying position| exceeds this fraction of
    ``limits.max_delta_total``: below the cap, so gamma after an option order was admitted
    moves delta into the room between the trigger and the cap, not past the cap."""
    delta_limit: PositiveFloat | None = None
    """The trigger in BTC instead (must be below ``limits.max_delta_total``)."""
    expiry_hedge_s: NonNegativeFloat = 0.0
    """From this long before an expiry (0: never), the hedge counts that expiry's options
    at ``expiry_delta_weight`` of their delta: what is left of their delta then
    vanishes at settlement, and the hedge is already (partly) unwound for it."""
    expiry_delta_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    """0: hedge the post-settlement delta (cash-settled options have none); 0.5: split
    the settlement jump evenly either side of it."""
    max_order_base: PositiveFloat = 1.0
    max_cost_bps: PositiveFloat = 10.0
    """The hedge is a limit order this far through the mid (it takes liquidity)."""


class OptionsSettings(BaseModel):
    """``[options]``: watch (and backstop) an option chain on a configured underlying."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    underlying: str
    """The configured market whose mid is the forward, and where delta is hedged."""
    source: Literal["synthetic", "live"] = "synthetic"
    exchange: str = "deribit"
    """Live option books: the ccxt.pro exchange (deribit or okx)."""
    symbols: list[str] = Field(default_factory=list)
    """Live option books: ccxt unified option symbols (``BTC/USD:BTC-240927-60000-C``)."""
    synthetic: SyntheticChainSettings | None = None
    band_vol_points: PositiveFloat = 2.0
    """Depth counted within this many vol points of the mid's implied volatility."""
    trade: bool = True
    """Quote fractured option books (paper mode); false: monitor only."""
    paper_balance: NonNegativeFloat = 1.0
    """The option account's starting balance on the paper venue, in the options' settle
    currency (BTC): a buy reserves its premium and fee from it, fills and settlements
    move it. Shorts need no margin there (the greek limits bound them)."""
    detector: OptionDetectorSettings = Field(default_factory=OptionDetectorSettings)
    limits: GreekLimitSettings = Field(default_factory=GreekLimitSettings)
    quoting: OptionQuotingSettings = Field(default_factory=OptionQuotingSettings)
    hedge: HedgeSettings = Field(default_factory=HedgeSettings)

    @model_validator(mode="after")
    def _hedge_below_the_cap(self) -> OptionsSettings:
        limit, cap = self.hedge.delta_limit, self.limits.max_delta_total
        if limit is not None and limit >= cap:
            raise _bad(
                f"must be below limits.max_delta_total ({cap:g}): the hedge must act "
                f"before the cap, got {limit:g}",
                subloc=("hedge", "delta_limit"),
            )
        q = self.quoting
        if 0 < q.flatten_before_expiry_s < q.stop_before_expiry_s:
            raise _bad(
                f"must be 0 or at least stop_before_expiry_s ({q.stop_before_expiry_s:g})",
                subloc=("quoting", "flatten_before_expiry_s"),
            )
        return self

    def hedge_trigger(self) -> float:
        """|net delta| (BTC) above which the underlying is traded to hedge it."""
        h = self.hedge
        return (
            h.delta_limit
            if h.delta_limit is not None
            else (h.hedge_at_fraction * self.limits.max_delta_total)
        )

    @model_validator(mode="after")
    def _source_has_what_it_needs(self) -> OptionsSettings:
        if self.source == "synthetic" and self.synthetic is None:
            raise _bad(
                'source "synthetic" needs an [options.synthetic] table (expiries, strikes)',
                subloc=("synthetic",),
            )
        if self.source == "live":
            if not self.symbols:
                raise _bad(
                    'source "live" needs option symbols (e.g. "BTC/USD:BTC-240927-60000-C")',
                    subloc=("symbols",),
                )
            if self.exchange not in ("deribit", "okx"):
                raise _bad(
                    f"live option books come from deribit or okx, got {self.exchange!r}",
                    subloc=("exchange",),
                )
        return self
