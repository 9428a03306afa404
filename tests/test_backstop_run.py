"""The whole loop on real data: replay -> book -> detector -> strategy -> budget -> orders ->
paper venue, with the documented `fracture` stress turning the calm recording into a
depth collapse. This is the evidence the README shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
NS = 1_000_000_000


def run(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"summary-{len(list(tmp_path.iterdir()))}.json"
    quiet = ["--log-format", "json", "--log-level", "error"]
    code = main(["run", "--config", str(PAPER), *quiet, "--summary-json", str(out), *extra])
    assert code == 0
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


@pytest.fixture(scope="module")
def stressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run(tmp_path_factory.mktemp("stressed"), "--stress", "fracture")


def market(summary: dict[str, Any]) -> dict[str, Any]:
    trading = summary["trading"]
    assert trading is not None
    m: dict[str, Any] = trading["markets"]["BTC/USDT"]
    return m


def test_the_backstop_engages_on_the_fracture_and_steps_back_after_recovery(
    stressed: dict[str, Any],
) -> None:
    m = market(stressed)
    episodes = m["episodes"]
    data_start_ns = stressed["feed"]["first_ts_ns"]
    window = stressed["feed"]["stress"]

    assert len(episodes) == 1
    ep = episodes[0]
    # The overlay starts removing depth 240 s into the data; the detector needs its
    # 1 s dwell, and must not fire before the ramp.
    start = window["window_start_ts_ns"]
    assert start <= ep["start_ts_ns"] <= start + 5 * NS
    assert ep["start_ts_ns"] - data_start_ns >= 240 * NS
    # It stands down only after the book has healed (the overlay's window ended) and
    # depth held above the recovery level for the 10 s disengage dwell.
    assert ep["end_ts_ns"] >= window["window_end_ts_ns"]
    assert ep["recovery"]["held_s"] >= 10.0
    assert ep["trigger"]["rule"] in {"baseline", "drop_rate", "floor", "spread"}
    assert m["detector_state"] == "calm"
    assert m["open_orders"] == 0


def test_the_backstop_provides_liquidity_only_within_its_caps(
    stressed: dict[str, Any],
) -> None:
    settings = load_settings(PAPER, env={})
    m = market(stressed)
    ep = m["episodes"][0]
    inv = m["inventory"]

    assert ep["quotes_placed"] > 0
    assert ep["fills"] > 0
    assert ep["volume"]["quote"] > 0
    assert m["max_committed_quote"] <= settings.risk.max_notional_per_market_quote
    assert ep["max_committed_quote"] <= settings.risk.max_notional_per_market_quote
    assert abs(inv["net_base"]) <= settings.risk.max_position_base["BTC"]
    # Every fill is the episode's own or its replenishment: nothing traded outside it.
    replenished = ep["replenishment"]["fills"] if ep["replenishment"] else 0
    assert inv["fills"] == ep["fills"] + ep["late_fills"] + replenished
    # Exact accounting: the inventory moved by the fills, fees included.
    assert inv["base"] == pytest.approx(inv["start_base"] + inv["net_base"], abs=1e-12)


def test_a_calm_recording_never_engages_or_trades(tmp_path: Path) -> None:
    m = market(run(tmp_path))

    assert m["episodes"] == []
    assert m["inventory"]["fills"] == 0
    assert m["decisions"] > 6000  # it did look at every update


def test_the_same_replay_and_seed_give_the_same_trading(
    stressed: dict[str, Any], tmp_path: Path
) -> None:
    again = run(tmp_path, "--stress", "fracture")

    assert again["trading"] == stressed["trading"]


def test_the_market_maker_quotes_without_a_fracture(tmp_path: Path) -> None:
    m = market(run(tmp_path, "--strategy", "market-maker", "--duration", "300"))

    # 5 bps from fair on a calm book: it takes minutes of real price moves (and the queue
    # ahead trading) before anything fills.
    assert m["episodes"] == []
    assert m["inventory"]["fills"] > 0
    assert m["open_orders"] > 0


def test_run_writes_an_episode_report(tmp_path: Path) -> None:
    out = tmp_path / "report" / "report.html"

    run(tmp_path, "--stress", "fracture", "--duration", "400", "--report", str(out))

    html = out.read_text()
    assert "Episode 1" in html
    assert html.count("data:image/png;base64,") >= 2  # the overview and the episode chart
    assert (out.parent / "report-episode-01.png").stat().st_size > 10_000


def test_the_run_is_journaled_and_the_audit_chain_catches_an_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    journal = tmp_path / "journal.sqlite"
    monkeypatch.setenv("BACKSTOP_JOURNAL__PATH", str(journal))
    summary = run(tmp_path, "--stress", "fracture", "--duration", "400")
    fills_traded = market(summary)["inventory"]["fills"]

    with sqlite3.connect(journal) as db:
        kinds = dict(db.execute("select kind, count(*) from records group by kind").fetchall())
    verified = main(["audit", "verify", "--journal", str(journal)])
    with sqlite3.connect(journal) as db:
        db.execute(
            "update records set payload = replace(payload, '\"price\"', '\"price \"') "
            "where id = (select min(id) from records where kind = 'fill')"
        )
    tampered = main(["audit", "verify", "--journal", str(journal)])

    assert fills_traded > 0
    assert kinds["fill"] == fills_traded
    assert kinds["episode"] == 2 * len(market(summary)["episodes"])  # at start and at end
    assert kinds["start"] == 1
    assert verified == 0
    assert tampered == 1
    captured = capsys.readouterr()
    assert "BROKEN at record" in captured.out + captured.err
