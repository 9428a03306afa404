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
from typing import Any, cast

import ccxt

from bot.orders.state import OrderState, TrackedOrder
from bot.venues.rules import (
    MarketPrecision,
    check_limits,
    limits_of,
)
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


class FastQuotes:
    """:func:`prepare_quote` for one market, in integers, when the venue rounds with
    :class:`~bot.venues.rules.TickRounding` on the market's own tick (below 1) and step.

    ``prepare_quote`` snaps ``Decimal(str(price))`` to the tick away from the touch,
    rounds it and the amount with ccxt's arithmetic, and checks the limits in decimals.
    Here a price is a count of ticks and an amount a count of steps: ``str(x)`` is read
    as an exact integer over a power of ten, snapped and truncated by integer division,
    and the limits are compared as integers on the same grids. Every value this answers
    for is exact: the grid price has at most 15 significant digits, so ``str()`` of its
    float is its own digits and ccxt's rounding leaves it as it is; the amount is
    ccxt's truncation of the same decimal; ``int / int`` and ``float(str)`` both round
    correctly. Anything else (a refusal, an exponent form, an odd value) answers None,
    and the caller takes :func:`prepare_quote`: refusals keep its exact wording.
    """

    __slots__ = (
        "_amount_bounds",
        "_amount_scale",
        "_cost_bounds",
        "_price_bounds",
        "_price_scale",
        "_step_units",
        "_tick_units",
    )

    def __init__(
        self,
        tick: tuple[int, int],
        step: tuple[int, int],
        price_bounds: tuple[int | None, int | None],
        amount_bounds: tuple[int | None, int | None],
        cost_bounds: tuple[int | None, int | None],
    ) -> None:
        # A tick is tick_units / 10**p, a step step_units / 10**q; bounds are integers
        # in units of 10**-p (price), 10**-q (amount) and 10**-(p+q) (cost).
        self._tick_units, p = tick
        self._step_units, q = step
        self._price_scale = 10**p
        self._amount_scale = 10**q
        self._price_bounds = price_bounds
        self._amount_bounds = amount_bounds
        self._cost_bounds = cost_bounds

    @classmethod
    def of(cls, market: Mapping[str, Any] | None, rounding: MarketPrecision) -> FastQuotes | None:
        if market is None or rounding.price is None or rounding.amount is None:
            return None
        tick = (market.get("precision") or {}).get("price")
        if not isinstance(tick, int | float) or not 0 < tick < 1:
            return None  # passive_price leaves such prices to the venue's rounding
        tick_d = _tick_decimal(tick)
        if tick_d != rounding.price.tick:
            return None
        tick_grid = _grid(tick_d)
        step_grid = _grid(rounding.amount.tick)
        if tick_grid is None or step_grid is None:
            return None
        p, q = tick_grid[1], step_grid[1]
        limits = limits_of(market)
        bounds = [
            tuple(_on_scale(b, places) for b in pair)
            for pair, places in ((limits.price, p), (limits.amount, q), (limits.cost, p + q))
        ]
        if any(b is _OFF_GRID for pair in bounds for b in pair):
            return None  # a limit between grid points: compared in decimals only
        price_b, amount_b, cost_b = (cast(tuple[int | None, int | None], b) for b in bounds)
        return cls(tick_grid, step_grid, price_b, amount_b, cost_b)

    def prepare(self, quote: Quote) -> PreparedQuote | None:
        price, amount = quote.price, quote.amount
        if type(price) is not float or type(amount) is not float:
            return None
        if not (0.0 < price < _FAST_MAX and 0.0 < amount < _FAST_MAX):
            return None  # NaN, inf, <= 0 and huge values: the general path
        p_digits, p_exp = _exact(price)
        a_digits, a_exp = _exact(amount)
        if p_digits < 0 or a_digits < 0:
            return None
        # Price: whole ticks, bids down and asks up (passive_price).
        num = p_digits * self._price_scale
        den = self._tick_units * p_exp
        side = quote.side
        if side == "buy":
            ticks = num // den
        elif side == "sell":
            ticks = -(-num // den)
        else:
            return None
        # Amount: whole steps, truncated (amount_to_precision).
        steps = a_digits * self._amount_scale // (self._step_units * a_exp)
        price_units = ticks * self._tick_units
        amount_units = steps * self._step_units
        if not (0 < price_units < _MAX_UNITS and 0 < amount_units < _MAX_UNITS):
            return None  # zero: the venue hands it to ccxt; 16+ digits: not exact here
        lo, hi = self._price_bounds
        if (lo is not None and price_units < lo) or (hi is not None and price_units > hi):
            return None
        lo, hi = self._amount_bounds
        if (lo is not None and amount_units < lo) or (hi is not None and amount_units > hi):
            return None
        cost = price_units * amount_units
        lo, hi = self._cost_bounds
        if (lo is not None and cost < lo) or (hi is not None and cost > hi):
            return None
        return PreparedQuote(
            quote, price_units / self._price_scale, amount_units / self._amount_scale
        )


_FAST_MAX = 1e15
"""Prices and amounts from here up take the general path (ccxt's exponent forms)."""
_MAX_UNITS = 10**15
"""Grid values of at most 15 digits: their float's ``str()`` gives the same digits."""
_OFF_GRID = object()
_POW10 = tuple(10**i for i in range(24))


def _exact(x: float) -> tuple[int, int]:
    """``Decimal(str(x))`` as (digits, 10**decimals); (-1, 0) for an exponent form."""
    text = repr(x)
    whole, _, frac = text.partition(".")
    if "e" in frac or "e" in whole:
        return -1, 0
    return int(whole + frac), _POW10[len(frac)]


def _grid(unit: Decimal) -> tuple[int, int] | None:
    """A positive decimal as (digits, decimals): ``unit == digits / 10**decimals``."""
    sign, digits, exponent = unit.as_tuple()
    if sign or not isinstance(exponent, int) or not digits:
        return None
    value = int("".join(map(str, digits)))
    if value <= 0:
        return None
    if exponent >= 0:
        return value * 10**exponent, 0
    return value, -exponent


def _on_scale(bound: Decimal | None, places: int) -> int | object | None:
    """``bound`` in units of 10**-places, or _OFF_GRID if it falls between two."""
    if bound is None:
        return None
    scaled = bound.scaleb(places)
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        return _OFF_GRID
    return int(scaled)


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
