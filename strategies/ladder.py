"""Pricing and sizing pieces the strategies share: fair price, skew, ladders.

Pure functions of their arguments; no rounding (the order manager rounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
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
    if levels <= 0 or not total_quote > 0 or not fair > 0 or not max_base > 0:
        return []
    sign = -1.0 if side == "buy" else 1.0
    prices: list[float] = []
    for i in range(levels):
        price = fair * (1.0 + sign * (inner_bps + i * spacing_bps) / BPS)
        if limit_price is not None:
            price = min(price, limit_price) if side == "buy" else max(price, limit_price)
        if not price > 0:
            break
        prices.append(price)
    for k in range(len(prices), 0, -1):
        per = min(total_quote / k, max_order_quote)
        inverse = sum(1.0 / p for p in prices[:k])  # base per unit of notional per rung
        if per * inverse > max_base:
            per = max_base / inverse * (1.0 - 1e-12)
        if per >= max(rules.min_notional(p) for p in prices[:k]):
            return [
                Quote(
                    symbol,
                    side,
                    prices[i],
                    rules.amount_for_notional(per, prices[i]),
                    post_only=True,
                    tag=f"{tag}{i}",
                )
                for i in range(k)
            ]
    return []


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
    r = rules if rules is not None else MarketRules()
    tolerance = tolerance_bps / BPS * fair
    notional = {"buy": 0.0, "sell": 0.0}
    amount = {"buy": 0.0, "sell": 0.0}
    for old, new in zip(previous, fresh, strict=True):
        same_rung = (old.symbol, old.side, old.tag, old.post_only) == (
            new.symbol,
            new.side,
            new.tag,
            new.post_only,
        )
        if not same_rung or abs(old.price - new.price) > tolerance:
            return fresh
        old_notional = r.notional(old.price, old.amount)
        new_notional = r.notional(new.price, new.amount)
        if abs(old_notional - new_notional) > size_tolerance * new_notional:
            return fresh
        if old_notional > max_order_quote:
            return fresh
        if old.side == "buy" and bid_max is not None and old.price > bid_max:
            return fresh
        if old.side == "sell" and ask_min is not None and old.price < ask_min:
            return fresh
        notional[old.side] += old_notional
        amount[old.side] += r.base_amount(old.price, old.amount)
    within = (
        notional["buy"] + notional["sell"] <= room
        and notional["buy"] <= limits.buy_quote
        and notional["sell"] <= limits.sell_quote
        and amount["buy"] <= limits.buy_base
        and amount["sell"] <= limits.sell_base
    )
    return previous if within else fresh


class HeldLadders:
    """Per symbol, the ladder last asked for, kept while close to a fresh one
    (:func:`hold_quotes`). One per strategy instance; both strategies share it."""

    def __init__(self, *, tolerance_bps: float, size_tolerance: float) -> None:
        self._tolerance_bps = tolerance_bps
        self._size_tolerance = size_tolerance
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
    ) -> tuple[Quote, ...]:
        quotes = hold_quotes(
            self._resting.get(symbol, ()),
            fresh,
            fair=fair,
            tolerance_bps=self._tolerance_bps,
            size_tolerance=self._size_tolerance,
            bid_max=bid_max,
            ask_min=ask_min,
            room=room,
            limits=limits,
            max_order_quote=max_order_quote,
            rules=rules,
        )
        self._resting[symbol] = quotes
        return quotes

    def forget(self, symbol: str) -> None:
        self._resting.pop(symbol, None)


@dataclass(frozen=True, slots=True)
class TwoSided:
    """Both sides of a ladder and the no-cross limits they were built under."""

    bids: list[Quote]
    asks: list[Quote]
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
    bid_max, ask_min = no_cross_limits(best_bid, best_ask, rules.price_tick)
    ladder = partial(
        build_ladder,
        symbol,
        fair=fair,
        inner_bps=inner_bps,
        spacing_bps=spacing_bps,
        levels=levels,
        max_order_quote=max_order_quote,
        rules=rules,
    )
    bids = ladder(
        "buy", total_quote=bid_quote, limit_price=bid_max, tag=bid_tag, max_base=limits.buy_base
    )
    asks = ladder(
        "sell", total_quote=ask_quote, limit_price=ask_min, tag=ask_tag, max_base=limits.sell_base
    )
    return TwoSided(bids, asks, bid_max, ask_min)
