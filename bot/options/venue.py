"""The paper venue with option markets: option orders take the same road as every order.

:class:`OptionPaperVenue` is the derivatives paper venue
(:class:`~bot.venues.perp.PerpPaperVenue`: the perpetual's positions, margin and funding
unchanged) with the chain's option markets added, so option orders are sent, cancelled,
listed and pushed through ccxt's unified calls (``create_order``, ``cancel_order``,
``fetch_open_orders``, ``watch_orders`` ...) by the trader's order manager, with the
venue's data-time latency, filled by the same :class:`~bot.venues.matching.Matcher`
(queue position, trade-through, book-through), journaled, and cancelled by the kill
switch like the perpetual's.

Option markets, Deribit style (coin-settled, premium in BTC per contract):

- a fill moves the venue's BTC balance by the premium (paid on a buy, received on a
  sell) and the fee: ``fee_rate`` x contracts x contract size, at most 12.5 % of the
  premium (Deribit's rule). A buy reserves its premium and the largest fee from the free
  BTC (``InsufficientFunds`` otherwise); no margin is reserved for a sell or a short
  position: option risk is bounded by the greek limits before an order leaves
  (:mod:`bot.options.checks`), not by the venue;
- an option's requests are handled on *any* data event once due, not only on its own
  book's updates (an option book may update once a second, or never again after its
  expiry: a cancel must not wait for it);
- at expiry the venue expires the option's open orders (``canceled``, Deribit's
  deletion at settlement) and refuses new ones (``BadSymbol``); settlement of positions
  is the option inventory's (:mod:`bot.options.inventory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import ccxt

from bot.book import OrderBook
from bot.clock import NS_PER_MS, Clock
from bot.feeds.events import Trade as PublicTrade
from bot.monitor import DepthSample
from bot.venues.base import MarketDict
from bot.venues.matching import ZERO, Matcher
from bot.venues.paper import _CreateRequest, _Order
from bot.venues.perp import PerpPaperVenue, PerpTerms
from bot.venues.rules import to_decimal

_MAX_FEE_OF_PREMIUM: Final = Decimal("0.125")


class OptionPaperVenue(PerpPaperVenue):
    """``markets`` (spot and perpetuals) plus ``option_markets`` (ccxt option markets)."""

    def __init__(
        self,
        *,
        markets: Mapping[str, MarketDict],
        option_markets: Mapping[str, MarketDict],
        balances: Mapping[str, float | str | Decimal],
        clock: Clock,
        latency_ms: float = 0.0,
        exchange_id: str = "binanceusdm",
        terms: Mapping[str, PerpTerms] | None = None,
        fee_rate: float | None = None,
    ) -> None:
        super().__init__(
            markets=markets,
            balances=balances,
            clock=clock,
            latency_ms=latency_ms,
            exchange_id=exchange_id,
            terms=terms,
        )
        # Added after the perpetual account is built, so no option becomes a position.
        self._options: dict[str, int] = {}
        self._unexpired: dict[str, int] = {}
        for symbol, market in option_markets.items():
            m = dict(market)
            if fee_rate is not None:
                m["maker"] = m["taker"] = float(fee_rate)
            self.markets[symbol] = m
            self._options[symbol] = int(m["expiry"]) * NS_PER_MS
        self._unexpired = dict(self._options)
        self._next_expiry = min(self._options.values(), default=None)
        self._ex.set_markets(list(self.markets.values()))
        self.has["option"] = bool(self._options)
        settles = {str(m["settle"]) for s, m in self.markets.items() if s in self._options}
        for ccy in settles:
            self._total.setdefault(ccy, ZERO)
            self._used.setdefault(ccy, ZERO)
        self.expired_orders = 0
        """Open option orders the venue expired at their option's expiry."""

    def is_option(self, symbol: str) -> bool:
        return symbol in self._options

    # ================================================================ engine listener

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        super().on_sample(symbol, book, sample)
        self._option_clock(sample.ts_ns)

    def on_trade(self, trade: PublicTrade) -> None:
        super().on_trade(trade)
        self._option_clock(trade.ts_ns)

    def _option_clock(self, ts: int) -> None:
        """Data time passed: expire what has expired, handle due option requests."""
        if self._next_expiry is not None and self._next_expiry <= ts:
            for symbol, expiry in list(self._unexpired.items()):
                if expiry <= ts:
                    del self._unexpired[symbol]
                    self._expire(symbol, ts)
            self._next_expiry = min(self._unexpired.values(), default=None)
        for symbol in self._options:
            if self._queues.get(symbol):
                self._run_due(symbol, ts)
        self._flush()

    def _expire(self, symbol: str, ts: int) -> None:
        for order in [o for o in self._orders.values() if o.symbol == symbol]:
            if order.status == "open":
                self._end(order, "canceled", "EXPIRED", ts // NS_PER_MS)
                self.expired_orders += 1

    # ================================================================ market-type hooks

    def _check_market(self, symbol: str, market: MarketDict, params: dict[str, Any]) -> bool:
        if symbol not in self._options:
            return super()._check_market(symbol, market, params)
        if params.get("reduceOnly"):
            raise ccxt.InvalidOrder(f"{self.id} reduceOnly is not supported on option {symbol}")
        if self._options[symbol] <= self._clock.now_ns():
            raise ccxt.BadSymbol(f"{self.id} option {symbol} has expired")
        return False

    def _admit(
        self, market: MarketDict, req: _CreateRequest, book: OrderBook, matcher: Matcher
    ) -> None:
        if req.symbol in self._options:
            if self._options[req.symbol] <= self._clock.now_ns():
                raise ccxt.BadSymbol(f"{self.id} option {req.symbol} has expired")
            return
        super()._admit(market, req, book, matcher)

    def _funding(
        self, market: MarketDict, req: _CreateRequest, book: OrderBook, matcher: Matcher
    ) -> tuple[str, Decimal, Decimal]:
        if req.symbol not in self._options:
            return super()._funding(market, req, book, matcher)
        settle = str(market["settle"])
        if req.side == "sell" or req.price is None:
            return settle, ZERO, ZERO  # no margin for a short option (module doc)
        size = Decimal(str(market.get("contractSize") or 1))
        rate = max(to_decimal(float(market["maker"])), to_decimal(float(market["taker"])))
        per_unit = req.price * size + rate * size  # the premium and the largest fee
        return settle, per_unit, per_unit * req.amount

    def _settle_fill(
        self, market: MarketDict, order: _Order, price: Decimal, amount: Decimal, rate: Decimal
    ) -> Decimal:
        if order.symbol not in self._options:
            return super()._settle_fill(market, order, price, amount, rate)
        size = Decimal(str(market.get("contractSize") or 1))
        premium = price * amount * size
        fee = min(rate * amount * size, _MAX_FEE_OF_PREMIUM * premium)
        settle = str(market["settle"])
        self._total[settle] += -premium if order.side == "buy" else premium
        self._total[settle] -= fee
        return fee

    def _trade_cost(self, symbol: str, price: Decimal, amount: Decimal) -> Decimal:
        if symbol in self._options:
            return price * amount  # premium in the settle currency per contract
        return super()._trade_cost(symbol, price, amount)

    def _order_cost(self, order: _Order) -> Decimal:
        if order.symbol in self._options:
            return order.cost
        return super()._order_cost(order)


def make_option_paper_venue(
    *,
    markets: Mapping[str, MarketDict],
    option_markets: Mapping[str, MarketDict],
    balances: Mapping[str, float | str | Decimal],
    clock: Clock,
    latency_ms: float,
    exchange_id: str,
    terms: Mapping[str, PerpTerms],
    fee_rate: float | None = None,
) -> OptionPaperVenue:
    from bot.positions import is_contract

    return OptionPaperVenue(
        markets=markets,
        option_markets=option_markets,
        balances=balances,
        clock=clock,
        latency_ms=latency_ms,
        exchange_id=exchange_id,
        terms={s: t for s, t in terms.items() if is_contract(markets.get(s))},
        fee_rate=fee_rate,
    )
