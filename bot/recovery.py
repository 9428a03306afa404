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
   configured one for the funding guard;
7. the venue's position (``fetch_positions``) must be the one the journal rebuilt:
   same side and contracts (within half a lot step) and entry price (within 1e-9
   relative). Otherwise the start is **refused** with one line naming both: a
   position the journal cannot explain was opened by someone else on this account or
   belongs to another journal, and adopting it would put the bot's loss guards on
   somebody else's trade. Flatten or explain it, then start again.

and then the funding payments (:class:`VenueFunding`):

8. the journaled ``funding`` records are booked into the inventory, and the venue's
   payments on the market since the last of them (``fetch_funding_history``; since
   the journal's first start if none) that the journal lacks are journaled and booked
   (payments made while the bot was down). From then on the inventory books no
   funding of its own: :meth:`VenueFunding.sync` reads the venue's payments after each
   funding time, before the balance check compares the wallets.

Funds the account holds beyond the reserve are the operator's, not the bot's. They
are measured once, at the first start on this journal (venue total minus reserve),
and the balance guard then expects ``unmanaged + inventory`` on the venue: any other
change (a fill the bot missed, a withdrawal) is a mismatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import ccxt

from bot.clock import Clock
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
    funding_missed: int = 0
    """Perpetuals: the venue's funding payments the journal lacked."""
    funding_restored: int = 0
    """Perpetuals: journaled funding payments booked into the inventory."""


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
                    **(
                        {
                            "position": m.position,
                            "funding_missed": m.funding_missed,
                            "funding_restored": m.funding_restored,
                        }
                        if m.position is not None
                        else {}
                    ),
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
    funding: VenueFunding | None = None,
) -> Recovery:
    """Steps 1-8 above; raises (mapped) if the venue cannot be read. ``funding``: the
    running bot's :class:`VenueFunding` (one is made for the start if not given)."""
    balance = await fetch_start_balance(venue, exchange_id)
    if funding is None:
        funding = VenueFunding(journal, log=log)
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
            try:
                report.funding_restored, report.funding_missed = await funding.restore(
                    venue, desk.inventory
                )
            except (ccxt.BaseError, OSError) as e:
                mapped = map_ccxt_error(e)
                raise type(mapped)(
                    f"could not read {symbol} funding payments on {exchange_id}: {mapped}"
                ) from e
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

    async def fetch_funding_history(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
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
    rate = _funding_rate(funding)
    if rate is not None:
        inventory.funding_rate = rate
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


def _funding_rate(funding: Mapping[str, Any]) -> Decimal | None:
    """The rate of a ccxt funding-rate structure (``fetch_funding_rate``), if it has one."""
    rate = funding.get("fundingRate")
    return None if rate is None else Decimal(repr(float(rate)))


FUNDING_PAGE = 1000
"""Binance's largest income page."""
FUNDING_GRACE_MS = 300_000
"""How long after a funding time the venue's payment is still looked for, when the
first read after it found none (Binance books it within seconds)."""
FUNDING_RETRY_MS = 30_000
"""The least time between two reads while looking for one."""
FUNDING_POLL_MS = 900_000
"""Read at least this often anyway: a payment at a time the configured
``funding_interval_h`` does not predict is found within it."""


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """One venue funding payment (a ccxt funding history entry)."""

    symbol: str
    id: str
    amount: Decimal
    currency: str
    time_ms: int

    @classmethod
    def from_ccxt(cls, entry: Mapping[str, Any]) -> FundingPayment | None:
        ident, ts, symbol = entry.get("id"), entry.get("timestamp"), entry.get("symbol")
        if ident is None or not isinstance(ts, int) or not isinstance(symbol, str):
            return None
        # The venue's decimal string where there is one: ccxt's float may not round-trip.
        info = entry.get("info")
        raw = info.get("income") if isinstance(info, Mapping) else None
        amount = Decimal(raw) if isinstance(raw, str) else Decimal(repr(float(entry["amount"])))
        return cls(symbol, str(ident), amount, str(entry.get("code") or ""), ts)

    @classmethod
    def from_journal(cls, payload: Mapping[str, Any]) -> FundingPayment:
        return cls(
            str(payload["symbol"]),
            str(payload["id"]),
            Decimal(str(payload["amount"])),
            str(payload.get("currency") or ""),
            int(payload["time_ms"]),
        )

    def payload(self, source: str) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "id": self.id,
            "amount": f"{self.amount:f}",
            "currency": self.currency,
            "time_ms": self.time_ms,
            "source": source,
        }


class VenueFunding:
    """The venue's funding payments into the perpetuals' inventories, journaled once.

    Each payment is booked by the venue's id (Binance ``tranId``), so a payment read
    twice (the fetch's ``since`` is inclusive; a restart reads the journal and then the
    venue) counts once. Only for exchange accounts: the paper venue's funding is the
    inventory's own. ``clock`` (the venue's time) schedules the reads (:meth:`_due`);
    without one every :meth:`sync` reads.
    """

    def __init__(self, journal: Journal, *, log: Logger, clock: Clock | None = None) -> None:
        self._journal = journal
        self._log = log
        self._clock = clock
        self._inventories: dict[str, PerpInventory] = {}
        self._cursor_ms: dict[str, int] = {}
        self._polled_ms: dict[str, int] = {}

    async def restore(self, venue: PerpVenue, inventory: PerpInventory) -> tuple[int, int]:
        """Step 8 above for one market: (payments restored from the journal, payments
        the venue had that the journal lacked)."""
        symbol = inventory.symbol
        inventory.venue_funding = True
        self._inventories[symbol] = inventory
        restored = 0
        for record in self._journal.reader.records([rk.FUNDING], symbol=symbol):
            payment = FundingPayment.from_journal(record.payload)
            if inventory.book_funding(payment.id, payment.amount, payment.time_ms):
                restored += 1
            self._cursor_ms[symbol] = max(self._cursor_ms.get(symbol, 0), payment.time_ms)
        if symbol not in self._cursor_ms:
            first = next(iter(self._journal.reader.records([rk.START])), None)
            if first is not None:
                self._cursor_ms[symbol] = first.ts_ns // 1_000_000
        missed = await self._fetch(venue, inventory, source="reconcile")
        await self._journal.flush()
        return restored, missed

    async def sync(self, venue: Venue) -> int:
        """Read and book the payments since the last ones, on every market whose funding
        time has passed since the last read (or lately); returns how many were new."""
        if not isinstance(venue, PerpVenue):
            return 0
        new = 0
        for symbol, inventory in self._inventories.items():
            if self._due(symbol, inventory):
                new += await self._fetch(venue, inventory, source="venue")
                await self._refresh_rate(venue, inventory)
        return new

    async def _refresh_rate(self, venue: PerpVenue, inventory: PerpInventory) -> None:
        """The funding guard's rate, read again with the payments (weight 1 on Binance):
        set at start (step 6) it would otherwise judge a day-old rate. The venue's next
        rate moves between funding times; reads after each one and every 15 minutes
        keep the guard within a quarter of an hour of it."""
        new = _funding_rate(await venue.fetch_funding_rate(inventory.symbol))
        if new is not None and new != inventory.funding_rate:
            self._log.info(
                "funding_rate",
                symbol=inventory.symbol,
                previous=float(inventory.funding_rate),
                rate=float(new),
            )
            inventory.funding_rate = new

    def then(self, check: Callable[[Venue], Awaitable[None]]) -> Callable[[Venue], Awaitable[None]]:
        """``check`` (the balance check) preceded by :meth:`sync`: the wallet the bot
        compares then holds the funding the venue's holds."""

        async def run(venue: Venue) -> None:
            await self.sync(venue)
            await check(venue)

        return run

    def _due(self, symbol: str, inventory: PerpInventory) -> bool:
        """Whether to read now. An income read is expensive (Binance weight 30, which
        ccxt's throttle makes the next requests wait for): once after each funding
        time, again every 30 s while its payment is missing (for 5 minutes; none comes
        for a flat position), and every 15 minutes whatever the interval says."""
        if self._clock is None:
            return True
        now_ms = self._clock.now_ns() // 1_000_000
        polled = self._polled_ms.get(symbol)
        if polled is None or now_ms - polled >= FUNDING_POLL_MS:
            return True
        interval_ms = round(inventory.funding_interval_h * 3_600_000)
        latest = now_ms // interval_ms * interval_ms if interval_ms > 0 else now_ms
        if polled < latest:
            return True  # the first read after a funding time
        missing = self._cursor_ms.get(symbol, 0) < latest
        return (
            missing and now_ms - latest <= FUNDING_GRACE_MS and now_ms - polled >= FUNDING_RETRY_MS
        )

    async def _fetch(self, venue: PerpVenue, inventory: PerpInventory, *, source: str) -> int:
        symbol = inventory.symbol
        if self._clock is not None:
            self._polled_ms[symbol] = self._clock.now_ns() // 1_000_000
        new = 0
        while True:
            since = self._cursor_ms.get(symbol)
            page = await venue.fetch_funding_history(symbol, since, FUNDING_PAGE)
            payments = [p for p in map(FundingPayment.from_ccxt, page) if p is not None]
            for payment in sorted(payments, key=lambda p: p.time_ms):
                if payment.symbol != symbol:
                    continue
                self._cursor_ms[symbol] = max(self._cursor_ms.get(symbol, 0), payment.time_ms)
                if not inventory.book_funding(payment.id, payment.amount, payment.time_ms):
                    continue
                self._journal.append(
                    rk.FUNDING, payment.payload(source), ts_ns=payment.time_ms * 1_000_000
                )
                self._log.info(
                    "funding_booked",
                    symbol=symbol,
                    id=payment.id,
                    amount=float(payment.amount),
                    time_ms=payment.time_ms,
                    source=source,
                )
                new += 1
            if len(page) < FUNDING_PAGE or self._cursor_ms.get(symbol) == since:
                return new


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
        if isinstance(inv, PerpInventory):
            # A perpetual's reserve is its margin, in the settle currency: the quote on a
            # linear one (USDT), the base on an inverse one (BTC).
            settle = inv.spec.settle
            reserve[settle] = reserve.get(settle, 0.0) + float(inv.start_quote)
            continue
        reserve[inv.base_currency] = reserve.get(inv.base_currency, 0.0) + float(inv.start_base)
        reserve[inv.quote_currency] = reserve.get(inv.quote_currency, 0.0) + float(inv.start_quote)
    return reserve


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "..."


__all__ = [
    "FundingPayment",
    "MarketRecovery",
    "PerpVenue",
    "Recovery",
    "VenueFunding",
    "check_position",
    "fetch_start_balance",
    "recover",
]
