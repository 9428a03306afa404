"""Faster paths of the calm replay give exactly what the paths they replaced gave.

The early warning's top-level flow: the compiled ``top_flow`` gives numpy's bits.

``bot._bookc.top_flow`` replaced ~10 numpy calls per book sample in
:class:`bot.warning.features.FeatureTracker`; the warning model was trained on the
numpy figures, so an alarm may not move by one ulp. Seeded random books are walked
through random deltas and every pair of consecutive reads of the best levels goes to
both functions (exact equality, not closeness), then whole feature vectors of a
tracker on each kernel are compared the same way.

The tracker's own arithmetic runs compiled too (``bot._bookc.Features``). A compiled
and a Python tracker are driven side by side through long seeded sequences of every
kind of input (first reading, repeated and late timestamps, gaps past 2**53 ns and ints
past 64 bits, ratios missing or not ready, one to four depth bands, empty sides, trades
between readings, zeros, signed zeros, subnormals, huge values, infinities and NaNs)
and every vector is compared bit for bit (the bytes of each double, so -0.0 against 0.0
or one NaN against another fails), as are the exceptions where Python raises one and
everything after them. Then the bundled recording's replay gives the same feature
matrix on both kernels.

The compiled reader of a depth message's levels (``bot._bookc.depth_rows``) makes
the same events, arrays bit for bit, as the JSON path on the bundled recording and on
generated messages full of numbers JSON does and does not allow.

The depth monitor's slippage (``OrderBook.fill_slippage_bps``) is what
``fill_estimate`` reports for a complete fill, on either kernel.
"""

from __future__ import annotations

import gzip
import itertools
import math
import random
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bot import _book_kernel, _book_numpy
from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.detect.config import DetectorConfig
from bot.detector import FractureDetector
from bot.feeds import binance_raw
from bot.feeds.events import BookDelta, BookSnapshot, Trade
from bot.feeds.replay import bundled_sample_paths
from bot.monitor import DepthMonitor, DepthSample
from bot.settings import MarketSettings
from bot.warning.dataset import Recording, load_events, replay_trace
from bot.warning.features import FEATURES, FeatureTracker

pytestmark = pytest.mark.skipif(
    not _book_kernel.COMPILED_AVAILABLE, reason="bot._bookc is not built"
)

NS = 1_000_000_000


def compiled_flow() -> _book_kernel.TopFlow:
    with _book_kernel.using("compiled"):
        return _book_kernel.top_flow()


def rows(rng: random.Random, prices: list[float], n: int, removals: float) -> list[list[float]]:
    out = []
    for p in rng.sample(prices, min(n, len(prices))):
        size = 0.0 if rng.random() < removals else round(rng.uniform(0.001, 5.0), 3)
        out.append([p, size])
    return out


def walk(rng: random.Random, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reads of the best ``k`` levels (random k, often beyond the book's depth) after
    each of ``steps`` random deltas on one book."""
    book = OrderBook("X", clock=ManualClock())
    centre = rng.choice([0.25, 100.0, 60_000.0])
    tick = centre * rng.choice([1e-4, 1e-5])
    width = rng.randint(3, 60)
    bid_px = [round(centre - i * tick, 8) for i in range(1, width)]
    ask_px = [round(centre + i * tick, 8) for i in range(1, width)]
    b, a = rows(rng, bid_px, width // 2, 0.0), rows(rng, ask_px, width // 2, 0.0)
    book.apply_snapshot(np.array(b).reshape(-1, 2), np.array(a).reshape(-1, 2))
    out = []
    for _ in range(steps):
        removals = rng.choice([0.1, 0.5, 0.9])
        db = rows(rng, bid_px, rng.randint(0, 8), removals)
        da = rows(rng, ask_px, rng.randint(0, 8), removals)
        book.apply_delta(np.array(db).reshape(-1, 2), np.array(da).reshape(-1, 2))
        k = rng.choice([1, 2, 3, 6, 25, 200])
        out.append((book.top(k, Side.BID), book.top(k, Side.ASK)))
    return out


def test_compiled_top_flow_gives_numpys_bits_on_random_books() -> None:
    rng = random.Random(909)
    fast, ref = compiled_flow(), _book_numpy.top_flow
    flowing = 0
    for _ in range(400):
        reads = walk(rng, 15)
        for (pb, pa), (cb, ca) in itertools.pairwise(reads):
            want = ref(pb, pa, cb, ca)
            got = fast(pb, pa, cb, ca)
            assert got == want, (pb.tolist(), pa.tolist(), cb.tolist(), ca.tolist())
            flowing += any(want[2:])
    assert flowing > 2_000  # the walk really moved sizes at the compared levels


def test_top_flow_edge_cases_agree() -> None:
    fast, ref = compiled_flow(), _book_numpy.top_flow
    none = np.empty((0, 2))
    one_b, one_a = np.array([[99.0, 1.0]]), np.array([[101.0, 2.0]])
    two_b, two_a = np.array([[99.5, 0.5], [99.0, 3.0]]), np.array([[100.5, 1.0], [101.0, 2.5]])
    reads = [(none, none), (one_b, none), (none, one_a), (one_b, one_a), (two_b, two_a)]
    for pb, pa in reads:
        for cb, ca in reads:
            assert fast(pb, pa, cb, ca) == ref(pb, pa, cb, ca)
    # A side that went entirely: no flow is compared, the sizes still are.
    assert fast(two_b, two_a, none, two_a) == (0.0, 3.5, 0.0, 0.0, 0.0, 0.0)
    # Strided views (a column slice of a wider array) read the same as copies.
    wide = np.array([[99.5, 0.5, 7.0], [99.0, 3.0, 7.0]])
    assert fast(wide, two_a, one_b, one_a) == ref(two_b, two_a, one_b, one_a)
    with pytest.raises(TypeError):
        fast([[1.0, 2.0]], two_a, one_b, one_a)  # type: ignore[arg-type]


def test_feature_vectors_are_identical_on_both_kernels() -> None:
    """The whole tracker, fed the same samples: compiled (its arithmetic and flow) and
    Python (numpy's flow)."""
    rng = random.Random(31)
    trackers = []
    for kernel in ("compiled", "pure"):
        with _book_kernel.using(kernel):
            trackers.append(FeatureTracker(top_levels=6, fracture_ratio=0.3))
    assert trackers[0]._k is not None
    assert trackers[1]._k is None
    book = OrderBook("X", clock=ManualClock())
    monitor = DepthMonitor.for_bands((10.0, 50.0, 200.0), 1_000.0)
    detector = FractureDetector(DetectorConfig(baseline_window_s=5.0, warmup_s=2.0))
    bid_px = [round(100.0 - i * 0.01, 2) for i in range(1, 80)]
    ask_px = [round(100.0 + i * 0.01, 2) for i in range(1, 80)]
    t = 10 * NS
    snap_b, snap_a = np.array(rows(rng, bid_px, 60, 0.0)), np.array(rows(rng, ask_px, 60, 0.0))
    assert book.apply(BookSnapshot("X", t, snap_b, snap_a, update_id=1)) is None
    compared = 0
    for uid in range(2, 600):
        t += rng.choice((50, 100, 250)) * 1_000_000
        db = np.array(rows(rng, bid_px, rng.randint(1, 10), 0.4)).reshape(-1, 2)
        da = np.array(rows(rng, ask_px, rng.randint(1, 10), 0.4)).reshape(-1, 2)
        if book.apply(BookDelta("X", t, db, da, uid, uid)) is not None:
            continue
        sample = monitor.observe(book, t)
        if sample is None:
            continue
        reading = detector.update(sample)
        a, b = (tr.update(book, sample, reading) for tr in trackers)
        assert a == b
        compared += 1
    assert compared > 500


@pytest.mark.parametrize("kernel", ["compiled", "pure"])
def test_fill_slippage_is_the_fill_estimates(kernel: _book_kernel.Kernel) -> None:
    rng = random.Random(5)
    with _book_kernel.using(kernel):
        book = OrderBook("X", clock=ManualClock())
    assert book.fill_slippage_bps(Side.ASK, 100.0) is None  # not synced yet
    complete = partial = 0
    for _ in range(300):
        width = rng.randint(1, 30)
        bids = [
            [round(100.0 - i * 0.01, 2), round(rng.uniform(0.01, 3.0), 3)] for i in range(1, width)
        ]
        asks = [
            [round(100.0 + i * 0.01, 2), round(rng.uniform(0.01, 3.0), 3)] for i in range(1, width)
        ]
        book.apply_snapshot(np.array(bids).reshape(-1, 2), np.array(asks).reshape(-1, 2))
        for side in Side:
            for notional in (0.0, rng.uniform(1.0, 50.0), rng.uniform(50.0, 9_000.0)):
                est = book.fill_estimate(side, notional)
                want = est.slippage_bps if est.complete else None
                assert book.fill_slippage_bps(side, notional) == want
                complete += want is not None
                partial += not est.complete
    assert complete > 300
    assert partial > 100
    with pytest.raises(ValueError, match="finite"):
        book.fill_slippage_bps(Side.BID, float("nan"))


# ----------------------------------------------------------------------------- feature arithmetic


@dataclass
class Reading:
    """What FeatureTracker.update reads of a DetectorUpdate."""

    ts_ns: int
    ratio: tuple[float | None, float | None]
    baseline_ready: bool


EDGE = (
    0.0, -0.0, 5e-324, -5e-324, 2.2e-308, 1e-300, 1e300, 1.7976931348623157e308, -1e300,
    math.inf, -math.inf, math.nan, -math.nan, 1.0, -1.0,
)
BANDS = (10.0, 50.0, 200.0, 500.0)


def pair_of_trackers() -> tuple[FeatureTracker, FeatureTracker]:
    """A compiled tracker and a Python one."""
    with _book_kernel.using("compiled"):
        fast = FeatureTracker(top_levels=6, fracture_ratio=0.3)
    with _book_kernel.using("pure"):
        ref = FeatureTracker(top_levels=6, fracture_ratio=0.3)
    assert fast._k is not None
    assert ref._k is None
    return fast, ref


def bits(xs: list[float]) -> list[tuple[type, bytes | str]]:
    """Each value's type and bytes; a NaN is only "nan": which NaN comes out of an
    operation on two different NaNs is not defined (IEEE 754 leaves it open, and
    CPython 3.11 itself answers differently for ``a + b`` once its adaptive interpreter
    has specialised the addition), and no operation lets a NaN's sign reach a number."""
    return [(type(x), "nan" if x != x else struct.pack("<d", x)) for x in xs]


def assert_same(got: list[float], want: list[float], where: object) -> None:
    assert len(got) == len(want) == len(FEATURES)
    assert bits(got) == bits(want), where
    assert [x.hex() for x in got] == [x.hex() for x in want], where
    assert [g for g in got if g == g] == [w for w in want if w == w], where


def sample_of(ts: int, mid: float, spread: float, depth: np.ndarray) -> DepthSample:
    bands = BANDS[: depth.shape[1]]
    return DepthSample(ts, mid, mid, mid, spread, bands, depth, None, None)


class Draw:
    """Seeded inputs in one of three regimes: realistic, extreme but finite, anything."""

    def __init__(self, rng: random.Random, regime: str) -> None:
        self.rng, self.regime = rng, regime

    def value(self, lo: float, hi: float) -> float:
        rng = self.rng
        if self.regime == "calm" or rng.random() < 0.85:
            return rng.uniform(lo, hi)
        if self.regime == "finite":
            return rng.choice([0.0, -0.0, 5e-324, 1e-300, 1e-12, 1e300, 1e308, -hi])
        return rng.choice(EDGE)

    def ratio(self) -> float | None:
        return None if self.rng.random() < 0.05 else self.value(0.0, 1.6)

    def levels(self, side: int, mid: float) -> np.ndarray:
        """Up to 6 levels a tick apart, best first (a valid book's, whatever the sizes:
        the flow is compared on both kernels by the tests above)."""
        rng = self.rng
        n = rng.choice([0, 1, 2, 3, 6, 6, 6])
        step = 0.01 * rng.choice([1, 1, 2]) * (1 if side else -1)
        start = round(mid, 2) + step * rng.randint(0, 2)
        rows = [[start + step * i, self.value(0.001, 5.0)] for i in range(n)]
        return np.array(rows, dtype=np.float64).reshape(-1, 2)


def sequence(seed: int, steps: int) -> list[tuple[Any, ...]]:
    """Readings and the trades before each: (trades, reading, sample, (bids, asks))."""
    rng = random.Random(seed)
    draw = Draw(rng, rng.choice(["calm", "calm", "finite", "any"]))
    ts = rng.choice([0, 1_700_000_000 * NS, 2**63 - 10 * NS, 2**64 + 7])
    mid = 100.0
    out = []
    for _ in range(steps):
        k = rng.random()
        if k < 0.05:
            pass  # the same timestamp again: dt = 0
        elif k < 0.10:
            ts -= rng.randint(1, 5 * NS)  # late: counts as simultaneous
        elif k < 0.12:
            ts += rng.choice([1, 2**53 - 1, 2**53, 2**53 + 1, 2**60 + 3, 10**22])
        else:
            ts += rng.choice((50, 100, 250, 1_000, 7_000)) * 1_000_000 + rng.randint(0, 999)
        mid = max(1.0, mid * (1.0 + rng.gauss(0.0, 2e-4)))
        m = mid if rng.random() < 0.9 else draw.value(0.0, 200.0)
        depth = np.array(
            [draw.value(0.0, 5e6) for _ in range(4 * rng.choice([1, 2, 3, 3, 3, 4]))]
        ).reshape(2, -1, 2)
        if rng.random() < 0.05:
            depth[:, 0, 1] = 0.0  # an empty first band
        if rng.random() < 0.1:  # a strided view, as a slice of a wider array reads
            wide = np.zeros((2, depth.shape[1], 3))
            wide[:, :, 1:] = depth
            depth = wide[:, :, 1:]
        reading = Reading(ts, (draw.ratio(), draw.ratio()), rng.random() < 0.8)
        sample = sample_of(ts, m, draw.value(0.0, 5.0), depth)
        top = (draw.levels(0, mid), draw.levels(1, mid))
        trades = [
            Trade("X", ts, draw.value(90.0, 110.0), draw.value(0.001, 2.0),
                  rng.choice(("buy", "sell")), "t")
            for _ in range(rng.choice((0, 0, 0, 1, 2, 5)))
        ]
        out.append((trades, reading, sample, top))
    return out


def step(tracker: FeatureTracker, item: tuple[Any, ...]) -> tuple[str, Any]:
    trades, reading, sample, top = item
    try:
        for tr in trades:
            tracker.on_trade(tr)
        return "ok", tracker.update(None, sample, reading, top)  # type: ignore[arg-type]
    except (ArithmeticError, ValueError) as e:
        return type(e).__name__, str(e)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's flow on inf/NaN sizes
def test_compiled_features_give_pythons_bits() -> None:
    raised: Counter[str] = Counter()
    compared = 0
    for seed in range(60):
        fast, ref = pair_of_trackers()
        for i, item in enumerate(sequence(seed, 400)):
            (kind, got), (want_kind, want) = step(fast, item), step(ref, item)
            assert kind == want_kind, (seed, i, got, want)
            if kind == "ok":
                assert_same(got, want, (seed, i))
                compared += 1
            else:
                assert got == want, (seed, i)
                raised[kind] += 1
            assert fast.last_ns == ref.last_ns
    assert compared > 20_000
    # Python raised, in the states it reached, and the compiled path raised the same.
    assert raised["ValueError"] > 0, raised


def test_compiled_features_on_a_rounding_sensitive_walk() -> None:
    """A calm walk where every average moves each step; one reordered operation in the
    compiled arithmetic changes a low bit somewhere in these 3,000 vectors."""
    fast, ref = pair_of_trackers()
    rng = random.Random(4)
    ts, mid = 10 * NS, 20_000.0
    for i in range(3_000):
        ts += rng.randint(1, 400_000_000)
        mid *= 1.0 + rng.gauss(0.0, 1e-4)
        depth = np.array([rng.uniform(1e3, 1e6) for _ in range(12)]).reshape(2, 3, 2)
        reading = Reading(ts, (rng.uniform(0.2, 1.5), rng.uniform(0.2, 1.5)), i > 100)
        sample = sample_of(ts, mid, rng.uniform(0.1, 3.0), depth)
        top = tuple(
            np.array([[mid + sign * (0.5 + j), rng.uniform(0.01, 3.0)] for j in range(6)])
            for sign in (-1, 1)
        )
        for _ in range(rng.choice((0, 1, 3))):
            tr = Trade("X", ts, mid, rng.uniform(0.001, 1.0), rng.choice(("buy", "sell")), "t")
            fast.on_trade(tr)
            ref.on_trade(tr)
        got = fast.update(None, sample, reading, top)  # type: ignore[arg-type]
        assert_same(got, ref.update(None, sample, reading, top), i)  # type: ignore[arg-type]


def test_compiled_features_raise_where_python_does() -> None:
    """The exceptions Python's arithmetic can reach, and the state each leaves."""
    # 1 s after the first reading, quote_rel's denominator is quote * per_s60 + 1.0.
    per_s60 = 1.0 / (60.0 * (1.0 - math.exp(-1.0 / 60.0)))
    cancel = -1.0 / per_s60
    assert cancel * per_s60 + 1.0 == 0.0
    cases: list[tuple[str, dict[str, Any]]] = [
        # An infinite spread once makes the 60 s mean infinite for good: log(eps / inf).
        ("ValueError", {"spread": [1.0, math.inf, 1.0]}),
        # A negative traded notional that cancels that 1.0 exactly; one that makes
        # quote_rel's numerator negative and not its denominator.
        ("ZeroDivisionError", {"trade": (cancel, 1.0)}),
        ("ValueError", {"trade": (-0.9, 1.0)}),
        # No depth band at all: Python indexes past the end of depth.tolist().
        ("IndexError", {"bands": 0}),
    ]
    for kind, case in cases:
        fast, ref = pair_of_trackers()
        errors = []
        for i, spread in enumerate([*case.get("spread", [1.0, 1.0, 1.0]), 2.0, 3.0]):
            ts = (10 + i) * NS
            depth = np.full((2, case.get("bands", 3) if i == 1 else 3, 2), 1_000.0)
            sample = sample_of(ts, 100.0, spread, depth)
            reading = Reading(ts, (0.9, 1.1), True)
            top = (np.array([[99.9, 1.0]]), np.array([[100.1, 1.0]]))
            if i == 1 and "trade" in case:
                trade = Trade("X", ts, *case["trade"], "buy", "t")
                fast.on_trade(trade)
                ref.on_trade(trade)
            results = []
            for tracker in (fast, ref):
                try:
                    x = tracker.update(None, sample, reading, top)  # type: ignore[arg-type]
                    results.append(("ok", bits(x)))
                except Exception as e:
                    results.append((type(e).__name__, str(e)))
            assert results[0] == results[1], (kind, i)
            errors.append(results[0][0])
        # Both raised, and went on from the same state: compared after it too (the
        # infinite spread mean stays, so that case raises from then on, on both).
        assert kind in errors, (kind, errors)
        assert errors[-1] == ("ValueError" if "spread" in case else "ok"), errors


def test_compiled_tracker_keeps_the_public_attributes() -> None:
    fast, ref = pair_of_trackers()
    for tracker in (fast, ref):
        assert tracker.last_ns is None
        tracker.last_ns = 5 * NS
        assert tracker.last_ns == 5 * NS
        assert tracker.top_levels == 6
    book = OrderBook("X", clock=ManualClock())
    book.apply_snapshot(np.array([[99.0, 1.0], [98.0, 2.0]]), np.array([[101.0, 1.5]]))
    assert [a.tolist() for a in fast.levels(book)] == [a.tolist() for a in ref.levels(book)]
    # A reading before last_ns counts as simultaneous with it, on both; the levels are
    # read from the book when not given.
    sample = sample_of(4 * NS, 100.0, 2.0, np.full((2, 3, 2), 1_000.0))
    reading = Reading(4 * NS, (1.0, None), False)
    got = fast.update(book, sample, reading)  # type: ignore[arg-type]
    assert_same(got, ref.update(book, sample, reading), "late")  # type: ignore[arg-type]
    assert fast.last_ns == ref.last_ns == 5 * NS
    with _book_kernel.using("pure"):
        assert FeatureTracker()._k is None
    # The depth must be a float64 array, as top_flow's levels must.
    single = sample_of(6 * NS, 1.0, 1.0, np.ones((2, 1, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="float64"):
        fast.update(book, single, Reading(6 * NS, (1.0, 1.0), True))  # type: ignore[arg-type]


async def test_compiled_features_on_the_bundled_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset's replay (what the model was trained on) with a fracture overlay: the
    same feature matrix, byte for byte, from the compiled and the Python tracker on the
    same (compiled) book. (The book kernels' depth sums may differ in the last bit, so
    the trackers are compared on one book, as a bot runs one.)"""
    events = await load_events(Recording.parse("bundled"))
    until = events[0].ts_ns + 150 * NS
    events = [e for e in events if e.ts_ns <= until]
    market = MarketSettings(symbol="BTC/USDT")
    traces = []
    for python in (False, True):
        if python:
            monkeypatch.setattr(_book_kernel, "feature_state", lambda: None)
        with _book_kernel.using("compiled"):
            traces.append(
                await replay_trace(
                    events,
                    ["fracture:start_s=60"],
                    detector=DetectorConfig.from_market(market),
                    bands_bps=market.bands_bps,
                    reference_notional_quote=market.reference_notional_quote,
                )
            )
    fast, ref = traces
    assert fast.x.shape == ref.x.shape
    assert fast.x.shape[0] > 1_000
    assert fast.x.tobytes() == ref.x.tobytes()
    assert fast.onsets.size == 1  # the fracture happened: the features saw it


# ----------------------------------------------------------------------------- depth rows


def _events(lines: list[bytes], compiled: bool) -> tuple[list[tuple[Any, ...]], int]:
    """What iter_capture yields for ``lines``, with or without the compiled reader,
    as comparable tuples (arrays as dtype, shape, raw bytes, writability); and how
    many messages the compiled reader took."""
    saved = binance_raw._depth_rows
    assert saved is not None
    took = 0

    def counting(text: bytes, start: int, stop: int) -> tuple[bytearray, bytearray] | None:
        nonlocal took
        rows = saved(text, start, stop)
        took += rows is not None
        return rows

    binance_raw._depth_rows = counting if compiled else None
    try:
        skipped: Counter[str] = Counter()
        malformed: Counter[str] = Counter()
        out: list[tuple[Any, ...]] = []
        for ev in binance_raw.iter_capture(
            lines, skipped=skipped, malformed=malformed, default_symbol="BTCUSDT"
        ):
            row: list[Any] = [type(ev).__name__]
            for name in ev.__slots__:
                v = getattr(ev, name)
                if isinstance(v, np.ndarray):
                    v = (v.dtype.str, v.shape, v.tobytes(), v.flags.writeable)
                row.append(v)
            out.append(tuple(row))
        out.append((dict(skipped), dict(malformed)))
        return out, took
    finally:
        binance_raw._depth_rows = saved


def _number(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.6:
        return f"{rng.uniform(0, 1e5):.{rng.randint(0, 10)}f}"
    if k < 0.65:
        return str(rng.randint(-(10**16), 10**16))  # long integers: the JSON path
    if k < 0.75:
        return rng.choice(["0", "-0", "-0.0", "1e400", "-1e-400", "1E5", "2e+3", "0.1e-2"])
    if k < 0.77:
        return rng.choice(["01", ".5", "5.", "+1", "1e", "NaN", "-", "1.2.3", "0x10", ""])
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30))).lstrip("0") + (
        "." + str(rng.randint(0, 10**9))
    )


def _row(rng: random.Random) -> str:
    cells = [_number(rng) for _ in range(2 if rng.random() < 0.97 else rng.choice([1, 3]))]
    quote = rng.random() < 0.8
    return "[" + ",".join(f'"{c}"' if quote else c for c in cells) + "]"


def test_compiled_depth_rows_give_the_json_paths_events() -> None:
    rng = random.Random(12)
    lines = []
    for i in range(3_000):
        b = ",".join(_row(rng) for _ in range(rng.randint(0, 4)))
        a = ",".join(_row(rng) for _ in range(rng.randint(0, 4)))
        sep = "," if rng.random() < 0.95 else ", "
        data = (
            f'{{"e":"depthUpdate","E":{i},"s":"BTCUSDT","U":{i},"u":{i}{sep}"b":[{b}],"a":[{a}]}}'
        )
        body = f'{{"stream":"btcusdt@depth@100ms","data":{data}}}' if i % 5 else data
        lines.append(f"{1_000 + i} {body}".encode())
    (fast, took), (slow, _) = _events(lines, True), _events(lines, False)
    assert fast == slow
    deltas = [e for e in fast[:-1] if e[0] == "BookDelta"]
    # Both kinds are many: messages the compiled reader took, and ones it left to the
    # JSON path (which parsed some and refused others, counted alike).
    assert took > 500
    assert len(deltas) > took + 100
    assert fast[-1][1].get("bad_levels", 0) > 100


def test_compiled_depth_rows_on_the_bundled_recording() -> None:
    lines: list[bytes] = []
    for path in bundled_sample_paths():
        with gzip.open(path, "rb") as f:
            lines += [ln for ln in f.read().split(b"\n") if b"depthUpdate" in ln[:200]]
    assert len(lines) > 6_000
    (fast, took), (slow, _) = _events(lines, True), _events(lines, False)
    assert took == len(lines)
    assert fast == slow


def test_compiled_depth_numbers_are_correctly_rounded() -> None:
    """Every number the reader takes is the double Python's float() gives (correctly
    rounded; orjson's parser gives the same): short decimals on its fast path, long
    mantissas and far exponents on the full conversion."""
    rng = random.Random(77)
    depth_rows = binance_raw._depth_rows
    assert depth_rows is not None
    texts = []
    for _ in range(20_000):
        k = rng.random()
        if k < 0.4:
            t = f"{rng.uniform(0, 1e6):.{rng.randint(1, 12)}f}"
        elif k < 0.7:
            mant = str(rng.randint(1, 10 ** rng.randint(1, 25)))
            cut = rng.randint(1, len(mant))
            t = mant[:cut] + "." + (mant[cut:] or "0")
        else:
            t = f"{rng.uniform(1, 10):.{rng.randint(1, 20)}f}e{rng.randint(-330, 310)}"
        texts.append(("-" if rng.random() < 0.2 else "") + t)
    taken = 0
    for i in range(0, len(texts), 100):
        chunk = texts[i : i + 100]
        body = ",".join(f'["{t}","1.0"]' for t in chunk)
        text = f'"b":[{body}],"a":[]'.encode()
        rows = depth_rows(text, 0, len(text))
        want = [float(t) for t in chunk]
        if rows is None:  # some value out of range (inf or a subnormal underflow to 0)
            assert any(not math.isfinite(w) for w in want)
            continue
        got = np.frombuffer(rows[0], np.float64)[0::2].tolist()
        assert [g.hex() for g in got] == [w.hex() for w in want]
        taken += 1
    assert taken > 100
