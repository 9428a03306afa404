"""Option episodes: one per engagement of an option's vega-depth detector, with what the
desk did in it (quotes sent and refused, fills) and what it carried (the option book's
greek peaks while it lasted), for the run summary and the HTML report (``--report``).

An episode opens when the detector engages (not when it re-engages from recovering, as
:class:`bot.options.desk.OptionDesk` counts episodes) and closes when it is no longer
active; one still open at the end of the run has no end.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(slots=True)
class OptionEpisode:
    symbol: str
    start_ms: int
    end_ms: int | None = None
    quotes: int = 0
    """Option orders sent (creates started or deferred) for this option."""
    refused: int = 0
    """Its quotes the risk engine refused."""
    fills: int = 0
    filled_contracts: float = 0.0
    min_bid_vega: float = math.inf
    min_ask_vega: float = math.inf
    """Thinnest vega depth (USD per vol point) per side while engaged."""
    baseline_vega: tuple[float | None, float | None] = (None, None)
    """The detector's baseline when it engaged."""
    peak_net_delta: float = 0.0
    """Peaks of the option book's |net delta| (BTC), |vega| and |gamma| while open."""
    peak_vega: float = 0.0
    peak_gamma: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "symbol": self.symbol,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "quotes": self.quotes,
            "refused": self.refused,
            "fills": self.fills,
            "filled_contracts": round(self.filled_contracts, 8),
            "min_bid_vega": finite(self.min_bid_vega),
            "min_ask_vega": finite(self.min_ask_vega),
            "baseline_vega": list(self.baseline_vega),
            "peak_abs_net_delta": self.peak_net_delta,
            "peak_abs_vega": self.peak_vega,
            "peak_abs_gamma": self.peak_gamma,
        }


@dataclass(slots=True)
class EpisodeLog:
    episodes: list[OptionEpisode] = field(default_factory=list)
    _open: dict[str, OptionEpisode] = field(default_factory=dict)

    def start(
        self, symbol: str, now_ms: int, baseline: tuple[float | None, float | None]
    ) -> OptionEpisode:
        self.end(symbol, now_ms)
        ep = OptionEpisode(symbol, now_ms, baseline_vega=baseline)
        self._open[symbol] = ep
        self.episodes.append(ep)
        return ep

    def end(self, symbol: str, now_ms: int) -> OptionEpisode | None:
        ep = self._open.pop(symbol, None)
        if ep is not None:
            ep.end_ms = now_ms
        return ep

    def is_open(self, symbol: str) -> bool:
        return symbol in self._open

    def open_symbols(self) -> list[str]:
        return list(self._open)

    def depth(self, symbol: str, bid_vega: float, ask_vega: float) -> None:
        ep = self._open.get(symbol)
        if ep is not None:
            ep.min_bid_vega = min(ep.min_bid_vega, bid_vega)
            ep.min_ask_vega = min(ep.min_ask_vega, ask_vega)

    def quoted(self, symbol: str, sent: int) -> None:
        ep = self._open.get(symbol)
        if ep is not None:
            ep.quotes += sent

    def refused(self, symbol: str) -> None:
        ep = self._open.get(symbol)
        if ep is not None:
            ep.refused += 1

    def filled(self, symbol: str, contracts: float) -> None:
        # A fill can land just after the detector calmed: it belongs to the episode
        # whose quote it was, the latest of that option.
        for ep in reversed(self.episodes):
            if ep.symbol == symbol:
                ep.fills += 1
                ep.filled_contracts += contracts
                return

    def peaks(self, net_delta: float, vega: float, gamma: float) -> None:
        for ep in self._open.values():
            ep.peak_net_delta = max(ep.peak_net_delta, abs(net_delta))
            ep.peak_vega = max(ep.peak_vega, abs(vega))
            ep.peak_gamma = max(ep.peak_gamma, abs(gamma))

    def to_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.episodes]


def _t(ms: int | None) -> str:
    if ms is None:
        return "open"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _n(x: Any, digits: int = 2) -> str:
    if isinstance(x, bool) or x is None:
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}" if math.isfinite(x) else "-"
    return html.escape(str(x))


def episodes_html(
    episodes: list[dict[str, Any]], caps: dict[str, Any], *, synthetic: bool, underlying: str
) -> str:
    """A report section: one row per option episode (``EpisodeLog.to_list`` entries);
    ``caps`` is ``[options.limits]``. Every value is escaped."""
    head = (
        '<section class="options" id="options">'
        f"<h2>Option episodes on {html.escape(underlying)}"
        + (" (SYNTHETIC option books)" if synthetic else "")
        + "</h2>"
    )
    if not episodes:
        return head + '<p class="no-episode">No option episode.</p></section>'
    rows = []
    for n, e in enumerate(episodes, start=1):
        end = e.get("end_ms")
        duration = (int(end) - int(e["start_ms"])) / 1000 if end is not None else None
        base = e.get("baseline_vega") or [None, None]
        rows.append(
            f'<tr data-symbol="{html.escape(str(e["symbol"]))}"><td>{n}</td>'
            f"<td>{html.escape(str(e['symbol']))}</td><td>{_t(e['start_ms'])}</td>"
            f"<td>{_n(duration, 1)}</td><td>{_n(e['quotes'])}</td><td>{_n(e['refused'])}</td>"
            f"<td>{_n(e['fills'])} ({_n(e['filled_contracts'], 1)})</td>"
            f"<td>{_n(e['min_bid_vega'], 1)} / {_n(base[0], 1)}</td>"
            f"<td>{_n(e['min_ask_vega'], 1)} / {_n(base[1], 1)}</td>"
            f"<td>{_n(e['peak_abs_net_delta'], 3)}</td><td>{_n(e['peak_abs_vega'], 1)}</td>"
            f"<td>{_n(e['peak_abs_gamma'], 3)}</td></tr>"
        )
    caps_text = ", ".join(
        f"{html.escape(k)} {_n(v, 3)}"
        for k, v in sorted(caps.items())  # the journal's order (canonical JSON)
        if k.startswith("max_") and k.endswith("_total")
    )
    return (
        head + f"<p>Greek peaks are the whole option book's while the episode lasted (caps: "
        f"{caps_text}). Vega depth in USD per vol point.</p>"
        + '<table class="numbers option-episodes"><tr><th>#</th><th>option</th>'
        "<th>start (UTC)</th><th>duration (s)</th><th>quotes</th><th>refused</th>"
        "<th>fills (contracts)</th><th>thinnest bid vega / baseline</th>"
        "<th>thinnest ask vega / baseline</th><th>peak |net delta| (BTC)</th>"
        "<th>peak |vega|</th><th>peak |gamma| (BTC / 1 %)</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )
