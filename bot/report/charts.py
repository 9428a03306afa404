"""The report's charts, drawn with matplotlib's Agg backend on standalone figures.

No pyplot: each chart is a :class:`matplotlib.figure.Figure` with its own Agg canvas,
so nothing global is created, touched or leaked, and drawing works with no display.
PNGs are written without the ``Software`` stamp (and Agg writes no creation time), so
the same data gives the same bytes.

- :func:`episode_figure`: one episode, ``margin`` either side, six panels on a shared
  axis of seconds since the episode started: price (mid, best bid/ask, our quotes as
  segments while they rested, our fills as triangles), bid-side and ask-side depth
  within each band with the fracture threshold and the recovery level, inventory,
  committed collateral, PnL and fees. The detector's ENGAGED (darker) and
  RECOVERING (lighter) stretches are shaded on every panel.
- :func:`overview_figure`: a whole market's run on a UTC time axis: mid and fills,
  the watched band's depth on both sides with the thresholds, position and committed
  collateral, PnL and fees, each episode shaded and numbered.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bot.detect.machine import DetectorState
from bot.report.recorder import FloatArray, IntArray, MarketTrace, StateSpan, View

NS_PER_S = 1_000_000_000
DPI = 80

BID = "#1a9850"
ASK = "#d73027"
MID = "#222222"
REPLENISH = "#4575b4"
THRESHOLD = "#762a83"
RECOVERY = "#f46d43"
BAND_ALPHAS = (1.0, 0.6, 0.35, 0.25, 0.2)
SHADE = {DetectorState.ENGAGED: ("#fdae61", 0.35), DetectorState.RECOVERING: ("#fee090", 0.45)}

ToX = Callable[[IntArray], FloatArray]


def utc(ts_ns: int | None) -> str:
    """``2024-08-09 00:02:02.367 UTC`` (millisecond precision), or ``-``."""
    if ts_ns is None:
        return "-"
    dt = datetime.fromtimestamp(ts_ns // NS_PER_S, tz=UTC)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{ts_ns % NS_PER_S // 1_000_000:03d} UTC"


def png_bytes(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes: no timestamp or software stamp, so reproducible."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


# ---------------------------------------------------------------------- pieces


def _shade(ax: Axes, spans: Sequence[StateSpan], to_x: ToX, end_ns: int) -> None:
    for span in spans:
        color, alpha = SHADE.get(span.state, ("#dddddd", 0.3))
        stop = span.end_ns if span.end_ns is not None else end_ns
        x = to_x(np.array([span.start_ns, stop], dtype=np.int64))
        ax.axvspan(float(x[0]), float(x[1]), color=color, alpha=alpha, lw=0, zorder=0)


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center", transform=ax.transAxes)


def _positive(values: FloatArray) -> FloatArray:
    """Non-positive depths as gaps: they cannot be drawn on a log axis."""
    out = values.copy()
    out[~(out > 0)] = np.nan
    return out


def _style(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, loc="left", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, lw=0.4, alpha=0.5)


def _price_panel(
    ax: Axes,
    book: View,
    trace: MarketTrace,
    to_x: ToX,
    lo_ns: int,
    hi_ns: int,
) -> tuple[int, int]:
    """Mid, best bid/ask, our quotes and fills; returns (quotes, fills) drawn."""
    _style(ax, "Price: mid, best bid/ask, our quotes and fills", "price")
    if len(book):
        x = to_x(book.ts)
        ax.plot(x, book["bid"], color=BID, lw=0.7, drawstyle="steps-post", label="best bid")
        ax.plot(x, book["ask"], color=ASK, lw=0.7, drawstyle="steps-post", label="best ask")
        ax.plot(x, book["mid"], color=MID, lw=1.0, drawstyle="steps-post", label="mid")
    else:
        _no_data(ax, "book")
    segments: list[list[tuple[float, float]]] = []
    colors: list[str] = []
    for q in trace.all_quotes():
        end = q.ended_ns if q.ended_ns is not None else hi_ns
        if end < lo_ns or q.placed_ns > hi_ns:
            continue
        x0, x1 = to_x(np.array([max(q.placed_ns, lo_ns), min(end, hi_ns)], dtype=np.int64))
        segments.append([(float(x0), q.price), (float(x1), q.price)])
        if q.tag.startswith("replenish"):
            colors.append(REPLENISH)
        else:
            colors.append(BID if q.side == "buy" else ASK)
    if segments:
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=2.2, alpha=0.8))
        ax.autoscale_view()
    fills = [f for f in trace.all_fills() if lo_ns <= f.ts_ns <= hi_ns]
    for side, marker, color in (("buy", "^", BID), ("sell", "v", ASK)):
        chosen = [f for f in fills if f.side == side]
        if chosen:
            fx = to_x(np.array([f.ts_ns for f in chosen], dtype=np.int64))
            ax.scatter(
                fx,
                [f.price for f in chosen],
                marker=marker,
                s=70,
                color=color,
                edgecolors="black",
                linewidths=0.7,
                zorder=5,
                label=f"our {side} fill",
            )
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color=BID, lw=2.2, label="our bid quote"),
        Line2D([], [], color=ASK, lw=2.2, label="our ask quote"),
        Line2D([], [], color=REPLENISH, lw=2.2, label="replenishment quote"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", ncols=4)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    return len(segments), len(fills)


def _depth_panel(
    ax: Axes,
    side: str,
    book: View,
    detector: View,
    trace: MarketTrace,
    to_x: ToX,
    *,
    legend: bool,
) -> None:
    label = "Bid" if side == "bid" else "Ask"
    _style(ax, f"{label} depth within each band (quote notional)", "quote")
    color = BID if side == "bid" else ASK
    drawn = False
    if len(book):
        x = to_x(book.ts)
        for i, band in enumerate(trace.bands_bps):
            alpha = BAND_ALPHAS[min(i, len(BAND_ALPHAS) - 1)]
            ax.plot(
                x,
                _positive(book[f"{side}_{i}"]),
                color=color,
                alpha=alpha,
                lw=1.0,
                drawstyle="steps-post",
                label=f"within {band:g} bps",
            )
        drawn = True
    if len(detector):
        x = to_x(detector.ts)
        cfg = trace.config
        watched = f"{cfg.band_bps:g} bps" if cfg is not None else "watched band"
        ax.plot(
            x,
            _positive(detector[f"depth_{side}"]),
            color="black",
            lw=0.8,
            ls="--",
            drawstyle="steps-post",
            label=f"{watched} without our quotes (detector)",
        )
        frac = cfg.baseline_fraction if cfg is not None else None
        rec = cfg.recovery_fraction if cfg is not None else None
        ax.plot(
            x,
            detector[f"threshold_{side}"],
            color=THRESHOLD,
            lw=1.4,
            ls="--",
            label=f"fracture threshold (baseline x {frac:g})" if frac else "fracture threshold",
        )
        ax.plot(
            x,
            detector[f"recovery_{side}"],
            color=RECOVERY,
            lw=1.0,
            ls=":",
            label=f"recovery level (baseline x {rec:g})" if rec else "recovery level",
        )
        drawn = True
    if not drawn:
        _no_data(ax, "depth")
        return
    ax.set_yscale("log")
    if legend:
        ax.legend(fontsize=7, loc="lower left", ncols=3)


def _inventory_panel(ax: Axes, inv: View, to_x: ToX, base_ccy: str, quote_ccy: str) -> None:
    _style(ax, f"Inventory: {base_ccy} (left) and {quote_ccy} (right)", base_ccy)
    if not len(inv):
        _no_data(ax, "inventory")
        return
    x = to_x(inv.ts)
    ax.plot(x, inv["base"], color="#1f78b4", lw=1.2, drawstyle="steps-post", label=base_ccy)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    right = ax.twinx()
    right.plot(x, inv["quote"], color="#ff7f00", lw=1.2, drawstyle="steps-post", label=quote_ccy)
    right.set_ylabel(quote_ccy, fontsize=9)
    right.tick_params(labelsize=8)
    right.ticklabel_format(axis="y", useOffset=False, style="plain")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper left")


def _collateral_panel(ax: Axes, inv: View, to_x: ToX, quote_ccy: str) -> None:
    _style(ax, "Committed collateral: resting orders + |position| x mid", quote_ccy)
    if not len(inv):
        _no_data(ax, "inventory")
        return
    x = to_x(inv.ts)
    committed = inv["committed_quote"]
    ax.fill_between(x, committed, step="post", color="#6a3d9a", alpha=0.25, lw=0)
    ax.plot(x, committed, color="#6a3d9a", lw=1.0, drawstyle="steps-post", label="committed")
    ax.set_ylim(bottom=0)


def _pnl_panel(ax: Axes, inv: View, to_x: ToX, quote_ccy: str) -> None:
    _style(ax, "PnL and fees since the run started (vs holding the reserve)", quote_ccy)
    if not len(inv):
        _no_data(ax, "inventory")
        return
    x = to_x(inv.ts)
    ax.axhline(0.0, color="#888888", lw=0.6)
    ax.plot(x, inv["marked_pnl"], color=MID, lw=1.2, drawstyle="steps-post", label="marked PnL")
    ax.plot(
        x,
        inv["realised_pnl"],
        color="#1f78b4",
        lw=1.0,
        ls="--",
        drawstyle="steps-post",
        label="realised PnL",
    )
    ax.plot(x, -inv["fees_quote"], color=ASK, lw=1.0, drawstyle="steps-post", label="fees paid (-)")
    ax.legend(fontsize=7, loc="upper left", ncols=3)


def _currencies(symbol: str) -> tuple[str, str]:
    base, _, rest = symbol.partition("/")
    return base, rest.split(":", 1)[0] or "quote"


# ---------------------------------------------------------------------- figures


def episode_window(
    trace: MarketTrace, episode: Mapping[str, Any], margin_ns: int
) -> tuple[int, int, int]:
    """(from, to, episode start) in data time: the episode with ``margin`` either side,
    within what was recorded."""
    start = int(episode["start_ts_ns"])
    end = episode.get("end_ts_ns")
    last = trace.last_ns if trace.last_ns is not None else start
    stop = int(end) if end is not None else last
    lo = start - margin_ns
    if trace.first_ns is not None:
        lo = max(lo, min(trace.first_ns, start))
    hi = max(stop, min(stop + margin_ns, last))
    return lo, hi, start


def episode_figure(
    trace: MarketTrace, episode: Mapping[str, Any], *, number: int, margin_ns: int
) -> tuple[Figure, dict[str, int]]:
    """The episode's six panels; also returns what was drawn (points, quotes, fills)."""
    lo, hi, start = episode_window(trace, episode, margin_ns)

    def to_x(ts: IntArray) -> FloatArray:
        return (ts - start).astype(np.float64) / NS_PER_S

    book = trace.view("book").between(lo, hi)
    detector = trace.view("detector").between(lo, hi)
    inv = trace.view("inventory").between(lo, hi)
    base_ccy, quote_ccy = _currencies(trace.symbol)

    fig = Figure(figsize=(12, 16), dpi=DPI, layout="constrained")
    axes = fig.subplots(
        6, 1, sharex=True, gridspec_kw={"height_ratios": [1.5, 1.2, 1.2, 0.9, 0.8, 0.9]}
    )
    trigger = episode.get("trigger") or {}
    rule = trigger.get("rule", "?")
    side = trigger.get("side")
    fig.suptitle(
        f"Episode {number}: {trace.symbol}, {rule}"
        + (f" on {side}" if side else "")
        + f", started {utc(start)}",
        fontsize=12,
    )
    quotes, fills = _price_panel(axes[0], book, trace, to_x, lo, hi)
    _depth_panel(axes[1], "bid", book, detector, trace, to_x, legend=True)
    _depth_panel(axes[2], "ask", book, detector, trace, to_x, legend=False)
    _inventory_panel(axes[3], inv, to_x, base_ccy, quote_ccy)
    _collateral_panel(axes[4], inv, to_x, quote_ccy)
    _pnl_panel(axes[5], inv, to_x, quote_ccy)
    for ax in axes:
        _shade(ax, [s for s in trace.spans if _overlaps(s, lo, hi)], to_x, hi)
    x_lo, x_hi = to_x(np.array([lo, hi], dtype=np.int64))
    axes[-1].set_xlim(float(x_lo), float(x_hi))
    axes[-1].set_xlabel("seconds since the episode started (data time)", fontsize=9)
    drawn = {
        "book_points": len(book),
        "detector_points": len(detector),
        "inventory_points": len(inv),
        "quotes": quotes,
        "fills": fills,
    }
    return fig, drawn


def _overlaps(span: StateSpan, lo: int, hi: int) -> bool:
    return span.start_ns <= hi and (span.end_ns is None or span.end_ns >= lo)


def overview_figure(trace: MarketTrace, episodes: Sequence[Mapping[str, Any]]) -> Figure:
    """A whole market's run; ``episodes`` (this market's, numbered in order) are labelled."""
    book = trace.view("book")
    detector = trace.view("detector")
    inv = trace.view("inventory")
    base_ccy, quote_ccy = _currencies(trace.symbol)

    def to_x(ts: IntArray) -> FloatArray:
        # matplotlib's date unit: days since 1970-01-01 (its default epoch).
        return ts.astype(np.float64) / (86_400 * NS_PER_S)

    fig = Figure(figsize=(12, 10), dpi=DPI, layout="constrained")
    axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [1.3, 1.3, 1.0, 1.0]})
    span = f"{utc(trace.first_ns)} to {utc(trace.last_ns)}"
    count = f"{len(episodes)} episode" + ("" if len(episodes) == 1 else "s")
    if not episodes:
        count = "no episode"
    fig.suptitle(f"Run overview: {trace.symbol}, {span}, {count}", fontsize=12)

    ax = axes[0]
    _style(ax, "Mid price and our fills", "price")
    if len(book):
        ax.plot(to_x(book.ts), book["mid"], color=MID, lw=0.9, drawstyle="steps-post", label="mid")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    else:
        _no_data(ax, "book")
    fills = trace.all_fills()
    for side, marker, color in (("buy", "^", BID), ("sell", "v", ASK)):
        chosen = [f for f in fills if f.side == side]
        if chosen:
            ax.scatter(
                to_x(np.array([f.ts_ns for f in chosen], dtype=np.int64)),
                [f.price for f in chosen],
                marker=marker,
                s=40,
                color=color,
                edgecolors="black",
                linewidths=0.6,
                zorder=5,
                label=f"our {side} fill",
            )
    if len(book) or fills:
        ax.legend(fontsize=7, loc="upper left", ncols=3)

    ax = axes[1]
    cfg = trace.config
    band = f"{cfg.band_bps:g} bps" if cfg is not None else "watched band"
    _style(ax, f"Depth within {band} (detector's view) and fracture thresholds", quote_ccy)
    if len(detector):
        x = to_x(detector.ts)
        for side, color in (("bid", BID), ("ask", ASK)):
            ax.plot(
                x,
                _positive(detector[f"depth_{side}"]),
                color=color,
                lw=0.9,
                drawstyle="steps-post",
                label=f"{side} depth",
            )
            ax.plot(
                x,
                detector[f"threshold_{side}"],
                color=color,
                lw=1.2,
                ls="--",
                label=f"{side} fracture threshold",
            )
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="lower left", ncols=4)
    elif len(book):
        x = to_x(book.ts)
        for side, color in (("bid", BID), ("ask", ASK)):
            ax.plot(x, _positive(book[f"{side}_0"]), color=color, lw=0.9, label=f"{side} depth")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="lower left")
    else:
        _no_data(ax, "depth")

    ax = axes[2]
    _style(ax, f"Position vs the reserve ({base_ccy}, left) and committed collateral", base_ccy)
    if len(inv):
        x = to_x(inv.ts)
        ax.plot(x, inv["net_base"], color="#1f78b4", lw=1.1, drawstyle="steps-post")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        right = ax.twinx()
        right.fill_between(x, inv["committed_quote"], step="post", color="#6a3d9a", alpha=0.25)
        right.set_ylabel(f"committed ({quote_ccy})", fontsize=9)
        right.tick_params(labelsize=8)
        right.set_ylim(bottom=0)
    else:
        _no_data(ax, "inventory")

    _pnl_panel(axes[3], inv, to_x, quote_ccy)

    end = trace.last_ns if trace.last_ns is not None else 0
    for ax in axes:
        _shade(ax, trace.spans, to_x, end)
    for number, ep in enumerate(episodes, start=1):
        x0 = to_x(np.array([int(ep["start_ts_ns"])], dtype=np.int64))[0]
        axes[0].annotate(
            str(number),
            xy=(float(x0), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -12),
            textcoords="offset points",
            fontsize=9,
            fontweight="bold",
        )
    if trace.first_ns is not None and trace.last_ns is not None and trace.last_ns > trace.first_ns:
        x_lo, x_hi = to_x(np.array([trace.first_ns, trace.last_ns], dtype=np.int64))
        axes[-1].set_xlim(float(x_lo), float(x_hi))
    # matplotlib's dates module has no type hints for these two.
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_formatter(formatter)
    axes[-1].set_xlabel("time (UTC, data time)", fontsize=9)
    if not episodes:
        axes[0].text(
            0.5,
            0.9,
            "no episode: the detector never engaged",
            ha="center",
            transform=axes[0].transAxes,
            fontsize=11,
            color="#555555",
        )
    return fig
