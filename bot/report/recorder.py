"""What a report is drawn from: compact, bounded time series per market.

:class:`ReportRecorder` is an engine listener (book samples, trades) with three more
hooks the trading loop calls: :meth:`~ReportRecorder.on_detector` (every detector
reading), :meth:`~ReportRecorder.on_notice` (order-manager notices: our quotes placed
and gone, our fills) and :meth:`~ReportRecorder.on_inventory` (inventory, committed
collateral, PnL and fees after each sample).

Memory stays bounded however long the run (a 10-minute replay or a day-long daemon):

- Every reading first waits in a short *tail* of the last ``margin_s`` (30 s) of data
  time, at full resolution. Only when it is older than that is it kept or thinned,
  because only then is it known whether an episode began within ``margin_s`` after it.
- Readings within ``margin_s`` before an episode's start, during the episode and
  ``margin_s`` after its end are kept at up to one per ``fine_step_s`` (50 ms: every
  sample of a 100 ms exchange feed).
- Anything else is thinned to at most one reading per ``coarse_step_s`` (1 s), the
  first of each second of data time (a brief dip outside an episode can be missed).
- Our quotes and fills are always kept near episodes; elsewhere (a market maker
  quoting all day) the first ``max_outside_events`` per market are kept and the rest
  only counted.

So a market holds about ``run_s / coarse_step_s + episode_window_s / fine_step_s``
points per series plus a tail of ``margin_s`` x update rate: the bundled 11-minute
recording (6,500 book samples) with one 84-second episode keeps about 2,200 per series,
and a calm day about 86,400 (some 20 MB over the three series).

"Episode" here is the detector's active period (ENGAGED or RECOVERING), which is exactly
what :class:`~bot.episodes.EpisodeTracker` records as an episode. Time is data time
(``ts_ns`` of the readings), never the wall clock; a reading stamped earlier than one
already seen for its market (released from a resync buffer) counts as simultaneous.
"""

from __future__ import annotations

from array import array
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from bot.book import OrderBook
from bot.detect.config import DetectorConfig
from bot.detect.machine import DetectorState
from bot.detect.report import DetectorUpdate
from bot.feeds.events import Trade
from bot.monitor import DepthSample
from bot.orders.events import OrderFilled, OrderNotice, OrderStateChanged
from bot.orders.state import TERMINAL_STATES
from strategies.base import InventoryView

if TYPE_CHECKING:
    from bot.settings import MarketSettings

NS_PER_S = 1_000_000_000
_NAN = float("nan")

STATE_CODES: dict[DetectorState, int] = {
    DetectorState.CALM: 0,
    DetectorState.ARMING: 1,
    DetectorState.ENGAGED: 2,
    DetectorState.RECOVERING: 3,
}
"""Detector state as stored in the ``state`` column of the detector series."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class OrderInfo(Protocol):
    """What a quote's drawing needs from the order (``TrackedOrder`` has these)."""

    @property
    def side(self) -> str: ...

    @property
    def price(self) -> float: ...

    @property
    def amount(self) -> float: ...

    @property
    def tag(self) -> str: ...


OrderLookup = Callable[[str], OrderInfo | None]


@dataclass(slots=True)
class QuoteMark:
    """One of our orders on the price chart: a horizontal segment while it rested."""

    client_id: str
    side: str
    price: float
    amount: float
    tag: str
    placed_ns: int
    ended_ns: int | None = None
    """When it reached a terminal state (filled, canceled, rejected); None while live."""
    end_state: str | None = None


@dataclass(frozen=True, slots=True)
class FillMark:
    ts_ns: int
    client_id: str
    side: str
    price: float
    amount: float


@dataclass(slots=True)
class StateSpan:
    """A stretch of one active detector state (ENGAGED or RECOVERING)."""

    state: DetectorState
    start_ns: int
    end_ns: int | None = None


class Series:
    """Append-only columns of floats against int64 data time, in compact arrays."""

    __slots__ = ("_cols", "_ts", "names")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._ts = array("q")
        self._cols = [array("d") for _ in self.names]

    def __len__(self) -> int:
        return len(self._ts)

    def append(self, ts_ns: int, values: Sequence[float]) -> None:
        self._ts.append(ts_ns)
        for col, v in zip(self._cols, values, strict=True):
            col.append(v)

    @property
    def ts(self) -> IntArray:
        return np.frombuffer(self._ts, dtype=np.int64).copy() if self._ts else _EMPTY_I

    def column(self, name: str) -> FloatArray:
        col = self._cols[self.names.index(name)]
        return np.frombuffer(col, dtype=np.float64).copy() if col else _EMPTY_F


_EMPTY_I: IntArray = np.zeros(0, dtype=np.int64)
_EMPTY_F: FloatArray = np.zeros(0, dtype=np.float64)


@dataclass(slots=True)
class _Channel:
    """One series behind its full-resolution tail."""

    kept: Series
    tail: deque[tuple[int, tuple[float, ...]]] = field(default_factory=deque)
    last_kept_ns: int | None = None


@dataclass(frozen=True, slots=True)
class View:
    """One series as drawn: the kept points followed by the tail (all of it)."""

    names: tuple[str, ...]
    ts: IntArray
    columns: dict[str, FloatArray]

    def __len__(self) -> int:
        return len(self.ts)

    def __getitem__(self, name: str) -> FloatArray:
        return self.columns[name]

    def between(self, lo_ns: int, hi_ns: int) -> View:
        mask = (self.ts >= lo_ns) & (self.ts <= hi_ns)
        return View(self.names, self.ts[mask], {k: v[mask] for k, v in self.columns.items()})


def book_row(sample: DepthSample) -> tuple[float, ...]:
    """``book`` columns: bid, ask, mid, spread, then quote depth per band, bids then asks."""
    quote_depth = sample.depth[:, :, 1]
    return (
        sample.best_bid,
        sample.best_ask,
        sample.mid,
        sample.spread_bps,
        *(float(x) for x in quote_depth[0]),
        *(float(x) for x in quote_depth[1]),
    )


def detector_row(update: DetectorUpdate, config: DetectorConfig | None) -> tuple[float, ...]:
    """``detector`` columns, with the fracture and recovery levels from ``config``."""
    frac = config.baseline_fraction if config is not None else None
    rec = config.recovery_fraction if config is not None else None
    threshold = [_NAN, _NAN]
    recovery = [_NAN, _NAN]
    if update.baseline_ready:
        for i, base in enumerate(update.baseline):
            if base is not None:
                threshold[i] = base * frac if frac is not None else _NAN
                recovery[i] = base * rec if rec is not None else _NAN
    return (
        update.depth[0],
        update.depth[1],
        threshold[0],
        threshold[1],
        recovery[0],
        recovery[1],
        float(STATE_CODES[update.state]),
        update.health,
        update.spread_bps,
    )


def inventory_row(view: InventoryView, committed_quote: float) -> tuple[float, ...]:
    return (
        view.base,
        view.quote,
        view.net_base,
        committed_quote,
        view.marked_pnl,
        view.realised_pnl,
        view.fees_quote,
    )


class MarketTrace:
    """One market's recorded history. Not thread-safe; fed in event order."""

    def __init__(
        self,
        symbol: str,
        config: DetectorConfig | None,
        *,
        margin_ns: int,
        fine_ns: int,
        coarse_ns: int,
        max_outside_events: int,
    ) -> None:
        self.symbol = symbol
        self.config = config
        self._margin = margin_ns
        self._fine = fine_ns
        self._coarse = coarse_ns
        self._max_outside = max_outside_events
        self.bands_bps: tuple[float, ...] = ()
        # "book" joins these on the first sample, when the bands are known.
        self.channels: dict[str, _Channel] = {
            "detector": _Channel(
                Series(
                    (
                        "depth_bid",
                        "depth_ask",
                        "threshold_bid",
                        "threshold_ask",
                        "recovery_bid",
                        "recovery_ask",
                        "state",
                        "health",
                        "spread_bps",
                    )
                )
            ),
            "inventory": _Channel(
                Series(
                    (
                        "base",
                        "quote",
                        "net_base",
                        "committed_quote",
                        "marked_pnl",
                        "realised_pnl",
                        "fees_quote",
                    )
                )
            ),
        }
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.spans: list[StateSpan] = []
        self.quotes: list[QuoteMark] = []
        self.fills: list[FillMark] = []
        self.seen: Counter[str] = Counter()
        self.dropped_events = 0
        """Quotes and fills away from any episode not kept (past ``max_outside_events``)."""
        self._outside_events = 0
        self._event_tail: deque[tuple[int, QuoteMark | FillMark]] = deque()
        self._live: dict[str, QuoteMark] = {}
        # Keep-fine windows [lo, hi] of data time; hi is None while the episode lasts.
        self._windows: deque[list[int | None]] = deque()
        self._active = False

    # ------------------------------------------------------------------ time

    def _now(self, ts_ns: int) -> int:
        last = self.last_ns
        now = ts_ns if last is None or ts_ns > last else last
        if self.first_ns is None:
            self.first_ns = now
        self.last_ns = now
        return now

    def _fine_at(self, ts_ns: int) -> bool:
        """Whether ``ts_ns`` (leaving a tail, so older than ``margin``) is near an episode."""
        for lo, hi in self._windows:
            assert lo is not None
            if lo <= ts_ns and (hi is None or ts_ns <= hi):
                return True
        return False

    def _advance(self, now: int) -> None:
        """Move everything older than ``margin`` out of the tails: kept or thinned."""
        cutoff = now - self._margin
        for ch in self.channels.values():
            tail = ch.tail
            while tail and tail[0][0] < cutoff:
                ts, values = tail.popleft()
                self._keep_or_thin(ch, ts, values)
        events = self._event_tail
        while events and events[0][0] < cutoff:
            ts, mark = events.popleft()
            self._keep_event(ts, mark)
        # Every tail now starts at or after the cutoff: windows ended before it are done.
        windows = self._windows
        while windows and windows[0][1] is not None and windows[0][1] < cutoff:
            windows.popleft()

    def _keep_or_thin(self, ch: _Channel, ts: int, values: tuple[float, ...]) -> None:
        step = self._fine if self._fine_at(ts) else self._coarse
        last = ch.last_kept_ns
        if last is None or step <= 0 or ts // step != last // step:
            ch.kept.append(ts, values)
            ch.last_kept_ns = ts

    def _keep_event(self, ts: int, mark: QuoteMark | FillMark) -> None:
        if not self._fine_at(ts):
            if self._outside_events >= self._max_outside:
                self.dropped_events += 1
                return
            self._outside_events += 1
        if isinstance(mark, QuoteMark):
            self.quotes.append(mark)
        else:
            self.fills.append(mark)

    def _push(self, name: str, ts_ns: int, values: tuple[float, ...]) -> None:
        now = self._now(ts_ns)
        self.channels[name].tail.append((now, values))
        self._advance(now)

    # ------------------------------------------------------------------ input

    def on_sample(self, sample: DepthSample) -> None:
        self.seen["samples"] += 1
        self.push_book(sample.ts_ns, tuple(sample.bands_bps), book_row(sample))

    def push_book(
        self, ts_ns: int, bands_bps: tuple[float, ...], values: tuple[float, ...]
    ) -> None:
        """One ``book`` row (see :func:`book_row`); the first one fixes the bands."""
        if "book" not in self.channels:
            self.bands_bps = bands_bps
            names = ["bid", "ask", "mid", "spread_bps"]
            names += [f"{side}_{i}" for side in ("bid", "ask") for i in range(len(self.bands_bps))]
            self.channels["book"] = _Channel(Series(names))
        if len(values) != len(self.channels["book"].kept.names):
            self.seen["samples_with_other_bands"] += 1  # bands are fixed for a run
            return
        self._push("book", ts_ns, values)

    def on_detector(self, update: DetectorUpdate) -> None:
        self.seen["detector_updates"] += 1
        self.push_detector(update.ts_ns, update.state, detector_row(update, self.config))

    def push_detector(self, ts_ns: int, state: DetectorState, values: tuple[float, ...]) -> None:
        """One ``detector`` row (see :func:`detector_row`) in detector state ``state``."""
        now = self._now(ts_ns)
        self._track_state(state, now)
        self._push("detector", now, values)

    def _track_state(self, state: DetectorState, now: int) -> None:
        active = state.active
        if active and not self._active:
            lo = now - self._margin
            last = self._windows[-1] if self._windows else None
            if last is not None and last[1] is not None and last[1] >= lo:
                last[1] = None  # within the margin of the previous one: one window
            else:
                self._windows.append([lo, None])
        elif self._active and not active:
            self._windows[-1][1] = now + self._margin
        self._active = active
        span = self.spans[-1] if self.spans and self.spans[-1].end_ns is None else None
        if span is not None and span.state is not state:
            span.end_ns = now
            span = None
        if span is None and active:
            self.spans.append(StateSpan(state, now))

    def on_inventory(self, ts_ns: int, view: InventoryView, committed_quote: float) -> None:
        self.seen["inventory_updates"] += 1
        self.push_inventory(ts_ns, inventory_row(view, committed_quote))

    def push_inventory(self, ts_ns: int, values: tuple[float, ...]) -> None:
        """One ``inventory`` row (see :func:`inventory_row`)."""
        self._push("inventory", ts_ns, values)

    def on_notice(self, notice: OrderNotice, order: OrderInfo | None) -> None:
        self.seen["notices"] += 1
        if isinstance(notice, OrderFilled):
            self.add_fill(
                FillMark(notice.ts_ns, notice.client_id, notice.side, notice.price, notice.amount)
            )
        elif isinstance(notice, OrderStateChanged):
            placed: QuoteMark | None = None
            if notice.previous is None and order is not None:
                placed = QuoteMark(
                    client_id=notice.client_id,
                    side=str(order.side),
                    price=float(order.price),
                    amount=float(order.amount),
                    tag=order.tag,
                    placed_ns=notice.ts_ns,
                )
            elif notice.previous is None:
                self.seen["quotes"] += 1
                self.seen["quotes_without_order"] += 1  # no price to draw it at
            self.order_changed(
                notice.ts_ns,
                notice.client_id,
                placed=placed,
                terminal_state=notice.state.value if notice.state in TERMINAL_STATES else None,
            )

    def add_fill(self, fill: FillMark) -> None:
        self.seen["fills"] += 1
        now = self._now(fill.ts_ns)
        if now != fill.ts_ns:
            fill = FillMark(now, fill.client_id, fill.side, fill.price, fill.amount)
        self._event_tail.append((now, fill))
        self._advance(now)

    def order_changed(
        self,
        ts_ns: int,
        client_id: str,
        *,
        placed: QuoteMark | None = None,
        terminal_state: str | None = None,
    ) -> None:
        """An order of ours was placed (``placed``: its mark) and/or ended."""
        now = self._now(ts_ns)
        if placed is not None:
            self.seen["quotes"] += 1
            placed.placed_ns = now
            self._live[client_id] = placed
            self._event_tail.append((now, placed))
        if terminal_state is not None:
            live = self._live.pop(client_id, None)
            if live is not None:
                live.ended_ns = now
                live.end_state = terminal_state
        self._advance(now)

    # ------------------------------------------------------------------ output

    def view(self, name: str) -> View:
        """``name`` (``book``, ``detector``, ``inventory``): kept points, then the tail."""
        ch = self.channels.get(name)
        if ch is None:
            return View((), _EMPTY_I, {})
        kept = ch.kept
        tail_ts = np.array([t for t, _ in ch.tail], dtype=np.int64)
        ts = np.concatenate([kept.ts, tail_ts]) if len(tail_ts) else kept.ts
        columns: dict[str, FloatArray] = {}
        for i, n in enumerate(kept.names):
            tail_col = np.array([v[i] for _, v in ch.tail], dtype=np.float64)
            col = kept.column(n)
            columns[n] = np.concatenate([col, tail_col]) if len(tail_col) else col
        return View(kept.names, ts, columns)

    def all_quotes(self) -> list[QuoteMark]:
        return [*self.quotes, *(m for _, m in self._event_tail if isinstance(m, QuoteMark))]

    def all_fills(self) -> list[FillMark]:
        return [*self.fills, *(m for _, m in self._event_tail if isinstance(m, FillMark))]

    def points(self) -> int:
        """Rows held now (kept and in the tails), quotes and fills included."""
        rows = sum(len(ch.kept) + len(ch.tail) for ch in self.channels.values())
        return rows + len(self.quotes) + len(self.fills) + len(self._event_tail)


class ReportRecorder:
    """Engine listener (plus detector, order and inventory hooks) feeding the report.

    ``detectors`` gives each market's detector settings (for the fracture threshold,
    ``baseline x baseline_fraction``, and the recovery level); a market not in it is
    still recorded, without those lines. ``order_lookup`` (e.g. ``OrderManager.get``)
    finds a new order's side and price when :meth:`on_notice` is not handed the order.
    """

    def __init__(
        self,
        detectors: Mapping[str, DetectorConfig] | None = None,
        *,
        order_lookup: OrderLookup | None = None,
        margin_s: float = 30.0,
        fine_step_s: float = 0.05,
        coarse_step_s: float = 1.0,
        max_outside_events: int = 2000,
    ) -> None:
        if not (margin_s >= 0 and fine_step_s >= 0 and coarse_step_s > 0):
            raise ValueError("margin_s and fine_step_s must be >= 0, coarse_step_s > 0")
        if max_outside_events < 0:
            raise ValueError("max_outside_events must be >= 0")
        self.detectors = dict(detectors or {})
        self.order_lookup = order_lookup
        self.margin_s = margin_s
        self._margin_ns = round(margin_s * NS_PER_S)
        self._fine_ns = round(fine_step_s * NS_PER_S)
        self._coarse_ns = round(coarse_step_s * NS_PER_S)
        self._max_outside = max_outside_events
        self.markets: dict[str, MarketTrace] = {}
        self.trades = 0
        self.skip: set[str] = set()
        """Markets not drawn (option books: the option desk reports their episodes)."""
        self.appendix: list[Callable[[], str]] = []
        """Report sections drawn by others (escaped HTML), after the episodes: the
        option desk's episode table."""

    @classmethod
    def from_markets(
        cls, markets: Sequence[MarketSettings], *, order_lookup: OrderLookup | None = None
    ) -> ReportRecorder:
        """A recorder with each market's detector settings and the default thinning."""
        detectors = {m.symbol: DetectorConfig.from_market(m) for m in markets}
        return cls(detectors, order_lookup=order_lookup)

    def market(self, symbol: str) -> MarketTrace:
        trace = self.markets.get(symbol)
        if trace is None:
            trace = self.markets[symbol] = MarketTrace(
                symbol,
                self.detectors.get(symbol),
                margin_ns=self._margin_ns,
                fine_ns=self._fine_ns,
                coarse_ns=self._coarse_ns,
                max_outside_events=self._max_outside,
            )
        return trace

    # ------------------------------------------------------------ engine listener

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        if symbol in self.skip:
            return
        self.market(symbol).on_sample(sample)

    def on_trade(self, trade: Trade) -> None:
        self.trades += 1  # public trades are not drawn; counted for the run table

    # ------------------------------------------------------------ trading-loop hooks

    def on_detector(self, symbol: str, update: DetectorUpdate) -> None:
        self.market(symbol).on_detector(update)

    def on_notice(self, notice: OrderNotice, order: OrderInfo | None = None) -> None:
        if notice.symbol in self.skip:
            return
        if order is None and self.order_lookup is not None and notice.client_id:
            order = self.order_lookup(notice.client_id)
        self.market(notice.symbol).on_notice(notice, order)

    def on_inventory(
        self, symbol: str, ts_ns: int, inventory: InventoryView, committed_quote: float
    ) -> None:
        self.market(symbol).on_inventory(ts_ns, inventory, committed_quote)

    # ------------------------------------------------------------ numbers

    def events_seen(self) -> int:
        """Readings handed in (samples, detector and inventory updates, notices, trades)."""
        total = self.trades
        for trace in self.markets.values():
            seen = trace.seen
            total += (
                seen["samples"]
                + seen["detector_updates"]
                + seen["inventory_updates"]
                + seen["notices"]
            )
        return total

    def points(self) -> int:
        """Points held for the report, over every market."""
        return sum(trace.points() for trace in self.markets.values())
