"""The daemon an operator drives: kill over the real control socket, SIGTERM mid-quote.

These run the real stack (replay -> book -> detector -> backstop -> budget -> risk ->
order manager -> paper venue) with the `fracture` overlay brought forward so the bot is
quoting within seconds, and act on it the way an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import assemble
from bot.book import OrderBook
from bot.control.api import CommandConflict
from bot.control.client import ControlClient, ControlTarget
from bot.control.metrics import Metrics
from bot.control.server import ControlServer
from bot.daemon import Daemon, MetricsListener, _depth_bands
from bot.feeds.events import Trade
from bot.feeds.stress import parse_stress_spec
from bot.killswitch import KillState
from bot.logs import null_logger
from bot.monitor import DepthSample
from bot.settings import load_settings
from bot.trader import Trader

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
EARLY_FRACTURE = "fracture:start_s=65"


class QuotingSeen:
    """Sets ``event`` at the first sample after which the trader has orders resting."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.trader: Trader | None = None

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        if self.trader is not None and self.trader.manager.open_orders(symbol):
            self.event.set()

    def on_trade(self, trade: Trade) -> None:
        return None


async def our_open_orders_on_venue(run: Any) -> list[dict[str, Any]]:
    venue_orders = await run.killswitch._venue.fetch_open_orders("BTC/USDT")
    return [o for o in venue_orders if run.trader.manager.is_ours(o.get("clientOrderId"))]


async def test_operator_kill_over_the_control_socket_leaves_nothing_open(tmp_path: Path) -> None:
    settings = load_settings(
        PAPER, env={}, overrides={"state_dir": tmp_path, "control": {"socket": tmp_path / "c.sock"}}
    )
    seen = QuotingSeen()
    log = null_logger()
    run = await assemble(
        settings, log=log, listeners=[seen], stress=parse_stress_spec(EARLY_FRACTURE)
    )
    assert run.trader is not None
    assert run.killswitch is not None
    seen.trader = run.trader
    daemon = Daemon(run, log=log)
    metrics = Metrics()
    run.engine.add_listener(MetricsListener(metrics, run.trader, run.killswitch))
    target = ControlTarget(socket_path=settings.control_socket_path)

    async with ControlServer.from_settings(settings, daemon, log=log, metrics=metrics):
        running = asyncio.create_task(run.execute())
        await asyncio.wait_for(seen.event.wait(), timeout=60)
        quotes_before = len(run.trader.manager.open_orders("BTC/USDT"))

        async with ControlClient(target) as client:
            result = await client.kill("drill")
            status = await client.status()
            exposition = await client.metrics_text()

        flat_on_venue = await our_open_orders_on_venue(run)
        await asyncio.wait_for(running, timeout=60)

    assert quotes_before > 0
    assert run.killswitch.state is KillState.TRIPPED_FLAT
    assert status["kill_switch"]["state"] == "tripped_flat"
    assert "none of ours left open" in result["message"]
    assert flat_on_venue == []
    scraped = {
        (m.name, tuple(sorted(smp.labels.items()))): smp.value
        for m in text_string_to_metric_families(exposition)
        for smp in m.samples
    }
    assert scraped[("backstop_open_orders", (("symbol", "BTC/USDT"),))] == 0
    assert scraped[("backstop_kill_switch_state", (("state", "tripped_flat"),))] == 1
    assert scraped[("backstop_kill_switch_state", (("state", "armed"),))] == 0
    assert any(name == "backstop_orders" and v > 0 for (name, _), v in scraped.items())
    # Every applied book update's exchange-to-receipt latency (the recording's own).
    latency = {
        smp.name: smp.value
        for m in text_string_to_metric_families(exposition)
        if m.name == "backstop_feed_latency_seconds"
        for smp in m.samples
        if smp.labels == {"symbol": "BTC/USDT"}
    }
    count = latency["backstop_feed_latency_seconds_count"]
    # One per book update applied by the time of the scrape (the replay went on after).
    # The recording's clock ran 1.27 s behind Binance's: every latency counts as 0.
    assert 1_000 < count <= run.engine.markets["BTC/USDT"].book.updates_applied
    assert latency["backstop_feed_latency_seconds_sum"] == 0.0
    # The fracture threshold on the watched band, per side, for the dashboard's panel.
    thresholds = {
        dict(labels)["side"]: v
        for (name, labels), v in scraped.items()
        if name == "backstop_depth_threshold_quote"
    }
    assert set(thresholds) == {"bid", "ask"}
    assert all(v > 0 for v in thresholds.values())
    report = run.killswitch.last_report
    assert report is not None
    # Kill to "no open orders confirmed", in data time: the venue's 50 ms latency plus
    # the round trip through the replay.
    assert report.elapsed_ns < 1_000_000_000
    # Halted: nothing was quoted again for the rest of the replay.
    assert await our_open_orders_on_venue(run) == []


async def test_resume_is_refused_until_flat_and_accepted_after(tmp_path: Path) -> None:
    settings = load_settings(PAPER, env={}, overrides={"state_dir": tmp_path})
    seen = QuotingSeen()
    log = null_logger()
    run = await assemble(
        settings, log=log, listeners=[seen], stress=parse_stress_spec(EARLY_FRACTURE)
    )
    assert run.killswitch is not None
    seen.trader = run.trader
    daemon = Daemon(run, log=log)
    running = asyncio.create_task(run.execute())
    await asyncio.wait_for(seen.event.wait(), timeout=60)

    with pytest.raises(CommandConflict) as armed_refusal:
        await daemon.resume("nothing to resume", "test")
    await daemon.kill("drill", "test")
    resumed = await daemon.resume("drill over", "test")
    await asyncio.wait_for(running, timeout=60)

    assert "armed" in str(armed_refusal.value).lower()
    assert resumed["state"] == "armed"
    assert run.killswitch.state is KillState.ARMED


def test_sigterm_while_quoting_cancels_everything_before_exit(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    exe = Path(sys.executable).parent / "backstop"
    proc = subprocess.Popen(
        [
            str(exe),
            "run",
            "--config",
            str(PAPER),
            "--stress",
            EARLY_FRACTURE,
            "--speed",
            "20",
            "--state-dir",
            str(tmp_path),
            "--log-format",
            "json",
            "--summary-json",
            str(summary_path),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # blocks on the daemon's own log: no polling
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("event") == "detector_transition" and record.get("state") == "engaged":
                break
        else:
            pytest.fail("the backstop never engaged")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()

    summary = json.loads(summary_path.read_text())
    market = summary["trading"]["markets"]["BTC/USDT"]
    assert code == 130, rest[-2000:]
    assert market["episodes"][0]["quotes_placed"] > 0
    assert market["open_orders"] == 0
    assert "kill_switch_tripped" in rest or "SIGNAL" in rest


async def test_a_venue_balance_that_disagrees_with_the_accounting_trips_the_kill_switch(
    tmp_path: Path,
) -> None:
    settings = load_settings(PAPER, env={}, overrides={"state_dir": tmp_path})
    run = await assemble(settings, log=null_logger())
    assert run.trader is not None
    assert run.killswitch is not None
    assert run.venue is not None

    venue = run.venue

    class Withdrawn:
        """The same account after someone took 0.5 BTC out behind the bot's back."""

        async def fetch_balance(self) -> dict[str, Any]:
            balance = await venue.fetch_balance()
            balance["total"]["BTC"] -= 0.5
            return balance

    await run.trader.check_balances(venue)  # the paper account holds the reserve
    agreed = run.killswitch.state
    await run.trader.check_balances(Withdrawn())  # type: ignore[arg-type]

    assert agreed is KillState.ARMED
    assert run.killswitch.is_tripped
    assert "BALANCE_MISMATCH" in run.killswitch.status()["reason"]


async def test_a_fill_in_flight_is_not_a_balance_mismatch_when_confirmed(tmp_path: Path) -> None:
    settings = load_settings(PAPER, env={}, overrides={"state_dir": tmp_path})
    run = await assemble(settings, log=null_logger())
    assert run.trader is not None
    assert run.killswitch is not None
    assert run.venue is not None
    venue = run.venue
    calls = 0

    class FillInFlight:
        """The venue has booked a 0.5 BTC sale the bot hears about a moment later."""

        async def fetch_balance(self) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            balance = await venue.fetch_balance()
            if calls == 1:
                balance["total"]["BTC"] -= 0.5
            return balance

    await run.trader.check_balances(FillInFlight(), confirm_after_s=0.01)  # type: ignore[arg-type]
    assert calls == 2
    assert run.killswitch.state is KillState.ARMED
    assert run.trader.risk.guard_status()["balance_mismatch"] == "ok"


@pytest.mark.parametrize(
    ("baseline", "shown"), [((None, None), None), ((None, 7.0), 7.0), ((9.0, 7.0), 7.0)]
)
def test_status_depth_shows_the_smaller_known_baseline(
    baseline: tuple[float | None, float | None], shown: float | None
) -> None:
    # The first book after the feed connects has no baseline on either side yet:
    # 'backstop status' answered 'internal error' there (min() of two None).
    depth = np.ones((2, 2, 2))
    sample = DepthSample(
        ts_ns=1,
        best_bid=99.0,
        best_ask=101.0,
        mid=100.0,
        spread_bps=200.0,
        bands_bps=(10.0, 50.0),
        depth=depth,
        buy_slippage_bps=None,
        sell_slippage_bps=None,
    )
    rows = _depth_bands(sample, SimpleNamespace(baseline=baseline))
    assert rows[0]["baseline_quote"] == shown
    assert "baseline_quote" not in rows[1]  # the fracture rules watch the first band only
