"""The early-warning model: labels from the detector's own episodes, the shipped file,
and its evaluation, repeated exactly by ``backstop model eval``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.app import assemble
from bot.cli import main
from bot.detect.config import DetectorConfig
from bot.errors import UserError
from bot.feeds.stress import parse_stress_spec
from bot.logs import null_logger
from bot.settings import load_settings
from bot.warning.dataset import CALM, Recording, RunPlan, labels, load_events, replay_trace
from bot.warning.evaluate import DETECTOR, LOOSE, MODEL, Score, total
from bot.warning.features import FEATURES
from bot.warning.model import WarningModel

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
NS = 1_000_000_000
FRACTURES = ("fracture:start_s=65", "wall-pull:start_s=190,ramp_s=2")


async def test_labels_are_the_detectors_own_episodes(tmp_path: Path) -> None:
    settings = load_settings(
        PAPER, env={}, overrides={"state_dir": tmp_path, "feed": {"duration_s": 140}}
    )
    market = settings.markets[0]
    # The bot itself, with one overlay: its episode is the reference.
    run = await assemble(settings, log=null_logger(), stress=parse_stress_spec(FRACTURES[0]))
    await run.execute()
    assert run.trader is not None
    (episode,) = run.trader.desks["BTC/USDT"].episodes.episodes
    assert episode.trigger is not None

    events = await load_events(Recording.parse("bundled"))
    trace = await replay_trace(
        events,
        FRACTURES,
        detector=DetectorConfig.from_market(market),
        bands_bps=market.bands_bps,
        reference_notional_quote=market.reference_notional_quote,
    )
    # Two overlays, two episodes; the first is the bot's, to the nanosecond.
    assert trace.onsets.size == 2
    assert int(trace.onsets[0]) == episode.trigger.ts_ns
    assert episode.start_ts_ns - episode.trigger.ts_ns >= market.engage_dwell_s * NS
    # Each onset is the start of an arming that engaged.
    engaged = [start for start, _, ok in trace.armings if ok]
    assert engaged == trace.onsets.tolist()

    horizon = 3.0
    got = labels(trace, horizon)
    onsets = trace.onsets.tolist()
    want = [any(0 < o - t <= horizon * NS for o in onsets) for t in trace.ts_ns.tolist()]
    assert got.tolist() == want
    # The positives a model learns from are the calm samples just before each onset.
    calm_pos = got & (trace.state == CALM)
    for o in onsets:
        near = (trace.ts_ns > o - horizon * NS) & (trace.ts_ns < o)
        assert calm_pos[near].all()
    assert calm_pos.sum() > 30


def test_the_shipped_model_carries_its_training_metadata() -> None:
    model = WarningModel.load()
    assert model.features == FEATURES
    assert 0.0 < model.threshold < 1.0
    assert model.horizon_s == 5.0
    tr = model.training
    assert [d["name"] for d in tr["data"]] == ["bundled"]
    assert tr["config"]["horizon_s"] == model.horizon_s
    plans = [RunPlan.from_dict(p) for p in tr["plans"]]
    train = [p for p in plans if p.part == "train"]
    held = [p for p in plans if p.part == "eval"]
    assert len(train) > len(held) > 10
    # Held out: other seeds, and data time after every training window.
    assert {p.seed for p in train if p.stress}.isdisjoint({p.seed for p in held if p.stress})
    assert max(p.window_s[1] for p in train) <= min(p.window_s[0] for p in held)
    assert tr["positives"] > 100
    assert tr["samples"] > 10 * tr["positives"]  # fractures are rare
    # The detector config the labels came from is the default market's.
    assert model.detector["engage_dwell_s"] == 1.0
    assert model.detector["baseline_fraction"] == 0.3
    # The stored totals are the sums of the stored runs.
    runs = model.eval["runs"]
    for key in (MODEL, DETECTOR, LOOSE):
        assert total(Score.from_dict(r[key]) for r in runs).summary() == model.eval["total"][key]
    assert model.eval["total"][MODEL]["fractures"] >= 20


def test_eval_repeats_the_stored_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "eval", "--runs", "3", "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert result["reproduced"] is True
    stored = WarningModel.load().eval["runs"][:3]
    assert result["runs"] == stored
    # Not vacuous: these runs hold a fracture and alarms of each kind of warning.
    assert sum(r[MODEL]["fractures"] for r in stored) >= 1
    assert sum(r[DETECTOR]["alarms"] for r in stored) >= 1


def test_eval_table_compares_the_model_with_the_threshold_detector(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The table from the stored result, no replays: what `model eval` prints.
    from bot.warning.cli import format_result

    model = WarningModel.load()
    text = format_result(model, model.eval)
    for needle in ("precision", "recall", "lead p50 s", "false/h", "threshold detector",
                   "model", "pre-arm"):
        assert needle in text


def test_scalar_and_batch_scoring_agree() -> None:
    model = WarningModel.load()
    rng = np.random.default_rng(3)
    lo, hi = np.array(model.clip_lo), np.array(model.clip_hi)
    rows = lo + (hi - lo) * rng.uniform(-0.2, 1.2, size=(200, len(FEATURES)))
    batch = model.probabilities(rows)
    for x, p in zip(rows.tolist(), batch.tolist(), strict=True):
        assert model.probability(x) == pytest.approx(p, rel=1e-12, abs=1e-15)
    assert batch.min() > 0.0
    assert batch.max() < 1.0
    # Explanations sum to the logit (against the training mean).
    x = rows[0].tolist()
    parts = sum(c for _, _, c in model.contributions(x))
    base = model.logit(list(model.mean))
    assert model.logit(x) == pytest.approx(base + parts, rel=1e-9)


def test_a_bad_model_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not an early-warning model"):
        WarningModel.load(bad)
    with pytest.raises(UserError, match="no such file"):
        WarningModel.load(tmp_path / "missing.json")
    data = WarningModel.load().to_dict()
    data["features"] = data["features"][:-1]
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError):
        WarningModel.load(bad)


def test_run_refuses_a_missing_model_file(tmp_path: Path) -> None:
    settings = load_settings(
        PAPER, env={}, overrides={"state_dir": tmp_path, "warning": {"model": tmp_path / "x"}}
    )
    with pytest.raises(UserError, match="no such file"):
        asyncio.run(assemble(settings, log=null_logger()))
