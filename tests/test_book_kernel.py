"""The compiled level store answers exactly what the pure-numpy one answers.

``bot/_bookc.c`` backs :class:`bot.book.OrderBook` in production; ``bot/_book_numpy.py``
is the fallback and the reference. Thousands of seeded random books and deltas
(repeated prices, rows in any order, removals of absent levels, poisoned and crossing
rows, other input types) go into one book of each kind, and after every step
everything a caller can observe must agree: drops, levels and best prices exactly,
band depths and fills within 1e-12 relative (the two sum in different orders).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from bot import _book_kernel
from bot._book_kernel import Kernel
from bot.book import Drop, OrderBook, Side
from bot.clock import ManualClock
from bot.venues.matching import sizes_at

NAN = float("nan")
INF = float("inf")
BANDS = (0.0, 1.0, 10.0, 25.0, 50.0, 100.0, 200.0, 333.0, 1e4)


def make(kernel: Kernel) -> OrderBook:
    with _book_kernel.using(kernel):
        book = OrderBook("X", clock=ManualClock())
    assert book.kernel == kernel
    return book


@pytest.fixture
def pair() -> tuple[OrderBook, OrderBook]:
    return make("compiled"), make("pure")


def rel_close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def assert_agree(c: OrderBook, p: OrderBook, rng: random.Random) -> None:
    assert c.state is p.state
    assert c.update_id == p.update_id
    assert dict(c.drops) == dict(p.drops)
    assert c.last_drop_detail == p.last_drop_detail
    assert c.version == p.version
    for side in Side:
        assert c.level_count(side) == p.level_count(side)
        assert c.top(10**9, side).tolist() == p.top(10**9, side).tolist()
        k = rng.randint(0, 5)
        assert c.top(k, side).tolist() == p.top(k, side).tolist()
    # The size at one price (the paper venue's queue position), as a walk of top() sees it.
    levels = [px for side in Side for px, _ in p.top(10**9, side).tolist()]
    probes = [*rng.sample(levels, min(len(levels), 6)), NAN, INF, -1.0, 0.0]
    probes += [px * (1 + 1e-9) for px in rng.sample(levels, min(len(levels), 2))]
    for side in Side:
        for px in probes:
            (want,) = sizes_at(p, side, [px])
            assert c.size_at(px, side) == p.size_at(px, side) == want, (side, px)
    assert c.best_bid() == p.best_bid()
    assert c.best_ask() == p.best_ask()
    assert c.mid() == p.mid()
    assert c.spread_bps() == p.spread_bps()
    bands = rng.sample(BANDS, rng.randint(0, 5))  # any order, sometimes none
    got, want = c.depth_bands(bands), p.depth_bands(bands)
    assert got.shape == want.shape == (2, len(bands), 2)
    assert all(rel_close(x, y) for x, y in zip(got.ravel(), want.ravel(), strict=True))
    for side in Side:
        for bps in rng.sample(BANDS, 3):
            dc, dp = c.depth_within(bps, side), p.depth_within(bps, side)
            assert dc.levels == dp.levels
            assert rel_close(dc.base, dp.base)
            assert rel_close(dc.quote, dp.quote)
        total = sum(px * sz for px, sz in p.top(10**9, side).tolist())
        for notional in (0.0, total * rng.random(), total, total * 2.0 + 1.0, 1e-9):
            fc, fp = c.fill_estimate(side, notional), p.fill_estimate(side, notional)
            assert fc.complete == fp.complete
            assert fc.worst_price == fp.worst_price
            for x, y in (
                (fc.filled_quote, fp.filled_quote),
                (fc.filled_base, fp.filled_base),
                (fc.avg_price, fp.avg_price),
            ):
                assert rel_close(x, y), (x, y)
            # slippage is a difference of nearly equal prices: compare it in price terms
            if fc.slippage_bps is None or fp.slippage_bps is None:
                assert fc.slippage_bps is fp.slippage_bps
            else:
                assert math.isclose(fc.slippage_bps, fp.slippage_bps, rel_tol=1e-9, abs_tol=1e-9)


def random_rows(rng: random.Random, prices: list[float], n: int, poison: float) -> Any:
    """Rows on a price grid (so levels repeat), in a random order, with zero sizes,
    repeated prices and, at rate ``poison``, a NaN/inf/negative/zero-price row; in one
    of the input forms callers use."""
    rows = [
        [rng.choice(prices), rng.choice([0.0, 0.0, 0.001, 0.5, 1.0, 3.25, 12345.678, 1e-7])]
        for _ in range(n)
    ]
    order = rng.random()
    if order < 0.4:
        rows.sort(key=lambda r: r[0])
    elif order < 0.7:
        rows.sort(key=lambda r: -r[0])
    if rows and rng.random() < poison:
        bad = rng.choice([[NAN, 1.0], [1.0, NAN], [INF, 1.0], [1.0, -INF], [5.0, -1.0], [0.0, 1.0]])
        rows.insert(rng.randint(0, len(rows)), bad)
    form = rng.random()
    if form < 0.8:
        return np.array(rows, dtype=np.float64).reshape(-1, 2)
    if form < 0.85:
        return rows  # plain lists: converted before the store sees them
    if form < 0.9:  # an extra column (order count), and a non-contiguous view
        return np.column_stack((np.array(rows).reshape(-1, 2), np.ones(len(rows))))
    if form < 0.95:
        return np.asfortranarray(np.array(rows, dtype=np.float64).reshape(-1, 2))
    return np.array(rows, dtype=np.float32).reshape(-1, 2)


def grid(rng: random.Random) -> tuple[list[float], list[float]]:
    """Bid and ask price grids that overlap a little, so some deltas cross."""
    tick = rng.choice([0.5, 0.01, 0.1, 1e-5])
    centre = rng.choice([100.0, 60_000.0, 0.25])
    width = rng.randint(5, 120)
    bids = [round(centre - i * tick, 8) for i in range(-2, width)]
    asks = [round(centre + i * tick, 8) for i in range(-2, width)]
    return [p for p in bids if p > 0], [p for p in asks if p > 0]


def test_random_books_and_deltas_agree_between_the_kernels() -> None:
    rng = random.Random(20240808)
    drops: dict[Drop | None, int] = {}
    for _ in range(1_500):
        c, p = make("compiled"), make("pure")
        bid_px, ask_px = grid(rng)
        poison = rng.choice([0.0, 0.05, 0.3])
        for step in range(10):
            b = random_rows(rng, bid_px, rng.randint(0, 40 if step == 0 else 12), poison)
            a = random_rows(rng, ask_px, rng.randint(0, 40 if step == 0 else 12), poison)
            if step == 0 or rng.random() < 0.1:
                got = c.apply_snapshot(b, a)
                assert got is p.apply_snapshot(b, a)
            else:
                got = c.apply_delta(b, a)
                assert got is p.apply_delta(b, a)
            drops[got] = drops.get(got, 0) + 1
            assert_agree(c, p, rng)
    # The stream exercised every path it was built to exercise.
    for reason in (None, Drop.NON_FINITE, Drop.NEGATIVE, Drop.CROSSED, Drop.UNSYNCED):
        assert drops.get(reason, 0) > 50, drops


def test_deep_books_agree_after_many_deltas() -> None:
    """~2,000 levels a side, deltas anywhere in the book: inserts and removals that
    move long runs of levels in the compiled store's arrays."""
    rng = random.Random(7)
    c, p = make("compiled"), make("pure")
    bid_px = [round(50_000.0 - i * 0.5, 2) for i in range(1, 2_400)]
    ask_px = [round(50_000.0 + i * 0.5, 2) for i in range(1, 2_400)]
    snap_b = np.array([[x, 1.0 + (i % 7)] for i, x in enumerate(bid_px[:2_000])])
    snap_a = np.array([[x, 1.0 + (i % 5)] for i, x in enumerate(ask_px[:2_000])])
    assert c.apply_snapshot(snap_b, snap_a) is p.apply_snapshot(snap_b, snap_a) is None
    for _ in range(400):
        b = random_rows(rng, bid_px, rng.randint(0, 60), 0.0)
        a = random_rows(rng, ask_px, rng.randint(0, 60), 0.0)
        assert c.apply_delta(b, a) is p.apply_delta(b, a) is None
        assert_agree(c, p, rng)
    assert c.level_count(Side.BID) > 1_000


@pytest.mark.parametrize(
    "rows",
    [np.zeros(3), np.zeros((2, 1)), [["x", 1]], np.zeros((2, 2, 2)), "text", None],
    ids=["1d", "one column", "text rows", "3d", "a string", "None"],
)
def test_malformed_levels_are_refused_alike(rows: Any, pair: tuple[OrderBook, OrderBook]) -> None:
    for book in pair:
        assert book.apply_snapshot(np.array([[99.0, 1.0]]), np.array([[101.0, 1.0]])) is None
        assert book.apply_delta(rows, np.array([[101.0, 2.0]])) is Drop.MALFORMED
        assert book.apply_delta(np.array([[99.0, 2.0]]), rows) is Drop.MALFORMED
        assert book.last_drop_detail == "levels are not (n, 2) numbers"
        assert book.top(9, Side.ASK).tolist() == [[101.0, 1.0]]


def test_empty_level_arrays_of_any_shape_apply_as_no_change(
    pair: tuple[OrderBook, OrderBook],
) -> None:
    for book in pair:
        assert book.apply_snapshot(np.array([[99.0, 1.0]]), np.array([[101.0, 1.0]])) is None
        empties: list[Any] = [np.zeros((0, 2)), np.zeros(0), [], np.zeros((0, 3))]
        for empty in empties:
            assert book.apply_delta(empty, empty) is None
        assert book.updates_applied == 5
        assert book.best_bid() == 99.0


def test_the_compiled_store_is_built_here() -> None:
    # The package install builds it (pyproject + setup.py); CI installs the package,
    # so a broken build fails here rather than silently running on numpy.
    assert _book_kernel.COMPILED_AVAILABLE


def _kernel_in_a_fresh_process(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != _book_kernel.PURE_ENV}
    if env_value is not None:
        env[_book_kernel.PURE_ENV] = env_value
    code = (
        "from bot.book import OrderBook; from bot.clock import ManualClock; "
        "print(OrderBook('X', clock=ManualClock()).kernel)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_books_use_the_compiled_store_unless_the_environment_forces_numpy() -> None:
    assert _kernel_in_a_fresh_process(None) == "compiled"
    assert _kernel_in_a_fresh_process("0") == "compiled"
    assert _kernel_in_a_fresh_process("1") == "pure"


def test_using_switches_only_the_books_created_inside_it() -> None:
    before = make("compiled")
    with _book_kernel.using("pure"):
        inside = OrderBook("X", clock=ManualClock())
    after = OrderBook("X", clock=ManualClock())
    assert (before.kernel, inside.kernel) == ("compiled", "pure")
    assert after.kernel == _book_kernel.kernel()
    with pytest.raises(ValueError, match="unknown"):
        _book_kernel.use("fast")  # type: ignore[arg-type]
