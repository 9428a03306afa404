"""Market rules checked before an order leaves the bot: ccxt's rounding, then the limits.

Shared by the paper venue and the real-exchange path, so that an order the paper venue
accepts is one the exchange would accept too (and one it refuses is refused with the same
exception class, ``ccxt.InvalidOrder``, before any request is sent).

Rounding is ccxt's own (``amount_to_precision`` truncates to the lot step,
``price_to_precision`` rounds to the tick): that is what ``exchange.create_order`` itself
does to the arguments before it builds the request, so rounding here changes nothing a
real send would not. Limits come from the ccxt market structure:

- ``limits.amount`` min/max (Binance ``LOT_SIZE``), and ``limits.market`` for market
  orders (``MARKET_LOT_SIZE``);
- ``limits.price`` min/max (``PRICE_FILTER``);
- ``limits.cost`` min/max on ``amount * price`` (``NOTIONAL``/``MIN_NOTIONAL``). A market
  order has no price, so its notional is checked only when the caller passes a
  ``reference_price`` (Binance uses a 5-minute average price; the caller's best guess is
  the touch). Whether min/max apply to market orders follows Binance's
  ``applyMinToMarket``/``applyMaxToMarket`` when the market's ``info`` carries a
  ``NOTIONAL`` filter; otherwise the minimum applies and the maximum does not.

Not checked (the exchange still enforces them): Binance ``PERCENT_PRICE_BY_SIDE``
(price within a band around the average price), ``MAX_NUM_ORDERS``, ``ICEBERG_PARTS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt

ORDER_TYPES = ("limit", "market")
SIDES = ("buy", "sell")


@dataclass(frozen=True, slots=True)
class PreparedOrder:
    """An order rounded with ccxt's helpers and inside the market's limits.

    ``amount`` and ``price`` are the strings ccxt's precision helpers returned; send
    them as they are (``float()`` of them is exact for the exchange's grid).
    """

    symbol: str
    type: str
    side: str
    amount: str
    price: str | None

    @property
    def amount_dec(self) -> Decimal:
        return Decimal(self.amount)

    @property
    def price_dec(self) -> Decimal | None:
        return None if self.price is None else Decimal(self.price)


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """Exact decimal of a float as written (``repr``), not of its binary expansion."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def prepare_order(
    exchange: Any,
    symbol: str,
    type: str,
    side: str,
    amount: float | str,
    price: float | str | None = None,
    *,
    reference_price: float | None = None,
) -> PreparedOrder:
    """Round ``amount``/``price`` with ``exchange``'s precision helpers and check limits.

    ``exchange`` is any ccxt exchange object whose markets are loaded (a real one, or
    the paper venue's offline one). Raises ``ccxt.BadSymbol`` for an unknown symbol and
    ``ccxt.InvalidOrder`` for a bad type/side/number or an order outside the limits.
    """
    market: Mapping[str, Any] = exchange.market(symbol)  # BadSymbol, as ccxt raises it
    ex_id = str(exchange.id)
    if type not in ORDER_TYPES:
        raise ccxt.InvalidOrder(f"{ex_id} {type} is not a supported order type (limit, market)")
    if side not in SIDES:
        raise ccxt.InvalidOrder(f"{ex_id} order side must be 'buy' or 'sell', got {side!r}")
    _require_positive(ex_id, "amount", amount)
    amount_s = str(exchange.amount_to_precision(symbol, amount))  # raises if it rounds to 0
    price_s: str | None = None
    if type == "limit":
        if price is None:
            raise ccxt.InvalidOrder(f"{ex_id} a limit order needs a price")
        _require_positive(ex_id, "price", price)
        price_s = str(exchange.price_to_precision(symbol, price))
        if Decimal(price_s) <= 0:
            raise ccxt.InvalidOrder(
                f"{ex_id} price {price} of {symbol} rounds to {price_s} at the tick size"
            )
    check_limits(
        market,
        type,
        Decimal(amount_s),
        None if price_s is None else Decimal(price_s),
        reference_price=reference_price,
        exchange_id=ex_id,
    )
    return PreparedOrder(symbol=symbol, type=type, side=side, amount=amount_s, price=price_s)


def check_limits(
    market: Mapping[str, Any],
    type: str,
    amount: Decimal,
    price: Decimal | None,
    *,
    reference_price: float | None = None,
    exchange_id: str = "",
) -> None:
    """Raise ``ccxt.InvalidOrder`` naming the limit if the order is outside the market's limits."""
    symbol = str(market.get("symbol"))
    limits: Mapping[str, Any] = market.get("limits") or {}
    prefix = f"{exchange_id} " if exchange_id else ""
    base = market.get("base") or ""
    quote = market.get("quote") or ""

    def refuse(what: str) -> ccxt.InvalidOrder:
        return ccxt.InvalidOrder(f"{prefix}order refused before sending: {what} ({symbol})")

    lo, hi = _bounds(limits, "amount")
    if lo is not None and amount < lo:
        raise refuse(f"amount {amount} {base} is below the minimum amount {lo}")
    if hi is not None and amount > hi:
        raise refuse(f"amount {amount} {base} is above the maximum amount {hi}")
    if type == "market":
        lo, hi = _bounds(limits, "market")
        if lo is not None and amount < lo:
            raise refuse(f"market order amount {amount} {base} is below the minimum {lo}")
        if hi is not None and amount > hi:
            raise refuse(f"market order amount {amount} {base} is above the maximum {hi}")
    if price is not None:
        lo, hi = _bounds(limits, "price")
        if lo is not None and price < lo:
            raise refuse(f"price {price} is below the minimum price {lo}")
        if hi is not None and price > hi:
            raise refuse(f"price {price} is above the maximum price {hi}")

    apply_min, apply_max = True, True
    notional_price = price
    if type == "market":
        apply_min, apply_max = _market_notional_rules(market)
        notional_price = None if reference_price is None else to_decimal(float(reference_price))
    if notional_price is None:
        return
    cost = amount * notional_price
    lo, hi = _bounds(limits, "cost")
    if apply_min and lo is not None and cost < lo:
        raise refuse(f"notional {cost} {quote} (amount x price) is below the minimum notional {lo}")
    if apply_max and hi is not None and cost > hi:
        raise refuse(f"notional {cost} {quote} (amount x price) is above the maximum notional {hi}")


def _require_positive(ex_id: str, name: str, value: float | str) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ccxt.InvalidOrder(f"{ex_id} order {name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ccxt.InvalidOrder(f"{ex_id} order {name} must be finite and > 0, got {value!r}")


def _bounds(limits: Mapping[str, Any], key: str) -> tuple[Decimal | None, Decimal | None]:
    entry = limits.get(key) or {}
    lo, hi = entry.get("min"), entry.get("max")
    return (
        None if lo is None else to_decimal(lo),
        None if hi is None else to_decimal(hi),
    )


def _market_notional_rules(market: Mapping[str, Any]) -> tuple[bool, bool]:
    """(apply min notional, apply max notional) to market orders, from Binance's filter."""
    info = market.get("info")
    filters = info.get("filters") if isinstance(info, Mapping) else None
    for f in filters or ():
        if isinstance(f, Mapping) and f.get("filterType") in ("NOTIONAL", "MIN_NOTIONAL"):
            return (
                _truthy(f.get("applyMinToMarket", f.get("applyToMarket", True))),
                _truthy(f.get("applyMaxToMarket", False)),
            )
    return True, False


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
