"""Builders shared by the strategy, budget, inventory and episode tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from bot.book import OrderBook
from bot.clock import ManualClock
from bot.detect.machine import Cause
from bot.detector import DetectorState, DetectorUpdate, Transition, Trigger
from bot.monitor import DepthMonitor, DepthSample
from bot.orders.events import OrderFilled
from strategies.base import BudgetView, InventoryView, MarketContext, MarketRules

SYMBOL = "BTC/USDT"
NS = 1_000_000_000
# Binance spot BTC/USDT's rules (bot/data/binance_exchange_info_symbols.json).
RULES = MarketRules(price_tick=0.01, amount_step=1e-5, amount_min=1e-5, cost_min=5.0)


def book(
    bid: float = 59_999.99,
    ask: float = 60_000.01,
    bid_size: float = 1.0,
    ask_size: float = 1.0,
    *,
    depth_levels: int = 5,
) -> OrderBook:
    """A valid book: the given touch, then ``depth_levels`` more levels a dollar apart."""
    b = [[bid, bid_size]] + [[bid - i, 2.0] for i in range(1, depth_levels + 1)]
    a = [[ask, ask_size]] + [[ask + i, 2.0] for i in range(1, depth_levels + 1)]
    ob = OrderBook(SYMBOL, clock=ManualClock())
    assert ob.apply_snapshot(np.array(b), np.array(a), ts_ns=1) is None
    return ob


def sample_of(ob: OrderBook, ts_ns: int = 10 * NS) -> DepthSample:
    s = DepthMonitor.for_bands([10.0, 50.0], 50_000.0).observe(ob, ts_ns)
    assert s is not None
    return s


def detector_update(
    state: DetectorState = DetectorState.ENGAGED,
    *,
    ts_ns: int = 10 * NS,
    depth: tuple[float, float] = (200_000.0, 200_000.0),
    baseline: tuple[float | None, float | None] = (2_000_000.0, 2_000_000.0),
    health: float = 0.5,
    sigma_bps: float | None = 1.0,
    spread_bps: float = 0.002,
    transition: Transition | None = None,
    trigger: Trigger | None = None,
    episode_trigger: Trigger | None = None,
) -> DetectorUpdate:
    ratio = tuple(None if b is None else d / b for d, b in zip(depth, baseline, strict=True))
    return DetectorUpdate(
        ts_ns=ts_ns,
        state=state,
        transition=transition,
        trigger=trigger,
        depth=depth,
        baseline=baseline,
        ratio=(ratio[0], ratio[1]),
        baseline_ready=True,
        spread_bps=spread_bps,
        health=health,
        sigma_bps=sigma_bps,
        engaged_since_ns=ts_ns if state.active else None,
        episode_trigger=episode_trigger,
    )


def transition(
    from_state: DetectorState, to_state: DetectorState, ts_ns: int, *causes: Cause, **kw: Any
) -> Transition:
    return Transition(from_state, to_state, ts_ns, tuple(causes), kw.pop("trigger", None), **kw)


def inventory_view(
    net_base: float = 0.0,
    *,
    start_base: float = 2.0,
    start_quote: float = 120_000.0,
    quote: float | None = None,
    mid: float | None = 60_000.0,
) -> InventoryView:
    return InventoryView(
        base=start_base + net_base,
        quote=start_quote if quote is None else quote,
        start_base=start_base,
        start_quote=start_quote,
        net_base=net_base,
        avg_cost=None,
        realised_pnl=0.0,
        unrealised_pnl=0.0,
        fees_quote=0.0,
        committed_quote=0.0,
        mid=mid,
    )


def budget_view(**kw: Any) -> BudgetView:
    base: dict[str, Any] = {
        "quote_room": 5_000.0,
        "max_order_quote": 1_000.0,
        "market_cap_quote": 1e9,  # no position limit unless a test sets one
        "base_available": 1.8,
        "quote_available": 108_000.0,
        "fee_rate": 0.001,
    }
    base.update(kw)
    return BudgetView(**base)


def context(
    update: DetectorUpdate | None,
    *,
    ob: OrderBook | None = None,
    inventory: InventoryView | None = None,
    budget: BudgetView | None = None,
    rules: MarketRules = RULES,
    order_room: int | None = None,
) -> MarketContext:
    ob = ob if ob is not None else book()
    s = sample_of(ob, update.ts_ns if update is not None else 10 * NS)
    return MarketContext(
        symbol=SYMBOL,
        ts_ns=s.ts_ns,
        book=ob,
        sample=s,
        detector=update,
        inventory=inventory if inventory is not None else inventory_view(),
        budget=budget if budget is not None else budget_view(),
        rules=rules,
        order_room=order_room,
    )


def fill(
    side: str,
    price: float,
    amount: float,
    *,
    trade_id: str = "t1",
    client_id: str = "c1",
    fee: float | None = None,
    fee_currency: str | None = None,
    ts_ns: int = 10 * NS,
    symbol: str = SYMBOL,
) -> OrderFilled:
    return OrderFilled(
        ts_ns=ts_ns,
        client_id=client_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        trade_id=trade_id,
        price=price,
        amount=amount,
        fee_cost=fee,
        fee_currency=fee_currency,
        taker_or_maker="maker",
        venue_ts_ms=None,
    )
