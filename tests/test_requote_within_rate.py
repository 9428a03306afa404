"""Requoting within the order rate, end to end: a paper run through a fracture on the
bundled recording, with the default limits (5 orders/s, bursts of 10), with the strategy's
``requote_within_rate`` on (the default) and off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paper_runs import paper_run
from prometheus_client.parser import text_string_to_metric_families

from bot.control.metrics import Metrics
from bot.daemon import Daemon, MetricsListener
from bot.logs import null_logger
from strategies.base import Decision, MarketContext

FRACTURE = "fracture"
"""Its defaults: 90% of the 25 bp band gone at 240 s into the recording, held 30 s, 60 s
to recover; the market moves enough meanwhile to requote the ladder over and over."""


async def fracture_run(
    root: Path,
    *,
    within_rate: bool,
    stress: str = FRACTURE,
    duration_s: float = 650.0,
    seen: list[tuple[int, int | None, float]] | None = None,
    metrics: Metrics | None = None,
) -> dict[str, Any]:
    run = await paper_run(
        root,
        stress,
        feed={"duration_s": duration_s},
        strategy={"backstop": {"requote_within_rate": within_rate}},
    )
    trader = run.trader
    assert trader is not None
    if seen is not None:
        strategy, decide = trader.strategy, trader.strategy.decide
        bucket = trader.risk._bucket

        def spied(ctx: MarketContext) -> Decision:
            # (creates waiting for cancels, the room the strategy is told, tokens left)
            waiting = trader.manager.waiting_creates
            seen.append((waiting, ctx.order_room, bucket.available(ctx.ts_ns)))
            return decide(ctx)

        strategy.decide = spied  # type: ignore[method-assign]
    if metrics is not None:
        assert run.killswitch is not None
        run.engine.add_listener(MetricsListener(metrics, trader, run.killswitch))
    await run.execute()
    status = await Daemon(run, log=null_logger()).status()
    (desk,) = trader.desks.values()
    (episode,) = desk.episodes.to_dicts()
    return {
        "held_back": trader.held_back,
        "market_held_back": trader.summary()["markets"][desk.symbol]["held_back"],
        "status_held_back": status["markets"][0]["orders_held_back"],
        "placed": episode["quotes_placed"],
        "bought": episode["volume"]["bought"]["quote"],
        "sold": episode["volume"]["sold"]["quote"],
        "max_committed": episode["max_committed_quote"],
        "cap": run.settings.risk.max_notional_per_market_quote,
    }


async def test_a_fracture_backstopped_within_the_rate_leaves_fewer_creates_held_back(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    on = await fracture_run(tmp_path / "on", within_rate=True)
    off = await fracture_run(tmp_path / "off", within_rate=False, metrics=metrics)
    # Without it, every requote cancels the whole ladder and the rate limiter then holds
    # most of the replacements back: the ladder has gaps while the market moves.
    assert off["held_back"] > 200
    assert on["held_back"] * 3 < off["held_back"]
    # The ladder that stays is not idle: at least as much liquidity is taken from it,
    # within the same caps.
    assert on["bought"] + on["sold"] >= off["bought"] + off["sold"] > 0
    assert on["max_committed"] <= on["cap"]
    # What an operator sees: the run summary per market, `backstop status` and the
    # Prometheus counter.
    assert off["market_held_back"] == off["status_held_back"] == off["held_back"]
    scraped = {
        smp.name: smp.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for smp in family.samples
        if smp.labels.get("symbol") == "BTC/USDT"
    }
    assert scraped["backstop_orders_held_back_total"] == off["held_back"]


async def test_the_room_a_strategy_is_told_leaves_out_creates_already_decided(
    tmp_path: Path,
) -> None:
    seen: list[tuple[int, int | None, float]] = []
    await fracture_run(tmp_path, within_rate=True, seen=seen)
    waiting = [(w, room, tokens) for w, room, tokens in seen if w > 0]
    # Replacements waiting for their side's cancels, while another reading decides.
    assert len(waiting) > 5
    for w, room, tokens in waiting:
        assert room is not None
        assert room + w <= max(tokens, w)
    assert any(room > 0 for _, room, _ in waiting if room is not None)
