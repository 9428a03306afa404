"""The depth history the dashboard's live charts start from.

An engine listener: it keeps, per market, one point per ``step_s`` of data time (depth
per band and side, mid, spread, the fracture thresholds) in a bounded ring, so a page
opened mid-episode shows the last minutes at once and the live stream only sends what
is new. Every other book update returns after one comparison: the engine calls this on
its hot path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.book import OrderBook
from bot.clock import NS_PER_SECOND
from bot.feeds.events import Trade
from bot.monitor import DepthSample

Thresholds = Callable[[str], tuple[float | None, float | None]]
"""symbol -> (bid, ask) quote depth below which the first band counts as fractured."""

DEFAULT_STEP_S = 1.0
DEFAULT_KEEP = 900
"""Points kept per market: 15 minutes at one point per second of data."""


@dataclass(frozen=True, slots=True)
class DepthPoint:
    seq: int
    """Increasing over all markets: what a stream has already sent."""
    ts_ns: int
    mid: float
    spread_bps: float
    bid: tuple[float, ...]
    """Quote depth within each band on the bid side."""
    ask: tuple[float, ...]
    threshold_bid: float | None
    threshold_ask: float | None


class DepthHistory:
    def __init__(
        self,
        thresholds: Thresholds | None = None,
        *,
        step_s: float = DEFAULT_STEP_S,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        if step_s <= 0 or keep < 1:
            raise ValueError("step_s must be > 0 and keep >= 1")
        self._thresholds = thresholds
        self._step_ns = round(step_s * NS_PER_SECOND)
        self._keep = keep
        self._points: dict[str, deque[DepthPoint]] = {}
        self._bands: dict[str, tuple[float, ...]] = {}
        self._last_ns: dict[str, int] = {}
        self._seq = 0

    # ---- the engine's listener --------------------------------------------------------

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        last = self._last_ns.get(symbol)
        if last is not None and sample.ts_ns - last < self._step_ns:
            return
        self._last_ns[symbol] = sample.ts_ns
        thr = self._thresholds(symbol) if self._thresholds is not None else (None, None)
        self._seq += 1
        n = len(sample.bands_bps)
        point = DepthPoint(
            seq=self._seq,
            ts_ns=sample.ts_ns,
            mid=sample.mid,
            spread_bps=sample.spread_bps,
            bid=tuple(float(sample.depth[0, i, 1]) for i in range(n)),
            ask=tuple(float(sample.depth[1, i, 1]) for i in range(n)),
            threshold_bid=thr[0],
            threshold_ask=thr[1],
        )
        ring = self._points.get(symbol)
        if ring is None or self._bands.get(symbol) != sample.bands_bps:
            ring = self._points[symbol] = deque(maxlen=self._keep)
            self._bands[symbol] = sample.bands_bps
        ring.append(point)

    def on_trade(self, trade: Trade) -> None:
        return None

    # ---- reading ------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The latest point's sequence number (0: none yet)."""
        return self._seq

    @property
    def latest_ns(self) -> int | None:
        """Data time of the newest point of any market (the daemon's "now")."""
        return max(self._last_ns.values(), default=None)

    def symbols(self) -> list[str]:
        return list(self._points)

    def since(self, symbol: str, seq: int) -> list[DepthPoint]:
        """The points of ``symbol`` newer than ``seq``, oldest first."""
        ring = self._points.get(symbol)
        if not ring:
            return []
        out: list[DepthPoint] = []
        for point in reversed(ring):
            if point.seq <= seq:
                break
            out.append(point)
        out.reverse()
        return out

    def columns(self, symbol: str, seq: int = 0) -> dict[str, Any]:
        """The points newer than ``seq`` as columns, the way the page's charts take them:
        ``t`` (unix seconds), ``mid``, ``spread_bps``, ``bid``/``ask`` (one list per
        band), ``threshold_bid``/``threshold_ask`` (the first band's)."""
        bands = self._bands.get(symbol, ())
        points = self.since(symbol, seq)
        return {
            "bands_bps": list(bands),
            "t": [p.ts_ns / NS_PER_SECOND for p in points],
            "mid": [p.mid for p in points],
            "spread_bps": [p.spread_bps for p in points],
            "bid": [[p.bid[i] for p in points] for i in range(len(bands))],
            "ask": [[p.ask[i] for p in points] for i in range(len(bands))],
            "threshold_bid": [p.threshold_bid for p in points],
            "threshold_ask": [p.threshold_ask for p in points],
        }
