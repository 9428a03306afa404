"""Order manager configuration: one frozen, validated model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OrderManagerConfig(BaseModel):
    """Parameters
    ----------
    client_id_prefix:
        Marks this bot's orders (``{prefix}-...``). Orders without it are never touched.
    rate_limit / rate_period_s:
        At most ``rate_limit`` venue calls per ``rate_period_s`` from the manager
        (creates, cancels, lookups, reconcile listings), via asyncio-throttle.
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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id_prefix: str = Field(default="bs1", pattern=r"^[A-Za-z0-9]{1,12}$")
    rate_limit: int = Field(default=8, gt=0)
    rate_period_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=0)
    rate_limited_retries: int = Field(default=3, ge=0)
    unknown_lookups: int = Field(default=3, ge=1)
    backoff_initial_s: float = Field(default=0.25, gt=0)
    backoff_max_s: float = Field(default=8.0, gt=0)
    unknown_own_orders: Literal["adopt", "cancel"] = "cancel"
    finished_retention_s: float = Field(default=60.0, ge=0)
    max_unmatched_trades: int = Field(default=1000, ge=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> OrderManagerConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self
