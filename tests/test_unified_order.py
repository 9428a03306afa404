"""The paper venue's order structures: its fast path (bot.venues.unified) gives exactly
what ccxt's ``safe_order`` gives, and a rendered order is reused only while unchanged."""

from __future__ import annotations

import copy
import random
from decimal import Decimal
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.venues.paper import PaperVenue, _MyTrade, _Order
from bot.venues.unified import plain_order
from tests.test_paper_venue import SYM, make, markets, post_only


def _venue() -> PaperVenue:
    return PaperVenue(
        markets=markets(), balances={"BTC": 1.0, "USDT": 1e6}, clock=ManualClock(10**18)
    )


def _decimal(rng: random.Random, places: int) -> Decimal:
    return Decimal(rng.randrange(0, 10**9)).scaleb(-rng.randrange(0, places + 1))


def _order(rng: random.Random, symbols: list[str]) -> _Order:
    status = rng.choice(["open", "canceled", "closed"])
    order_type = rng.choice(["limit", "limit", "market"])
    amount = _decimal(rng, 8)
    filled = rng.choice([Decimal(0), Decimal("0.000"), amount / 2, amount])
    traded = filled > 0 and rng.random() < 0.7
    order = _Order(
        id=str(rng.randrange(10**12)),
        client_id=rng.choice(["", "bot-1", f"x-{rng.randrange(10**6)}"]),
        symbol=rng.choice(symbols),
        type=order_type,
        side=rng.choice(["buy", "sell"]),
        price=None if order_type == "market" and rng.random() < 0.5 else _decimal(rng, 6),
        amount=amount,
        time_in_force=rng.choice(["GTC", "IOC", "FOK", "PO"]),
        post_only=rng.random() < 0.5,
        timestamp_ms=rng.randrange(0, 2 * 10**12),
        fee_currency="USDT",
        lock_currency="USDT",
        lock_per_unit=Decimal(1),
        locked=Decimal(0),
        status=status,
        native_status={"open": "NEW", "closed": "FILLED", "canceled": "CANCELED"}[status],
        filled=filled,
        cost=filled * (_decimal(rng, 2) + 1),
        last_update_ms=rng.choice([None, rng.randrange(0, 2 * 10**12)]),
    )
    if traded:
        order.fee_cost = Decimal("0.01")
        order.last_trade_ms = order.last_update_ms
        order.trades.append(
            _MyTrade(
                id="t1",
                order_id=order.id,
                symbol=order.symbol,
                type=order.type,
                side=order.side,
                taker=False,
                price=order.price or Decimal(1),
                amount=filled,
                fee_cost=Decimal("0.01"),
                fee_currency="USDT",
                fee_rate=Decimal("0.001"),
                timestamp_ms=order.timestamp_ms,
            )
        )
    return order


def _same(venue: PaperVenue, raw: dict[str, Any], symbol: str | None = None) -> bool | None:
    """None if the fast path declines ``raw``; else whether it matches safe_order in
    keys, key order, values, value types, and in what both do to ``raw`` itself."""
    fast_raw, ref_raw = copy.deepcopy(raw), copy.deepcopy(raw)
    fast = plain_order(fast_raw)
    if fast is None:
        return None
    ref = venue._ex.safe_order(ref_raw, venue.market(symbol or raw["symbol"]))
    return repr(list(fast.items())) == repr(list(ref.items())) and repr(fast_raw) == repr(
        ref_raw
    )


def test_fast_path_is_safe_order_on_every_order_the_venue_renders() -> None:
    venue = _venue()
    symbols = [s for s, m in venue.markets.items() if m.get("spot")][:20]
    rng = random.Random(7)
    used = declined = 0
    for _ in range(3000):
        raw = venue._raw_order(_order(rng, symbols))
        same = _same(venue, raw)
        if same is None:
            declined += 1
            # What it declines: an order that has traded (trades, fee, average).
            assert raw["trades"] or raw["average"] is not None or float(raw["filled"]) != 0
        else:
            assert same, raw
            used += 1
    assert used > 1000
    assert declined > 300


_DECLINED: list[tuple[str, Any]] = [
    # safe_order derives, converts or formats these itself: left to it.
    ("amount", "0"),
    ("amount", "0.000"),
    ("amount", None),
    ("remaining", None),
    ("filled", None),
    ("filled", ""),
    ("cost", None),
    ("average", "0"),
    ("fee", {"cost": 0.1, "currency": "USDT"}),
    ("fees", []),
    ("triggerPrice", "60000"),
    ("stopLossPrice", "1"),
    ("takeProfitPrice", 2.0),
    ("datetime", None),
    ("timeInForce", None),
    ("timeInForce", ""),
    ("postOnly", None),
    ("timestamp", "1700000000000"),
    ("timestamp", 1.7e12),
    ("lastUpdateTimestamp", True),
    # Not numbers: safe_order's helpers make None of them; the fast path must not raise.
    ("amount", "abc"),
    ("filled", "x"),
    ("remaining", "x"),
    ("cost", "abc"),
    ("price", "p"),
]
_MATCHED: list[tuple[str, Any]] = [
    ("cost", 12.5),
    ("price", "0"),
    ("price", ""),
    ("price", 61000.5),
    ("timestamp", None),
    ("lastTradeTimestamp", 5),
    ("id", 123),
    ("clientOrderId", ""),
    ("clientOrderId", None),
    ("symbol", None),
    ("side", ""),
    ("status", None),
    ("type", "market"),
    ("reduceOnly", True),
    ("trades", None),
]
_CASES = [(k, v, False) for k, v in _DECLINED] + [(k, v, True) for k, v in _MATCHED]


@pytest.mark.parametrize(
    ("key", "value", "fast"), _CASES, ids=[f"{k}={v!r}" for k, v, _ in _CASES]
)
def test_fast_path_declines_or_matches_on_unusual_fields(key: str, value: Any, fast: bool) -> None:
    venue = _venue()
    rng = random.Random(11)
    results = []
    for _ in range(60):
        order = _order(rng, [SYM])
        order.trades.clear()
        order.filled = order.cost = order.fee_cost = Decimal(0)
        raw = venue._raw_order(order)
        raw[key] = value
        results.append(_same(venue, raw, SYM))
    assert results == ([True] * 60 if fast else [None] * 60)


async def test_the_fast_path_changes_no_answer_of_a_trading_session() -> None:
    async def session(plain: bool) -> list[str]:
        venue, tape = make(ManualClock(10**18))
        venue._plain_orders = plain
        out = []
        rest = await post_only(venue, "buy", 0.5, 61000.00, clientOrderId="bot-1")
        out.append(rest)
        out.append(await venue.create_order(SYM, "limit", "buy", 1.8, 61000.02))
        tape.trade(61000.00, 1.2, "sell")  # a partial maker fill
        out.append(await venue.fetch_order(rest["id"], SYM))
        out.append(await venue.cancel_order(rest["id"], SYM))
        other = await post_only(venue, "sell", 0.1, 61005.00)
        out.append(await venue.cancel_order(other["id"], SYM))
        out += await venue.fetch_orders(SYM)
        return [repr(sorted(o.items())) for o in out]

    assert await session(True) == await session(False)


async def test_a_rendered_order_is_reused_only_while_the_order_is_unchanged() -> None:
    venue, tape = make(ManualClock(10**18))
    placed = await post_only(venue, "buy", 0.5, 61000.00, clientOrderId="bot-1")
    placed["status"] = "mangled by the caller"
    placed["filled"] = 99.0
    again = await venue.fetch_order(placed["id"], SYM)
    assert again["status"] == "open"
    assert again["filled"] == 0.0
    tape.trade(61000.00, 1.2, "sell")  # fills 0.2 of it
    filled = await venue.fetch_order(placed["id"], SYM)
    assert filled["filled"] == pytest.approx(0.2)
    assert filled["trades"]
    canceled = await venue.cancel_order(placed["id"], SYM)
    assert canceled["status"] == "canceled"
    assert (await venue.fetch_order(placed["id"], SYM))["status"] == "canceled"
