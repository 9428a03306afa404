"""The report file: one self-contained HTML page, its PNGs also written beside it.

:func:`render_report` draws an overview per market and one chart per episode
(:mod:`bot.report.charts`), writes each PNG next to ``out`` (``report-overview.png``,
``report-episode-01.png``, ...) and embeds the same bytes in the page as base64, so the
page can be mailed or archived on its own. Nothing in it depends on when or where it
was rendered: the same recorder and episodes give byte-identical files.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.report.charts import episode_figure, overview_figure, png_bytes, utc
from bot.report.recorder import NS_PER_S, ReportRecorder

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.no-episode { font-size: 1.1em; color: #555; }
"""

_CAPTION = (
    "Shaded: the detector engaged (darker) and recovering (lighter). Panels: price with "
    "our quotes (segments while they rested) and fills (triangles); bid and ask depth "
    "within each band with the fracture threshold and the recovery level; inventory; "
    "committed collateral; PnL and fees."
)


@dataclass(frozen=True, slots=True)
class _Chart:
    path: Path
    png: bytes
    alt: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "market"


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool | int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return html.escape(str(x))


def _pair(values: Sequence[Any] | None, digits: int = 0) -> str:
    if values is None:
        return "-"
    return " / ".join(_num(v, digits) for v in values)


_RULE_UNITS = {
    "floor": ("below", None, 0),
    "baseline": ("below", None, 0),
    "drop_rate": ("above", "of baseline per s", 4),
    "spread": ("above", "bps", 2),
}
"""rule: (how the value crossed its threshold, unit (None: quote currency), decimals)."""


def _trigger(trigger: Mapping[str, Any] | None, quote_ccy: str) -> str:
    if not trigger:
        return "-"
    rule = str(trigger.get("rule"))
    crossed, unit, digits = _RULE_UNITS.get(rule, ("against", "", 4))
    side = trigger.get("side")
    where = f" on the {side} side" if side else ""
    text = (
        f"{rule}{where}: {_num(trigger.get('value'), digits)} {crossed} the threshold "
        f"{_num(trigger.get('threshold'), digits)} {unit or quote_ccy}"
    )
    if trigger.get("baseline") is not None:
        text += f" (baseline {_num(trigger.get('baseline'), 0)})"
    return html.escape(text)


def episode_rows(ep: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The numbers table of one episode (``Episode.to_dict()``), as (label, HTML) rows."""
    base, _, quote = str(ep.get("symbol", "")).partition("/")
    quote = quote.split(":", 1)[0]
    volume = ep.get("volume") or {}
    bought = volume.get("bought") or {}
    sold = volume.get("sold") or {}
    depth = ep.get("depth") or {}
    repl = ep.get("replenishment") or {}
    duration = ep.get("duration_s")
    end = ep.get("end_ts_ns")
    rows = [
        ("Market", _num(ep.get("symbol"))),
        ("Episode id", _num(ep.get("id"))),
        ("Trigger", _trigger(ep.get("trigger"), quote)),
        ("Start", utc(ep.get("start_ts_ns"))),
        ("End", utc(end) if end is not None else "still active when the data ended"),
        ("Duration", f"{duration:,.1f} s" if duration is not None else "-"),
        ("Relapses (recovering back to engaged)", _num(ep.get("relapses"))),
        ("Quotes placed", _num(ep.get("quotes_placed"))),
        (
            "Fills",
            f"{_num(ep.get('fills'))} ({_num(bought.get('fills'))} bought, "
            f"{_num(sold.get('fills'))} sold; {_num(ep.get('late_fills'))} after the end)",
        ),
        (
            "Volume",
            f"{_num(volume.get('base'), 6)} {html.escape(base)} / "
            f"{_num(volume.get('quote'))} {html.escape(quote)}; "
            f"bought at {_num(bought.get('avg_price'))}, sold at {_num(sold.get('avg_price'))}",
        ),
        ("Realised PnL", f"{_num(ep.get('realised_pnl'))} {html.escape(quote)}"),
        (
            "Marked PnL (at the mid at the end, fees included)",
            f"{_num(ep.get('marked_pnl'))} {html.escape(quote)}",
        ),
        ("Fees", f"{_num(ep.get('fees_quote'))} {html.escape(quote)}"),
        ("Max committed collateral", f"{_num(ep.get('max_committed_quote'))} {html.escape(quote)}"),
        ("Depth before, bid / ask", _pair(depth.get("before"))),
        ("Baseline before, bid / ask", _pair(depth.get("baseline_before"))),
        ("Depth min, bid / ask", _pair(depth.get("min"))),
        ("Depth after, bid / ask", _pair(depth.get("after"))),
        ("Max spread", f"{_num(ep.get('max_spread_bps'))} bps"),
        ("Min health", _num(ep.get("min_health"), 3)),
        (
            "Replenishment",
            f"{_num(repl.get('fills'))} fills, cost {_num(repl.get('cost_quote'))} "
            f"{html.escape(quote)} (fees {_num(repl.get('fees_quote'))})",
        ),
    ]
    return rows


def _table(rows: Sequence[tuple[str, str]], css: str) -> str:
    body = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{css}">\n{body}\n</table>'


def _img(chart: _Chart, caption: str) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(chart.alt)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{html.escape(caption)} File: <a href="{html.escape(chart.path.name)}">'
        f"{html.escape(chart.path.name)}</a></figcaption></figure>"
    )


def render_report(
    recorder: ReportRecorder,
    episodes: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    title: str,
) -> list[Path]:
    """Write the report: ``out`` (HTML) and its PNGs beside it; returns ``[out, *pngs]``.

    ``episodes`` are ``Episode.to_dict()`` records (any markets); they are numbered by
    start time. Each market the recorder saw gets an overview chart, each episode a
    section with its numbers and chart. A run without episodes says "no episode".
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.stem
    ordered = sorted(episodes, key=lambda e: (int(e["start_ts_ns"]), str(e.get("symbol"))))
    margin_ns = round(recorder.margin_s * NS_PER_S)
    symbols = sorted(recorder.markets)
    charts: list[_Chart] = []

    overview: list[tuple[str, _Chart]] = []
    for symbol in symbols:
        trace = recorder.markets[symbol]
        mine = [e for e in ordered if e.get("symbol") == symbol]
        name = (
            f"{stem}-overview.png" if len(symbols) == 1 else f"{stem}-overview-{_slug(symbol)}.png"
        )
        fig = overview_figure(trace, mine)
        chart = _Chart(out.parent / name, png_bytes(fig), f"Run overview of {symbol}")
        overview.append((symbol, chart))
        charts.append(chart)

    sections: list[str] = []
    for number, ep in enumerate(ordered, start=1):
        symbol = str(ep.get("symbol"))
        ep_id = str(ep.get("id"))
        parts = [
            f'<section class="episode" id="episode-{number}">',
            f"<h2>Episode {number}: {html.escape(ep_id)}</h2>",
            "<h3>Numbers</h3>",
            _table(episode_rows(ep), "numbers"),
            "<h3>Charts</h3>",
        ]
        found = recorder.markets.get(symbol)
        if found is None:
            parts.append(f"<p>No data was recorded for {html.escape(symbol)}.</p>")
        else:
            fig, drawn = episode_figure(found, ep, number=number, margin_ns=margin_ns)
            chart = _Chart(
                out.parent / f"{stem}-episode-{number:02d}.png",
                png_bytes(fig),
                f"Episode {number} of {symbol}: depth, price, quotes, fills, inventory, PnL",
            )
            charts.append(chart)
            parts.append(_img(chart, _CAPTION))
            parts.append(
                f"<p>Drawn: {drawn['book_points']:,} book points, {drawn['quotes']:,} quotes, "
                f"{drawn['fills']:,} fills (window: {recorder.margin_s:g} s either side).</p>"
            )
        parts.append("</section>")
        sections.append("\n".join(parts))
    sections.extend(make() for make in recorder.appendix)

    doc = _document(recorder, ordered, title, overview, sections)
    for chart in charts:
        chart.path.write_bytes(chart.png)
    out.write_text(doc, encoding="utf-8")
    return [out, *(c.path for c in charts)]


def _document(
    recorder: ReportRecorder,
    episodes: Sequence[Mapping[str, Any]],
    title: str,
    overview: Sequence[tuple[str, _Chart]],
    sections: Sequence[str],
) -> str:
    traces = [recorder.markets[s] for s in sorted(recorder.markets)]
    firsts = [t.first_ns for t in traces if t.first_ns is not None]
    lasts = [t.last_ns for t in traces if t.last_ns is not None]
    seen = sum(t.seen["samples"] for t in traces)
    summary = [
        ("Markets", html.escape(", ".join(t.symbol for t in traces)) or "-"),
        ("Data from", utc(min(firsts)) if firsts else "-"),
        ("Data to", utc(max(lasts)) if lasts else "-"),
        ("Book samples seen", _num(seen)),
        (
            "Readings seen (samples, detector, inventory, orders, trades)",
            _num(recorder.events_seen()),
        ),
        ("Points kept for the charts", _num(recorder.points())),
        ("Our quotes placed", _num(sum(t.seen["quotes"] for t in traces))),
        ("Our fills", _num(sum(t.seen["fills"] for t in traces))),
        ("Episodes", _num(len(episodes)) if episodes else "no episode"),
    ]
    index = "".join(
        f'<li><a href="#episode-{n}">Episode {n}: {html.escape(str(e.get("id")))}</a>'
        f" ({html.escape(str((e.get('trigger') or {}).get('rule', '?')))}, "
        f"{_num(e.get('duration_s'), 1)} s)</li>"
        for n, e in enumerate(episodes, start=1)
    )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        _table(summary, "run"),
        '<section id="overview">',
        "<h2>Overview</h2>",
    ]
    if not episodes:
        body.append('<p class="no-episode">No episode: the detector never engaged.</p>')
    else:
        body.append(f"<ol>{index}</ol>")
    if not overview:
        body.append("<p>No market data was recorded.</p>")
    for symbol, chart in overview:
        body.append(_img(chart, f"{symbol}: the whole run, episodes shaded and numbered."))
    body.append("</section>")
    body.extend(sections)
    body += ["</body>", "</html>", ""]
    return "\n".join(body)
