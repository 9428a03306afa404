"""Early-warning benchmark: features and model inference per book update.

    .venv/bin/python -m bench.warning [--quick] [--reps N] [--model PATH]

Replays the bundled Binance recording (spot BTCUSDT, 10m50s, ~6,500 book updates) with
the default ``fracture`` overlay through the real book, depth monitor and fracture
detector, exactly as the bot does, and times, on every book update with
``time.perf_counter_ns``:

* ``features``  -- :meth:`bot.warning.features.FeatureTracker.update` (both sides' best
  levels compared with the previous update, averages, rates);
* ``inference`` -- :meth:`bot.warning.model.WarningModel.probability` of the shipped
  model on that vector (clip, dot, logistic);
* ``on_reading`` -- :meth:`bot.warning.live.MarketWarning.on_reading`, what the trader
  adds per update: features + inference + the alarm rule;
* ``detector``  -- :meth:`bot.detector.FractureDetector.update`, for scale.

The book, monitor and overlay are outside every timer. Percentiles are over all
updates of the median repetition (by p50); the garbage collector is paused while
timing. ``--quick`` replays the first 120 s of data once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bench._common import header, percentiles, row
from bot.book import OrderBook
from bot.clock import ManualClock
from bot.detector import FractureDetector
from bot.feeds.events import BookDelta, BookSnapshot, MarketEvent, Trade
from bot.feeds.stress import apply_stress, parse_stress_spec
from bot.monitor import DepthMonitor
from bot.settings import MarketSettings
from bot.warning.dataset import Recording, load_events, main_symbol
from bot.warning.features import FeatureTracker
from bot.warning.live import MarketWarning
from bot.warning.model import WarningModel

NS_PER_S = 1_000_000_000
MEASURES = ("features", "inference", "on_reading", "detector")


async def _stressed(events: Sequence[MarketEvent], until_ns: int | None) -> list[MarketEvent]:
    async def source() -> AsyncIterator[MarketEvent]:
        for e in events:
            if until_ns is not None and e.ts_ns > until_ns:
                return
            yield e

    return [e async for e in apply_stress(source(), parse_stress_spec("fracture"))]


def run_once(events: Sequence[MarketEvent], model: WarningModel) -> dict[str, list[int]]:
    """One replay; per-update nanoseconds for each measure."""
    market = MarketSettings(symbol="BTC/USDT")
    symbol = main_symbol(events)
    book = OrderBook(symbol, clock=ManualClock())
    monitor = DepthMonitor.for_bands(market.bands_bps, market.reference_notional_quote)
    detector = FractureDetector.from_market(market)
    # Separate trackers: timing one must not warm the other's state.
    features = FeatureTracker(fracture_ratio=market.baseline_fraction)
    shadow = FractureDetector.from_market(market)  # MarketWarning may retune its dwell
    warning = MarketWarning(symbol=symbol, model=model, detector=shadow)
    out: dict[str, list[int]] = {m: [] for m in MEASURES}
    clock = time.perf_counter_ns
    for event in events:
        if isinstance(event, Trade):
            detector.on_trade(event)
            features.on_trade(event)
            warning.on_trade(event)
            continue
        if not isinstance(event, BookDelta | BookSnapshot) or event.symbol != symbol:
            continue
        if book.apply(event) is not None:
            continue
        sample = monitor.observe(book, event.ts_ns)
        if sample is None:
            continue
        t0 = clock()
        reading = detector.update(sample)
        t1 = clock()
        x = features.update(book, sample, reading)
        t2 = clock()
        model.probability(x)
        t3 = clock()
        warning.on_reading(book, sample, reading)
        t4 = clock()
        out["detector"].append(t1 - t0)
        out["features"].append(t2 - t1)
        out["inference"].append(t3 - t2)
        out["on_reading"].append(t4 - t3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.warning", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="first 120 s of data, 1 rep")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 1)")
    ap.add_argument("--model", type=Path, help="model file (default: the shipped one)")
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 5)
    model = WarningModel.load(args.model)
    raw = asyncio.run(load_events(Recording.parse("bundled")))
    until = raw[0].ts_ns + 120 * NS_PER_S if args.quick else None
    events = asyncio.run(_stressed(raw, until))

    print(header("early-warning benchmark (bench/warning.py)"))
    runs: list[dict[str, list[int]]] = []
    for _ in range(reps):
        gc.collect()
        gc.disable()
        try:
            runs.append(run_once(events, model))
        finally:
            gc.enable()
    n = len(runs[0]["features"])
    print(
        f"bundled recording + fracture overlay: {n:,} book updates per rep, {reps} reps; "
        f"model {model.name}, {sum(1 for c in model.coef if c)} features scored"
    )
    widths = (12, 9, 9, 9, 9)
    print(row(("measure", "n", "p50 us", "p99 us", "max us"), widths))
    for measure in MEASURES:
        ranked = sorted(runs, key=lambda r: statistics.median(r[measure]))
        values = [v / 1e3 for v in ranked[len(ranked) // 2][measure]]
        p50, p99, top = percentiles(values)
        print(row((measure, f"{len(values):,}", f"{p50:.1f}", f"{p99:.1f}", f"{top:.1f}"), widths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
