"""Order book benchmark: ``bot.book.OrderBook`` (both kernels) against other books, same run.

    .venv/bin/python -m bench.book [--quick] [--reps N] [--rows N] [--seed N]

Contenders (each fed the input its own pipeline would produce, prepared before timing):

* ``compiled`` -- :class:`bot.book.OrderBook` on its compiled level store
  (``bot/_bookc.c``: sorted C arrays per side, best level last, merged in place; one C
  call per update or query). Full validation, all-or-nothing deltas. Gets ``(n, 2)``
  arrays. Skipped if the extension is not built.
* ``numpy``  -- the same class on its pure-numpy store (``bot/_book_numpy.py``, the
  fallback, forced with ``BACKSTOP_PURE_BOOK=1``): per side sorted float64 arrays, one
  batch merge per message, copy-on-write.
* ``lists``  -- :class:`ListBook` below, the obvious alternative design: per side sorted
  Python lists updated row by row with ``bisect`` (ccxt's approach) plus the same
  validation and crossed-delta revert (undo log); band sums over list slices. Gets
  tuples of ``(price, size)``.
* ``ccxt``   -- ``ccxt.async_support.base.ws.order_book.OrderBook``, fed row by row with
  ``storeArray`` exactly as ccxt's ``handle_delta`` does (a fresh ``[price, size]`` list
  per row, as its parser makes); no validation, no revert. Band depth by walking its
  sides in Python, one pass per side for all bands.
* ``order-book`` -- the C ``order-book`` package cryptofeed uses (``pip install
  '.[bench]'``), fed row by row as cryptofeed does (``del`` for size 0, else set); no
  validation. Best bid/ask with ``index(0)``, band depth by iterating its sorted
  sides. Skipped when not installed.

Workloads, over a seeded synthetic stream (about 2,000 levels per side) and the bundled
real recording (Binance spot BTCUSDT, 10m50s, ~6,500 diff messages):

(a) apply only: rows (price-level updates) and messages per second;
(b) mixed, per message: apply + best bid/ask + depth within 10/50/200 bps on both sides;
(c) depth query latency: the 3-band, 2-side query alone, p50/p99 in microseconds; and,
    for ``bot.book``, one band on one side (``depth_within``), per band.

Throughputs are medians over ``--reps`` repetitions; the garbage collector is paused
while timing. Ratio columns: the first contender (``compiled`` when built) over each
other one, and ``numpy`` over ``ccxt``; > 1 means the first is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import math
import os
import statistics
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import mul
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import header as bench_header
from bot import _book_kernel
from bot._book_kernel import Kernel
from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.feeds.events import BookDelta, BookSnapshot, Levels

BANDS = (10.0, 50.0, 200.0)
Rows = tuple[tuple[float, float], ...]


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Msg:
    """One delta message in every contender's input form."""

    bids: Levels
    asks: Levels
    bid_rows: Rows
    ask_rows: Rows
    first_id: int | None = None
    last_id: int | None = None
    prev_id: int | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    name: str
    snap_bids: Levels
    snap_asks: Levels
    snap_id: int | None
    msgs: list[Msg]

    @property
    def rows(self) -> int:
        return sum(len(m.bid_rows) + len(m.ask_rows) for m in self.msgs)


def _rows(a: Levels) -> Rows:
    return tuple((p, s) for p, s in a.tolist())


def _msg(bids: Levels, asks: Levels, **ids: int | None) -> Msg:
    return Msg(bids, asks, _rows(bids), _rows(asks), **ids)


def synthetic(total_rows: int, seed: int) -> Stream:
    """A random but well-formed stream: about 2,000 levels a side, never crossed.

    Prices are ticks of 0.01 around 60,000 on a fixed grid per side (so the book stays
    near 2,200 levels a side instead of growing as the price wanders): every tick for
    the first 300, then evenly spread out to 2,500 USDT (~4%), which puts about 340,
    520 and 1,200 levels inside the 10/50/200 bps bands, roughly the real book's shape.
    A centre tick does a mean-reverting walk within +-150 ticks; bids stay below it and
    asks above it, and the level it steps onto is removed in the same message, so the
    book is never crossed. Activity is concentrated near the top (grid index drawn
    from an exponential), 15% of rows remove a level, the others set a new absolute
    size. Message sizes are 1 + Poisson(20) rows a side (Binance spot depth@100ms:
    median 22 rows a message, both sides).
    """
    rng = np.random.default_rng(seed)
    tick = 0.01
    start = centre = 6_000_000  # in ticks
    span = 2_200
    grid = np.concatenate((np.arange(1, 301), np.linspace(301, 250_000, span - 300)))
    grid = grid.round().astype(np.int64)
    ticks = (start - grid, start + grid)  # per side, best first

    def size_of(n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.round(rng.lognormal(-1.0, 1.5, n), 4) + 0.0001

    snap_b = np.column_stack((ticks[0] * tick, size_of(span)))
    snap_a = np.column_stack((ticks[1] * tick, size_of(span)))
    live = (set(ticks[0].tolist()), set(ticks[1].tolist()))
    msgs: list[Msg] = []
    done = 0
    while done < total_rows:
        rows: list[list[tuple[float, float]]] = [[], []]
        drift = (start - centre) / 300.0  # pull back towards the start
        u = rng.random()
        move = -1 if u < 0.2 - drift * 0.2 else (1 if u > 0.8 - drift * 0.2 else 0)
        if move:
            centre += move
            side = 1 if move > 0 else 0  # the side the centre stepped into
            if centre in live[side]:
                rows[side].append((centre * tick, 0.0))
                live[side].discard(centre)
        for j in (0, 1):
            k = 1 + int(rng.poisson(20))
            # Index from the best allowed tick: skip grid ticks on the wrong side.
            first = (
                int(np.searchsorted(grid, abs(centre - start) + 1))
                if ((j == 0 and centre <= start) or (j == 1 and centre >= start))
                else 0
            )
            idx = np.minimum(first + rng.exponential(300.0, k).astype(np.int64), span - 1)
            sizes = size_of(k)
            sizes[rng.random(k) < 0.15] = 0.0
            for t, size in zip(ticks[j][idx].tolist(), sizes.tolist(), strict=True):
                if (t >= centre) if j == 0 else (t <= centre):
                    continue
                rows[j].append((t * tick, size))
                if size:
                    live[j].add(t)
                else:
                    live[j].discard(t)
        b = np.array(rows[0], dtype=np.float64).reshape(-1, 2)
        a = np.array(rows[1], dtype=np.float64).reshape(-1, 2)
        msgs.append(_msg(b, a))
        done += len(rows[0]) + len(rows[1])
    return Stream(f"synthetic ({total_rows:,} rows)", snap_b, snap_a, None, msgs)


def recording() -> Stream:
    """The bundled real sample, through the project's own replay (already synced)."""
    try:
        from bot.feeds.replay import ReplayFeed, bundled_sample_paths
    except ImportError:  # pragma: no cover - replay not available yet
        return _recording_fallback()

    async def collect() -> list[BookSnapshot | BookDelta]:
        feed = ReplayFeed(bundled_sample_paths(), clock=ManualClock(), speed=0.0)
        return [e async for e in feed.events() if isinstance(e, BookSnapshot | BookDelta)]

    events = asyncio.run(collect())
    return _stream_from_events("bundled spot BTCUSDT recording", events)


def _recording_fallback() -> Stream:
    import gzip
    import json

    from bot.feeds.events import levels

    base = Path(__file__).parents[1] / "bot" / "data"
    snap: dict[str, Any] | None = None
    diffs: list[dict[str, Any]] = []
    for name in ("spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"):
        with gzip.open(base / name, "rt") as f:
            for line in f:
                raw = line.split(" ", 1)[1]
                if '"lastUpdateId"' in raw:
                    snap = json.loads(raw)
                elif '"depthUpdate"' in raw:
                    diffs.append(json.loads(raw)["data"])
    assert snap is not None
    events: list[BookSnapshot | BookDelta] = [
        BookSnapshot("BTCUSDT", 0, levels(snap["bids"]), levels(snap["asks"]), snap["lastUpdateId"])
    ]
    events += [
        BookDelta("BTCUSDT", 0, levels(d["b"]), levels(d["a"]), first_id=d["U"], last_id=d["u"])
        for d in diffs
        if d["u"] > snap["lastUpdateId"]
    ]
    return _stream_from_events("bundled spot BTCUSDT recording (own parser)", events)


def _stream_from_events(name: str, events: Sequence[BookSnapshot | BookDelta]) -> Stream:
    first = events[0]
    if not isinstance(first, BookSnapshot) or any(isinstance(e, BookSnapshot) for e in events[1:]):
        raise SystemExit("expected one snapshot followed by deltas in the recording")
    msgs = [
        _msg(e.bids, e.asks, first_id=e.first_id, last_id=e.last_id, prev_id=e.prev_id)
        for e in events[1:]
        if isinstance(e, BookDelta)
    ]
    return Stream(name, first.bids, first.asks, first.update_id, msgs)


# ----------------------------------------------------------------------------- design B


class ListBook:
    """Design B: sorted Python lists + ``bisect`` per row, same validation as OrderBook.

    Keys are the price for asks and ``-price`` for bids, so both sides are ascending
    best first. A delta is validated first, then applied row by row with an undo log,
    and reverted if it leaves the book crossed.
    """

    def __init__(self, bids: Rows, asks: Rows) -> None:
        self.keys: list[list[float]] = [[], []]
        self.sizes: list[list[float]] = [[], []]
        for p, s in bids:
            self._store(0, -p, s)
        for p, s in asks:
            self._store(1, p, s)

    def _store(self, side: int, key: float, size: float) -> float:
        """Set the size at ``key`` (0 removes); returns the old size (0 if absent)."""
        keys, sizes = self.keys[side], self.sizes[side]
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            old = sizes[i]
            if size:
                sizes[i] = size
            else:
                del keys[i]
                del sizes[i]
            return old
        if size:
            keys.insert(i, key)
            sizes.insert(i, size)
        return 0.0

    def apply_delta(self, bids: Rows, asks: Rows) -> bool:
        isfinite = math.isfinite
        for rows in (bids, asks):
            for p, s in rows:
                if not (isfinite(p) and isfinite(s)) or p <= 0 or s < 0:
                    return False
        undo: list[tuple[int, float, float]] = []
        store = self._store
        for p, s in bids:
            undo.append((0, -p, store(0, -p, s)))
        for p, s in asks:
            undo.append((1, p, store(1, p, s)))
        bk, ak = self.keys
        if bk and ak and -bk[0] >= ak[0]:
            for side, key, old in reversed(undo):
                store(side, key, old)
            return False
        return True

    def best_bid(self) -> float | None:
        return -self.keys[0][0] if self.keys[0] else None

    def best_ask(self) -> float | None:
        return self.keys[1][0] if self.keys[1] else None

    def depth_bands(self, bands: Sequence[float]) -> list[list[tuple[float, float]]]:
        bb, ba = self.best_bid(), self.best_ask()
        if bb is None or ba is None:
            return [[(0.0, 0.0)] * len(bands)] * 2
        mid = (bb + ba) / 2.0
        out = []
        for side in (0, 1):
            keys, sizes = self.keys[side], self.sizes[side]
            if side == 0:
                ks = [bisect_right(keys, -(mid * (1.0 - b / 1e4))) for b in bands]
            else:
                ks = [bisect_right(keys, mid * (1.0 + b / 1e4)) for b in bands]
            kmax = max(ks)
            cb = [0.0, *accumulate(sizes[:kmax])]
            cq = [0.0, *accumulate(map(mul, keys[:kmax], sizes[:kmax]))]
            sign = -1.0 if side == 0 else 1.0
            out.append([(cb[k], sign * cq[k]) for k in ks])
        return out


# ----------------------------------------------------------------------------- ccxt


def ccxt_book(bids: Rows, asks: Rows) -> Any:
    from ccxt.async_support.base.ws.order_book import OrderBook as CcxtOrderBook

    return CcxtOrderBook({"bids": [list(r) for r in bids], "asks": [list(r) for r in asks]})


def ccxt_apply(ob: Any, bids: Rows, asks: Rows) -> None:
    bs, as_ = ob["bids"], ob["asks"]
    for p, s in bids:
        bs.storeArray([p, s])
    for p, s in asks:
        as_.storeArray([p, s])


def ccxt_depth_bands(ob: Any, bands: Sequence[float]) -> list[list[tuple[float, float]]]:
    """Walk each side once, best first, summing into every band still open."""
    bids, asks = ob["bids"], ob["asks"]
    if not bids or not asks:
        return [[(0.0, 0.0)] * len(bands)] * 2
    mid = (bids[0][0] + asks[0][0]) / 2.0
    out = []
    for side, levels in ((0, bids), (1, asks)):
        edges = sorted(mid * (1.0 - b / 1e4) if side == 0 else mid * (1.0 + b / 1e4) for b in bands)
        if side == 0:
            edges.reverse()  # narrowest band first: the highest bid edge
        res = []
        base = quote = 0.0
        e = 0
        for p, s in levels:
            while e < len(edges) and (p < edges[e] if side == 0 else p > edges[e]):
                res.append((base, quote))
                e += 1
            if e == len(edges):
                break
            base += s
            quote += p * s
        while len(res) < len(edges):
            res.append((base, quote))
        out.append(res)
    return out


# ----------------------------------------------------------------------------- order-book


def order_book_available() -> bool:
    return importlib.util.find_spec("order_book") is not None


def ob_book(bids: Rows, asks: Rows) -> Any:
    ob = importlib.import_module("order_book").OrderBook()
    for p, s in bids:
        ob.bids[p] = s
    for p, s in asks:
        ob.asks[p] = s
    return ob


def ob_apply(ob: Any, bids: Rows, asks: Rows) -> None:
    """As cryptofeed's ``_l2_book`` handlers do: delete on size 0, else set."""
    for side, rows in ((ob.bids, bids), (ob.asks, asks)):
        for p, s in rows:
            if s == 0:
                if p in side:
                    del side[p]
            else:
                side[p] = s


def ob_best(ob: Any) -> tuple[float | None, float | None]:
    bb = ob.bids.index(0)[0] if len(ob.bids) else None
    ba = ob.asks.index(0)[0] if len(ob.asks) else None
    return bb, ba


def ob_depth_bands(ob: Any, bands: Sequence[float]) -> list[list[tuple[float, float]]]:
    """Iterate each side once in its sorted order, summing into every band still open."""
    bb, ba = ob_best(ob)
    if bb is None or ba is None:
        return [[(0.0, 0.0)] * len(bands)] * 2
    mid = (bb + ba) / 2.0
    out = []
    for side, levels in ((0, ob.bids), (1, ob.asks)):
        edges = sorted(mid * (1.0 - b / 1e4) if side == 0 else mid * (1.0 + b / 1e4) for b in bands)
        if side == 0:
            edges.reverse()
        res = []
        base = quote = 0.0
        e = 0
        for p in levels:
            while e < len(edges) and (p < edges[e] if side == 0 else p > edges[e]):
                res.append((base, quote))
                e += 1
            if e == len(edges):
                break
            s = levels[p]
            base += s
            quote += p * s
        while len(res) < len(edges):
            res.append((base, quote))
        out.append(res)
    return out


# ----------------------------------------------------------------------------- runners

Runner = Callable[[Stream, bool], float]
"""Runs a stream once (``mixed`` or apply-only) and returns elapsed seconds."""


def _timed(fn: Callable[[], None]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def new_book(stream: Stream, kernel: Kernel) -> OrderBook:
    with _book_kernel.using(kernel):
        book = OrderBook("X", clock=ManualClock())
    assert book.kernel == kernel
    assert book.apply_snapshot(stream.snap_bids, stream.snap_asks, update_id=stream.snap_id) is None
    return book


def book_runner(kernel: Kernel) -> Runner:
    def run(stream: Stream, mixed: bool) -> float:
        book = new_book(stream, kernel)
        apply, bb, ba, bands = book.apply_delta, book.best_bid, book.best_ask, book.depth_bands

        def go() -> None:
            if mixed:
                for m in stream.msgs:
                    apply(m.bids, m.asks, first_id=m.first_id, last_id=m.last_id, prev_id=m.prev_id)
                    bb()
                    ba()
                    bands(BANDS)
            else:
                for m in stream.msgs:
                    apply(m.bids, m.asks, first_id=m.first_id, last_id=m.last_id, prev_id=m.prev_id)

        elapsed = _timed(go)
        if sum(book.drops.values()):
            raise SystemExit(f"bot.book ({kernel}) dropped input: {dict(book.drops)}")
        return elapsed

    return run


def run_lists(stream: Stream, mixed: bool) -> float:
    book = ListBook(_rows(stream.snap_bids), _rows(stream.snap_asks))
    apply, bb, ba, bands = book.apply_delta, book.best_bid, book.best_ask, book.depth_bands

    def go() -> None:
        if mixed:
            for m in stream.msgs:
                apply(m.bid_rows, m.ask_rows)
                bb()
                ba()
                bands(BANDS)
        else:
            for m in stream.msgs:
                apply(m.bid_rows, m.ask_rows)

    return _timed(go)


def run_ccxt(stream: Stream, mixed: bool) -> float:
    ob = ccxt_book(_rows(stream.snap_bids), _rows(stream.snap_asks))
    bids, asks = ob["bids"], ob["asks"]

    def go() -> None:
        if mixed:
            for m in stream.msgs:
                ccxt_apply(ob, m.bid_rows, m.ask_rows)
                _ = bids[0][0] if bids else None
                _ = asks[0][0] if asks else None
                ccxt_depth_bands(ob, BANDS)
        else:
            for m in stream.msgs:
                ccxt_apply(ob, m.bid_rows, m.ask_rows)

    return _timed(go)


def run_order_book(stream: Stream, mixed: bool) -> float:
    ob = ob_book(_rows(stream.snap_bids), _rows(stream.snap_asks))

    def go() -> None:
        if mixed:
            for m in stream.msgs:
                ob_apply(ob, m.bid_rows, m.ask_rows)
                ob_best(ob)
                ob_depth_bands(ob, BANDS)
        else:
            for m in stream.msgs:
                ob_apply(ob, m.bid_rows, m.ask_rows)

    return _timed(go)


def contenders() -> dict[str, Runner]:
    """Every contender available here, ours first (the ratio columns divide by them)."""
    out: dict[str, Runner] = {}
    if _book_kernel.COMPILED_AVAILABLE:
        out["compiled"] = book_runner("compiled")
    out["numpy"] = book_runner("pure")
    out["lists"] = run_lists
    out["ccxt"] = run_ccxt
    if order_book_available():
        out["order-book"] = run_order_book
    return out


def latencies(stream: Stream, name: str) -> list[int]:
    """ns per 3-band, 2-side depth query, one per message (updates applied untimed)."""
    clock = time.perf_counter_ns
    out: list[int] = []
    if name in ("compiled", "numpy"):
        book = new_book(stream, "compiled" if name == "compiled" else "pure")
        for m in stream.msgs:
            book.apply_delta(
                m.bids, m.asks, first_id=m.first_id, last_id=m.last_id, prev_id=m.prev_id
            )
            t0 = clock()
            book.depth_bands(BANDS)
            out.append(clock() - t0)
    elif name == "lists":
        lb = ListBook(_rows(stream.snap_bids), _rows(stream.snap_asks))
        for m in stream.msgs:
            lb.apply_delta(m.bid_rows, m.ask_rows)
            t0 = clock()
            lb.depth_bands(BANDS)
            out.append(clock() - t0)
    elif name == "ccxt":
        ob = ccxt_book(_rows(stream.snap_bids), _rows(stream.snap_asks))
        for m in stream.msgs:
            ccxt_apply(ob, m.bid_rows, m.ask_rows)
            t0 = clock()
            ccxt_depth_bands(ob, BANDS)
            out.append(clock() - t0)
    else:
        cb = ob_book(_rows(stream.snap_bids), _rows(stream.snap_asks))
        for m in stream.msgs:
            ob_apply(cb, m.bid_rows, m.ask_rows)
            t0 = clock()
            ob_depth_bands(cb, BANDS)
            out.append(clock() - t0)
    return out


def band_latencies(stream: Stream, kernel: Kernel) -> dict[float, list[int]]:
    """ns per one-band, one-side ``depth_within`` call, per band (bid and ask calls)."""
    clock = time.perf_counter_ns
    book = new_book(stream, kernel)
    depth = book.depth_within
    out: dict[float, list[int]] = {b: [] for b in BANDS}
    for m in stream.msgs:
        book.apply_delta(m.bids, m.asks, first_id=m.first_id, last_id=m.last_id, prev_id=m.prev_id)
        for b in BANDS:
            for side in (Side.BID, Side.ASK):
                t0 = clock()
                depth(b, side)
                out[b].append(clock() - t0)
    return out


def check_agreement(stream: Stream) -> None:
    """Every contender ends in the same book and reports the same band depths."""
    books = [new_book(stream, k) for k in ("compiled", "pure") if k in _kernels()]
    lb = ListBook(_rows(stream.snap_bids), _rows(stream.snap_asks))
    ob = ccxt_book(_rows(stream.snap_bids), _rows(stream.snap_asks))
    cb = (
        ob_book(_rows(stream.snap_bids), _rows(stream.snap_asks))
        if order_book_available()
        else None
    )
    for m in stream.msgs:
        for book in books:
            book.apply_delta(
                m.bids, m.asks, first_id=m.first_id, last_id=m.last_id, prev_id=m.prev_id
            )
        lb.apply_delta(m.bid_rows, m.ask_rows)
        ccxt_apply(ob, m.bid_rows, m.ask_rows)
        if cb is not None:
            ob_apply(cb, m.bid_rows, m.ask_rows)
    ours = books[0].depth_bands(BANDS)
    others = [b.depth_bands(BANDS) for b in books[1:]]
    others += [np.array(lb.depth_bands(BANDS)), np.array(ccxt_depth_bands(ob, BANDS))]
    if cb is not None:
        others.append(np.array(ob_depth_bands(cb, BANDS)))
    for other in others:
        if not np.allclose(ours, other, rtol=1e-9):
            raise SystemExit(f"books disagree on {stream.name}:\n{ours}\n{other}")
    asks = [list(r) for r in ob["asks"]]
    for book in books:
        if book.top(10**9, Side.ASK).tolist() != asks:
            raise SystemExit(f"bot.book ({book.kernel}) and ccxt disagree on {stream.name}")
    if cb is not None and [list(r) for r in cb.asks.to_list()] != asks:
        raise SystemExit(f"order-book and ccxt disagree on the ask levels of {stream.name}")


def _kernels() -> tuple[Kernel, ...]:
    return ("compiled", "pure") if _book_kernel.COMPILED_AVAILABLE else ("pure",)


# ----------------------------------------------------------------------------- report


def header() -> str:
    from importlib.metadata import PackageNotFoundError, version

    default = _book_kernel.kernel()
    built = "built" if _book_kernel.COMPILED_AVAILABLE else "NOT built"
    try:
        ob = f"order-book {version('order-book')}"
    except PackageNotFoundError:
        ob = "order-book not installed (pip install '.[bench]')"
    return "\n".join(
        [
            bench_header("order book benchmark (bench/book.py)"),
            f"bot.book kernel in use: {default} (bot._bookc {built}; "
            f"{_book_kernel.PURE_ENV}={os.environ.get(_book_kernel.PURE_ENV, '')!r}); {ob}",
        ]
    )


ResultRow = tuple[Any, ...]
"""(workload, unit, one value per contender in :func:`contenders` order)."""


def bench_stream(stream: Stream, reps: int) -> list[ResultRow]:
    n_msgs, n_rows = len(stream.msgs), stream.rows
    runners = contenders()
    apply_s: dict[str, list[float]] = {k: [] for k in runners}
    mixed_s: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(reps):  # interleaved, so drifting machine load hits everyone alike
        for name, run in runners.items():
            apply_s[name].append(run(stream, False))
            mixed_s[name].append(run(stream, True))
    med_apply = {k: statistics.median(v) for k, v in apply_s.items()}
    med_mixed = {k: statistics.median(v) for k, v in mixed_s.items()}
    lat = {k: np.array(latencies(stream, k)) / 1e3 for k in runners}

    def row(label: str, unit: str, f: Callable[[str], float]) -> ResultRow:
        return (label, unit, *(f(k) for k in runners))

    return [
        row("(a) apply: rows/s", "/s", lambda k: n_rows / med_apply[k]),
        row("(a) apply: messages/s", "/s", lambda k: n_msgs / med_apply[k]),
        row("(b) mixed: messages/s", "/s", lambda k: n_msgs / med_mixed[k]),
        row("(c) depth query p50", "us", lambda k: float(np.percentile(lat[k], 50))),
        row("(c) depth query p99", "us", lambda k: float(np.percentile(lat[k], 99))),
    ]


def fmt(v: float, unit: str) -> str:
    return f"{v:,.0f}" if unit == "/s" else f"{v:,.1f}"


def ratio(a: float, b: float, unit: str) -> float:
    """How many times better ``a`` is than ``b`` (throughput up, latency down)."""
    return a / b if unit == "/s" else b / a


def print_stream(stream: Stream, reps: int) -> None:
    names = list(contenders())
    first = names[0]
    vs = names[1:]
    rows = bench_stream(stream, reps)
    print(
        "".join(
            [f"{'workload':24s}", *(f"{n:>12s}" for n in names)]
            + [f"{first[:4] + '/' + n[:5]:>12s}" for n in vs]
            + [f"{'numpy/ccxt':>11s}"]
        )
    )
    for label, unit, *vals in rows:
        by = dict(zip(names, vals, strict=True))
        print(
            "".join(
                [f"{label:24s}", *(f"{fmt(v, unit):>12s}" for v in vals)]
                + [f"{ratio(by[first], by[n], unit):>11.2f}x" for n in vs]
                + [f"{ratio(by['numpy'], by['ccxt'], unit):>10.2f}x"]
            )
        )
    print(f"one band, one side (depth_within), {len(stream.msgs):,} calls per band and side:")
    for kernel in _kernels():
        lat = band_latencies(stream, kernel)
        cells = []
        for b in BANDS:
            us = np.array(lat[b]) / 1e3
            cells.append(
                f"{b:g} bps p50/p99 {np.percentile(us, 50):.1f}/{np.percentile(us, 99):.1f}"
            )
        name = "compiled" if kernel == "compiled" else "numpy"
        print(f"  {name:9s} " + ", ".join(cells) + " us")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.book", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small synthetic stream, 3 reps")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 3)")
    ap.add_argument("--rows", type=int, default=None, help="synthetic rows (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=20240808)
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    rows = args.rows or (50_000 if args.quick else 1_000_000)

    print(header())
    streams = [synthetic(rows, args.seed), recording()]
    for stream in streams:
        check_agreement(stream)
        lv = new_book(stream, "pure")
        print(
            f"\n{stream.name}: {len(stream.msgs):,} messages, {stream.rows:,} rows "
            f"({stream.rows / len(stream.msgs):.1f} rows/message), snapshot "
            f"{lv.level_count(Side.BID):,}/{lv.level_count(Side.ASK):,} levels; "
            f"median of {reps} reps"
        )
        print_stream(stream, reps)
    print(
        "\nratios > 1: the first column is faster. lists = design B (Python lists + bisect, "
        "same rules); ccxt and order-book = no validation, no revert."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
