"""Reports from a journal: a daemon's episode drawn after the fact, as a replay's is live.

One fracture replay is run with its journal kept on disk and an in-memory recorder fed
as ``--report`` feeds it; the recorder rebuilt from the journal must tell the same
story: the same engaged and recovering spans, every quote and fill, and book rows that
are exactly the live readings at the journaled times.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.app import assemble
from bot.detect.config import DetectorConfig
from bot.feeds.stress import parse_stress_spec
from bot.journal import JournalReader
from bot.logs import null_logger
from bot.report import ReportRecorder, render_report
from bot.report.from_journal import JournalWindow, episode_window, recorder_from_journal
from bot.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
SYMBOL = "BTC/USDT"


@dataclass
class Both:
    live: ReportRecorder
    journal_path: Path
    episodes: list[dict[str, Any]]
    detectors: dict[str, DetectorConfig]


async def _run(tmp: Path) -> Both:
    journal_path = tmp / "journal.sqlite"
    settings = load_settings(
        PAPER,
        env={},
        overrides={
            "state_dir": str(tmp / "state"),
            "feed": {"duration_s": 200},
            "journal": {"path": str(journal_path)},
        },
    )
    run = await assemble(
        settings,
        log=null_logger(),
        stress=parse_stress_spec("fracture:start_s=65"),
        record=True,
    )
    assert run.trader is not None
    assert run.trader.recorder is not None
    await run.execute()
    desk = run.trader.desks[SYMBOL]
    detectors = {m.symbol: DetectorConfig.from_market(m) for m in settings.markets}
    return Both(run.trader.recorder, journal_path, desk.episodes.to_dicts(), detectors)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Both:
    return asyncio.run(_run(tmp_path_factory.mktemp("journal-report")))


def _rebuilt(both: Both, window: JournalWindow | None = None) -> ReportRecorder:
    with JournalReader(both.journal_path) as reader:
        return recorder_from_journal(reader, window or JournalWindow(), detectors=both.detectors)


def test_the_journal_tells_the_same_episode_as_the_live_recorder(both: Both) -> None:
    live = both.live.markets[SYMBOL]
    rebuilt = _rebuilt(both).markets[SYMBOL]
    assert len(both.episodes) == 1
    assert [(s.state, s.start_ns, s.end_ns) for s in rebuilt.spans] == [
        (s.state, s.start_ns, s.end_ns) for s in live.spans
    ]
    assert len(rebuilt.all_quotes()) == len(live.all_quotes()) > 0
    assert len(rebuilt.all_fills()) == len(live.all_fills()) > 0
    assert sorted((q.client_id, q.placed_ns, q.ended_ns) for q in rebuilt.all_quotes()) == sorted(
        (q.client_id, q.placed_ns, q.ended_ns) for q in live.all_quotes()
    )


def test_journaled_rows_are_the_live_readings_thinned(both: Both) -> None:
    live = both.live.markets[SYMBOL].view("detector")
    rebuilt = _rebuilt(both).markets[SYMBOL].view("detector")
    # Thinned: one per second when calm, four per second when active, plus transitions.
    assert 100 < len(rebuilt) < len(live)
    index = {int(t): i for i, t in enumerate(live.ts)}
    shared = [i for i, t in enumerate(rebuilt.ts) if int(t) in index]
    assert len(shared) > 0.5 * len(rebuilt)  # the live view is itself thinned far from the episode
    for name in ("depth_bid", "depth_ask", "threshold_bid", "state"):
        got = rebuilt[name][shared]
        want = live[name][[index[int(rebuilt.ts[i])] for i in shared]]
        np.testing.assert_array_equal(got, want)


def test_report_of_one_episode_from_the_journal(both: Both, tmp_path: Path) -> None:
    episode = both.episodes[0]
    with JournalReader(both.journal_path) as reader:
        journaled = reader.episodes(SYMBOL)
        recorder = recorder_from_journal(
            reader, episode_window(episode, 30.0), detectors=both.detectors
        )
    assert [e["id"] for e in journaled] == [episode["id"]]
    paths = render_report(recorder, journaled, tmp_path / "ep.html", title="From the journal")
    html = paths[0].read_text()
    assert re.search(r'<section class="episode" id="episode-1">', html)
    assert f"{episode['quotes_placed']:,}" in html
    assert all(p.stat().st_size > 0 for p in paths)


def test_report_command_draws_an_episode_and_refuses_unknown_ones(
    both: Both, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    episode_id = str(both.episodes[0]["id"])
    out = tmp_path / "r" / "episode.html"
    code = main(
        ["report", "--journal", str(both.journal_path), "--episode", episode_id, "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    assert out.is_file()
    assert (out.parent / "episode-episode-01.png").is_file()
    assert f"episode {episode_id}" in out.read_text()

    code = main(
        ["report", "--journal", str(both.journal_path), "--episode", "nope", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "no episode 'nope'" in err
    assert "Traceback" not in err

    code = main(["report", "--state-dir", str(tmp_path / "empty"), "--out", str(out)])
    assert code == 2
    assert "journal" in capsys.readouterr().err
