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
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeGuard

import ccxt
from ccxt.base.decimal_to_precision import NO_PADDING, TICK_SIZE

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
    market = _market(exchange, symbol)  # BadSymbol, as ccxt raises it
    ex_id = str(exchange.id)
    if type not in ORDER_TYPES:
        raise ccxt.InvalidOrder(f"{ex_id} {type} is not a supported order type (limit, market)")
    if side not in SIDES:
        raise ccxt.InvalidOrder(f"{ex_id} order side must be 'buy' or 'sell', got {side!r}")
    _require_positive(ex_id, "amount", amount)
    amount_s = amount_to_precision(exchange, symbol, amount)  # raises if it rounds to 0
    price_s: str | None = None
    if type == "limit":
        if price is None:
            raise ccxt.InvalidOrder(f"{ex_id} a limit order needs a price")
        _require_positive(ex_id, "price", price)
        price_s = price_to_precision(exchange, symbol, price)
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
    limits_of(market).check(
        type, amount, price, reference_price=reference_price, exchange_id=exchange_id
    )


Bounds = tuple[Decimal | None, Decimal | None]


@dataclass(frozen=True, slots=True)
class MarketLimits:
    """A market's limits as decimals, read once from its ccxt structure."""

    symbol: str
    base: str
    quote: str
    amount: Bounds
    market: Bounds
    price: Bounds
    cost: Bounds
    market_notional: tuple[bool, bool]
    """(apply min notional, apply max notional) to market orders."""

    @classmethod
    def of(cls, market: Mapping[str, Any]) -> MarketLimits:
        limits: Mapping[str, Any] = market.get("limits") or {}
        return cls(
            symbol=str(market.get("symbol")),
            base=market.get("base") or "",
            quote=market.get("quote") or "",
            amount=_bounds(limits, "amount"),
            market=_bounds(limits, "market"),
            price=_bounds(limits, "price"),
            cost=_bounds(limits, "cost"),
            market_notional=_market_notional_rules(market),
        )

    def check(
        self,
        type: str,
        amount: Decimal,
        price: Decimal | None,
        *,
        reference_price: float | None = None,
        exchange_id: str = "",
    ) -> None:
        """See :func:`check_limits`."""
        # Checked for every quote prepared: the refusal's wording is built only on refusal.
        base, quote = self.base, self.quote
        lo, hi = self.amount
        if lo is not None and amount < lo:
            raise self._refusal(
                exchange_id, f"amount {amount} {base} is below the minimum amount {lo}"
            )
        if hi is not None and amount > hi:
            raise self._refusal(
                exchange_id, f"amount {amount} {base} is above the maximum amount {hi}"
            )
        if type == "market":
            lo, hi = self.market
            if lo is not None and amount < lo:
                raise self._refusal(
                    exchange_id, f"market order amount {amount} {base} is below the minimum {lo}"
                )
            if hi is not None and amount > hi:
                raise self._refusal(
                    exchange_id, f"market order amount {amount} {base} is above the maximum {hi}"
                )
        if price is not None:
            lo, hi = self.price
            if lo is not None and price < lo:
                raise self._refusal(exchange_id, f"price {price} is below the minimum price {lo}")
            if hi is not None and price > hi:
                raise self._refusal(exchange_id, f"price {price} is above the maximum price {hi}")

        apply_min, apply_max = True, True
        notional_price = price
        if type == "market":
            apply_min, apply_max = self.market_notional
            notional_price = None if reference_price is None else to_decimal(float(reference_price))
        if notional_price is None:
            return
        cost = amount * notional_price
        lo, hi = self.cost
        if apply_min and lo is not None and cost < lo:
            raise self._refusal(
                exchange_id,
                f"notional {cost} {quote} (amount x price) is below the minimum notional {lo}",
            )
        if apply_max and hi is not None and cost > hi:
            raise self._refusal(
                exchange_id,
                f"notional {cost} {quote} (amount x price) is above the maximum notional {hi}",
            )

    def _refusal(self, exchange_id: str, what: str) -> ccxt.InvalidOrder:
        prefix = f"{exchange_id} " if exchange_id else ""
        return ccxt.InvalidOrder(f"{prefix}order refused before sending: {what} ({self.symbol})")


_CACHE_SIZE = 4096
_limits_cache: dict[int, tuple[Mapping[str, Any], MarketLimits]] = {}


def limits_of(market: Mapping[str, Any]) -> MarketLimits:
    """The market's limits, read once per market structure.

    Cached by identity, holding the structure itself so its id cannot be reused while
    cached: a reload of the markets brings new structures, read afresh. (Checked on
    every quote the order manager prepares.)
    """
    hit = _limits_cache.get(id(market))
    if hit is not None and hit[0] is market:
        return hit[1]
    limits = MarketLimits.of(market)
    if len(_limits_cache) >= _CACHE_SIZE:
        _limits_cache.clear()
    _limits_cache[id(market)] = (market, limits)
    return limits


# ------------------------------------------------------------------------- precision


class TickRounding:
    """ccxt's ``decimal_to_precision`` for one tick size, TICK_SIZE mode, no padding.

    The same arithmetic as ccxt's (the distance to the grid as a decimal of the
    number's ``str``, half a tick and up rounds up, then the digits of the tick), done
    once per tick size instead of re-deriving the tick's digits on every call.
    """

    __slots__ = ("_half", "_quantum", "_tick")

    def __init__(self, tick: Decimal, places: int) -> None:
        self._tick = tick
        self._half = tick / 2
        self._quantum = Decimal(1).scaleb(-places)

    @property
    def tick(self) -> Decimal:
        return self._tick

    @classmethod
    def for_tick(cls, tick: object) -> TickRounding | None:
        if type(tick) is not float and type(tick) is not int:
            return None
        if not (math.isfinite(tick) and tick > 0):
            return None
        dec = Decimal(str(tick))
        # ccxt's digit count: decimals of the tick written without trailing zeros.
        parts = format(dec, "f").rstrip("0").split(".")
        places = len(parts[1]) if len(parts) > 1 else 0
        if places >= _MAX_PLACES:
            return None  # ccxt caps the digits at the context's precision
        return cls(dec, places)

    def round(self, n: float | int, truncate: bool) -> str:
        dec = Decimal(str(n))
        tick = self._tick
        missing = abs(dec) % tick
        if missing != 0:
            if truncate:
                dec = dec + missing if dec < 0 else dec - missing
            elif dec > 0:
                dec = dec - missing + tick if missing >= self._half else dec - missing
            else:
                dec = dec + missing - tick if missing >= self._half else dec + missing
        precise = format(Decimal(format(dec, "f")).quantize(self._quantum, ROUND_HALF_UP), "f")
        if precise.startswith("-0") and all(c in "0." for c in precise[1:]):
            precise = precise[1:]
        return precise.rstrip("0").rstrip(".") if "." in precise else precise


@dataclass(frozen=True, slots=True)
class MarketPrecision:
    """A market's price and amount rounding (None: left to ccxt's own helpers)."""

    price: TickRounding | None
    amount: TickRounding | None

    @classmethod
    def of(cls, exchange: Any, market: Mapping[str, Any]) -> MarketPrecision:
        precision: Mapping[str, Any] = market.get("precision") or {}
        if exchange.precisionMode != TICK_SIZE or exchange.paddingMode != NO_PADDING:
            return cls(None, None)
        return cls(
            TickRounding.for_tick(precision.get("price")),
            TickRounding.for_tick(precision.get("amount")),
        )


_MAX_PLACES = 26
_precision_cache: dict[int, tuple[Mapping[str, Any], Any, MarketPrecision]] = {}


_resolved: dict[tuple[int, str], tuple[Any, Any, Any, Any, Mapping[str, Any]]] = {}


def _market(exchange: Any, symbol: str) -> Mapping[str, Any]:
    """``exchange.market(symbol)``, remembered while what it depends on is unchanged.

    ccxt resolves a symbol through the loaded markets and the exchange's
    ``defaultType``/``defaultSubType`` options (Binance maps spot symbols to
    perpetuals when the default type is swap): the same markets dict, the same
    structure under ``symbol`` and the same two options give the same answer.
    """
    markets = exchange.markets
    options = exchange.options
    direct = markets.get(symbol) if isinstance(markets, dict) else None
    kind = options.get("defaultType") if isinstance(options, dict) else None
    sub = options.get("defaultSubType") if isinstance(options, dict) else None
    key = (id(exchange), symbol)
    hit = _resolved.get(key)
    if (
        hit is not None
        and hit[0] is markets
        and hit[1] is direct
        and hit[2] == kind
        and hit[3] == sub
        and direct is not None
    ):
        return hit[4]
    market: Mapping[str, Any] = exchange.market(symbol)  # BadSymbol, as ccxt raises it
    if direct is not None:
        if len(_resolved) >= _CACHE_SIZE:
            _resolved.clear()
        _resolved[key] = (markets, direct, kind, sub, market)
    return market


def precision_of(exchange: Any, symbol: str) -> MarketPrecision:
    """``symbol``'s rounding on ``exchange``, derived once per market structure."""
    market = _market(exchange, symbol)
    hit = _precision_cache.get(id(market))
    if hit is not None and hit[0] is market and hit[1] is exchange:
        return hit[2]
    precision = MarketPrecision.of(exchange, market)
    if len(_precision_cache) >= _CACHE_SIZE:
        _precision_cache.clear()
    _precision_cache[id(market)] = (market, exchange, precision)
    return precision


def _plain_number(x: object) -> TypeGuard[float | int]:
    return (type(x) is float and math.isfinite(x)) or type(x) is int


def amount_to_precision(exchange: Any, symbol: str, amount: float | str) -> str:
    """``exchange.amount_to_precision(symbol, amount)`` as a string, the same digits
    computed without ccxt's per-call overhead where the market allows."""
    rounding = precision_of(exchange, symbol).amount
    if rounding is not None and _plain_number(amount):
        out = rounding.round(amount, truncate=True)
        if out != "0":
            return out
    return str(exchange.amount_to_precision(symbol, amount))  # its errors, as it words them


def price_to_precision(exchange: Any, symbol: str, price: float | str) -> str:
    """``exchange.price_to_precision(symbol, price)`` as a string (see
    :func:`amount_to_precision`)."""
    rounding = precision_of(exchange, symbol).price
    if rounding is not None and _plain_number(price):
        out = rounding.round(price, truncate=False)
        if out != "0":
            return out
    return str(exchange.price_to_precision(symbol, price))


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
