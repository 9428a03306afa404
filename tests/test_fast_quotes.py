"""The order manager's fast quote preparation against the general one, quote for quote.

``FastQuotes.prepare`` must give exactly what ``prepare_quote`` gives with the paper
venue's rounding (the same price and amount floats), or decline (None) so the general
path answers; it must never answer differently. And the tracker's per-symbol index
must list the same open orders, in the same order, as a scan of every order.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import pytest
from precision_support import EXCHANGES, offline_exchange

from bot.clock import ManualClock
from bot.logs import null_logger
from bot.orders.config import OrderManagerConfig
from bot.orders.ids import ClientIdFactory
from bot.orders.quotes import FastQuotes, PreparedQuote, prepare_quote
from bot.orders.state import TERMINAL_STATES, OrderEvent, OrderState, TrackedOrder
from bot.orders.tracker import OrderTracker
from bot.orders.updates import OrderUpdate
from bot.venues.rules import amount_to_precision, precision_of, price_to_precision
from strategies.base import Quote


def _values(rng: random.Random, scale: float, n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            out.append(rng.uniform(0, 2 * scale))
        elif kind < 0.7:
            out.append(10 ** rng.uniform(-10, 9))
        elif kind < 0.9:
            out.append(round(rng.uniform(0, 2 * scale), rng.randint(0, 9)))
        else:
            out.append(rng.randint(1, 10**5))
    out += [0.0, -1.0, float("nan"), float("inf"), 1e-12, 1e16, 0.1 + 0.2, 61800.005]
    return out


@pytest.mark.parametrize("exchange_id", EXCHANGES)
def test_fast_preparation_equals_the_general_path(exchange_id: str) -> None:
    rng = random.Random(5)
    ex, markets = offline_exchange(exchange_id)
    assert markets
    fast_answers = 0
    for symbol, market in markets.items():
        fast = FastQuotes.of(market, precision_of(ex, symbol))
        if fast is None:
            continue

        def a2p(s: str, a: float) -> str:
            return amount_to_precision(ex, s, a)

        def p2p(s: str, p: float) -> str:
            return price_to_precision(ex, s, p)

        tick = float(market["precision"]["price"])
        min_amount = float((market["limits"]["amount"] or {}).get("min") or 1e-3)
        prices = _values(rng, max(tick * 1e4, 60_000.0 * rng.random()), 150)
        # Grid points and their float neighbours: where snapping down or up can go wrong.
        for _ in range(40):
            on_grid = float(Decimal(rng.randint(1, 10**7)) * Decimal(str(tick)))
            prices += [on_grid, math.nextafter(on_grid, 0), math.nextafter(on_grid, math.inf)]
        for price in prices:
            for amount in _values(rng, min_amount * 100, 3):
                for side in ("buy", "sell", "hold"):
                    quote = Quote(symbol, side, price, amount, tag="t")  # type: ignore[arg-type]
                    got = fast.prepare(quote)
                    if got is None:
                        continue
                    fast_answers += 1
                    want = prepare_quote(quote, market, a2p, p2p)
                    assert isinstance(want, PreparedQuote), (symbol, quote, want)
                    assert (got.price, got.amount) == (want.price, want.amount), (symbol, quote)
                    assert got.quote is quote
    # The fast path answers for the usual quotes, not only declines.
    assert fast_answers > 500


def test_fast_preparation_declines_what_it_must_leave_to_ccxt() -> None:
    ex, markets = offline_exchange("binance")
    market = markets["BTC/USDT"]
    fast = FastQuotes.of(market, precision_of(ex, "BTC/USDT"))
    assert fast is not None
    ok = fast.prepare(Quote("BTC/USDT", "buy", 61234.567, 0.0123456, tag="t"))
    assert ok is not None
    assert (ok.price, ok.amount) == (61234.56, 0.01234)
    sell = fast.prepare(Quote("BTC/USDT", "sell", 61234.561, 0.0123456, tag="t"))
    assert sell is not None
    assert sell.price == 61234.57  # an ask snaps up, away from the touch
    declined = [
        Quote("BTC/USDT", "buy", 61234.5, 1e-7, tag="t"),  # amount rounds to zero
        Quote("BTC/USDT", "buy", 61234.5, 5e-5, tag="t"),  # below the minimum notional
        Quote("BTC/USDT", "buy", 0.001, 1.0, tag="t"),  # price snaps to zero ticks
        Quote("BTC/USDT", "buy", float("nan"), 1.0, tag="t"),
        Quote("BTC/USDT", "buy", 61234, 0.01, tag="t"),  # an int: the general path
    ]
    for quote in declined:
        assert fast.prepare(quote) is None, quote
    # Markets whose price precision is not a tick below 1 have no fast path.
    assert (
        FastQuotes.of(
            {**market, "precision": {"price": 1, "amount": 1e-5}}, precision_of(ex, "BTC/USDT")
        )
        is None
    )


def _order(cid: str, symbol: str) -> TrackedOrder:
    return TrackedOrder(cid, symbol, "buy", 100.0, 1.0, OrderState.PENDING_NEW)


def test_open_orders_by_symbol_match_a_scan_of_all_orders() -> None:
    rng = random.Random(9)
    clock = ManualClock(start_ns=10**18)
    config = OrderManagerConfig()
    tracker = OrderTracker(
        ids=ClientIdFactory("bs", clock=clock, rng=rng),
        clock=clock,
        log=null_logger(),
        config=config,
    )
    symbols = ["A/USDT", "B/USDT", "C/USDT"]
    orders: list[TrackedOrder] = []
    for i in range(300):
        step = rng.random()
        if step < 0.5 or not orders:
            order = _order(f"bs-{i}", rng.choice(symbols))
            tracker.add(order)
            orders.append(order)
        elif step < 0.75:
            order = rng.choice(orders)
            if not order.is_finished:
                event = rng.choice([OrderEvent.REJECTED, OrderEvent.ACCEPTED, OrderEvent.FILL])
                tracker.transition(order, event)
        elif step < 0.85:
            # Re-adopted (a restart's reconcile finds it open after all), possibly
            # under another symbol: it must keep the main index's place.
            old = rng.choice(orders)
            update = OrderUpdate(
                exchange_id=None,
                client_id=old.client_id,
                symbol=rng.choice([old.symbol, *symbols]),
                status="open",
                side="buy",
                price=100.0,
                amount=1.0,
                filled=0.0,
            )
            adopted = tracker.adopt(update, reason="test")
            assert adopted is not None
            orders.append(adopted)
        else:
            clock.advance(int(config.finished_retention_s * 0.3 * 1e9))
            tracker.prune(lambda o: False)
        for symbol in [*symbols, "D/USDT", None]:
            scan = [
                o
                for o in tracker.all()
                if o.state not in TERMINAL_STATES and (symbol is None or o.symbol == symbol)
            ]
            assert tracker.open_orders(symbol) == scan
    assert any(o.is_finished for o in orders)
    assert tracker.open_orders()


def test_prune_forgets_exactly_the_expired_idle_finished_orders() -> None:
    """Pruning skips its scan until the earliest moment a finished order can expire; it
    must still forget every expired, idle finished order on the first prune after that
    moment, and nothing else, whatever happens in between."""
    rng = random.Random(11)
    clock = ManualClock(start_ns=10**18)
    config = OrderManagerConfig()
    retention = int(config.finished_retention_s * 1e9)
    tracker = OrderTracker(
        ids=ClientIdFactory("bs", clock=clock, rng=rng),
        clock=clock,
        log=null_logger(),
        config=config,
    )
    orders: list[TrackedOrder] = []
    busy: set[str] = set()
    pruned = 0
    for i in range(3_000):
        step = rng.random()
        if step < 0.3 or not orders:
            order = _order(f"bs-{i}", rng.choice(["A/USDT", "B/USDT"]))
            tracker.add(order)
            orders.append(order)
        elif step < 0.6:
            order = rng.choice(orders)
            if not order.is_finished and tracker.get(order.client_id) is not None:
                event = rng.choice([OrderEvent.REJECTED, OrderEvent.ACCEPTED, OrderEvent.FILL])
                tracker.transition(order, event)
        elif step < 0.7:
            busy = {o.client_id for o in orders if rng.random() < 0.1}
        elif step < 0.85:
            clock.advance(int(retention * rng.choice([0.01, 0.2, 0.5, 1.0])) + rng.choice([0, 1]))
        else:
            before = {o.client_id: o for o in tracker.all()}
            is_busy = frozenset(busy).__contains__
            tracker.prune(lambda o, busy_now=is_busy: busy_now(o.client_id))
            after = {o.client_id for o in tracker.all()}
            horizon = clock.now_ns() - retention
            expired = {
                cid
                for cid, o in before.items()
                if o.is_finished and o.updated_ns < horizon and cid not in busy
            }
            assert set(before) - after == expired
            pruned += len(expired)
    assert pruned > 100  # the run did forget orders, at many different moments
