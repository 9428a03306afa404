"""Faster paths of the calm replay give exactly what the paths they replaced gave.

The early warning's top-level flow: the compiled ``top_flow`` gives numpy's bits.

``bot._bookc.top_flow`` replaced ~10 numpy calls per book sample in
:class:`bot.warning.features.FeatureTracker`; the warning model was trained on the
numpy figures, so an alarm may not move by one ulp. Seeded random books are walked
through random deltas and every pair of consecutive reads of the best levels goes to
both functions (exact equality, not closeness), then whole feature vectors of a
tracker on each kernel are compared the same way.

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
from collections import Counter
from typing import Any

import numpy as np
import pytest

from bot import _book_kernel, _book_numpy
from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.detect.config import DetectorConfig
from bot.detector import FractureDetector
from bot.feeds import binance_raw
from bot.feeds.events import BookDelta, BookSnapshot
from bot.feeds.replay import bundled_sample_paths
from bot.monitor import DepthMonitor
from bot.warning.features import FeatureTracker

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
    """The whole tracker, fed the same samples, on each kernel's flow."""
    rng = random.Random(31)
    trackers = []
    for kernel in ("compiled", "pure"):
        with _book_kernel.using(kernel):
            trackers.append(FeatureTracker(top_levels=6, fracture_ratio=0.3))
    assert trackers[0]._flow is not trackers[1]._flow
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
