"""The two-person rule: resuming after a loss-guard kill needs two different admins.

With ``governance.two_person_resume``, a kill tripped by a loss guard (``daily_loss``,
``drawdown``) is resumed only once two different admin identities have approved it:
the first ``backstop resume`` is recorded and left pending; a second one from another
identity completes it; the same identity twice is refused with the reason. An identity
is the approving token's name (``admin.alice``), or the socket peer's uid for a
request on the Unix socket without a token.

A loss trip stays "loss" until the next resume, even if someone trips the switch again
meanwhile (an operator's kill must not turn a loss trip into one admin can resume
alone); at start the state is rebuilt from the journal's kill records since the last
resume. A pending approval lapses after ``approval_ttl_s`` or when the switch trips
again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.killswitch import KillRecord

LOSS_GUARDS = frozenset({"daily_loss", "drawdown"})
NS_PER_S = 1_000_000_000


def is_loss_trip(source: str, who: str) -> bool:
    return source == "guard" and who.removeprefix("guard:") in LOSS_GUARDS


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an approval did: ``done`` (resume now), pending, or ``refused`` (and why)."""

    done: bool
    approvers: tuple[str, ...]
    needed: int
    refused: str | None = None

    @property
    def pending(self) -> bool:
        return not self.done and self.refused is None


@dataclass(slots=True)
class _Pending:
    trip: str
    approvers: list[str]
    reasons: list[str]
    first_ns: int


class ResumeApprovals:
    def __init__(
        self,
        *,
        enabled: bool,
        ttl_s: float = 3600.0,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.enabled = enabled
        self._ttl_ns = round(ttl_s * NS_PER_S)
        self._now_ns = now_ns
        self.loss_trip: dict[str, Any] | None = None
        """The loss-guard trip awaiting a resume (reason, who, ts_ns), if any."""
        self._pending: _Pending | None = None

    # ------------------------------------------------------------ following the switch

    def on_kill(self, record: KillRecord) -> None:
        self._follow(record.action, record.source, record.who, record.reason, record.ts_ns)

    def load(self, kills: Iterable[Mapping[str, Any]]) -> None:
        """Replay the journal's ``kill`` payloads (with ``ts_ns``), oldest first."""
        for k in kills:
            self._follow(
                str(k.get("action")),
                str(k.get("source")),
                str(k.get("who")),
                str(k.get("reason")),
                int(k.get("ts_ns") or 0),
            )

    def _follow(self, action: str, source: str, who: str, reason: str, ts_ns: int) -> None:
        if action == "trip":
            self._pending = None
            if is_loss_trip(source, who):
                self.loss_trip = {"reason": reason, "who": who, "ts_ns": ts_ns}
        elif action == "resume":
            self.loss_trip = None
            self._pending = None

    # ------------------------------------------------------------ approving

    @property
    def needed(self) -> int:
        return 2 if self.enabled and self.loss_trip is not None else 1

    def pending(self) -> dict[str, Any] | None:
        p = self._pending
        if p is None or self._expired(p):
            return None
        return {"approvers": list(p.approvers), "needed": self.needed, "first_ns": p.first_ns}

    def _expired(self, p: _Pending) -> bool:
        return self._now_ns() - p.first_ns > self._ttl_ns

    def approve(self, identity: str, reason: str, *, trip: str) -> Verdict:
        """One admin's ``resume``; ``trip`` identifies the trip being resumed."""
        needed = self.needed
        if needed == 1:
            return Verdict(True, (identity,), 1)
        p = self._pending
        if p is None or p.trip != trip or self._expired(p):
            self._pending = _Pending(trip, [identity], [reason], self._now_ns())
            return Verdict(False, (identity,), needed)
        if identity in p.approvers:
            return Verdict(
                False,
                tuple(p.approvers),
                needed,
                refused=(
                    f"APPROVAL_ALREADY_GIVEN: {identity} already approved this resume; the "
                    "two-person rule needs a second, different admin (their own token)"
                ),
            )
        p.approvers.append(identity)
        p.reasons.append(reason)
        if len(p.approvers) < needed:
            return Verdict(False, tuple(p.approvers), needed)
        self._pending = None
        return Verdict(True, tuple(p.approvers), needed)
