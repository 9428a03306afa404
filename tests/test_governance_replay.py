"""Verifiable interventions: a real paper run journals an episode's evidence, and
``backstop audit replay`` re-runs it, matching every decision; a tampered journal or
another policy is a dispute naming the first diverging decision. Also the policy
changed mid-episode, a two-person resume, and the governance report of such a day."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.app import Run, assemble
from bot.book import OrderBook
from bot.budget import Budget, BudgetLimits
from bot.cli import main
from bot.clock import ManualClock
from bot.control.api import current_principal
from bot.daemon import Daemon
from bot.detect.config import DetectorConfig
from bot.detect.machine import DetectorState
from bot.detector import FractureDetector
from bot.feeds.events import Trade
from bot.feeds.stress import parse_stress_spec
from bot.governance import report as governance_report
from bot.governance.detectors import detector_config
from bot.governance.evidence import EvidenceLog, Reading, context_extras
from bot.governance.gate import GovernedStrategy
from bot.governance.policy import load_policy_file, load_policy_text
from bot.governance.replay import _context_extras, replay
from bot.governance.roles import Principal, Role
from bot.journal import Journal
from bot.journal import records as rk
from bot.journal.chain import canonical_json, link, record_text
from bot.killswitch import TripSource
from bot.logs import null_logger
from bot.monitor import DepthSample
from bot.settings import Settings, load_settings
from strategies.base import MarketContext
from tests.strategy_helpers import (
    RULES,
    book,
    budget_view,
    detector_update,
    inventory_view,
    sample_of,
)

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
EXAMPLE = REPO / "config" / "policies" / "example.toml"
FRACTURE = "fracture:start_s=65"
DURATION_S = 180.0


@dataclass
class Journaled:
    journal: Path
    episode: str


def settings_for(root: Path, policy_file: Path, *, duration_s: float = DURATION_S) -> Settings:
    return load_settings(
        PAPER,
        env={},
        overrides={
            "state_dir": root / "state",
            "journal": {"path": root / "journal.sqlite"},
            "feed": {"duration_s": duration_s},
            "governance": {"policy_file": policy_file, "two_person_resume": True},
        },
    )


async def paper_run(root: Path, policy_file: Path) -> Run:
    run = await assemble(
        settings_for(root, policy_file), log=null_logger(), stress=parse_stress_spec(FRACTURE)
    )
    await run.execute()
    return run


def episode_ids(journal: Path) -> list[str]:
    with sqlite3.connect(journal) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ref FROM records WHERE kind = 'episode' ORDER BY id"
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture(scope="module")
def journaled(tmp_path_factory: pytest.TempPathFactory) -> Journaled:
    root = tmp_path_factory.mktemp("replay")
    asyncio.run(paper_run(root, EXAMPLE))
    journal = root / "journal.sqlite"
    (episode,) = episode_ids(journal)
    return Journaled(journal, episode)


def audit(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        code = main(["audit", *argv])
    return code, out.getvalue() + err.getvalue()


def copy(journal: Path, to: Path) -> Path:
    with sqlite3.connect(journal) as src, sqlite3.connect(to) as dst:
        src.backup(dst)
    return to


def rewrite(journal: Path, record_id: int, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit one record's payload and re-hash the chain after it: a forger with write
    access to the whole file (only a head noted elsewhere would show it)."""
    with sqlite3.connect(journal) as conn:
        prev = conn.execute("SELECT hash FROM records WHERE id = ?", (record_id - 1,)).fetchone()[0]
        rows = conn.execute(
            "SELECT id, ts_ns, kind, payload FROM records WHERE id >= ? ORDER BY id", (record_id,)
        ).fetchall()
        for rid, ts, kind, text in rows:
            if rid == record_id:
                payload = json.loads(text)
                edit(payload)
                text = canonical_json(payload)
            digest = link(prev, record_text(rid, ts, kind, text))
            conn.execute(
                "UPDATE records SET payload = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (text, prev, digest, rid),
            )
            prev = digest


def first_record(journal: Path, sql: str) -> int:
    with sqlite3.connect(journal) as conn:
        return int(conn.execute(f"SELECT MIN(id) FROM records WHERE {sql}").fetchone()[0])


# --------------------------------------------------------------------------- matching


def test_audit_replay_matches_every_decision_of_a_real_episode(journaled: Journaled) -> None:
    code, text = audit("replay", journaled.episode, "--journal", str(journaled.journal))
    assert code == 0, text
    assert "MATCH: every engage/disengage decision, quote and order" in text
    assert "as journaled" in text
    report = replay(journaled.journal, journaled.episode)
    assert report.ok
    assert report.readings > 500
    moves = [(a, b) for _, a, b in report.transitions]
    assert moves[:2] == [("calm", "arming"), ("arming", "engaged")]
    assert moves[-1] == ("recovering", "calm")
    assert report.decisions > 500
    assert report.orders > 20
    assert report.policy_hash == load_policy_file(EXAMPLE).hash
    # The cost of the evidence: about 0.9 MB per minute of window on this recording
    # (~10 book updates a second); docs/governance.md has the measurement.
    per_minute = report.evidence_bytes / (report.window_s / 60)
    assert 300_000 < per_minute < 2_000_000


def test_the_json_report_names_the_window_and_the_policy(journaled: Journaled) -> None:
    code, text = audit("replay", journaled.episode, "--journal", str(journaled.journal), "--json")
    assert code == 0
    data = json.loads(text)
    assert data["ok"] is True
    assert data["dispute"] is None
    assert data["symbol"] == "BTC/USDT"


def test_an_unknown_episode_is_a_usage_error(journaled: Journaled) -> None:
    code, text = audit("replay", "BTC/USDT@1", "--journal", str(journaled.journal))
    assert code == 2
    assert f"no episode 'BTC/USDT@1' in {journaled.journal} (latest: {journaled.episode})" in text


# --------------------------------------------------------------------------- disputes


def _engaged_with_quotes(journal: Path, nth: int) -> int:
    with sqlite3.connect(journal) as conn:
        rows = conn.execute(
            "SELECT id FROM records WHERE kind = 'decision' AND "
            "json_extract(payload, '$.st') = 'engaged' AND "
            "json_array_length(json_extract(payload, '$.q')) > 0 ORDER BY id"
        ).fetchall()
    return int(rows[nth][0])


def test_a_tampered_quote_is_a_dispute_at_that_decision(
    journaled: Journaled, tmp_path: Path
) -> None:
    journal = copy(journaled.journal, tmp_path / "j.sqlite")
    target = _engaged_with_quotes(journal, 40)

    def nudge(p: dict[str, Any]) -> None:
        p["q"][1][1] += 0.5  # the second quote's price, half a dollar better

    rewrite(journal, target, nudge)
    code, _ = audit("verify", "--journal", str(journal))
    assert code == 0  # the chain was re-hashed: only the replay can tell
    code, text = audit("replay", journaled.episode, "--journal", str(journal))
    assert code == 1
    report = replay(journal, journaled.episode)
    assert report.dispute is not None
    assert report.dispute.record_id == target
    assert report.dispute.stage == "strategy"
    assert report.dispute.detail.startswith("quote 2 of ")
    assert f"DISPUTE at record {target} (" in text


def test_an_order_no_decision_allowed_is_a_dispute(journaled: Journaled, tmp_path: Path) -> None:
    journal = copy(journaled.journal, tmp_path / "j.sqlite")
    window = first_record(journal, "kind = 'evidence'")
    target = first_record(
        journal, f"kind = 'order' AND id > {window} AND json_extract(payload, '$.previous') IS NULL"
    )

    def bigger(p: dict[str, Any]) -> None:
        p["amount"] = p["amount"] * 3

    rewrite(journal, target, bigger)
    report = replay(journal, journaled.episode)
    assert report.dispute is not None
    assert (report.dispute.record_id, report.dispute.stage) == (target, "orders")
    assert "is none of the quotes the bot's decisions allowed" in report.dispute.detail


def test_an_edited_policy_record_is_a_dispute(journaled: Journaled, tmp_path: Path) -> None:
    journal = copy(journaled.journal, tmp_path / "j.sqlite")
    target = first_record(journal, "kind = 'policy'")

    def looser(p: dict[str, Any]) -> None:
        p["policy"]["activation"]["baseline_fraction"] = 0.2

    rewrite(journal, target, looser)
    report = replay(journal, journaled.episode)
    assert report.dispute is not None
    assert (report.dispute.record_id, report.dispute.stage) == (target, "policy")
    assert "does not match its hash" in report.dispute.detail


@pytest.mark.parametrize(
    ("old", "new", "stage", "where"),
    [
        # A later trigger: the detector would not have armed on the window's first reading.
        ("baseline_fraction = 0.3", "baseline_fraction = 0.2", "detector", "first"),
        # Wider quotes: the first decision with quotes differs.
        ("base_spread_bps = 1.0", "base_spread_bps = 1.5", "strategy", "first quotes"),
    ],
)
def test_replay_under_another_policy_reports_where_it_would_differ(
    journaled: Journaled, tmp_path: Path, old: str, new: str, stage: str, where: str
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(EXAMPLE.read_text().replace(old, new))
    code, text = audit(
        "replay", journaled.episode, "--journal", str(journaled.journal), "--policy", str(other)
    )
    assert code == 1
    assert "NOT the journaled one (--policy)" in text
    report = replay(journaled.journal, journaled.episode, policy_file=other)
    assert report.dispute is not None
    assert report.dispute.stage == stage
    decisions = "kind = 'decision'"
    expected = (
        first_record(journaled.journal, decisions)
        if where == "first"
        else first_record(
            journaled.journal,
            decisions + " AND json_array_length(json_extract(payload, '$.q')) > 0",
        )
    )
    assert report.dispute.record_id == expected


# --------------------------------------------------------------------------- a day's events


class Day:
    """Changes the policy as an admin would, on the 100th engaged reading of the episode,
    and says when the episode is over."""

    def __init__(self, policy_text: str) -> None:
        self.run: Run | None = None
        self.policy_text = policy_text
        self.engaged = 0
        self.changed = False
        self.episode_over = asyncio.Event()

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        run = self.run
        assert run is not None
        assert run.trader is not None
        assert run.governance is not None
        update = run.trader.desks[symbol].last_update
        if update is None:
            return
        if update.state is DetectorState.ENGAGED:
            self.engaged += 1
            if self.engaged == 100:
                new = load_policy_text(self.policy_text, source="control API")
                run.governance.change_policy(
                    new, who="control socket, token admin.alice", reason="tighter ladder"
                )
                self.changed = True
        elif self.changed and update.state is DetectorState.CALM:
            self.episode_over.set()

    def on_trade(self, trade: Trade) -> None:
        return None


async def test_a_policy_changed_mid_episode_replays_under_each_version_and_reports(
    tmp_path: Path,
) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(EXAMPLE.read_text())
    new_text = EXAMPLE.read_text().replace("levels = 3", "levels = 2")
    day = Day(new_text)
    run = await assemble(
        settings_for(tmp_path, policy_file, duration_s=260.0),
        log=null_logger(),
        listeners=[day],
        stress=parse_stress_spec(FRACTURE),
    )
    day.run = run
    running = asyncio.create_task(run.execute())
    await asyncio.wait_for(day.episode_over.wait(), timeout=60)
    # After the episode, a loss guard kills it; two admins resume it through the daemon.
    assert run.killswitch is not None
    await run.killswitch.trip(
        "DAILY_LOSS: loss=2600 max=2500", source=TripSource.GUARD, who="guard:daily_loss"
    )
    daemon = Daemon(run, log=null_logger())
    answers = []
    for admin in ("admin.alice", "admin.bob"):
        token = current_principal.set(Principal(Role.ADMIN, admin, f"test ({admin})"))
        try:
            answers.append(await daemon.resume(f"{admin}: loss understood", f"test ({admin})"))
        finally:
            current_principal.reset(token)
    assert answers[0]["pending"] is True
    assert answers[1]["state"] == "armed"
    await asyncio.wait_for(running, timeout=60)
    journal = tmp_path / "journal.sqlite"
    (episode,) = episode_ids(journal)

    report = replay(journal, episode)
    assert report.ok, report.lines()
    assert report.policy_changes == 1
    with sqlite3.connect(journal) as conn:
        change = conn.execute(
            "SELECT id FROM records WHERE kind = 'policy' AND "
            "json_extract(payload, '$.action') = 'change'"
        ).fetchone()[0]
        ladders = conn.execute(
            "SELECT id < ?, MAX(json_array_length(json_extract(payload, '$.q'))) FROM records "
            "WHERE kind = 'decision' AND json_extract(payload, '$.st') = 'engaged' GROUP BY 1",
            (change,),
        ).fetchall()
    # Inside the window, and the ladder shrank from 3 to 2 rungs a side where it landed.
    assert report.open_id < change < (report.close_id or 10**9)
    assert dict(ladders) == {1: 6, 0: 4}
    # Replayed under the first version throughout, the change shows as a dispute.
    first = tmp_path / "first.toml"
    first.write_text(EXAMPLE.read_text())
    stale = replay(journal, episode, policy_file=first)
    assert stale.dispute is not None
    assert stale.dispute.record_id > change

    built = governance_report.build(journal, period="day")
    (day_report,) = built.periods
    assert built.chain_ok
    assert len(day_report.episodes) == 1
    assert day_report.episodes[0].id == episode
    assert [p.action for p in day_report.policy_changes] == ["change"]
    assert day_report.policy_changes[0].reason == "tighter ladder"
    assert day_report.policy_at_start is not None
    assert day_report.policy_at_start.hash == load_policy_file(EXAMPLE).hash
    kills = [(k.action, k.reason) for k in day_report.kills]
    assert ("trip", "DAILY_LOSS: loss=2600 max=2500") in kills
    resume = next(k for k in day_report.kills if k.action == "resume")
    assert resume.approvers == ["admin.alice", "admin.bob"]
    md = governance_report.render_markdown(built)
    assert "| tighter ladder |" in md
    assert "admin.alice, admin.bob" in md
    html_out = governance_report.write(built, tmp_path / "gov.html")
    page = html_out.read_text()
    assert page.startswith("<!doctype html>")
    assert episode in page
    assert "DAILY_LOSS" in page
    code = main(
        [
            "report",
            "--governance",
            "--journal",
            str(journal),
            "--out",
            str(tmp_path / "gov.md"),
            "--period",
            "month",
        ]
    )
    assert code == 0
    assert "## 2024-08" in (tmp_path / "gov.md").read_text()


# --------------------------------------------------------------------------- inputs beyond the book


def flat_sample(ts_ns: int, depth: float) -> DepthSample:
    """A one-band sample with ``depth`` quote each side at mid 100."""
    d = np.array([[[depth / 100, depth]], [[depth / 100, depth]]])
    return DepthSample(ts_ns, 99.99, 100.01, 100.0, 0.2, (10.0,), d, None, None)


def test_a_shortened_engage_dwell_is_evidence_too(tmp_path: Path) -> None:
    """The early warning's pre-arm shortens the detector's engage dwell at run time: the
    evidence carries the dwell each update ran on, so the replay engages where the bot
    did; without it, the replay disputes the engagement."""
    policy = load_policy_file(EXAMPLE)
    # The bot's detector always runs the policy's criteria (engage dwell 1 s here).
    detector = FractureDetector(detector_config(DetectorConfig(), policy.policy, "BTC/USDT"))
    path = tmp_path / "j.sqlite"
    journal = Journal(path, clock=ManualClock(1))
    journal.append(rk.POLICY, {"action": "start", **policy.record(), "who": "t", "reason": "t"})
    evidence = EvidenceLog(
        journal,
        budget=Budget(BudgetLimits()),
        strategy=GovernedStrategy(policy.policy),
        policy_hash=lambda: policy.hash,
    )
    ob = book()
    engaged_at = None
    for i in range(800):
        ts = (i + 1) * 100_000_000
        sample = flat_sample(ts, 1_000_000.0 if i < 700 else 100_000.0)
        evidence.before_reading("BTC/USDT", detector, ts)
        update = detector.update(sample)
        reading = Reading(
            "BTC/USDT", sample, ob, (0.0, 0.0), update, inventory_view(), RULES, "halted"
        )
        evidence.on_reading(reading)
        if update.state is DetectorState.ENGAGED and engaged_at is None:
            engaged_at = ts
        # What pre-arm does after each reading while its alarm is up.
        detector.machine.engage_dwell_ns = 300_000_000 if i >= 695 else 1_000_000_000
    assert engaged_at == 704 * 100_000_000  # 0.3 s after arming, not 1 s
    episode = f"BTC/USDT@{engaged_at}"
    journal.append(
        rk.EPISODE,
        {"id": episode, "symbol": "BTC/USDT", "start_ts_ns": engaged_at, "end_ts_ns": None},
        ts_ns=engaged_at,
    )
    journal.close()

    report = replay(path, episode)
    assert report.ok, report.lines()
    assert (engaged_at, "arming", "engaged") in report.transitions

    with sqlite3.connect(path) as conn:
        shortened = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM records WHERE kind = 'decision' AND payload LIKE '%\"dwell\"%'"
            )
        ]
        engaging = conn.execute(
            "SELECT id FROM records WHERE kind = 'decision' AND ts_ns = ?", (engaged_at,)
        ).fetchone()[0]
    assert shortened
    for rid in shortened:
        rewrite(path, rid, lambda p: p.pop("dwell"))
    forged = replay(path, episode)
    assert forged.dispute is not None
    assert (forged.dispute.record_id, forged.dispute.stage) == (engaging, "detector")
    assert "the bot's detector was engaged (arming->engaged), the replay's is arming" in (
        forged.dispute.detail
    )


def test_the_strategys_risk_state_round_trips() -> None:
    names = {f.name for f in dataclasses.fields(MarketContext)}
    wanted = {"reduce_only": True, "paused_sides": frozenset({"buy"}), "order_room": 3}
    extras = {k: v for k, v in wanted.items() if k in names}
    ob = book()
    ctx = MarketContext(
        "BTC/USDT",
        1,
        ob,
        sample_of(ob),
        detector_update(),
        inventory_view(),
        budget_view(),
        **extras,
    )
    journaled = json.loads(json.dumps(context_extras(ctx)))
    assert _context_extras(journaled) == extras
