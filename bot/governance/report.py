"""``backstop report --governance``: what the backstop did with the reserve, per period.

For whoever funds the reserve, from the journal alone: per period (UTC day, ISO week,
month, or the whole span), the episodes (market, when, how long, what triggered them),
the reserve they used (the most collateral committed at once, the volume traded) and
replenished afterwards, what it cost (fees, the replenishment's cost against the mid)
and the PnL marked at each episode's end, the policy versions in force (with every
change: who and why), and every kill and resume (reasons, who, and the approvers of a
two-person resume). HTML (``.html``) or Markdown (``.md``), by the output's suffix.

The journal's hash chain is verified first; a report from a broken chain says so at
the top.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from bot.journal import records as rk
from bot.journal.audit import verify
from bot.journal.reader import JournalReader

Period = Literal["day", "week", "month", "all"]
PERIODS: tuple[str, ...] = ("day", "week", "month", "all")
NS_PER_S = 1_000_000_000


def _dt(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC)


def _time(ts_ns: int | None) -> str:
    return "-" if ts_ns is None else _dt(ts_ns).strftime("%Y-%m-%d %H:%M:%S")


def period_key(ts_ns: int, period: Period) -> str:
    d = _dt(ts_ns)
    if period == "day":
        return d.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = d.isocalendar()
        monday = (d - timedelta(days=d.weekday())).strftime("%Y-%m-%d")
        return f"{year}-W{week:02d} (from {monday})"
    if period == "month":
        return d.strftime("%Y-%m")
    return "whole journal"


@dataclass(slots=True)
class EpisodeRow:
    id: str
    symbol: str
    start_ns: int
    duration_s: float | None
    trigger: str
    max_committed_quote: float
    volume_quote: float
    fills: int
    replenished_quote: float
    fees_quote: float
    replenish_cost_quote: float
    marked_pnl: float | None

    @property
    def cost_quote(self) -> float:
        return self.fees_quote + self.replenish_cost_quote


@dataclass(slots=True)
class PolicyRow:
    ts_ns: int
    action: str
    hash: str
    previous_hash: str | None
    name: str
    source: str
    who: str
    reason: str


@dataclass(slots=True)
class KillRow:
    ts_ns: int
    action: str
    reason: str
    source: str
    who: str
    approvers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PeriodReport:
    key: str
    episodes: list[EpisodeRow] = field(default_factory=list)
    policy_at_start: PolicyRow | None = None
    policy_changes: list[PolicyRow] = field(default_factory=list)
    kills: list[KillRow] = field(default_factory=list)

    def total(self, name: str) -> float:
        return sum(float(getattr(e, name) or 0.0) for e in self.episodes)

    @property
    def peak_committed(self) -> float:
        return max((e.max_committed_quote for e in self.episodes), default=0.0)


@dataclass(slots=True)
class GovernanceReport:
    journal: str
    chain: str
    chain_ok: bool
    period: str
    periods: list[PeriodReport]


def _num(x: Any) -> float:
    try:
        return float(x or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _episode(e: Mapping[str, Any]) -> EpisodeRow:
    trigger = e.get("trigger") or {}
    rule = trigger.get("rule") if isinstance(trigger, Mapping) else None
    side = trigger.get("side") if isinstance(trigger, Mapping) else None
    rep = e.get("replenishment") or {}
    replenished = _num((rep.get("bought") or {}).get("quote")) + _num(
        (rep.get("sold") or {}).get("quote")
    )
    volume = e.get("volume") or {}
    pnl = e.get("marked_pnl")
    return EpisodeRow(
        id=str(e.get("id")),
        symbol=str(e.get("symbol")),
        start_ns=int(e.get("start_ts_ns") or 0),
        duration_s=None if e.get("duration_s") is None else _num(e.get("duration_s")),
        trigger=f"{rule or '?'}" + (f" ({side})" if side else ""),
        max_committed_quote=_num(e.get("max_committed_quote")),
        volume_quote=_num(volume.get("quote")),
        fills=int(e.get("fills") or 0),
        replenished_quote=replenished,
        fees_quote=_num(e.get("fees_quote")) + _num(rep.get("fees_quote")),
        replenish_cost_quote=_num(rep.get("cost_quote")) - _num(rep.get("fees_quote")),
        marked_pnl=None if pnl is None else _num(pnl),
    )


def _policy(ts_ns: int, p: Mapping[str, Any]) -> PolicyRow:
    return PolicyRow(
        ts_ns=ts_ns,
        action=str(p.get("action")),
        hash=str(p.get("hash")),
        previous_hash=p.get("previous_hash"),
        name=str(p.get("name") or ""),
        source=str(p.get("source") or ""),
        who=str(p.get("who") or ""),
        reason=str(p.get("reason") or ""),
    )


def build(
    journal: Path,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    period: Period = "day",
) -> GovernanceReport:
    chain = verify(journal)
    periods: dict[str, PeriodReport] = {}

    def at(ts_ns: int) -> PeriodReport:
        key = period_key(ts_ns, period)
        if key not in periods:
            periods[key] = PeriodReport(key)
        return periods[key]

    def inside(ts_ns: int) -> bool:
        return (since_ns is None or ts_ns >= since_ns) and (until_ns is None or ts_ns < until_ns)

    with JournalReader(journal) as reader:
        for e in reader.episodes():
            row = _episode(e)
            if inside(row.start_ns):
                at(row.start_ns).episodes.append(row)
        policies: list[PolicyRow] = []
        approvals: list[tuple[int, Mapping[str, Any]]] = []
        kills: list[KillRow] = []
        for r in reader.records([rk.POLICY, rk.KILL, rk.APPROVAL]):
            if r.kind == rk.POLICY:
                policies.append(_policy(r.ts_ns, r.payload))
            elif r.kind == rk.APPROVAL:
                approvals.append((r.ts_ns, r.payload))
            elif r.payload.get("action") in ("trip", "resume") and inside(r.ts_ns):
                p = r.payload
                kills.append(
                    KillRow(
                        r.ts_ns,
                        str(p.get("action")),
                        str(p.get("reason") or ""),
                        str(p.get("source") or ""),
                        str(p.get("who") or ""),
                    )
                )
    _attach_approvers(kills, approvals)
    for k in kills:
        at(k.ts_ns).kills.append(k)
    previous: str | None = None
    for version in policies:
        # A change, or a start under another version than the last one (changed while
        # stopped). A start is stamped before any data in a replay: never a period.
        changed = version.action == "change" or (previous is not None and version.hash != previous)
        if changed and version.ts_ns > 0 and inside(version.ts_ns):
            at(version.ts_ns).policy_changes.append(version)
        previous = version.hash
    # Each period states the version in force when it began (the last one before it).
    ordered = sorted(periods.values(), key=lambda pr: _first_ts(pr))
    for pr in ordered:
        first = _first_ts(pr)
        before = [v for v in policies if v.ts_ns < first]
        pr.policy_at_start = before[-1] if before else None
    return GovernanceReport(str(journal), chain.summary(), chain.ok, period, ordered)


def _first_ts(pr: PeriodReport) -> int:
    stamps = [e.start_ns for e in pr.episodes] + [k.ts_ns for k in pr.kills]
    stamps += [p.ts_ns for p in pr.policy_changes]
    return min(stamps, default=0)


def _attach_approvers(
    kills: list[KillRow], approvals: Iterable[tuple[int, Mapping[str, Any]]]
) -> None:
    """A resume completed under the two-person rule: its approvers from the approvals."""
    approved = [(ts, p) for ts, p in approvals if p.get("state") == "approved"]
    for k in kills:
        if k.action != "resume":
            continue
        before = [p for ts, p in approved if ts <= k.ts_ns]
        if before:
            k.approvers = [str(a) for a in before[-1].get("approvers") or []]


# ---------------------------------------------------------------------------- rendering


def _q(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _tables(pr: PeriodReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for each table of a period."""
    summary = [
        ["episodes", str(len(pr.episodes))],
        ["engaged time (s)", _s(pr.total("duration_s"))],
        ["reserve used: peak committed (quote)", _q(pr.peak_committed)],
        ["reserve used: volume traded (quote)", _q(pr.total("volume_quote"))],
        ["reserve replenished (quote)", _q(pr.total("replenished_quote"))],
        ["costs: fees + replenishment (quote)", _q(pr.total("cost_quote"))],
        ["PnL marked at episode ends (quote)", _q(pr.total("marked_pnl"))],
        [
            "kills / resumes",
            f"{sum(k.action == 'trip' for k in pr.kills)} / "
            f"{sum(k.action == 'resume' for k in pr.kills)}",
        ],
    ]
    episodes = [
        [
            e.id,
            _time(e.start_ns),
            _s(e.duration_s),
            e.trigger,
            _q(e.max_committed_quote),
            _q(e.volume_quote),
            str(e.fills),
            _q(e.replenished_quote),
            _q(e.cost_quote),
            _q(e.marked_pnl),
        ]
        for e in pr.episodes
    ]
    policies = []
    if pr.policy_at_start is not None:
        p = pr.policy_at_start
        policies.append(["(in force at start)", p.hash[:12], p.name, p.source, p.who, p.reason])
    for p in pr.policy_changes:
        was = (
            f" (was {p.previous_hash[:12]})"
            if p.previous_hash and p.previous_hash != p.hash
            else ""
        )
        policies.append([_time(p.ts_ns), p.hash[:12] + was, p.name, p.source, p.who, p.reason])
    kills = [
        [_time(k.ts_ns), k.action, k.reason, k.source, k.who, ", ".join(k.approvers) or "-"]
        for k in pr.kills
    ]
    return [
        ("Summary", ["", "this period"], summary),
        (
            "Episodes",
            [
                "episode",
                "start (UTC)",
                "duration s",
                "trigger",
                "peak committed",
                "volume",
                "fills",
                "replenished",
                "cost",
                "marked PnL",
            ],
            episodes,
        ),
        ("Policy versions", ["when", "version", "name", "source", "who", "reason"], policies),
        ("Kills and resumes", ["when", "action", "reason", "source", "who", "approvers"], kills),
    ]


def _head(report: GovernanceReport) -> list[str]:
    warn = "" if report.chain_ok else " -- THE CHAIN IS BROKEN: do not trust this report"
    return [
        f"journal: {report.journal}",
        f"hash chain: {report.chain}{warn}",
        f"periods: {report.period} (UTC); amounts in each market's quote currency",
    ]


def render_markdown(report: GovernanceReport) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["# backstop governance report", ""]
    out += [f"- {line}" for line in _head(report)]
    if not report.periods:
        out += ["", "Nothing happened in this span: no episode, policy change or kill."]
    for pr in report.periods:
        out += ["", f"## {pr.key}"]
        for title, header, rows in _tables(pr):
            out += ["", f"### {title}", ""]
            if not rows:
                out.append("none")
                continue
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:90%}"
    "th{background:#f2f2f2}h2{border-bottom:2px solid #444;margin-top:2em}"
    ".warn{color:#b00;font-weight:bold}"
)


def render_html(report: GovernanceReport) -> str:
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>backstop governance report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>backstop governance report</h1><ul>",
    ]
    for line in _head(report):
        cls = " class='warn'" if "BROKEN" in line else ""
        out.append(f"<li{cls}>{e(line)}</li>")
    out.append("</ul>")
    if not report.periods:
        out.append("<p>Nothing happened in this span: no episode, policy change or kill.</p>")
    for pr in report.periods:
        out.append(f"<h2>{e(pr.key)}</h2>")
        for title, header, rows in _tables(pr):
            out.append(f"<h3>{e(title)}</h3>")
            if not rows:
                out.append("<p>none</p>")
                continue
            out.append("<table>")
            if any(header):
                out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(report: GovernanceReport, out: Path) -> Path:
    text = render_markdown(report) if out.suffix.lower() == ".md" else render_html(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
