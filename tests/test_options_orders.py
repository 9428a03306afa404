"""Option orders take the road every order takes: the risk engine's checks (the greek
limits among them, refusals counted by reason), the trader's order manager, the paper
venue's option markets, the journal and the kill switch.

One short paper run of the synthetic chain (the bundled USD-M recording as the forward,
the chain's fracture overlay pulling option depth) with a journal file; the kill switch
is tripped by an operator late in the run while option orders rest on the venue.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from options_support import CONFIG, SHORT, is_option

from bot.app import assemble
from bot.control.commands import print_status
from bot.control.metrics import Metrics
from bot.daemon import Daemon, MetricsListener
from bot.journal import records as rk
from bot.journal.audit import verify
from bot.journal.reader import JournalReader
from bot.killswitch import KillState, TripSource
from bot.logs import make_logger
from bot.orders import OrderFilled, OrderStateChanged
from bot.report.cli import draw
from bot.report.from_journal import JournalWindow, option_episodes
from bot.settings import load_settings

TRIP_AFTER_S = 60.0


@pytest.fixture(scope="module")
def tripped_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    journal = tmp_path_factory.mktemp("options-journal") / "journal.sqlite"
    settings = load_settings(CONFIG, overrides={**SHORT, "journal": {"path": str(journal)}})
    log = make_logger("json", "warning", None)

    async def go() -> dict[str, Any]:
        run = await assemble(settings, log=log)
        assert run.options is not None
        assert run.trader is not None
        assert run.killswitch is not None
        assert run.venue is not None
        desk, manager, ks, venue = run.options.desk, run.trader.manager, run.killswitch, run.venue
        assert desk is not None
        created: dict[str, int] = {}  # option client id -> data time it entered tracking
        fills: list[OrderFilled] = []

        def on_notice(notice: object) -> None:
            if isinstance(notice, OrderStateChanged) and is_option(notice.symbol):
                if notice.previous is None:
                    created[notice.client_id] = notice.ts_ns
            elif isinstance(notice, OrderFilled) and is_option(notice.symbol):
                fills.append(notice)

        manager.subscribe(on_notice)
        trip: dict[str, Any] = {}
        start: list[int] = []

        class Tripper:
            # Trips once data time passes TRIP_AFTER_S with option orders resting.
            def on_sample(self, symbol: str, book: object, sample: Any) -> None:
                start.append(sample.ts_ns) if not start else None
                late = sample.ts_ns - start[0] >= TRIP_AFTER_S * 1e9
                if late and not trip and desk.open_orders():
                    trip["ts_ns"] = sample.ts_ns
                    trip["resting"] = len(desk.open_orders())
                    trip["options_status"] = desk.status()
                    trip["task"] = ks.trip_soon("test", source=TripSource.OPERATOR, who="test")

            def on_trade(self, trade: object) -> None:
                return None

        run.engine.add_listener(Tripper())
        metrics = Metrics()
        run.engine.add_listener(MetricsListener(metrics, run.trader, ks, options=run.options))
        summary = await run.execute()
        status = await Daemon(run, log=log).status()
        # The venue's own listing, per option market (not the bot's view of it).
        open_at_venue = {sym: await venue.fetch_open_orders(sym) for sym in run.options.specs}
        report = await trip["task"] if "task" in trip else None
        return {
            "summary": summary.to_dict(),
            "trip": trip,
            "report": report,
            "state": ks.state,
            "created": created,
            "fills": fills,
            "open_at_venue": open_at_venue,
            "journal": journal,
            "risk_denials": dict(run.trader.risk.denials),
            "refused": dict(desk.refused),
            "metrics": metrics.render().decode(),
            "status": status,
            "net_delta": desk.status()["net_delta"],
            "options_gamma": desk.status()["gamma"],
            "episodes": desk.episode_log.to_list(),
            "episodes_html": desk.report_html(),
        }

    return asyncio.run(go())


def test_a_kill_switch_trip_leaves_no_option_order_open_and_none_after(
    tripped_run: dict[str, Any],
) -> None:
    trip = tripped_run["trip"]
    assert trip.get("resting", 0) >= 1  # option orders were resting when it tripped
    assert tripped_run["state"] is KillState.TRIPPED_FLAT
    report = tripped_run["report"]
    assert report is not None
    assert report.flat
    # Every option order the venue still lists: none.
    assert all(orders == [] for orders in tripped_run["open_at_venue"].values())
    # Nothing new on an option market after the trip.
    assert [c for c, ts in tripped_run["created"].items() if ts > trip["ts_ns"]] == []


def test_every_option_order_and_fill_is_in_the_verified_journal(
    tripped_run: dict[str, Any],
) -> None:
    path = tripped_run["journal"]
    assert verify(path).ok
    created, fills = tripped_run["created"], tripped_run["fills"]
    assert created
    assert fills
    with JournalReader(path) as reader:
        journaled = {
            str(row[0])
            for row in reader.query(
                "SELECT DISTINCT client_id FROM records WHERE kind = 'order' "
                "AND symbol LIKE 'BTC/USD:BTC-%'"
            )
        }
        fill_rows = reader.query(
            "SELECT COUNT(*) FROM records WHERE kind = 'fill' AND symbol LIKE 'BTC/USD:BTC-%'"
        )
    assert set(created) <= journaled
    assert fill_rows[0][0] == len(fills)


def test_refused_option_quotes_are_counted_by_reason_in_the_risk_engine(
    tripped_run: dict[str, Any],
) -> None:
    refused = tripped_run["refused"]
    options = tripped_run["summary"]["trading"]["options"]
    assert refused.get("DELTA_EXCEEDS_MAX_TOTAL", 0) > 0
    # The desk's count is the risk engine's (the perpetual has no greek limits).
    assert (
        tripped_run["risk_denials"]["DELTA_EXCEEDS_MAX_TOTAL"] == refused["DELTA_EXCEEDS_MAX_TOTAL"]
    )
    assert options["risk_refused"] == refused
    assert options["greek_denied"]["DELTA_EXCEEDS_MAX_TOTAL"] == refused["DELTA_EXCEEDS_MAX_TOTAL"]
    # After the trip, quotes are not even decided: no TRADING_HALTED flood.
    assert refused.get("TRADING_HALTED", 0) == 0


def test_metrics_carry_the_option_greeks_and_detectors(tripped_run: dict[str, Any]) -> None:
    text = tripped_run["metrics"]
    underlying = 'underlying="BTC/USDT:USDT"'
    net = [
        line
        for line in text.splitlines()
        if line.startswith("backstop_options_delta{") and 'kind="net"' in line
    ]
    assert len(net) == 1
    assert underlying in net[0]
    assert float(net[0].split()[-1]) == pytest.approx(tripped_run["net_delta"])
    episodes = tripped_run["summary"]["trading"]["options"]["episodes_total"]
    assert f"backstop_options_episodes{{{underlying}}} {float(episodes)}" in text
    assert "backstop_options_engaged{" in text
    assert "backstop_options_vega{" in text
    gamma = [line for line in text.splitlines() if line.startswith("backstop_options_gamma{")]
    assert len(gamma) == 1
    assert float(gamma[0].split()[-1]) == pytest.approx(tripped_run["options_gamma"])


def test_human_status_has_a_line_per_engaged_option(tripped_run: dict[str, Any]) -> None:
    status = dict(tripped_run["status"])
    status["options"] = tripped_run["trip"]["options_status"]  # during the fracture
    engaged = [o["symbol"] for o in status["options"]["options"] if o["engaged"]]
    assert engaged
    out = io.StringIO()
    print_status(status, out)
    text = out.getvalue()
    assert "options (SYNTHETIC) on BTC/USDT:USDT: net delta" in text
    assert "gamma " in text.split("options (SYNTHETIC)")[1].splitlines()[0]
    lines = [line for line in text.splitlines() if line.strip().startswith("option BTC/")]
    assert sorted(line.split()[1] for line in lines) == sorted(engaged)


# ------------------------------------------------- option episodes in the journal
# Each option episode is journaled (``option_episode``), and ``backstop report`` draws
# the same table of option episodes from the journal as the run's own ``--report``.


@pytest.fixture(scope="module")
def journaled_run(tripped_run: dict[str, Any]) -> dict[str, Any]:
    """The run above (a kill trips mid-run; option episodes are journaled all the same):
    its journal, and the desk's episodes and report section at the end."""
    return {
        "journal": tripped_run["journal"],
        "episodes": tripped_run["episodes"],
        "html": tripped_run["episodes_html"],
    }


def test_each_option_episode_is_journaled_in_its_final_state(
    journaled_run: dict[str, Any],
) -> None:
    journal: Path = journaled_run["journal"]
    assert verify(journal).ok
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    with JournalReader(journal) as reader:
        for record in reader.records([rk.OPTION_EPISODE]):
            payload = dict(record.payload)
            assert payload.pop("synthetic") is True
            assert payload.pop("underlying") == "BTC/USDT:USDT"
            assert payload.pop("caps")["max_delta_total"] > 0
            latest[(payload["symbol"], payload["start_ms"])] = payload
    live = journaled_run["episodes"]
    assert live, "the short run has option episodes"
    assert all(is_option(e["symbol"]) for e in live)
    # The journal's last word on each episode is what the desk held at the end of the
    # run: fills after an episode ended and episodes still open included.
    ordered = sorted(live, key=lambda e: (e["start_ms"], e["symbol"]))
    assert sorted(latest.values(), key=lambda e: (e["start_ms"], e["symbol"])) == ordered
    assert sum(e["fills"] for e in live) > 0


def test_the_report_from_the_journal_has_the_run_s_option_episode_table(
    journaled_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    assert out in draw(journaled_run["journal"], out)
    page = out.read_text()
    table = _option_table(page)
    assert table == _option_table(journaled_run["html"])
    assert table.count("<tr data-symbol=") == len(journaled_run["episodes"])
    # Option books are tabled, not charted, as in the run's own report.
    assert "BTC/USD:BTC-" not in page.replace(table, "")


def test_a_report_for_one_option_shows_only_its_episodes(
    journaled_run: dict[str, Any], tmp_path: Path
) -> None:
    symbol = journaled_run["episodes"][0]["symbol"]
    with JournalReader(journaled_run["journal"]) as reader:
        chosen = option_episodes(reader, JournalWindow(symbol=symbol))
        every = option_episodes(reader, JournalWindow(symbol="BTC/USDT:USDT"))
    assert chosen
    assert {e["symbol"] for e in chosen} == {symbol}
    assert len(every) == len(journaled_run["episodes"])


def _option_table(page: str) -> str:
    found = re.search(r'<section class="options".*?</section>', page, re.S)
    assert found is not None, "no option section"
    return found.group(0)
