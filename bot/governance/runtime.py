"""The running bot's governance: the policy in force, its changes, resume approvals.

:meth:`Governance.wire` (called by :func:`bot.app.assemble`) journals the policy in
force at start, hooks the evidence log into the trader and the approvals into the kill
switch. The daemon (:mod:`bot.daemon`) calls :meth:`Governance.change_policy` for an
admin's ``POST /policy`` and :meth:`Governance.approve_resume` for every ``resume``.

A policy change takes effect between two events of the engine, in one synchronous
step: the detectors take the new activation criteria (keeping their baselines and
state), the backstop is rebuilt with the new quoting limits and scope, and the
``policy`` record (old and new hash, who, why, the whole policy) is appended. Nothing
else runs in between, so in the journal every decision before that record was taken
under the old version and every one after it under the new one: what ``audit replay``
relies on. The new text is written to the policy file first (atomically), so a
restart keeps it; if that write fails, nothing changes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import OperationalError, UserError
from bot.governance.approvals import ResumeApprovals, Verdict
from bot.governance.detectors import detector_config, reconfigure
from bot.governance.evidence import EvidenceLog
from bot.governance.gate import GovernedStrategy
from bot.governance.policy import LoadedPolicy, market_settings, policy_of
from bot.journal import records as rk

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.journal.writer import Journal
    from bot.killswitch import KillSwitch
    from bot.logs import Logger
    from bot.settings.models import Settings
    from bot.trader import Trader
    from strategies.base import Strategy


class PolicyRefused(UserError):
    """The daemon will not take this policy (unchanged, no policy file, invalid)."""

    http_status = 409


def make_strategy_for(settings: Settings) -> Strategy:
    """The strategy ``settings`` ask for; the backstop always under its policy."""
    if settings.strategy.name == "backstop":
        return GovernedStrategy(policy_of(settings).policy)
    from strategies import make_strategy

    return make_strategy(settings.strategy.name, settings.strategy)


class Governance:
    def __init__(
        self,
        *,
        policy: LoadedPolicy,
        policy_file: Path | None,
        trader: Trader,
        journal: Journal,
        approvals: ResumeApprovals,
        log: Logger,
    ) -> None:
        self.policy = policy
        self.policy_file = policy_file
        self.trader = trader
        self.journal = journal
        self.approvals = approvals
        self._log = log
        self.changes = 0

    @classmethod
    def wire(
        cls,
        settings: Settings,
        trader: Trader,
        killswitch: KillSwitch,
        journal: Journal,
        *,
        clock: Clock,
        log: Logger,
    ) -> Governance:
        policy = policy_of(settings)
        g = settings.governance
        approvals = ResumeApprovals(enabled=g.two_person_resume, ttl_s=g.approval_ttl_s)
        # A loss trip from before this start still needs its two approvals, if the kill
        # switch came up still tripped (a rehearsal's does not persist its trips).
        if killswitch.is_tripped:
            approvals.load(_kills_since_last_resume(journal))
        killswitch.subscribe(approvals.on_kill)
        gov = cls(
            policy=policy,
            policy_file=g.policy_file,
            trader=trader,
            journal=journal,
            approvals=approvals,
            log=log,
        )
        strategy = trader.strategy
        if isinstance(strategy, GovernedStrategy) and g.evidence:
            trader.evidence = EvidenceLog(
                journal,
                budget=trader.budget,
                strategy=strategy,
                policy_hash=lambda: gov.policy.hash,
                top_levels=g.evidence_top_levels,
                checkpoint_s=g.checkpoint_s,
            )
        previous = _last_policy_hash(journal)
        journal.append(
            rk.POLICY,
            {
                "action": "start",
                **policy.record(),
                "previous_hash": previous,
                "who": "start",
                "reason": "policy in force at start",
            },
        )
        outside = [s for s in trader.desks if not policy.policy.in_scope(s)]
        log.info(
            "policy_in_force",
            hash=policy.hash,
            name=policy.policy.name,
            source=policy.source,
            changed_since_last_start=previous is not None and previous != policy.hash,
        )
        if outside:
            log.warning("markets_outside_policy_scope", symbols=outside, action="watch only")
        return gov

    # ------------------------------------------------------------ queries

    def status(self) -> dict[str, Any]:
        p = self.policy
        return {
            "hash": p.hash,
            "name": p.policy.name,
            "source": p.source,
            "changes": self.changes,
            "two_person_resume": self.approvals.enabled,
            "resume_needs": self.approvals.needed,
            "pending_approval": self.approvals.pending(),
        }

    def describe(self) -> dict[str, Any]:
        """``GET /policy``: the policy in force, whole."""
        return {**self.status(), "policy": self.policy.policy.canonical(), "text": self.policy.text}

    # ------------------------------------------------------------ changes

    def change_policy(self, new: LoadedPolicy, *, who: str, reason: str) -> dict[str, Any]:
        old = self.policy
        if self.policy_file is None:
            raise PolicyRefused(
                "NO_POLICY_FILE: this daemon runs under the implicit policy of its settings; "
                "start it with governance.policy_file (or --policy) to change policies at run "
                "time"
            )
        if new.hash == old.hash:
            raise PolicyRefused(f"POLICY_UNCHANGED: version {old.short} is already in force")
        assert new.text is not None
        _write_atomically(self.policy_file, new.text)
        new = replace(new, source=str(self.policy_file))
        self._apply(new)
        self.journal.append(
            rk.POLICY,
            {
                "action": "change",
                **new.record(),
                "previous_hash": old.hash,
                "who": who,
                "reason": reason,
            },
        )
        self.policy = new
        self.changes += 1
        self._log.warning(
            "policy_changed", previous=old.hash, hash=new.hash, who=who, reason=reason
        )
        outside = [s for s in self.trader.desks if not new.policy.in_scope(s)]
        return {
            "message": f"policy {old.short} -> {new.short} in force"
            + (f" ({', '.join(outside)} now watched only)" if outside else ""),
            "previous_hash": old.hash,
            "hash": new.hash,
        }

    def _apply(self, new: LoadedPolicy) -> None:
        policy = new.policy
        for symbol, desk in self.trader.desks.items():
            config = detector_config(desk.detector.config, policy, symbol)
            reconfigure(desk.detector, config)
            desk.settings = market_settings(desk.settings, policy)
            _follow_dwell(getattr(desk, "warning", None), config.engage_dwell_s)
        strategy = self.trader.strategy
        if isinstance(strategy, GovernedStrategy):
            strategy.set_policy(policy)

    # ------------------------------------------------------------ resume approvals

    def approve_resume(
        self, identity: str, reason: str, *, trip: str, trip_status: dict[str, Any]
    ) -> Verdict:
        verdict = self.approvals.approve(identity, reason, trip=trip)
        state = "approved" if verdict.done else "refused" if verdict.refused else "pending"
        if verdict.needed > 1 or verdict.refused:
            self.journal.append(
                rk.APPROVAL,
                {
                    "action": "resume",
                    "state": state,
                    "approver": identity,
                    "approvers": list(verdict.approvers),
                    "needed": verdict.needed,
                    "reason": reason,
                    "refused": verdict.refused,
                    "trip": {k: trip_status.get(k) for k in ("reason", "source", "who", "since")},
                    "loss_trip": self.approvals.loss_trip,
                },
            )
        return verdict


def _follow_dwell(warning: Any, engage_dwell_s: float) -> None:
    """The early warning's pre-arm puts the detector back on the dwell it saw at start
    when its alarm drops: tell it the policy's new one, or the change would be undone."""
    if warning is None or not hasattr(warning, "_normal_dwell_ns"):
        return
    normal = round(engage_dwell_s * 1_000_000_000)
    warning._normal_dwell_ns = normal
    warning.pre_arm_dwell_ns = min(warning.pre_arm_dwell_ns, normal)
    if warning.pre_armed:
        warning.detector.machine.engage_dwell_ns = warning.pre_arm_dwell_ns


def _kills_since_last_resume(journal: Journal) -> list[dict[str, Any]]:
    kills: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):  # an unreadable journal: start without history
        for r in journal.reader.records([rk.KILL]):
            if r.payload.get("action") == "resume":
                kills.clear()
            kills.append({**r.payload, "ts_ns": r.ts_ns})
    return kills


def _last_policy_hash(journal: Journal) -> str | None:
    with contextlib.suppress(Exception):
        rows = journal.reader.query(
            "SELECT json_extract(payload, '$.hash') FROM records WHERE kind = ? "
            "ORDER BY id DESC LIMIT 1",
            (rk.POLICY,),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None
    return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OperationalError(
            f"cannot write the new policy to {path}: {e.strerror or e}; nothing was changed"
        ) from None
