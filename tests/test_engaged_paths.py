"""The engaged reading's shortcuts say exactly what the plain code says.

While a market is engaged every book reading runs the strategy's ladder, the budget's
fit, the risk engine's checks of the set and the evidence record. Their fast forms
(the risk engine reading its state once per set and writing one context, the ladder
built with positional calls, the held ladder compared inline, the first trigger only)
must decide word for word what the step-by-step forms decide: the same quotes, the
same denials in the same order, the same guard events.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import pytest
from order_fakes import BTC, FakeVenue, OpenThrottle, RecordingSleep

from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.feeds.events import BookSnapshot, levels
from bot.logs import null_logger
from bot.orders import OrderManager
from bot.orders.manager import SyncResult
from bot.positions import PerpLimits
from bot.risk import QuoteContext, QuotesCheck, RiskEngine, RiskEvent, TradingState
from bot.settings.models import GuardSettings, RiskSettings
from bot.venues import matching
from bot.venues.matching import sizes_at
from strategies.base import MarketRules, Quote
from strategies.ladder import (
    BPS,
    HeldLadders,
    SideLimits,
    build_ladder,
    build_two_sided,
    hold_quotes,
    interleave,
    plan_two_sided,
)

ETH = "ETH/USDT"
SIGNS: tuple[tuple[Literal["buy", "sell"], int], ...] = (("buy", -1), ("sell", 1))
SPOT = MarketRules(price_tick=0.01, amount_step=1e-5, amount_min=1e-5, cost_min=5.0)
RULES = (
    SPOT,
    MarketRules(),
    MarketRules(contract_size=100.0, inverse=True, cost_min=1.0),
    MarketRules(contract_size=0.001, amount_min=1.0, amount_step=1.0),
)


# --------------------------------------------------------------------------- risk: a set


def reference_check(engine: RiskEngine, quotes: list[Quote], ctx: QuoteContext) -> QuotesCheck:
    """What check_quotes says, one quote at a time through the engine's full check."""
    result = QuotesCheck()
    for quote in quotes:
        denial = engine._check(quote, ctx)
        if denial is None:
            result.allowed.append(quote)
            ctx = ctx.with_sent(quote)
        else:
            engine._deny(quote, denial)
            result.denied.append((quote, denial))
    return result


def _engines(**risk: Any) -> tuple[RiskEngine, RiskEngine, list[RiskEvent], list[RiskEvent]]:
    config = RiskSettings(guards=GuardSettings(), **risk)
    out: list[Any] = []
    for _ in range(2):
        engine = RiskEngine(config, clock=ManualClock(), log=null_logger(), symbols=[BTC, ETH])
        events: list[RiskEvent] = []
        engine.subscribe(events.append)
        out.append((engine, events))
    (a, ea), (b, eb) = out
    return a, b, ea, eb


def _random_set(rng: random.Random, mid: float) -> list[Quote]:
    quotes = []
    for _ in range(rng.randint(1, 8)):
        side: Literal["buy", "sell"] = rng.choice(["buy", "sell"])
        away = rng.choice([5e-4, 1e-3, 2e-3, 6e-3, 0.2, -5e-4])
        price = mid * (1 - away) if side == "buy" else mid * (1 + away)
        amount = rng.choice([0.001, 0.01, 0.05, 0.2, 2.0])
        odd = rng.random()
        if odd < 0.03:
            price = math.nan
        elif odd < 0.05:
            amount = -1.0
        elif odd < 0.07:
            amount = 1  # an int: check_valid's own path
        quotes.append(
            Quote(
                rng.choice([BTC, BTC, BTC, ETH]),
                side,
                price,
                amount,
                post_only=rng.random() < 0.9,
                tag=rng.choice(["backstop:bid:0", "taker:x", ""]),
            )
        )
    return quotes


def _random_context(rng: random.Random, mid: float) -> QuoteContext:
    perp = rng.random() < 0.3
    return QuoteContext(
        mid=mid,
        best_bid=mid * 0.9999,
        best_ask=mid * 1.0001,
        position_base=rng.uniform(-0.3, 0.3),
        resting_buy_base=rng.uniform(0, 0.05),
        resting_sell_base=rng.uniform(0, 0.05),
        open_orders=rng.randint(0, 8),
        market_committed_quote=rng.uniform(0, 8_000),
        total_committed_quote=rng.uniform(8_000, 20_000),
        rules=MarketRules(contract_size=0.001) if perp else MarketRules(),
        leverage=5.0 if perp else None,
        perp=PerpLimits(max_position_contracts=300.0) if perp else None,
    )


def _set_state(rng: random.Random, engine: RiskEngine) -> None:
    roll = rng.random()
    if roll < 0.1:
        engine.set_trading_state(TradingState.HALTED, reason="test")
    elif roll < 0.2:
        engine.set_trading_state(TradingState.REDUCING, reason="test")
    elif roll < 0.3:
        engine.pause(rng.choice([BTC, ETH]), reason="test")


def test_a_set_is_checked_as_the_engine_checks_each_quote() -> None:
    rng = random.Random(7)
    codes: set[str] = set()
    for case in range(600):
        limits = rng.choice(
            [
                {},
                {
                    "max_order_quote": 2_000.0,
                    "max_open_orders_per_market": 6,
                    "max_position_base": {"BTC": 0.25},
                    "fat_finger_bps": 500.0,
                },
            ]
        )
        fast, slow, fast_events, slow_events = _engines(**limits)
        seed = rng.random()
        _set_state(random.Random(seed), fast)
        _set_state(random.Random(seed), slow)
        mid = 60_000.0
        quotes = _random_set(rng, mid)
        ctx = _random_context(rng, mid)
        got = fast.check_quotes(quotes, ctx)
        want = reference_check(slow, quotes, ctx)
        assert got.allowed == want.allowed, case
        assert got.denied == want.denied, case
        assert fast.denials == slow.denials, case
        assert [type(e).__name__ for e in fast_events] == [type(e).__name__ for e in slow_events], (
            case
        )
        assert [fast.is_paused(s) for s in (BTC, ETH)] == [slow.is_paused(s) for s in (BTC, ETH)]
        codes |= {d.split(":", 1)[0] for _, d in got.denied} | ({"OK"} if got.allowed else set())
    # The cases reached the stateful denials, the fat finger's pause and plain passes.
    assert {
        "OK",
        "INVALID_QUOTE",
        "FAT_FINGER_PRICE",
        "MARKET_PAUSED",
        "TRADING_HALTED",
        "TRADING_REDUCING",
        "OPEN_ORDERS_EXCEED_MAX",
    } <= codes, codes


def test_a_fat_finger_in_the_middle_of_a_set_pauses_the_quotes_after_it() -> None:
    fast, _, events, _ = _engines()
    ctx = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0)
    quotes = [
        Quote(BTC, "buy", 59_900.0, 0.01),
        Quote(BTC, "buy", 30_000.0, 0.01),  # 5,000 bps away: a unit mistake
        Quote(BTC, "sell", 60_100.0, 0.01),
        Quote(ETH, "sell", 60_100.0, 0.01),
    ]
    result = fast.check_quotes(quotes, ctx)
    assert result.allowed == [quotes[0], quotes[3]]
    assert [d.split(":", 1)[0] for _, d in result.denied] == ["FAT_FINGER_PRICE", "MARKET_PAUSED"]
    assert fast.is_paused(BTC)
    assert not fast.is_paused(ETH)
    assert events  # the guard fired


def test_the_context_the_caller_passed_is_left_as_it_was() -> None:
    fast, _, _, _ = _engines()
    ctx = QuoteContext(mid=60_000.0, best_bid=59_990.0, best_ask=60_010.0, open_orders=1)
    before = repr(ctx)
    quotes = [Quote(BTC, "buy", 59_900.0 - i, 0.01) for i in range(5)]
    assert len(fast.check_quotes(quotes, ctx).allowed) == 5
    assert repr(ctx) == before


def test_send_writes_what_with_sent_returns() -> None:
    rng = random.Random(3)
    for _ in range(500):
        ctx = _random_context(rng, 60_000.0)
        quote = _random_set(rng, 60_000.0)[0]
        own = ctx.with_sent(Quote(BTC, "buy", 59_000.0, 0.01))
        want = own.with_sent(quote)
        own.send(quote)
        assert repr(own) == repr(want)  # repr: a NaN price's numbers compare too


# --------------------------------------------------------------------------- the ladder


def reference_ladder(
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
    """build_ladder as it was written first (min/max, generators, keyword Quote)."""
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
        inverse = sum(1.0 / p for p in prices[:k])
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


def _ladder_args(rng: random.Random) -> dict[str, Any]:
    fair = rng.choice([61_759.56, 3_000.1, 1.2345, 0.0, -1.0])
    return {
        "fair": fair,
        "inner_bps": rng.uniform(0, 50),
        "spacing_bps": rng.choice([0.0, 1.0, 5.0, 20_000.0]),
        "levels": rng.randint(0, 5),
        "total_quote": rng.choice([0.0, 1.0, 10.0, 30.0, 3_000.0, 1e6]),
        "max_order_quote": rng.choice([5.0, 100.0, 1e4]),
        "rules": rng.choice(RULES),
        "limit_price": rng.choice([None, fair * 0.999, fair * 1.001, fair, math.nan]),
        "tag": rng.choice(["a:", "backstop:ask:"]),
        "max_base": rng.choice([math.inf, 0.0, 1e-3, 0.4, 10.0]),
    }


def test_a_ladder_is_built_as_the_reference_builds_it() -> None:
    rng = random.Random(11)
    sizes = set()
    for _ in range(20_000):
        args = _ladder_args(rng)
        side: Literal["buy", "sell"] = rng.choice(["buy", "sell"])
        got = build_ladder("S", side, **args)
        assert got == reference_ladder("S", side, **args), args
        sizes.add(len(got))
    assert sizes >= {0, 1, 2, 3, 4, 5}


def test_both_sides_are_the_two_ladders() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        args = _ladder_args(rng)
        limits = SideLimits(1e9, 1e9, rng.choice([0.3, math.inf]), rng.choice([0.3, math.inf]))
        best_bid, best_ask = args["fair"] * 0.9999, args["fair"] * 1.0001
        sides = build_two_sided(
            "S",
            best_bid=best_bid,
            best_ask=best_ask,
            fair=args["fair"],
            inner_bps=args["inner_bps"],
            spacing_bps=args["spacing_bps"],
            levels=args["levels"],
            bid_quote=args["total_quote"],
            ask_quote=args["total_quote"] / 2,
            limits=limits,
            max_order_quote=args["max_order_quote"],
            rules=args["rules"],
            bid_tag="b:",
            ask_tag="a:",
        )
        common = {k: args[k] for k in ("fair", "inner_bps", "spacing_bps", "levels")}
        common |= {"max_order_quote": args["max_order_quote"], "rules": args["rules"]}
        assert sides.bids == reference_ladder(
            "S",
            "buy",
            total_quote=args["total_quote"],
            limit_price=sides.bid_max,
            tag="b:",
            max_base=limits.buy_base,
            **common,
        )
        assert sides.asks == reference_ladder(
            "S",
            "sell",
            total_quote=args["total_quote"] / 2,
            limit_price=sides.ask_min,
            tag="a:",
            max_base=limits.sell_base,
            **common,
        )


def reference_hold(
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
    rules: MarketRules,
) -> tuple[Quote, ...]:
    """hold_quotes as it was written first (tuples compared, rules' methods, dicts)."""
    if not previous or tolerance_bps <= 0 or len(previous) != len(fresh):
        return fresh
    r = rules
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


def _jiggle(rng: random.Random, ladder: tuple[Quote, ...]) -> tuple[Quote, ...]:
    out = []
    for q in ladder:
        price = q.price * (1 + rng.choice([0.0, 1e-5, -1e-5, 3e-4, -3e-4]))
        amount = q.amount * (1 + rng.choice([0.0, 0.02, -0.02, 0.3]))
        tag = q.tag if rng.random() < 0.97 else q.tag + "x"
        post_only = q.post_only if rng.random() < 0.98 else not q.post_only
        out.append(Quote(q.symbol, q.side, price, amount, post_only, tag))
    return tuple(out)


def test_a_held_ladder_is_kept_exactly_when_the_reference_keeps_it() -> None:
    rng = random.Random(17)
    kept = replaced = 0
    for _ in range(20_000):
        rules = rng.choice(RULES)
        fair = 60_000.0
        n = rng.randint(0, 4)
        previous = tuple(
            Quote(BTC, side, fair * (1 + s * (3 + i) / BPS), 0.1, True, f"{side}{i}")
            for i in range(n)
            for side, s in SIGNS
        )
        fresh = _jiggle(rng, previous)
        if rng.random() < 0.05:
            fresh = fresh[:-1]
        args: dict[str, Any] = {
            "fair": fair,
            "tolerance_bps": rng.choice([0.0, 2.0, 5.0]),
            "size_tolerance": rng.choice([0.05, 0.5]),
            "bid_max": rng.choice([None, fair, fair * 0.9996]),
            "ask_min": rng.choice([None, fair, fair * 1.0004]),
            "room": rng.choice([1e9, 5_000.0, 100.0]),
            "limits": SideLimits(
                rng.choice([1e9, 3_000.0]),
                rng.choice([1e9, 3_000.0]),
                rng.choice([math.inf, 0.25, 100.0]),
                rng.choice([math.inf, 0.25, 100.0]),
            ),
            "max_order_quote": rng.choice([1e9, 5_000.0, 10.0]),
            "rules": rules,
        }
        want = reference_hold(previous, fresh, **args)
        got = hold_quotes(previous, fresh, **args)
        assert got is want
        if previous and got is previous:
            kept += 1
        else:
            replaced += 1
    assert kept > 500
    assert replaced > 1_000


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_held_rung_that_would_cross_is_replaced(side: Literal["buy", "sell"]) -> None:
    q = Quote(BTC, side, 60_000.0, 0.1, True, "r0")
    near = Quote(BTC, side, 60_000.5, 0.1, True, "r0")
    limits = SideLimits(1e9, 1e9, math.inf, math.inf)
    common: dict[str, Any] = {
        "fair": 60_000.0,
        "tolerance_bps": 5.0,
        "size_tolerance": 0.1,
        "room": 1e9,
        "limits": limits,
        "max_order_quote": 1e9,
    }
    assert hold_quotes((q,), (near,), bid_max=None, ask_min=None, **common) == (q,)
    bid_max, ask_min = (59_999.0, None) if side == "buy" else (None, 60_001.0)
    assert hold_quotes((q,), (near,), bid_max=bid_max, ask_min=ask_min, **common) == (near,)


# --------------------------------------------------------------------------- the order manager


def _manager(venue: FakeVenue, clock: ManualClock) -> OrderManager:
    return OrderManager(
        venue,
        clock=clock,
        rng=random.Random(42),
        log=null_logger(),
        throttler=OpenThrottle(),
        sleep=RecordingSleep(clock),
    )


def _result(r: SyncResult) -> tuple[Any, ...]:
    return (r.kept, r.canceling, r.creating, r.busy, r.refused, r.skipped, len(r.deferred))


async def test_a_held_ladder_synced_again_is_diffed_as_a_fresh_equal_one() -> None:
    """The same quote objects (a held ladder) and equal copies of them, through the same
    script of syncs, fills, cancels and loop turns: the same decisions and venue calls."""
    rng = random.Random(23)
    clocks = (ManualClock(), ManualClock())
    venues = (FakeVenue(clocks[0]), FakeVenue(clocks[1]))
    held, fresh = (_manager(v, c) for v, c in zip(venues, clocks, strict=True))
    ladder = tuple(
        Quote(BTC, side, 60_000.0 + s * (10 + i), 0.01, True, f"{side}{i}")
        for i in range(3)
        for side, s in SIGNS
    )
    shortcuts = 0
    for _ in range(300):
        step = rng.random()
        if step < 0.15:  # a new ladder: one rung moves
            i = rng.randrange(len(ladder))
            q = ladder[i]
            moved = Quote(
                q.symbol, q.side, q.price + rng.choice([-1.0, 1.0]), q.amount, True, q.tag
            )
            ladder = (*ladder[:i], moved, *ladder[i + 1 :])
        elif step < 0.25:  # a partial fill on the venue, pushed to both
            orders = held.open_orders(BTC)
            if orders:
                cid = rng.choice(orders).client_id
                for v, m in zip(venues, (held, fresh), strict=True):
                    on_venue = v.find(cid)
                    if on_venue is not None and on_venue["status"] == "open":
                        update, _trade = v.fill(cid, 0.002)
                        m.on_order_update(update)
        elif step < 0.3:  # an order cancelled by hand
            orders = held.open_orders(BTC)
            if orders:
                cid = rng.choice(orders).client_id
                assert held.cancel(cid) == fresh.cancel(cid)
        elif step < 0.5:  # the loop runs the actions started so far
            await held.drain()
            await fresh.drain()
        for c in clocks:
            c.advance(rng.choice([0, 10_000_000, 2_000_000_000]))
        copies = tuple(
            Quote(q.symbol, q.side, q.price, q.amount, q.post_only, q.tag) for q in ladder
        )
        still = "BTC/USDT" in held._still
        a = held.sync_quotes(BTC, ladder)
        fresh._still.clear()  # the reference diffs every time
        b = fresh.sync_quotes(BTC, copies)
        shortcuts += still and _result(a) == _result(b) and not (a.creating or a.canceling)
        assert _result(a) == _result(b)
        assert venues[0].calls == venues[1].calls
    await held.drain()
    await fresh.drain()
    assert venues[0].calls == venues[1].calls
    assert shortcuts > 30  # the held ladder did take the shortcut, many times


async def test_a_fill_on_a_held_ladder_replaces_the_order() -> None:
    clock = ManualClock()
    venue = FakeVenue(clock)
    om = _manager(venue, clock)
    first = (Quote(BTC, "buy", 60_000.0, 0.02), Quote(BTC, "sell", 61_000.0, 0.02))
    om.sync_quotes(BTC, first)
    await om.drain()
    bid_id, ask_id = om.sync_quotes(BTC, first).kept
    update, _trade = venue.fill(bid_id, 0.005)
    om.on_order_update(update)
    # The partly filled bid is what this ladder asks for: kept, twice (the shortcut).
    ladder = (Quote(BTC, "buy", 60_000.0, 0.015), first[1])
    assert om.sync_quotes(BTC, ladder).kept == [bid_id, ask_id]
    assert om.sync_quotes(BTC, ladder).kept == [bid_id, ask_id]
    # A second fill leaves the bid partly filled still, with less remaining: replaced.
    update, _trade = venue.fill(bid_id, 0.005)
    om.on_order_update(update)
    replaced = om.sync_quotes(BTC, ladder)
    assert replaced.canceling == [bid_id]
    assert replaced.kept == [ask_id]
    # A ladder of new (equal) quote objects is diffed afresh: nothing more to do.
    await om.drain()
    again = (Quote(BTC, "buy", 60_000.0, 0.015), Quote(BTC, "sell", 61_000.0, 0.02))
    assert om.sync_quotes(BTC, again).creating == []


@pytest.mark.parametrize("within_rate", [False, True])
def test_holding_rungs_is_holding_the_quotes_they_make(within_rate: bool) -> None:
    """The backstop's path (rungs, quotes built only when sent) against building both
    sides' quotes, interleaving them and holding: the same ladder, the same objects.
    Within the order rate, the sides kept for want of room are the same too."""
    rng = random.Random(29)
    by_rungs = HeldLadders(tolerance_bps=5.0, size_tolerance=0.2, within_rate=within_rate)
    by_quotes = HeldLadders(tolerance_bps=5.0, size_tolerance=0.2, within_rate=within_rate)
    kept = mixed = 0
    fair = 60_000.0
    for _ in range(5_000):
        fair *= 1 + rng.choice([0.0, 1e-5, -1e-5, 2e-4, -2e-4, 2e-3])
        rules = rng.choice(RULES[:2])
        args = (
            rng.choice([fair * 0.9999, None]),
            rng.choice([fair * 1.0001, None]),
            fair,
            rng.choice([4.0, 4.1]),
            1.0,
            rng.choice([3, 3, 3, 2]),
            rng.choice([3_000.0, 3_100.0, 9.0, 0.0]),
            rng.choice([3_000.0, 2_900.0]),
            SideLimits(1e9, 1e9, rng.choice([math.inf, 0.03]), math.inf),
            10_000.0,
            rules,
            "backstop:bid:",
            "backstop:ask:",
        )
        limits = SideLimits(rng.choice([1e9, 5_000.0]), 1e9, math.inf, math.inf)
        room = rng.choice([1e9, 8_000.0])
        order_room = rng.choice([None, 0, 3, 6])
        rungs = plan_two_sided(*args)
        got = by_rungs.hold_rungs(
            BTC,
            rungs,
            fair=fair,
            room=room,
            limits=limits,
            max_order_quote=9_000.0,
            rules=rules,
            order_room=order_room,
        )
        sides = build_two_sided(
            BTC,
            best_bid=args[0],
            best_ask=args[1],
            fair=fair,
            inner_bps=args[3],
            spacing_bps=args[4],
            levels=args[5],
            bid_quote=args[6],
            ask_quote=args[7],
            limits=args[8],
            max_order_quote=args[9],
            rules=rules,
            bid_tag=args[11],
            ask_tag=args[12],
        )
        previous = by_quotes._resting.get(BTC, ())
        want = by_quotes.hold(
            BTC,
            interleave(sides.bids, sides.asks),
            fair=fair,
            bid_max=sides.bid_max,
            ask_min=sides.ask_min,
            room=room,
            limits=limits,
            max_order_quote=9_000.0,
            rules=rules,
            order_room=order_room,
        )
        assert got == want
        if previous and want != previous and set(want) & set(previous):
            mixed += 1  # one side kept, the other fresh
        if previous and want is previous:
            kept += 1
            assert got is by_rungs._resting[BTC]
            # Kept: both hand back the very objects they held (the order manager's cue).
            assert got == previous
        by_rungs._resting[BTC] = want  # the same objects from here on
        by_quotes._resting[BTC] = want
    assert kept > 500
    if within_rate:
        assert mixed > 100


# --------------------------------------------------------------------------- paper matching


@pytest.mark.parametrize("depth", [3, 20, 24, 25, 60, 200])
def test_sizes_at_reads_the_same_sizes_by_dict_and_by_search(
    depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(depth)
    for _ in range(50):
        bids = [
            [60_000.0 - 0.01 * i * rng.randint(1, 3), rng.uniform(0.001, 2)] for i in range(depth)
        ]
        bids = sorted({p: [p, s] for p, s in bids}.values(), reverse=True)
        asks = [[p + 100.0, s] for p, s in reversed(bids)]
        book = OrderBook(BTC, clock=ManualClock())
        assert book.apply(BookSnapshot(BTC, 1, levels(bids), levels(asks))) is None
        for side, rows in ((Side.BID, bids), (Side.ASK, asks)):
            wanted = [rng.choice(rows)[0] for _ in range(rng.randint(1, 4))]
            wanted.append(rows[0][0] + (0.005 if side is Side.ASK else -0.005))  # no level
            monkeypatch.setattr(matching, "_DICT_ROWS", 10**9)
            by_dict = sizes_at(book, side, wanted)
            monkeypatch.setattr(matching, "_DICT_ROWS", 0)
            by_search = sizes_at(book, side, wanted)
            assert by_dict == by_search
            sizes = {price: size for price, size in rows}
            assert by_dict[:-1] == [sizes[p] for p in wanted[:-1]]
