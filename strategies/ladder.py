"""Pricing and sizing pieces the strategies share: fair price, skew, ladders.

Pure functions of their arguments; no rounding (the order manager rounds).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from bot.book import OrderBook, Side
from bot.monitor import DepthSample
from strategies.base import BudgetView, MarketRules, Quote

BPS = 1e4


def microprice(book: OrderBook, sample: DepthSample) -> float:
    """The top-of-book microprice: ``(bid x ask_size + ask x bid_size) / (bid_size + ask_size)``.

    Why not the mid: when one side of the touch is much thinner it is the one about to
    be taken out, and the next trade is more likely at the other side's price. The
    microprice leans toward the thin side by exactly the size imbalance, stays within
    [best bid, best ask] and is the mid when the two sizes are equal. Only the top level
    is used: it is what the next trade hits, and deeper levels are what a fracture
    removes. Falls back to the sample's mid when the book has no top level.
    """
    bids, asks = book.top(1, Side.BID), book.top(1, Side.ASK)
    if len(bids) and len(asks):
        bid, bid_size = float(bids[0, 0]), float(bids[0, 1])
        ask, ask_size = float(asks[0, 0]), float(asks[0, 1])
        total = bid_size + ask_size
        if total > 0 and math.isfinite(total):
            return (bid * ask_size + ask * bid_size) / total
        return (bid + ask) / 2.0
    return sample.mid


def inventory_skew(net_base: float, limit_base: float) -> float:
    """``net / limit`` clipped to [-1, 1]: +1 at the long limit, -1 at the short one."""
    if limit_base <= 0:
        return 0.0 if net_base == 0 else math.copysign(1.0, net_base)
    return max(-1.0, min(1.0, net_base / limit_base))


@dataclass(frozen=True, slots=True)
class SideLimits:
    """Hard per-side limits: total notional (quote) and total amount (base)."""

    buy_quote: float
    sell_quote: float
    buy_base: float
    sell_base: float

    def scaled(self, factor: float) -> SideLimits:
        return SideLimits(
            self.buy_quote * factor,
            self.sell_quote * factor,
            self.buy_base * factor,
            self.sell_base * factor,
        )


def side_limits(budget: BudgetView, net_base: float, limit_base: float, levels: int) -> SideLimits:
    """The most each side's quotes may total, before the shared room is split.

    - position: if every buy filled the position would still be within ``limit_base``
      (and likewise sells), so the side that grows the position stops at the limit and
      room is left to unwind;
    - balances: buys need quote (plus fees), sells need base (plus fees);
    - the per-order cap times the number of rungs.
    """
    fee = 1.0 + budget.fee_rate
    per_side_orders = budget.max_order_quote * levels
    return SideLimits(
        buy_quote=min(max(0.0, budget.quote_available) / fee, per_side_orders),
        sell_quote=per_side_orders,
        buy_base=max(0.0, limit_base - net_base),
        sell_base=min(max(0.0, limit_base + net_base), max(0.0, budget.base_available) / fee),
    )


def share_room(
    want_buy: float,
    want_sell: float,
    room: float,
    floor_buy: float = 0.0,
    floor_sell: float = 0.0,
) -> tuple[float, float]:
    """Fit both sides' wants into ``room``.

    Each side first gets up to its floor (both floors scaled down alike if even they do
    not fit); what is left of the room is shared in proportion to what each side wants
    beyond its floor.
    """
    room = max(0.0, room)
    base_buy, base_sell = min(want_buy, floor_buy), min(want_sell, floor_sell)
    floors = base_buy + base_sell
    if floors >= room:
        f = room / floors if floors > 0 else 0.0
        return base_buy * f, base_sell * f
    extra_buy, extra_sell = want_buy - base_buy, want_sell - base_sell
    extra, rest = extra_buy + extra_sell, room - floors
    f = 1.0 if extra <= rest else rest / extra
    return base_buy + extra_buy * f, base_sell + extra_sell * f


def build_ladder(
    symbol: str,
    side: Literal["buy", "sell"],
    *,
    fair: float,
    inner_bps: float,
    spacing_bps: float,
    levels: int,
    total_quote: float,
    max_order_quote: float,
    rules: MarketRules,
    limit_price: float | None,
    tag: str,
    max_base: float = math.inf,
) -> list[Quote]:
    """Up to ``levels`` quotes on one side, innermost first, ``total_quote`` split evenly.

    Rung ``i`` is ``inner_bps + i x spacing_bps`` from ``fair``. ``limit_price`` keeps
    the side from crossing: bids at or below it (best ask - one tick), asks at or above
    it (best bid + one tick). Each rung is at most ``max_order_quote`` and all of them
    together at most ``max_base`` in amount. When an even split would leave rungs under
    the market's minimum notional, rungs are dropped from the outside until the rest
    are big enough (none if even one is not).
    """
    return _plan(
        side,
        fair,
        inner_bps,
        spacing_bps,
        levels,
        total_quote,
        max_order_quote,
        rules,
        limit_price,
        tag,
        max_base,
    ).quotes(symbol)


class Rungs:
    """One side of a ladder before it is made of quotes: each rung's price, amount and
    tag, innermost first. A held ladder is compared with these; quotes are built only
    for a ladder that is sent."""

    __slots__ = ("amounts", "prices", "side", "tags")

    def __init__(
        self,
        side: Literal["buy", "sell"],
        prices: list[float],
        amounts: list[float],
        tags: tuple[str, ...],
    ) -> None:
        self.side = side
        self.prices = prices
        self.amounts = amounts
        self.tags = tags

    def __len__(self) -> int:
        return len(self.prices)

    def quotes(self, symbol: str) -> list[Quote]:
        side = self.side
        return [
            Quote(symbol, side, p, a, True, t)
            for p, a, t in zip(self.prices, self.amounts, self.tags, strict=True)
        ]


def _plan(
    side: Literal["buy", "sell"],
    fair: float,
    inner_bps: float,
    spacing_bps: float,
    levels: int,
    total_quote: float,
    max_order_quote: float,
    rules: MarketRules,
    limit_price: float | None,
    tag: str,
    max_base: float,
) -> Rungs:
    """The rungs :func:`build_ladder` makes its quotes of."""
    if levels <= 0 or not total_quote > 0 or not fair > 0 or not max_base > 0:
        return Rungs(side, [], [], ())
    buy = side == "buy"
    sign = -1.0 if buy else 1.0
    prices: list[float] = []
    for i in range(levels):
        price = fair * (1.0 + sign * (inner_bps + i * spacing_bps) / BPS)
        # min()/max() of (price, limit_price), which return the limit only when strictly
        # beyond the price.
        if limit_price is not None and (limit_price < price if buy else limit_price > price):
            price = limit_price
        if not price > 0:
            break
        prices.append(price)
    needs = [rules.min_notional(p) for p in prices]
    for k in range(len(prices), 0, -1):
        per = min(total_quote / k, max_order_quote)
        inverse = sum([1.0 / p for p in prices[:k]])  # base per unit of notional per rung
        if per * inverse > max_base:
            per = max_base / inverse * (1.0 - 1e-12)
        if per >= max(needs[:k]):
            amount = rules.amount_for_notional
            rungs = prices[:k]
            return Rungs(side, rungs, [amount(per, p) for p in rungs], _rung_tags(tag, k))
    return Rungs(side, [], [], ())


@functools.lru_cache(maxsize=256)
def _rung_tags(tag: str, levels: int) -> tuple[str, ...]:
    """``tag0``, ``tag1``, ...: one rung's tag each."""
    return tuple(f"{tag}{i}" for i in range(levels))


def interleave(bids: list[Quote], asks: list[Quote]) -> tuple[Quote, ...]:
    """Inner bid, inner ask, next bid, next ask...: a budget that trims in order
    trims the outer rungs of both sides first."""
    out: list[Quote] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            out.append(bids[i])
        if i < len(asks):
            out.append(asks[i])
    return tuple(out)


def no_cross_limits(
    best_bid: float | None, best_ask: float | None, tick: float
) -> tuple[float | None, float | None]:
    """(highest bid, lowest ask) that cannot cross the book, even once rounded to a tick.

    Without a known tick, one millionth of the price stands in for it.
    """
    bid_max = ask_min = None
    if best_ask is not None:
        bid_max = best_ask - (tick if tick > 0 else best_ask * 1e-6)
    if best_bid is not None:
        ask_min = best_bid + (tick if tick > 0 else best_bid * 1e-6)
    return bid_max, ask_min


def min_distance_bps(fair: float, tick: float) -> float:
    """One tick from ``fair`` in bps, so a bid and an ask can never round to one price."""
    return tick / fair * BPS if tick > 0 and fair > 0 else 0.0


def requote_headroom(requote_bps: float, size_fraction: float) -> float:
    """The share of its limits (room, balances, position) a fresh ladder may use.

    A held ladder stays valid only while it is within the limits, which move with every
    tick (the position's value moves the room with the mid). A ladder sized right up to
    a limit would be replaced on the next uptick, so fresh ladders leave half the size
    tolerance of each limit unused; 1 when quotes are never held. Sizes that no limit
    binds (a small deficit, the market maker's fixed size) are not affected.
    """
    return 1.0 - size_fraction / 2.0 if requote_bps > 0 else 1.0


def hold_quotes(
    previous: tuple[Quote, ...],
    fresh: tuple[Quote, ...],
    *,
    fair: float,
    tolerance_bps: float,
    size_tolerance: float,
    bid_max: float | None,
    ask_min: float | None,
    room: float,
    limits: SideLimits,
    max_order_quote: float,
    rules: MarketRules | None = None,
) -> tuple[Quote, ...]:
    """``previous`` if it may stay as it is, else ``fresh``.

    Fair price, volatility and depth move on every book update, so a freshly computed
    ladder differs from the last one every time; re-sending it on every update would be
    a cancel/replace storm against the venue's rate limits for no benefit. The resting
    ladder is kept while it is the same rungs, each priced within ``tolerance_bps`` (of
    fair) of its fresh price and sized within ``size_tolerance`` of its fresh size, none
    crossing the book now, and all of it still within the limits a fresh ladder must
    meet (``room`` for both sides, ``limits`` per side, ``max_order_quote`` each).
    Sizes are compared as notional and base with ``rules`` (contract markets).
    """
    if not previous or tolerance_bps <= 0 or len(previous) != len(fresh):
        return fresh
    bounds = LadderBounds(
        fair,
        bid_max,
        ask_min,
        room,
        limits,
        max_order_quote,
        rules if rules is not None else MarketRules(),
    )
    held = _holds(previous, _rows_of(fresh), tolerance_bps, size_tolerance, bounds)
    return previous if held else fresh


Row = tuple[str, str, float, float, str, bool]
"""A fresh rung as :func:`_holds` reads it: symbol, side, price, amount, tag, post-only."""


@dataclass(frozen=True, slots=True)
class LadderBounds:
    """What a ladder asked for must meet, fresh or held: no bid above ``bid_max`` nor
    ask below ``ask_min`` (not crossing the book), ``room`` for both sides, ``limits``
    per side, ``max_order_quote`` each; sized with ``rules``, tolerances read of
    ``fair``."""

    fair: float
    bid_max: float | None
    ask_min: float | None
    room: float
    limits: SideLimits
    max_order_quote: float
    rules: MarketRules


def _rows_of(quotes: tuple[Quote, ...]) -> Iterator[Row]:
    return ((q.symbol, q.side, q.price, q.amount, q.tag, q.post_only) for q in quotes)


def _holds(
    previous: tuple[Quote, ...],
    fresh: Iterable[Row],
    tolerance_bps: float,
    size_tolerance: float,
    bounds: LadderBounds,
) -> bool:
    """The test of :func:`hold_quotes`, against as many fresh rungs as ``previous``."""
    r = bounds.rules
    bid_max, ask_min, max_order_quote = bounds.bid_max, bounds.ask_min, bounds.max_order_quote
    room, limits = bounds.room, bounds.limits
    tolerance = tolerance_bps / BPS * bounds.fair
    # Spot (one base unit per amount): notional is amount x price and the base amount the
    # amount itself, as MarketRules computes them (a x 1.0 is a); read inline, this runs
    # on every reading of an episode.
    unit = r.is_unit
    buy_notional = sell_notional = buy_amount = sell_amount = 0.0
    for old, (symbol, new_side, new_price, new_amount, tag, post_only) in zip(
        previous, fresh, strict=True
    ):
        side = old.side
        if side != new_side or old.tag != tag or old.symbol != symbol or old.post_only != post_only:
            return False
        price = old.price
        if abs(price - new_price) > tolerance:
            return False
        if unit:
            old_notional = old.amount * price
            new_notional = new_amount * new_price
            base = old.amount
        else:
            old_notional = r.notional(price, old.amount)
            new_notional = r.notional(new_price, new_amount)
            base = r.base_amount(price, old.amount)
        if abs(old_notional - new_notional) > size_tolerance * new_notional:
            return False
        if old_notional > max_order_quote:
            return False
        if side == "buy":
            if bid_max is not None and price > bid_max:
                return False
            buy_notional += old_notional
            buy_amount += base
        else:
            if side == "sell" and ask_min is not None and price < ask_min:
                return False
            sell_notional += old_notional
            sell_amount += base
    return (
        buy_notional + sell_notional <= room
        and buy_notional <= limits.buy_quote
        and sell_notional <= limits.sell_quote
        and buy_amount <= limits.buy_base
        and sell_amount <= limits.sell_base
    )


def _rows(symbol: str, bids: Rungs, asks: Rungs) -> Iterator[Row]:
    """Both sides' rungs in :func:`interleave`'s order, as rows."""
    nb, na = len(bids.prices), len(asks.prices)
    for i in range(max(nb, na)):
        if i < nb:
            yield (symbol, bids.side, bids.prices[i], bids.amounts[i], bids.tags[i], True)
        if i < na:
            yield (symbol, asks.side, asks.prices[i], asks.amounts[i], asks.tags[i], True)


class HeldLadders:
    """Per symbol, the ladder last asked for, kept while close to a fresh one
    (:func:`hold_quotes`). One per strategy instance; both strategies share it.

    With ``within_rate``, a ladder out of tolerance is also kept, side by side, while
    the order rate has no room for a fresh one (:func:`keep_stale`): replacing it
    would cancel every rung at once and leave gaps for as long as the rate limit
    holds the new ones back.
    """

    def __init__(
        self, *, tolerance_bps: float, size_tolerance: float, within_rate: bool = False
    ) -> None:
        self._tolerance_bps = tolerance_bps
        self._size_tolerance = size_tolerance
        self._within_rate = within_rate and tolerance_bps > 0
        self._resting: dict[str, tuple[Quote, ...]] = {}

    def hold(
        self,
        symbol: str,
        fresh: tuple[Quote, ...],
        *,
        fair: float,
        bid_max: float | None,
        ask_min: float | None,
        room: float,
        limits: SideLimits,
        max_order_quote: float,
        rules: MarketRules | None = None,
        order_room: int | None = None,
    ) -> tuple[Quote, ...]:
        """:func:`hold_quotes` of the ladder held for ``symbol`` and ``fresh``, kept as
        the one held; with ``within_rate``, :func:`keep_stale` when ``order_room`` is
        short of a fresh ladder."""
        return self._hold(
            symbol,
            lambda: _rows_of(fresh),
            len(fresh),
            lambda: fresh,
            LadderBounds(
                fair,
                bid_max,
                ask_min,
                room,
                limits,
                max_order_quote,
                rules if rules is not None else MarketRules(),
            ),
            order_room,
        )

    def hold_rungs(
        self,
        symbol: str,
        fresh: TwoSidedRungs,
        *,
        fair: float,
        room: float,
        limits: SideLimits,
        max_order_quote: float,
        rules: MarketRules,
        order_room: int | None = None,
    ) -> tuple[Quote, ...]:
        """:meth:`hold` of ``interleave(bids, asks)`` of ``fresh``'s quotes, the same
        answer, with the quotes built only when the resting ladder is not kept."""
        bids, asks = fresh.bids, fresh.asks
        return self._hold(
            symbol,
            lambda: _rows(symbol, bids, asks),
            len(bids) + len(asks),
            lambda: interleave(bids.quotes(symbol), asks.quotes(symbol)),
            LadderBounds(
                fair, fresh.bid_max, fresh.ask_min, room, limits, max_order_quote, rules
            ),
            order_room,
        )

    def _hold(
        self,
        symbol: str,
        rows: Callable[[], Iterable[Row]],
        size: int,
        build: Callable[[], tuple[Quote, ...]],
        bounds: LadderBounds,
        order_room: int | None,
    ) -> tuple[Quote, ...]:
        """The ladder to ask for, of a fresh one given as ``size`` ``rows()`` (its quotes
        made by ``build()`` only when sent) within ``bounds``, and kept as the one held."""
        previous = self._resting.get(symbol, ())
        if (
            previous
            and self._tolerance_bps > 0
            and len(previous) == size
            and _holds(previous, rows(), self._tolerance_bps, self._size_tolerance, bounds)
        ):
            quotes = previous
        elif self._short(previous, size, order_room):
            quotes = keep_stale(
                previous, rows(), self._tolerance_bps, self._size_tolerance, bounds, build
            )
        else:
            quotes = build()
        self._resting[symbol] = quotes
        return quotes

    def _short(self, previous: tuple[Quote, ...], creates: int, order_room: int | None) -> bool:
        """True when a fresh ladder of ``creates`` orders may be put off for the order
        rate: there is a resting one, and the rate has room for fewer orders than that."""
        return (
            self._within_rate
            and bool(previous)
            and order_room is not None
            and order_room < creates
        )

    def forget(self, symbol: str) -> None:
        self._resting.pop(symbol, None)


def keep_stale(
    previous: tuple[Quote, ...],
    fresh: Iterable[Row],
    tolerance_bps: float,
    size_tolerance: float,
    bounds: LadderBounds,
    build: Callable[[], tuple[Quote, ...]],
) -> tuple[Quote, ...]:
    """The ladder to ask for when the order rate has no room for a fresh one: each
    side's resting rungs where they may stay, the fresh rungs (``build()``) elsewhere.

    A side's resting rungs stay while they are the fresh side's rungs (same count and
    tags) and each is *no more aggressive* than its fresh rung beyond the tolerance: a
    bid at most ``tolerance_bps`` (of fair) above its fresh price, an ask at most that
    below, its size at most ``size_tolerance`` over the fresh one. Further away from
    fair, or smaller, is only less exposure. Nothing kept may cross the book or exceed
    the per-order cap, and the ladder asked for (kept and fresh sides together) must
    meet ``bounds``' room and side limits as a fresh one does. A side
    that moved the other way (the market coming toward it) is replaced: the rate
    limiter may then hold some of its rungs back, as it would have without this.
    """
    rules, limits, room = bounds.rules, bounds.limits, bounds.room
    bid_max, ask_min, max_order_quote = bounds.bid_max, bounds.ask_min, bounds.max_order_quote
    tolerance = tolerance_bps / BPS * bounds.fair
    unit = rules.is_unit
    old: dict[str, list[Quote]] = {"buy": [], "sell": []}
    for q in previous:
        old[q.side].append(q)
    new: dict[str, list[Row]] = {"buy": [], "sell": []}
    for r in fresh:
        new[r[1]].append(r)
    totals: dict[str, tuple[float, float]] = {}
    kept: dict[str, bool] = {}
    for side, rows in new.items():
        resting = old[side]
        stays = bool(rows) and len(resting) == len(rows)
        notional = base = 0.0
        if stays:
            for q, (symbol, _, new_price, new_amount, tag, post_only) in zip(
                resting, rows, strict=True
            ):
                price = q.price
                if q.tag != tag or q.symbol != symbol or q.post_only != post_only:
                    stays = False
                    break
                if side == "buy":
                    ok = price <= new_price + tolerance and (bid_max is None or price <= bid_max)
                else:
                    ok = price >= new_price - tolerance and (ask_min is None or price >= ask_min)
                if unit:
                    old_notional = q.amount * price
                    new_notional = new_amount * new_price
                    b = q.amount
                else:
                    old_notional = rules.notional(price, q.amount)
                    new_notional = rules.notional(new_price, new_amount)
                    b = rules.base_amount(price, q.amount)
                if not (
                    ok
                    and old_notional <= new_notional * (1.0 + size_tolerance)
                    and old_notional <= max_order_quote
                ):
                    stays = False
                    break
                notional += old_notional
                base += b
        if not stays:
            notional = base = 0.0
            for _, _, new_price, new_amount, _, _ in rows:
                if unit:
                    notional += new_amount * new_price
                    base += new_amount
                else:
                    notional += rules.notional(new_price, new_amount)
                    base += rules.base_amount(new_price, new_amount)
        kept[side] = stays
        totals[side] = (notional, base)
    (buy_quote, buy_base), (sell_quote, sell_base) = totals["buy"], totals["sell"]
    if not (kept["buy"] or kept["sell"]) or not (
        buy_quote + sell_quote <= room
        and buy_quote <= limits.buy_quote
        and sell_quote <= limits.sell_quote
        and buy_base <= limits.buy_base
        and sell_base <= limits.sell_base
    ):
        return build()
    if kept["buy"] and kept["sell"]:
        return previous
    fresh_quotes = build()
    bids = old["buy"] if kept["buy"] else [q for q in fresh_quotes if q.side == "buy"]
    asks = old["sell"] if kept["sell"] else [q for q in fresh_quotes if q.side == "sell"]
    return interleave(bids, asks)


@dataclass(frozen=True, slots=True)
class TwoSided:
    """Both sides of a ladder and the no-cross limits they were built under."""

    bids: list[Quote]
    asks: list[Quote]
    bid_max: float | None
    ask_min: float | None


@dataclass(frozen=True, slots=True)
class TwoSidedRungs:
    """:class:`TwoSided` before its quotes are built (see :meth:`HeldLadders.hold_rungs`)."""

    bids: Rungs
    asks: Rungs
    bid_max: float | None
    ask_min: float | None


def build_two_sided(
    symbol: str,
    *,
    best_bid: float | None,
    best_ask: float | None,
    fair: float,
    inner_bps: float,
    spacing_bps: float,
    levels: int,
    bid_quote: float,
    ask_quote: float,
    limits: SideLimits,
    max_order_quote: float,
    rules: MarketRules,
    bid_tag: str,
    ask_tag: str,
) -> TwoSided:
    """A ladder on each side around ``fair``, neither side able to cross the book."""
    rungs = plan_two_sided(
        best_bid,
        best_ask,
        fair,
        inner_bps,
        spacing_bps,
        levels,
        bid_quote,
        ask_quote,
        limits,
        max_order_quote,
        rules,
        bid_tag,
        ask_tag,
    )
    return TwoSided(
        rungs.bids.quotes(symbol), rungs.asks.quotes(symbol), rungs.bid_max, rungs.ask_min
    )


def plan_two_sided(
    best_bid: float | None,
    best_ask: float | None,
    fair: float,
    inner_bps: float,
    spacing_bps: float,
    levels: int,
    bid_quote: float,
    ask_quote: float,
    limits: SideLimits,
    max_order_quote: float,
    rules: MarketRules,
    bid_tag: str,
    ask_tag: str,
) -> TwoSidedRungs:
    """:func:`build_two_sided`'s rungs (its arguments by position)."""
    bid_max, ask_min = no_cross_limits(best_bid, best_ask, rules.price_tick)
    bids = _plan(
        "buy",
        fair,
        inner_bps,
        spacing_bps,
        levels,
        bid_quote,
        max_order_quote,
        rules,
        bid_max,
        bid_tag,
        limits.buy_base,
    )
    asks = _plan(
        "sell",
        fair,
        inner_bps,
        spacing_bps,
        levels,
        ask_quote,
        max_order_quote,
        rules,
        ask_min,
        ask_tag,
        limits.sell_base,
    )
    return TwoSidedRungs(bids, asks, bid_max, ask_min)
