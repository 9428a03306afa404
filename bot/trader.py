"""The trading loop: on every book sample, detector -> strategy -> budget -> orders.

The trader is an engine listener. For each valid book update of a market it feeds the
fracture detector, asks the strategy for the full set of quotes it wants, passes them
through the budget (hard collateral caps, applied *after* the strategy so a bug there
cannot exceed them) and hands the result to the order manager, which sends only the
difference. Fills come back as order notices and move the inventory and the episode.

The paper venue, when there is one, is a separate engine listener placed *before* the
trader, so fills against a book state happen before the strategy reacts to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from bot.book import OrderBook
from bot.budget import Budget, Exposure
from bot.detect.machine import DetectorState
from bot.detector import DetectorUpdate, FractureDetector
from bot.episodes import EpisodeTracker
from bot.feeds.events import FeedStatus, Trade
from bot.governance.evidence import EvidenceLog, Reading
from bot.inventory import AnyInventory, inventory_for, own_band_depth
from bot.journal import Journal
from bot.journal.trace import JournalTrace
from bot.logs import Logger
from bot.monitor import DepthSample
from bot.orders import OrderFilled, OrderManager, OrderNotice, OrderState, TrackedOrder
from bot.orders.gcpace import collect_young
from bot.report import ReportRecorder
from bot.risk import (
    GuardEvent,
    MarketState,
    MarketStateChanged,
    QuoteContext,
    RiskEngine,
    RiskEvent,
)
from bot.settings import MarketSettings
from bot.venues.base import Venue
from bot.warning.live import MarketWarning
from strategies.base import InventoryView, MarketContext, MarketRules, Strategy

SETTLE_YIELDS = 8
"""Event-loop turns given to order actions after each event (see :meth:`Trader.settle`)."""


@dataclass(slots=True)
class Desk:
    """One market's trading state."""

    settings: MarketSettings
    market: Mapping[str, Any]
    """The ccxt market structure (precision, limits, fees)."""
    detector: FractureDetector
    inventory: AnyInventory
    """Spot balances, or a perpetual's margin account (:class:`bot.inventory.PerpInventory`)."""
    episodes: EpisodeTracker
    rules: MarketRules
    fee_rate: float
    last_mid: float | None = None
    last_update: DetectorUpdate | None = None
    last_trade_price: float | None = None
    decisions: int = 0
    refused: int = 0
    trimmed: int = 0
    held_back: int = 0
    """Creates the order manager held back (order-rate gate, busy side, would-take wall)."""
    max_committed_quote: float = 0.0
    warning: MarketWarning | None = None
    """The early warning (:mod:`bot.warning.live`), when ``warning.enabled``."""
    committed_cache: float | None = None
    """``committed_quote`` of this market's open orders at ``last_mid``, as the other
    markets' budgets read it; None once an order notice or a new mid made it stale."""
    last_reading: MarketContext | None = None
    """The strategy's context at the last reading that asked the strategy: what
    :meth:`Trader.rehearse` starts from."""

    @classmethod
    def build(cls, settings: MarketSettings, market: Mapping[str, Any]) -> Desk:
        fees = [float(market.get(k) or 0.0) for k in ("maker", "taker")]
        return cls(
            settings=settings,
            market=market,
            detector=FractureDetector.from_market(settings),
            inventory=inventory_for(settings, market),
            episodes=EpisodeTracker(settings.symbol, market),
            rules=MarketRules.from_market(market),
            fee_rate=max(fees),
        )

    @property
    def symbol(self) -> str:
        return self.settings.symbol


@dataclass(slots=True)
class Trader:
    desks: dict[str, Desk]
    strategy: Strategy
    budget: Budget
    manager: OrderManager
    risk: RiskEngine
    log: Logger
    recorder: ReportRecorder | None = None
    """Keeps the time series an episode report draws (``--report``)."""
    journal: Journal | None = None
    """Every order change, fill, episode, guard event and trip goes here (audit trail)."""
    trace: JournalTrace | None = None
    """Journals the book, detector and inventory rows a report draws (thinned)."""
    evidence: EvidenceLog | None = None
    """Journals the market data behind each decision of an episode (``audit replay``)."""
    halted: bool = False
    """Set by the kill switch: no new quotes, only cancels."""
    unmanaged: dict[str, float] = field(default_factory=dict)
    """Funds on the venue account that are not the bot's reserve, per currency (see
    :mod:`bot.recovery`); the balance guard expects them to stay put."""
    denied: int = 0
    held_back: int = 0
    """Creates the order manager held back this time (order-rate gate, busy side)."""
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    _later: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """Info log lines of the current event, written once its orders have left."""
    _collect_young: bool = False
    """A market started arming: collect garbage after this event (bot.orders.gcpace)."""
    _arming: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a market starts arming: wakes :meth:`keep_warm`."""
    _event_at: float = 0.0
    """The event loop's time when the last feed event was handled (:meth:`after_event`)."""
    _turn: int = 0
    """Rehearsal turns taken (:meth:`rehearsal_due` takes the arming markets in turn)."""
    rehearsals: int = 0
    """Rehearsed triggers (:meth:`rehearse`)."""
    _warnings: list[tuple[MarketWarning, OrderBook, DepthSample, DetectorUpdate, Any]] = field(
        default_factory=list
    )
    """Readings the early warning has yet to score (see :meth:`score_warnings`)."""

    def __post_init__(self) -> None:
        self.manager.subscribe(self._on_notice)
        self.manager.subscribe(self.risk.on_notice)
        self.risk.subscribe(self._on_risk_event)
        if self.recorder is not None:
            recorder = self.recorder
            self.manager.subscribe(lambda notice: recorder.on_notice(notice))
        if self.journal is not None:
            self.manager.subscribe(self.journal.order_observer(self.manager.get))
            self.risk.subscribe(self.journal.record_risk_event)

    # ------------------------------------------------------------ engine listener

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        desk = self.desks.get(symbol)
        if desk is None:
            return
        if self.journal is not None:
            # This event's records wait until its orders have left (after_event).
            self.journal.hold()
        if self._warnings:  # driven without after_event: the last reading's first
            self.score_warnings()
        desk.last_mid = sample.mid
        desk.committed_cache = None
        # What our book shows now lifts the would-take walls it has reached.
        self.manager.touch(symbol, sample.best_bid, sample.best_ask)
        # Depth in quote on every market (a contract book's sizes are contracts).
        sample = desk.rules.quote_sample(sample)
        self.risk.on_book(symbol, book, sample.ts_ns)
        position = desk.inventory.mark(sample.ts_ns, sample.mid, desk.last_trade_price)
        if position is not None:  # a perpetual: funding paid, position guards fed
            self.risk.on_position(position)
        orders = self.manager.open_orders(symbol)
        # Our own resting quotes are not the market healing: the detector discounts them.
        own = own_band_depth(orders, sample.mid, desk.settings.bands_bps[0], desk.rules)
        evidence = self.evidence
        if evidence is not None:
            evidence.before_reading(symbol, desk.detector, sample.ts_ns)
        update = desk.detector.update(sample, own)
        desk.last_update = update
        if desk.warning is not None:
            # Scored once the orders have left (after_event): with pre-arm off it only
            # reports, and pre-arm acts from the next reading on; the book levels it
            # reads are taken now.
            self._warnings.append((desk.warning, book, sample, update, desk.warning.levels(book)))
        view = desk.inventory.view(sample.mid, orders)
        committed = view.committed_quote
        desk.max_committed_quote = max(desk.max_committed_quote, committed)
        if update.transition is not None and update.state is DetectorState.ARMING:
            self._collect_young = True
            self._arming.set()
        self._act(desk, symbol, book, sample, own, update, view, orders)
        # The reading's records (episodes, journal, recorder, trace, log) are not worth
        # delaying its orders for: they follow them out, before any notice of them. (A
        # partial only when they must wait: most readings send nothing.)
        if self.manager.turn_pending:
            self.manager.after_calls(
                partial(self._note_reading, desk, book.update_id, sample, update, view, committed)
            )
        else:
            self._note_reading(desk, book.update_id, sample, update, view, committed)

    def _act(
        self,
        desk: Desk,
        symbol: str,
        book: OrderBook,
        sample: DepthSample,
        own: tuple[float, float],
        update: DetectorUpdate,
        view: InventoryView,
        orders: list[TrackedOrder],
    ) -> None:
        """The reading's decision and its orders: the guards, the strategy, the budget,
        the risk checks, the order manager."""
        evidence = self.evidence
        self.risk.on_equity(symbol, desk.inventory.equity_quote(sample.mid), sample.ts_ns)
        skipped = (
            "halted"
            if self.halted
            else "paused"
            if self.risk.is_paused(symbol)
            # The audit trail is behind: better to stop quoting than to trade unrecorded.
            else "backpressure"
            if self.journal is not None and self.journal.backpressure
            else None
        )
        if skipped is not None:
            if evidence is not None:
                evidence.on_reading(
                    Reading(symbol, sample, book, own, update, view, desk.rules, skipped)
                )
            return
        if self._quiet(symbol, update, view.net_base) and (
            evidence is None or evidence.on_quiet(symbol, sample, own, update)
        ):
            # The strategy declares it asks for nothing on this reading and changes no
            # state: the budget's fit and the risk checks of an empty set are empty, so
            # only the order manager is told (it cancels whatever still rests).
            desk.decisions += 1
            held = len(self.manager.sync_quotes(symbol, ()).skipped)
            desk.held_back += held
            self.held_back += held
            return
        leaving = [o for o in orders if o.state is OrderState.PENDING_CANCEL]
        exposure = self._exposure(symbol, desk, sample.mid, leaving)
        ctx = MarketContext(
            symbol=symbol,
            ts_ns=sample.ts_ns,
            book=book,
            sample=sample,
            detector=update,
            inventory=view,
            budget=self.budget.view(exposure),
            rules=desk.rules,
            reduce_only=self.risk.is_reducing(symbol),
            paused_sides=self.risk.paused_sides(symbol),
            order_room=self.risk.order_room(self.manager.waiting_creates),
        )
        desk.last_reading = ctx
        decision = self.strategy.decide(ctx)
        fit = self.budget.fit(decision.quotes, exposure)
        desk.decisions += 1
        desk.refused += len(fit.refused)
        desk.trimmed += len(fit.trimmed)
        for note in fit.refused:
            self.log.debug("quote_refused_by_budget", symbol=symbol, reason=str(note))
        # The risk engine sees the quotes on top of what stays resting (orders being
        # cancelled); the ones the desired set keeps are part of the set itself.
        context = QuoteContext.build(
            book,
            desk.inventory,
            leaving,
            other_markets_quote=exposure.other_markets_quote,
        )
        check = self.risk.check_quotes(fit.quotes, context)
        self.denied += len(check.denied)
        result = self.manager.sync_quotes(symbol, check.allowed)
        desk.held_back += len(result.skipped)
        self.held_back += len(result.skipped)
        if evidence is not None:
            # Once the orders have left, before any notice of them: they follow the
            # decision in the journal. Nothing it reads changes in between (no event is
            # handled before the order manager's next turn).
            reading = Reading(
                symbol,
                sample,
                book,
                own,
                update,
                view,
                desk.rules,
                exposure=exposure,
                context=ctx,
                quotes=decision.quotes,
                fitted=fit.quotes,
                allowed=tuple(check.allowed),
            )
            self.manager.after_calls(partial(evidence.on_reading, reading))

    def _note_reading(
        self,
        desk: Desk,
        update_id: int | None,
        sample: DepthSample,
        update: DetectorUpdate,
        view: InventoryView,
        committed: float,
    ) -> None:
        """What a reading leaves in the episodes, journal, recorder, trace and log."""
        symbol = desk.symbol
        had_episode = desk.episodes.current is not None
        ended = desk.episodes.on_update(update, view, committed_quote=committed)
        if self.journal is not None:
            if not had_episode and desk.episodes.current is not None:
                # Usually a trigger: its record is built once the orders have left.
                tracker = desk.episodes
                self.journal.record_episode_start(
                    lambda: tracker.opening(update, view, committed).to_dict(), update.ts_ns
                )
            if ended is not None:
                self.journal.record_episode(ended.to_dict())
        if self.recorder is not None:
            self.recorder.on_detector(symbol, update)
            self.recorder.on_inventory(symbol, sample.ts_ns, view, committed)
        if self.trace is not None:
            self.trace.on_reading(symbol, sample, update, view, committed)
        if update.transition is not None:
            self._later.append(
                (
                    "detector_transition",
                    {
                        "symbol": symbol,
                        "state": update.state.value,
                        "trigger": update.trigger.to_dict() if update.trigger else None,
                        # The venue's sequence number of the book read: which of its
                        # messages moved the backstop (bench/live.py times from it).
                        "update_id": update_id,
                    },
                )
            )
        if ended is not None:
            self._later.append(("episode_end", {"symbol": symbol, "episode": ended.id}))

    def on_status(self, status: FeedStatus) -> None:
        self.risk.on_feed_status(status)

    def on_trade(self, trade: Trade) -> None:
        if self.manager.turn_pending:  # driven without after_event: the reading's first
            self.manager.take_turn()
        if self._warnings:
            self.score_warnings()
        desk = self.desks.get(trade.symbol)
        if desk is not None:
            desk.last_trade_price = trade.price
            desk.detector.on_trade(trade)
            if desk.warning is not None:
                desk.warning.on_trade(trade)
            if self.evidence is not None:
                self.evidence.on_trade(trade)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start listening to the venue's order and trade streams."""
        for symbol in self.desks:
            self._watchers.append(asyncio.ensure_future(self.manager.watch(symbol)))

    async def after_event(self) -> None:
        """Run once after every feed event: time-based guards, then :meth:`settle`, then
        the event's journal records and log lines (building and rendering them is not
        worth delaying an order for; see :meth:`bot.journal.Journal.hold`)."""
        self.risk.tick()
        self._event_at = asyncio.get_running_loop().time()
        # Each step only when it has something to do: this runs after every feed event.
        if self.manager.in_flight:
            await self.settle()
        if self._warnings:
            self.score_warnings()
        if self.journal is not None:
            self.journal.release()
        if self._later:
            self.flush_logs()
        if self._collect_young:
            self._collect_young = False
            collect_young()

    def score_warnings(self) -> None:
        """Run the early warning on the readings since the last call, in order."""
        pending, self._warnings = self._warnings, []
        for warning, book, sample, update, top in pending:
            warning.on_reading(book, sample, update, top)

    def flush_logs(self) -> None:
        """Write the log lines held back since the last call (see :meth:`after_event`)."""
        later, self._later = self._later, []
        for event, fields in later:
            self.log.info(event, **fields)

    async def settle(self) -> None:
        """Give order actions started by this event a few loop turns to reach the venue.

        In a replay, data time moves only with events: without this the order manager's
        tasks would run only when the feed next hands control back, far later in data
        time. The number of turns is fixed, so a replay stays deterministic.
        """
        if self.manager.in_flight:
            for _ in range(SETTLE_YIELDS):
                await asyncio.sleep(0)

    async def stop(self) -> None:
        self.score_warnings()
        if self.journal is not None:
            self.journal.release()
        self.flush_logs()
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        await self.manager.aclose()

    def expected_balances(self) -> dict[str, float]:
        """What the venue should hold per currency, by the bot's own accounting."""
        expected: dict[str, float] = dict(self.unmanaged)
        for desk in self.desks.values():
            for ccy, amount in desk.inventory.balances().items():
                expected[ccy] = expected.get(ccy, 0.0) + amount
        return expected

    async def check_balances(self, venue: Venue, *, confirm_after_s: float = 0.0) -> None:
        """Feed the balance-mismatch guard: the venue's totals against our accounting.

        With ``confirm_after_s``, a disagreement is fetched again after that long (fills
        in flight settle meanwhile) and only a second disagreement reaches the guard.
        """
        totals = await self._venue_totals(venue)
        if confirm_after_s > 0 and self.risk.balance_mismatch(totals, self.expected_balances()):
            await asyncio.sleep(confirm_after_s)
            totals = await self._venue_totals(venue)
        self.risk.on_balances(totals, self.expected_balances())

    @staticmethod
    async def _venue_totals(venue: Venue) -> dict[str, float]:
        return balance_totals(await venue.fetch_balance())

    # ------------------------------------------------------------ notices

    def _on_notice(self, notice: OrderNotice) -> None:
        desk = self.desks.get(notice.symbol)
        if desk is None:
            return
        desk.committed_cache = None  # its orders or its inventory changed
        order = self.manager.get(notice.client_id) if notice.client_id else None
        tag = order.tag if order is not None else ""
        if isinstance(notice, OrderFilled):
            if desk.inventory.apply(notice):
                self.strategy.on_fill(notice)
            desk.episodes.on_notice(notice, tag=tag, mid=desk.last_mid)
        else:
            desk.episodes.on_notice(notice, tag=tag)

    def _on_risk_event(self, event: RiskEvent) -> None:
        pulled = (MarketState.PAUSED, MarketState.REDUCING)
        if isinstance(event, MarketStateChanged) and event.state in pulled:
            self.log.warning("market_paused", symbol=event.symbol, cause=event.cause)
            self.manager.cancel_all(event.symbol, reason=f"PAUSED: {event.cause}")
        elif isinstance(event, MarketStateChanged):
            self.log.info("market_resumed", symbol=event.symbol, cause=event.cause)
        elif isinstance(event, GuardEvent):
            self.log.warning(
                "guard", guard=str(event.guard), action=str(event.level), reason=event.reason
            )

    # ------------------------------------------------------------------ keeping warm

    async def keep_warm(self, period_s: float) -> None:
        """While a market is arming, rehearse the reading that would engage it every
        ``period_s`` (one arming market per turn, in turn), so that the trigger finds
        the strategy, budget, risk and order manager's code and data in the processor's
        caches instead of paying to fetch them back (measured in docs/benchmarks.md,
        Reaction). Only when no feed event came in the last ``period_s``: a busy engine
        keeps its caches warm by itself, and a rehearsal would only delay its next
        event. Idle, it waits for a market to start arming. Never raises: a failed
        rehearsal is logged once and changes nothing."""
        loop = asyncio.get_running_loop()
        failed = False
        while True:
            await self._arming.wait()
            await asyncio.sleep(period_s)
            symbol = self.rehearsal_due(loop.time(), period_s)
            if symbol is None:
                continue
            try:
                self.rehearse(symbol)
            except Exception:  # a rehearsal must never reach trading
                if not failed:
                    failed = True
                    self.log.exception("rehearsal_failed")

    def rehearsal_due(self, now: float, period_s: float) -> str | None:
        """The market :meth:`keep_warm` rehearses at ``now`` (the event loop's time):
        the arming markets in turn, none while trading is halted or when a feed event
        came within ``period_s``. With no market arming, clears the flag that wakes
        :meth:`keep_warm`."""
        arming = [
            symbol
            for symbol, desk in self.desks.items()
            if desk.last_update is not None and desk.last_update.state is DetectorState.ARMING
        ]
        if not arming:
            self._arming.clear()
            return None
        if self.halted or now - self._event_at < period_s:
            return None
        self._turn += 1
        return arming[self._turn % len(arming)]

    def rehearse(self, symbol: str) -> bool:
        """A dry run of an engaged reading on ``symbol`` from its last reading's context:
        the reading's own-depth, inventory and budget views, the strategy's engaged
        decision (:meth:`BackstopStrategy.rehearse`), the budget's fit, the risk checks
        and the order manager's rounding and diff. Nothing is sent, kept, counted or
        recorded (the journal of a run is the same with and without rehearsals:
        tests/test_rehearsal.py). False when there is nothing to rehearse (no such
        market, no context yet, a strategy without ``rehearse``)."""
        desk = self.desks.get(symbol)
        rehearse: Callable[[MarketContext], Any] | None = getattr(
            self.strategy, "rehearse", None
        )
        if desk is None or desk.last_reading is None or rehearse is None:
            return False
        last = desk.last_reading
        # The reading's own steps after the detector's, on its sample and the orders,
        # inventory and budget as they are now (each of them reads, none writes).
        sample = last.sample
        orders = self.manager.open_orders(symbol)
        own_band_depth(orders, sample.mid, desk.settings.bands_bps[0], desk.rules)
        leaving = [o for o in orders if o.state is OrderState.PENDING_CANCEL]
        exposure = self._exposure(symbol, desk, sample.mid, leaving)
        ctx = replace(
            last,
            inventory=desk.inventory.view(sample.mid, orders),
            budget=self.budget.view(exposure),
        )
        decision = rehearse(ctx)
        fit = self.budget.fit(decision.quotes, exposure)
        context = QuoteContext.build(
            ctx.book, desk.inventory, leaving, other_markets_quote=exposure.other_markets_quote
        )
        self.risk.rehearse_quotes(fit.quotes, context)
        self.manager.rehearse(symbol, fit.quotes)
        self.rehearsals += 1
        return True

    def _quiet(self, symbol: str, update: DetectorUpdate, net_base: float) -> bool:
        # A strategy's own declaration (``quiet``), looked up on every reading: the
        # strategy can be swapped (the options delta hedge wraps it) and has to opt in.
        quiet: Callable[..., bool] | None = getattr(self.strategy, "quiet", None)
        return quiet is not None and quiet(
            symbol, update, net_base=net_base, reduce_only=self.risk.is_reducing(symbol)
        )

    def _exposure(
        self, symbol: str, desk: Desk, mid: float, leaving: list[TrackedOrder]
    ) -> Exposure:
        """What the budget sizes ``symbol``'s quotes against at ``mid``, the orders
        ``leaving`` (being cancelled) still counted."""
        return self.budget.exposure(
            desk.inventory,
            mid,
            leaving=leaving,
            other_markets_quote=self._committed_elsewhere(symbol),
            fee_rate=desk.fee_rate,
            rules=desk.rules,
        )

    def _committed_elsewhere(self, symbol: str) -> float:
        # Each market's figure changes only with its own orders, fills and mid, so it is
        # computed once per change, not once per other market's update.
        total = 0.0
        for other, desk in self.desks.items():
            if other == symbol or desk.last_mid is None:
                continue
            committed = desk.committed_cache
            if committed is None:
                committed = desk.inventory.committed_quote(
                    self.manager.open_orders(other), desk.last_mid
                )
                desk.committed_cache = committed
            total += committed
        return total

    # ------------------------------------------------------------ reporting

    def summary(self) -> dict[str, Any]:
        markets: dict[str, Any] = {}
        for symbol, desk in self.desks.items():
            open_orders = self.manager.open_orders(symbol)
            markets[symbol] = {
                "detector_state": desk.last_update.state.value if desk.last_update else None,
                "inventory": desk.inventory.to_dict(desk.last_mid),
                "episodes": desk.episodes.to_dicts(),
                "decisions": desk.decisions,
                "budget_refused": desk.refused,
                "budget_trimmed": desk.trimmed,
                "held_back": desk.held_back,
                "paused": self.risk.is_paused(symbol),
                "max_committed_quote": desk.max_committed_quote,
                "open_orders": len(open_orders),
                "warning": desk.warning.summary() if desk.warning is not None else None,
            }
        return {
            "strategy": self.strategy.name,
            "risk_denied": self.denied,
            "held_back": self.held_back,
            "rehearsals": self.rehearsals,
            "trading_state": str(self.risk.trading_state),
            "markets": markets,
        }


def desks_for(
    markets: Sequence[MarketSettings], ccxt_markets: Mapping[str, Mapping[str, Any]]
) -> dict[str, Desk]:
    return {m.symbol: Desk.build(m, ccxt_markets.get(m.symbol) or {}) for m in markets}


def balance_totals(balance: Mapping[str, Any]) -> dict[str, float]:
    """Currency -> total from a ccxt balance structure (missing or None counts as 0)."""
    totals = balance.get("total") or {}
    return {str(k): float(v or 0.0) for k, v in totals.items()}
