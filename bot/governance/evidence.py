"""The market data behind every decision of an episode, journaled so it can be re-run.

An *evidence window* covers an episode: it opens on the detector reading that leaves
CALM (or on which the strategy first wants quotes: replenishment) and closes on the
first CALM reading where the strategy wants none. Inside it every reading is one
``decision`` record: the depth sample, the top ``top_levels`` book levels per side,
our own quote depth the detector discounts, the public trades since the previous
reading, the inventory and budget the strategy saw, and what came out of each stage
(detector state and transition, the strategy's quotes, the budget's fit, what the risk
engine allowed). The record is appended before the order manager acts on it, so the
orders it causes follow it in the journal.

A detector's verdict depends on its whole history, so the window starts from a
*checkpoint*: while no window is open, the detector's exact state (and the ladder the
strategy holds) is copied in memory every ``checkpoint_s`` of data time, and the
readings since are kept in compact form. The ``evidence`` record that opens a window
carries that checkpoint, those readings, the detector config, the budget limits and
market rules: everything ``backstop audit replay`` (:mod:`bot.governance.replay`) needs
to re-run the detector and strategy and compare.

Cost: nothing is journaled while calm (a copy of the detector every ``checkpoint_s``
and a few numbers per reading in memory); inside a window about 1.5 KB of JSON per
reading, 2.1-2.3 KB on disk with the row, its hashes and indexes
(docs/governance.md has the measured figures).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.book import OrderBook, Side
from bot.detect.machine import DetectorState
from bot.governance import detectors, snapshot
from bot.journal import records as rk

if TYPE_CHECKING:
    from bot.budget import Budget, Exposure
    from bot.detector import DetectorUpdate, FractureDetector
    from bot.feeds.events import Trade
    from bot.governance.gate import GovernedStrategy
    from bot.journal.writer import Journal
    from bot.monitor import DepthSample
    from strategies.base import InventoryView, MarketContext, MarketRules, Quote

NS_PER_S = 1_000_000_000
MAX_TRADES_PER_READING = 500
"""More trades than this between two readings are cut (and the cut is counted)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One detector reading of one market and what the trader did with it."""

    symbol: str
    sample: DepthSample
    book: OrderBook
    own: tuple[float, float]
    update: DetectorUpdate
    inventory: InventoryView
    rules: MarketRules
    skipped: str | None = None
    """Why the strategy was not asked (halted, paused, journal backpressure)."""
    exposure: Exposure | None = None
    context: MarketContext | None = None
    """What the strategy was given (its risk-state fields are journaled when set)."""
    quotes: tuple[Quote, ...] = ()
    """The strategy's decision (the policy gate applied)."""
    fitted: tuple[Quote, ...] = ()
    """After the budget's caps."""
    allowed: tuple[Quote, ...] = ()
    """After the risk engine: what the order manager is asked to rest."""


def quote_row(q: Quote) -> list[Any]:
    return [q.side, q.price, q.amount, q.post_only, q.tag]


def _same(a: tuple[Quote, ...], b: tuple[Quote, ...]) -> bool:
    """The same quote objects, in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def field_values(obj: object, names: tuple[str, ...]) -> list[Any]:
    if len(names) < 2:  # attrgetter of one name answers the value, not a tuple
        return [_plain(getattr(obj, n)) for n in names]
    get = _GETTERS.get(names)
    if get is None:
        get = _GETTERS[names] = operator.attrgetter(*names)
    # Numbers and None, almost always: the Mapping check (an ABC's) only for the rest.
    return [v if type(v) in _SCALARS else _plain(v) for v in get(obj)]


_GETTERS: dict[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] = {}
"""Field names -> their getter: one call reads them all."""


_SCALARS = frozenset({float, int, bool, str, type(None)})
"""Types that are never a Mapping: :func:`_plain` leaves them as they are."""


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return value


def field_names(cls: type[Any], *, skip: frozenset[str] = frozenset()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


CONTEXT_FIELDS_JOURNALED_APART = frozenset(
    {"symbol", "ts_ns", "book", "sample", "detector", "inventory", "budget", "rules"}
)
"""The :class:`~strategies.base.MarketContext` fields a decision record holds in its own
keys (or derives); any other field (the risk engine's ``reduce_only``, ``paused_sides``,
...) goes under ``ctx`` when it differs from its default."""


def context_extras(ctx: MarketContext | None) -> dict[str, Any]:
    if ctx is None:
        return {}
    out: dict[str, Any] = {}
    for name, default in _extra_fields(type(ctx)):
        value = getattr(ctx, name)
        if value == default:
            continue
        out[name] = sorted(value) if isinstance(value, frozenset | set) else value
    return out


_EXTRA_FIELDS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _extra_fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """(name, default) of the context fields :func:`context_extras` looks at, per class
    (read once: dataclasses.fields builds its tuple on every call)."""
    names = _EXTRA_FIELDS.get(cls)
    if names is None:
        names = _EXTRA_FIELDS[cls] = tuple(
            (f.name, f.default)
            for f in dataclasses.fields(cls)
            if f.name not in CONTEXT_FIELDS_JOURNALED_APART
        )
    return names


@dataclass(slots=True)
class _Market:
    window: int | None = None
    """The open window's id (the opening reading's time), None when closed."""
    readings: int = 0
    checkpoint: dict[str, Any] | None = None
    checkpoint_ts: int = 0
    config: Any = None
    held: tuple[Any, ...] = ()
    pre: list[list[Any]] = field(default_factory=list)
    trades: list[list[Any]] = field(default_factory=list)
    trades_cut: int = 0
    dwell_ns: int | None = None
    """The engage dwell the next update runs on, when it is not the config's (the early
    warning's pre-arm shortens it): an input to the detector like the market data."""
    dwell_of: Any = None
    """The (frozen) detector config ``config_dwell_ns`` was read from."""
    config_dwell_ns: int = 0


class EvidenceLog:
    """Told about every reading by the trader (:attr:`bot.trader.Trader.evidence`)."""

    def __init__(
        self,
        journal: Journal,
        *,
        budget: Budget,
        strategy: GovernedStrategy,
        policy_hash: Callable[[], str],
        top_levels: int = 5,
        checkpoint_s: float = 1.0,
    ) -> None:
        from bot.budget import Exposure
        from strategies.base import InventoryView

        self._journal = journal
        self._budget = budget
        self._strategy = strategy
        self._policy_hash = policy_hash
        self.top_levels = top_levels
        self._checkpoint_ns = round(checkpoint_s * NS_PER_S)
        self._markets: dict[str, _Market] = {}
        self._inv_fields = field_names(InventoryView)
        self._x_fields = field_names(Exposure, skip=frozenset({"symbol", "rules"}))
        self.windows = 0
        self.decisions = 0

    def _market(self, symbol: str) -> _Market:
        m = self._markets.get(symbol)
        if m is None:
            m = self._markets[symbol] = _Market()
        return m

    def is_open(self, symbol: str) -> bool:
        return self._market(symbol).window is not None

    # ------------------------------------------------------------ the trader's calls

    def on_trade(self, trade: Trade) -> None:
        m = self._market(trade.symbol)
        if len(m.trades) >= MAX_TRADES_PER_READING:
            m.trades_cut += 1
            return
        m.trades.append([trade.ts_ns, trade.price, trade.amount, trade.side])

    def before_reading(self, symbol: str, detector: FractureDetector, ts_ns: int) -> None:
        """Called before the detector takes a sample: keep a checkpoint while calm."""
        m = self._market(symbol)
        dwell = detector.machine.engage_dwell_ns
        config = detector.config
        if config is not m.dwell_of:  # the config's own dwell, read once per config
            m.dwell_of, m.config_dwell_ns = config, round(config.engage_dwell_s * NS_PER_S)
        m.dwell_ns = None if dwell == m.config_dwell_ns else dwell
        if m.window is not None:
            return
        if m.checkpoint is None or ts_ns - m.checkpoint_ts >= self._checkpoint_ns:
            m.checkpoint = detectors.checkpoint(detector)
            m.checkpoint_ts = ts_ns
            m.config = detector.config
            m.held = self._strategy.held(symbol)
            m.pre.clear()
            # Trades so far are inside the checkpoint (the detector has seen them).
            m.trades.clear()
            m.trades_cut = 0

    def on_reading(self, r: Reading) -> None:
        m = self._market(r.symbol)
        trades, m.trades = m.trades, []
        calm = r.update.state is DetectorState.CALM
        if m.window is None:
            if calm and not r.quotes:
                if m.checkpoint is not None:
                    m.pre.append(self._compact(r.sample, r.own, r.update, m, trades))
                return
            if m.checkpoint is None:  # no reading seen since start: nothing to start from
                return
            self._open(r, m)
        m.readings += 1
        self._journal.append_deferred(
            rk.DECISION, self._decision(r, m, trades), ts_ns=r.sample.ts_ns
        )
        self.decisions += 1
        if calm and not r.quotes:
            self._journal.append(
                rk.EVIDENCE,
                {"symbol": r.symbol, "w": m.window, "action": "close", "readings": m.readings},
                ts_ns=r.sample.ts_ns,
                owned=True,
            )
            m.window = None
            m.checkpoint = None  # the next reading takes a fresh one
            m.readings = 0

    # ------------------------------------------------------------ records

    def on_quiet(
        self,
        symbol: str,
        sample: DepthSample,
        own: tuple[float, float],
        update: DetectorUpdate,
    ) -> bool:
        """:meth:`on_reading` of a CALM reading on which the strategy asks for nothing, for
        a caller that has not built the rest of the :class:`Reading` (the trader's calm
        fast path). False, and nothing done, while a window is open: such a reading is a
        ``decision`` record and needs the full :class:`Reading`."""
        m = self._market(symbol)
        if m.window is not None or update.state is not DetectorState.CALM:
            return False
        trades, m.trades = m.trades, []
        if m.checkpoint is not None:
            m.pre.append(self._compact(sample, own, update, m, trades))
        return True

    @staticmethod
    def _compact(
        s: DepthSample,
        own: tuple[float, float],
        update: DetectorUpdate,
        m: _Market,
        trades: list[list[Any]],
    ) -> list[Any]:
        """What the detector reads of a reading (before a window opens)."""
        band = m.config.band_index
        return [
            s.ts_ns,
            s.depth.item(0, band, 1),
            s.depth.item(1, band, 1),
            s.spread_bps,
            s.mid,
            own[0],
            own[1],
            update.state.value,
            trades,
            m.dwell_ns,
        ]

    def _open(self, r: Reading, m: _Market) -> None:
        m.window = r.sample.ts_ns
        m.readings = 0
        self.windows += 1
        limits = self._budget.limits
        payload = {
            "symbol": r.symbol,
            "w": m.window,
            "action": "open",
            "policy": self._policy_hash(),
            "checkpoint_ts": m.checkpoint_ts,
            "detector": m.checkpoint,
            "config": snapshot.dump(m.config),
            "held": [quote_row(q) for q in m.held],
            "limits": {f.name: _plain(getattr(limits, f.name)) for f in dataclasses.fields(limits)},
            "rules": {f.name: getattr(r.rules, f.name) for f in dataclasses.fields(r.rules)},
            "bands": list(r.sample.bands_bps),
            "top_levels": self.top_levels,
            "inv_fields": list(self._inv_fields),
            "x_fields": list(self._x_fields),
            "pre": m.pre,
            "trades_cut": m.trades_cut,
        }
        # Handed over: nothing here keeps a reference it changes later (m.pre is replaced,
        # the checkpoint is dropped at the window's close, the rest is built here).
        self._journal.append(rk.EVIDENCE, payload, ts_ns=r.sample.ts_ns, owned=True)
        m.pre = []

    def _decision(
        self, r: Reading, m: _Market, trades: list[list[Any]]
    ) -> Callable[[], dict[str, Any]]:
        """The ``decision`` payload's builder: the journal may build it once this event's
        orders have left (:meth:`bot.journal.Journal.append_deferred`). What can change
        before then is read now: the book's best levels (fresh arrays), the window; the
        rest is never changed once built (sample, update, inventory view, exposure,
        context, quotes) or handed over (``trades``)."""
        n = self.top_levels
        top = (r.book.top(n, Side.BID), r.book.top(n, Side.ASK))
        window, dwell = m.window, m.dwell_ns
        return lambda: self._decision_payload(r, window, dwell, top, trades)

    def _decision_payload(
        self,
        r: Reading,
        window: int | None,
        dwell: int | None,
        top: tuple[Any, Any],
        trades: list[list[Any]],
    ) -> dict[str, Any]:
        s = r.sample
        t = r.update.transition
        quotes = [quote_row(q) for q in r.quotes]
        # The usual case: the fit and the risk engine passed the very same quotes on, whose
        # rows are then equal (and written once, below).
        fitted = quotes if _same(r.fitted, r.quotes) else [quote_row(q) for q in r.fitted]
        allowed = fitted if _same(r.allowed, r.fitted) else [quote_row(q) for q in r.allowed]
        payload: dict[str, Any] = {
            "symbol": r.symbol,
            "w": window,
            "s": [s.ts_ns, s.best_bid, s.best_ask, s.mid, s.spread_bps],
            "slip": [s.buy_slippage_bps, s.sell_slippage_bps],
            "depth": s.depth.tolist(),
            "top": [top[0].tolist(), top[1].tolist()],
            "own": list(r.own),
            "tr": trades,
            "inv": field_values(r.inventory, self._inv_fields),
            "x": None if r.exposure is None else field_values(r.exposure, self._x_fields),
            "st": r.update.state.value,
            "tn": None if t is None else [t.from_state.value, t.to_state.value],
            "skip": r.skipped,
            "q": quotes,
            # The usual case (nothing trimmed or denied) is not written twice.
            "fit": None if fitted == quotes else fitted,
            "ok": None if allowed == fitted else allowed,
        }
        if dwell is not None:
            payload["dwell"] = dwell
        extras = context_extras(r.context)
        if extras:
            payload["ctx"] = extras
        return payload
