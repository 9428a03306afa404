"""What the operator sees while the bot runs: a live status line or book view in a
terminal, periodic structured progress lines otherwise.

Views are engine listeners. They redraw at most a few times a second on the wall
clock, so a replay running at full speed is not slowed down by the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bot.book import OrderBook, Side
from bot.clock import NS_PER_SECOND
from bot.feeds.events import Trade
from bot.logs import Logger
from bot.monitor import DepthSample
from bot.summary import RunSummary, iso_ns

Monotonic = Callable[[], float]


def fmt_qty(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:,.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:,.1f}k"
    return f"{x:,.3f}" if x < 100 else f"{x:,.1f}"


class _Throttled:
    """Calls ``_refresh`` at most once per ``interval_s`` of wall time."""

    def __init__(self, interval_s: float, monotonic: Monotonic) -> None:
        self._interval = interval_s
        self._monotonic = monotonic
        self._next = 0.0
        self.samples: dict[str, tuple[OrderBook, DepthSample]] = {}
        self.events = 0

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        self.samples[symbol] = (book, sample)
        self.events += 1
        now = self._monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self._refresh()

    def on_trade(self, trade: Trade) -> None:
        self.events += 1

    def _refresh(self) -> None:
        raise NotImplementedError


class LogProgress(_Throttled):
    """Structured ``progress`` lines for daemons and pipes (every ``interval_s`` of wall time)."""

    def __init__(self, log: Logger, interval_s: float = 5.0, monotonic: Monotonic = time.monotonic):
        super().__init__(interval_s, monotonic)
        self._log = log

    def _refresh(self) -> None:
        for symbol, (_book, s) in self.samples.items():
            bid_q = [round(float(q), 2) for q in s.depth[0, :, 1]]
            ask_q = [round(float(q), 2) for q in s.depth[1, :, 1]]
            self._log.info(
                "progress",
                symbol=symbol,
                data_time=iso_ns(s.ts_ns),
                updates=self.events,
                mid=s.mid,
                spread_bps=round(s.spread_bps, 3),
                bands_bps=list(s.bands_bps),
                bid_depth_quote=bid_q,
                ask_depth_quote=ask_q,
            )


def depth_table(symbol: str, book: OrderBook, s: DepthSample) -> Table:
    age = book.age_ns()
    title = (
        f"{symbol}  {iso_ns(s.ts_ns)}  bid {s.best_bid:,.2f}  ask {s.best_ask:,.2f}  "
        f"spread {s.spread_bps:.2f} bps  age {0 if age is None else age / NS_PER_SECOND:.2f}s"
    )
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("band (bps)", justify="right")
    table.add_column("bid base", justify="right")
    table.add_column("bid quote", justify="right")
    table.add_column("ask base", justify="right")
    table.add_column("ask quote", justify="right")
    for b, band in enumerate(s.bands_bps):
        bid_base, bid_quote = s.band_depth(Side.BID, b)
        ask_base, ask_quote = s.band_depth(Side.ASK, b)
        cells = (bid_base, bid_quote, ask_base, ask_quote)
        table.add_row(f"{band:g}", *(fmt_qty(c) for c in cells))
    drops = sum(book.drops.values())
    cost_buy = "n/a" if s.buy_slippage_bps is None else f"{s.buy_slippage_bps:.2f}"
    cost_sell = "n/a" if s.sell_slippage_bps is None else f"{s.sell_slippage_bps:.2f}"
    table.caption = (
        f"levels {book.level_count(Side.BID)}/{book.level_count(Side.ASK)}  "
        f"ref-notional cost buy {cost_buy} / sell {cost_sell} bps  dropped {drops}"
    )
    return table


def ladder_table(book: OrderBook, levels: int) -> Table:
    table = Table(title="top of book", title_justify="left")
    for name in ("bid size", "bid", "ask", "ask size"):
        table.add_column(name, justify="right")
    bids, asks = book.top(levels, Side.BID), book.top(levels, Side.ASK)
    for i in range(max(len(bids), len(asks))):
        row = ["", "", "", ""]
        if i < len(bids):
            row[0], row[1] = fmt_qty(float(bids[i, 1])), f"{bids[i, 0]:,.2f}"
        if i < len(asks):
            row[2], row[3] = f"{asks[i, 0]:,.2f}", fmt_qty(float(asks[i, 1]))
        table.add_row(*row)
    return table


class TerminalView(_Throttled):
    """A rich ``Live`` region: depth bands per market, optionally the top levels."""

    def __init__(
        self,
        console: Console,
        *,
        ladder_levels: int = 0,
        interval_s: float = 0.25,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        super().__init__(interval_s, monotonic)
        self._ladder_levels = ladder_levels
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> TerminalView:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._refresh()
        self._live.__exit__(exc_type, exc, tb)

    def _render(self) -> RenderableType:
        if not self.samples:
            return Text("waiting for a valid book…")
        parts: list[RenderableType] = []
        for symbol, (book, sample) in self.samples.items():
            parts.append(depth_table(symbol, book, sample))
            if self._ladder_levels:
                parts.append(ladder_table(book, self._ladder_levels))
        parts.append(Text(f"updates {self.events:,}", style="dim"))
        return Group(*parts)

    def _refresh(self) -> None:
        self._live.update(self._render(), refresh=True)


def summary_table(summary: RunSummary) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("mode / source", f"{summary.mode} / {summary.source}")
    head.add_row("events", f"{summary.total_events:,}  " + _counts(summary.events))
    head.add_row("book updates", f"{summary.book_updates:,}")
    head.add_row("dropped", f"{summary.total_dropped:,}  " + _counts(summary.dropped))
    head.add_row("sequence gaps", f"{summary.gaps}")
    head.add_row("data span", f"{summary.first_ts} → {summary.last_ts}  ({summary.span_s:,.1f} s)")
    speed = summary.span_s / summary.wall_s if summary.wall_s > 0 else 0.0
    head.add_row("wall time", f"{summary.wall_s:,.2f} s  ({speed:,.0f}x real time)")
    parts: list[RenderableType] = [head]
    for symbol, m in summary.markets.items():
        table = Table(title=f"{symbol}: minimum depth seen", title_justify="left")
        for name in ("band (bps)", "side", "min base", "min quote", "at (UTC)", "mid then"):
            table.add_column(name, justify="right")
        for side in ("bid", "ask"):
            for band, low in m["min_depth"][side].items():
                if low["ts_ns"] is None:
                    table.add_row(band, side, "-", "-", "-", "-")
                    continue
                table.add_row(
                    band,
                    side,
                    fmt_qty(low["base"]),
                    fmt_qty(low["quote"]),
                    str(iso_ns(low["ts_ns"]))[11:23],
                    f"{low['mid']:,.2f}",
                )
        table.caption = f"max spread {m['max_spread_bps']:.2f} bps  book {m['book_state']}"
        parts.append(table)
    if summary.trading is not None:
        parts.append(trading_table(summary.trading))
    return Group(*parts)


def trading_table(trading: dict[str, Any]) -> Table:
    """Per market: the inventory's outcome and one row per episode."""
    table = Table(title=f"trading ({trading['strategy']})", title_justify="left")
    for name in ("market", "UTC", "trigger", "fills", "volume"):
        table.add_column(name, justify="right")
    table.add_column("PnL", justify="right")
    table.add_column("max committed", justify="right")
    for symbol, m in trading["markets"].items():
        inv = m["inventory"]
        table.add_row(
            symbol,
            f"{len(m['episodes'])} episodes",
            "",
            f"{inv['fills']}",
            f"{inv['volume_quote']:,.2f}",
            f"{inv['marked_pnl']:,.2f}",
            f"{m['max_committed_quote']:,.2f}",
        )
        for n, ep in enumerate(m["episodes"], 1):
            start = str(iso_ns(ep["start_ts_ns"]))[11:19]
            end = str(iso_ns(ep["end_ts_ns"]))[11:19] if ep["end_ts_ns"] else "open"
            trigger = ep["trigger"] or {}
            table.add_row(
                f"#{n}",
                f"{start}→{end}",
                f"{trigger.get('rule', '?')}/{trigger.get('side', '?')}",
                f"{ep['fills']}",
                f"{ep['volume']['quote']:,.2f}",
                "" if ep["marked_pnl"] is None else f"{ep['marked_pnl']:,.2f}",
                f"{ep['max_committed_quote']:,.2f}",
            )
    return table


def _counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{k}={v:,}" for k, v in sorted(counts.items()) if v) if counts else ""
