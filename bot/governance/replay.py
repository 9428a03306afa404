"""``backstop audit replay EPISODE``: re-run an episode from its journaled evidence.

From the evidence window that covers the episode (:mod:`bot.governance.evidence`), the
replay restores the detector's checkpointed state and the strategy's held ladder,
takes the policy in force from the journal (or ``--policy FILE``, to ask "what would
this policy have done"), and feeds the journaled market data, reading by reading,
through the same code the bot runs:

1. the **detector**: every reading's state and transition (engage, stand down) must
   be what the bot journaled;
2. the **strategy** under the policy (scope, quoting limits, replenishment): every
   quote, exactly (side, price, amount, post-only, tag);
3. the **budget**'s caps on those quotes, from the journaled exposure and limits;
4. the **risk engine** may only have removed quotes (its state is not replayed);
5. every **order** the bot placed in the window must be one of the quotes its recent
   decisions allowed (price within a tick, amount within one step: the order manager
   rounds both to the market's precision).

Policy changes journaled inside the window are applied where they happened, after
checking each version's content against its hash. The first difference is reported as
a *dispute*, with the record, its time and both sides; the replay stops there, since
everything after it would differ too. Exit status: 0 every decision matches; 1 a
dispute (or a broken hash chain: the evidence cannot be trusted); 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bot.book import OrderBook
from bot.budget import Budget, BudgetLimits, Exposure
from bot.clock import ManualClock
from bot.detect.config import DetectorConfig
from bot.detector import DetectorUpdate, FractureDetector
from bot.errors import UserError
from bot.feeds.events import Trade
from bot.governance import snapshot
from bot.governance.detectors import detector_config, reconfigure, restore
from bot.governance.gate import GovernedStrategy
from bot.governance.policy import LoadedPolicy, Policy, load_policy_file, loaded
from bot.journal import records as rk
from bot.journal.audit import add_journal_flags, journal_path_from_args, verify
from bot.journal.reader import JournalReader, Record
from bot.monitor import DepthSample
from strategies.base import InventoryView, MarketContext, MarketRules, Quote

EXIT_OK = 0
EXIT_DISPUTE = 1
EXIT_USAGE = 2
ORDER_LOOKBACK_S = 10.0
"""An order must match a quote allowed by a decision at most this long before it (a
create can wait for the cancels of the quotes it replaces)."""
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Dispute:
    record_id: int
    ts_ns: int
    stage: str
    """``detector``, ``strategy``, ``budget``, ``risk``, ``orders``, ``policy`` or ``evidence``."""
    detail: str

    def describe(self) -> str:
        return (
            f"DISPUTE at record {self.record_id} ({_iso(self.ts_ns)}): {self.stage}: {self.detail}"
        )


@dataclass(slots=True)
class ReplayReport:
    episode: dict[str, Any]
    symbol: str
    window: int
    open_id: int
    close_id: int | None
    policy_hash: str
    policy_source: str
    policy_override: bool
    chain_ok: bool
    chain_summary: str
    readings: int = 0
    pre_readings: int = 0
    decisions: int = 0
    orders: int = 0
    policy_changes: int = 0
    transitions: list[tuple[int, str, str]] = field(default_factory=list)
    last_ts: int = 0
    evidence_bytes: int = 0
    dispute: Dispute | None = None

    @property
    def ok(self) -> bool:
        return self.dispute is None and self.chain_ok

    @property
    def window_s(self) -> float:
        return max(0, self.last_ts - self.window) / NS_PER_S

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["window_s"] = self.window_s
        return out

    def lines(self) -> list[str]:
        e = self.episode
        start, end = e.get("start_ts_ns"), e.get("end_ts_ns")
        span = (
            f"{_iso(int(start))} -> {_iso(int(end))} ({(int(end) - int(start)) / 1e9:.1f} s)"
            if start is not None and end is not None
            else f"{_iso(int(start or 0))} -> (still active)"
        )
        kb = self.evidence_bytes / 1024
        out = [
            f"episode {e.get('id')}: {span}",
            f"evidence window {self.window} (records {self.open_id}-"
            f"{self.close_id if self.close_id is not None else 'end'}): {self.readings} readings "
            f"over {self.window_s:.1f} s, {kb:.0f} KB"
            + (f" ({kb / (self.window_s / 60):.0f} KB per minute)" if self.window_s > 0 else ""),
            f"policy {self.policy_hash[:12]} ({self.policy_source})"
            + (" -- NOT the journaled one (--policy)" if self.policy_override else ", as journaled")
            + (
                f", {self.policy_changes} change(s) inside the window"
                if self.policy_changes
                else ""
            ),
            f"journal hash chain: {self.chain_summary}",
        ]
        moves = ", ".join(f"{a}->{b} at {_iso(ts)}" for ts, a, b in self.transitions) or "none"
        out.append(
            f"re-ran {self.pre_readings + self.readings} detector readings (transitions: {moves}), "
            f"{self.decisions} strategy decisions and budget fits; {self.orders} orders checked"
        )
        if self.dispute is not None:
            out.append(self.dispute.describe())
        elif not self.chain_ok:
            out.append("NOT VERIFIED: the decisions replay, but the journal's chain is broken")
        else:
            out.append(
                "MATCH: every engage/disengage decision, quote and order in the window is what "
                "the detector and strategy compute from the journaled data under this policy"
            )
        return out


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).isoformat(timespec="milliseconds")


def _f(x: Any) -> float:
    """A journaled float (non-finite ones are stored as strings)."""
    return float(x)


def _fo(x: Any) -> float | None:
    return None if x is None else float(x)


def _values(names: list[str], values: list[Any]) -> dict[str, Any]:
    return {
        n: (float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v)
        for n, v in zip(names, values, strict=True)
    }


def _row(q: Quote) -> list[Any]:
    return [q.side, q.price, q.amount, q.post_only, q.tag]


def _show(row: list[Any] | None) -> str:
    if row is None:
        return "nothing"
    side, price, amount, post_only, tag = row
    return f"{side} {float(amount):.10g} @ {float(price):.10g} ({tag or 'untagged'}" + (
        ", post-only)" if post_only else ")"
    )


def _diff_quotes(journaled: list[list[Any]], computed: list[list[Any]]) -> str | None:
    if journaled == computed:
        return None
    for i in range(max(len(journaled), len(computed))):
        a = journaled[i] if i < len(journaled) else None
        b = computed[i] if i < len(computed) else None
        if a != b:
            counts = (
                f" (the bot journaled {len(journaled)} quotes, the replay computes {len(computed)})"
                if len(journaled) != len(computed)
                else f" of {len(journaled)}"
            )
            return f"quote {i + 1}{counts}: journaled {_show(a)}; replay computes {_show(b)}"
    return "the quote lists differ"


class _Replayer:
    def __init__(
        self,
        reader: JournalReader,
        opening: Record,
        policy: LoadedPolicy,
        override: bool,
        report: ReplayReport,
    ) -> None:
        p = opening.payload
        self.reader = reader
        self.report = report
        self.symbol = str(p["symbol"])
        self.window = int(p["w"])
        self.override = override
        self.policy = policy
        recorded = snapshot.load(p["config"])
        if not isinstance(recorded, DetectorConfig):
            raise UserError(f"record {opening.id}: the evidence has no detector config")
        self.detector: FractureDetector = restore(
            p["detector"], detector_config(recorded, policy.policy, self.symbol)
        )
        self.strategy = GovernedStrategy(policy.policy)
        self.strategy.restore_held(self.symbol, tuple(self._quote(r) for r in p["held"]))
        limits = dict(p["limits"])
        self.budget = Budget(BudgetLimits(**limits))
        self.rules = MarketRules(**p["rules"])
        self.bands = tuple(float(b) for b in p["bands"])
        self.inv_fields = list(p["inv_fields"])
        self.x_fields = list(p["x_fields"])
        self.allowed: deque[tuple[int, list[list[Any]]]] = deque()
        self.seen_orders: set[str] = set()

    def _quote(self, row: list[Any]) -> Quote:
        side, price, amount, post_only, tag = row
        return Quote(self.symbol, side, float(price), float(amount), bool(post_only), str(tag))

    def dispute(self, record: Record, stage: str, detail: str) -> None:
        self.report.dispute = Dispute(record.id, record.ts_ns, stage, detail)

    # ------------------------------------------------------------ the detector

    def _trades(self, trades: list[list[Any]]) -> None:
        for ts, price, amount, side in trades:
            self.detector.on_trade(
                Trade(self.symbol, int(ts), float(price), float(amount), side, trade_id="")
            )

    def _check_state(
        self, record: Record, update: DetectorUpdate, state: str, tn: list[str] | None, what: str
    ) -> bool:
        t = update.transition
        got_tn = None if t is None else [t.from_state.value, t.to_state.value]
        if update.state.value == state and got_tn == tn:
            if t is not None:
                self.report.transitions.append((update.ts_ns, t.from_state.value, t.to_state.value))
            return True
        self.dispute(
            record,
            "detector",
            f"{what}: the bot's detector was {state}"
            + (f" ({tn[0]}->{tn[1]})" if tn else "")
            + f", the replay's is {update.state.value}"
            + (f" ({got_tn[0]}->{got_tn[1]})" if got_tn else "")
            + f" (band depth {update.depth[0]:.6g}/{update.depth[1]:.6g}, baseline "
            f"{_g(update.baseline[0])}/{_g(update.baseline[1])}, "
            f"spread {update.spread_bps:.4g} bps)",
        )
        return False

    def _dwell(self, override: Any) -> None:
        """The engage dwell the bot's detector ran this update on (journaled when the
        early warning's pre-arm had shortened it)."""
        machine = self.detector.machine
        if override is not None:
            machine.engage_dwell_ns = int(override)
        else:
            machine.engage_dwell_ns = round(self.detector.config.engage_dwell_s * NS_PER_S)

    def pre(self, record: Record) -> bool:
        band = self.detector.config.band_index
        for i, row in enumerate(record.payload.get("pre") or []):
            ts, bq, aq, spread, mid, ob, oa, state, trades = row[:9]
            self._dwell(row[9] if len(row) > 9 else None)
            self._trades(trades)
            depth = np.zeros((2, len(self.bands), 2))
            depth[0, band, 1], depth[1, band, 1] = _f(bq), _f(aq)
            m = _f(mid)
            sample = DepthSample(int(ts), m, m, m, _f(spread), self.bands, depth, None, None)
            update = self.detector.update(sample, (_f(ob), _f(oa)))
            self.report.pre_readings += 1
            self.report.last_ts = int(ts)
            if not self._check_state(
                record, update, str(state), None, f"reading {i + 1} before it"
            ):
                return False
        return True

    # ------------------------------------------------------------ a decision

    def decision(self, record: Record) -> bool:
        p = record.payload
        self._trades(p.get("tr") or [])
        ts, bid, ask, mid, spread = p["s"]
        slip = p.get("slip") or [None, None]
        sample = DepthSample(
            int(ts),
            _f(bid),
            _f(ask),
            _f(mid),
            _f(spread),
            self.bands,
            np.array(p["depth"], dtype=np.float64),
            _fo(slip[0]),
            _fo(slip[1]),
        )
        own = (_f(p["own"][0]), _f(p["own"][1]))
        self._dwell(p.get("dwell"))
        update = self.detector.update(sample, own)
        self.report.readings += 1
        self.report.last_ts = int(ts)
        if not self._check_state(record, update, str(p["st"]), p.get("tn"), "this reading"):
            return False
        if p.get("skip") is not None or p.get("x") is None:
            return True  # the strategy was not asked (halted, paused, backpressure)
        book = OrderBook(self.symbol, clock=ManualClock(int(ts)))
        bids, asks = p["top"]
        book.apply_snapshot(
            np.array(bids, dtype=np.float64).reshape(-1, 2),
            np.array(asks, dtype=np.float64).reshape(-1, 2),
            ts_ns=int(ts),
        )
        inventory = InventoryView(**_values(self.inv_fields, p["inv"]))
        exposure = Exposure(symbol=self.symbol, rules=self.rules, **_values(self.x_fields, p["x"]))
        ctx = MarketContext(
            symbol=self.symbol,
            ts_ns=int(ts),
            book=book,
            sample=sample,
            detector=update,
            inventory=inventory,
            budget=self.budget.view(exposure),
            rules=self.rules,
            **_context_extras(p.get("ctx") or {}),
        )
        decision = self.strategy.decide(ctx)
        self.report.decisions += 1
        journaled = p["q"]
        diff = _diff_quotes(journaled, [_row(q) for q in decision.quotes])
        if diff is not None:
            self.dispute(record, "strategy", f"{diff} [the replay's reason: {decision.reason}]")
            return False
        fitted = p["fit"] if p.get("fit") is not None else journaled
        fit = self.budget.fit(decision.quotes, exposure)
        diff = _diff_quotes(fitted, [_row(q) for q in fit.quotes])
        if diff is not None:
            self.dispute(record, "budget", f"after the budget's caps, {diff}")
            return False
        allowed = p["ok"] if p.get("ok") is not None else fitted
        extra = [row for row in allowed if row not in fitted]
        if extra:
            self.dispute(
                record,
                "risk",
                f"the risk engine let through {_show(extra[0])}, which the budget did not pass",
            )
            return False
        self.allowed.append((int(ts), allowed))
        horizon = int(ts) - round(ORDER_LOOKBACK_S * NS_PER_S)
        while len(self.allowed) > 1 and self.allowed[0][0] < horizon:
            self.allowed.popleft()
        return True

    # ------------------------------------------------------------ orders and policy

    def order(self, record: Record) -> bool:
        p = record.payload
        cid = str(p.get("client_id"))
        if p.get("previous") is not None or cid in self.seen_orders:
            return True
        self.seen_orders.add(cid)
        self.report.orders += 1
        price, amount = _fo(p.get("price")), _fo(p.get("amount"))
        if price is None or amount is None:
            return True  # nothing to compare (an adopted order of unknown terms)
        tick, step = self.rules.price_tick, self.rules.amount_step
        horizon = record.ts_ns - round(ORDER_LOOKBACK_S * NS_PER_S)
        for ts, rows in reversed(self.allowed):
            if ts < horizon:
                break
            for side, qp, qa, _post_only, tag in rows:
                if side != p.get("side") or tag != p.get("tag"):
                    continue
                qp, qa = float(qp), float(qa)
                # The order manager rounds to the tick (down for bids, up for asks).
                if abs(price - qp) > tick + 1e-9 * qp:
                    continue
                if amount > qa * (1 + 1e-9) or amount < qa - step - 1e-9 * qa:
                    continue
                return True
        self.dispute(
            record,
            "orders",
            f"order {cid} ({p.get('side')} {amount:.10g} @ {price:.10g}, {p.get('tag')}) is "
            f"none of the quotes the bot's decisions allowed in the {ORDER_LOOKBACK_S:g} s before",
        )
        return False

    def policy_change(self, record: Record) -> bool:
        p = record.payload
        self.report.policy_changes += 1
        if self.override:
            return True  # --policy: one version for the whole window
        new = _journaled_policy(record)
        if isinstance(new, str):
            self.dispute(record, "policy", new)
            return False
        if p.get("previous_hash") != self.policy.hash:
            self.dispute(
                record,
                "policy",
                f"the change says it replaced {str(p.get('previous_hash'))[:12]}, but "
                f"{self.policy.short} was in force",
            )
            return False
        self.policy = new
        reconfigure(self.detector, detector_config(self.detector.config, new.policy, self.symbol))
        self.strategy.set_policy(new.policy)
        return True


def _context_extras(extras: dict[str, Any]) -> dict[str, Any]:
    """The journaled risk-state fields of the strategy's context, typed back."""
    fields = {f.name: f for f in dataclasses.fields(MarketContext)}
    out: dict[str, Any] = {}
    for name, value in extras.items():
        f = fields.get(name)
        if f is None:
            raise UserError(
                f"the evidence gives the strategy {name!r}, which this backstop's strategy "
                "context does not have (a journal from another version)"
            )
        out[name] = frozenset(value) if isinstance(f.default, frozenset) else value
    return out


def _g(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _journaled_policy(record: Record) -> LoadedPolicy | str:
    """The policy a ``policy`` record holds, or why it cannot be trusted."""
    p = record.payload
    try:
        policy = Policy.model_validate(p.get("policy"))
    except ValueError as e:
        return f"record {record.id} holds no valid policy: {e}"
    got = loaded(policy, source=str(p.get("source")), text=p.get("text"))
    if got.hash != p.get("hash"):
        return (
            f"the policy in record {record.id} does not match its hash: it hashes to "
            f"{got.short}, the record says {str(p.get('hash'))[:12]} (edited)"
        )
    return got


# ---------------------------------------------------------------------------- entry


def find_episode(reader: JournalReader, episode_id: str) -> dict[str, Any]:
    for e in reader.episodes():
        if str(e.get("id")) == episode_id:
            return e
    known = ", ".join(str(e.get("id")) for e in reader.episodes()[-5:]) or "none"
    raise UserError(f"no episode {episode_id!r} in {reader.path} (latest: {known})")


def _opening(reader: JournalReader, episode: dict[str, Any]) -> tuple[Record, int | None]:
    symbol = str(episode["symbol"])
    start = int(episode["start_ts_ns"])
    opening: Record | None = None
    for r in reader.records([rk.EVIDENCE], symbol=symbol, until_ns=start + 1):
        if r.payload.get("action") == "open":
            opening = r
    if opening is None:
        raise UserError(
            f"no evidence journaled for episode {episode['id']} (governance.evidence off, or "
            "a journal from before evidence was kept)"
        )
    close_id: int | None = None
    for r in reader.records([rk.EVIDENCE], symbol=symbol, after_id=opening.id):
        if r.payload.get("action") == "close" and r.payload.get("w") == opening.payload["w"]:
            close_id = r.id
            if r.ts_ns < start:
                raise UserError(
                    f"no evidence window covers episode {episode['id']}: the last one before "
                    f"it closed at {_iso(r.ts_ns)}"
                )
            break
    return opening, close_id


def replay(journal: Path, episode_id: str, *, policy_file: Path | None = None) -> ReplayReport:
    chain = verify(journal)
    with JournalReader(journal) as reader:
        episode = find_episode(reader, episode_id)
        opening, close_id = _opening(reader, episode)
        journaled: LoadedPolicy | str | None = None
        policy_record: Record | None = None
        for r in reader.records([rk.POLICY]):
            if r.id > opening.id:
                break
            journaled, policy_record = _journaled_policy(r), r
        if policy_file is not None:
            policy = load_policy_file(policy_file)
        elif isinstance(journaled, LoadedPolicy):
            policy = journaled
        else:
            policy = None
        report = ReplayReport(
            episode=episode,
            symbol=str(episode["symbol"]),
            window=int(opening.payload["w"]),
            open_id=opening.id,
            close_id=close_id,
            policy_hash=policy.hash if policy is not None else "-",
            policy_source=policy.source if policy is not None else "-",
            policy_override=policy_file is not None,
            chain_ok=chain.ok,
            chain_summary=chain.summary(),
        )
        if policy is None:
            if isinstance(journaled, str) and policy_record is not None:
                report.dispute = Dispute(policy_record.id, policy_record.ts_ns, "policy", journaled)
            else:
                why = "no policy journaled before the window"
                report.dispute = Dispute(opening.id, opening.ts_ns, "policy", why)
            return report
        if policy_file is None and opening.payload.get("policy") != policy.hash:
            report.dispute = Dispute(
                opening.id,
                opening.ts_ns,
                "policy",
                f"the window was opened under {str(opening.payload.get('policy'))[:12]}, but "
                f"the journal's policy in force is {policy.short}",
            )
            return report
        _run(reader, opening, close_id, policy, report, override=policy_file is not None)
    return report


def _run(
    reader: JournalReader,
    opening: Record,
    close_id: int | None,
    policy: LoadedPolicy,
    report: ReplayReport,
    *,
    override: bool,
) -> None:
    r = _Replayer(reader, opening, policy, override, report)
    report.evidence_bytes += len(json.dumps(opening.payload, separators=(",", ":")))
    if not r.pre(opening):
        return
    kinds = [rk.DECISION, rk.ORDER, rk.POLICY, rk.EVIDENCE]
    for record in reader.records(kinds, after_id=opening.id):
        if close_id is not None and record.id > close_id:
            break
        kind, p = record.kind, record.payload
        if kind == rk.POLICY:
            if p.get("action") == "change" and not r.policy_change(record):
                return
            continue
        if p.get("symbol") != r.symbol:
            continue
        if kind == rk.DECISION:
            if p.get("w") != r.window:
                continue
            report.evidence_bytes += len(json.dumps(p, separators=(",", ":")))
            if not r.decision(record):
                return
        elif kind == rk.ORDER:
            if not r.order(record):
                return
        elif kind == rk.EVIDENCE and p.get("w") == r.window and p.get("action") == "close":
            return


# ---------------------------------------------------------------------------- CLI


def add_replay_command(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="re-run an episode from its journaled evidence and check every decision",
        description="Re-runs the detector and the strategy on the market data journaled for "
        "EPISODE, under the policy recorded in the journal (or --policy FILE), and checks "
        "that every engage/disengage decision, quote and order matches what the bot did. "
        "Exit 0: all match; 1: a dispute (the first diverging decision is named).",
    )
    p.add_argument("episode", metavar="EPISODE", help="an episode id (see 'audit export')")
    add_journal_flags(p)
    p.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="replay under this policy instead of the journaled one (what would it have done?)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_replay_command(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    stdout, stderr = out or sys.stdout, err or sys.stderr
    path = journal_path_from_args(args)
    try:
        report = replay(path, args.episode, policy_file=args.policy)
    except UserError as e:
        print(f"backstop audit replay: {e}", file=stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str), file=stdout)
    else:
        for line in report.lines():
            print(line, file=stdout)
    return EXIT_OK if report.ok else EXIT_DISPUTE
