"""How fast each side's depth is falling, over a short lookback, in O(1) per sample.

A small ring of ``(ts, bid depth, ask depth)`` points, at most one per
``lookback / slots`` of book time, so its length is bounded (about ``slots + 2``)
however fast updates arrive. The reference point is the newest one at least
``lookback`` old; the drop is measured from it to now, so the measuring window is
between ``lookback`` and ``lookback + lookback / slots`` (plus any gap in the data).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class DropRate:
    lookback_s: float = 1.0
    slots: int = 8
    _ring: deque[tuple[int, float, float]] = field(default_factory=deque)

    def push(self, ts_ns: int, bid: float, ask: float) -> None:
        """Record the depths at ``ts_ns`` (non-decreasing), keeping the ring short."""
        ring = self._ring
        step_ns = int(self.lookback_s * NS_PER_S / self.slots)
        if not ring or ts_ns - ring[-1][0] >= step_ns:
            ring.append((ts_ns, bid, ask))
        horizon = ts_ns - int(self.lookback_s * NS_PER_S)
        # Keep exactly one point at or before the horizon: the reference.
        while len(ring) >= 2 and ring[1][0] <= horizon:
            ring.popleft()

    def reference(self, ts_ns: int) -> tuple[int, float, float] | None:
        """The point the drop is measured from, or None until the ring spans the lookback."""
        if not self._ring:
            return None
        ref = self._ring[0]
        if ts_ns - ref[0] < int(self.lookback_s * NS_PER_S):
            return None
        return ref

    def __len__(self) -> int:
        return len(self._ring)
