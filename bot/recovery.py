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

Funds the account holds beyond the reserve are the operator's, not the bot's. They
are measured once, at the first start on this journal (venue total minus reserve),
and the balance guard then expects ``unmanaged + inventory`` on the venue: any other
change (a fill the bot missed, a withdrawal) is a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ccxt

from bot.errors import BackstopError, UserError
from bot.exchanges import map_ccxt_error
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


__all__ = ["MarketRecovery", "Recovery", "fetch_start_balance", "recover"]
