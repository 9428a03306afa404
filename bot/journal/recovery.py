"""After a crash: what the journal knows, and the fills it missed.

The journal loses nothing it committed, but a crash can fall between the venue
executing a fill and the bot journaling it. :func:`reconcile_fills` asks the venue
(any :class:`~bot.venues.base.Venue`: paper, testnet, live) for its trades since the
last journaled fill, keeps those of *our* orders (client-id prefix) and journals the
ones missing, marked ``source: "reconcile"``. Our orders are recognised by the trade's
client id when the venue gives it, else by the exchange order ids the journal saw,
else by looking the order up (``fetch_order``); errors are raised (mapped to
:mod:`bot.errors`), never skipped: a fill of ours must not be silently left out.

Open orders are the order manager's business (its ``reconcile`` with the journal's
:meth:`~bot.journal.Journal.known_client_ids` adopts the orders the journal knows);
:meth:`~bot.journal.Journal.open_orders_at_crash` says which orders the journal last
saw unfinished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.clock import NS_PER_MS
from bot.errors import BackstopError
from bot.journal import records as rk

if TYPE_CHECKING:
    from bot.journal.writer import Journal
    from bot.venues.base import Venue

PAGE_LIMIT = 500


def _mapped(e: Exception) -> BackstopError:
    from bot.exchanges import map_ccxt_error  # loads ccxt: only when a venue call failed

    return map_ccxt_error(e)


async def _client_id_of(venue: Venue, symbol: str, order_id: str) -> str | None:
    try:
        order = await venue.fetch_order(order_id, symbol)
    except BackstopError:
        raise
    except Exception as e:
        raise _mapped(e) from e
    value = order.get("clientOrderId")
    return value if isinstance(value, str) and value else None


async def reconcile_fills(
    journal: Journal,
    venue: Venue,
    symbol: str,
    prefix: str,
    *,
    page_limit: int = PAGE_LIMIT,
) -> list[dict[str, Any]]:
    """Journal the venue's fills of our orders on ``symbol`` that the journal lacks.

    Fetches ``fetch_my_trades(symbol, since=last journaled fill)`` page by page (the
    ``since`` is inclusive: trades sharing the last fill's millisecond are fetched
    again and recognised as known). Returns the payloads journaled, in venue order,
    after they are committed.
    """
    from bot.orders.updates import TradeUpdate  # the order manager's reading of a trade

    await journal.flush()
    reader = journal.reader
    since = reader.last_fill_ms(symbol)
    by_exchange_id = reader.exchange_ids(symbol)
    marker = prefix + "-"
    looked_up: dict[str, str | None] = {}
    seen: set[tuple[str | None, str]] = set()
    added: list[dict[str, Any]] = []
    cursor = since
    while True:
        try:
            page = await venue.fetch_my_trades(symbol, since=cursor, limit=page_limit)
        except BackstopError:
            raise
        except Exception as e:
            raise _mapped(e) from e
        fresh = False
        for raw in page:
            trade = TradeUpdate.from_ccxt(raw)
            if trade is None or (trade.symbol is not None and trade.symbol != symbol):
                continue
            if (trade.order_id, trade.trade_id) in seen:
                continue
            seen.add((trade.order_id, trade.trade_id))
            fresh = True
            client_id = trade.client_id
            if client_id is None and trade.order_id is not None:
                client_id = by_exchange_id.get(trade.order_id)
                if client_id is None:
                    if trade.order_id not in looked_up:
                        looked_up[trade.order_id] = await _client_id_of(
                            venue, symbol, trade.order_id
                        )
                    client_id = looked_up[trade.order_id]
            if client_id is None or not client_id.startswith(marker):
                continue  # not ours: another bot's or a human's
            if reader.has_fill(client_id, trade.trade_id):
                continue
            payload: dict[str, Any] = {
                "client_id": client_id,
                "exchange_id": trade.order_id,
                "symbol": symbol,
                "side": trade.side,
                "trade_id": trade.trade_id,
                "price": trade.price,
                "amount": trade.amount,
                "fee_cost": trade.fee_cost,
                "fee_currency": trade.fee_currency,
                "liquidity": trade.taker_or_maker,
                "venue_ts_ms": trade.timestamp_ms,
                "source": "reconcile",
            }
            ts_ns = trade.timestamp_ms * NS_PER_MS if trade.timestamp_ms is not None else None
            journal.append(rk.FILL, payload, ts_ns=ts_ns)
            added.append(payload)
        if len(page) < page_limit or not fresh:
            break
        stamps = [int(t["timestamp"]) for t in page if isinstance(t.get("timestamp"), int)]
        if not stamps or max(stamps) == cursor:
            break  # a full page within one millisecond: nothing more to ask for
        cursor = max(stamps)
    await journal.flush()
    return added
