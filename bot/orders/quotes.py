"""Quote management without I/O: round desired quotes, check limits, diff against live orders.

The strategy declares the whole set of quotes it wants on a symbol; the manager sends
only the difference. An order is kept when its side, price and *remaining* amount
equal a desired quote's after both are rounded to the market's precision (so a
partially filled order is replaced to restore the wanted size).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import ccxt

from bot.orders.state import OrderState, TrackedOrder
from bot.venues.rules import check_limits, limits_of
from strategies.base import Quote

# (side, price, amount) after rounding with the venue's precision helpers.
QuoteKey = tuple[str, float, float]
Rounder = Callable[[str, float], str]

_CANCELABLE = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED})


@dataclass(frozen=True, slots=True)
class PreparedQuote:
    """A desired quote rounded to the market's precision and checked against its limits."""

    quote: Quote
    price: float
    amount: float

    @property
    def key(self) -> QuoteKey:
        return (self.quote.side, self.price, self.amount)


def prepare_quote(
    quote: Quote,
    market: Mapping[str, Any] | None,
    amount_to_precision: Rounder,
    price_to_precision: Rounder,
) -> PreparedQuote | str:
    """The rounded quote, or the reason it cannot be sent (never reaches the venue)."""
    if market is None:
        return f"UNKNOWN_MARKET: symbol={quote.symbol}"
    if quote.side not in ("buy", "sell"):
        return f"BAD_SIDE: side={quote.side}"
    if not (quote.price > 0 and quote.amount > 0):
        return f"NOT_POSITIVE: price={quote.price} amount={quote.amount}"
    try:
        price_s = price_to_precision(quote.symbol, passive_price(quote, market))
        amount_s = amount_to_precision(quote.symbol, quote.amount)
    except Exception as e:  # ccxt raises InvalidOrder when an amount rounds to zero
        return f"PRECISION: {type(e).__name__}: {e}"
    price_d, amount_d = Decimal(price_s), Decimal(amount_s)
    if price_d <= 0 or amount_d <= 0:
        return f"ROUNDS_TO_ZERO: price={price_s} amount={amount_s}"
    try:
        check_limits(market, "limit", amount_d, price_d)
    except ccxt.InvalidOrder as e:
        return f"OUTSIDE_LIMITS: {e}"
    return PreparedQuote(quote, float(price_s), float(amount_s))


def warm_market(
    symbol: str,
    market: Mapping[str, Any],
    amount_to_precision: Rounder,
    price_to_precision: Rounder,
) -> None:
    """Derive the market's per-market constants (limits, tick, the venue's rounding)
    now, so the first quotes of an episode do not pay for them at the trigger."""
    limits_of(market)
    precision: Mapping[str, Any] = market.get("precision") or {}
    tick, step = precision.get("price"), precision.get("amount")
    if isinstance(tick, int | float) and 0 < tick < 1:
        _tick_decimal(tick)
    try:  # the market's own tick and step are on its grid: nothing to refuse
        if isinstance(tick, int | float) and tick > 0:
            price_to_precision(symbol, float(tick))
        if isinstance(step, int | float) and step > 0:
            amount_to_precision(symbol, float(step))
    except Exception:  # an odd market: its first real quote says what is wrong
        pass


def passive_price(quote: Quote, market: Mapping[str, Any]) -> float:
    """Snap a quote's price to the tick *away from the touch*: bids down, asks up.

    ccxt's ``price_to_precision`` rounds to the nearest tick, which could move a bid up
    half a tick: more aggressive than the strategy asked, and a post-only order could
    then cross. Snapped first, the price is already on the tick and ccxt leaves it be.
    Only for markets whose precision is a tick size below 1 (ccxt's TICK_SIZE mode, as
    on Binance); anything else is left to ccxt's rounding.
    """
    tick = (market.get("precision") or {}).get("price")
    if not isinstance(tick, int | float) or not 0 < tick < 1:
        return quote.price
    step = _tick_decimal(tick)
    rounding = ROUND_FLOOR if quote.side == "buy" else ROUND_CEILING
    ticks = (Decimal(str(quote.price)) / step).to_integral_value(rounding=rounding)
    return float(ticks * step)


@functools.lru_cache(maxsize=256)
def _tick_decimal(tick: float) -> Decimal:
    return Decimal(str(tick))


def order_key(
    order: TrackedOrder, amount_to_precision: Rounder, price_to_precision: Rounder
) -> QuoteKey | None:
    """The key a live order matches desired quotes by; None if its remainder is dust."""
    try:
        price = float(price_to_precision(order.symbol, order.price))
        amount = float(amount_to_precision(order.symbol, order.remaining))
    except Exception:
        return None
    return (order.side, price, amount)


@dataclass(slots=True)
class QuoteDiff:
    keep: list[TrackedOrder] = field(default_factory=list)
    cancel: list[TrackedOrder] = field(default_factory=list)  # unmatched, idle: cancel now
    # Unmatched but not cancelable now: an action is in flight, or the order is still
    # pending new/unknown/being cancelled. The next sync deals with them.
    busy: list[TrackedOrder] = field(default_factory=list)
    create: list[PreparedQuote] = field(default_factory=list)


def diff_quotes(
    desired: Sequence[PreparedQuote],
    live: Sequence[TrackedOrder],
    key_of: Callable[[TrackedOrder], QuoteKey | None],
    is_busy: Callable[[TrackedOrder], bool],
) -> QuoteDiff:
    """Match desired quotes one-to-one with live orders by key.

    ``live`` are the symbol's unfinished orders. Orders already being cancelled never
    satisfy a desired quote (they are going away); orders whose create is in flight
    or unknown do (they may well be live), so a quote is not sent twice.
    """
    diff = QuoteDiff()
    available: dict[QuoteKey, list[TrackedOrder]] = defaultdict(list)
    unmatched: list[TrackedOrder] = []
    for order in live:
        key = None if order.state is OrderState.PENDING_CANCEL else key_of(order)
        if key is None:
            unmatched.append(order)
        else:
            available[key].append(order)
    for prepared in desired:
        candidates = available.get(prepared.key)
        if candidates:
            diff.keep.append(candidates.pop(0))
        else:
            diff.create.append(prepared)
    unmatched.extend(o for orders in available.values() for o in orders)
    for order in unmatched:
        if order.state in _CANCELABLE and not is_busy(order):
            diff.cancel.append(order)
        else:
            diff.busy.append(order)
    return diff
