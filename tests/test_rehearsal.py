"""Rehearsing the trigger while a market arms (``strategy.rehearse_ms``): the engaged
decision, the budget's fit, the risk checks and the order manager's rounding and diff,
run with nothing sent, kept, counted or recorded."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from paper_runs import paper_run
from strategy_helpers import SYMBOL, context, detector_update

from bot.app import Run
from bot.clock import ManualClock
from bot.detector import DetectorState
from bot.governance.gate import GovernedStrategy
from bot.governance.policy import Policy, ScopePolicy
from bot.logs import null_logger
from bot.options.settings import HedgeSettings
from bot.risk import QuoteContext, RiskEngine, RiskEvent
from bot.settings.models import BackstopParams, RiskSettings
from bot.trader import Desk, Trader
from strategies import BackstopStrategy
from strategies.base import Quote
from strategies.option_backstop import DeltaHedgeStrategy

FRACTURE = "fracture:start_s=65"
ARMING, ENGAGED = DetectorState.ARMING, DetectorState.ENGAGED


# --------------------------------------------------------------------------- the pieces


def test_the_strategy_rehearses_the_engaged_ladder_and_keeps_nothing() -> None:
    strategy = BackstopStrategy(BackstopParams(requote_bps=1.0))
    arming = context(detector_update(ARMING))
    rehearsed = strategy.rehearse(arming)
    # What a fresh backstop would ask for on the engaged reading of the same data.
    engaged = BackstopStrategy(BackstopParams(requote_bps=1.0)).decide(
        context(detector_update(ENGAGED))
    )
    assert rehearsed.quotes == engaged.quotes
    assert len(rehearsed.quotes) == 6
    # Nothing held: the arming reading is still quiet-eligible and decides nothing.
    assert strategy.decide(arming).quotes == ()
    # A ladder held from an engaged reading stays the one held.
    held = strategy.decide(context(detector_update(ENGAGED, sigma_bps=3.0)))
    strategy.rehearse(context(detector_update(ARMING, sigma_bps=1.0)))
    again = strategy.decide(context(detector_update(ENGAGED, sigma_bps=3.0)))
    assert again.quotes is held.quotes


def test_wrapped_strategies_rehearse_their_inner_backstop() -> None:
    arming = context(detector_update(ARMING))
    want = BackstopStrategy().rehearse(arming).quotes
    assert want
    governed = GovernedStrategy(Policy(scope=ScopePolicy(markets=[SYMBOL])))
    assert governed.rehearse(arming).quotes == want
    hedged = DeltaHedgeStrategy(BackstopStrategy(), lambda: 0.0, HedgeSettings())
    assert hedged.rehearse(arming).quotes == want
    assert (hedged.hedges, hedged.trimmed) == (0, 0)


def test_the_risk_engine_rehearses_checks_without_counting_or_firing() -> None:
    clock = ManualClock()
    risk = RiskEngine(RiskSettings(), clock=clock, log=null_logger(), symbols=[SYMBOL])
    events: list[RiskEvent] = []
    risk.subscribe(events.append)
    ctx = QuoteContext(mid=60_000.0, best_bid=59_999.0, best_ask=60_001.0)
    fat = Quote(SYMBOL, "buy", 30_000.0, 0.01)  # half the mid: a fat finger
    fine = Quote(SYMBOL, "buy", 59_990.0, 0.01)
    assert risk.rehearse_quotes([fine, fat], ctx) == 1
    assert sum(risk.denials.values()) == 0
    assert events == []
    # The real check of the same quote denies it, counts it and fires the guard.
    assert risk.check_quotes([fat], ctx).denied
    assert sum(risk.denials.values()) == 1
    assert events


# --------------------------------------------------------------------------- whole runs


async def fracture_run(root: Path, *, speed: float = 0.0) -> Run:
    run = await paper_run(root, FRACTURE, feed={"duration_s": 150.0, "speed": speed})
    assert run.trader is not None
    return run


async def test_only_a_live_paced_run_keeps_warm(tmp_path: Path) -> None:
    # As fast as possible there is no idle time between messages to lose the caches in.
    assert not (await fracture_run(tmp_path / "fast")).rehearse
    assert (await fracture_run(tmp_path / "paced", speed=1.0)).rehearse


def arming(trader: Trader) -> list[str]:
    return [
        s
        for s, d in trader.desks.items()
        if d.last_update is not None and d.last_update.state is ARMING
    ]


async def journal_of(root: Path, *, rehearse: bool) -> tuple[list[tuple[Any, ...]], int, int]:
    """A paper run through a fracture (rehearsing every arming market after each event
    when asked): its journal records but the first and last, rehearsals, venue calls."""
    run = await fracture_run(root)
    trader = run.trader
    assert trader is not None
    assert run.venue is not None
    calls = 0
    for name in ("create_order", "cancel_order"):
        real = getattr(run.venue, name)

        async def counted(*a: Any, _real: Any = real, **k: Any) -> Any:
            nonlocal calls
            calls += 1
            return await _real(*a, **k)

        setattr(run.venue, name, counted)
    if rehearse:
        after = trader.after_event

        async def rehearsing() -> None:
            await after()
            for symbol in arming(trader):
                assert trader.rehearse(symbol)

        run.engine._after_event = rehearsing  # after every event, as the engine runs it
    await run.execute()
    with sqlite3.connect(root / "journal.sqlite") as conn:
        rows = conn.execute("SELECT ts_ns, kind, payload FROM records ORDER BY id").fetchall()
    body = [tuple(r) for r in rows if r[1] not in ("start", "close")]
    assert trader.summary()["rehearsals"] == trader.rehearsals  # the run summary says so
    return body, trader.rehearsals, calls


async def test_a_run_journals_the_same_with_and_without_rehearsals(tmp_path: Path) -> None:
    plain, none, plain_calls = await journal_of(tmp_path / "plain", rehearse=False)
    rehearsed, rehearsals, calls = await journal_of(tmp_path / "rehearsed", rehearse=True)
    assert none == 0
    assert rehearsals > 5  # the market armed for several readings before it engaged
    kinds = {kind for _, kind, _ in plain}
    assert {"order", "fill", "decision", "evidence"} <= kinds
    # Every record, order and decision the same; no venue call more or less.
    assert rehearsed == plain
    assert calls == plain_calls > 0
    decisions = [json.loads(p) for _, kind, p in plain if kind == "decision"]
    assert decisions


async def after_an_episode(root: Path) -> tuple[Trader, str, Desk]:
    """The trader of a paper run through a fracture, its one market and desk: the
    market has a last reading and a detector update to rehearse from."""
    run = await fracture_run(root)
    trader = run.trader
    assert trader is not None
    await run.execute()
    (symbol,) = trader.desks
    desk = trader.desks[symbol]
    assert desk.last_update is not None
    assert desk.last_reading is not None
    return trader, symbol, desk


async def test_a_rehearsal_is_due_only_for_an_arming_market_of_an_idle_engine(
    tmp_path: Path,
) -> None:
    trader, symbol, desk = await after_an_episode(tmp_path)
    assert desk.last_update is not None
    calm = desk.last_update
    desk.last_update = replace(calm, state=ARMING)
    trader._arming.set()
    at = trader._event_at
    assert trader.rehearsal_due(at + 0.01, 0.002) == symbol
    # A feed event within the period: the engine is busy and its caches warm.
    assert trader.rehearsal_due(at + 0.001, 0.002) is None
    trader.halted = True
    assert trader.rehearsal_due(at + 0.01, 0.002) is None
    trader.halted = False
    assert trader._arming.is_set()
    desk.last_update = replace(calm, state=DetectorState.CALM)
    assert trader.rehearsal_due(at + 0.01, 0.002) is None
    assert not trader._arming.is_set()


async def test_keep_warm_rehearses_arming_markets_and_sleeps_when_none_arm(
    tmp_path: Path,
) -> None:
    trader, symbol, desk = await after_an_episode(tmp_path)
    assert desk.last_update is not None
    # The market starts arming again (as on_sample marks it).
    desk.last_update = replace(desk.last_update, state=ARMING)
    trader._arming.set()

    rehearsed: list[str] = []
    three = asyncio.Event()
    real = trader.manager.rehearse  # the last step of each rehearsal

    def counted(s: str, quotes: Any) -> int:
        rehearsed.append(s)
        if len(rehearsed) == 3:
            three.set()
        return real(s, quotes)

    trader.manager.rehearse = counted  # type: ignore[method-assign]
    idle = asyncio.Event()
    clear = trader._arming.clear

    def cleared() -> None:
        clear()
        idle.set()

    trader._arming.clear = cleared  # type: ignore[method-assign]
    task = asyncio.ensure_future(trader.keep_warm(0.0001))
    try:
        await asyncio.wait_for(three.wait(), timeout=30)
        assert rehearsed[:3] == [symbol] * 3
        assert trader.rehearsals >= 3
        # The market stops arming: keep_warm goes back to waiting for the next one.
        desk.last_update = replace(desk.last_update, state=DetectorState.CALM)
        await asyncio.wait_for(idle.wait(), timeout=30)
        assert not trader._arming.is_set()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
