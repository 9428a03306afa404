"""A whole paper run with the synthetic option chain: the bundled USD-M BTCUSDT recording
as the forward, option depth pulled by the chain's fracture overlay. The vega-depth
detector engages, the backstop quotes and gets paper fills, the greek totals stay within
the caps at every book update, delta is hedged on the perpetual through the trader, and
the status carries the option books. Also: live option books assemble without network."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from options_support import CONFIG, SHORT

from bot.app import assemble
from bot.daemon import Daemon
from bot.errors import ConfigError
from bot.logs import make_logger
from bot.options.runner import MergedFeed, OptionsPlan, spec_from_symbol
from bot.orders import OrderFilled
from bot.settings import load_settings


@pytest.fixture(scope="module")
def run_result() -> dict[str, Any]:
    settings = load_settings(CONFIG, overrides=SHORT)
    log = make_logger("json", "warning", None)

    async def go() -> dict[str, Any]:
        run = await assemble(settings, log=log)
        assert run.options is not None
        assert run.trader is not None
        desk = run.options.desk
        assert desk is not None
        lim = settings.options.limits if settings.options else None
        assert lim is not None
        worst: list[float] = []

        class Watch:
            # After every book update: the book's net delta and the worst case of vega
            # (position plus every resting option order filling) against the caps.
            def on_sample(self, symbol: str, book: object, sample: object) -> None:
                s = desk.status()
                worst.append(
                    max(
                        abs(s["net_delta"]) / lim.max_delta_total,
                        desk.max_worst_case_vega / lim.max_vega_total,
                    )
                )

            def on_trade(self, trade: object) -> None:
                return None

        run.engine.add_listener(Watch())
        manager = run.trader.manager
        filled_tags: list[str] = []

        def on_notice(notice: object) -> None:
            if isinstance(notice, OrderFilled) and notice.client_id:
                order = manager.get(notice.client_id)
                filled_tags.append(order.tag if order is not None else "?")

        manager.subscribe(on_notice)
        summary = await run.execute()
        status = await Daemon(run, log=log).status()
        return {
            "summary": summary.to_dict(),
            "status": status,
            "worst": max(worst),
            "filled_tags": filled_tags,
        }

    return asyncio.run(go())


def test_the_run_is_labelled_synthetic(run_result: dict[str, Any]) -> None:
    summary = run_result["summary"]
    assert "+options:synthetic" in summary["source"]
    options = summary["trading"]["options"]
    assert options["source"].startswith("synthetic: synthetic option chain")
    assert run_result["status"]["options"]["synthetic"] is True


def test_a_vega_fracture_engages_and_the_backstop_quotes_and_fills(
    run_result: dict[str, Any],
) -> None:
    options = run_result["summary"]["trading"]["options"]
    assert options["episodes_total"] >= 1
    assert options["quotes_placed"] > 0
    assert options["inventory"]["fills"] > 0
    assert options["inventory"]["volume_contracts"] > 0
    # The chain's overlay took 90 % of the depth: the thinnest vega depth of a long-dated
    # book is under half of what the same book shows at the end of the run.
    status = run_result["status"]["options"]
    last = {o["symbol"]: o for o in status["options"]}
    sym = "BTC/USD:BTC-240830-61000-C"
    assert options["lows_vega"][f"{sym}|bid"] < 0.5 * last[sym]["bid_vega"]


def test_greek_totals_never_exceed_the_caps(run_result: dict[str, Any]) -> None:
    options = run_result["summary"]["trading"]["options"]
    assert run_result["worst"] <= 1.0 + 1e-9
    assert options["max_abs_net_delta"] <= options["max_delta_total"] + 1e-9
    assert options["max_worst_case_vega"] <= options["max_vega_total"] + 1e-9
    assert sum(options["greek_denied"].values()) + options["greek_trimmed"] > 0  # the caps bound


def test_delta_is_hedged_on_the_perpetual_through_the_trader(run_result: dict[str, Any]) -> None:
    summary = run_result["summary"]
    options = summary["trading"]["options"]
    assert summary["trading"]["strategy"] == "backstop+delta-hedge"
    assert options["hedge_orders"] >= 1
    # The hedge went through the trader's order manager to the paper perpetual and filled.
    assert any(tag.startswith("hedge:") for tag in run_result["filled_tags"])
    perp = summary["trading"]["markets"]["BTC/USDT:USDT"]["inventory"]
    assert perp["fills"] >= 1


def test_live_option_books_assemble_without_network() -> None:
    settings = load_settings(
        CONFIG,
        overrides={
            "feed": {"source": "live"},
            "options": {"source": "live", "symbols": ["BTC/USD:BTC-240927-60000-C"]},
        },
    )
    log = make_logger("json", "warning", None)
    plan = OptionsPlan.build(settings, log=log)
    assert plan is not None
    spec = plan.specs["BTC/USD:BTC-240927-60000-C"]
    assert (spec.strike, spec.call, spec.premium_in_base) == (60_000.0, True, True)
    assert spec.expiry_ms == 1_727_424_000_000  # 2024-09-27 08:00 UTC

    class Nothing:
        async def events(self) -> Any:
            return
            yield

    from bot.clock import WallClock

    feed = plan.wrap_feed(Nothing(), clock=WallClock())
    assert isinstance(feed, MergedFeed)

    async def close() -> None:
        for c in plan.closers:
            await c()

    asyncio.run(close())
    with pytest.raises(ConfigError, match="not a ccxt option symbol"):
        spec_from_symbol("BTC-27SEP24-60000-C")
    with pytest.raises(ConfigError, match=re.escape('needs feed.source = "live"')):
        OptionsPlan.build(
            load_settings(
                CONFIG,
                overrides={
                    "options": {"source": "live", "symbols": ["BTC/USD:BTC-240927-60000-C"]}
                },
            ),
            log=log,
        )
