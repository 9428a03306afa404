"""Greek limits on option quotes, against the worst case of what rests.

Any subset of our resting option orders may fill, so a quote is checked against the
position plus every resting order that pushes the same greek the same way (the worst
case of the orders resting on the other options, and of the quotes already admitted
for this one). A quote that would break a cap is trimmed to the largest lot that fits;
one that cannot fit a lot is refused with :func:`bot.risk.greeks.check_greeks`'s reason
(``DELTA_EXCEEDS_MAX_TOTAL: ...``). An order that shrinks a total is never refused for
that total. Delta totals include the underlying's position (the hedge) and its resting
orders (any subset of those may fill too), so hedging frees delta room; vega and gamma are
the options' only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.risk.greeks import GreekExposure, GreekLimits, check_greeks


@dataclass(slots=True)
class Extremes:
    """Worst-case totals: the position plus all positive (``hi``) or negative (``lo``)
    contributions of resting orders, per greek."""

    hi_delta: float
    lo_delta: float
    hi_vega: float
    lo_vega: float
    hi_gamma: float = 0.0
    lo_gamma: float = 0.0

    @classmethod
    def of(cls, position: GreekExposure, resting: Iterable[GreekExposure]) -> Extremes:
        e = cls(
            position.delta,
            position.delta,
            position.vega,
            position.vega,
            position.gamma,
            position.gamma,
        )
        for r in resting:
            e.add(r)
        return e

    def add(self, g: GreekExposure) -> None:
        self.hi_delta += max(0.0, g.delta)
        self.lo_delta += min(0.0, g.delta)
        self.hi_vega += max(0.0, g.vega)
        self.lo_vega += min(0.0, g.vega)
        self.hi_gamma += max(0.0, g.gamma)
        self.lo_gamma += min(0.0, g.gamma)

    def before(self, g: GreekExposure) -> GreekExposure:
        """The total ``g`` would add to, in the direction it pushes."""
        return GreekExposure(
            self.hi_delta if g.delta > 0 else self.lo_delta,
            self.hi_vega if g.vega > 0 else self.lo_vega,
            self.hi_gamma if g.gamma > 0 else self.lo_gamma,
        )


def max_units(per_unit: GreekExposure, before: GreekExposure, limits: GreekLimits) -> float:
    """The most units (contracts) of ``per_unit`` that keep every cap, from ``before``."""
    best = math.inf
    for value, total, per_cap, total_cap in (
        (per_unit.delta, before.delta, limits.max_delta_per_order, limits.max_delta_total),
        (per_unit.vega, before.vega, limits.max_vega_per_order, limits.max_vega_total),
        (per_unit.gamma, before.gamma, limits.max_gamma_per_order, limits.max_gamma_total),
    ):
        if value == 0:
            continue
        if per_cap is not None:
            best = min(best, per_cap / abs(value))
        if total_cap is not None:
            # Toward zero first (free), then up to the cap on the other side.
            moving_away = (value > 0) == (total >= 0)
            room = total_cap - abs(total) if moving_away else abs(total) + total_cap
            best = min(best, max(0.0, room) / abs(value))
    return best


@dataclass(slots=True)
class GreekGate:
    limits: GreekLimits
    denied: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0

    def admit(
        self,
        wanted: Sequence[tuple[float, GreekExposure]],
        extremes: Extremes,
        lot: float,
    ) -> list[tuple[float, str | None]]:
        """For each ``(contracts, greeks per contract)``: the contracts admitted (0 when
        refused) and the refusal reason. Admitted ones are added to ``extremes``."""
        out: list[tuple[float, str | None]] = []
        for contracts, per in wanted:
            before = extremes.before(per)
            fit = min(contracts, max_units(per, before, self.limits))
            fit = math.floor(fit / lot + 1e-9) * lot if lot > 0 else fit
            if fit < lot or fit <= 0:
                # The binding cap: what one lot would break (the full size may break a
                # per-order cap the trim would have fixed).
                one = per.times(lot)
                full = per.times(contracts)
                reason = (
                    check_greeks(one, before, self.limits)
                    or check_greeks(full, before, self.limits)
                    or "GREEK_LIMIT: no room"
                )
                self.denied[reason.split(":")[0]] += 1
                out.append((0.0, reason))
                continue
            if fit < contracts:
                self.trimmed += 1
            extremes.add(per.times(fit))
            out.append((round(fit, 8), None))
        return out
