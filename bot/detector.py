"""Depth-fracture detection for one market, updated on every book sample.

:class:`FractureDetector` watches quote depth in one band (by default the narrowest,
nearest the mid) on each side, and the spread. Each :meth:`~FractureDetector.update`
costs O(1): two numbers are read from the :class:`~bot.monitor.DepthSample`, never
the levels; time is the sample's ``ts_ns``, never the wall clock.

Rules (each off when its threshold is 0/None, see :class:`DetectorConfig`):

* ``floor``: a side's depth below ``depth_floor_quote``. Live from the first sample.
* ``baseline``: a side's depth below ``baseline_fraction`` x its baseline.
* ``drop_rate``: a side losing more than ``max_depth_drop_per_s`` of its baseline per
  second over the last ``drop_lookback_s``. Once fired it keeps holding until that
  side is back at or above ``recovery_fraction`` x baseline: a fast fall *into* the
  band between the fracture and recovery levels holds the engage dwell, while a fast
  fall that stops at a healthy level (or a blip that bounces straight back) does not.
* ``spread``: spread wider than ``max_spread_bps``.

Baseline (:mod:`bot.detect.baseline`): a time-aware EWMA per side with time constant
``baseline_window_s``. The two baseline rules stay off until it has averaged
``warmup_s`` of book time (default: one time constant, when the bias-corrected EWMA
is a fair mean rather than the first few samples). It must not chase the collapse it
is measuring, so how each interval between samples is folded in depends on the state
the detector was in during it: CALM -- normal; ARMING -- frozen (a condition holds);
ENGAGED/RECOVERING -- ``engaged_baseline_slowdown`` times slower (default 20x: with a
60 s window a 30-second episode moves the baseline by 2.5-4% of the gap, while a book
that stays thin for a quarter of an hour is eventually accepted as the new normal
rather than keeping the backstop engaged for ever; ``inf`` freezes it).

Recovery (both sides, and the spread): depth >= ``recovery_fraction`` x baseline (once
the baseline is ready), depth >= ``depth_floor_quote`` x ``floor_recovery_multiple``
(if the floor rule is on), spread <= ``max_spread_bps`` x ``spread_recovery_fraction``
(if the spread rule is on), and no rule holding. The state machine, with dwell times,
is in :mod:`bot.detect.machine`.

``health`` in [0, 1] is the worst of what the book has over what recovery needs:
``ratio / recovery_fraction`` per side, ``depth / (floor x floor_recovery_multiple)``
per side, and ``recovery spread / spread``, each clipped to [0, 1]. 1 means every
recovery level is met; at the default fracture threshold (0.3 of baseline with
recovery at 0.6) it is 0.5. ``stress = 1 - health`` is what spreads widen with.

Own orders: the backstop's own resting quotes are book depth too. Pass their quote
notional within the band as ``own_quote`` so the detector measures the market without
them, or the bot's quoting would look like a recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from bot.book import OrderBook, Side
from bot.detect.baseline import EwmaBaseline
from bot.detect.config import DetectorConfig
from bot.detect.droprate import DropRate
from bot.detect.machine import Cause, DetectorState, DwellMachine
from bot.detect.report import RULE_ORDER, DetectorUpdate, Recovery, Rule, Transition, Trigger
from bot.detect.volatility import Volatility
from bot.feeds.events import Trade
from bot.monitor import DepthSample

if TYPE_CHECKING:
    from bot.settings import MarketSettings

__all__ = [
    "RULE_ORDER",
    "Cause",
    "DetectorConfig",
    "DetectorListener",
    "DetectorState",
    "DetectorUpdate",
    "FractureDetector",
    "Recovery",
    "Rule",
    "Transition",
    "Trigger",
]

NS_PER_S = 1_000_000_000
_INF = float("inf")
_SIDES = (Side.BID, Side.ASK)


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


class FractureDetector:
    """One market's fracture detector and volatility estimate. Not thread-safe."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        max_step_ns = round(config.max_baseline_step_s * NS_PER_S)
        self._base = (EwmaBaseline(max_step_ns), EwmaBaseline(max_step_ns))
        self._warmup_ns = round(config.warmup_s * NS_PER_S)
        self._drop = DropRate(lookback_s=config.drop_lookback_s)
        self._latched: list[Trigger | None] = [None, None]
        self.machine = DwellMachine.from_seconds(config.engage_dwell_s, config.disengage_dwell_s)
        self.volatility = Volatility(
            tau_s=config.vol_window_s,
            warmup_s=config.vol_warmup_s,
            trade_weight=config.vol_trade_weight,
        )
        self._last_ts: int | None = None
        self._last_depth = (0.0, 0.0)
        self._arming_trigger: Trigger | None = None
        self._recovering_since_ns = 0
        self._recovering_min_ratio: float | None = None
        self.engaged_since_ns: int | None = None
        """When the current episode engaged; None when not active."""
        self.episode_trigger: Trigger | None = None
        """The trigger that started the current episode (the rule that began arming)."""
        self.relapses = 0
        """RECOVERING -> ENGAGED moves in the current episode."""
        self.last_recovery: Recovery | None = None
        """The evidence the most recent episode ended on."""
        self.updates = 0

    @classmethod
    def from_market(cls, market: MarketSettings) -> FractureDetector:
        return cls(DetectorConfig.from_market(market))

    @property
    def state(self) -> DetectorState:
        return self.machine.state

    @property
    def baseline_ready(self) -> bool:
        return self._base[0].observed_ns >= self._warmup_ns

    def on_trade(self, trade: Trade) -> None:
        self.volatility.on_trade(trade.ts_ns, trade.price)

    def update(
        self, sample: DepthSample, own_quote: tuple[float, float] = (0.0, 0.0)
    ) -> DetectorUpdate:
        """Take one book sample; ``own_quote`` is our own (bid, ask) quote depth in the band."""
        cfg = self.config
        last = self._last_ts
        # Late samples (released from a resync buffer) count as simultaneous.
        now = sample.ts_ns if last is None or sample.ts_ns > last else last
        band = cfg.band_index
        item = sample.depth.item
        depth = (
            max(0.0, item(0, band, 1) - own_quote[0]),
            max(0.0, item(1, band, 1) - own_quote[1]),
        )
        spread = sample.spread_bps
        machine = self.machine

        # 1. Baseline: fold in the interval since the last sample, at the depth the book
        # held through it, with the time constant of the state it was in.
        if last is not None:
            state = machine.state
            if state is DetectorState.CALM:
                tau = cfg.baseline_window_s
            elif state is DetectorState.ARMING:
                tau = _INF
            else:
                tau = cfg.baseline_window_s * cfg.engaged_baseline_slowdown
            self._base[0].add(self._last_depth[0], now - last, tau)
            self._base[1].add(self._last_depth[1], now - last, tau)
        self._last_ts, self._last_depth = now, depth
        baseline = (self._base[0].value, self._base[1].value)
        ready = self.baseline_ready

        # 2. Rules: the first that holds (RULE_ORDER) is the trigger.
        trigger = self._rules(now, depth, baseline, ready, spread)
        fractured = trigger is not None

        # 3. Recovery evidence and the state machine.
        ratio = (
            depth[0] / baseline[0] if baseline[0] else None,
            depth[1] / baseline[1] if baseline[1] else None,
        )
        levels = self._recovery_levels(baseline, ready)
        recovered = (
            not fractured
            and depth[0] >= levels[0]
            and depth[1] >= levels[1]
            and (
                cfg.max_spread_bps is None
                or spread <= cfg.max_spread_bps * cfg.spread_recovery_fraction
            )
        )
        before = machine.state
        causes = machine.step(now, fractured, recovered)
        transition = (
            self._on_transition(
                before, causes, now, trigger, depth, baseline, ratio, spread, levels
            )
            if causes
            else None
        )
        if machine.state is DetectorState.RECOVERING:
            low = min((r for r in ratio if r is not None), default=None)
            prev = self._recovering_min_ratio
            if low is not None and (prev is None or low < prev):
                self._recovering_min_ratio = low

        # 4. Volatility and health.
        self.volatility.on_mid(now, sample.mid)
        health = self._health(depth, ratio, ready, spread)
        self.updates += 1
        return DetectorUpdate(
            ts_ns=now,
            state=machine.state,
            transition=transition,
            trigger=trigger,
            depth=depth,
            baseline=baseline,
            ratio=ratio,
            baseline_ready=ready,
            spread_bps=spread,
            health=health,
            sigma_bps=self.volatility.sigma_bps,
            engaged_since_ns=self.engaged_since_ns,
            episode_trigger=self.episode_trigger,
        )

    # ------------------------------------------------------------------ pieces

    def _rules(
        self,
        now: int,
        depth: tuple[float, float],
        baseline: tuple[float | None, float | None],
        ready: bool,
        spread: float,
    ) -> Trigger | None:
        """The first rule that holds, in RULE_ORDER (None: none does). Only the first is
        read, so no other trigger is built; the drop rule still runs (it keeps state)."""
        cfg = self.config
        first: Trigger | None = None
        floor = cfg.depth_floor_quote
        if floor > 0:
            for i in (0, 1):
                if depth[i] < floor:
                    first = Trigger(
                        Rule.FLOOR, _SIDES[i], depth[i], floor, baseline[i], depth[i], now
                    )
                    break
        frac = cfg.baseline_fraction
        if first is None and frac is not None and ready:
            for i in (0, 1):
                base = baseline[i]
                if base is not None and depth[i] < frac * base:
                    first = Trigger(
                        Rule.BASELINE, _SIDES[i], depth[i], frac * base, base, depth[i], now
                    )
                    break
        if cfg.max_depth_drop_per_s > 0:
            self._drop.push(now, depth[0], depth[1])
            if ready:
                dropped = self._drop_rule(now, depth, baseline)
                if first is None and dropped:
                    first = dropped[0]
        max_spread = cfg.max_spread_bps
        if first is None and max_spread is not None and spread > max_spread:
            first = Trigger(Rule.SPREAD, None, spread, max_spread, None, None, now)
        return first

    def _drop_rule(
        self, now: int, depth: tuple[float, float], baseline: tuple[float | None, float | None]
    ) -> list[Trigger]:
        cfg = self.config
        ref = self._drop.reference(now)
        out: list[Trigger] = []
        for i in (0, 1):
            base = baseline[i]
            if not base:
                continue
            if ref is not None and self._latched[i] is None:
                rate = (ref[1 + i] - depth[i]) / base / ((now - ref[0]) / NS_PER_S)
                if rate > cfg.max_depth_drop_per_s:
                    self._latched[i] = Trigger(
                        Rule.DROP_RATE,
                        _SIDES[i],
                        rate,
                        cfg.max_depth_drop_per_s,
                        base,
                        depth[i],
                        now,
                    )
            latched = self._latched[i]
            if latched is not None:
                if depth[i] >= cfg.recovery_fraction * base:
                    self._latched[i] = None
                else:
                    out.append(latched)
        return out

    def _recovery_levels(
        self, baseline: tuple[float | None, float | None], ready: bool
    ) -> tuple[float, float]:
        cfg = self.config
        floor = cfg.depth_floor_quote * cfg.floor_recovery_multiple
        b0, b1 = baseline
        if ready and b0 is not None and b1 is not None:
            return max(floor, cfg.recovery_fraction * b0), max(floor, cfg.recovery_fraction * b1)
        return floor, floor

    def _health(
        self,
        depth: tuple[float, float],
        ratio: tuple[float | None, float | None],
        ready: bool,
        spread: float,
    ) -> float:
        cfg = self.config
        health = 1.0
        if ready:
            for r in ratio:
                if r is not None:
                    health = min(health, r / cfg.recovery_fraction)
        need = cfg.depth_floor_quote * cfg.floor_recovery_multiple
        if need > 0:
            health = min(health, depth[0] / need, depth[1] / need)
        if cfg.max_spread_bps is not None and spread > 0:
            health = min(health, cfg.max_spread_bps * cfg.spread_recovery_fraction / spread)
        return _clip01(health)

    def _on_transition(
        self,
        before: DetectorState,
        causes: Sequence[Cause],
        now: int,
        trigger: Trigger | None,
        depth: tuple[float, float],
        baseline: tuple[float | None, float | None],
        ratio: tuple[float | None, float | None],
        spread: float,
        levels: tuple[float, float],
    ) -> Transition:
        after = self.machine.state
        recovery: Recovery | None = None
        if Cause.FRACTURED in causes:
            self._arming_trigger = trigger
        if after is DetectorState.CALM:
            self._arming_trigger = None
        if after.active and not before.active:
            self.engaged_since_ns = now
            self.episode_trigger = self._arming_trigger or trigger
            self.relapses = 0
        if Cause.RELAPSED in causes:
            self.relapses += 1
        if Cause.RECOVERED in causes:
            self._recovering_since_ns = now
            self._recovering_min_ratio = None
        if before.active and not after.active:
            since = self._recovering_since_ns
            low = self._recovering_min_ratio
            for r in ratio:
                if r is not None and (low is None or r < low):
                    low = r
            recovery = Recovery(
                since_ns=since,
                ts_ns=now,
                depth=depth,
                baseline=baseline,
                ratio=ratio,
                min_ratio=low,
                spread_bps=spread,
                levels=levels,
            )
            self.last_recovery = recovery
            self.engaged_since_ns = None
            self.episode_trigger = None
            self._recovering_min_ratio = None
        return Transition(
            from_state=before,
            to_state=after,
            ts_ns=now,
            causes=tuple(causes),
            trigger=self.episode_trigger if after.active and not before.active else trigger,
            recovery=recovery,
        )


class DetectorListener:
    """An engine listener running one :class:`FractureDetector` per market.

    ``on_update`` (if given) is called with every reading, in order; the latest
    reading per market is kept in :attr:`last`. ``own_quote`` (if given) returns the
    bot's own (bid, ask) quote depth in a market's watched band, to exclude it.
    """

    def __init__(
        self,
        configs: Mapping[str, DetectorConfig],
        *,
        on_update: Callable[[str, DetectorUpdate], None] | None = None,
        own_quote: Callable[[str], tuple[float, float]] | None = None,
    ) -> None:
        self.detectors = {symbol: FractureDetector(cfg) for symbol, cfg in configs.items()}
        self.last: dict[str, DetectorUpdate] = {}
        self._on_update = on_update
        self._own_quote = own_quote

    @classmethod
    def from_markets(
        cls,
        markets: Sequence[MarketSettings],
        *,
        on_update: Callable[[str, DetectorUpdate], None] | None = None,
    ) -> DetectorListener:
        configs = {m.symbol: DetectorConfig.from_market(m) for m in markets}
        return cls(configs, on_update=on_update)

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        detector = self.detectors.get(symbol)
        if detector is None:
            return
        own = self._own_quote(symbol) if self._own_quote is not None else (0.0, 0.0)
        update = detector.update(sample, own)
        self.last[symbol] = update
        if self._on_update is not None:
            self._on_update(symbol, update)

    def on_trade(self, trade: Trade) -> None:
        detector = self.detectors.get(trade.symbol)
        if detector is not None:
            detector.on_trade(trade)
