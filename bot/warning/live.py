"""The early warning inside the bot: one :class:`MarketWarning` per traded market.

The trader calls :meth:`MarketWarning.on_reading` after the detector has read each
book sample and :meth:`MarketWarning.on_trade` for each trade. It computes the
features, scores them (:class:`~bot.warning.model.WarningModel`), keeps the alarm
(:class:`~bot.warning.alarm.Alarm`) and exposes the level for status, metrics and the
run summary. Each time the alarm goes up or down it writes one ``warning`` journal
record, with the probability and the features that pushed it most.

Pre-arming (``warning.pre_arm``, off by default) is the only way the warning acts: while
the alarm is up the market's detector engages after ``pre_arm_engage_dwell_s`` instead
of its ``engage_dwell_s``. That is all it does. It never places, moves or cancels an
order: the detector's own fracture rules must still hold before anything engages, and
the strategy, budget and risk checks are the same as ever. With pre-arm off this object
only reads, so trading is exactly what it is without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.book import OrderBook
from bot.detect.report import DetectorUpdate
from bot.detector import FractureDetector
from bot.feeds.events import Trade
from bot.journal import records as rk
from bot.monitor import DepthSample
from bot.warning.alarm import Alarm
from bot.warning.features import FeatureTracker
from bot.warning.model import WarningModel

if TYPE_CHECKING:
    from bot.journal import Journal
    from bot.settings import Settings

WARNING_KIND = rk.WARNING
"""Journal record kind: the alarm went up or down (payload: :meth:`MarketWarning.record`)."""
NS_PER_S = 1_000_000_000
TOP_CONTRIBUTIONS = 3


@dataclass(slots=True)
class MarketWarning:
    symbol: str
    model: WarningModel
    detector: FractureDetector
    pre_arm: bool = False
    pre_arm_dwell_ns: int = 0
    journal: Journal | None = None
    features: FeatureTracker = field(default_factory=FeatureTracker)
    alarm: Alarm = field(init=False)
    probability: float | None = None
    """The latest probability of a fracture starting within the model's horizon."""
    updated_ns: int | None = None
    alarms: int = 0
    """How many times the alarm went up."""
    pre_armed_engagements: int = 0
    """Episodes that engaged while pre-armed (after the shorter dwell)."""
    _normal_dwell_ns: int = field(init=False)
    _last: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.alarm = Alarm.of(self.model.threshold, self.model.alarm_hold_s)
        self._normal_dwell_ns = self.detector.machine.engage_dwell_ns
        # Never lengthen the dwell: pre-arm only ever makes the detector quicker.
        self.pre_arm_dwell_ns = min(self.pre_arm_dwell_ns, self._normal_dwell_ns)
        self.features.fracture_ratio = self.detector.config.baseline_fraction or 0.0

    @property
    def up(self) -> bool:
        return self.alarm.on

    @property
    def pre_armed(self) -> bool:
        """The detector is running on the shorter dwell now."""
        return self.pre_arm and self.alarm.on

    def on_trade(self, trade: Trade) -> None:
        self.features.on_trade(trade)

    def levels(self, book: OrderBook) -> tuple[Any, Any]:
        """What :meth:`on_reading` reads of the book, for a reading handled later."""
        return self.features.levels(book)

    def on_reading(
        self,
        book: OrderBook,
        sample: DepthSample,
        update: DetectorUpdate,
        top: tuple[Any, Any] | None = None,
    ) -> None:
        """Score one reading; ``top`` is :meth:`levels` taken at the reading when this
        runs after the book has moved on (the trader runs it once the reading's orders
        have left: nothing it changes is read before the next reading)."""
        x = self.features.update(book, sample, update, top)
        p = self.model.probability(x)
        self.probability = p
        self.updated_ns = update.ts_ns
        self._last = x
        was = self.alarm.on
        up = self.alarm.step(update.ts_ns, p, update.state)
        tr = update.transition
        if self.pre_arm and tr is not None and tr.engaged and was:
            self.pre_armed_engagements += 1
        if up != was:
            if up:
                self.alarms += 1
            if self.journal is not None:
                # Built once this event's orders have left (the journal may hold it).
                self.journal.append_deferred(
                    WARNING_KIND, self._record_builder(update), ts_ns=update.ts_ns
                )
        if self.pre_arm:
            # Takes effect from the next update: the dwell of an arming that begins
            # then is measured against the shorter time while the alarm is up.
            machine = self.detector.machine
            machine.engage_dwell_ns = self.pre_arm_dwell_ns if up else self._normal_dwell_ns

    def top_contributions(self, n: int = TOP_CONTRIBUTIONS) -> list[dict[str, float | str]]:
        return _top(self.model, self._last, n)

    def record(self, update: DetectorUpdate) -> dict[str, Any]:
        """The ``warning`` journal payload."""
        return self._record_builder(update)()

    def _record_builder(self, update: DetectorUpdate) -> Callable[[], dict[str, Any]]:
        # What changes with the next reading is read now; the model is fixed.
        model, x, symbol, pre_arm = self.model, self._last, self.symbol, self.pre_arm
        alarm, p, state = self.alarm.on, self.probability, update.state.value
        return lambda: {
            "symbol": symbol,
            "alarm": alarm,
            "probability": p,
            "threshold": model.threshold,
            "horizon_s": model.horizon_s,
            "detector_state": state,
            "pre_arm": pre_arm,
            "model": model.name,
            "top": _top(model, x, TOP_CONTRIBUTIONS),
        }

    def status(self) -> dict[str, Any]:
        """For ``backstop status``: the level now and why."""
        p = self.probability
        return {
            "probability": p,
            "level": _level(p, self.model.threshold, self.alarm.on),
            "alarm": self.alarm.on,
            "threshold": self.model.threshold,
            "horizon_s": self.model.horizon_s,
            "pre_arm": self.pre_arm,
            "pre_armed": self.pre_armed,
            "alarms": self.alarms,
            "model": self.model.name,
            "top": self.top_contributions() if self.alarm.on else [],
        }

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "alarms": self.alarms,
            "pre_arm": self.pre_arm,
            "pre_armed_engagements": self.pre_armed_engagements,
        }


def _top(model: WarningModel, x: list[float], n: int) -> list[dict[str, float | str]]:
    """The ``n`` features that push ``x`` most toward an alarm."""
    if not x:
        return []
    return [{"feature": f, "value": v, "contribution": c} for f, v, c in model.contributions(x)[:n]]


def _level(p: float | None, threshold: float, up: bool) -> str:
    """A word for dashboards: ``high`` while the alarm is up, ``elevated`` from half the
    threshold, else ``low`` (``unknown`` before the first update)."""
    if p is None:
        return "unknown"
    if up:
        return "high"
    return "elevated" if p >= threshold / 2.0 else "low"


def attach(
    desks: Mapping[str, Any],
    settings: Settings,
    *,
    journal: Journal | None = None,
) -> dict[str, MarketWarning]:
    """Give each desk its :class:`MarketWarning` (``desk.warning``) per ``settings.warning``;
    nothing when the warning is disabled. Raises :class:`~bot.errors.UserError` for a
    model file that cannot be read."""
    cfg = settings.warning
    if not cfg.enabled:
        return {}
    model = WarningModel.load(cfg.model)
    out: dict[str, MarketWarning] = {}
    for symbol, desk in desks.items():
        warning = MarketWarning(
            symbol=symbol,
            model=model,
            detector=desk.detector,
            pre_arm=cfg.pre_arm,
            pre_arm_dwell_ns=round(cfg.pre_arm_engage_dwell_s * NS_PER_S),
            journal=journal,
        )
        desk.warning = warning
        out[symbol] = warning
    return out


__all__ = ["WARNING_KIND", "MarketWarning", "attach"]
