"""What the emulator's engine tells its front ends: the contract between the exchange
state (:mod:`bot.exchange_sim.engine`, fed by :mod:`bot.exchange_sim.market`) and the
websocket streams (:mod:`bot.exchange_sim.ws`).

The engine calls every subscriber synchronously, in the order things happen on the
venue, right after its own state changed; subscribers must not call back into the
engine and must not block (the websocket front end only queues the event per
connection). Payload shapes are the venue's *meaning*, not its JSON: the front end
renders Binance's wire format from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.exchange_sim.engine import SimOrder, SimTrade

PriceLevels = tuple[tuple[Decimal, Decimal], ...]
"""``((price, new total size), ...)``; size 0 removes the level."""


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One diff-depth message: the absolute new sizes of the levels that changed.

    Sizes are what ``GET /depth`` would show (public levels plus our resting orders).
    ``first_id``/``last_id`` are Binance's ``U``/``u``: consecutive diffs satisfy
    ``first_id == previous last_id + 1``, and ``last_id`` equals the book's
    ``lastUpdateId`` after the change, so a client can align a REST snapshot with the
    stream exactly as Binance documents.
    """

    symbol: str
    first_id: int
    last_id: int
    bids: PriceLevels
    asks: PriceLevels
    time_ms: int


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """A trade on the public tape (the market's, or one of ours as seen by everyone)."""

    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    buyer_is_maker: bool
    time_ms: int


@dataclass(frozen=True, slots=True)
class OrderChanged:
    """One ``executionReport``: an order of ours changed.

    ``execution``: Binance's execution type ``NEW``, ``TRADE``, ``CANCELED``,
    ``EXPIRED`` or ``REJECTED``. ``trade`` is the fill for ``TRADE`` (else None).
    ``order`` is the order *after* the change (status, executed and quote totals).
    """

    order: SimOrder
    execution: str
    trade: SimTrade | None
    time_ms: int


@dataclass(frozen=True, slots=True)
class BalancesChanged:
    """One ``outboundAccountPosition``: the new free/locked of the assets that changed."""

    balances: tuple[tuple[str, Decimal, Decimal], ...]
    """``((asset, free, locked), ...)``."""
    time_ms: int


@dataclass(frozen=True, slots=True)
class PositionRow:
    """One futures position as an ``ACCOUNT_UPDATE`` reports it (one-way mode)."""

    symbol: str
    amount: Decimal
    """Signed contracts: long > 0."""
    entry: Decimal
    unrealised: Decimal
    isolated_wallet: Decimal
    """The position's isolated margin."""
    realised: Decimal
    """Accumulated realised PnL (Binance's ``cr``)."""


@dataclass(frozen=True, slots=True)
class AccountChanged:
    """One futures ``ACCOUNT_UPDATE``: wallets and positions after a fill, a funding
    payment or a liquidation (``reason``: ``ORDER``, ``FUNDING_FEE``)."""

    reason: str
    balances: tuple[tuple[str, Decimal, Decimal], ...]
    """``((asset, wallet balance, change by this event), ...)``."""
    positions: tuple[PositionRow, ...]
    time_ms: int


VenueEvent = DepthDiff | PublicTrade | OrderChanged | BalancesChanged | AccountChanged
Subscriber = Callable[[VenueEvent], None]
