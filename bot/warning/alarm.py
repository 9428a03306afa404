"""When the warning is *raised*: one rule shared by the bot and the evaluation.

The model gives a probability on every update; an operator (and the pre-arm policy)
needs a yes/no that does not flicker. :class:`Alarm`:

* while the detector is CALM: up when the probability reaches the threshold; down once
  it has stayed under it for ``hold_s``;
* while ARMING (a fracture rule holds, the engage dwell is running): unchanged, so a
  warning raised before the fracture keeps its effect through the dwell;
* while ENGAGED or RECOVERING: down. The backstop is already acting; the warning is
  about the next fracture.

``backstop model eval`` scores exactly this rule, on the same samples the bot sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.detect.machine import DetectorState

NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class Alarm:
    threshold: float
    hold_ns: int
    on: bool = False
    _above_ns: int = 0
    """Last time the probability was at or over the threshold."""

    @classmethod
    def of(cls, threshold: float, hold_s: float) -> Alarm:
        return cls(threshold=threshold, hold_ns=round(hold_s * NS_PER_S))

    def step(self, ts_ns: int, probability: float, state: DetectorState) -> bool:
        """Take one update; whether the alarm is up after it."""
        if state is DetectorState.ARMING:
            return self.on
        if state is not DetectorState.CALM:
            self.on = False
            return False
        if probability >= self.threshold:
            self.on = True
            self._above_ns = ts_ns
        elif self.on and ts_ns - self._above_ns >= self.hold_ns:
            self.on = False
        return self.on
