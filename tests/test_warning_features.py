"""The early warning's online features against a naive reference on small books.

The reference keeps the whole history and recomputes every feature from its
definition at every step: each average as an explicit weighted sum over all past
samples, each flow by comparing the two books level by level in Python. The online
tracker must agree to rounding on a seeded random walk of a small book with trades.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import numpy as np
import pytest

from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.detect.config import DetectorConfig
from bot.detector import FractureDetector
from bot.feeds.events import BookDelta, BookSnapshot, Trade
from bot.monitor import DepthMonitor
from bot.warning.features import FEATURES, FeatureTracker, TopLevels, book_flow

NS = 1_000_000_000
BANDS = (10.0, 50.0, 200.0)
TOP = 6


def naive_flow(prev: list[dict[float, float]], cur: list[dict[float, float]]) -> list[float]:
    """[removed bid, added bid, removed ask, added ask] by definition, level by level."""
    out: list[float] = []
    for side in (0, 1):
        p, c = prev[side], cur[side]
        if not p or not c:
            return [0.0] * 4
        # Keys ascend from the best level (bids: minus the price); the range both cover.
        lim = min(max(p), max(c))
        removed = added = 0.0
        for k in set(p) | set(c):
            if k <= lim:
                d = c.get(k, 0.0) - p.get(k, 0.0)
                added += max(d, 0.0)
                removed += max(-d, 0.0)
        out += [removed, added]
    return out


@dataclass
class Step:
    dt: float
    ratio: float
    thin_bid: bool
    band: list[float]  # b1, a1, b2, a2, share b, share a
    touch: tuple[float, float, float, float]
    top_q: tuple[float, float]
    flow: list[float]
    mid: float
    spread: float
    trades: tuple[int, float, float, float]  # count, quote, buy base, sell base


@dataclass
class Naive:
    """Every feature straight from the history, O(n) per step."""

    fracture_ratio: float
    steps: list[Step] = field(default_factory=list)

    def _w(self, tau: float, n: int | None = None) -> list[float]:
        """Per sample of the first ``n``: its weight in a bias-corrected EWMA with time
        constant ``tau`` at step ``n`` (default: now)."""
        steps = self.steps if n is None else self.steps[:n]
        ws, age = [], 0.0
        for s in reversed(steps):
            ws.append((1.0 - math.exp(-s.dt / tau)) * math.exp(-age / tau))
            age += s.dt
        return ws[::-1]

    def avg(self, tau: float, values: list[float], n: int | None = None) -> float:
        """The average of ``values`` (one per step) as it was at step ``n``."""
        ws = self._w(tau, n)
        vals = values[: len(ws)]
        total = sum(ws)
        return sum(w * v for w, v in zip(ws, vals, strict=True)) / total if total else vals[-1]

    def kernel(self, tau: float, amounts: list[float]) -> float:
        """Per-second rate: sum of amounts decayed by age, over tau x the bias weight."""
        out, age = 0.0, 0.0
        for s, a in zip(reversed(self.steps), reversed(amounts), strict=True):
            out += a * math.exp(-age / tau)
            age += s.dt
        weight = sum(self._w(tau))
        return out / (tau * weight) if weight else 0.0

    def features(self) -> list[float]:
        st = self.steps
        now = st[-1]
        col = lambda f: [f(s) for s in st]  # noqa: E731
        ratio = now.ratio
        r1 = self.avg(1.0, col(lambda s: s.ratio))
        r2 = self.avg(2.0, col(lambda s: s.ratio))
        r10 = self.avg(10.0, col(lambda s: s.ratio))
        trend = ratio - r1
        ttf = 60.0
        if trend < 0:
            ttf = min(max(ratio - self.fracture_ratio, 0.0) / -trend, 60.0)

        def rel(i: int) -> float:
            mean = self.avg(60.0, col(lambda s: s.band[i]))
            return now.band[i] / mean if mean > 0 else 1.0

        band1 = min(rel(0), rel(1))
        band2 = min(rel(2), rel(3))
        band1_hist = []  # band1 as it was at every step
        for n in range(1, len(st) + 1):
            mb = self.avg(60.0, col(lambda s: s.band[0]), n)
            ma = self.avg(60.0, col(lambda s: s.band[1]), n)
            b1n, a1n = st[n - 1].band[0], st[n - 1].band[1]
            band1_hist.append(min(b1n / mb if mb > 0 else 1.0, a1n / ma if ma > 0 else 1.0))
        band1_trend = band1 - self.avg(2.0, band1_hist)
        near = min(rel(4), rel(5))
        b0, a0 = now.band[6], now.band[7]
        imbalance = abs(b0 - a0) / (b0 + a0) if b0 + a0 > 0 else 0.0

        # Order-flow imbalance at the touch (Cont, Kukanov & Stoikov), summed with decay.
        ofi = [0.0]
        for p, c in itertools.pairwise(st):
            pbp, pbs, pap, pas = p.touch
            bp, bs, ap, as_ = c.touch
            e = (bs if bp >= pbp else 0) - (pbs if bp <= pbp else 0)
            e += -(as_ if ap <= pap else 0) + (pas if ap >= pap else 0)
            ofi.append(e)
        touch_avg = self.avg(60.0, col(lambda s: (s.touch[1] + s.touch[3]) / 2))
        ofi_abs = abs(self.kernel(1.0, ofi)) / touch_avg if touch_avg > 0 else 0.0
        cancels: list[list[float]] = [[], []]
        withdraw: list[list[float]] = [[], []]
        for n, s in enumerate(st):
            scale = []
            for side in (0, 1):
                m = self.avg(60.0, col(lambda x: x.top_q[side]), n + 1)  # noqa: B023
                w = sum(self._w(60.0, n + 1))
                scale.append(m if w > 0 and m > 0 else (s.top_q[side] or 1.0))
            sells, buys = s.trades[3], s.trades[2]
            can = (max(s.flow[0] - sells, 0) * s.mid, max(s.flow[2] - buys, 0) * s.mid)
            if n == 0:
                can = (0.0, 0.0)
            adds = (s.flow[1] * s.mid, s.flow[3] * s.mid) if n else (0.0, 0.0)
            for side in (0, 1):
                cancels[side].append(can[side] / scale[side])
                withdraw[side].append((can[side] - adds[side]) / scale[side])
        cancel = max(self.kernel(1.0, cancels[0]), self.kernel(1.0, cancels[1]))
        net = max(self.kernel(1.0, withdraw[0]), self.kernel(1.0, withdraw[1]))

        spread = now.spread
        s60 = max(self.avg(60.0, col(lambda s: s.spread)), 1e-12)
        s1 = self.avg(1.0, col(lambda s: s.spread))
        rets = [0.0] + [
            ((c.mid - p.mid) / p.mid * 1e4) ** 2 for p, c in itertools.pairwise(st)
        ]
        vol = math.sqrt(self.kernel(2.0, rets))
        vol_ratio = math.log((vol + 0.1) / (math.sqrt(self.kernel(60.0, rets)) + 0.1))
        counts = col(lambda s: float(s.trades[0]))
        quote = col(lambda s: s.trades[1])
        trade_rel = math.log((self.kernel(2.0, counts) + 0.1) / (self.kernel(60.0, counts) + 0.1))
        quote_rel = math.log((self.kernel(2.0, quote) + 1.0) / (self.kernel(60.0, quote) + 1.0))
        buy = self.kernel(2.0, col(lambda s: s.trades[2] * s.mid))
        sell = self.kernel(2.0, col(lambda s: s.trades[3] * s.mid))
        toward = 0.0
        if buy + sell > 0:
            toward = ((sell - buy) if now.thin_bid else (buy - sell)) / (buy + sell)
        return [
            ratio,
            math.log(max(ratio, 1e-3)),
            trend,
            r2 - r10,
            math.log(max(ttf, 0.05)),
            band1,
            band2,
            band1_trend,
            near,
            imbalance,
            ofi_abs,
            cancel,
            net,
            spread,
            math.log(max(spread, 1e-12) / s60),
            abs(spread - s1) / s60,
            vol,
            vol_ratio,
            trade_rel,
            quote_rel,
            toward,
        ]


def random_books(seed: int, steps: int) -> list[tuple[int, BookSnapshot | BookDelta, list[Trade]]]:
    """A small book (about 10 levels a side, a few inside 10 bps) taking random deltas,
    with a few trades between updates; never crossed."""
    rng = random.Random(seed)
    tick = 0.5
    mid_ticks = 20_000  # price 10,000
    levels = {s: {i: rng.uniform(0.1, 3.0) for i in range(1, 12)} for s in ("b", "a")}

    def rows(side: str) -> np.ndarray:
        sign = -1 if side == "b" else 1
        return np.array(
            [[(mid_ticks + sign * i) * tick, sz] for i, sz in sorted(levels[side].items())],
            dtype=np.float64,
        )

    t = 10 * NS
    out: list[tuple[int, BookSnapshot | BookDelta, list[Trade]]] = [
        (t, BookSnapshot("X", t, rows("b"), rows("a"), update_id=1), [])
    ]
    uid = 1
    for _ in range(steps):
        t += rng.choice((50, 100, 100, 250, 900)) * 1_000_000
        changes: dict[str, dict[int, float]] = {"b": {}, "a": {}}
        for _ in range(rng.randint(1, 5)):
            side = rng.choice("ba")
            i = rng.choice((1, 1, 2, 3, 4, 5, 8, 12, 14))
            size = 0.0 if rng.random() < 0.25 else round(rng.uniform(0.05, 4.0), 3)
            changes[side][i] = size
            if size:
                levels[side][i] = size
            else:
                levels[side].pop(i, None)
        for side in "ba":  # never empty a side
            if not levels[side]:
                levels[side][3] = 1.0
                changes[side][3] = 1.0
        sign = {"b": -1, "a": 1}
        d = {
            s: np.array(
                [[(mid_ticks + sign[s] * i) * tick, sz] for i, sz in sorted(changes[s].items())],
                dtype=np.float64,
            ).reshape(-1, 2)
            for s in "ba"
        }
        trades = [
            Trade("X", t - 1, 10_000.0, round(rng.uniform(0.01, 1.0), 3),
                  rng.choice(("buy", "sell")), str(k))
            for k in range(rng.choice((0, 0, 1, 3)))
        ]
        out.append((t, BookDelta("X", t, d["b"], d["a"], uid + 1, uid + 1), trades))
        uid += 1
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_features_match_the_naive_reference(seed: int) -> None:
    config = DetectorConfig(baseline_window_s=5.0, warmup_s=2.0)
    detector = FractureDetector(config)
    book = OrderBook("X", clock=ManualClock())
    monitor = DepthMonitor.for_bands(BANDS, 1_000.0)
    tracker = FeatureTracker(top_levels=TOP, fracture_ratio=config.baseline_fraction or 0.0)
    naive = Naive(config.baseline_fraction or 0.0)
    prev_levels: list[dict[float, float]] = [{}, {}]
    last_t: int | None = None
    pending = (0, 0.0, 0.0, 0.0)
    checked = 0
    for t, event, trades in random_books(seed, 60):
        for tr in trades:
            tracker.on_trade(tr)
            n, q, b, s = pending
            pending = (
                n + 1,
                q + tr.price * tr.amount,
                b + (tr.amount if tr.side == "buy" else 0.0),
                s + (tr.amount if tr.side == "sell" else 0.0),
            )
        assert book.apply(event) is None
        sample = monitor.observe(book, t)
        assert sample is not None
        reading = detector.update(sample)
        got = tracker.update(book, sample, reading)

        bids, asks = book.top(TOP, Side.BID), book.top(TOP, Side.ASK)
        levels = [{-p: s for p, s in bids.tolist()}, {p: s for p, s in asks.tolist()}]
        d = sample.depth
        rb, ra = reading.ratio
        ratio = min(rb, ra) if reading.baseline_ready and rb is not None and ra is not None else 1.0
        naive.steps.append(
            Step(
                dt=0.0 if last_t is None else (t - last_t) / NS,
                ratio=ratio,
                thin_bid=rb is not None and ra is not None and rb <= ra,
                band=[
                    d[0, 1, 1], d[1, 1, 1], d[0, 2, 1], d[1, 2, 1],
                    d[0, 0, 1] / d[0, 1, 1] if d[0, 1, 1] > 0 else 1.0,
                    d[1, 0, 1] / d[1, 1, 1] if d[1, 1, 1] > 0 else 1.0,
                    d[0, 0, 1], d[1, 0, 1],
                ],
                touch=(bids[0, 0], bids[0, 1], asks[0, 0], asks[0, 1]),
                top_q=(sum(levels[0].values()) * sample.mid, sum(levels[1].values()) * sample.mid),
                flow=naive_flow(prev_levels, levels),
                mid=sample.mid,
                spread=sample.spread_bps,
                trades=pending,
            )
        )
        prev_levels, last_t, pending = levels, t, (0, 0.0, 0.0, 0.0)
        want = naive.features()
        assert len(got) == len(FEATURES)
        for name, g, w in zip(FEATURES, got, want, strict=True):
            assert g == pytest.approx(w, rel=1e-7, abs=1e-9), (name, len(naive.steps))
        checked += 1
    assert checked == 61
    assert reading.baseline_ready  # the ratio features were exercised past warm-up


def test_book_flow_matches_level_by_level_comparison() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        snaps = []
        for _ in range(2):
            nb, na = rng.integers(0, 7, size=2)
            bid_p = np.sort(rng.choice(np.arange(90, 100), size=nb, replace=False))[::-1]
            ask_p = np.sort(rng.choice(np.arange(101, 111), size=na, replace=False))
            bids = np.column_stack((bid_p, rng.uniform(0.1, 2, nb))).astype(np.float64)
            asks = np.column_stack((ask_p, rng.uniform(0.1, 2, na))).astype(np.float64)
            snaps.append((bids.reshape(-1, 2), asks.reshape(-1, 2)))
        (pb, pa), (cb, ca) = snaps
        got = book_flow(TopLevels.of(pb, pa), TopLevels.of(cb, ca))
        want = naive_flow(
            [{-p: s for p, s in pb.tolist()}, {p: s for p, s in pa.tolist()}],
            [{-p: s for p, s in cb.tolist()}, {p: s for p, s in ca.tolist()}],
        )
        assert got == pytest.approx(tuple(want), abs=1e-12)
