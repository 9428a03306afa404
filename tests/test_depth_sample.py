"""The depth monitor's one-call reading gives exactly what its separate queries gave.

:meth:`bot.monitor.DepthMonitor.observe` reads a book through one store call
(:meth:`bot.book.OrderBook.sample_at`: ``LevelStore.sample``) instead of the best
prices, mid and spread worked out in Python, ``depth_bands`` and two
``fill_slippage_bps``. Detector baselines, alarms and the run summary's lows are built
from those figures, so not one bit may move: seeded random books on both stores (any
band set, notionals from zero to more than the book holds, sides emptied and books
invalidated along the way) go to a monitor and to the composition it replaced, and
every sample is compared field by field (the bytes of each double, the depth array's
bytes), then the lows, the maximum spread and the sample count.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import pytest

from bot import _book_kernel
from bot._book_kernel import Kernel
from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.monitor import SIDES, DepthMonitor, DepthSample

KERNELS: list[Kernel] = ["compiled", "pure"] if _book_kernel.COMPILED_AVAILABLE else ["pure"]

BAND_SETS: tuple[tuple[float, ...], ...] = (
    (10.0, 50.0, 200.0),
    (0.0,),
    (),
    (200.0, 10.0, 50.0),  # not narrowest first
    (25.0, 25.0, 5.0),  # repeated
    (1.0, 1e4, 5e4),  # wider than any book here
    tuple(float(b) for b in range(0, 400, 20)),  # more than 16 (the C stack buffer)
    (0.3, 7.77, 33.3, 123.456),
)


def make(kernel: Kernel) -> OrderBook:
    with _book_kernel.using(kernel):
        book = OrderBook("X", clock=ManualClock())
    assert book.kernel == kernel
    return book


# ----------------------------------------------------------------------------- the reference


def reference_observe(monitor: DepthMonitor, book: OrderBook, ts_ns: int) -> DepthSample | None:
    """What ``DepthMonitor.observe`` and ``_record`` did before the one-call reading."""
    bid, ask = book.best_bid(), book.best_ask()
    if bid is None or ask is None:
        return None
    mid = (ask + bid) / 2.0
    spread = (ask - bid) / mid * 1e4
    depth = book.depth_bands(monitor.bands_bps)
    notional = monitor.reference_notional_quote
    sample = DepthSample(
        ts_ns,
        bid,
        ask,
        mid,
        spread,
        monitor.bands_bps,
        depth,
        book.fill_slippage_bps(Side.ASK, notional),
        book.fill_slippage_bps(Side.BID, notional),
    )
    monitor.samples += 1
    monitor.last = sample
    monitor.max_spread_bps = max(monitor.max_spread_bps, sample.spread_bps)
    order = [monitor.lows[(side, band)] for side in SIDES for band in monitor.bands_bps]
    bid_rows, ask_rows = sample.depth.tolist()
    for low, (base, quote) in zip(order, bid_rows + ask_rows, strict=True):
        if quote < low.quote:
            low.quote, low.base = quote, base
            low.ts_ns, low.mid = sample.ts_ns, sample.mid
    return sample


def bits(x: Any) -> Any:
    """A float as its 8 bytes (so -0.0 differs from 0.0 and NaN compares), else as is."""
    if isinstance(x, float):
        return ("float", struct.pack("<d", x))
    return (type(x).__name__, x)


def assert_same_sample(got: DepthSample | None, want: DepthSample | None) -> None:
    if want is None:
        assert got is None
        return
    assert got is not None
    for name in ("ts_ns", "best_bid", "best_ask", "mid", "spread_bps"):
        assert bits(getattr(got, name)) == bits(getattr(want, name)), name
    for name in ("buy_slippage_bps", "sell_slippage_bps"):
        assert bits(getattr(got, name)) == bits(getattr(want, name)), name
    assert got.bands_bps is want.bands_bps or got.bands_bps == want.bands_bps
    assert got.depth.dtype == want.depth.dtype == np.float64
    assert got.depth.shape == want.depth.shape == (2, len(want.bands_bps), 2)
    assert got.depth.flags.c_contiguous
    assert got.depth.tobytes() == want.depth.tobytes()


def assert_same_monitor(got: DepthMonitor, want: DepthMonitor) -> None:
    assert got.samples == want.samples
    assert bits(got.max_spread_bps) == bits(want.max_spread_bps)
    assert got.lows.keys() == want.lows.keys()
    for key, low in want.lows.items():
        mine = got.lows[key]
        assert bits(mine.quote) == bits(low.quote), key
        assert bits(mine.base) == bits(low.base), key
        assert mine.ts_ns == low.ts_ns, key
        assert bits(mine.mid) == bits(low.mid), key
    assert got.lows_dict() == want.lows_dict()


# ----------------------------------------------------------------------------- random books


def side_rows(rng: random.Random, prices: list[float], n: int, removals: float) -> np.ndarray:
    rows = []
    for p in rng.sample(prices, min(n, len(prices))):
        sizes = [round(rng.uniform(0.001, 5.0), 3), rng.uniform(1e-6, 50.0), 12345.678, 1e-7]
        rows.append([p, 0.0 if rng.random() < removals else rng.choice(sizes)])
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def notional_for(rng: random.Random, centre: float) -> float:
    """Zero, a sliver, a few levels' worth, or more than the book rests."""
    return rng.choice(
        [
            0.0,
            1e-9,
            rng.uniform(0.01, 10.0) * centre,
            rng.uniform(1.0, 200.0) * centre,
            1e15,
            50_000.0,
        ]
    )


def random_run(rng: random.Random, kernel: Kernel, counts: dict[str, int]) -> None:
    book = make(kernel)
    centre = rng.choice([0.25, 100.0, 60_000.0, 3.3e-4])
    tick = centre * rng.choice([1e-4, 1e-5, 3e-3])
    width = rng.randint(2, 80)
    bid_px = [round(centre - i * tick, 12) for i in range(1, width)]
    ask_px = [round(centre + i * tick, 12) for i in range(1, width)]
    bands = rng.choice(BAND_SETS)
    notional = notional_for(rng, centre)
    new = DepthMonitor.for_bands(bands, notional)
    ref = DepthMonitor.for_bands(bands, notional)
    t = 0
    for step in range(rng.randint(5, 30)):
        t += rng.randint(1, 10**9)
        roll = rng.random()
        if step == 0 or roll < 0.08:
            nb = 0 if rng.random() < 0.1 else rng.randint(1, width)
            na = 0 if rng.random() < 0.1 else rng.randint(1, width)
            book.apply_snapshot(side_rows(rng, bid_px, nb, 0.0), side_rows(rng, ask_px, na, 0.0))
        elif roll < 0.11:
            book.invalidate("test")
        else:
            removals = rng.choice([0.1, 0.5, 0.95])
            book.apply_delta(
                side_rows(rng, bid_px, rng.randint(0, 10), removals),
                side_rows(rng, ask_px, rng.randint(0, 10), removals),
            )
        want = reference_observe(ref, book, t)
        got = new.observe(book, t)
        assert_same_sample(got, want)
        assert_same_sample(new.last, ref.last)
        if want is None:
            counts["none"] += 1
            assert book.sample_at(bands, notional) is None
            continue
        counts["samples"] += 1
        counts["buy_none"] += want.buy_slippage_bps is None
        counts["sell_none"] += want.sell_slippage_bps is None
        counts["buy"] += want.buy_slippage_bps is not None
        counts["sell"] += want.sell_slippage_bps is not None
    assert_same_monitor(new, ref)
    counts["new_lows"] += sum(low.ts_ns is not None for low in ref.lows.values())


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_call_sample_is_the_old_composition_bit_for_bit(kernel: Kernel) -> None:
    rng = random.Random(4242 if kernel == "compiled" else 4343)
    counts = dict.fromkeys(("none", "samples", "buy_none", "sell_none", "buy", "sell"), 0)
    counts["new_lows"] = 0
    for _ in range(400):
        random_run(rng, kernel, counts)
    # The walk reached every case: untradeable books, complete and incomplete fills.
    assert counts["samples"] > 3_000
    assert counts["none"] > 300
    assert counts["buy"] > 1_000
    assert counts["sell"] > 1_000
    assert counts["buy_none"] > 500
    assert counts["sell_none"] > 500
    assert counts["new_lows"] > 500


@pytest.mark.parametrize("kernel", KERNELS)
def test_sample_at_is_the_books_separate_queries(kernel: Kernel) -> None:
    """``OrderBook.sample_at`` directly, against the public queries (mid, spread_bps and
    the fill estimate included)."""
    rng = random.Random(77)
    book = make(kernel)
    compared = 0
    for _ in range(300):
        bid_px = [round(100.0 - i * 0.01, 2) for i in range(1, 40)]
        ask_px = [round(100.0 + i * 0.01, 2) for i in range(1, 40)]
        book.apply_snapshot(
            side_rows(rng, bid_px, rng.randint(1, 39), 0.0),
            side_rows(rng, ask_px, rng.randint(1, 39), 0.0),
        )
        bands = rng.choice(BAND_SETS)
        notional = notional_for(rng, 100.0)
        got = book.sample_at(bands, notional)
        assert got is not None
        bid, ask, mid, spread, depth, buy, sell = got
        assert bits(bid) == bits(book.best_bid())
        assert bits(ask) == bits(book.best_ask())
        assert bits(mid) == bits(book.mid())
        assert bits(spread) == bits(book.spread_bps())
        assert depth.tobytes() == book.depth_bands(bands).tobytes()
        for side, slip in ((Side.ASK, buy), (Side.BID, sell)):
            est = book.fill_estimate(side, notional)
            assert bits(slip) == bits(est.slippage_bps if est.complete else None)
            assert bits(slip) == bits(book.fill_slippage_bps(side, notional))
        compared += 1
    assert compared == 300


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("kernel", KERNELS)
def test_untradeable_books_give_no_sample(kernel: Kernel) -> None:
    book = make(kernel)
    monitor = DepthMonitor.for_bands((10.0, 50.0), 1_000.0)
    assert book.sample_at((10.0,), 1_000.0) is None  # EMPTY: no snapshot yet
    assert monitor.observe(book, 1) is None
    levels = np.array([[99.0, 1.0], [98.0, 2.0]])
    none = np.empty((0, 2))
    for bids, asks in ((levels, none), (none, levels + 2.0), (none, none)):
        assert book.apply_snapshot(bids, asks) is None
        assert book.sample_at((10.0,), 1_000.0) is None
        # As before: no slippage is asked of a book without a mid, so a bad notional
        # does not raise here.
        assert book.sample_at((10.0,), math.nan) is None
        assert monitor.observe(book, 2) is None
    assert book.apply_snapshot(levels, levels + 2.0) is None
    assert monitor.observe(book, 3) is not None
    book.invalidate("gone")
    assert book.sample_at((10.0,), 1_000.0) is None
    assert monitor.observe(book, 4) is None
    assert monitor.samples == 1
    assert monitor.last is not None
    assert monitor.last.ts_ns == 3


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_notional_too_much_notional_and_wide_bands(kernel: Kernel) -> None:
    book = make(kernel)
    bids = np.array([[99.5, 1.25], [99.0, 3.0], [97.0, 0.5]])
    asks = np.array([[100.5, 2.0], [101.0, 0.75], [104.0, 4.0]])
    assert book.apply_snapshot(bids, asks) is None
    bands = (1.0, 60.0, 1e4, 5e4)  # the last two are wider than the book
    for notional in (0.0, 0, 1e9, 5_000.0, 100.5 * 2.0, 1e-12):
        monitor = DepthMonitor.for_bands(bands, notional)
        ref = DepthMonitor.for_bands(bands, notional)
        got, want = monitor.observe(book, 7), reference_observe(ref, book, 7)
        assert_same_sample(got, want)
        assert_same_monitor(monitor, ref)
        assert got is not None
        if notional in (0.0, 1e9, 5_000.0):  # nothing asked, or more than a side holds
            assert got.buy_slippage_bps is None
            assert got.sell_slippage_bps is None
        else:
            assert got.buy_slippage_bps is not None
            assert got.sell_slippage_bps is not None
        wide = got.depth[:, 2:, :].tolist()
        for side, rows in ((0, bids), (1, asks)):
            total = (float(rows[:, 1].sum()), float((rows[:, 0] * rows[:, 1]).sum()))
            for base, quote in wide[side]:
                assert math.isclose(base, total[0])
                assert math.isclose(quote, total[1])
        assert got.depth[:, 0, :].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # 1 bps: no level


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("notional", [math.nan, math.inf, -math.inf, -1.0, -1, -1e-300])
def test_a_bad_notional_raises_as_fill_slippage_does(kernel: Kernel, notional: float) -> None:
    book = make(kernel)
    assert book.apply_snapshot(np.array([[99.0, 1.0]]), np.array([[101.0, 1.0]])) is None
    with pytest.raises(ValueError, match="finite") as want:
        book.fill_slippage_bps(Side.ASK, notional)
    with pytest.raises(ValueError, match="finite") as got:
        book.sample_at((10.0,), notional)
    assert str(got.value) == str(want.value)
    monitor = DepthMonitor.for_bands((10.0,), notional)
    with pytest.raises(ValueError, match="finite"):
        monitor.observe(book, 1)
    assert monitor.samples == 0
    assert monitor.last is None
