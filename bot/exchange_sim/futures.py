"""The emulator's futures account: positions, isolated margin, funding, liquidation.

One engine for both of Binance's perpetual venues: USDⓈ-M (linear, ``/fapi``: USDT
margin, contracts of 1 BTC) and COIN-M (inverse, ``/dapi``: BTC margin, contracts of
100 USD). Which one a symbol is comes from its ``exchangeInfo`` entry
(:func:`contract_market`), and the arithmetic from :mod:`bot.positions`.

:class:`FuturesEngine` is the spot engine (same public books, same
:class:`~bot.venues.matching.Matcher`, same events) with a derivatives account in
place of spot balances. The arithmetic is :mod:`bot.positions`, the code the paper
venue (:class:`bot.venues.perp.PerpPaperVenue`) and the bot's own books use, so the
three agree on the same fills:

- an order needs the initial margin of the part that would open or grow the position
  (:func:`bot.positions.order_margin`) plus its fee at the higher rate from the
  available balance (wallet - positions' margin - open orders' margin), else -2019;
- ``reduceOnly`` orders that would open or grow the position are refused with -2022,
  and expire when a fill leaves them larger than what they can still close;
- post-only is ``timeInForce=GTX``: one that would take is refused with -5022;
- fills book PnL and fees (``value x rate``, rounded up to 8 decimals) to the wallet;
- **funding** at every multiple of ``funding_interval_s`` of the venue's clock, at the
  mark of the first book update or order at or after it, before that event changes
  anything, rounded to 8 decimals (``INCOME`` rows and an ``ACCOUNT_UPDATE`` with
  reason ``FUNDING_FEE``, each payment its own);
- the **mark price is the mid** of the public book (recordings carry no mark stream);
- **liquidation** when the mark reaches the liquidation price: the symbol's orders
  are cancelled and the position is closed losing its isolated margin.

The margin type is recorded and reported (``POST /fapi/v1/marginType``; Binance's
default is cross) but the account is always isolated: cross margin is not emulated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import Any

from bot.clock import Clock
from bot.exchange_sim import errors
from bot.exchange_sim.engine import (
    EIGHT_DP,
    NS_PER_MS,
    ZERO,
    Side,
    SimOrder,
    SimTrade,
    SpotEngine,
    VenueBook,
)
from bot.exchange_sim.errors import ApiError
from bot.exchange_sim.events import AccountChanged, PositionRow
from bot.exchange_sim.symbols import SymbolRules
from bot.positions import (
    ContractSpec,
    IsolatedPosition,
    funding_times,
    maintenance_rate,
    order_margin,
)

DEFAULT_LEVERAGE = 20
"""Binance's initial leverage for a symbol never set."""
MAX_LEVERAGE = 125
DEFAULT_FUNDING_RATE = Decimal("0.0001")
DEFAULT_FUNDING_INTERVAL_S = 8 * 3600.0


def reduce_only_rejected() -> ApiError:
    return ApiError(400, -2022, "ReduceOnly Order is rejected.")


def margin_insufficient() -> ApiError:
    return ApiError(400, -2019, "Margin is insufficient.")


def post_only_rejected() -> ApiError:
    return ApiError(
        400,
        -5022,
        "Due to the order could not be executed as maker, the Post Only order will be rejected.",
    )


# The spot filters' failures, as the futures API words them.
_FUTURES_FILTER_ERRORS = {
    "Filter failure: PRICE_FILTER": ApiError(400, -4014, "Price not increased by tick size."),
    "Filter failure: LOT_SIZE": ApiError(
        400, -1111, "Precision is over the maximum defined for this asset."
    ),
    errors.DUPLICATE_ORDER: ApiError(400, -4116, "ClientOrderId is duplicated."),
}


@dataclass(frozen=True, slots=True)
class Income:
    """One ``GET /fapi/v1/income`` row (funding payments; fills are in userTrades)."""

    tran_id: int
    symbol: str
    income_type: str
    income: Decimal
    asset: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class Liquidated:
    time_ms: int
    symbol: str
    contracts: Decimal
    entry: Decimal
    mark: Decimal
    margin_lost: Decimal


def contract_market(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ccxt-shaped market :class:`ContractSpec` and :func:`maintenance_rate` read,
    from a USDⓈ-M or COIN-M ``exchangeInfo`` symbol entry (raw ids: the venue speaks
    ids). A COIN-M entry is margined in its base asset (``marginAsset``) and gives its
    ``contractSize`` in quote (100 USD for BTCUSD_PERP): inverse."""
    settle = entry.get("marginAsset") or entry["quoteAsset"]
    inverse = settle == entry["baseAsset"]
    return {
        "symbol": entry["symbol"],
        "base": entry["baseAsset"],
        "quote": entry["quoteAsset"],
        "settle": settle,
        "contract": True,
        "linear": not inverse,
        "inverse": inverse,
        "contractSize": float(entry.get("contractSize") or 1),
        "info": dict(entry),
    }


class FuturesEngine(SpotEngine):
    """One futures account (one-way mode) over the spot engine's books."""

    def __init__(
        self,
        entries: Iterable[Mapping[str, Any]],
        clock: Clock,
        balances: Mapping[str, Decimal | str | int] | None = None,
        *,
        funding_rate: Decimal | str = DEFAULT_FUNDING_RATE,
        funding_interval_s: float = DEFAULT_FUNDING_INTERVAL_S,
    ) -> None:
        entries = list(entries)
        full_rules = [SymbolRules.from_entry(e) for e in entries]
        # The minimum notional is checked here (reduce-only orders are exempt, as on
        # Binance), so the spot engine's own filter check leaves it out.
        super().__init__(
            [dataclasses.replace(r, min_notional=ZERO) for r in full_rules], clock, None
        )
        self.min_notional = {r.symbol: r.min_notional for r in full_rules}
        self.wallets: dict[str, Decimal] = {a: Decimal(v) for a, v in (balances or {}).items()}
        self.positions: dict[str, IsolatedPosition] = {}
        self.margin_types: dict[str, str] = {}
        for entry in entries:
            market = contract_market(entry)
            self.positions[entry["symbol"]] = IsolatedPosition(
                ContractSpec.from_market(market),
                leverage=Decimal(DEFAULT_LEVERAGE),
                mmr=maintenance_rate(market),
            )
            self.margin_types[entry["symbol"]] = "CROSSED"
            self.wallets.setdefault(market["settle"], ZERO)
        self.funding_rate = Decimal(funding_rate)
        self.funding_interval_s = funding_interval_s
        self.income: list[Income] = []
        self.liquidations: list[Liquidated] = []
        self.marks: dict[str, Decimal] = {}
        self._funding_seen_ns: dict[str, int] = {}
        self._next_tran_id = 9_000_001
        self._account_reason: str | None = None
        self._balance_change: dict[str, Decimal] = {}
        self._account_symbols: dict[str, None] = {}

    # ----- the account --------------------------------------------------------------
    def settle_asset(self, symbol: str) -> str:
        return self.positions[symbol].spec.settle

    def order_margin(self, symbol: str) -> Decimal:
        return order_margin(self.positions[symbol], self._order_rows(symbol))

    def used_margin(self, asset: str) -> Decimal:
        """Positions' isolated margin plus open orders' initial margin, in ``asset``."""
        used = ZERO
        for symbol, pos in self.positions.items():
            if pos.spec.settle == asset:
                used += pos.margin + self.order_margin(symbol)
        return used

    def available(self, asset: str) -> Decimal:
        return self.wallets.get(asset, ZERO) - self.used_margin(asset)

    def mark(self, symbol: str) -> Decimal | None:
        """The mark price: the public book's mid (else the last one known, else None)."""
        mid = self.books[symbol].public.mid()
        if mid is not None:
            self.marks[symbol] = Decimal(repr(mid))
        return self.marks.get(symbol)

    def unrealised(self, symbol: str) -> Decimal:
        mark = self.mark(symbol)
        pos = self.positions[symbol]
        return pos.unrealised(mark) if mark is not None else ZERO

    def set_leverage(self, symbol: str, leverage: int) -> None:
        pos = self.positions[self.symbol_rules(symbol).symbol]
        if not 1 <= leverage <= MAX_LEVERAGE:
            raise ApiError(400, -4028, f"Leverage {leverage} is not valid")
        if pos.contracts != 0 and Decimal(leverage) < pos.leverage:
            raise ApiError(
                400,
                -4161,
                "Leverage reduction is not supported in Isolated Margin Mode with open positions.",
            )
        pos.leverage = Decimal(leverage)

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        symbol = self.symbol_rules(symbol).symbol
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -4044, "The margin type is not valid.")
        if self.margin_types[symbol] == margin_type:
            raise ApiError(400, -4046, "No need to change margin type.")
        if self.positions[symbol].contracts != 0 or self.open_orders(symbol):
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        self.margin_types[symbol] = margin_type

    # ----- orders ---------------------------------------------------------------------
    def place(
        self,
        *,
        symbol: str,
        side: Side,
        order_type: str,
        time_in_force: str,
        price: Decimal,
        qty: Decimal,
        client_order_id: str,
        reduce_only: bool = False,
    ) -> tuple[SimOrder, list[SimTrade]]:
        if symbol in self.positions:
            self.pay_funding(symbol)
        try:
            return super().place(
                symbol=symbol,
                side=side,
                order_type=order_type,
                time_in_force=time_in_force,
                price=price,
                qty=qty,
                client_order_id=client_order_id,
                reduce_only=reduce_only,
            )
        except ApiError as e:
            raise _FUTURES_FILTER_ERRORS.get(e.msg, e) from None

    def _admit(
        self,
        symbol: str,
        side: Side,
        order_type: str,
        time_in_force: str,
        price: Decimal,
        qty: Decimal,
        reduce_only: bool,
    ) -> None:
        pos = self.positions[symbol]
        if reduce_only:
            closes = pos.contracts < 0 if side == "BUY" else pos.contracts > 0
            if not closes or qty > abs(pos.contracts):
                raise reduce_only_rejected()
            return  # closing needs no margin, and any notional may close
        minimum = self.min_notional[symbol]
        if price * qty < minimum:
            raise ApiError(
                400,
                -4164,
                f"Order's notional must be no smaller than {minimum:f} (unless you choose reduce"
                " only).",
            )
        rows = self._order_rows(symbol)
        oside = "buy" if side == "BUY" else "sell"
        extra = order_margin(pos, [*rows, (oside, price, qty)]) - order_margin(pos, rows)
        rules = self.rules[symbol]
        fee = pos.spec.value(qty, price) * max(rules.maker_fee, rules.taker_fee)
        if extra + fee > self.available(pos.spec.settle):
            raise margin_insufficient()

    @staticmethod
    def _post_only(order_type: str, time_in_force: str) -> bool:
        return time_in_force == "GTX"

    @staticmethod
    def _would_take_error() -> ApiError:
        return post_only_rejected()

    def _lock_for(self, order: SimOrder, qty: Decimal) -> tuple[str, Decimal]:
        # Nothing is set aside per order: margin is computed from the open orders.
        return self.settle_asset(order.symbol), ZERO

    def _settle(
        self, order: SimOrder, price: Decimal, qty: Decimal, rate: Decimal
    ) -> tuple[Decimal, str, Decimal]:
        pos = self.positions[order.symbol]
        fee = (pos.spec.value(qty, price) * rate).quantize(EIGHT_DP, rounding=ROUND_UP)
        change = pos.fill("buy" if order.side == "BUY" else "sell", qty, price, fee)
        settle = pos.spec.settle
        self.wallets[settle] += change
        self._account_changed("ORDER", order.symbol, settle, change)
        return fee, settle, change + fee

    def _after_fill(self, order: SimOrder) -> None:
        """Reduce-only orders larger than what they can still close expire (Binance)."""
        pos = self.positions[order.symbol]
        for side in ("BUY", "SELL"):
            closable = max(ZERO, -pos.contracts if side == "BUY" else pos.contracts)
            waiting = sorted(
                (
                    o
                    for o in self.open_orders(order.symbol)
                    if o.reduce_only and o.side == side and o is not order
                ),
                key=lambda o: -o.price if side == "BUY" else o.price,
            )
            for o in waiting:
                if o.remaining > closable:
                    self._close(o, "EXPIRED")
                else:
                    closable -= o.remaining

    def _order_rows(self, symbol: str) -> list[tuple[str, Decimal, Decimal]]:
        return [
            ("buy" if o.side == "BUY" else "sell", o.price, o.remaining)
            for o in self.open_orders(symbol)
            if not o.reduce_only
        ]

    # ----- funding and liquidation ------------------------------------------------------
    def _before_match(self, symbol: str, book: VenueBook) -> None:
        self.pay_funding(symbol)

    def pay_funding(self, symbol: str) -> None:
        """Pay the funding times passed since the symbol's last event, before that
        event (a book update or an order) changes anything: so every fill stamped at or
        after a funding time comes after its payment, as on Binance."""
        now_ns = self._clock.now_ns()
        seen = self._funding_seen_ns.setdefault(symbol, now_ns)
        due = funding_times(seen, now_ns, self.funding_interval_s)
        self._funding_seen_ns[symbol] = max(seen, now_ns)
        pos = self.positions[symbol]
        mark = self.mark(symbol)
        if not due or pos.contracts == 0 or mark is None:
            return
        for t in due:
            # Binance pays to 8 decimals: the wallet moves by what the income row says.
            paid = self._funding_payment(pos, mark).quantize(EIGHT_DP)
            pos.receive_funding(paid)
            settle = pos.spec.settle
            self.wallets[settle] += paid
            self.income.append(
                Income(self._tran_id(), symbol, "FUNDING_FEE", paid, settle, t // NS_PER_MS)
            )
            self._account_changed("FUNDING_FEE", symbol, settle, paid)
            self._balances_event()  # its own ACCOUNT_UPDATE, ahead of the event's fills

    def _funding_payment(self, pos: IsolatedPosition, mark: Decimal) -> Decimal:
        value = pos.spec.value(abs(pos.contracts), mark)
        return -value * self.funding_rate if pos.contracts > 0 else value * self.funding_rate

    def _after_match(self, symbol: str, book: VenueBook) -> None:
        pos = self.positions[symbol]
        mark = self.mark(symbol)
        liq = pos.liquidation_price()
        if mark is None or liq is None:
            return
        if (pos.contracts > 0 and mark <= liq) or (pos.contracts < 0 and mark >= liq):
            for order in self.open_orders(symbol):
                self._close(order, "EXPIRED")
            lost = pos.margin
            self.liquidations.append(
                Liquidated(self.now_ms(), symbol, pos.contracts, pos.entry, mark, lost)
            )
            settle = pos.spec.settle
            self.wallets[settle] -= lost
            pos.realised -= lost
            pos.contracts = ZERO
            pos.entry = ZERO
            pos.margin = ZERO
            self._account_changed("ORDER", symbol, settle, -lost)

    def _tran_id(self) -> int:
        self._next_tran_id += 1
        return self._next_tran_id

    # ----- events -----------------------------------------------------------------------
    def _account_changed(self, reason: str, symbol: str, asset: str, change: Decimal) -> None:
        self._account_reason = reason
        self._balance_change[asset] = self._balance_change.get(asset, ZERO) + change
        self._account_symbols[symbol] = None

    def position_row(self, symbol: str) -> PositionRow:
        pos = self.positions[symbol]
        return PositionRow(
            symbol=symbol,
            amount=pos.contracts,
            entry=pos.entry,
            unrealised=self.unrealised(symbol),
            isolated_wallet=pos.margin,
            realised=pos.realised,
        )

    def _balances_event(self) -> None:
        # Orders placed or cancelled do not move the futures wallet: Binance sends an
        # ACCOUNT_UPDATE only when a fill, funding or liquidation did.
        self._touched_assets.clear()
        if self._account_reason is None:
            return
        rows = tuple(
            (asset, self.wallets[asset], change) for asset, change in self._balance_change.items()
        )
        positions = tuple(self.position_row(s) for s in self._account_symbols)
        self._pending.append(AccountChanged(self._account_reason, rows, positions, self.now_ms()))
        self._account_reason = None
        self._balance_change.clear()
        self._account_symbols.clear()
