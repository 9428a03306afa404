"""Perpetual futures arithmetic: contract value, one isolated position, funding, liquidation.

Pure and exact (``Decimal``). The paper venue (the exchange's books) and the bot's own
accounting (:class:`bot.inventory.PerpInventory`) each keep their own state with it, so
on the same fills they agree to the last digit, and a disagreement means a real bug.

What a contract is comes from ccxt's unified market structure:

- **linear** (``BTC/USDT:USDT``): one contract is ``contractSize`` base; value, PnL and
  margin are in the quote, which is the settle currency::

      value = contracts x contractSize x price
      pnl   = contracts x contractSize x (exit - entry)          (signed contracts)

- **inverse** (``BTC/USD:BTC``): one contract is ``contractSize`` quote (100 USD);
  value, PnL and margin are in the base, which is the settle currency::

      value = contracts x contractSize / price
      pnl   = contracts x contractSize x (1 / entry - 1 / exit)

  so an inverse position's entry price averages harmonically (the contracts-weighted
  mean of ``1 / price``).

Margin is **isolated** (Binance's rules, simplified to one maintenance tier):

- opening ``q`` contracts at ``p`` moves ``value(q, p) / leverage`` from the wallet
  into the position's margin; closing part of it releases the same share of the margin
  and books the PnL to the wallet; fees come out of the wallet;
- funding at each funding time: the position receives ``-signed value(mark) x rate``
  (longs pay shorts when the rate is positive), and in isolated mode it is taken from
  (or added to) the position's margin;
- maintenance margin ``= value(|q|, mark) x mmr``; the position is liquidated when
  ``margin + unrealised PnL`` falls to it. Solved for the mark, with
  ``N = |q| x contractSize`` and ``M`` the margin::

      linear long    P = (N x entry - M) / (N x (1 - mmr))
      linear short   P = (M + N x entry) / (N x (1 + mmr))
      inverse long   P = N x (1 + mmr) / (M + N / entry)
      inverse short  P = N x (1 - mmr) / (N / entry - M)     (none when M >= N / entry)

Binance's tiers (its ``cum`` maintenance amount) and its liquidation fee are not
modelled; at the sizes a reserve allows, BTC perps stay in the first tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from bot.clock import NS_PER_SECOND

ZERO: Final = Decimal(0)
ONE: Final = Decimal(1)
INFINITY: Final = Decimal("Infinity")
BPS: Final = Decimal(10_000)
DEFAULT_MMR: Final = Decimal("0.005")
"""Maintenance margin rate when neither the settings nor the market say (Binance's
lowest tier for most perps)."""


def dec(x: float | int | str | Decimal) -> Decimal:
    """A float as the decimal it was parsed from (its shortest round-trip form)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)


def is_contract(market: Mapping[str, Any] | None) -> bool:
    """True for ccxt contract markets (swaps, futures): sizes in contracts, margin trading."""
    return bool(market and market.get("contract"))


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """What one contract of a ccxt contract market is worth, and in which currency."""

    symbol: str
    base: str
    quote: str
    settle: str
    contract_size: Decimal
    inverse: bool

    @classmethod
    def from_market(cls, market: Mapping[str, Any]) -> ContractSpec:
        if not is_contract(market):
            raise ValueError(f"{market.get('symbol')} is not a contract market")
        size = market.get("contractSize")
        if size is None or not float(size) > 0:
            raise ValueError(f"{market.get('symbol')} has no contractSize")
        inverse = bool(market.get("inverse"))
        base, quote = str(market["base"]), str(market["quote"])
        settle = str(market.get("settle") or (base if inverse else quote))
        return cls(str(market["symbol"]), base, quote, settle, dec(float(size)), inverse)

    def value(self, contracts: Decimal, price: Decimal) -> Decimal:
        """Settle-currency value of ``contracts`` (>= 0) at ``price``."""
        if self.inverse:
            return contracts * self.contract_size / price
        return contracts * self.contract_size * price

    def notional_quote(self, contracts: Decimal, price: Decimal) -> Decimal:
        """Quote-currency notional of ``contracts`` (>= 0) at ``price``."""
        if self.inverse:
            return contracts * self.contract_size
        return contracts * self.contract_size * price

    def to_quote(self, settle_amount: Decimal, price: Decimal) -> Decimal:
        """A settle-currency amount valued in quote at ``price``."""
        return settle_amount * price if self.inverse else settle_amount

    def base_amount(self, contracts: Decimal, price: Decimal) -> Decimal:
        """Base-asset exposure of ``contracts`` (signed or not) at ``price``."""
        if self.inverse:
            return contracts * self.contract_size / price
        return contracts * self.contract_size

    def pnl(self, contracts: Decimal, entry: Decimal, exit: Decimal) -> Decimal:
        """Settle-currency PnL of ``contracts`` (signed: long > 0) from ``entry`` to ``exit``."""
        if self.inverse:
            return contracts * self.contract_size * (ONE / entry - ONE / exit)
        return contracts * self.contract_size * (exit - entry)

    def average_entry(
        self, held: Decimal, entry: Decimal, added: Decimal, price: Decimal
    ) -> Decimal:
        """Entry price after adding ``added`` contracts at ``price`` to ``held`` at ``entry``."""
        if held == 0:
            return price
        if self.inverse:  # harmonic: what keeps pnl() exact for the whole position
            return (held + added) / (held / entry + added / price)
        return (held * entry + added * price) / (held + added)


def maintenance_rate(market: Mapping[str, Any], override: float | None = None) -> Decimal:
    """The maintenance margin rate: ``override``, else the market's (Binance
    ``maintMarginPercent``), else :data:`DEFAULT_MMR`."""
    if override is not None:
        return dec(float(override))
    info = market.get("info")
    raw = info.get("maintMarginPercent") if isinstance(info, Mapping) else None
    if raw is not None and Decimal(str(raw)) > 0:
        return Decimal(str(raw)) / 100
    return DEFAULT_MMR


def funding_times(after_ns: int, upto_ns: int, interval_s: float) -> list[int]:
    """Funding timestamps ``t`` with ``after_ns < t <= upto_ns``: multiples of the interval
    since the epoch (every 8 h: 00:00, 08:00, 16:00 UTC, as Binance)."""
    interval = round(interval_s * NS_PER_SECOND)
    if interval <= 0 or upto_ns <= after_ns:
        return []
    first = (after_ns // interval + 1) * interval
    return list(range(first, upto_ns + 1, interval))


@dataclass(frozen=True, slots=True)
class PerpLimits:
    """A perpetual market's risk limits (``[markets.perp]``), as the risk engine reads them."""

    max_leverage: float = float("inf")
    min_liquidation_distance_bps: float = 0.0
    max_funding_rate: float = float("inf")
    mark_last_band_bps: float = float("inf")
    max_position_contracts: float | None = None
    max_position_notional_quote: float | None = None


@dataclass(frozen=True, slots=True)
class PositionReading:
    """One perpetual position at one mark, for the risk engine's guards."""

    symbol: str
    ts_ns: int
    contracts: float
    """Signed: long > 0."""
    notional_quote: float
    """``|position|`` notional at the mark, in quote."""
    mark: float
    last: float | None
    """The last public trade price (None before the first)."""
    liquidation_price: float | None
    leverage: float | None
    """Effective: value at mark / (margin + unrealised PnL); None when flat."""
    funding_rate: float
    limits: PerpLimits

    @property
    def liquidation_distance_bps(self) -> float | None:
        if self.liquidation_price is None or self.contracts == 0 or not self.mark > 0:
            return None
        return abs(self.mark - self.liquidation_price) / self.mark * 1e4

    @property
    def mark_last_bps(self) -> float | None:
        if self.last is None or not self.mark > 0:
            return None
        return abs(self.mark - self.last) / self.mark * 1e4


@dataclass(slots=True)
class IsolatedPosition:
    """One market's position in isolated margin (one-way mode: one net position)."""

    spec: ContractSpec
    leverage: Decimal
    mmr: Decimal
    contracts: Decimal = ZERO
    """Signed: long > 0, short < 0."""
    entry: Decimal = ZERO
    """Average entry price (harmonic for inverse); 0 when flat."""
    margin: Decimal = ZERO
    """Isolated margin, settle currency (part of the wallet balance)."""
    realised: Decimal = ZERO
    """PnL booked by closing, settle currency (fees and funding not included)."""
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    """Funding received (negative: paid), settle currency."""

    def initial_margin(self, contracts: Decimal, price: Decimal) -> Decimal:
        return self.spec.value(contracts, price) / self.leverage

    def fill(self, side: str, amount: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        """Book one fill of ``amount`` contracts at ``price``; returns the wallet's change
        (PnL realised by what it closed, less ``fee``, in settle currency)."""
        if amount <= 0 or price <= 0:
            raise ValueError(f"a fill needs amount > 0 and price > 0, got {amount} @ {price}")
        signed = amount if side == "buy" else -amount
        pos = self.contracts
        realised = ZERO
        opening = amount
        if pos != 0 and (pos > 0) != (signed > 0):
            closed = min(amount, abs(pos))
            direction = ONE if pos > 0 else -ONE
            realised = self.spec.pnl(direction * closed, self.entry, price)
            self.margin -= self.margin * closed / abs(pos)
            self.contracts = pos - direction * closed
            opening = amount - closed
            if self.contracts == 0:
                self.entry = ZERO
                self.margin = ZERO  # nothing left to hold margin (no dust either)
        if opening > 0:
            held = abs(self.contracts)
            self.entry = self.spec.average_entry(held, self.entry, opening, price)
            self.margin += self.initial_margin(opening, price)
            self.contracts += opening if signed > 0 else -opening
        self.realised += realised
        self.fees += fee
        return realised - fee

    def apply_funding(self, mark: Decimal, rate: Decimal) -> Decimal:
        """One funding payment at ``mark``: returns what the position received (< 0: paid).

        Isolated margin absorbs it, so funding moves the liquidation price."""
        if self.contracts == 0:
            return ZERO
        value = self.spec.value(abs(self.contracts), mark)
        payment = -value * rate if self.contracts > 0 else value * rate
        self.receive_funding(payment)
        return payment

    def receive_funding(self, payment: Decimal) -> None:
        """Book one funding ``payment`` the venue computed (< 0: paid), as
        :meth:`apply_funding` books its own: into the isolated margin."""
        self.margin += payment
        self.funding += payment

    def unrealised(self, mark: Decimal) -> Decimal:
        if self.contracts == 0:
            return ZERO
        return self.spec.pnl(self.contracts, self.entry, mark)

    def maintenance(self, mark: Decimal) -> Decimal:
        return self.spec.value(abs(self.contracts), mark) * self.mmr

    def liquidation_price(self) -> Decimal | None:
        """The mark at which ``margin + unrealised == maintenance``; None when flat or
        when no positive price liquidates (margin covers the whole loss)."""
        q = self.contracts
        if q == 0:
            return None
        n = abs(q) * self.spec.contract_size
        m, e, mmr = self.margin, self.entry, self.mmr
        if self.spec.inverse:
            if q > 0:
                denominator = m + n / e
                price = n * (ONE + mmr) / denominator if denominator > 0 else None
            else:
                denominator = n / e - m
                price = n * (ONE - mmr) / denominator if denominator > 0 else None
        elif q > 0:
            price = (n * e - m) / (n * (ONE - mmr))
        else:
            price = (m + n * e) / (n * (ONE + mmr))
        return price if price is not None and price > 0 else None

    def effective_leverage(self, mark: Decimal) -> Decimal | None:
        """Value at ``mark`` over the position's equity (margin + unrealised PnL)."""
        if self.contracts == 0:
            return None
        equity = self.margin + self.unrealised(mark)
        if equity <= 0:
            return INFINITY
        return self.spec.value(abs(self.contracts), mark) / equity


def order_margin(
    position: IsolatedPosition, orders: Iterable[tuple[str, Decimal, Decimal]]
) -> Decimal:
    """Initial margin that open ``orders`` (``(side, price, remaining contracts)``) tie up.

    Orders on the side that closes the position need none for the part that would only
    close it (the closest-priced orders get that part first); the rest of each side, and
    the whole of the other side, needs ``value(amount, order price) / leverage``. Both
    sides are summed (Binance nets them more cleverly; summing never under-reserves).
    """
    closable = {"buy": max(ZERO, -position.contracts), "sell": max(ZERO, position.contracts)}
    by_side: dict[str, list[tuple[Decimal, Decimal]]] = {"buy": [], "sell": []}
    for side, price, remaining in orders:
        if remaining > 0 and side in by_side:
            by_side[side].append((price, remaining))
    total = ZERO
    for side, rows in by_side.items():
        rows.sort(key=lambda r: -r[0] if side == "buy" else r[0])  # closest to the touch first
        left = closable[side]
        for price, remaining in rows:
            free = min(left, remaining)
            left -= free
            total += position.initial_margin(remaining - free, price)
    return total
