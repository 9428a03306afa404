"""``backstop model``: train and evaluate the early-warning model.

    backstop model train [--data REC ...] [--holdout REC ...] --out model.json
                         [--horizon S] [--train-runs N] [--eval-runs N] [--split F]
                         [--seed N] [--c C] [--config FILE]
    backstop model eval  [--model model.json] [--data REC ... | --holdout REC ...]
                         [--runs N] [--json]

``REC`` is ``bundled`` (the recording shipped with the package) or files chained with
commas (``a.gz,b.gz``). ``eval`` with no data repeats the held-out runs recorded in
the model file and says whether it reproduced the file's numbers; with ``--data`` or
``--holdout`` it scores the model on those recordings instead. Both print precision,
recall, lead time and false alarms per hour for the model and for the plain threshold
detector (and a looser threshold) on the same held-out data. See docs/early-warning.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from bot.errors import UserError
from bot.warning.dataset import BUNDLED, Recording, RunPlan
from bot.warning.evaluate import DETECTOR, LOOSE, MODEL, Score, total
from bot.warning.model import WarningModel, shipped_model_path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_LABELS = {
    MODEL: "model",
    DETECTOR: "threshold detector (arming)",
    LOOSE: "looser threshold (depth < recovery level)",
}


def add_model_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "model",
        help="train or evaluate the early-warning model (depth fractures seconds ahead)",
        description="The early-warning model: a logistic regression on book features, "
        "trained on replays of recordings with seeded stress overlays. See "
        "docs/early-warning.md.",
    )
    sub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    train = sub.add_parser("train", help="build the dataset, fit, evaluate on held-out runs")
    _data_flags(train)
    train.add_argument("--out", type=Path, required=True, metavar="PATH.json")
    train.add_argument("--horizon", type=float, default=5.0, metavar="S",
                       help="warn of a fracture starting within this many seconds (5)")
    train.add_argument("--train-runs", type=int, default=80, metavar="N",
                       help="replays with overlays per recording for training (80)")
    train.add_argument("--eval-runs", type=int, default=24, metavar="N",
                       help="replays with overlays per recording held out (24)")
    train.add_argument("--split", type=float, default=0.62, metavar="F",
                       help="share of each --data recording's time used for training (0.62)")
    train.add_argument("--seed", type=int, default=1, help="seed of the overlay draws (1)")
    train.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation (1.0)")
    train.add_argument("--config", type=Path, help="take the detector's thresholds from the "
                       "first market of this config (default: the default market settings)")
    ev = sub.add_parser("eval", help="score a model against the threshold detector")
    _data_flags(ev, default_bundled=False)
    ev.add_argument("--model", type=Path, help="model file (default: the shipped one)")
    ev.add_argument("--runs", type=int, metavar="N", help="only the first N held-out runs")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")


def _data_flags(p: argparse.ArgumentParser, *, default_bundled: bool = True) -> None:
    hint = " (default: bundled)" if default_bundled else ""
    p.add_argument("--data", action="append", metavar="REC",
                   help=f"recording to split into training and held-out time{hint}; repeat")
    p.add_argument("--holdout", action="append", metavar="REC",
                   help="recording used whole for held-out evaluation only; repeat")


def is_model_command(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) == "model"


def run_model_command(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    stdout = out or sys.stdout
    try:
        if args.model_command == "train":
            return asyncio.run(_train(args, stdout))
        return asyncio.run(_eval(args, stdout))
    except UserError as e:
        print(f"backstop model: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"backstop model: {e}", file=sys.stderr)
        return EXIT_USAGE


def _recordings(texts: list[str] | None) -> list[Recording]:
    return [Recording.parse(t) for t in texts or []]


async def _train(args: argparse.Namespace, out: TextIO) -> int:
    from bot.warning.train import TrainConfig, train

    market = None
    if args.config is not None:
        from bot.settings import load_settings

        market = load_settings(args.config).markets[0]
    config = TrainConfig(
        horizon_s=args.horizon,
        train_runs=args.train_runs,
        eval_runs=args.eval_runs,
        split=args.split,
        seed=args.seed,
        c=args.c,
    )
    data = _recordings(args.data) if args.data else [Recording.parse(BUNDLED)]
    started = time.perf_counter()

    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    model = await train(data, _recordings(args.holdout), config, market, progress)
    model.save(args.out)
    print(f"model written to {args.out} ({time.perf_counter() - started:.0f} s)", file=out)
    print(format_result(model, model.eval), file=out)
    return EXIT_OK


async def evaluate_model(
    model: WarningModel,
    data: list[Recording],
    holdout: list[Recording],
    runs: int | None = None,
) -> dict[str, Any]:
    """The eval result (as stored in a model file) for ``model``: on the held-out runs
    its file records when no recordings are given, else on fresh held-out runs of those."""
    from bot.settings import MarketSettings
    from bot.warning.train import Dataset, TrainConfig, evaluation, plan_dataset, traces_for

    cfg_dict = dict(model.training.get("config") or {})
    cfg_dict["features"] = tuple(cfg_dict.get("features") or ())
    config = TrainConfig(**cfg_dict) if cfg_dict["features"] else TrainConfig()
    market_fields = model.training.get("market") or {}
    market = MarketSettings(symbol="BTC/USDT", **market_fields)
    # The labels follow the detector config the model was trained against.
    detector = _detector(model, market)
    if data or holdout:
        ds = await plan_dataset(data, holdout, config, market)
        plans = [p for p in ds.plans if p.part == "eval"]
    else:
        plans = [RunPlan.from_dict(p) for p in model.training.get("plans", [])]
        plans = [p for p in plans if p.part == "eval"]
        names = {p.recording for p in plans}
        if names - {BUNDLED}:
            raise UserError(
                "the model was evaluated on recordings other than the bundled one "
                f"({', '.join(sorted(names - {BUNDLED}))}): give them with --data/--holdout"
            )
        ds = Dataset({BUNDLED: Recording.parse(BUNDLED)}, plans, market)
    if runs is not None:
        plans = plans[:runs]
    if not plans:
        raise UserError("no held-out runs to evaluate on")
    traces = await traces_for(ds, plans)
    return evaluation(model, traces, plans, detector, config)


def _detector(model: WarningModel, market: Any) -> Any:
    from bot.detect.config import DetectorConfig

    if model.detector:
        return DetectorConfig(**model.detector)
    return DetectorConfig.from_market(market)


async def _eval(args: argparse.Namespace, out: TextIO) -> int:
    path = args.model or shipped_model_path()
    model = WarningModel.load(path)
    data, holdout = _recordings(args.data), _recordings(args.holdout)
    result = await evaluate_model(model, data, holdout, args.runs)
    reproduced: bool | None = None
    if not data and not holdout and model.eval.get("runs"):
        stored = {r["run"]: r for r in model.eval["runs"]}
        reproduced = all(stored.get(r["run"]) == r for r in result["runs"])
    if args.json:
        print(json.dumps({"model": str(path), **result, "reproduced": reproduced}), file=out)
    else:
        print(f"model: {path}", file=out)
        print(format_result(model, result), file=out)
        if reproduced is not None:
            what = f"{len(result['runs'])} held-out runs"
            print(
                f"{what}: {'identical to' if reproduced else 'DIFFERENT from'} the numbers "
                "stored in the model file",
                file=out,
            )
    return EXIT_OK if reproduced is not False else EXIT_FAILURE


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def format_result(model: WarningModel, result: dict[str, Any]) -> str:
    """The eval table, the pre-arm lines and the model's weights, as text."""
    runs = result.get("runs") or []
    sums = {k: total(Score.from_dict(r[k]) for r in runs) for k in (MODEL, DETECTOR, LOOSE)}
    hours = sums[MODEL].calm_s / 3600.0
    lines = [
        f"held-out: {len(runs)} runs, {sums[MODEL].fractures} fractures, "
        f"{hours:.2f} h of calm book; horizon {model.horizon_s:g} s, "
        f"alarm threshold {model.threshold:g}",
        "",
        f"{'warning':42s} {'precision':>9s} {'recall':>7s} {'lead>=1s':>8s} "
        f"{'lead p50 s':>10s} {'false/h':>8s} {'alarms':>7s}",
    ]
    for key, s in sums.items():
        lines.append(
            f"{_LABELS[key]:42s} {_pct(s.precision):>9s} {_pct(s.recall):>7s} "
            f"{_pct(s.recall_with_lead(1.0)):>8s} {_num(s.median_lead_s):>10s} "
            f"{_num(s.false_alarms_per_hour, '{:.1f}'):>8s} {s.alarms:>7d}"
        )
    m = sums[MODEL]
    dwell = float((model.training.get("config") or {}).get("pre_arm_dwell_s", 0.25))
    engage = float(model.detector.get("engage_dwell_s", 1.0))
    blips = sum(1 for d in m.blips_while_up if d >= dwell)
    lines += [
        "",
        "recall: fractures with the warning up within the horizon before they began; lead: "
        "how long before; the threshold detector is up at the onset itself (lead 0).",
        f"pre-arm (engage dwell {engage:g} s -> {dwell:g} s while the warning is up): "
        f"{m.armed_at_onset} of {m.fractures} fractures would engage {engage - dwell:g} s "
        f"sooner; {blips} of the armings that cleared by themselves would have engaged.",
        "",
        "weights (standardised features; + pushes toward a warning):",
    ]
    weights = sorted(
        ((f, c) for f, c in zip(model.features, model.coef, strict=True) if c != 0.0),
        key=lambda r: -abs(r[1]),
    )
    lines += [f"  {f:24s} {c:+.3f}" for f, c in weights]
    return "\n".join(lines)
