"""The early warning inside the bot: status, metrics, journal, and the pre-arm policy.

Real stack (replay -> book -> detector -> warning -> backstop -> budget -> risk -> paper
venue) on the bundled recording, with the `fracture` overlay brought forward to 65 s so
each run is short.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import assemble
from bot.control.metrics import Metrics
from bot.daemon import Daemon, MetricsListener
from bot.feeds.stress import parse_stress_spec
from bot.journal.audit import verify
from bot.journal.reader import JournalReader
from bot.logs import null_logger
from bot.settings import load_settings
from bot.warning.features import FEATURES
from bot.warning.live import WARNING_KIND
from bot.warning.model import WarningModel

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
NS = 1_000_000_000
EARLY_FRACTURE = "fracture:start_s=65"
TRADING_KINDS = ("order", "fill", "order_failed", "episode")


@dataclass
class Outcome:
    summary: dict[str, Any]
    trading: list[tuple[str, int, str]]
    """(kind, ts_ns, payload) of every order, fill and episode record, in chain order."""
    warnings: list[dict[str, Any]]
    status: dict[str, Any]
    metrics: str
    engage_dwell_ns: int
    journal: Path


async def paper_run(
    tmp: Path, warning: dict[str, Any], *, stress: str | None, duration_s: float
) -> Outcome:
    journal = tmp / "journal.sqlite"
    settings = load_settings(
        PAPER,
        env={},
        overrides={
            "state_dir": tmp,
            "journal": {"path": journal},
            "feed": {"duration_s": duration_s},
            "warning": warning,
        },
    )
    log = null_logger()
    run = await assemble(
        settings, log=log, stress=parse_stress_spec(stress) if stress else None
    )
    assert run.trader is not None
    assert run.killswitch is not None
    metrics = Metrics()
    run.engine.add_listener(MetricsListener(metrics, run.trader, run.killswitch))
    daemon = Daemon(run, log=log)
    summary = (await run.execute()).to_dict()
    status = await daemon.status()
    with JournalReader(journal) as reader:
        trading = [(r.kind, r.ts_ns, json.dumps(r.payload, sort_keys=True))
                   for r in reader.records(TRADING_KINDS)]
        warnings = [r.payload for r in reader.records([WARNING_KIND])]
    return Outcome(
        summary=summary,
        trading=trading,
        warnings=warnings,
        status=status,
        metrics=metrics.render().decode(),
        engage_dwell_ns=run.trader.desks["BTC/USDT"].detector.machine.engage_dwell_ns,
        journal=journal,
    )


def market(outcome: Outcome) -> dict[str, Any]:
    m: dict[str, Any] = outcome.summary["trading"]["markets"]["BTC/USDT"]
    return m


@pytest.fixture(scope="module")
def on_and_off(tmp_path_factory: pytest.TempPathFactory) -> tuple[Outcome, Outcome]:
    """The same stressed replay with the warning computed (pre-arm off) and not at all."""

    async def both() -> tuple[Outcome, Outcome]:
        on = await paper_run(
            tmp_path_factory.mktemp("on"), {"enabled": True}, stress=EARLY_FRACTURE,
            duration_s=170,
        )
        off = await paper_run(
            tmp_path_factory.mktemp("off"), {"enabled": False}, stress=EARLY_FRACTURE,
            duration_s=170,
        )
        return on, off

    return asyncio.run(both())


def test_pre_arm_off_trades_byte_for_byte_as_without_the_warning(
    on_and_off: tuple[Outcome, Outcome],
) -> None:
    on, off = on_and_off
    # Something traded, so the comparison means something.
    kinds = {kind for kind, _, _ in on.trading}
    assert {"order", "fill", "episode"} <= kinds
    assert on.trading == off.trading
    m_on, m_off = dict(market(on)), dict(market(off))
    assert m_off.pop("warning") is None
    assert m_on.pop("warning")["pre_arm"] is False
    assert m_on == m_off
    # The detector kept the market's own dwell throughout.
    assert on.engage_dwell_ns == off.engage_dwell_ns == 1 * NS


def test_status_metrics_and_journal_show_the_warning(on_and_off: tuple[Outcome, Outcome]) -> None:
    on, off = on_and_off
    shown = on.status["markets"][0]["warning"]
    assert 0.0 <= shown["probability"] <= 1.0
    assert shown["level"] in ("low", "elevated", "high")
    assert isinstance(shown["alarm"], bool)
    assert shown["threshold"] == WarningModel.load().threshold
    assert shown["pre_arm"] is False
    assert off.status["markets"][0]["warning"] is None
    assert 'backstop_warning_probability{symbol="BTC/USDT"}' in on.metrics
    assert 'backstop_warning_alarm{symbol="BTC/USDT"}' in on.metrics
    assert "backstop_warning_probability{" not in off.metrics
    # Every journal record is an edge of the alarm: up, down, up, ...
    edges = [w["alarm"] for w in on.warnings]
    assert edges  # it went up before this fracture, and down when the backstop engaged
    assert edges == [i % 2 == 0 for i in range(len(edges))]
    assert on.warnings[0]["detector_state"] == "calm"
    assert {t["feature"] for t in on.warnings[0]["top"]} <= set(FEATURES)
    assert market(on)["warning"]["alarms"] == edges.count(True)
    assert off.warnings == []
    # The warning records are links of the same hash chain as everything else.
    assert verify(on.journal).ok


@pytest.fixture
def always_up(tmp_path: Path) -> Path:
    """The shipped model with its threshold at 0: the warning is up whenever it can be."""
    path = tmp_path / "always_up.json"
    data = WarningModel.load().to_dict()
    WarningModel.from_dict({**data, "threshold": 0.0, "name": "always-up"}).save(path)
    return path


async def test_pre_arm_alone_never_trades(tmp_path: Path, always_up: Path) -> None:
    out = await paper_run(
        tmp_path,
        {"pre_arm": True, "model": always_up, "pre_arm_engage_dwell_s": 0.0},
        stress=None,
        duration_s=150,
    )
    # Armed the whole time, with no dwell at all: still no episode and no order,
    # because no fracture rule ever held long enough on the calm recording.
    assert out.warnings
    assert out.warnings[0]["alarm"] is True
    assert out.warnings[0]["pre_arm"] is True
    assert out.engage_dwell_ns == 0
    assert out.status["markets"][0]["warning"]["pre_armed"] is True
    assert out.trading == []
    assert market(out)["episodes"] == []


async def test_pre_arm_engages_sooner_on_a_real_fracture(tmp_path: Path, always_up: Path) -> None:
    armed = await paper_run(
        tmp_path / "armed", {"pre_arm": True, "model": always_up}, stress=EARLY_FRACTURE,
        duration_s=80,
    )
    plain = await paper_run(
        tmp_path / "plain", {"enabled": False}, stress=EARLY_FRACTURE, duration_s=80
    )
    (ep_armed,) = market(armed)["episodes"]
    (ep_plain,) = market(plain)["episodes"]
    # Same fracture, same trigger; the pre-armed detector waited 0.25 s, not 1 s.
    assert ep_armed["trigger"]["ts_ns"] == ep_plain["trigger"]["ts_ns"]
    waited_armed = ep_armed["start_ts_ns"] - ep_armed["trigger"]["ts_ns"]
    waited_plain = ep_plain["start_ts_ns"] - ep_plain["trigger"]["ts_ns"]
    assert 0.25 * NS <= waited_armed < 0.5 * NS
    assert waited_plain >= 1 * NS
    assert market(armed)["warning"]["pre_armed_engagements"] == 1
    # Orders only once engaged: pre-arm changed when, not whether.
    first_order = min(ts for kind, ts, _ in armed.trading if kind == "order")
    assert first_order >= ep_armed["start_ts_ns"]
