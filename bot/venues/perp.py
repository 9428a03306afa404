"""The paper venue for perpetual futures: positions, isolated margin, funding, liquidation.

:class:`PerpPaperVenue` is the spot :class:`~bot.venues.paper.PaperVenue` (same requests,
latency, matching engine -- the same :class:`~bot.venues.matching.Matcher` fills both --
same ccxt structures) with the account of a derivatives exchange for contract markets
(ccxt ``contract``: linear or inverse swaps). Spot markets on the same venue keep the
spot account exactly.

- **Sizes** are contracts; a fill's value is ``contracts x contractSize x price``
  (linear, in quote) or ``contracts x contractSize / price`` (inverse, in base); fees are
  that value x the maker/taker rate, charged in the settle currency.
- **Margin** is isolated, per :mod:`bot.positions`: an order needs the initial margin
  (``value / leverage``) of the part that would open or grow the position, plus its
  fee at the higher rate, from the free margin (wallet - positions' margin - other
  orders' margin); ``InsufficientFunds`` otherwise. The part of an order that only
  closes the position needs none.
- **Reduce-only** orders (``params={"reduceOnly": True}``) are refused when they would
  open or grow the position (Binance ``-2022 ReduceOnly Order is rejected.``) and are
  expired when a fill leaves them larger than what they can close.
- **Funding** at every funding time (multiples of ``funding_interval_h`` since 00:00
  UTC), from the configured rate (the recordings carry no funding stream), on the mark
  of the first book update at or after it, before that update is matched.
- **Mark price** = the book's mid (the recordings carry no mark price stream).
- **Liquidation**: when the mark reaches the position's liquidation price, the position's
  open orders are cancelled and the position is closed, losing its whole isolated margin
  (the exchange's liquidation engine and insurance fund). Recorded in
  :attr:`PerpPaperVenue.liquidations`; it is not a trade of ours, so no order update is
  pushed for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import ccxt

from bot.book import OrderBook
from bot.clock import NS_PER_MS, Clock
from bot.monitor import DepthSample
from bot.positions import (
    ContractSpec,
    IsolatedPosition,
    dec,
    funding_times,
    is_contract,
    maintenance_rate,
    order_margin,
)
from bot.venues.base import MarketDict, Venue
from bot.venues.matching import ZERO, Matcher
from bot.venues.paper import PaperVenue, _CreateRequest, _Order, _s
from bot.venues.rules import to_decimal

if TYPE_CHECKING:
    from bot.settings.models import PerpSettings

__all__ = ["Liquidation", "PerpPaperVenue", "PerpTerms"]

_MSG_REDUCE_ONLY = '{"code":-2022,"msg":"ReduceOnly Order is rejected."}'
_MSG_LEVERAGE = '{"code":-4028,"msg":"Leverage is not valid"}'


@dataclass(frozen=True, slots=True)
class PerpTerms:
    """How the venue margins one contract market."""

    leverage: float = 5.0
    max_leverage: float = 10.0
    """``set_leverage`` above this is refused (the configured cap)."""
    maintenance_margin_rate: float | None = None
    """None: the market's own (Binance ``maintMarginPercent``)."""
    funding_rate: float = 0.0
    funding_interval_h: float = 8.0

    @classmethod
    def from_settings(cls, perp: PerpSettings) -> PerpTerms:
        return cls(
            leverage=perp.leverage,
            max_leverage=perp.max_leverage,
            maintenance_margin_rate=perp.maintenance_margin_rate,
            funding_rate=perp.funding_rate,
            funding_interval_h=perp.funding_interval_h,
        )


@dataclass(frozen=True, slots=True)
class Liquidation:
    ts_ms: int
    symbol: str
    contracts: Decimal
    """Signed, as the position was."""
    entry_price: Decimal
    mark_price: Decimal
    liquidation_price: Decimal
    margin_lost: Decimal


@dataclass(frozen=True, slots=True)
class FundingPayment:
    ts_ms: int
    """The funding time."""
    symbol: str
    rate: Decimal
    mark_price: Decimal
    contracts: Decimal
    amount: Decimal
    """Received (negative: paid), settle currency."""
    currency: str


_CONTRACT_HAS: Final = {
    "swap": True,
    "margin": False,
    "createReduceOnlyOrder": True,
    "fetchPositions": True,
    "fetchPosition": True,
    "setLeverage": True,
    "fetchFundingRate": True,
    "fetchFundingHistory": True,
}


class PerpPaperVenue(PaperVenue):
    """A simulated derivatives account on real market data (contract and spot markets).

    ``terms``: per contract symbol, its leverage, cap, maintenance rate and funding
    (default :class:`PerpTerms`). Everything else as :class:`PaperVenue`.
    """

    def __init__(
        self,
        *,
        markets: Mapping[str, MarketDict],
        balances: Mapping[str, float | str | Decimal],
        clock: Clock,
        latency_ms: float = 0.0,
        fees: Mapping[str, Mapping[str, float]] | None = None,
        exchange_id: str = "binanceusdm",
        terms: Mapping[str, PerpTerms] | None = None,
    ) -> None:
        super().__init__(
            markets=markets,
            balances=balances,
            clock=clock,
            latency_ms=latency_ms,
            fees=fees,
            exchange_id=exchange_id,
        )
        terms = dict(terms or {})
        for symbol in terms:
            if not is_contract(self.markets.get(symbol)):
                raise ValueError(f"perpetual terms for {symbol!r}, which is not a contract market")
        self._specs: dict[str, ContractSpec] = {}
        self._terms: dict[str, PerpTerms] = {}
        self._positions: dict[str, IsolatedPosition] = {}
        for symbol, market in self.markets.items():
            if not is_contract(market):
                continue
            t = terms.get(symbol, PerpTerms())
            if t.leverage > t.max_leverage:
                raise ValueError(f"{symbol}: leverage {t.leverage} above its cap {t.max_leverage}")
            spec = ContractSpec.from_market(market)
            self._specs[symbol] = spec
            self._terms[symbol] = t
            self._positions[symbol] = IsolatedPosition(
                spec,
                dec(float(t.leverage)),
                maintenance_rate(market, t.maintenance_margin_rate),
            )
            self._total.setdefault(spec.settle, ZERO)
            self._used.setdefault(spec.settle, ZERO)
        self.has.update(_CONTRACT_HAS)
        self.has["spot"] = any(m.get("spot") for m in self.markets.values())
        self._funding_seen: dict[str, int] = {}
        self._marks: dict[str, Decimal] = {}
        self.liquidations: list[Liquidation] = []
        self.funding_history: list[FundingPayment] = []

    # ================================================================ ccxt: derivatives

    def position(self, symbol: str) -> IsolatedPosition:
        """The venue's own record of a contract market's position (read it, don't edit)."""
        if symbol not in self._positions:
            raise ccxt.BadSymbol(f"{self.id} {symbol} is not a contract market")
        return self._positions[symbol]

    async def fetch_positions(
        self, symbols: list[str] | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Open positions (ccxt position structures), isolated margin, one-way mode."""
        wanted = list(self._positions) if symbols is None else list(symbols)
        out = []
        for symbol in wanted:
            self.market(symbol)
            pos = self._positions.get(symbol)
            if pos is not None and pos.contracts != 0:
                out.append(self._render_position(symbol, pos))
        return out

    async def fetch_position(
        self, symbol: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        found = await self.fetch_positions([symbol])
        return found[0] if found else None

    async def set_leverage(
        self, leverage: float, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Set a market's leverage; refused above its cap or while a position is open."""
        symbol = self._require_symbol(symbol, "setLeverage")
        pos = self.position(symbol)
        terms = self._terms[symbol]
        value = float(leverage)
        market_max = ((self.market(symbol).get("limits") or {}).get("leverage") or {}).get("max")
        cap = min(terms.max_leverage, float(market_max)) if market_max else terms.max_leverage
        if not 1 <= value <= cap:
            raise ccxt.BadRequest(f"{self.id} {_MSG_LEVERAGE} ({value:g}, cap {cap:g})")
        if pos.contracts != 0:
            raise ccxt.BadRequest(f"{self.id} leverage cannot change while {symbol} has a position")
        pos.leverage = dec(value)
        return {"symbol": self.market(symbol)["id"], "leverage": value}

    async def fetch_funding_rate(
        self, symbol: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The configured funding rate, the mark (mid) and the next funding time."""
        spec = self._spec(symbol)
        terms = self._terms[symbol]
        now_ns = self._clock.now_ns()
        interval_s = terms.funding_interval_h * 3600
        following = funding_times(now_ns, now_ns + round(interval_s * 1e9), interval_s)
        next_ms = following[0] // NS_PER_MS if following else None
        mark = self._marks.get(symbol)
        ts_ms = self._now_ms()
        return {
            "info": {"paper": True},
            "symbol": spec.symbol,
            "markPrice": None if mark is None else float(mark),
            "indexPrice": None,
            "interestRate": None,
            "estimatedSettlePrice": None,
            "timestamp": ts_ms,
            "datetime": self._ex.iso8601(ts_ms),
            "fundingRate": terms.funding_rate,
            "fundingTimestamp": next_ms,
            "fundingDatetime": None if next_ms is None else self._ex.iso8601(next_ms),
            "nextFundingRate": None,
            "nextFundingTimestamp": None,
            "nextFundingDatetime": None,
            "previousFundingRate": None,
            "previousFundingTimestamp": None,
            "previousFundingDatetime": None,
            "interval": f"{terms.funding_interval_h:g}h",
        }

    async def fetch_funding_history(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        rows = [
            {
                "info": {"paper": True},
                "symbol": f.symbol,
                "code": f.currency,
                "timestamp": f.ts_ms,
                "datetime": self._ex.iso8601(f.ts_ms),
                "id": f"{f.symbol}@{f.ts_ms}",
                "amount": float(f.amount),
            }
            for f in self.funding_history
            if symbol is None or f.symbol == symbol
        ]
        result: list[dict[str, Any]] = self._ex.filter_by_symbol_since_limit(
            rows, symbol, since, limit, since is None
        )
        return result

    # ================================================================ hooks

    def _spec(self, symbol: str) -> ContractSpec:
        spec = self._specs.get(symbol)
        if spec is None:
            self.market(symbol)  # BadSymbol for an unknown one
            raise ccxt.BadSymbol(f"{self.id} {symbol} is not a contract market")
        return spec

    def _check_market(self, symbol: str, market: MarketDict, params: dict[str, Any]) -> bool:
        if symbol not in self._specs:
            return super()._check_market(symbol, market, params)
        return bool(params.get("reduceOnly"))

    def _admit(
        self, market: MarketDict, req: _CreateRequest, book: OrderBook, matcher: Matcher
    ) -> None:
        pos = self._positions.get(req.symbol)
        if pos is None or not req.reduce_only:
            return
        closes = (pos.contracts < 0) if req.side == "buy" else (pos.contracts > 0)
        if not closes or req.amount > abs(pos.contracts):
            raise ccxt.InvalidOrder(f"{self.id} {_MSG_REDUCE_ONLY}")

    def _funding(
        self, market: MarketDict, req: _CreateRequest, book: OrderBook, matcher: Matcher
    ) -> tuple[str, Decimal, Decimal]:
        pos = self._positions.get(req.symbol)
        if pos is None:
            return super()._funding(market, req, book, matcher)
        settle = pos.spec.settle
        if req.reduce_only:
            return settle, ZERO, ZERO
        price = req.price
        if price is None:  # a market order: margin at the worst level its walk reaches
            walk = matcher.take(req.side, req.amount, None, book, consume=False)
            price = walk[-1][0] if walk else None
        if price is None:
            return settle, ZERO, ZERO  # nothing to take: it will simply expire
        before = self._order_rows(req.symbol)
        extra = order_margin(pos, [*before, (req.side, price, req.amount)]) - order_margin(
            pos, before
        )
        max_rate = max(to_decimal(float(market["maker"])), to_decimal(float(market["taker"])))
        return settle, ZERO, extra + pos.spec.value(req.amount, price) * max_rate

    @staticmethod
    def _fee_currency(market: MarketDict, side: str) -> str:
        if market.get("contract"):
            return str(market["settle"])
        return PaperVenue._fee_currency(market, side)

    def _used_of(self, ccy: str) -> Decimal:
        used = super()._used_of(ccy)
        for symbol, pos in self._positions.items():
            if pos.spec.settle == ccy:
                used += pos.margin + order_margin(pos, self._order_rows(symbol))
        return used

    def _settle_fill(
        self, market: MarketDict, order: _Order, price: Decimal, amount: Decimal, rate: Decimal
    ) -> Decimal:
        pos = self._positions.get(order.symbol)
        if pos is None:
            return super()._settle_fill(market, order, price, amount, rate)
        fee = pos.spec.value(amount, price) * rate
        self._total[pos.spec.settle] += pos.fill(order.side, amount, price, fee)
        return fee

    def _after_fill(self, order: _Order, ts_ms: int) -> None:
        pos = self._positions.get(order.symbol)
        if pos is None:
            return
        # Reduce-only orders larger than what they can still close are expired.
        for side in ("buy", "sell"):
            closable = max(ZERO, -pos.contracts if side == "buy" else pos.contracts)
            waiting = sorted(
                (
                    o
                    for o in self._orders.values()
                    if o.symbol == order.symbol
                    and o.status == "open"
                    and o.reduce_only
                    and o.side == side
                ),
                key=lambda o: -(o.price or ZERO) if side == "buy" else (o.price or ZERO),
            )
            for o in waiting:
                if o.remaining > closable:
                    self._end(o, "canceled", "EXPIRED", ts_ms)
                else:
                    closable -= o.remaining

    def _before_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        pos = self._positions.get(symbol)
        if pos is None:
            return
        ts = sample.ts_ns
        seen = self._funding_seen.setdefault(symbol, ts)
        terms = self._terms[symbol]
        mark = dec(sample.mid)
        for t in funding_times(seen, ts, terms.funding_interval_h * 3600):
            if pos.contracts == 0:
                continue
            contracts = pos.contracts
            rate = dec(float(terms.funding_rate))
            paid = pos.apply_funding(mark, rate)
            self._total[pos.spec.settle] += paid
            self.funding_history.append(
                FundingPayment(t // NS_PER_MS, symbol, rate, mark, contracts, paid, pos.spec.settle)
            )
        self._funding_seen[symbol] = max(seen, ts)

    def _after_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        pos = self._positions.get(symbol)
        if pos is None:
            return
        mark = dec(sample.mid)
        self._marks[symbol] = mark
        liq = pos.liquidation_price()
        if liq is None:
            return
        if (pos.contracts > 0 and mark <= liq) or (pos.contracts < 0 and mark >= liq):
            self._liquidate(symbol, pos, mark, liq, sample.ts_ns // NS_PER_MS)

    def _liquidate(
        self, symbol: str, pos: IsolatedPosition, mark: Decimal, liq: Decimal, ts_ms: int
    ) -> None:
        for order in [o for o in self._orders.values() if o.symbol == symbol]:
            if order.status == "open":
                self._end(order, "canceled", "EXPIRED", ts_ms)
        self.liquidations.append(
            Liquidation(ts_ms, symbol, pos.contracts, pos.entry, mark, liq, pos.margin)
        )
        self._total[pos.spec.settle] -= pos.margin
        pos.realised -= pos.margin
        pos.contracts = ZERO
        pos.entry = ZERO
        pos.margin = ZERO

    def _trade_cost(self, symbol: str, price: Decimal, amount: Decimal) -> Decimal:
        spec = self._specs.get(symbol)
        return price * amount if spec is None else spec.value(amount, price)

    def _order_cost(self, order: _Order) -> Decimal:
        spec = self._specs.get(order.symbol)
        if spec is None:
            return order.cost
        return sum((spec.value(t.amount, t.price) for t in order.trades), ZERO)

    def _reduce_only_field(self, order: _Order) -> bool | None:
        return order.reduce_only if order.symbol in self._specs else None

    # ================================================================ helpers

    def _order_rows(self, symbol: str) -> list[tuple[str, Decimal, Decimal]]:
        return [
            (o.side, o.price or ZERO, o.remaining)
            for o in self._orders.values()
            if o.symbol == symbol and o.status == "open" and not o.reduce_only and o.price
        ]

    def _render_position(self, symbol: str, pos: IsolatedPosition) -> dict[str, Any]:
        spec = pos.spec
        mark = self._marks.get(symbol, pos.entry)
        size = abs(pos.contracts)
        upnl = pos.unrealised(mark)
        liq = pos.liquidation_price()
        maintenance = pos.maintenance(mark)
        notional = spec.value(size, mark)
        ts_ms = self._now_ms()
        raw: dict[str, Any] = {
            "info": {
                "symbol": self.market(symbol)["id"],
                "positionAmt": _s(pos.contracts),
                "entryPrice": _s(pos.entry),
                "markPrice": _s(mark),
                "isolatedMargin": _s(pos.margin + upnl),
                "isolatedWallet": _s(pos.margin),
                "unRealizedProfit": _s(upnl),
                "liquidationPrice": _s(liq) if liq is not None else "0",
                "leverage": _s(pos.leverage),
                "marginType": "isolated",
                "paper": True,
            },
            "id": None,
            "symbol": symbol,
            "timestamp": ts_ms,
            "datetime": self._ex.iso8601(ts_ms),
            "lastUpdateTimestamp": ts_ms,
            "hedged": False,
            "side": "long" if pos.contracts > 0 else "short",
            "contracts": float(size),
            "contractSize": float(spec.contract_size),
            "entryPrice": float(pos.entry),
            "markPrice": float(mark),
            "lastPrice": None,
            "notional": float(notional),
            "leverage": float(pos.leverage),
            "collateral": float(pos.margin + upnl),
            "initialMargin": float(pos.initial_margin(size, pos.entry)),
            "initialMarginPercentage": float(1 / pos.leverage),
            "maintenanceMargin": float(maintenance),
            "maintenanceMarginPercentage": float(pos.mmr),
            "unrealizedPnl": float(upnl),
            "realizedPnl": float(pos.realised),
            "liquidationPrice": None if liq is None else float(liq),
            "marginMode": "isolated",
            "marginRatio": float(maintenance / (pos.margin + upnl))
            if pos.margin + upnl > 0
            else None,
            "percentage": float(upnl / pos.margin * 100) if pos.margin > 0 else None,
            "positionMargin": float(pos.margin),
            "stopLossPrice": None,
            "takeProfitPrice": None,
        }
        result: dict[str, Any] = self._ex.safe_position(raw)
        return result


def make_paper_venue(
    *,
    markets: Mapping[str, MarketDict],
    balances: Mapping[str, float | str | Decimal],
    clock: Clock,
    latency_ms: float,
    exchange_id: str,
    terms: Mapping[str, PerpTerms],
) -> PaperVenue:
    """The spot paper venue, or :class:`PerpPaperVenue` when any market is a contract."""
    if any(is_contract(m) for m in markets.values()):
        return PerpPaperVenue(
            markets=markets,
            balances=balances,
            clock=clock,
            latency_ms=latency_ms,
            exchange_id=exchange_id,
            terms={s: t for s, t in terms.items() if is_contract(markets.get(s))},
        )
    return PaperVenue(
        markets=markets,
        balances=balances,
        clock=clock,
        latency_ms=latency_ms,
        exchange_id=exchange_id,
    )


if TYPE_CHECKING:

    def _satisfies_the_venue_contract(venue: PerpPaperVenue) -> Venue:
        return venue
