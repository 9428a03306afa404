"""Train and evaluate the early-warning model (``backstop model train|eval``).

Training: features of CALM samples from the training runs (see
:mod:`bot.warning.dataset`), label "an episode begins within H seconds", a
scikit-learn logistic regression on standardised, clipped features. The alarm
threshold is then chosen on the *training* runs, by the event-level F1 of the bot's own
alarm rule. Evaluation replays the held-out runs and scores the model, the threshold
detector and a looser threshold on them (:mod:`bot.warning.evaluate`). Both are
deterministic: the same data, seeds and code give the same file and the same numbers.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from bot import __version__
from bot.detect.config import DetectorConfig
from bot.settings import MarketSettings
from bot.warning.dataset import (
    Recording,
    RunPlan,
    Trace,
    labels,
    load_events,
    main_symbol,
    plan_runs,
    replay_trace,
    row_mask,
    span_s,
)
from bot.warning.evaluate import (
    DETECTOR,
    LOOSE,
    MODEL,
    Score,
    alarm_series,
    loose_alarm,
    score_alarm,
    score_detector,
    total,
)
from bot.warning.features import FEATURES
from bot.warning.model import WarningModel

Progress = Callable[[str], None]

BACKGROUND: tuple[str, ...] = (
    "vol_short_bps",
    "log_vol_ratio",
    "log_trade_rate_rel",
    "log_trade_quote_rel",
    "aggressor_toward_thin",
)
"""Computed, journaled, not scored by default: the stress overlays rewrite the book but
leave trades and the mid's path as recorded, so on overlay data these features can only
learn the recording's own background at the times the overlays happened to fall (it
showed: they took large weights in training and lost on the held-out part). They are
worth scoring once there are recordings of real fractures to learn from."""
DEFAULT_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f not in BACKGROUND)


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class TrainConfig:
    horizon_s: float = 5.0
    train_runs: int = 80
    eval_runs: int = 24
    split: float = 0.62
    seed: int = 1
    c: float = 1.0
    """Inverse L2 regularisation strength of the logistic regression."""
    alarm_hold_s: float = 1.0
    pre_arm_dwell_s: float = 0.25
    """Only for the eval's pre-arm lines: the engage dwell pre-arm would use."""
    features: tuple[str, ...] = DEFAULT_FEATURES
    """The features the model scores (the others get weight 0)."""
    name: str = "early-warning-v1"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown features {unknown}; known: {list(FEATURES)}")
        if not self.features:
            raise ValueError("no features to train on")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d


@dataclass
class Dataset:
    recordings: dict[str, Recording]
    plans: list[RunPlan]
    market: MarketSettings
    traces: dict[str, Trace] = field(default_factory=dict)


def market_for(settings_market: MarketSettings | None) -> MarketSettings:
    return settings_market or MarketSettings(symbol="BTC/USDT")


def detector_of(market: MarketSettings) -> DetectorConfig:
    return DetectorConfig.from_market(market)


async def trace_of(recording: Recording, plan: RunPlan, market: MarketSettings) -> Trace:
    events = await load_events(recording)
    return await replay_trace(
        events,
        plan.stress,
        detector=detector_of(market),
        bands_bps=market.bands_bps,
        reference_notional_quote=market.reference_notional_quote,
        symbol=main_symbol(events),
    )


async def plan_dataset(
    data: Sequence[Recording],
    holdout: Sequence[Recording],
    config: TrainConfig,
    market: MarketSettings,
) -> Dataset:
    spans: dict[str, float] = {}
    for rec in (*data, *holdout):
        spans[rec.name] = span_s(await load_events(rec))
    plans = plan_runs(
        [(r.name, spans[r.name]) for r in data],
        [(r.name, spans[r.name]) for r in holdout],
        train_runs=config.train_runs,
        eval_runs=config.eval_runs,
        split=config.split,
        seed=config.seed,
    )
    recs = {r.name: r for r in (*data, *holdout)}
    return Dataset(recordings=recs, plans=plans, market=market)


async def traces_for(
    ds: Dataset, plans: Sequence[RunPlan], progress: Progress = _quiet
) -> list[Trace]:
    out: list[Trace] = []
    for i, plan in enumerate(plans):
        trace = ds.traces.get(plan.name)
        if trace is None:
            started = time.perf_counter()
            trace = await trace_of(ds.recordings[plan.recording], plan, ds.market)
            ds.traces[plan.name] = trace
            progress(
                f"  [{i + 1}/{len(plans)}] {plan.name}: {len(plan.stress)} overlays, "
                f"{trace.onsets.size} episodes, {time.perf_counter() - started:.1f} s"
            )
        out.append(trace)
    return out


def _fit(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.bool_], c: float, used: Sequence[int]
) -> dict[str, Any]:
    """Clip bounds, scaler and logistic-regression weights; features not in ``used``
    get weight 0 (computed and journaled, not scored)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:  # pragma: no cover - sklearn is a dependency
        raise RuntimeError("training needs scikit-learn (pip install scikit-learn)") from e
    lo = np.percentile(x, 0.1, axis=0)
    hi = np.percentile(x, 99.9, axis=0)
    xc = np.clip(x, lo, hi)
    mean = xc.mean(axis=0)
    scale = xc.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (xc - mean) / scale
    cols = list(used)
    clf = LogisticRegression(C=c, max_iter=5000)
    clf.fit(z[:, cols], y.astype(np.int64))
    coef = np.zeros(x.shape[1])
    coef[cols] = clf.coef_[0]
    return {
        "clip_lo": lo.tolist(),
        "clip_hi": hi.tolist(),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": coef.tolist(),
        "intercept": float(clf.intercept_[0]),
    }


def _candidate_thresholds(p: npt.NDArray[np.float64]) -> list[float]:
    qs = np.quantile(p, [0.9, 0.95, 0.97, 0.98, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999, 0.9995])
    grid = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    return sorted({round(float(v), 6) for v in (*qs.tolist(), *grid) if 0.0 < v < 1.0})


def score_model(
    model: WarningModel,
    traces: Sequence[Trace],
    plans: Sequence[RunPlan],
    threshold: float | None = None,
) -> list[Score]:
    thr = model.threshold if threshold is None else threshold
    out = []
    for trace, plan in zip(traces, plans, strict=True):
        p = model.probabilities(trace.x)
        up = alarm_series(trace, p, thr, model.alarm_hold_s)
        out.append(score_alarm(trace, up, plan.window_s, model.horizon_s))
    return out


def score_baselines(
    traces: Sequence[Trace], plans: Sequence[RunPlan], detector: DetectorConfig, config: TrainConfig
) -> dict[str, list[Score]]:
    det, loose = [], []
    for trace, plan in zip(traces, plans, strict=True):
        det.append(score_detector(trace, plan.window_s, config.horizon_s))
        up = loose_alarm(trace, detector.recovery_fraction, config.alarm_hold_s)
        loose.append(score_alarm(trace, up, plan.window_s, config.horizon_s))
    return {DETECTOR: det, LOOSE: loose}


def evaluation(
    model: WarningModel,
    traces: Sequence[Trace],
    plans: Sequence[RunPlan],
    detector: DetectorConfig,
    config: TrainConfig,
) -> dict[str, Any]:
    """Scores of the model and the baselines, per run and in total."""
    per: dict[str, list[Score]] = {MODEL: score_model(model, traces, plans)}
    per.update(score_baselines(traces, plans, detector, config))
    return {
        "runs": [
            {"run": plan.name, **{k: v[i].to_dict() for k, v in per.items()}}
            for i, plan in enumerate(plans)
        ],
        "total": {k: total(v).summary() for k, v in per.items()},
    }


def fit_model(
    traces: Sequence[Trace],
    plans: Sequence[RunPlan],
    config: TrainConfig,
    progress: Progress = _quiet,
) -> tuple[WarningModel, dict[str, Any]]:
    """Fit on the training runs' rows and choose the alarm threshold on the same runs.
    Returns the model (no metadata yet) and the training facts for the metadata."""
    used = [FEATURES.index(f) for f in config.features]
    xs, ys = [], []
    for trace, plan in zip(traces, plans, strict=True):
        mask = row_mask(trace, plan.window_s, config.horizon_s)
        xs.append(trace.x[mask])
        ys.append(labels(trace, config.horizon_s)[mask])
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    if not y.any():
        raise ValueError("the training runs hold no fracture: nothing to learn")
    started = time.perf_counter()
    fitted = _fit(x, y, config.c, used)
    progress(
        f"fitted on {x.shape[0]} samples ({int(y.sum())} positive) in "
        f"{time.perf_counter() - started:.1f} s"
    )
    model = WarningModel(
        features=FEATURES,
        mean=tuple(fitted["mean"]),
        scale=tuple(fitted["scale"]),
        clip_lo=tuple(fitted["clip_lo"]),
        clip_hi=tuple(fitted["clip_hi"]),
        coef=tuple(fitted["coef"]),
        intercept=fitted["intercept"],
        threshold=0.5,
        horizon_s=config.horizon_s,
        alarm_hold_s=config.alarm_hold_s,
        name=config.name,
    )
    # The threshold: best event-level F2 of the bot's alarm rule on the training runs.
    # F2 weighs recall over precision: a missed fracture costs the reaction time the
    # warning exists for, while a false warning places no order.
    best: tuple[float, float, float] | None = None  # (f2, -false alarms/h, threshold)
    for thr in _candidate_thresholds(model.probabilities(x)):
        sc = total(score_model(model, traces, plans, thr))
        key = (round(sc.f_beta(2.0), 9), -(sc.false_alarms_per_hour or 0.0), thr)
        if best is None or key > best:
            best = key
    assert best is not None
    model = replace(model, threshold=best[2])
    train_score = total(score_model(model, traces, plans))
    progress(f"threshold {model.threshold:g} (training F2 {train_score.f_beta(2.0):.3f})")
    facts = {
        "samples": int(x.shape[0]),
        "positives": int(y.sum()),
        "threshold_objective": "max event-level F2 of the alarm rule on the training runs",
        "train_score": train_score.summary(),
    }
    return model, facts


async def train(
    data: Sequence[Recording],
    holdout: Sequence[Recording],
    config: TrainConfig,
    market: MarketSettings | None = None,
    progress: Progress = _quiet,
) -> WarningModel:
    """Build the dataset, fit, pick the threshold, evaluate on the held-out runs."""
    mkt = market_for(market)
    detector = detector_of(mkt)
    ds = await plan_dataset(data, holdout, config, mkt)
    train_plans = [p for p in ds.plans if p.part == "train"]
    eval_plans = [p for p in ds.plans if p.part == "eval"]
    if not train_plans:
        raise ValueError("no training runs: give at least one --data recording")
    progress(f"training runs ({len(train_plans)}):")
    train_traces = await traces_for(ds, train_plans, progress)
    model, facts = fit_model(train_traces, train_plans, config, progress)
    import sklearn

    training = {
        "data": [{"name": r.name, "files": [p.name for p in r.paths]} for r in data],
        "holdout": [{"name": r.name, "files": [p.name for p in r.paths]} for r in holdout],
        "config": config.to_dict(),
        "market": mkt.model_dump(mode="json", include={"bands_bps", "reference_notional_quote"}),
        "plans": [p.to_dict() for p in ds.plans],
        **facts,
        "library": f"scikit-learn {sklearn.__version__} LogisticRegression(C={config.c}, lbfgs)",
        "built_with": f"backstop {__version__}, python {platform.python_version()}, "
        f"numpy {np.__version__}",
    }
    model = replace(model, training=training, detector=asdict(detector))
    progress(f"held-out runs ({len(eval_plans)}):")
    eval_traces = await traces_for(ds, eval_plans, progress)
    return replace(model, eval=evaluation(model, eval_traces, eval_plans, detector, config))
