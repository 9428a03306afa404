"""Exact inventory accounting for one market, from its reserve and our fills.

:class:`Inventory` is a spot market's; :class:`PerpInventory` (further down) a perpetual
futures market's margin account (contracts, isolated margin, funding; see
:mod:`bot.positions` and docs/derivatives.md). :func:`inventory_for` picks one.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from bot.positions import (
    ContractSpec,
    IsolatedPosition,
    PerpLimits,
    PositionReading,
    funding_times,
    is_contract,
    maintenance_rate,
    order_margin,
)
from strategies.base import InventoryView, MarketRules

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
    orders: Iterable[RestingOrder],
    mid: float,
    band_bps: float,
    rules: MarketRules | None = None,
) -> tuple[float, float]:
    """(bid, ask) quote notional of ``orders`` within ``band_bps`` of ``mid``.

    Same band rule as :meth:`bot.book.OrderBook.depth_within`; pass it to the detector
    as ``own_quote`` so the backstop's quotes do not read as a recovery. ``rules``: a
    contract market's (amounts in contracts); spot otherwise.
    """
    lo, hi = mid * (1.0 - band_bps / 1e4), mid * (1.0 + band_bps / 1e4)
    bid = ask = 0.0
    unit = rules is None or rules.is_unit
    for o in orders:
        amount = max(0.0, o.remaining)
        n = amount * o.price if unit or rules is None else rules.notional(o.price, amount)
        if o.side == "buy" and lo <= o.price:
            bid += n
        elif o.side == "sell" and o.price <= hi:
            ask += n
    return bid, ask


class _FillLedger:
    """What both inventories do first with a fill: this market's, new, and sane."""

    symbol: str
    duplicates: int
    _seen: set[tuple[str, str]]

    def _admit(self, fill: OrderFilled) -> tuple[Decimal, Decimal] | None:
        """``(price, amount)`` of a fill to book; None for another market's or a repeat."""
        if fill.symbol != self.symbol:
            return None
        key = (fill.client_id, fill.trade_id)
        if key in self._seen:
            self.duplicates += 1
            return None
        if fill.side not in ("buy", "sell"):
            raise ValueError(f"fill side must be buy or sell, got {fill.side!r}")
        price, amount = dec(fill.price), dec(fill.amount)
        if not (price > 0 and amount > 0):
            raise ValueError(f"fill needs price > 0 and amount > 0, got {price} x {amount}")
        self._seen.add(key)
        return price, amount


@dataclass(slots=True)
class _Fixed:
    """An :class:`Inventory`'s figures as floats between two fills."""

    base: float
    quote: float
    start_base: float
    start_quote: float
    net_base: float
    avg_cost: float | None
    realised_pnl: float
    fees_quote: float
    flat: bool
    """No position (exactly: the Decimal difference is zero)."""


class Inventory(_FillLedger):
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
        self._fixed: _Fixed | None = None
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
        admitted = self._admit(fill)
        if admitted is None:
            return False
        self._fixed = None
        price, amount = admitted
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
        f = self._fixed  # the floats of the last fill, once converted (see _floats)
        return f.base if f is not None else float(self._base)

    @property
    def quote(self) -> float:
        f = self._fixed
        return f.quote if f is not None else float(self._quote)

    @property
    def base_exact(self) -> Decimal:
        return self._base

    @property
    def quote_exact(self) -> Decimal:
        return self._quote

    @property
    def net_base(self) -> float:
        # Read several times per book update (view, budget, trader): the float of the
        # last fill, once _floats() has converted it.
        f = self._fixed
        return f.net_base if f is not None else float(self._base - self.start_base)

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

    @property
    def net_units(self) -> float:
        """The net position in order units (base, for spot)."""
        return self.net_base

    def mark(self, ts_ns: int, mid: float, last_trade: float | None = None) -> None:
        """A new mid: nothing to do for spot (see :meth:`PerpInventory.mark`)."""
        return None

    def equity_quote(self, mid: float) -> float:
        """The market's holdings valued at ``mid``, in quote (the loss guards' equity)."""
        f = self._floats()
        return f.base * mid + f.quote

    def balances(self) -> dict[str, float]:
        """What the venue account should hold for this market, per currency."""
        return {self.base_currency: self.base, self.quote_currency: self.quote}

    def _floats(self) -> _Fixed:
        # Read on every book update, changed only by a fill (apply() drops it): the
        # Decimal -> float conversions are done once per fill instead.
        f = self._fixed
        if f is None:
            f = self._fixed = _Fixed(
                self.base,
                self.quote,
                float(self.start_base),
                float(self.start_quote),
                self.net_base,
                self.avg_cost,
                self.realised_pnl,
                self.fees_quote,
                not (self._base - self.start_base),
            )
        return f

    def view(self, mid: float | None, resting_orders: Iterable[RestingOrder] = ()) -> InventoryView:
        f = self._floats()
        # What unrealised_pnl() and committed_quote() compute, from the cached floats.
        unrealised = 0.0 if f.flat or mid is None else self.unrealised_pnl(mid)
        position = abs(f.net_base) * mid if mid is not None else 0.0
        return InventoryView(  # positional, in field order (keywords cost per call)
            f.base,
            f.quote,
            f.start_base,
            f.start_quote,
            f.net_base,
            f.avg_cost,
            f.realised_pnl,
            unrealised,
            f.fees_quote,
            resting_notional(resting_orders) + position,
            mid,
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


class PerpInventory(_FillLedger):
    """One perpetual futures market's account: margin wallet, isolated position, PnL.

    The reserve is margin, in the settle currency (USDT for a linear ``BTC/USDT:USDT``,
    BTC for an inverse ``BTC/USD:BTC``). Fills move the position with
    :class:`bot.positions.IsolatedPosition`; :meth:`mark` pays funding at each funding
    time from the configured rate (the venue does the same on the same mid) and reads
    the position for the risk engine. Amounts are contracts; readings in quote are valued
    at the mid (for inverse markets that includes the settle coin's price).

    Readings with the same names as :class:`Inventory`'s, for the trader and reports:
    ``net_base`` is the position's base-asset exposure at the last mark (what the
    strategy skews and flattens), ``committed_quote`` the collateral (initial margin of
    resting orders + maintenance margin of the position), PnL is ``realised`` (closed
    PnL + funding - fees) and ``unrealised`` at the mid, in quote. ``base`` and ``quote``
    are the account as spot-like holdings, so that ``base x mid + quote`` is its equity
    (wallet + unrealised PnL) in quote at any mid, exactly as for spot::

        linear   base = contracts x size                 quote = wallet - contracts x size x entry
        inverse  base = wallet + contracts x size / entry  quote = -contracts x size

    (an inverse account's margin is itself BTC; its value moves with the price). The
    venue's balance is ``balances()``: the wallet, in the settle currency.
    """

    def __init__(
        self,
        symbol: str,
        spec: ContractSpec,
        *,
        start_margin: float | Decimal,
        leverage: float,
        mmr: Decimal,
        funding_rate: float = 0.0,
        funding_interval_h: float = 8.0,
        limits: PerpLimits | None = None,
    ) -> None:
        self.symbol = symbol
        self.spec = spec
        self.base_currency = spec.base
        self.quote_currency = spec.quote
        self.start_base = ZERO
        self.start_quote = dec(start_margin)
        self.position = IsolatedPosition(spec, dec(float(leverage)), mmr)
        self.funding_rate = dec(float(funding_rate))
        self.funding_interval_h = funding_interval_h
        self.limits = limits if limits is not None else PerpLimits()
        self._wallet = self.start_quote
        self._seen: set[tuple[str, str]] = set()
        self.fees: dict[str, Decimal] = {}
        self._fees_quote = ZERO
        self.fills = 0
        self.buys = 0
        self.sells = 0
        self.duplicates = 0
        self._volume_contracts = ZERO
        self._volume_quote = ZERO
        self.funding_payments = 0
        self._funding_seen_ns: int | None = None
        self.venue_funding = False
        """True on an exchange account: funding comes from the venue's payments
        (:meth:`book_funding`), not from the bot's own funding times and marks."""
        self._funding_ids: set[str] = set()
        # (venue ms, share of the isolated margin a fill left): a funding payment booked
        # after later fills reaches the margin scaled as if booked at its time.
        self._margin_scales: list[tuple[int, Decimal]] = []
        self._mark: Decimal | None = None
        self.max_leverage_seen = 0.0
        self.min_liquidation_distance_bps: float | None = None

    @classmethod
    def from_market(cls, market: MarketSettings, ccxt_market: Mapping[str, Any]) -> PerpInventory:
        """The account for ``market``; its reserve must be in the settle currency."""
        spec = ContractSpec.from_market(ccxt_market)
        reserve = market.reserve
        if spec.settle == spec.quote:
            margin, other, other_name = reserve.quote, reserve.base, "base"
        elif spec.settle == spec.base:
            margin, other, other_name = reserve.base, reserve.quote, "quote"
        else:
            raise ValueError(f"{market.symbol}: settle {spec.settle} is neither base nor quote")
        if other:
            raise ValueError(
                f"{market.symbol}: the reserve of a perpetual is its margin in {spec.settle}; "
                f"set reserve.{other_name} to 0"
            )
        p = market.perp
        return cls(
            market.symbol,
            spec,
            start_margin=margin,
            leverage=p.leverage,
            mmr=maintenance_rate(ccxt_market, p.maintenance_margin_rate),
            funding_rate=p.funding_rate,
            funding_interval_h=p.funding_interval_h,
            limits=PerpLimits(
                max_leverage=p.max_leverage,
                min_liquidation_distance_bps=p.min_liquidation_distance_bps,
                max_funding_rate=p.max_funding_rate,
                mark_last_band_bps=p.mark_last_band_bps,
                max_position_contracts=p.max_position_contracts,
                max_position_notional_quote=p.max_position_notional_quote,
            ),
        )

    # ------------------------------------------------------------------ input

    def apply(self, fill: OrderFilled) -> bool:
        """Book one fill; False (and no change) if it is another market's or already seen."""
        admitted = self._admit(fill)
        if admitted is None:
            return False
        price, amount = admitted
        fee = ZERO
        if fill.fee_cost:
            cost = dec(fill.fee_cost)
            ccy = fill.fee_currency or self.spec.settle
            self.fees[ccy] = self.fees.get(ccy, ZERO) + cost
            if ccy == self.spec.settle:  # any other currency (BNB) is recorded only
                fee = cost
                self._fees_quote += self.spec.to_quote(cost, price)
        before = self.position.contracts
        self._wallet += self.position.fill(fill.side, amount, price, fee)
        self._note_margin_scale(fill, before, self.position.contracts)
        self.fills += 1
        if fill.side == "buy":
            self.buys += 1
        else:
            self.sells += 1
        self._volume_contracts += amount
        self._volume_quote += self.spec.notional_quote(amount, price)
        return True

    def mark(self, ts_ns: int, mid: float, last_trade: float | None = None) -> PositionReading:
        """A new mark (the mid): pay the funding times passed since the last one, then read
        the position for the risk engine."""
        mark = dec(mid)
        if self._funding_seen_ns is None:
            self._funding_seen_ns = ts_ns
        due = funding_times(self._funding_seen_ns, ts_ns, self.funding_interval_h * 3600)
        self._funding_seen_ns = max(self._funding_seen_ns, ts_ns)
        for _ in due if not self.venue_funding else ():
            if self.position.contracts:
                self._wallet += self.position.apply_funding(mark, self.funding_rate)
                self.funding_payments += 1
        self._mark = mark
        liq = self.position.liquidation_price()
        lev = self.position.effective_leverage(mark)
        reading = PositionReading(
            symbol=self.symbol,
            ts_ns=ts_ns,
            contracts=float(self.position.contracts),
            notional_quote=float(self.spec.notional_quote(abs(self.position.contracts), mark)),
            mark=mid,
            last=last_trade,
            liquidation_price=None if liq is None else float(liq),
            leverage=None if lev is None else float(lev),
            funding_rate=float(self.funding_rate),
            limits=self.limits,
        )
        if reading.leverage is not None:
            self.max_leverage_seen = max(self.max_leverage_seen, reading.leverage)
        distance = reading.liquidation_distance_bps
        if distance is not None and (
            self.min_liquidation_distance_bps is None
            or distance < self.min_liquidation_distance_bps
        ):
            self.min_liquidation_distance_bps = distance
        return reading

    def book_funding(self, payment_id: str, amount: Decimal, time_ms: int) -> bool:
        """Book the venue's funding payment ``payment_id`` (``amount`` received, < 0:
        paid, settle currency) made at ``time_ms``; False if already booked.

        The wallet takes it whole. The isolated margin takes it as the venue's did at
        ``time_ms``, then shrunk by every fill since that closed part of the position
        (nothing left if one closed or flipped it), so the order in which fills and
        payments reach the bot does not change the margin."""
        if payment_id in self._funding_ids:
            return False
        self._funding_ids.add(payment_id)
        scale = Decimal(1)
        for ts_ms, share in self._margin_scales:
            if ts_ms >= time_ms:
                scale *= share
        # Payments come in time order: fills before this one's time scale no later one.
        self._margin_scales = [(t, f) for t, f in self._margin_scales if t >= time_ms]
        self._wallet += amount
        self.position.funding += amount
        self.position.margin += amount * scale
        self.funding_payments += 1
        return True

    def _note_margin_scale(self, fill: OrderFilled, before: Decimal, after: Decimal) -> None:
        same_side = after != 0 and (after > 0) == (before > 0)
        if before == 0 or (same_side and abs(after) >= abs(before)):
            return  # opened or grew: the margin held before is untouched
        share = abs(after) / abs(before) if same_side else ZERO
        ts_ms = fill.venue_ts_ms if fill.venue_ts_ms is not None else fill.ts_ns // 1_000_000
        self._margin_scales.append((ts_ms, share))

    # ------------------------------------------------------------------ readings

    def _at(self, mid: float | None) -> Decimal | None:
        return dec(mid) if mid is not None else self._mark

    @property
    def wallet(self) -> Decimal:
        """Wallet balance (settle currency): start + closed PnL + funding - fees."""
        return self._wallet

    def _holdings(self) -> tuple[Decimal, Decimal]:
        pos = self.position
        size = pos.contracts * self.spec.contract_size
        if not pos.contracts:
            return (self._wallet, ZERO) if self.spec.inverse else (ZERO, self._wallet)
        if self.spec.inverse:
            return self._wallet + size / pos.entry, -size
        return size, self._wallet - size * pos.entry

    @property
    def base(self) -> float:
        return float(self._holdings()[0])

    @property
    def quote(self) -> float:
        return float(self._holdings()[1])

    @property
    def net_units(self) -> float:
        return float(self.position.contracts)

    @property
    def net_base(self) -> float:
        """Base-asset exposure of the position at the last mark (0 before one, if inverse)."""
        contracts = self.position.contracts
        if not contracts:
            return 0.0
        if self.spec.inverse and self._mark is None:
            return float(self.spec.base_amount(contracts, self.position.entry))
        return float(self.spec.base_amount(contracts, self._mark or self.position.entry))

    @property
    def avg_cost(self) -> float | None:
        return float(self.position.entry) if self.position.contracts else None

    def realised_settle(self) -> Decimal:
        """Closed PnL + funding - fees, settle currency."""
        return self.position.realised + self.position.funding - self.position.fees

    def unrealised_settle(self, mid: float | None) -> Decimal:
        mark = self._at(mid)
        return self.position.unrealised(mark) if mark is not None else ZERO

    def _quote(self, amount: Decimal, mid: float | None) -> float:
        mark = self._at(mid)
        if self.spec.inverse:
            return float(amount * mark) if mark is not None else 0.0
        return float(amount)

    @property
    def realised_pnl(self) -> float:
        return self._quote(self.realised_settle(), None)

    def unrealised_pnl(self, mid: float | None) -> float:
        return self._quote(self.unrealised_settle(mid), mid)

    def marked_pnl(self, mid: float | None) -> float:
        return self._quote(self.realised_settle() + self.unrealised_settle(mid), mid)

    @property
    def fees_quote(self) -> float:
        return float(self._fees_quote)

    @property
    def volume_base(self) -> float:
        """Contracts traded (the order unit)."""
        return float(self._volume_contracts)

    @property
    def volume_quote(self) -> float:
        return float(self._volume_quote)

    def order_margin(self, resting_orders: Iterable[RestingOrder]) -> Decimal:
        """Initial margin the resting orders tie up (settle currency)."""
        return order_margin(
            self.position,
            ((o.side, dec(o.price), dec(max(0.0, o.remaining))) for o in resting_orders),
        )

    def collateral(self, resting_orders: Iterable[RestingOrder], mid: float | None) -> Decimal:
        """Committed collateral, settle currency: orders' initial margin + the position's
        maintenance margin at ``mid``."""
        mark = self._at(mid)
        maintenance = self.position.maintenance(mark) if mark is not None else ZERO
        return self.order_margin(resting_orders) + maintenance

    def committed_quote(self, resting_orders: Iterable[RestingOrder], mid: float | None) -> float:
        return self._quote(self.collateral(resting_orders, mid), mid)

    def margin_free(self, resting_orders: Iterable[RestingOrder], floor_fraction: float) -> Decimal:
        """Wallet not held by the position or ``resting_orders`` and above the reserve floor."""
        floor = self.start_quote * dec(float(floor_fraction))
        return self._wallet - floor - self.position.margin - self.order_margin(resting_orders)

    def equity_quote(self, mid: float) -> float:
        """Wallet + unrealised PnL, valued in quote at ``mid`` (``base x mid + quote``)."""
        return self._quote(self._wallet + self.unrealised_settle(mid), mid)

    def balances(self) -> dict[str, float]:
        return {self.spec.settle: float(self._wallet)}

    def view(self, mid: float | None, resting_orders: Iterable[RestingOrder] = ()) -> InventoryView:
        start = float(self.start_quote)
        return InventoryView(
            base=self.base,
            quote=self.quote,
            start_base=start if self.spec.inverse else 0.0,
            start_quote=0.0 if self.spec.inverse else start,
            net_base=self.net_base,
            avg_cost=self.avg_cost,
            realised_pnl=self._quote(self.realised_settle(), mid),
            unrealised_pnl=self.unrealised_pnl(mid),
            fees_quote=self.fees_quote,
            committed_quote=self.committed_quote(resting_orders, mid),
            mid=mid,
        )

    def to_dict(self, mid: float | None = None) -> dict[str, Any]:
        """For status and the run summary: the spot keys, plus the position's."""
        pos = self.position
        mark = self._at(mid)
        liq = pos.liquidation_price()
        lev = pos.effective_leverage(mark) if mark is not None else None
        return {
            "symbol": self.symbol,
            "base_currency": self.base_currency,
            "quote_currency": self.quote_currency,
            "settle_currency": self.spec.settle,
            "linear": not self.spec.inverse,
            "contract_size": float(self.spec.contract_size),
            "start_base": float(self.start_quote) if self.spec.inverse else 0.0,
            "start_quote": 0.0 if self.spec.inverse else float(self.start_quote),
            "start_margin": float(self.start_quote),
            "base": self.base,
            "quote": self.quote,
            "net_base": self.net_base,
            "avg_cost": self.avg_cost,
            "realised_pnl": self._quote(self.realised_settle(), mid),
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
            "position": {
                "contracts": float(pos.contracts),
                "side": "long" if pos.contracts > 0 else "short" if pos.contracts < 0 else "flat",
                "entry_price": float(pos.entry) if pos.contracts else None,
                "leverage_setting": float(pos.leverage),
                "effective_leverage": None if lev is None else float(lev),
                "isolated_margin": float(pos.margin),
                "maintenance_margin": float(pos.maintenance(mark)) if mark is not None else 0.0,
                "liquidation_price": None if liq is None else float(liq),
                "realised": float(pos.realised),
                "funding": float(pos.funding),
                "fees": float(pos.fees),
                "unrealised": float(self.unrealised_settle(mid)),
                "wallet": float(self._wallet),
                "settle_pnl": float(self.realised_settle() + self.unrealised_settle(mid)),
            },
            "funding_payments": self.funding_payments,
            "max_effective_leverage": self.max_leverage_seen,
            "min_liquidation_distance_bps": self.min_liquidation_distance_bps,
        }


AnyInventory = Inventory | PerpInventory
"""What a desk accounts with: spot balances, or a perpetual's margin account."""


def inventory_for(market: MarketSettings, ccxt_market: Mapping[str, Any] | None) -> AnyInventory:
    """The accounting for ``market``: a :class:`PerpInventory` on a contract market."""
    if ccxt_market is not None and is_contract(ccxt_market):
        return PerpInventory.from_market(market, ccxt_market)
    return Inventory.from_market(market)
