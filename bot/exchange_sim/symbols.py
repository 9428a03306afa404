"""One spot symbol's trading rules, read from its Binance ``exchangeInfo`` entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.exchange_sim.errors import filter_failure

DEFAULT_FEE = Decimal("0.001")


@dataclass(frozen=True)
class SymbolRules:
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    order_types: frozenset[str]
    maker_fee: Decimal
    taker_fee: Decimal

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> SymbolRules:
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        # The project's exchange-info fixture carries the venue's fee rates in "_fees".
        fees = entry.get("_fees") or {}
        return cls(
            symbol=entry["symbol"],
            base=entry["baseAsset"],
            quote=entry["quoteAsset"],
            tick_size=Decimal(price.get("tickSize", "0")),
            min_price=Decimal(price.get("minPrice", "0")),
            max_price=Decimal(price.get("maxPrice", "0")),
            step_size=Decimal(lot.get("stepSize", "0")),
            min_qty=Decimal(lot.get("minQty", "0")),
            max_qty=Decimal(lot.get("maxQty", "0")),
            min_notional=Decimal(notional.get("minNotional") or notional.get("notional") or "0"),
            order_types=frozenset(entry.get("orderTypes", [])),
            maker_fee=Decimal(str(fees.get("maker", DEFAULT_FEE))),
            taker_fee=Decimal(str(fees.get("taker", DEFAULT_FEE))),
        )

    def check(self, price: Decimal, qty: Decimal) -> None:
        """Binance's PRICE_FILTER, LOT_SIZE and NOTIONAL filters for a limit order."""
        if price <= 0 or (self.min_price and price < self.min_price):
            raise filter_failure("PRICE_FILTER")
        if self.max_price and price > self.max_price:
            raise filter_failure("PRICE_FILTER")
        if self.tick_size and (price - self.min_price) % self.tick_size != 0:
            raise filter_failure("PRICE_FILTER")
        if qty < self.min_qty or (self.max_qty and qty > self.max_qty):
            raise filter_failure("LOT_SIZE")
        if self.step_size and (qty - self.min_qty) % self.step_size != 0:
            raise filter_failure("LOT_SIZE")
        if price * qty < self.min_notional:
            raise filter_failure("NOTIONAL")
