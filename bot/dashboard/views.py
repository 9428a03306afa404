"""The dashboard's HTML: the page shells and the overview's live fragments.

Everything here is rendered on the server with every value escaped, because the page
puts fragments in place with ``innerHTML``: a reason typed into a kill (or a symbol) is
text, never markup. No inline script or style either: the pages' Content-Security-Policy
allows neither (``bot.dashboard.routes``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from bot.settings.models import Settings

PAGES = {
    "overview": ("Overview", "/dashboard"),
    "episodes": ("Episodes", "/dashboard/episodes"),
    "audit": ("Audit", "/dashboard/audit"),
}

_KILL_TEXT = {
    "armed": "armed",
    "tripped_cancelling": "TRIPPED: cancelling our orders",
    "tripped_flat": "TRIPPED: flat, no open orders of ours",
}


def esc(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def num(value: Any, digits: int = 2) -> str:
    """A number for a table cell; ``-`` for missing or not finite."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if math.isfinite(value) else "-"
    return esc(value)


def _table(rows: Sequence[tuple[str, str]], css: str, attrs: str = "") -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td{a}>{v}</td></tr>" for k, v, a in _split(rows))
    return f'<table class="{css}"{attrs}>{body}</table>'


def _split(rows: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    # A label "name|field" puts data-field="field" on the value cell (for tests and JS).
    out: list[tuple[str, str, str]] = []
    for label, value in rows:
        name, _, field = label.partition("|")
        out.append((name, value, f' data-field="{esc(field)}"' if field else ""))
    return out


# ---- the page shells -------------------------------------------------------------------


def page(name: str) -> str:
    """A page's HTML. It holds no data: the token is in the browser, not here."""
    title, _ = PAGES[name]
    nav = " ".join(
        f'<a href="{href}"{" aria-current=page" if key == name else ""}>{label}</a>'
        for key, (label, href) in PAGES.items()
    )
    main = resources.files("bot.dashboard").joinpath(f"templates/{name}.html").read_text("utf-8")
    shell = resources.files("bot.dashboard").joinpath("templates/page.html").read_text("utf-8")
    return Template(shell).substitute(title=title, page=name, nav=nav, main=main)


# ---- the overview ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketLimits:
    """What a market's inventory and commitments are held against (from the settings)."""

    base: str
    quote: str
    reserve_base: float
    reserve_quote: float
    floor_fraction: float
    max_position_base: float | None
    max_notional_quote: float

    @classmethod
    def from_settings(cls, settings: Settings) -> dict[str, MarketLimits]:
        out: dict[str, MarketLimits] = {}
        for m in settings.markets:
            base, _, quote = m.symbol.split(":")[0].partition("/")
            out[m.symbol] = cls(
                base=base,
                quote=quote,
                reserve_base=m.reserve.base,
                reserve_quote=m.reserve.quote,
                floor_fraction=m.reserve.floor_fraction,
                max_position_base=settings.risk.max_position_base.get(base),
                max_notional_quote=settings.risk.max_notional_per_market_quote,
            )
        return out


def summary_html(status: Mapping[str, Any]) -> str:
    """Kill switch, mode, trading state, PnL and the account's guards."""
    ks = status.get("kill_switch") or {}
    state = str(ks.get("state") or "unknown")
    parts = [
        f'<div class="kill kill-{esc(state)}" id="kill-switch">',
        '<h2>Kill switch: <span data-testid="kill-state" data-state="'
        f'{esc(state)}">{esc(_KILL_TEXT.get(state, state))}</span></h2>',
    ]
    if state != "armed":
        parts.append(
            _table(
                [
                    ("reason", esc(ks.get("reason"))),
                    ("source", esc(ks.get("source"))),
                    ("who", esc(ks.get("who"))),
                    ("since", esc(ks.get("since"))),
                    ("kill to flat", f"{num(ks.get('last_kill_to_flat_s'), 3)} s"),
                ],
                "kv",
            )
        )
    parts.append("</div>")
    pnl = status.get("pnl") or {}
    policy = status.get("policy") or {}
    pending = policy.get("pending_approval")
    rows = [
        ("mode|mode", esc(status.get("mode"))),
        ("strategy", esc(status.get("strategy"))),
        ("data", esc(status.get("source"))),
        ("trading state|trading-state", esc(status.get("trading_state"))),
        (
            "PnL (realised / unrealised / total)",
            f"{num(pnl.get('realised_quote'))} / {num(pnl.get('unrealised_quote'))} / "
            f"{num(pnl.get('total_quote'))}",
        ),
        (
            "policy",
            f"{esc(str(policy.get('hash') or '-')[:12])} ({esc(policy.get('source'))})"
            if policy
            else "-",
        ),
        ("account guards", _guards(status.get("guards") or {})),
    ]
    if pending:
        rows.append(("resume approval pending", esc(pending)))
    parts.append(_table(rows, "kv"))
    return "\n".join(parts)


def _guards(guards: Mapping[str, Any]) -> str:
    tripped = [(k, str(v)) for k, v in guards.items() if str(v) != "ok"]
    if not tripped:
        return f'<span class="ok">all {len(guards)} ok</span>'
    items = "".join(
        f'<li class="guard-{esc(v.split(":", 1)[0])}"><b>{esc(k)}</b> {esc(v)}</li>'
        for k, v in tripped
    )
    return f'<ul class="guards">{items}</ul>'


def _meter(value: float | None, high: float | None) -> str:
    if value is None or high is None or not high > 0 or not math.isfinite(value):
        return ""
    shown = min(max(value, 0.0), high)
    return (
        f'<meter min="0" max="{high:.6g}" high="{0.9 * high:.6g}" value="{shown:.6g}">'
        f"{100 * value / high:.0f}%</meter>"
    )


def market_html(market: Mapping[str, Any], limits: MarketLimits | None) -> str:
    """One market's live numbers (its charts are separate: the page keeps them)."""
    book = market.get("book") or {}
    engaged = bool(market.get("engaged"))
    detector = market.get("detector")
    pnl = market.get("pnl") or {}
    warning = market.get("warning")
    paused = bool(market.get("paused"))
    committed = market.get("committed_quote")
    cap = limits.max_notional_quote if limits else None
    head = (
        f'<span class="badge {"engaged" if engaged else "calm"}" data-testid="engaged" '
        f'data-engaged="{"true" if engaged else "false"}">'
        f"{'ENGAGED' if engaged else 'not engaged'}</span> "
        f'<span class="detector">detector: {esc(detector)}</span>'
        + (' <span class="badge paused">PAUSED</span>' if paused else "")
    )
    rows = [
        ("book|book", f"{esc(book.get('health'))}, {num(book.get('age_s'), 1)} s old"),
        ("mid|mid", num(book.get("mid"))),
        ("spread (bps)|spread", num(book.get("spread_bps"), 2)),
        ("open orders (ours)|open-orders", num(market.get("open_orders"))),
        (
            "creates held back (order rate, busy side)|held-back",
            num(market.get("orders_held_back")),
        ),
        (
            "committed collateral|committed",
            f"{num(committed)} of {num(cap)} {esc(limits.quote if limits else '')} "
            f"{_meter(committed, cap)}",
        ),
        (
            "PnL (realised / unrealised / total)|pnl",
            f"{num(pnl.get('realised_quote'))} / {num(pnl.get('unrealised_quote'))} / "
            f"{num(pnl.get('total_quote'))}",
        ),
        ("paused|paused", esc(market.get("pause_reason")) if paused else "no"),
        ("episodes|episodes", num(market.get("episodes"))),
        ("early warning|warning", _warning(warning)),
        ("guards|guards", _guards(market.get("guards") or {})),
    ]
    return "\n".join(
        [
            f"<h2>{esc(market.get('symbol'))} {head}</h2>",
            '<div class="columns">',
            _table(rows, "kv"),
            _depth_table(market.get("depth") or []),
            _inventory_table(market.get("inventory") or {}, limits),
            "</div>",
        ]
    )


def _warning(warning: Mapping[str, Any] | None) -> str:
    if not warning:
        return "no model"
    level = str(warning.get("level") or "-")
    alarm = " ALARM" if warning.get("alarm") else ""
    return (
        f'<span class="warning warning-{esc(level)}">{esc(level)}{alarm}</span> '
        f"p={num(warning.get('probability'), 3)} (threshold {num(warning.get('threshold'), 3)},"
        f" {num(warning.get('horizon_s'), 0)} s ahead)"
    )


def _depth_table(depth: Sequence[Mapping[str, Any]]) -> str:
    if not depth:
        return '<p class="muted">No depth yet.</p>'
    rows = "".join(
        f"<tr><td>{num(b.get('band_bps'), 0)}</td><td>{num(b.get('bid_quote'), 0)}</td>"
        f"<td>{num(b.get('ask_quote'), 0)}</td>"
        f"<td>{num(b.get('baseline_quote'), 0)}</td></tr>"
        for b in depth
    )
    return (
        '<table class="grid depth"><caption>Depth within each band (quote)</caption>'
        "<tr><th>band (bps)</th><th>bid</th><th>ask</th><th>baseline</th></tr>"
        f"{rows}</table>"
    )


def _inventory_table(inventory: Mapping[str, Any], limits: MarketLimits | None) -> str:
    rows: list[str] = []
    for asset, held in inventory.items():
        reserve = floor = cap = None
        if limits is not None and asset == limits.base:
            reserve, cap = limits.reserve_base, limits.max_position_base
        elif limits is not None and asset == limits.quote:
            reserve = limits.reserve_quote
        if reserve is not None and limits is not None:
            floor = reserve * limits.floor_fraction
        position = None
        if cap is not None and reserve is not None and isinstance(held, int | float):
            position = abs(float(held) - reserve)
        capped = f"{num(position, 6)} of {num(cap, 6)} {_meter(position, cap)}" if cap else "-"
        rows.append(
            f"<tr><td>{esc(asset)}</td><td>{num(held, 6)}</td><td>{num(reserve, 6)}</td>"
            f"<td>{num(floor, 6)}</td><td>{capped}</td></tr>"
        )
    return (
        '<table class="grid inventory"><caption>Inventory against the reserve</caption>'
        "<tr><th>asset</th><th>held</th><th>reserve</th><th>never below</th>"
        "<th>position / cap</th></tr>" + "".join(rows) + "</table>"
    )


# ---- options ---------------------------------------------------------------------------


def options_html(options: Mapping[str, Any]) -> str:
    """The ``[options]`` panel: the option book's greeks against their caps, then a row
    per option that is engaged or holds a position (detector state, vega depth against
    its baseline, position). ``options`` is the status' ``options`` block."""
    limits = options.get("limits") or {}
    synthetic = bool(options.get("synthetic"))
    rows = [
        (
            "net delta (BTC)|net-delta",
            _against(options.get("net_delta"), limits.get("max_delta_total"), 3)
            + f' <span class="muted">options {num(options.get("delta"), 3)}, hedge at '
            f"{num(options.get('hedge_trigger'), 2)}</span>",
        ),
        (
            "vega (USD / vol point)|vega",
            _against(options.get("vega"), limits.get("max_vega_total")),
        ),
        (
            "gamma (BTC per 1 % move)|gamma",
            _against(options.get("gamma"), limits.get("max_gamma_total"), 3),
        ),
        ("forward|forward", num(options.get("forward"))),
        (
            "engaged / watched|engaged",
            f"{num(options.get('engaged'))} / {num(len(options.get('options') or []))}",
        ),
        ("episodes|episodes", num(options.get("episodes_total"))),
        ("open option orders|open-orders", num(options.get("open_orders"))),
        ("refused|refused", _refused(options.get("refused") or {})),
    ]
    label = (
        ' <span class="badge paused" data-testid="options-synthetic">SYNTHETIC books</span>'
        if synthetic
        else ""
    )
    return "\n".join(
        [
            f"<h2>Options on {esc(options.get('underlying'))} "
            f'<span class="muted">({esc(options.get("source"))})</span>{label}</h2>',
            '<div class="columns">',
            _table(rows, "kv options-greeks"),
            _option_rows(options.get("options") or []),
            "</div>",
        ]
    )


def _against(value: Any, cap: Any, digits: int = 2) -> str:
    """``value of +/-cap`` with a meter of ``|value|`` (the caps bound both signs)."""
    if not isinstance(cap, int | float) or isinstance(cap, bool):
        return f"{num(value, digits)} (no cap)"
    shown = abs(float(value)) if isinstance(value, int | float) else None
    return f"{num(value, digits)} of &plusmn;{num(float(cap), digits)} {_meter(shown, float(cap))}"


def _refused(refused: Mapping[str, Any]) -> str:
    if not refused:
        return "none"
    return ", ".join(f"{esc(k)} {num(v)}" for k, v in sorted(refused.items()))


def _option_rows(options: Sequence[Mapping[str, Any]]) -> str:
    shown = [o for o in options if o.get("engaged") or o.get("position")]
    if not shown:
        return '<p class="muted" data-testid="options-none">No option engaged or held.</p>'
    body: list[str] = []
    for o in shown:
        baseline = o.get("baseline_vega") or [None, None]
        engaged = bool(o.get("engaged"))
        body.append(
            f'<tr data-symbol="{esc(o.get("symbol"))}" data-engaged='
            f'"{"true" if engaged else "false"}">'
            f"<td>{esc(o.get('symbol'))}</td>"
            f'<td data-field="detector"><span class="badge {"engaged" if engaged else "calm"}">'
            f"{esc(o.get('detector'))}</span></td>"
            f'<td data-field="iv">{num(_pct(o.get("iv_mid")), 1)}</td>'
            f'<td data-field="bid-vega">{num(o.get("bid_vega"), 1)} / {num(baseline[0], 1)}</td>'
            f'<td data-field="ask-vega">{num(o.get("ask_vega"), 1)} / {num(baseline[1], 1)}</td>'
            f'<td data-field="position">{num(o.get("position"), 2)}</td>'
            f'<td data-field="open-orders">{num(o.get("open_orders"))}</td></tr>'
        )
    return (
        '<table class="grid options" data-testid="options-table">'
        "<caption>Engaged or held options: vega depth (USD / vol point) vs baseline</caption>"
        "<tr><th>option</th><th>detector</th><th>iv %</th><th>bid vega / baseline</th>"
        "<th>ask vega / baseline</th><th>position</th><th>orders</th></tr>"
        + "".join(body)
        + "</table>"
    )


def _pct(value: Any) -> float | None:
    return 100.0 * float(value) if isinstance(value, int | float) else None
