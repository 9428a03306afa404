"""The trader's calm fast path: skipped only when the strategy declares it asks for nothing.

On a CALM reading where the strategy's ``quiet`` says its decision would be empty and
change nothing, the trader skips the context, budget fit and risk checks (all of an empty
set) and only tells the order manager. The journal must be the same record for record as
a run that asks the strategy every time, and ``quiet`` must never be True where
``decide`` would quote or forget a ladder.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from paper_runs import paper_run
from strategy_helpers import SYMBOL, context, detector_update, inventory_view

from bot.clock import NS_PER_SECOND, ManualClock
from bot.detector import DetectorState
from bot.governance.gate import GovernedStrategy
from bot.governance.policy import Policy, ScopePolicy
from bot.logs import null_logger
from bot.orders import OrderActionFailed
from bot.risk import GuardEvent, RiskEngine, RiskEvent
from bot.settings.models import BackstopParams, GuardSettings, RiskSettings
from strategies import BackstopStrategy
from strategies.base import Decision, MarketContext

FRACTURE = "fracture:start_s=65"
DURATION_S = 150.0
S = NS_PER_SECOND


# --------------------------------------------------------------------------- the declaration


def agrees(strategy: BackstopStrategy, ctx: MarketContext) -> tuple[bool, Decision]:
    """``quiet`` on ``ctx``'s reading, and what ``decide`` then does."""
    assert ctx.detector is not None
    quiet = strategy.quiet(
        ctx.symbol,
        ctx.detector,
        net_base=ctx.inventory.net_base,
        reduce_only=ctx.reduce_only,
    )
    return quiet, strategy.decide(ctx)


def test_a_calm_flat_backstop_is_quiet_and_its_decision_is_empty() -> None:
    quiet, decision = agrees(BackstopStrategy(), context(detector_update(DetectorState.CALM)))
    assert quiet
    assert decision.quotes == ()


@pytest.mark.parametrize(
    "state", [DetectorState.ARMING, DetectorState.ENGAGED, DetectorState.RECOVERING]
)
def test_not_quiet_unless_calm(state: DetectorState) -> None:
    quiet, _ = agrees(BackstopStrategy(), context(detector_update(state)))
    assert not quiet


def test_not_quiet_with_a_position_to_replenish() -> None:
    ctx = context(detector_update(DetectorState.CALM), inventory=inventory_view(net_base=-0.5))
    quiet, decision = agrees(BackstopStrategy(), ctx)
    assert not quiet
    assert decision.quotes  # the replenishment quote the fast path must not skip


def test_quiet_with_a_position_when_replenishment_is_off() -> None:
    ctx = context(detector_update(DetectorState.CALM), inventory=inventory_view(net_base=-0.5))
    quiet, decision = agrees(BackstopStrategy(BackstopParams(replenish="off")), ctx)
    assert quiet
    assert decision.quotes == ()


def test_not_quiet_while_reducing() -> None:
    strategy = BackstopStrategy()
    update = detector_update(DetectorState.CALM)
    assert not strategy.quiet(SYMBOL, update, net_base=0.0, reduce_only=True)


def test_not_quiet_while_a_ladder_is_held_until_a_calm_decision_drops_it() -> None:
    strategy = BackstopStrategy()
    engaged = strategy.decide(context(detector_update(DetectorState.ENGAGED)))
    assert engaged.quotes
    calm = detector_update(DetectorState.CALM)
    # decide() would forget the ladder (a change of state): not quiet yet.
    assert not strategy.quiet(SYMBOL, calm, net_base=0.0, reduce_only=False)
    assert strategy.decide(context(calm)).quotes == ()
    assert strategy.quiet(SYMBOL, calm, net_base=0.0, reduce_only=False)


def test_the_governed_backstop_is_quiet_outside_its_scope_whatever_the_detector_says() -> None:
    policy = Policy(scope=ScopePolicy(markets=[SYMBOL]))
    outside = "ETH/USDT"
    assert outside not in policy.scope.markets
    governed = GovernedStrategy(policy)
    engaged = detector_update(DetectorState.ENGAGED)
    assert governed.quiet(outside, engaged, net_base=0.0, reduce_only=False)
    assert not governed.quiet(SYMBOL, engaged, net_base=0.0, reduce_only=False)


# --------------------------------------------------------------------------- whole runs


class Undeclared:
    """The governed backstop without its ``quiet`` declaration: asked every time."""

    def __init__(self, inner: GovernedStrategy) -> None:
        self.inner = inner
        self.name = inner.name

    def decide(self, ctx: MarketContext) -> Decision:
        return self.inner.decide(ctx)

    def on_fill(self, fill: Any) -> None:
        self.inner.on_fill(fill)


async def journaled_run(root: Path, *, declared: bool) -> tuple[list[tuple[Any, ...]], int, int]:
    """A paper run through a fracture: its journal records (but the first and the
    writer's closing stats), the trader's decision count and ``decide`` calls."""
    run = await paper_run(
        root,
        FRACTURE,
        feed={"duration_s": DURATION_S},
        # Calm readings since the last checkpoint open the episode's evidence (its "pre"
        # list): a long interval makes sure there are some.
        governance={"checkpoint_s": 5.0},
    )
    trader = run.trader
    assert trader is not None
    governed = trader.strategy
    assert isinstance(governed, GovernedStrategy)
    calls = 0
    decide = governed.decide

    def counted(ctx: MarketContext) -> Decision:
        nonlocal calls
        calls += 1
        return decide(ctx)

    governed.decide = counted  # type: ignore[method-assign]
    if not declared:
        trader.strategy = Undeclared(governed)
    await run.execute()
    decisions = sum(desk.decisions for desk in trader.desks.values())
    with sqlite3.connect(root / "journal.sqlite") as conn:
        rows = conn.execute("SELECT ts_ns, kind, payload FROM records ORDER BY id").fetchall()
    # The start record carries the pid and paths; the close record the writer's batching.
    body = [tuple(r) for r in rows if r[1] not in ("start", "close")]
    return body, decisions, calls


async def test_the_journal_is_the_same_with_and_without_the_fast_path(tmp_path: Path) -> None:
    fast, fast_decisions, fast_calls = await journaled_run(tmp_path / "fast", declared=True)
    slow, slow_decisions, slow_calls = await journaled_run(tmp_path / "slow", declared=False)
    kinds = {kind for _, kind, _ in fast}
    # The run went through an episode: orders, fills and decision records were written.
    assert {"order", "fill", "decision", "evidence", "episode"} <= kinds
    assert fast == slow
    opened = [json.loads(p) for _, kind, p in fast if kind == "evidence"]
    assert any(o.get("pre") for o in opened)  # calm readings the fast path kept
    assert fast_decisions == slow_decisions == slow_calls
    # ... and the calm readings before the fracture took the fast path (the ones after
    # the episode do not: a position is left to replenish).
    assert fast_calls < slow_calls * 0.75


# --------------------------------------------------------------------------- risk at rest


def test_a_reject_burst_fires_again_after_the_guards_were_at_rest() -> None:
    clock = ManualClock()
    config = RiskSettings(guards=GuardSettings(reject_burst_count=2, pause_cooldown_s=1.0))
    engine = RiskEngine(config, clock=clock, log=null_logger(), symbols=[SYMBOL])
    events: list[RiskEvent] = []
    engine.subscribe(events.append)

    def burst() -> None:
        for _ in range(2):
            engine.on_notice(
                OrderActionFailed(clock.now_ns(), "c", SYMBOL, "create", "OrderRejected", "x")
            )

    burst()
    assert engine.is_paused(SYMBOL)
    for _ in range(100):  # the window clears, the pause lifts, then ticks at rest
        clock.advance(S)
        engine.tick()
    assert not engine.is_paused(SYMBOL)
    burst()
    fired = [e for e in events if isinstance(e, GuardEvent)]
    assert len(fired) == 2
    assert engine.is_paused(SYMBOL)
