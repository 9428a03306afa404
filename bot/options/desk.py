"""The option desk: an engine listener over the option books and their underlying.

Per option book update, in order: :class:`bot.risk.options.OptionBookMonitor` measures
the band depth in premium and vega; the option's vega-depth detector
(:mod:`bot.options.detect`) updates; then the same road as every order of the bot:

    strategy decides -> greek gate trims -> risk engine checks -> order manager -> venue

The option strategy quotes while the detector is active (or, near expiry, the desk
flattens the position); the greek gate (:mod:`bot.options.gate`) trims each quote to
the largest lot the greek limits leave room for; the risk engine's pre-trade checks
(:mod:`bot.options.checks`: trading state, pauses, greek limits, ...) refuse what still
does not fit, counted by reason; the trader's :class:`~bot.orders.OrderManager` sends
the difference to the venue (the paper venue's option markets:
:mod:`bot.options.venue`), and every order change and fill is journaled by the
manager's observers. Fills come back as the manager's notices and move the option
inventory. Per underlying update: the forward, expiry settlement, the greek peaks.

The desk's :meth:`OptionDesk.hedge_delta` is what the underlying's
:class:`~strategies.option_backstop.DeltaHedgeStrategy` hedges.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from bot.book import OrderBook
from bot.detect.machine import DetectorState
from bot.detect.report import DetectorUpdate
from bot.detector import FractureDetector
from bot.feeds.events import Trade
from bot.journal import records as rk
from bot.logs import Logger
from bot.monitor import DepthSample
from bot.options.chain import LOT, TICK, surface_vol
from bot.options.checks import (
    FLATTEN_TAG,
    PREMIUM_BAND_CODE,
    GreekCheck,
    OptionPricing,
    PremiumBandCheck,
    option_checks,
)
from bot.options.detect import detector_config, vega_sample
from bot.options.episodes import EpisodeLog, OptionEpisode, episodes_html
from bot.options.gate import Extremes, GreekGate
from bot.options.inventory import OptionInventory
from bot.options.settings import OptionsSettings
from bot.orders.events import OrderFilled, OrderNotice, OrderStateChanged
from bot.orders.state import OrderState
from bot.risk.checks import QuoteContext
from bot.risk.greeks import GreekExposure, GreekLimits, black76
from bot.risk.options import OptionBookMonitor, OptionSpec
from strategies.base import Quote
from strategies.option_backstop import OptionBackstopStrategy, OptionQuoteContext

if TYPE_CHECKING:
    from bot.journal import Journal
    from bot.orders import OrderManager, TrackedOrder
    from bot.risk import RiskEngine

GREEK_CODES = frozenset(
    {
        "DELTA_EXCEEDS_MAX_PER_ORDER",
        "VEGA_EXCEEDS_MAX_PER_ORDER",
        "DELTA_EXCEEDS_MAX_TOTAL",
        "VEGA_EXCEEDS_MAX_TOTAL",
        "GAMMA_EXCEEDS_MAX_PER_ORDER",
        "GAMMA_EXCEEDS_MAX_TOTAL",
    }
)


def limits_of(settings: OptionsSettings) -> GreekLimits:
    lim = settings.limits
    return GreekLimits(
        max_delta_per_order=lim.max_delta_per_order,
        max_vega_per_order=lim.max_vega_per_order,
        max_delta_total=lim.max_delta_total,
        max_vega_total=lim.max_vega_total,
        max_gamma_per_order=lim.max_gamma_per_order,
        max_gamma_total=lim.max_gamma_total,
    )


@dataclass(slots=True)
class OptionDesk:
    settings: OptionsSettings
    specs: Mapping[str, OptionSpec]
    log: Logger
    trade: bool = True
    underlying_position: Callable[[], float] = lambda: 0.0
    """The underlying's position in base (the hedge), for the net delta."""
    underlying_resting: Callable[[], tuple[float, float]] = lambda: (0.0, 0.0)
    """The underlying's resting orders (buys, sells) in base: any subset may fill, so an
    option order's worst case of delta counts them like resting option orders."""
    orders: OrderManager | None = None
    """The trader's order manager (None: monitor only)."""
    risk: RiskEngine | None = None
    skip: Callable[[], str | None] = lambda: None
    """Why not to quote now (the trader's: kill switch tripped, journal behind)."""
    journal: Journal | None = None
    """Where option episodes are recorded (``option_episode``), for ``backstop report``."""
    monitor: OptionBookMonitor = field(init=False)
    detectors: dict[str, FractureDetector] = field(init=False)
    updates: dict[str, DetectorUpdate] = field(default_factory=dict)
    inventory: OptionInventory = field(init=False)
    gate: GreekGate = field(init=False)
    strategy: OptionBackstopStrategy = field(init=False)
    now_ms: int = 0
    episodes: Counter[str] = field(default_factory=Counter)
    episode_log: EpisodeLog = field(default_factory=EpisodeLog)
    _journaled: dict[int, dict[str, Any]] = field(default_factory=dict)
    """What was last journaled of each episode (by ``id()``)."""
    quotes_sent: int = 0
    flatten_orders: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Option quotes the risk engine refused, by code."""
    _last_refusal: dict[tuple[str, str], str] = field(default_factory=dict)
    max_abs_delta: float = 0.0
    """Net delta (options + underlying position), BTC: the peak of |value|."""
    max_abs_delta_ts_ms: int = 0
    max_abs_options_delta: float = 0.0
    max_abs_vega: float = 0.0
    max_worst_case_vega: float = 0.0
    """Peak of the worst case over resting orders (what the gate bounds)."""
    max_abs_gamma: float = 0.0
    max_worst_case_gamma: float = 0.0
    max_worst_case_delta: float = 0.0
    """Peak of |net delta| if any subset of every resting order (options and the
    underlying's) filled at once."""
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    _live: dict[str, TrackedOrder] = field(default_factory=dict)
    """Our option orders that may still be open (the tracker scans every order)."""
    _deferred: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """Per option: admitted quotes (side, contracts) the order manager creates once the
    orders they replace are cancelled. They are no open order yet, but the other options'
    worst case must count them: they were admitted against it."""

    def __post_init__(self) -> None:
        s = self.settings
        self.monitor = OptionBookMonitor(s.underlying, dict(self.specs), s.band_vol_points)
        cfg = detector_config(s.detector, s.band_vol_points)
        self.detectors = {sym: FractureDetector(cfg) for sym in self.specs}
        self.inventory = OptionInventory(self.specs)
        self.gate = GreekGate(limits_of(s))
        self.strategy = OptionBackstopStrategy(s.quoting)
        if self.orders is not None:
            self.orders.subscribe(self._on_notice)
        if self.risk is not None:
            band = PremiumBandCheck(
                self, s.limits.premium_band_vol_points, s.limits.premium_band_min_ticks, TICK
            )
            checks = option_checks(GreekCheck(limits_of(s), self), band)
            self.risk.use_checks(self.specs, checks)

    # ---------------------------------------------------------------- greeks

    @property
    def forward(self) -> float | None:
        return self.monitor.forward

    def vol_for(self, spec: OptionSpec) -> float:
        """The book's mid implied volatility, else the configured surface."""
        depth = self.monitor.latest.get(spec.symbol)
        if depth is not None:
            return depth.iv_mid
        f = self.monitor.forward or spec.strike
        syn = self.settings.synthetic
        return surface_vol(syn, spec.strike, f) if syn is not None else 0.5

    def options_exposure(self) -> GreekExposure:
        f = self.monitor.forward
        if f is None:
            return GreekExposure()
        return self.inventory.exposure(f, self.now_ms, self.vol_for)

    def options_delta(self) -> float:
        return self.options_exposure().delta

    def hedge_delta(self) -> float:
        """The options' delta as the hedge sees it: from ``hedge.expiry_hedge_s`` before
        an expiry, its options count at ``expiry_delta_weight`` of their delta."""
        f = self.monitor.forward
        h = self.settings.hedge
        if f is None:
            return 0.0
        if h.expiry_hedge_s <= 0:
            return self.options_delta()
        soon = self.now_ms + h.expiry_hedge_s * 1000
        total = 0.0
        for symbol, contracts in self.inventory.positions.items():
            if contracts == 0:
                continue
            spec = self.specs[symbol]
            g = black76(
                f, spec.strike, spec.years_to_expiry(self.now_ms), self.vol_for(spec), spec.call
            )
            weight = h.expiry_delta_weight if spec.expiry_ms <= soon else 1.0
            total += weight * contracts * spec.contract_size * g.delta
        return total

    def net_exposure(self) -> GreekExposure:
        g = self.options_exposure()
        return GreekExposure(g.delta + self.underlying_position(), g.vega, g.gamma)

    def per_contract(self, spec: OptionSpec, side: str) -> GreekExposure:
        f = self.monitor.forward or spec.strike
        g = black76(
            f, spec.strike, spec.years_to_expiry(self.now_ms), self.vol_for(spec), spec.call
        )
        sign = (1.0 if side == "buy" else -1.0) * spec.contract_size
        return GreekExposure(sign * g.delta, sign * g.vega_per_point, sign * g.gamma_per_pct(f))

    # ------------------------------------------- the greek check's source (checks.py)

    def per_contract_of(self, symbol: str, side: str) -> GreekExposure | None:
        spec = self.specs.get(symbol)
        if spec is None or self.monitor.forward is None:
            return None
        return self.per_contract(spec, side)

    def extremes_without(self, symbol: str) -> Extremes:
        resting = [self._exposure_of(o) for o in self.open_orders() if o.symbol != symbol]
        resting += self._deferred_exposures(symbol)
        buys, sells = self.underlying_resting()
        resting += [GreekExposure(max(0.0, buys)), GreekExposure(-max(0.0, sells))]
        return Extremes.of(self.net_exposure(), resting)

    def pricing_of(self, symbol: str) -> OptionPricing | None:
        spec = self.specs.get(symbol)
        f = self.monitor.forward
        if spec is None or f is None:
            return None
        return OptionPricing(spec, f, spec.years_to_expiry(self.now_ms), self.vol_for(spec))

    def delta_extremes(self) -> tuple[float, float]:
        """(lowest, highest) options delta if any subset of resting option orders fills
        (the underlying's position not included)."""
        resting = [self._exposure_of(o) for o in self.open_orders()]
        e = Extremes.of(self.options_exposure(), resting + self._deferred_exposures(""))
        return e.lo_delta, e.hi_delta

    def _deferred_exposures(self, without: str) -> list[GreekExposure]:
        return [
            self.per_contract(self.specs[sym], side).times(amount)
            for sym, quotes in self._deferred.items()
            if sym != without
            for side, amount in quotes
        ]

    def open_orders(self, symbol: str | None = None) -> list[TrackedOrder]:
        """Our unfinished option orders (on ``symbol``, or every option)."""
        return [
            o
            for o in self._live.values()
            if not o.is_finished and (symbol is None or o.symbol == symbol)
        ]

    def _exposure_of(self, order: TrackedOrder) -> GreekExposure:
        per = self.per_contract(self.specs[order.symbol], order.side)
        return per.times(max(0.0, order.remaining))

    # ---------------------------------------------------------------- listener

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        self.now_ms = max(self.now_ms, sample.ts_ns // 1_000_000)
        if symbol == self.settings.underlying:
            self.monitor.on_sample(symbol, book, sample)
            self._settle()
            self._peaks()
            return
        spec = self.specs.get(symbol)
        if spec is None:
            return
        if self.trade and self.orders is not None and not self._watchers:
            self._start_watchers()
        self.monitor.on_sample(symbol, book, sample)
        depth = self.monitor.latest.get(symbol)
        if depth is None or depth.ts_ns != sample.ts_ns:
            return  # no forward yet, or no volatility prices this book
        update = self.detectors[symbol].update(vega_sample(depth, sample))
        self.updates[symbol] = update
        if update.transition is not None:
            if (
                update.state is DetectorState.ENGAGED
                and update.transition.from_state is not DetectorState.RECOVERING
            ):
                self.episodes[symbol] += 1
                self._journal_episode(self.episode_log.start(symbol, self.now_ms, update.baseline))
            elif not update.active:
                self._journal_episode(self.episode_log.end(symbol, self.now_ms))
            self.log.info(
                "option_detector_transition",
                symbol=symbol,
                state=update.state.value,
                bid_vega=round(depth.bid.vega_quote, 2),
                ask_vega=round(depth.ask.vega_quote, 2),
            )
        self.episode_log.depth(symbol, depth.bid.vega_quote, depth.ask.vega_quote)
        if self.trade and self.orders is not None and self.skip() is None:
            self._quote(spec, book, sample, update, depth.iv_mid)
        self._peaks()

    def on_trade(self, trade: Trade) -> None:
        return None  # option fills are the venue's (order manager notices)

    # ---------------------------------------------------------------- quoting

    def _quote(
        self,
        spec: OptionSpec,
        book: OrderBook,
        sample: DepthSample,
        update: DetectorUpdate,
        iv: float,
    ) -> None:
        assert self.orders is not None
        forward = self.monitor.forward
        assert forward is not None
        flatten = self._flatten_quote(spec, sample)
        if flatten is not None or self._flattening(spec):
            quotes: list[Quote] = [flatten] if flatten is not None else []
        else:
            ctx = OptionQuoteContext(
                spec, update, forward, self.now_ms, iv, sample.best_bid, sample.best_ask, TICK, LOT
            )
            quotes = list(self.strategy.decide(ctx).quotes)
        # The gate sizes: each quote trimmed to the largest lot the greek limits leave
        # room for; one with no room for a lot goes on as one lot, and the risk check
        # refuses it naming the cap that binds.
        extremes = self.extremes_without(spec.symbol)
        wanted = [(q.amount, self.per_contract(spec, q.side)) for q in quotes]
        sized = [
            replace(q, amount=n if reason is None else LOT)
            for q, (n, reason) in zip(quotes, self.gate.admit(wanted, extremes, LOT), strict=True)
        ]
        leaving = [o for o in self.open_orders(spec.symbol) if o.state is OrderState.PENDING_CANCEL]
        context = QuoteContext(
            mid=sample.mid,
            best_bid=sample.best_bid,
            best_ask=sample.best_ask,
            position_base=self.inventory.positions.get(spec.symbol, 0.0),
            resting_buy_base=sum(max(0.0, o.remaining) for o in leaving if o.side == "buy"),
            resting_sell_base=sum(max(0.0, o.remaining) for o in leaving if o.side == "sell"),
            open_orders=len(leaving),
        )
        allowed = sized
        if self.risk is not None:
            check = self.risk.check_quotes(sized, context)
            allowed = check.allowed
            for quote, denial in check.denied:
                self._refused(quote, denial)
        for q in allowed:
            self._last_refusal.pop((q.symbol, q.side), None)
        result = self.orders.sync_quotes(spec.symbol, allowed)
        # Each sync supersedes the previous one's deferred creates.
        self._deferred[spec.symbol] = [(p.quote.side, p.amount) for p in result.deferred]
        sent = len(result.creating) + len(result.deferred)
        self.quotes_sent += sent
        self.episode_log.quoted(spec.symbol, sent)
        if flatten is not None and sent:
            self.flatten_orders += sent

    def _created(self, order: TrackedOrder) -> None:
        """A deferred create was sent: from now on it counts as an open order."""
        waiting = self._deferred.get(order.symbol)
        if not waiting:
            return
        for i, (side, amount) in enumerate(waiting):
            if side == order.side and abs(amount - order.amount) < 1e-9:
                del waiting[i]
                return

    def _refused(self, quote: Quote, denial: str) -> None:
        code = denial.split(":", 1)[0]
        self.refused[code] += 1
        self.episode_log.refused(quote.symbol)
        key = (quote.symbol, quote.side)
        if self._last_refusal.get(key) != code:  # once per change of reason
            self._last_refusal[key] = code
            self.log.info(
                "option_quote_refused", symbol=quote.symbol, side=quote.side, reason=denial
            )

    def _flattening(self, spec: OptionSpec) -> bool:
        window = self.settings.quoting.flatten_before_expiry_s
        return window > 0 and spec.expiry_ms - self.now_ms < window * 1000

    def _flatten_quote(self, spec: OptionSpec, sample: DepthSample) -> Quote | None:
        """Near expiry: one order closing the position through the touch."""
        if not self._flattening(spec):
            return None
        position = self.inventory.positions.get(spec.symbol, 0.0)
        amount = math.floor(abs(position) / LOT + 1e-9) * LOT
        if amount < LOT:
            return None
        through = self.settings.quoting.flatten_ticks * TICK
        side: Literal["buy", "sell"] = "sell" if position > 0 else "buy"
        price = sample.best_ask + through if side == "buy" else max(TICK, sample.best_bid - through)
        return Quote(
            spec.symbol,
            side,
            round(price, 10),
            round(amount, 8),
            post_only=False,
            tag=f"{FLATTEN_TAG}{side}",
        )

    # ---------------------------------------------------------------- fills

    def _on_notice(self, notice: OrderNotice) -> None:
        if notice.symbol not in self.specs:
            return
        if isinstance(notice, OrderStateChanged):
            order = self.orders.get(notice.client_id) if self.orders is not None else None
            if notice.previous is None and order is not None:
                self._created(order)
            if order is None or order.is_finished:
                self._live.pop(notice.client_id, None)
            else:
                self._live[notice.client_id] = order
            return
        if not isinstance(notice, OrderFilled):
            return
        fee = float(notice.fee_cost or 0.0)
        self.inventory.apply_fill(notice.symbol, notice.side, notice.price, notice.amount, fee)
        self.episode_log.filled(notice.symbol, notice.amount)
        self.log.info(
            "option_fill",
            symbol=notice.symbol,
            side=notice.side,
            price=notice.price,
            amount=notice.amount,
            fee=fee,
        )

    # ---------------------------------------------------------------- lifecycle

    def _start_watchers(self) -> None:
        """Order and trade pushes of every option market (fills arrive this way)."""
        assert self.orders is not None
        for symbol in self.specs:
            self._watchers.append(asyncio.ensure_future(self.orders.watch(symbol)))

    async def aclose(self) -> None:
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        # Fills landing after an episode ended, and an episode still open, are in the
        # journal's final word on each episode (the latest record).
        if self.journal is not None and not self.journal.closed:
            for episode in self.episode_log.episodes:
                self._journal_episode(episode)

    def _settle(self) -> None:
        f = self.monitor.forward
        if f is None:
            return
        for s in self.inventory.settle_expired(self.now_ms, f):
            self.log.info("option_settled", **s.to_dict())
        for symbol in self.episode_log.open_symbols():
            # An expired book updates no more: its episode ends at expiry.
            expiry = self.specs[symbol].expiry_ms
            if expiry <= self.now_ms:
                self._journal_episode(self.episode_log.end(symbol, expiry))

    def _journal_episode(self, episode: OptionEpisode | None) -> None:
        if self.journal is None or episode is None:
            return
        payload = episode.to_dict()
        if self._journaled.get(id(episode)) == payload:
            return
        self._journaled[id(episode)] = payload
        end = payload["end_ms"]
        self.journal.append(
            rk.OPTION_EPISODE,
            {
                **payload,
                "underlying": self.settings.underlying,
                "synthetic": self.settings.source == "synthetic",
                "caps": self.settings.limits.model_dump(),
            },
            ts_ns=int(end if end is not None else payload["start_ms"]) * 1_000_000,
            owned=True,
        )

    def _peaks(self) -> None:
        g = self.options_exposure()
        net = g.delta + self.underlying_position()
        if abs(net) > self.max_abs_delta:
            self.max_abs_delta = abs(net)
            self.max_abs_delta_ts_ms = self.now_ms
        self.max_abs_options_delta = max(self.max_abs_options_delta, abs(g.delta))
        self.max_abs_vega = max(self.max_abs_vega, abs(g.vega))
        self.max_abs_gamma = max(self.max_abs_gamma, abs(g.gamma))
        self.episode_log.peaks(net, g.vega, g.gamma)
        worst = self.extremes_without("")
        self.max_worst_case_vega = max(
            self.max_worst_case_vega, abs(worst.hi_vega), abs(worst.lo_vega)
        )
        self.max_worst_case_gamma = max(
            self.max_worst_case_gamma, abs(worst.hi_gamma), abs(worst.lo_gamma)
        )
        self.max_worst_case_delta = max(
            self.max_worst_case_delta, abs(worst.hi_delta), abs(worst.lo_delta)
        )

    # ---------------------------------------------------------------- reporting

    def gauges(self) -> dict[str, Any]:
        """For ``/metrics`` (``Metrics.set_options``)."""
        g = self.options_exposure()
        return {
            "delta": g.delta,
            "net_delta": g.delta + self.underlying_position(),
            "vega": g.vega,
            "gamma": g.gamma,
            "engaged": sum(1 for u in self.updates.values() if u.active),
            "episodes": sum(self.episodes.values()),
        }

    def status(self) -> dict[str, Any]:
        """For ``status --json`` and metrics: per option and the book's greeks."""
        f = self.monitor.forward
        options: list[dict[str, Any]] = []
        for sym in sorted(self.specs):
            depth = self.monitor.latest.get(sym)
            update = self.updates.get(sym)
            options.append(
                {
                    "symbol": sym,
                    "detector": update.state.value if update else "warming up",
                    "engaged": bool(update and update.active),
                    "iv_mid": depth.iv_mid if depth else None,
                    "bid_vega": depth.bid.vega_quote if depth else None,
                    "ask_vega": depth.ask.vega_quote if depth else None,
                    "bid_premium_quote": depth.bid.premium_quote if depth else None,
                    "ask_premium_quote": depth.ask.premium_quote if depth else None,
                    "baseline_vega": list(update.baseline) if update else None,
                    "position": self.inventory.positions.get(sym, 0.0),
                    "open_orders": len(self.open_orders(sym)),
                    "episodes": self.episodes.get(sym, 0),
                }
            )
        g = self.options_exposure()
        lim = self.settings.limits
        return {
            "source": self.settings.source,
            "synthetic": self.settings.source == "synthetic",
            "underlying": self.settings.underlying,
            "forward": f,
            "options": options,
            "engaged": sum(1 for o in options if o["engaged"]),
            "episodes_total": sum(self.episodes.values()),
            "delta": g.delta,
            "net_delta": g.delta + self.underlying_position(),
            "vega": g.vega,
            "gamma": g.gamma,
            "limits": lim.model_dump(),
            "hedge_trigger": self.settings.hedge_trigger(),
            "open_orders": len(self.open_orders()),
            "refused": dict(self.refused),
            "inventory": self.inventory.to_dict(f, self.now_ms, self.vol_for),
        }

    def summary(self) -> dict[str, Any]:
        lim = self.settings.limits
        return {
            "source": self.settings.source,
            "episodes": dict(self.episodes),
            "episodes_total": sum(self.episodes.values()),
            "quotes_placed": self.quotes_sent,
            "flatten_orders": self.flatten_orders,
            "risk_refused": dict(self.refused),
            "greek_denied": {k: v for k, v in self.refused.items() if k in GREEK_CODES},
            "greek_trimmed": self.gate.trimmed,
            "max_abs_net_delta": self.max_abs_delta,
            "max_abs_net_delta_ts_ms": self.max_abs_delta_ts_ms,
            "max_abs_options_delta": self.max_abs_options_delta,
            "max_delta_total": lim.max_delta_total,
            "hedge_trigger": self.settings.hedge_trigger(),
            "max_abs_vega": self.max_abs_vega,
            "max_worst_case_vega": self.max_worst_case_vega,
            "max_vega_total": lim.max_vega_total,
            "max_abs_gamma": self.max_abs_gamma,
            "max_worst_case_gamma": self.max_worst_case_gamma,
            "max_gamma_total": lim.max_gamma_total,
            "max_worst_case_net_delta": self.max_worst_case_delta,
            "premium_band_refused": self.refused.get(PREMIUM_BAND_CODE, 0),
            "inventory": self.inventory.to_dict(self.monitor.forward, self.now_ms, self.vol_for),
            "lows_vega": {f"{s}|{side}": v for (s, side), v in sorted(self.monitor.lows.items())},
            "episode_list": self.episode_log.to_list(),
        }

    def report_html(self) -> str:
        """The HTML report's option section (``--report``)."""
        return episodes_html(
            self.episode_log.to_list(),
            self.settings.limits.model_dump(),
            synthetic=self.settings.source == "synthetic",
            underlying=self.settings.underlying,
        )
