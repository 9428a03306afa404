"""A side's depth baseline: a time-aware, bias-corrected EWMA that can be slowed or frozen.

Why an EWMA and not a rolling median: on the bundled calm sample (spot BTCUSDT,
6,494 samples over 650 s, first band = 10 bps) a 60 s EWMA and a 60 s rolling median
gave nearly the same picture -- lowest depth/baseline 0.141 vs 0.150 (bid) and 0.294
vs 0.292 (ask), 1st percentile 0.645 vs 0.672 and 0.698 vs 0.683, share of samples
below 0.6 of baseline 0.48% vs 0.39% (bid) and 0.27% vs 0.29% (ask) -- while the EWMA
is O(1) in time and memory and the median needs the window's samples kept in order.

Time-aware: the book holds one depth between two samples, so each interval
``[t_prev, t)`` adds the *previous* sample's depth with weight ``1 - exp(-dt / tau)``.
A burst of updates in a millisecond then weighs a millisecond, not one vote each.

Bias-corrected: the average starts empty (weight 0) rather than at the first value,
and is ``sum / weight``; until one time constant has passed it is the time-weighted
mean of what it has seen, so warm-up is measured by :attr:`observed_ns`.

The caller chooses each interval's time constant: normal, slowed (``x factor``) or
frozen (``math.inf``, the interval is skipped). That is how the baseline is kept
from chasing a collapse (see :class:`bot.detector.FractureDetector`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class EwmaBaseline:
    max_step_ns: int = NS_PER_S
    """An interval longer than this counts as this long (feed stalls, resyncs)."""
    _sum: float = 0.0
    _weight: float = 0.0
    observed_ns: int = 0
    """Book time folded into the average (frozen intervals excluded), in exact ns."""

    @property
    def value(self) -> float | None:
        """The baseline, or None before any interval has been folded in."""
        return self._sum / self._weight if self._weight > 0 else None

    def add(self, depth: float, dt_ns: int, tau_s: float) -> None:
        """Fold in ``depth`` held for ``dt_ns``, with time constant ``tau_s`` (inf: skip)."""
        if dt_ns <= 0 or math.isinf(tau_s):
            return
        dt_ns = min(dt_ns, self.max_step_ns)
        keep = math.exp(-dt_ns / NS_PER_S / tau_s)
        self._sum = keep * self._sum + (1.0 - keep) * depth
        self._weight = keep * self._weight + (1.0 - keep)
        self.observed_ns += dt_ns
