"""The engage/disengage state machine: hysteresis by two conditions, dwell by time.

Each update the detector reduces the book to two booleans -- ``fractured`` (some
fracture rule holds) and ``recovered`` (every side is back above its recovery level,
the spread is back under its recovery level, and no rule holds) -- and the machine
moves on this table (``now`` is the sample's time, never the wall clock):

==========  ==========================================  ==========
from        when                                        to
==========  ==========================================  ==========
CALM        fractured                                   ARMING
ARMING      not fractured                               CALM
ARMING      fractured for ``engage_dwell_s``            ENGAGED
ENGAGED     recovered                                   RECOVERING
RECOVERING  not recovered (relapse)                     ENGAGED
RECOVERING  recovered for ``disengage_dwell_s``         CALM
==========  ==========================================  ==========

A zero dwell lets one update pass straight through (CALM -> ENGAGED, ENGAGED ->
CALM); the update then reports one transition, from where it started to where it
ended. Because ``recovered`` asks for more than ``not fractured`` (a higher depth
level), a book hovering at the fracture threshold cannot leave ENGAGED, and one
hovering at the recovery threshold cannot re-arm from CALM: no flapping between
"active" and "calm". (A book hovering at the recovery level while engaged does move
between ENGAGED and RECOVERING, both active; it only stands down after an unbroken
``disengage_dwell_s`` of recovery.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

NS_PER_S = 1_000_000_000


class DetectorState(StrEnum):
    CALM = "calm"
    ARMING = "arming"
    ENGAGED = "engaged"
    RECOVERING = "recovering"

    @property
    def active(self) -> bool:
        """Whether the backstop should be quoting (engaged, or engaged and recovering)."""
        return self in (DetectorState.ENGAGED, DetectorState.RECOVERING)


class Cause(StrEnum):
    FRACTURED = "fractured"
    CLEARED = "cleared"
    ENGAGE_DWELL = "engage_dwell_elapsed"
    RECOVERED = "recovered"
    RELAPSED = "relapsed"
    DISENGAGE_DWELL = "disengage_dwell_elapsed"


TRANSITIONS: dict[tuple[DetectorState, Cause], DetectorState] = {
    (DetectorState.CALM, Cause.FRACTURED): DetectorState.ARMING,
    (DetectorState.ARMING, Cause.CLEARED): DetectorState.CALM,
    (DetectorState.ARMING, Cause.ENGAGE_DWELL): DetectorState.ENGAGED,
    (DetectorState.ENGAGED, Cause.RECOVERED): DetectorState.RECOVERING,
    (DetectorState.RECOVERING, Cause.RELAPSED): DetectorState.ENGAGED,
    (DetectorState.RECOVERING, Cause.DISENGAGE_DWELL): DetectorState.CALM,
}
"""Every allowed move; :class:`DwellMachine` makes no other."""


@dataclass(slots=True)
class DwellMachine:
    engage_dwell_ns: int
    disengage_dwell_ns: int
    state: DetectorState = DetectorState.CALM
    since_ns: int = 0
    """When the current state was entered."""

    @classmethod
    def from_seconds(cls, engage_dwell_s: float, disengage_dwell_s: float) -> DwellMachine:
        return cls(round(engage_dwell_s * NS_PER_S), round(disengage_dwell_s * NS_PER_S))

    def step(self, now_ns: int, fractured: bool, recovered: bool) -> list[Cause]:
        """Advance on this update's evidence; the causes of each move made, in order."""
        causes: list[Cause] = []
        # At most two moves: a zero dwell passes through ARMING or RECOVERING at once.
        for _ in range(2):
            cause = self._cause(now_ns, fractured, recovered)
            if cause is None:
                break
            self.state = TRANSITIONS[(self.state, cause)]
            self.since_ns = now_ns
            causes.append(cause)
        return causes

    def _cause(self, now_ns: int, fractured: bool, recovered: bool) -> Cause | None:
        state, held = self.state, now_ns - self.since_ns
        if state is DetectorState.CALM:
            return Cause.FRACTURED if fractured else None
        if state is DetectorState.ARMING:
            if not fractured:
                return Cause.CLEARED
            return Cause.ENGAGE_DWELL if held >= self.engage_dwell_ns else None
        if state is DetectorState.ENGAGED:
            return Cause.RECOVERED if recovered else None
        if not recovered:
            return Cause.RELAPSED
        return Cause.DISENGAGE_DWELL if held >= self.disengage_dwell_ns else None
