"""Wiring: turn validated :class:`~bot.settings.Settings` into a running engine.

Everything the engine needs (clock, feed, books, journal, venue, order manager, risk
engine, kill switch, trader, listeners, logger) is built here and passed in, so tests
can build the same objects by hand with fakes where they need to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ccxt

from bot.book import BookState, OrderBook
from bot.budget import Budget
from bot.clock import Clock, ManualClock, WallClock
from bot.deadman import DeadManSwitch
from bot.detect.config import DetectorConfig
from bot.engine import Engine, Feed, Listener, Market
from bot.errors import BackstopError, TemporaryError, UserError
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import StressedFeed, StressSpec, format_spec
from bot.governance.runtime import Governance, make_strategy_for
from bot.inventory import currencies
from bot.journal import Journal
from bot.journal.trace import JournalTrace
from bot.killswitch import KillSwitch, link_risk
from bot.logs import Logger
from bot.markets import market_id_map, offline_markets
from bot.monitor import DepthMonitor
from bot.options.runner import OptionsPlan
from bot.orders import OrderManager
from bot.orders.calls import Throttle
from bot.report import ReportRecorder
from bot.risk import RiskEngine
from bot.settings import MarketSettings, Settings, validate_symbols
from bot.summary import RunSummary, summarize
from bot.trader import Trader, desks_for
from bot.venues.base import Venue
from bot.venues.perp import PerpTerms, make_paper_venue
from bot.warning.live import attach as attach_warnings

# Live trading only (ccxt.pro, aiohttp: ~30 MB and ~0.3 s of imports): imported where a
# live feed, an exchange account or recovery is set up, never by a paper replay.
if TYPE_CHECKING:
    from bot.feeds.live import LiveFeed
    from bot.recovery import VenueFunding


def replay_symbol_map(settings: Settings) -> dict[str, str]:
    """Raw exchange ids in a recording -> the configured unified symbols.

    Bundled market definitions give the exact id (``BTC/USDT:USDT`` -> ``BTCUSDT`` on
    USD-M); for other symbols we fall back to the exchange's usual concatenation
    (``ETH/USDT`` -> ``ETHUSDT``), which is what Binance-style recordings carry.
    """
    known = offline_markets(settings.exchange.id) or {}
    # Known spot ids first, so a recording of an unconfigured market is still named
    # in unified form when we report what it holds.
    mapping = market_id_map(known)
    for market in settings.markets:
        symbol = market.symbol
        raw = known[symbol]["id"] if symbol in known else symbol.split(":")[0].replace("/", "")
        mapping[str(raw)] = symbol
    return mapping


@dataclass
class Run:
    """One assembled run: call :meth:`execute` once."""

    settings: Settings
    engine: Engine
    feed: Feed
    source: str
    trader: Trader | None = None
    killswitch: KillSwitch | None = None
    venue: Venue | None = None
    governance: Governance | None = None
    """The policy in force and its changes, resume approvals (:mod:`bot.governance`)."""
    options: OptionsPlan | None = None
    """Option books, their desk and the delta hedge (``[options]``, :mod:`bot.options`)."""
    funding: VenueFunding | None = None
    """Testnet/live: the venue's funding payments, read before each balance check."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    startup: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """Run before trading starts (recovery against an exchange account)."""
    rehearse: bool = False
    """Keep the trigger path warm while a market arms (``strategy.rehearse_ms``): set
    when messages arrive at a live pace (a live feed, a replay at speed > 0)."""

    @property
    def live(self) -> bool:
        return self.settings.feed.source == "live"

    def request_stop(self, signum: int, stop: asyncio.Event) -> None:
        """SIGTERM/SIGINT: with orders out, the kill switch's graceful stop (cancel
        everything, confirm flat) runs first; the engine keeps consuming the feed
        meanwhile, since the venue answers as data arrives."""
        if self.killswitch is None:
            stop.set()
            return
        self.killswitch.handle_signal(signum)

    async def execute(self, stop: asyncio.Event | None = None) -> RunSummary:
        stop = stop if stop is not None else asyncio.Event()
        started = time.perf_counter()
        helpers: list[asyncio.Task[Any]] = []
        try:
            for step in self.startup:
                await step()
            if self.trader is not None:
                await self.trader.start()
                rehearse_ms = self.settings.strategy.rehearse_ms
                if self.rehearse and rehearse_ms > 0:
                    helpers.append(asyncio.ensure_future(self.trader.keep_warm(rehearse_ms / 1e3)))
            if self.trader is not None and self.venue is not None and self.live:
                guards = self.settings.risk.guards
                check: Callable[[Venue], Awaitable[None]] = functools.partial(
                    self.trader.check_balances, confirm_after_s=guards.balance_confirm_s
                )
                if self.funding is not None:
                    check = self.funding.then(check)
                helpers.append(
                    asyncio.ensure_future(_every(guards.balance_check_s, check, self.venue))
                )
                keep_warm_s = self.settings.exchange.keep_warm_s
                if keep_warm_s > 0:
                    from bot.venues.ccxt_venue import CcxtVenue

                    if isinstance(self.venue, CcxtVenue):
                        warm = self.venue.keep_warm(keep_warm_s)
                        helpers.append(asyncio.ensure_future(warm))
            if self.killswitch is not None:
                ks = self.killswitch
                helpers.append(asyncio.ensure_future(ks.watch()))
                helpers.append(asyncio.ensure_future(_set_when(ks.stop_requested, stop)))
            await self.engine.run(stop)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.trader is not None:
                await self.trader.stop()
            # Last opened, first closed (the journal before the directory it lives in).
            for close in reversed(self.closers):
                await close()
        wall = time.perf_counter() - started
        stats = getattr(self.feed, "stats", None)
        summary = summarize(
            self.engine,
            mode=self.settings.mode,
            source=self.source,
            wall_s=wall,
            feed_stats=stats,
            feed_malformed=_malformed(stats),
            trading=self._trading(),
        )
        if self.source.startswith("replay") and summary.book_updates == 0:
            seen = ", ".join(sorted(self.engine.ignored_symbols)) or "no book data at all"
            configured = ", ".join(m.symbol for m in self.settings.markets)
            raise UserError(
                f"the replay has no book data for the configured market(s) {configured} "
                f"(it has: {seen}); set --symbol or markets[].symbol to match the recording"
            )
        return summary

    def _trading(self) -> dict[str, Any] | None:
        trading = self.trader.summary() if self.trader is not None else None
        if self.options is not None:
            trading = {**(trading or {}), "options": self.options.summary()}
        return trading


async def _every(period_s: float, check: Callable[[Venue], Awaitable[None]], venue: Venue) -> None:
    while True:
        await asyncio.sleep(period_s)
        try:
            await check(venue)
        except (ccxt.BaseError, OSError) as e:  # a failed check is retried next period
            from bot.exchanges import map_ccxt_error

            raise_later = map_ccxt_error(e)
            if not isinstance(raise_later, TemporaryError):
                raise raise_later from e


async def _set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


def _malformed(stats: object) -> Counter[str]:
    raw = getattr(stats, "malformed", None)
    return Counter(raw) if isinstance(raw, Mapping) else Counter()


def _markets(settings: Settings, clock: Clock) -> dict[str, Market]:
    return {
        m.symbol: Market(
            symbol=m.symbol,
            book=OrderBook(m.symbol, clock=clock),
            monitor=DepthMonitor.for_bands(m.bands_bps, m.reference_notional_quote),
        )
        for m in settings.markets
    }


class _AdmitAll:
    """No request throttle: the paper venue never rate-limits, and in a replay wall time
    means nothing. Order rate is still capped by the risk limits."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def paper_balances(settings: Settings) -> dict[str, float]:
    """The paper account starts with the reserves of every market, summed per currency."""
    balances: dict[str, float] = defaultdict(float)
    for m in settings.markets:
        base, quote = currencies(m.symbol)
        balances[base] += m.reserve.base
        balances[quote] += m.reserve.quote
    return dict(balances)


def _tradeable(
    settings: Settings, ccxt_markets: Mapping[str, Mapping[str, Any]], log: Logger
) -> list[MarketSettings]:
    tradeable = [m for m in settings.markets if m.symbol in ccxt_markets]
    for m in settings.markets:
        if m.symbol not in ccxt_markets:
            log.warning(
                "market_observed_only",
                symbol=m.symbol,
                why="no market definition (precision, limits, fees) to trade it",
            )
        elif m.reserve.base == 0 and m.reserve.quote == 0:
            log.warning(
                "reserve_empty",
                symbol=m.symbol,
                why="markets[].reserve is 0: the strategy has nothing to quote with",
            )
    return tradeable


def build_trader(
    settings: Settings,
    tradeable: Sequence[MarketSettings],
    ccxt_markets: Mapping[str, Mapping[str, Any]],
    venue: Venue,
    *,
    clock: Clock,
    log: Logger,
    state_dir: Path,
    journal: Journal,
    throttler: Throttle | None,
    rng: random.Random,
    record: bool = False,
) -> tuple[Trader, KillSwitch]:
    """The trading loop on ``venue`` (paper or exchange: the same objects either way)."""
    risk = RiskEngine(settings.risk, clock=clock, log=log, symbols=[m.symbol for m in tradeable])
    manager = OrderManager(
        venue,
        clock=clock,
        rng=rng,
        log=log,
        config=settings.orders,
        throttler=throttler,
        admit=risk.admit_order,
        known_client_ids=journal.known_client_ids,
    )
    trader = Trader(
        desks=desks_for(tradeable, ccxt_markets),
        strategy=make_strategy_for(settings),
        budget=Budget.from_settings(settings),
        manager=manager,
        risk=risk,
        log=log,
        recorder=ReportRecorder.from_markets(tradeable, order_lookup=manager.get)
        if record
        else None,
        journal=journal,
        trace=JournalTrace(journal, {m.symbol: DetectorConfig.from_market(m) for m in tradeable}),
    )
    attach_warnings(trader.desks, settings, journal=journal)
    killswitch = KillSwitch(
        settings.killswitch,
        state_dir=state_dir,
        kill_file=settings.kill_file_path,
        orders=manager,
        venue=venue,
        symbols=[m.symbol for m in tradeable],
        clock=clock,
        log=log,
        stop_strategy=lambda: setattr(trader, "halted", True),
        resume_strategy=lambda: setattr(trader, "halted", False),
    )
    trader.halted = killswitch.is_tripped
    link_risk(killswitch, risk)
    killswitch.subscribe(journal.record_kill)
    return trader, killswitch


async def assemble(
    settings: Settings,
    *,
    log: Logger,
    listeners: Sequence[Listener] = (),
    stress: StressSpec | None = None,
    trade: bool = True,
    record: bool = False,
) -> Run:
    """Build the feed, books, engine and the trading loop for ``settings``.

    Paper mode trades on the paper venue (recorded or live public data); testnet and
    live modes trade on the exchange through ccxt, after :func:`bot.recovery.recover`
    has reconciled the journal with the account (run by :meth:`Run.execute`).
    """
    if stress is not None and settings.feed.source != "replay":
        raise UserError("--stress overlays a recording: it needs a replay (feed.source = replay)")
    exchange: Any = None
    options = OptionsPlan.build(settings, log=log)
    if settings.feed.source == "replay":
        paths = list(settings.feed.replay_files) or bundled_sample_paths()
        replay_clock = ManualClock()
        clock: Clock = replay_clock
        replay = ReplayFeed(
            paths,
            clock=replay_clock,
            speed=settings.feed.speed,
            duration_s=settings.feed.duration_s,
            symbol_map=replay_symbol_map(settings),
        )
        # Synthetic option books are derived inside the overlay: a stress scales them too.
        inner: Feed = replay if options is None else options.wrap_feed(replay, clock=clock)
        feed: Feed = inner if stress is None else StressedFeed(inner, stress)
        names = ", ".join(Path(p).name for p in paths)
        source = f"replay:{names}" + (f" +stress:{format_spec(stress)}" if stress else "")
        ccxt_markets: Mapping[str, Mapping[str, Any]] = offline_markets(settings.exchange.id) or {}
        closers: list[Callable[[], Awaitable[None]]] = []
        # A replay is a rehearsal: its kill switch works within the run, but a trip is
        # not persisted where it would hold a real daemon on this state dir.
        rehearsal = tempfile.TemporaryDirectory(prefix="backstop-replay-")
        state_dir = Path(rehearsal.name)
        closers.append(_async(rehearsal.cleanup))
        log.info("replay_start", files=names, speed=settings.feed.speed, stress=source)
    else:
        clock = WallClock()
        exchange, ccxt_markets = await open_exchange(settings, log=log)
        live = _live_feed(settings, exchange, clock=clock, log=log)
        # Live option books come from their own exchange, merged with this feed.
        feed = live if options is None else options.wrap_feed(live, clock=clock)
        source = f"live:{settings.exchange.id}"
        # The feed owns the exchange object: closing it closes the exchange, last.
        closers = [live.aclose]
        state_dir = settings.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

    markets = _markets(settings, clock)
    if options is not None:
        source += f" +options:{options.label.split(':')[0]}"
        markets.update(options.engine_markets(clock))
    trader: Trader | None = None
    killswitch: KillSwitch | None = None
    venue: Venue | None = None
    governance: Governance | None = None
    funding: VenueFunding | None = None
    startup: list[Callable[[], Awaitable[object]]] = []
    all_listeners = list(listeners)
    tradeable = _tradeable(settings, ccxt_markets, log) if trade else []
    if tradeable:
        # A replay journals into its rehearsal directory unless journal.path names a file.
        journal = Journal(
            settings.journal.path or state_dir / "journal.sqlite",
            synchronous=settings.journal.synchronous,
            clock=clock,
            log=log,
        )
        journal.record_start(settings)
        closers.append(_discard(journal.aclose))
        throttler: Throttle | None
        if settings.mode == "paper":
            # Contract markets get the derivatives account (positions, margin, funding).
            # With [options], the option markets are markets of the same paper venue.
            make_venue = make_paper_venue if options is None else options.paper_venue
            paper = make_venue(
                markets={m.symbol: dict(ccxt_markets[m.symbol]) for m in tradeable},
                balances=paper_balances(settings),
                clock=clock,
                latency_ms=settings.paper.latency_ms,
                exchange_id=settings.exchange.id,
                terms={m.symbol: PerpTerms.from_settings(m.perp) for m in tradeable},
            )
            closers.append(paper.close)
            venue, throttler = paper, _AdmitAll()
            # The venue sees each book state before the strategy reacts to it.
            all_listeners.insert(0, paper)
        else:
            from bot.exchanges import make_reader
            from bot.venues.ccxt_venue import CcxtVenue

            # Bookkeeping reads get their own ccxt throttle: a kill's cancels must not
            # wait out an income read's weight (docs/runbook.md, "Kill priority").
            reader = make_reader(exchange)
            # And cancels too: a kill's cancel must not pay the last create's weight.
            canceller = make_reader(exchange)
            closers.extend([reader.close, canceller.close])
            venue = CcxtVenue(exchange, log=log, reader=reader, canceller=canceller)
            throttler = None  # the order manager's own asyncio-throttle limiter
        trader, killswitch = build_trader(
            settings,
            tradeable,
            ccxt_markets,
            venue,
            clock=clock,
            log=log,
            state_dir=state_dir,
            journal=journal,
            throttler=throttler,
            # A replay must repeat itself exactly; an exchange session must never
            # reuse a client id of an earlier one (ids also carry the start time).
            rng=random.Random(0) if settings.mode == "paper" else random.Random(),
            record=record,
        )
        governance = Governance.wire(settings, trader, killswitch, journal, clock=clock, log=log)
        all_listeners.insert(1 if settings.mode == "paper" else 0, trader)
        if trader.recorder is not None:
            all_listeners.append(trader.recorder)
        if settings.mode != "paper":
            from bot.recovery import VenueFunding

            funding = VenueFunding(journal, log=log, clock=clock)
            startup.append(
                _recovery(settings, trader, venue, journal, killswitch, funding=funding, log=log)
            )
            # The exchange's own cancel-all-after timer, kept re-armed while our books
            # are good: if this process or its host dies, the venue cancels for us.
            DeadManSwitch.wire(
                settings,
                exchange,
                trader.manager,
                startup=startup,
                closers=closers,
                clock=clock,
                log=log,
                healthy=lambda: all(m.book.state is BookState.VALID for m in markets.values()),
            )
    if options is not None:
        options.attach(
            trader, all_listeners, paper=trade and settings.mode == "paper", killswitch=killswitch
        )
        closers.extend(options.closers)
    engine = Engine(
        feed=feed,
        markets=markets,
        log=log,
        listeners=all_listeners,
        after_event=trader.after_event if trader is not None else None,
        on_status=trader.on_status if trader is not None else None,
    )
    return Run(
        settings,
        engine,
        feed,
        source=source,
        trader=trader,
        killswitch=killswitch,
        venue=venue,
        governance=governance,
        closers=closers,
        startup=startup,
        options=options,
        funding=funding,
        rehearse=settings.feed.source == "live" or settings.feed.speed > 0,
    )


def _recovery(
    settings: Settings,
    trader: Trader,
    venue: Venue,
    journal: Journal,
    killswitch: KillSwitch,
    *,
    funding: VenueFunding,
    log: Logger,
) -> Callable[[], Awaitable[object]]:
    async def run() -> None:
        from bot.recovery import recover

        await recover(
            trader,
            venue,
            journal,
            exchange_id=settings.exchange.id,
            prefix=settings.orders.client_id_prefix,
            log=log,
            funding=funding,
        )
        # A trip restored from the state dir holds across restarts: make sure the
        # orders the reconcile adopted are cancelled before anything else happens.
        await killswitch.confirm_flat()
        log.info("ready", kill_switch=killswitch.state.value, trading=not killswitch.is_tripped)

    return run


def _discard(fn: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await fn()

    return run


def _async(fn: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        fn()

    return run


async def open_exchange(
    settings: Settings, *, log: Logger
) -> tuple[Any, Mapping[str, Mapping[str, Any]]]:
    """The configured ccxt.pro exchange with its markets loaded and the symbols checked."""
    from bot.exchanges import make_exchange, map_ccxt_error

    ex = settings.exchange
    exchange = make_exchange(
        ex.id,
        sandbox=settings.mode == "testnet",
        api_key=ex.api_key.get_secret_value() if ex.api_key else None,
        secret=ex.secret.get_secret_value() if ex.secret else None,
        password=ex.password.get_secret_value() if ex.password else None,
        options=ex.options,
        url_overrides=ex.urls_override or None,
        extra_config={"timeout": round(ex.timeout_s * 1000)},
    )
    if ex.urls_override:
        log.warning("exchange_urls_overridden", paths=sorted(ex.urls_override))
    try:
        try:
            markets = await exchange.load_markets()
        except (ccxt.BaseError, OSError) as e:
            mapped = map_ccxt_error(e)
            raise type(mapped)(f"could not load {ex.id} markets: {mapped}") from e
        validate_symbols(settings, markets, source=f"exchange {ex.id}")
    except BackstopError:
        await exchange.close()
        raise
    return exchange, markets


def _live_feed(settings: Settings, exchange: Any, *, clock: Clock, log: Logger) -> LiveFeed:
    from bot.feeds.live import LiveFeed

    return LiveFeed(
        exchange,
        [m.symbol for m in settings.markets],
        clock=clock,
        depth_limit=settings.feed.book_depth_limit,
        rest_fallback=settings.feed.rest_fallback,
        rest_poll_interval_s=settings.feed.rest_poll_interval_s,
        reconnect_initial_s=settings.feed.reconnect_initial_s,
        reconnect_max_s=settings.feed.reconnect_max_s,
        rng=random.Random(),
        logger=log,
    )
