"""Microstructure features for the early warning, updated online on every book sample.

:class:`FeatureTracker` turns each book sample (plus the trades since the previous one
and the detector's reading of it) into one vector, in the order of :data:`FEATURES`.
Everything is O(1) in the book's size apart from one pass over the best
:data:`TOP_LEVELS` levels of each side (cancel/add flow, in the book kernel:
``bot._book_kernel.top_flow``); there is no Python loop over levels. Time is the
sample's ``ts_ns``, never the wall clock.

The arithmetic runs compiled (``bot/_bookc.c``: ``Features``, the same operations in the
same order, so the same bits) when the tracker is created under the compiled book
kernel, as a book picks its store (:mod:`bot._book_kernel`); :meth:`FeatureTracker.update`
is the reference, and runs without it (``BACKSTOP_PURE_BOOK=1`` or not built).

Averages are time-aware exponential ones (``exp(-dt / tau)`` per interval), bias
corrected like the detector's baseline (:mod:`bot.detect.baseline`), so the first
minute of a replay is a fair mean rather than a ramp from zero. Rates (per second) are
exponential-kernel sums divided by the kernel's time constant.

Every feature is side-symmetric (the worse side, or a magnitude) so that one set of
weights serves fractures on either side of the book. Depth features are relative to
the market's own history (the detector's baseline, or a 60 s average), so a model
trained on one market's scale can be read on another's.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from bot import _book_kernel
from bot._book_numpy import TopLevels as TopLevels
from bot._book_numpy import book_flow as book_flow
from bot.book import OrderBook, Side
from bot.detect.report import DetectorUpdate
from bot.feeds.events import Trade
from bot.monitor import DepthSample

FloatArray = npt.NDArray[np.float64]
_exp = math.exp
_log = math.log
_sqrt = math.sqrt
_NO_LEVELS: Final[FloatArray] = np.empty((0, 2), dtype=np.float64)

FEATURES: Final[tuple[str, ...]] = (
    "ratio_min",
    "log_ratio_min",
    "ratio_trend_fast",
    "ratio_trend_slow",
    "log_time_to_fracture",
    "band1_ratio_min",
    "band2_ratio_min",
    "band1_trend",
    "near_share_rel",
    "depth_imbalance",
    "ofi_abs",
    "cancel_rate_max",
    "net_withdraw_max",
    "spread_bps",
    "log_spread_rel",
    "spread_change",
    "vol_short_bps",
    "log_vol_ratio",
    "log_trade_rate_rel",
    "log_trade_quote_rel",
    "aggressor_toward_thin",
)
"""Feature names, in vector order. Meanings (docs/early-warning.md has the table):

* ``ratio_min``: the detector's depth / baseline in its band, on the thinner side (1
  before the baseline is ready); ``log_ratio_min`` its log.
* ``ratio_trend_fast``: ``ratio_min`` minus its 1 s average (negative while falling;
  about the slope per second, since a 1 s average lags a steady trend by 1 s);
  ``ratio_trend_slow``: the 2 s average minus the 10 s one.
* ``log_time_to_fracture``: log of the seconds ``ratio_min`` would take to reach the
  detector's fracture level at that slope (capped at 60 s; 60 when not falling).
* ``band1_ratio_min``, ``band2_ratio_min``: depth in the second and third band over
  its own 60 s average, thinner side (wider erosion).
* ``band1_trend``: ``band1_ratio_min`` minus its 2 s average (the wider band is
  steadier than the first, so a fall there stands out from the noise sooner).
* ``near_share_rel``: the first band's share of the second band's depth over its 60 s
  average, thinner side: the slope of depth across bands.
* ``depth_imbalance``: ``|bid - ask| / (bid + ask)`` in the first band.
* ``ofi_abs``: |order-flow imbalance| at the touch (Cont, Kukanov & Stoikov 2014), per
  second over 1 s, in units of the average touch size.
* ``cancel_rate_max``: size removed from the best levels and not traded, per second
  over 1 s, over the side's baseline depth, worse side; ``net_withdraw_max``: removed
  minus added, the same way.
* ``spread_bps``; ``log_spread_rel``: log of spread / its 60 s average;
  ``spread_change``: |spread - its 1 s average| / its 60 s average.
* ``vol_short_bps``: realised volatility of the mid over 2 s, bps per sqrt(s);
  ``log_vol_ratio``: log of that over the 60 s figure.
* ``log_trade_rate_rel``, ``log_trade_quote_rel``: trades per second and traded
  notional per second over 2 s against 60 s (log).
* ``aggressor_toward_thin``: (aggressor volume hitting the thinner side - the other)
  / total, over 2 s: selling into a thin bid or buying into a thin ask is positive.
"""

TOP_LEVELS: Final = 25
"""Levels per side compared between samples for the cancel/add flow ("near the top")."""

_EPS: Final = 1e-12
_MAX_TTF_S: Final = 60.0
_MIN_TTF_S: Final = 0.05
_BPS: Final = 1e4
NS_PER_S: Final = 1_000_000_000


class FeatureTracker:
    """One market's features. Call :meth:`on_trade` for its trades and :meth:`update`
    for each book sample, after the detector has read it. Not thread-safe.

    The averages are written out by hand, one float each, rather than as objects or
    numpy vectors: at about 20 of them, plain float arithmetic is the cheapest Python
    there is (a numpy call costs more than a dozen float operations). Compiled, the
    state lives in the kernel's object (``_k``) and the Python fields are not set.
    """

    __slots__ = (
        "_a",
        "_buy",
        "_buy_base",
        "_c",
        "_flow",
        "_k",
        "_last_ns",
        "_mid",
        "_n_trades",
        "_ofi",
        "_pa",
        "_pb",
        "_q",
        "_sell",
        "_sell_base",
        "_touch",
        "_traded_quote",
        "_w",
        "_wd",
        "fracture_ratio",
        "top_levels",
    )

    def __init__(self, top_levels: int = TOP_LEVELS, fracture_ratio: float = 0.3) -> None:
        self.top_levels = top_levels
        self.fracture_ratio = fracture_ratio
        """The detector's ``baseline_fraction``: where ``log_time_to_fracture`` aims."""
        self._k = _book_kernel.feature_state()
        """The compiled state and arithmetic, or None: the Python below."""
        if self._k is not None:
            return
        self._last_ns: int | None = None
        # Bias weights of the averages with time constants 1, 2, 10 and 60 s.
        self._w = [0.0, 0.0, 0.0, 0.0]
        # 60 s averages: band-1 depth (bid, ask), band-2 depth, band-0 share of band 1,
        # touch size, spread, top-level depth (bid, ask); then 1 s spread, and the 2 s,
        # 10 s and 1 s ratio; the 2 s band-1 ratio.
        self._a = [0.0] * 16
        # Kernel sums: squared returns (2 s, 60 s), trades (2 s, 60 s), traded quote
        # (2 s, 60 s).
        self._q = [0.0] * 6
        self._ofi = 0.0
        self._c = [0.0, 0.0]  # cancels per side, 1 s kernel
        self._wd = [0.0, 0.0]  # cancels - adds per side, 1 s kernel
        self._buy = 0.0
        self._sell = 0.0
        self._n_trades = 0
        self._traded_quote = 0.0
        self._buy_base = 0.0
        self._sell_base = 0.0
        self._mid = 0.0
        self._touch: tuple[float, float, float, float] | None = None
        # The previous sample's best levels, and the kernel's flow between two reads
        # (one C call: the numpy version was ~10 array calls per sample).
        self._pb = self._pa = _NO_LEVELS
        self._flow = _book_kernel.top_flow()

    @property
    def last_ns(self) -> int | None:
        """The latest reading's ``ts_ns`` (a late reading leaves it), None before any."""
        return self._last_ns if self._k is None else self._k.last_ns

    @last_ns.setter
    def last_ns(self, ts_ns: int | None) -> None:
        if self._k is None:
            self._last_ns = ts_ns
        else:
            self._k.last_ns = ts_ns

    def on_trade(self, trade: Trade) -> None:
        if self._k is not None:
            self._k.on_trade(trade)
            return
        self._n_trades += 1
        self._traded_quote += trade.price * trade.amount
        if trade.side == "buy":
            self._buy_base += trade.amount
        else:
            self._sell_base += trade.amount

    def levels(self, book: OrderBook) -> tuple[FloatArray, FloatArray]:
        """The book's best levels this tracker compares (fresh arrays: bids, asks)."""
        n = self.top_levels
        return book.top(n, Side.BID), book.top(n, Side.ASK)

    def update(
        self,
        book: OrderBook,
        sample: DepthSample,
        reading: DetectorUpdate,
        top: tuple[FloatArray, FloatArray] | None = None,
    ) -> list[float]:
        """The feature vector for this sample (see :data:`FEATURES`).

        ``top``: :meth:`levels` of ``book`` taken at the sample, when the update runs
        later (the book may have moved on by then)."""
        compiled = self._k
        if compiled is not None:
            bids, asks = top if top is not None else self.levels(book)
            return compiled.update(
                reading.ts_ns,
                reading.ratio,
                reading.baseline_ready,
                sample.depth,
                sample.mid,
                sample.spread_bps,
                bids,
                asks,
                self.fracture_ratio,
            )
        # The reference: bot/_bookc.c's Features.update performs these operations in
        # this order (the state too), so a change here is a change there.
        ts = reading.ts_ns
        last = self._last_ns
        dt = (ts - last) / NS_PER_S if last is not None and ts > last else 0.0
        self._last_ns = ts if last is None or ts > last else last
        k1, k2, k10, k60 = _exp(-dt), _exp(-dt / 2.0), _exp(-dt / 10.0), _exp(-dt / 60.0)
        j1, j2, j10, j60 = 1.0 - k1, 1.0 - k2, 1.0 - k10, 1.0 - k60
        w = self._w
        w[0] = k1 * w[0] + j1
        w[1] = k2 * w[1] + j2
        w[2] = k10 * w[2] + j10
        w[3] = k60 * w[3] + j60
        w1, w2, w10, w60 = w
        a = self._a

        # The detector's ratio, thinner side, and its trend.
        rb, ra = reading.ratio
        ratio = 1.0
        thin_bid = False
        if rb is not None and ra is not None:
            thin_bid = rb <= ra
            if reading.baseline_ready:
                ratio = rb if thin_bid else ra
        a[12] = k2 * a[12] + j2 * ratio
        a[13] = k10 * a[13] + j10 * ratio
        a[14] = k1 * a[14] + j1 * ratio
        r2 = a[12] / w2 if w2 > 0.0 else ratio
        r10 = a[13] / w10 if w10 > 0.0 else ratio
        trend = ratio - (a[14] / w1 if w1 > 0.0 else ratio)
        ttf = _MAX_TTF_S
        if trend < 0.0:
            ttf = min(max(ratio - self.fracture_ratio, 0.0) / -trend, _MAX_TTF_S)

        # Depth across bands (quote notional per side and band), each over its 60 s mean.
        d = sample.depth.tolist()
        b0, a0 = d[0][0][1], d[1][0][1]
        nb = len(d[0])
        b1, a1 = (d[0][1][1], d[1][1][1]) if nb > 1 else (b0, a0)
        b2, a2 = (d[0][2][1], d[1][2][1]) if nb > 2 else (b1, a1)
        sb = b0 / b1 if b1 > 0.0 else 1.0
        sa = a0 / a1 if a1 > 0.0 else 1.0
        for i, x in enumerate((b1, a1, b2, a2, sb, sa)):
            a[i] = k60 * a[i] + j60 * x
        band1 = min(_rel(b1, a[0], w60), _rel(a1, a[1], w60))
        band2 = min(_rel(b2, a[2], w60), _rel(a2, a[3], w60))
        a[15] = k2 * a[15] + j2 * band1
        band1_trend = band1 - (a[15] / w2 if w2 > 0.0 else band1)
        near = min(_rel(sb, a[4], w60), _rel(sa, a[5], w60))
        imbalance = abs(b0 - a0) / (b0 + a0) if b0 + a0 > 0.0 else 0.0

        # The touch and the best levels: order-flow imbalance, cancels and adds.
        bids, asks = top if top is not None else self.levels(book)
        size_b, size_a, rem_b, add_b, rem_a, add_a = self._flow(self._pb, self._pa, bids, asks)
        mid = sample.mid
        touch = (
            bids.item(0, 0) if bids.shape[0] else 0.0,
            bids.item(0, 1) if bids.shape[0] else 0.0,
            asks.item(0, 0) if asks.shape[0] else 0.0,
            asks.item(0, 1) if asks.shape[0] else 0.0,
        )
        top_b = size_b * mid
        top_a = size_a * mid
        prev = self._touch
        ofi = 0.0
        can_b = can_a = wd_b = wd_a = 0.0
        if prev is not None:
            pbp, pbs, pap, pas = prev
            bp, bsz, ap, asz = touch
            ofi = (
                (bsz if bp >= pbp else 0.0)
                - (pbs if bp <= pbp else 0.0)
                - (asz if ap <= pap else 0.0)
                + (pas if ap >= pap else 0.0)
            )
            # Sells hit bids, buys lift asks: what traded is not a cancel.
            can_b = max(rem_b - self._sell_base, 0.0) * mid
            can_a = max(rem_a - self._buy_base, 0.0) * mid
            wd_b = can_b - add_b * mid
            wd_a = can_a - add_a * mid
        self._touch = touch
        self._pb, self._pa = bids, asks
        a[6] = k60 * a[6] + j60 * (touch[1] + touch[3]) / 2.0
        a[8] = k60 * a[8] + j60 * top_b
        a[9] = k60 * a[9] + j60 * top_a
        self._ofi = k1 * self._ofi + ofi
        per_s1 = 1.0 / w1 if w1 > 0.0 else 0.0  # 1 s kernel sum -> per second
        touch_avg = a[6] / w60 if w60 > 0.0 else 0.0
        ofi_abs = abs(self._ofi) * per_s1 / touch_avg if touch_avg > 0.0 else 0.0
        # Cancels and adds over the side's 60 s mean of the same top-level depth.
        scale_b = a[8] / w60 if w60 > 0.0 and a[8] > 0.0 else (top_b or 1.0)
        scale_a = a[9] / w60 if w60 > 0.0 and a[9] > 0.0 else (top_a or 1.0)
        c, wd = self._c, self._wd
        c[0] = k1 * c[0] + can_b / scale_b
        c[1] = k1 * c[1] + can_a / scale_a
        wd[0] = k1 * wd[0] + wd_b / scale_b
        wd[1] = k1 * wd[1] + wd_a / scale_a
        cancel_max = max(c[0], c[1]) * per_s1
        withdraw_max = max(wd[0], wd[1]) * per_s1

        # Spread.
        spread = sample.spread_bps
        a[7] = k60 * a[7] + j60 * spread
        a[10] = k1 * a[10] + j1 * spread
        s60 = max(a[7] / w60 if w60 > 0.0 else spread, _EPS)
        s1 = a[10] / w1 if w1 > 0.0 else spread
        spread_rel = _log(max(spread, _EPS) / s60)
        spread_change = abs(spread - s1) / s60

        # Realised volatility of the mid (kernel sums of squared bps returns).
        pmid = self._mid
        ret = (mid - pmid) / pmid * _BPS if pmid > 0.0 else 0.0
        self._mid = mid
        q = self._q
        sq = ret * ret
        q[0] = k2 * q[0] + sq
        q[1] = k60 * q[1] + sq
        # Trades since the previous sample: intensity and who is aggressing.
        nt, tq = float(self._n_trades), self._traded_quote
        q[2] = k2 * q[2] + nt
        q[3] = k60 * q[3] + nt
        q[4] = k2 * q[4] + tq
        q[5] = k60 * q[5] + tq
        self._buy = k2 * self._buy + self._buy_base * mid
        self._sell = k2 * self._sell + self._sell_base * mid
        self._n_trades = 0
        self._traded_quote = self._buy_base = self._sell_base = 0.0
        per_s2 = 1.0 / (2.0 * w2) if w2 > 0.0 else 0.0
        per_s60 = 1.0 / (60.0 * w60) if w60 > 0.0 else 0.0
        vol_short = _sqrt(q[0] * per_s2)
        vol_ratio = _log((vol_short + 0.1) / (_sqrt(q[1] * per_s60) + 0.1))
        trade_rel = _log((q[2] * per_s2 + 0.1) / (q[3] * per_s60 + 0.1))
        quote_rel = _log((q[4] * per_s2 + 1.0) / (q[5] * per_s60 + 1.0))
        buy, sell = self._buy, self._sell
        total = buy + sell
        toward = 0.0
        if total > 0.0:
            toward = (sell - buy) / total if thin_bid else (buy - sell) / total

        return [
            ratio,
            _log(max(ratio, 1e-3)),
            trend,
            r2 - r10,
            _log(max(ttf, _MIN_TTF_S)),
            band1,
            band2,
            band1_trend,
            near,
            imbalance,
            ofi_abs,
            cancel_max,
            withdraw_max,
            spread,
            spread_rel,
            spread_change,
            vol_short,
            vol_ratio,
            trade_rel,
            quote_rel,
            toward,
        ]


def _rel(x: float, avg_sum: float, weight: float) -> float:
    """``x`` over its (bias-corrected) average; 1 when there is no history yet."""
    mean = avg_sum / weight if weight > 0.0 else x
    return x / mean if mean > 0.0 else 1.0
