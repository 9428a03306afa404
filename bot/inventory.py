"""Exact inventory accounting for one spot market, from its reserve and our fills.

The balances start at the market's reserve (``[markets.reserve]``) and move with every
fill the order manager reports (:class:`~bot.orders.events.OrderFilled`, deduplicated by
``(client_id, trade_id)``)::

    buy  q at p:  base += q,  quote -= p x q
    sell q at p:  base -= q,  quote += p x q
    fee f in base: base -= f;  fee f in quote: quote -= f;  any other currency: recorded only

Arithmetic is in :class:`decimal.Decimal` on the shortest decimal form of each float
(``repr``), which is the venue's decimal string for any value ccxt parsed from one, so
balances add up exactly.

PnL, in quote, is measured against simply holding the reserve:

- the *net position* is ``base - start_base``;
- each fill moves it by its base change (fees in base included) for its quote change
  (fees in quote included), at an *effective price* = quote change / base change, so fees
  are part of the cost basis of what is bought and reduce the proceeds of what is sold;
- a fill that grows the position (or opens one) adds to its cost basis; one that
  shrinks it realises ``(effective - average) x closed`` (long) or
  ``(average - effective) x closed`` (short), average cost, and a remainder past flat
  opens the other way at the effective price;
- ``unrealised = (mid - average) x net_position``.

So ``realised + unrealised == net_position x mid + (quote - start_quote)``, the change
in value at ``mid`` versus the untouched reserve, exactly. ``fees_quote`` reports what
fees cost (base fees valued at the fill price); they are already inside the PnL.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from strategies.base import InventoryView

if TYPE_CHECKING:
    from bot.orders.events import OrderFilled
    from bot.settings.models import MarketSettings

ZERO = Decimal(0)


def dec(x: float | int | str | Decimal) -> Decimal:
    """A float as the decimal it was parsed from (its shortest round-trip form)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)


def currencies(symbol: str) -> tuple[str, str]:
    """(base, quote) of a ccxt unified symbol: ``BTC/USDT`` -> ``("BTC", "USDT")``."""
    base, _, rest = symbol.partition("/")
    quote = rest.split(":", 1)[0]
    return base, quote


class RestingOrder(Protocol):
    """What the notional of a resting order is computed from (TrackedOrder has these)."""

    @property
    def side(self) -> str: ...

    @property
    def price(self) -> float: ...

    @property
    def remaining(self) -> float: ...


def resting_notional(orders: Iterable[RestingOrder]) -> float:
    """Quote notional of ``orders``: ``remaining x price`` summed."""
    return sum(max(0.0, o.remaining) * o.price for o in orders)


def own_band_depth(
    orders: Iterable[RestingOrder], mid: float, band_bps: float
) -> tuple[float, float]:
    """(bid, ask) quote notional of ``orders`` within ``band_bps`` of ``mid``.

    Same band rule as :meth:`bot.book.OrderBook.depth_within`; pass it to the detector
    as ``own_quote`` so the backstop's quotes do not read as a recovery.
    """
    lo, hi = mid * (1.0 - band_bps / 1e4), mid * (1.0 + band_bps / 1e4)
    bid = ask = 0.0
    for o in orders:
        n = max(0.0, o.remaining) * o.price
        if o.side == "buy" and lo <= o.price:
            bid += n
        elif o.side == "sell" and o.price <= hi:
            ask += n
    return bid, ask


class Inventory:
    """One spot market's balances, position, PnL, fees and volume. Not thread-safe."""

    def __init__(
        self,
        symbol: str,
        start_base: float | Decimal = 0.0,
        start_quote: float | Decimal = 0.0,
    ) -> None:
        self.symbol = symbol
        self.base_currency, self.quote_currency = currencies(symbol)
        self.start_base = dec(start_base)
        self.start_quote = dec(start_quote)
        self._base = self.start_base
        self._quote = self.start_quote
        self._basis = ZERO  # |position| x average cost
        self._realised = ZERO
        self._seen: set[tuple[str, str]] = set()
        self.fees: dict[str, Decimal] = {}
        """Fees paid, per currency."""
        self._fees_quote = ZERO
        self.fills = 0
        self.buys = 0
        self.sells = 0
        self._volume_base = ZERO
        self._volume_quote = ZERO
        self.duplicates = 0

    @classmethod
    def from_market(cls, market: MarketSettings) -> Inventory:
        return cls(market.symbol, market.reserve.base, market.reserve.quote)

    # ------------------------------------------------------------------ input

    def apply(self, fill: OrderFilled) -> bool:
        """Book one fill; False (and no change) if it is another market's or already seen."""
        if fill.symbol != self.symbol:
            return False
        key = (fill.client_id, fill.trade_id)
        if key in self._seen:
            self.duplicates += 1
            return False
        if fill.side not in ("buy", "sell"):
            raise ValueError(f"fill side must be buy or sell, got {fill.side!r}")
        price, amount = dec(fill.price), dec(fill.amount)
        if not (price > 0 and amount > 0):
            raise ValueError(f"fill needs price > 0 and amount > 0, got {price} x {amount}")
        self._seen.add(key)
        cost = price * amount
        d_base, d_quote = (amount, -cost) if fill.side == "buy" else (-amount, cost)
        if fill.fee_cost:
            fee = dec(fill.fee_cost)
            ccy = fill.fee_currency or self.quote_currency
            self.fees[ccy] = self.fees.get(ccy, ZERO) + fee
            if ccy == self.base_currency:
                d_base -= fee
                self._fees_quote += fee * price
            elif ccy == self.quote_currency:
                d_quote -= fee
                self._fees_quote += fee
        self._book(d_base, d_quote)
        self._base += d_base
        self._quote += d_quote
        self.fills += 1
        if fill.side == "buy":
            self.buys += 1
        else:
            self.sells += 1
        self._volume_base += amount
        self._volume_quote += cost
        return True

    def _book(self, d_pos: Decimal, d_quote: Decimal) -> None:
        """Average-cost bookkeeping of one change of position for a change of quote."""
        if d_pos == 0:
            self._realised += d_quote  # a fee-only change: straight to PnL
            return
        pos = self._base - self.start_base
        effective = -d_quote / d_pos
        size = abs(d_pos)
        if pos == 0 or (pos > 0) == (d_pos > 0):
            self._basis += size * effective
            return
        closed = min(size, abs(pos))
        average = self._basis / abs(pos)
        if pos > 0:
            self._realised += (effective - average) * closed
        else:
            self._realised += (average - effective) * closed
        if closed == abs(pos):
            self._basis = (size - closed) * effective  # flat, or reopened the other way
        else:
            self._basis -= average * closed

    # ------------------------------------------------------------------ readings

    @property
    def base(self) -> float:
        return float(self._base)

    @property
    def quote(self) -> float:
        return float(self._quote)

    @property
    def base_exact(self) -> Decimal:
        return self._base

    @property
    def quote_exact(self) -> Decimal:
        return self._quote

    @property
    def net_base(self) -> float:
        return float(self._base - self.start_base)

    @property
    def avg_cost(self) -> float | None:
        pos = self._base - self.start_base
        return float(self._basis / abs(pos)) if pos else None

    @property
    def realised_pnl(self) -> float:
        return float(self._realised)

    @property
    def fees_quote(self) -> float:
        return float(self._fees_quote)

    @property
    def volume_base(self) -> float:
        return float(self._volume_base)

    @property
    def volume_quote(self) -> float:
        return float(self._volume_quote)

    def _unrealised(self, mid: float | None) -> Decimal:
        pos = self._base - self.start_base
        if not pos or mid is None:
            return ZERO
        # (mid - average) x pos, with average x |pos| = basis
        return dec(mid) * pos - (self._basis if pos > 0 else -self._basis)

    def unrealised_pnl(self, mid: float | None) -> float:
        return float(self._unrealised(mid))

    def marked_pnl(self, mid: float | None) -> float:
        """Realised plus unrealised at ``mid`` (realised alone without a mid)."""
        return float(self._realised + self._unrealised(mid))

    def committed_quote(self, resting_orders: Iterable[RestingOrder], mid: float | None) -> float:
        """Resting orders' notional (``remaining x price``) + ``|net position| x mid``."""
        position = abs(self.net_base) * mid if mid is not None else 0.0
        return resting_notional(resting_orders) + position

    def view(self, mid: float | None, resting_orders: Iterable[RestingOrder] = ()) -> InventoryView:
        return InventoryView(
            base=self.base,
            quote=self.quote,
            start_base=float(self.start_base),
            start_quote=float(self.start_quote),
            net_base=self.net_base,
            avg_cost=self.avg_cost,
            realised_pnl=self.realised_pnl,
            unrealised_pnl=self.unrealised_pnl(mid),
            fees_quote=self.fees_quote,
            committed_quote=self.committed_quote(resting_orders, mid),
            mid=mid,
        )

    def to_dict(self, mid: float | None = None) -> dict[str, Any]:
        """For status and the run summary."""
        return {
            "symbol": self.symbol,
            "base_currency": self.base_currency,
            "quote_currency": self.quote_currency,
            "start_base": float(self.start_base),
            "start_quote": float(self.start_quote),
            "base": self.base,
            "quote": self.quote,
            "net_base": self.net_base,
            "avg_cost": self.avg_cost,
            "realised_pnl": self.realised_pnl,
            "unrealised_pnl": self.unrealised_pnl(mid),
            "marked_pnl": self.marked_pnl(mid),
            "mid": mid,
            "fees": {ccy: float(v) for ccy, v in sorted(self.fees.items())},
            "fees_quote": self.fees_quote,
            "fills": self.fills,
            "buys": self.buys,
            "sells": self.sells,
            "volume_base": self.volume_base,
            "volume_quote": self.volume_quote,
        }
