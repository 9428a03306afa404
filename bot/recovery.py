"""Starting against a real venue (testnet, live): pick up where the last run left off.

Whether the last run ended cleanly or was SIGKILLed with orders out, the start is the
same, in this order, before the first quote:

1. ``fetch_balance``: proves the credentials (a refused key is a clear error, not a
   stream of failed orders later) and is journaled as the start snapshot.
2. Per market, the venue's trades of our orders (client-id prefix) since the last
   journaled fill are journaled (fills that happened while the bot was down).
3. The inventory is rebuilt from *every* journaled fill of the market on top of the
   configured reserve, so it is the same whether fills came live or in step 2.
4. The order manager reconciles with the venue's open orders: ours that the journal
   knows are adopted as live quotes (the strategy then keeps or cancels them like its
   own), ours that nobody knows are cancelled (``orders.unknown_own_orders``).

On a perpetual (:class:`bot.inventory.PerpInventory`), step 3 is followed by the
derivatives set-up and check, still before the first quote:

5. the market is set to isolated margin and the configured leverage
   (``set_margin_mode``, ``set_leverage``); a venue that refuses (e.g. a position held
   in cross margin) stops the start with one line;
6. the funding rate is read from the venue (``fetch_funding_rate``) and replaces the
   configured one for the funding guard and the bot's funding PnL;
7. the venue's position (``fetch_positions``) must be the one the journal rebuilt:
   same side and contracts (within half a lot step) and entry price (within 1e-9
   relative). Otherwise the start is **refused** with one line naming both: a
   position the journal cannot explain was opened by someone else on this account or
   belongs to another journal, and adopting it would put the bot's loss guards on
   somebody else's trade. Flatten or explain it, then start again.

Funds the account holds beyond the reserve are the operator's, not the bot's. They
are measured once, at the first start on this journal (venue total minus reserve),
and the balance guard then expects ``unmanaged + inventory`` on the venue: any other
change (a fill the bot missed, a withdrawal) is a mismatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import ccxt

from bot.errors import BackstopError, UserError
from bot.exchanges import map_ccxt_error
from bot.inventory import PerpInventory
from bot.journal import Journal
from bot.journal import records as rk
from bot.logs import Logger
from bot.orders import OrderFilled
from bot.trader import Trader, balance_totals
from bot.venues.base import Balance, Venue

START_SNAPSHOT = "start"


@dataclass
class MarketRecovery:
    symbol: str
    fills_missed: int = 0
    """Fills of ours the venue had that the journal lacked (they happened while down)."""
    fills_restored: int = 0
    """Journaled fills replayed into the inventory."""
    adopted: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)
    foreign: int = 0
    position: dict[str, Any] | None = None
    """Perpetuals: the venue's position as checked against the journal's."""


@dataclass
class Recovery:
    markets: dict[str, MarketRecovery] = field(default_factory=dict)
    unmanaged: dict[str, float] = field(default_factory=dict)
    first_start: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_start": self.first_start,
            "unmanaged": self.unmanaged,
            "markets": {
                s: {
                    "fills_missed": m.fills_missed,
                    "fills_restored": m.fills_restored,
                    "adopted": len(m.adopted),
                    "canceled": len(m.canceled),
                    "looked_up": len(m.looked_up),
                    "foreign": m.foreign,
                    **({"position": m.position} if m.position is not None else {}),
                }
                for s, m in self.markets.items()
            },
        }


async def fetch_start_balance(venue: Venue, exchange_id: str) -> Balance:
    """The account's balances; a credentials problem becomes a :class:`UserError`."""
    try:
        return await venue.fetch_balance()
    except ccxt.AuthenticationError as e:
        raise UserError(
            f"{exchange_id} refused the API credentials (exchange.api_key / exchange.secret): "
            f"{_short(e)}; check the key, its secret, that it is enabled for trading and, "
            "in testnet mode, that it was made on the exchange's testnet"
        ) from e
    except (ccxt.BaseError, OSError) as e:
        mapped = map_ccxt_error(e)
        raise type(mapped)(f"could not read {exchange_id} balances at start: {mapped}") from e


async def recover(
    trader: Trader,
    venue: Venue,
    journal: Journal,
    *,
    exchange_id: str,
    prefix: str,
    log: Logger,
) -> Recovery:
    """Steps 1-4 above; raises (mapped) if the venue cannot be read."""
    balance = await fetch_start_balance(venue, exchange_id)
    result = Recovery()
    for symbol, desk in trader.desks.items():
        report = MarketRecovery(symbol)
        try:
            missed = await journal.reconcile_fills(venue, symbol, prefix)
        except BackstopError as e:
            raise type(e)(f"could not reconcile {symbol} fills with {exchange_id}: {e}") from e
        report.fills_missed = len(missed)
        for payload in journal.reader.fills(symbol):
            if desk.inventory.apply(_fill_from_journal(payload)):
                report.fills_restored += 1
        if isinstance(desk.inventory, PerpInventory):
            if not isinstance(venue, PerpVenue):
                raise UserError(f"{exchange_id} does not trade perpetuals ({symbol})")
            report.position = await check_position(
                venue, desk.inventory, amount_step=desk.rules.amount_step, exchange_id=exchange_id
            )
            log.info("position_recovered", symbol=symbol, **report.position)
        try:
            reconciled = await trader.manager.reconcile(symbol)
        except BackstopError as e:
            raise type(e)(f"could not list open {symbol} orders on {exchange_id}: {e}") from e
        report.adopted = list(reconciled.adopted)
        report.canceled = list(reconciled.canceled)
        report.looked_up = list(reconciled.looked_up)
        report.foreign = reconciled.foreign
        result.markets[symbol] = report

    first = _first_start_totals(journal)
    result.first_start = first is None
    journal.record_balance(balance, source=START_SNAPSHOT)
    baseline = first if first is not None else balance_totals(balance)
    reserve = _reserve_totals(trader)
    result.unmanaged = {ccy: baseline.get(ccy, 0.0) - amount for ccy, amount in reserve.items()}
    trader.unmanaged = dict(result.unmanaged)
    await journal.flush()
    log.info("recovered", **result.to_dict())
    return result


@runtime_checkable
class PerpVenue(Protocol):
    """What the perpetuals' start needs beyond :class:`~bot.venues.base.Venue`."""

    async def set_margin_mode(
        self, margin_mode: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def set_leverage(
        self, leverage: float, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def fetch_funding_rate(
        self, symbol: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def fetch_positions(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...


ENTRY_TOLERANCE = Decimal("1e-9")


async def check_position(
    venue: PerpVenue, inventory: PerpInventory, *, amount_step: float, exchange_id: str
) -> dict[str, Any]:
    """Steps 5-7 above for one perpetual; returns what was found (for the log)."""
    symbol = inventory.symbol
    leverage = int(inventory.position.leverage)
    try:
        try:
            # Binance's -4046 "No need to change margin type.": it is isolated already.
            with contextlib.suppress(ccxt.MarginModeAlreadySet):
                await venue.set_margin_mode("isolated", symbol)
            await venue.set_leverage(leverage, symbol)
        except ccxt.ExchangeError as e:
            # The venue answered no (a position held in cross margin, a leverage it will
            # not lower under an open position ...): only the operator can sort it out.
            raise UserError(
                f"{exchange_id} refused to set {symbol} to isolated margin at {leverage}x: "
                f"{_short(e)}"
            ) from e
        funding = await venue.fetch_funding_rate(symbol)
        positions = await venue.fetch_positions([symbol])
    except (ccxt.BaseError, OSError) as e:
        mapped = map_ccxt_error(e)
        raise type(mapped)(f"could not set up {symbol} on {exchange_id}: {mapped}") from e
    rate = funding.get("fundingRate")
    if rate is not None:
        inventory.funding_rate = Decimal(repr(float(rate)))
    venue_contracts, venue_entry = _venue_position(positions, symbol)
    ours, our_entry = inventory.position.contracts, inventory.position.entry
    step = Decimal(repr(float(amount_step))) if amount_step > 0 else Decimal(0)
    same_size = abs(venue_contracts - ours) <= step / 2
    same_entry = ours == 0 or abs(venue_entry - our_entry) <= ENTRY_TOLERANCE * our_entry
    if not (same_size and same_entry):
        raise UserError(
            f"{exchange_id} holds {_describe(venue_contracts, venue_entry)} on {symbol} but the "
            f"journal's fills make {_describe(ours, our_entry)}: refusing to start on a position "
            "the bot cannot account for (flatten it, or start with this account's journal)"
        )
    return {
        "contracts": float(venue_contracts),
        "entry": float(venue_entry),
        "leverage": leverage,
        "margin_mode": "isolated",
        "funding_rate": float(inventory.funding_rate),
    }


def _venue_position(positions: list[dict[str, Any]], symbol: str) -> tuple[Decimal, Decimal]:
    """Signed contracts and entry of ``symbol``'s one-way position (0, 0 when flat)."""
    for p in positions:
        contracts = p.get("contracts") or 0
        if p.get("symbol") != symbol or not contracts:
            continue
        signed = Decimal(repr(float(contracts)))
        if p.get("side") == "short":
            signed = -signed
        return signed, Decimal(repr(float(p.get("entryPrice") or 0)))
    return Decimal(0), Decimal(0)


def _describe(contracts: Decimal, entry: Decimal) -> str:
    if contracts == 0:
        return "no position"
    side = "long" if contracts > 0 else "short"
    return f"{side} {abs(contracts):f} contracts @ {entry:f}"


def _fill_from_journal(payload: Mapping[str, Any]) -> OrderFilled:
    fee = payload.get("fee_cost")
    venue_ts = payload.get("venue_ts_ms")
    ts_ns = payload.get("ts_ns")
    return OrderFilled(
        ts_ns=int(ts_ns) if isinstance(ts_ns, int) else 0,
        client_id=str(payload["client_id"]),
        symbol=str(payload["symbol"]),
        side="buy" if payload.get("side") == "buy" else "sell",
        trade_id=str(payload["trade_id"]),
        price=float(payload["price"]),
        amount=float(payload["amount"]),
        fee_cost=float(fee) if fee is not None else None,
        fee_currency=payload.get("fee_currency"),
        taker_or_maker=payload.get("liquidity"),
        venue_ts_ms=int(venue_ts) if isinstance(venue_ts, int) else None,
    )


def _first_start_totals(journal: Journal) -> dict[str, float] | None:
    for record in journal.reader.records([rk.BALANCE]):
        if record.payload.get("source") == START_SNAPSHOT:
            balances = record.payload.get("balances") or {}
            return {
                str(ccy): float(entry.get("total") or 0.0)
                for ccy, entry in balances.items()
                if isinstance(entry, Mapping)
            }
    return None


def _reserve_totals(trader: Trader) -> dict[str, float]:
    reserve: dict[str, float] = {}
    for desk in trader.desks.values():
        inv = desk.inventory
        reserve[inv.base_currency] = reserve.get(inv.base_currency, 0.0) + float(inv.start_base)
        reserve[inv.quote_currency] = reserve.get(inv.quote_currency, 0.0) + float(inv.start_quote)
    return reserve


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "..."


__all__ = [
    "MarketRecovery",
    "PerpVenue",
    "Recovery",
    "check_position",
    "fetch_start_balance",
    "recover",
]
