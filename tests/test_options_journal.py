"""Option episodes in the journal: a paper run of the synthetic option chain records each
option episode (``option_episode``), and ``backstop report`` draws the same table of
option episodes from the journal as the run's own ``--report`` does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from options_support import CONFIG, SHORT, is_option

from bot.app import assemble
from bot.journal import JournalReader
from bot.journal import records as rk
from bot.journal.audit import verify
from bot.logs import make_logger
from bot.report.cli import draw
from bot.settings import load_settings


@pytest.fixture(scope="module")
def journaled_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    journal = tmp_path_factory.mktemp("options-journal") / "journal.sqlite"
    # A replay journals into a throwaway directory unless journal.path names a file.
    settings = load_settings(CONFIG, overrides={**SHORT, "journal": {"path": str(journal)}})
    log = make_logger("json", "warning", None)

    async def go() -> dict[str, Any]:
        run = await assemble(settings, log=log)
        assert run.options is not None
        assert run.options.desk is not None
        desk = run.options.desk
        await run.execute()
        return {"episodes": desk.episode_log.to_list(), "html": desk.report_html()}

    out = asyncio.run(go())
    out["journal"] = journal
    return out


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
        from bot.report.from_journal import JournalWindow, option_episodes

        chosen = option_episodes(reader, JournalWindow(symbol=symbol))
        every = option_episodes(reader, JournalWindow(symbol="BTC/USDT:USDT"))
    assert chosen
    assert {e["symbol"] for e in chosen} == {symbol}
    assert len(every) == len(journaled_run["episodes"])


def _option_table(page: str) -> str:
    found = re.search(r'<section class="options".*?</section>', page, re.S)
    assert found is not None, "no option section"
    return found.group(0)
