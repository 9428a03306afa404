"""The daemon's side of the control API: status, kill, resume, pause, cancel-all.

:class:`Daemon` implements :class:`bot.control.api.ControlHandler` over one assembled
:class:`~bot.app.Run`. Every command goes through the same objects the bot itself
uses (the kill switch, the risk engine, the order manager), so an operator's kill is
exactly a guard's kill with a different ``source``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.app import Run
from bot.book import BookState, OrderBook
from bot.clock import NS_PER_SECOND
from bot.control.api import CommandConflict, CommandRefused, Health, current_principal
from bot.control.metrics import Metrics
from bot.engine import Listener
from bot.feeds.events import Trade
from bot.killswitch import KillSwitch, TripSource
from bot.logs import Logger
from bot.monitor import DepthSample
from bot.options.runner import OptionsPlan
from bot.orders import OrderFilled, OrderNotice, OrderStateChanged
from bot.risk import GuardEvent, RiskEvent
from bot.trader import Trader


class Daemon:
    def __init__(self, run: Run, *, log: Logger) -> None:
        if run.trader is None or run.killswitch is None:
            raise CommandRefused("this run trades no market: there is nothing to control")
        self._run = run
        self._trader: Trader = run.trader
        self._killswitch: KillSwitch = run.killswitch
        self._log = log
        self._started = time.monotonic()

    # ------------------------------------------------------------ queries

    @property
    def killswitch(self) -> KillSwitch:
        return self._killswitch

    def symbols(self) -> Sequence[str]:
        return list(self._trader.desks)

    async def health(self) -> Health:
        reasons = [
            f"{symbol}: book {m.book.state.value}"
            for symbol, m in self._run.engine.markets.items()
            if m.book.state is not BookState.VALID
        ]
        return Health(ok=not reasons, reasons=tuple(reasons))

    async def status(self) -> dict[str, Any]:
        trader, risk = self._trader, self._trader.risk
        markets: list[dict[str, Any]] = []
        total_real = total_unreal = 0.0
        for symbol, desk in trader.desks.items():
            book = self._run.engine.markets[symbol].book
            sample = self._run.engine.markets[symbol].monitor.last
            orders = trader.manager.open_orders(symbol)
            mid = desk.last_mid
            inv = desk.inventory
            real, unreal = inv.realised_pnl, inv.unrealised_pnl(mid)
            total_real += real
            total_unreal += unreal
            update = desk.last_update
            market_risk = risk.market_state(symbol)
            age = book.age_ns()
            markets.append(
                {
                    "symbol": symbol,
                    "book": {
                        "health": "ok" if book.state is BookState.VALID else book.state.value,
                        "age_s": None if age is None else age / NS_PER_SECOND,
                        "mid": mid,
                        "spread_bps": book.spread_bps(),
                    },
                    "depth": _depth_bands(sample, update),
                    "engaged": bool(update and update.active),
                    "detector": update.state.value if update else "warming up",
                    "paused": risk.is_paused(symbol),
                    "pause_reason": "; ".join(market_risk.reasons.values()) or None,
                    "open_orders": len(orders),
                    # Creates decided but not sent (order rate, busy side, would-take wall).
                    "orders_held_back": desk.held_back,
                    "inventory": {inv.base_currency: inv.base, inv.quote_currency: inv.quote},
                    "committed_quote": inv.committed_quote(orders, mid),
                    "pnl": {
                        "realised_quote": real,
                        "unrealised_quote": unreal,
                        "total_quote": real + unreal,
                    },
                    "guards": risk.guard_status(symbol),
                    "episodes": len(desk.episodes.episodes),
                    "warning": desk.warning.status() if desk.warning is not None else None,
                }
            )
        return {
            "mode": self._run.settings.mode,
            "pid": os.getpid(),
            "uptime_s": time.monotonic() - self._started,
            "source": self._run.source,
            "strategy": trader.strategy.name,
            "trading_state": str(risk.trading_state),
            "kill_switch": self._killswitch.status(),
            "policy": self._run.governance.status() if self._run.governance else None,
            "markets": markets,
            "options": self._run.options.status() if self._run.options is not None else None,
            "guards": risk.guard_status(None),
            "pnl": {
                "realised_quote": total_real,
                "unrealised_quote": total_unreal,
                "total_quote": total_real + total_unreal,
            },
        }

    # ------------------------------------------------------------ for the dashboard

    def add_listener(self, listener: Listener) -> None:
        """Tell ``listener`` about every book sample and trade from now on."""
        self._run.engine.add_listener(listener)

    def fracture_thresholds(self, symbol: str) -> tuple[float | None, float | None]:
        return fracture_thresholds(self._trader, symbol)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every kill-switch record and risk event (pause, guard),
        so a live view can show them at once rather than at its next refresh."""
        self._killswitch.subscribe(lambda _record: callback())
        self._trader.risk.subscribe(lambda _event: callback())

    async def journal_path(self) -> Path | None:
        """The journal's file, with every record appended so far committed (readers
        open it read-only)."""
        journal = self._trader.journal
        if journal is None:
            return None
        async with asyncio.timeout(5.0):
            await journal.flush()
        return journal.path

    # ------------------------------------------------------------ commands

    async def kill(self, reason: str, source: str) -> dict[str, Any]:
        report = await self._killswitch.trip(reason, source=TripSource.OPERATOR, who=source)
        took = report.elapsed_ns / NS_PER_SECOND
        if report.flat:
            message = (
                f"kill switch tripped: {len(report.cancelled)} orders cancelled, none of ours "
                f"left open ({took:.3f} s)"
            )
        else:
            message = (
                f"kill switch tripped but NOT confirmed flat after {report.attempts} rounds: "
                f"{len(report.remaining)} of our orders still open; retrying"
            )
        return {"message": message, "state": report.state.value, "flat": report.flat}

    async def resume(self, reason: str, source: str) -> dict[str, Any]:
        ks, governance = self._killswitch, self._run.governance
        denial = ks.check_resume(reason)
        if denial is not None:
            raise CommandConflict(denial)
        who = source
        if governance is not None:
            principal = current_principal.get()
            identity = principal.identity if principal is not None else source
            verdict = governance.approve_resume(
                identity, reason, trip=ks.trip_key(), trip_status=ks.status()
            )
            if verdict.refused is not None:
                raise CommandConflict(verdict.refused)
            if not verdict.done:
                return {
                    "message": (
                        f"approval {len(verdict.approvers)} of {verdict.needed} recorded "
                        f"({identity}); a loss guard tripped this kill, so it stays tripped "
                        "until another admin approves with their own token (two-person rule)"
                    ),
                    "state": ks.state.value,
                    "pending": True,
                    "approvers": list(verdict.approvers),
                }
            if len(verdict.approvers) > 1:
                who = f"{source}; approved by {', '.join(verdict.approvers)}"
        denial = ks.resume(reason, who=who)
        if denial is not None:
            raise CommandConflict(denial)
        return {"message": "kill switch re-armed: quoting resumes", "state": "armed"}

    async def policy(self) -> dict[str, Any]:
        governance = self._run.governance
        if governance is None:
            raise CommandRefused("this daemon runs no intervention policy")
        return governance.describe()

    async def set_policy(self, text: str, reason: str, source: str) -> dict[str, Any]:
        from bot.governance.policy import load_policy_text

        governance = self._run.governance
        if governance is None:
            raise CommandRefused("this daemon runs no intervention policy")
        new = load_policy_text(text, source="control API")
        return governance.change_policy(new, who=source, reason=reason)

    async def pause(self, symbol: str, reason: str, source: str) -> dict[str, Any]:
        denial = self._trader.risk.pause(symbol, reason=reason, who=source)
        if denial is not None:
            raise CommandConflict(denial)
        return {"message": f"{symbol} paused: its quotes are being cancelled"}

    async def unpause(self, symbol: str, source: str) -> dict[str, Any]:
        denial = self._trader.risk.unpause(symbol, who=source)
        if denial is not None:
            raise CommandConflict(denial)
        return {"message": f"{symbol} unpaused"}

    async def cancel_all(self, reason: str, source: str) -> dict[str, Any]:
        manager = self._trader.manager
        asked: list[str] = []
        for symbol in self.symbols():
            asked += manager.cancel_all(symbol, reason=reason)
        self._log.warning("operator_cancel_all", reason=reason, who=source, orders=len(asked))
        return {"message": f"cancelling {len(asked)} of our orders", "orders": asked}


def fracture_thresholds(trader: Trader, symbol: str) -> tuple[float | None, float | None]:
    """(bid, ask) quote depth below which the watched (first) band is fractured:
    baseline x ``baseline_fraction``; None while the baseline warms up."""
    desk = trader.desks.get(symbol)
    update = desk.last_update if desk is not None else None
    if desk is None or update is None or not update.baseline_ready:
        return (None, None)
    fraction = desk.settings.baseline_fraction
    bid, ask = (b * fraction if b is not None else None for b in update.baseline)
    return (bid, ask)


def _depth_bands(sample: DepthSample | None, update: Any) -> list[dict[str, Any]]:
    if sample is None:
        return []
    bands: list[dict[str, Any]] = []
    for i, band in enumerate(sample.bands_bps):
        row: dict[str, Any] = {
            "band_bps": band,
            "bid_quote": float(sample.depth[0, i, 1]),
            "ask_quote": float(sample.depth[1, i, 1]),
        }
        if i == 0 and update is not None:
            # A side's baseline is None until an interval has been folded in (the
            # first book just after the feed connects).
            known = [b for b in update.baseline if b is not None]
            row["baseline_quote"] = min(known) if known else None
        bands.append(row)
    return bands


class MetricsListener:
    """Keeps the Prometheus metrics current: gauges from the engine's samples, counters
    from order notices, guard events and kill-switch records."""

    def __init__(
        self,
        metrics: Metrics,
        trader: Trader,
        killswitch: KillSwitch,
        options: OptionsPlan | None = None,
    ) -> None:
        self._metrics = metrics
        self._trader = trader
        self._options = options
        self._held_back: dict[str, int] = {}
        """Per market, the trader's held-back count already added to the counter."""
        trader.manager.subscribe(self._on_notice)
        trader.risk.subscribe(self._on_risk)
        killswitch.subscribe(lambda _record: metrics.set_kill_switch(killswitch.state.value))
        metrics.set_kill_switch(killswitch.state.value)

    def _on_notice(self, notice: OrderNotice) -> None:
        if isinstance(notice, OrderFilled):
            self._metrics.record_fill(notice.symbol, notice.side, notice.price * notice.amount)
        elif isinstance(notice, OrderStateChanged):
            self._metrics.record_order(notice.symbol, notice.state.value)
        else:
            self._metrics.record_order(notice.symbol, f"failed:{notice.action}")

    def _on_risk(self, event: RiskEvent) -> None:
        if isinstance(event, GuardEvent):
            self._metrics.record_guard_trip(
                str(event.guard), str(event.level), event.symbol or ""
            )

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        m = self._metrics
        options = self._options.desk if self._options is not None else None
        if options is not None and symbol == options.settings.underlying:
            m.set_options(symbol, **options.gauges())
        desk = self._trader.desks.get(symbol)
        update = desk.last_update if desk is not None else None
        thresholds = fracture_thresholds(self._trader, symbol)
        for i, band in enumerate(sample.bands_bps):
            m.set_depth(
                symbol,
                band,
                bid_quote=float(sample.depth[0, i, 1]),
                ask_quote=float(sample.depth[1, i, 1]),
                # The detector watches the first band (DetectorConfig.from_market).
                threshold_quote=thresholds if i == 0 else (None, None),
            )
        if desk is None:
            return
        m.set_engaged(symbol, bool(update and update.active))
        # The trader counts as it goes; the counter takes what is new since last time.
        m.record_held_back(symbol, desk.held_back - self._held_back.get(symbol, 0))
        self._held_back[symbol] = desk.held_back
        if desk.warning is not None:
            m.set_warning(symbol, desk.warning.probability, up=desk.warning.up)
        m.set_paused(symbol, self._trader.risk.is_paused(symbol))
        orders = self._trader.manager.open_orders(symbol)
        m.set_open_orders(
            symbol, len(orders), committed_quote=desk.inventory.committed_quote(orders, sample.mid)
        )
        inv = desk.inventory
        m.set_inventory(symbol, {inv.base_currency: inv.base, inv.quote_currency: inv.quote})
        m.set_pnl(
            symbol,
            realised_quote=inv.realised_pnl,
            unrealised_quote=inv.unrealised_pnl(sample.mid),
        )
        age = book.age_ns()
        if age is not None:
            m.set_feed_age(symbol, age / NS_PER_SECOND)
        sent, received = book.exchange_ts_ns, book.last_update_ns
        if sent is not None and received is not None:
            # Exchange stamp to our receipt: network, ccxt.pro's handling and any wait
            # in our event loop. Growing with the market count: the daemon falls behind.
            m.observe_feed_latency(symbol, (received - sent) / NS_PER_SECOND)

    def on_trade(self, trade: Trade) -> None:
        return None
