"""Wiring ``[options]`` into a run: the option markets, their feed, the desk, the hedge.

:func:`bot.app.assemble` calls :meth:`OptionsPlan.build` and then, at three points, asks
the plan to wrap the feed (the synthetic chain goes *inside* any stress overlay, so a
``--stress fracture`` scales option books too), to add the option books to the engine's
markets, and to attach the desk (an engine listener) and the delta hedge (the
underlying's strategy wrapped by :class:`~strategies.option_backstop.DeltaHedgeStrategy`,
so hedge orders go through the trader's budget, risk engine and order manager).

Live option books (``source = "live"``) come from a second ccxt.pro exchange (deribit or
okx) through the same :class:`bot.feeds.live.LiveFeed`, merged with the main feed. Their
option specs are read from the unified symbols (strike, date at 08:00 UTC, C/P), so the
plan builds without a network call; the symbols are checked against the venue's markets
when the run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.book import OrderBook
from bot.clock import Clock
from bot.errors import ConfigError
from bot.feeds.events import MarketEvent
from bot.logs import Logger
from bot.monitor import DepthMonitor
from bot.options.chain import (
    SYNTHETIC_LABEL,
    SyntheticChainFeed,
    chain_markets,
    deribit_instrument,
)
from bot.options.desk import OptionDesk
from bot.options.settings import OptionsSettings
from bot.options.venue import OptionPaperVenue, make_option_paper_venue
from bot.risk.options import OptionSpec
from strategies.option_backstop import DeltaHedgeStrategy

if TYPE_CHECKING:
    from bot.engine import Feed, Listener, Market
    from bot.killswitch import KillSwitch
    from bot.settings import Settings
    from bot.trader import Trader
    from bot.venues.base import MarketDict
    from bot.venues.perp import PerpTerms

OPTION_BANDS_BPS = (500.0, 2000.0)
"""The engine's plain depth bands on option books (bps of premium): for reports only;
the detector reads vega depth."""

_OPTION_SYMBOL = re.compile(
    r"^(?P<base>[A-Z0-9]+)/(?P<quote>[A-Z0-9]+):(?P<settle>[A-Z0-9]+)-"
    r"(?P<date>\d{6})-(?P<strike>\d+(?:\.\d+)?)-(?P<kind>[CP])$"
)


def spec_from_symbol(symbol: str) -> OptionSpec:
    """An option spec from a ccxt unified option symbol (expiry 08:00 UTC, as on Deribit
    and OKX); ``ConfigError`` if it is not one."""
    m = _OPTION_SYMBOL.match(symbol)
    if m is None:
        raise ConfigError(
            f"options.symbols: {symbol!r} is not a ccxt option symbol "
            "(BASE/QUOTE:SETTLE-YYMMDD-STRIKE-C|P, e.g. BTC/USD:BTC-240927-60000-C)"
        )
    day = datetime.strptime(m["date"], "%y%m%d").replace(hour=8, tzinfo=UTC)
    return OptionSpec(
        symbol=symbol,
        underlying=m["base"],
        strike=float(m["strike"]),
        expiry_ms=round(day.timestamp() * 1000),
        call=m["kind"] == "C",
        contract_size=1.0,
        premium_in_base=m["settle"] == m["base"],
    )


@dataclass(slots=True)
class OptionsPlan:
    settings: OptionsSettings
    specs: dict[str, OptionSpec]
    log: Logger
    label: str
    desk: OptionDesk | None = None
    hedge: DeltaHedgeStrategy | None = None
    closers: list[Any] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, log: Logger) -> OptionsPlan | None:
        o = settings.options
        if o is None:
            return None
        if o.source == "synthetic":
            assert o.synthetic is not None
            if settings.feed.source != "replay":
                raise ConfigError(
                    'options.source "synthetic" prices options off a recording: it needs '
                    'feed.source = "replay" (or options.source = "live")'
                )
            markets = chain_markets(o.synthetic)
            specs = {s: OptionSpec.from_market(m) for s, m in markets.items()}
            label = f"synthetic: {SYNTHETIC_LABEL}"
            log.warning(
                "options_synthetic_chain",
                options=len(specs),
                expiries=list(o.synthetic.expiries),
                strikes=list(o.synthetic.strikes),
                why=SYNTHETIC_LABEL,
            )
        else:
            if settings.feed.source != "live":
                raise ConfigError(
                    'options.source "live" watches real option books: it needs feed.source = "live"'
                )
            specs = {s: spec_from_symbol(s) for s in o.symbols}
            label = f"live:{o.exchange}"
        return cls(o, specs, log, label)

    def wrap_feed(self, feed: Feed, *, clock: Clock) -> Feed:
        if self.settings.source == "synthetic":
            assert self.settings.synthetic is not None
            markets = {s: _spec_market(spec) for s, spec in self.specs.items()}
            return SyntheticChainFeed(
                feed,
                underlying=self.settings.underlying,
                markets=markets,
                cfg=self.settings.synthetic,
            )
        from bot.exchanges import make_exchange
        from bot.feeds.live import LiveFeed

        exchange = make_exchange(self.settings.exchange, sandbox=False)
        options_feed = LiveFeed(
            exchange, list(self.specs), clock=clock, rng=random.Random(), logger=self.log
        )
        self.closers.append(options_feed.aclose)
        return MergedFeed([feed, options_feed])

    def engine_markets(self, clock: Clock) -> dict[str, Market]:
        from bot.engine import Market

        return {
            s: Market(s, OrderBook(s, clock=clock), DepthMonitor.for_bands(OPTION_BANDS_BPS, 1.0))
            for s in self.specs
        }

    def option_markets(self) -> dict[str, dict[str, Any]]:
        """The options as ccxt markets (ccxt's Deribit parser on instrument entries)."""
        from bot.markets import markets_from_responses

        result = [
            deribit_instrument(s.underlying, s.strike, s.expiry_ms, s.call)
            for s in self.specs.values()
        ]
        markets = markets_from_responses("deribit", {"get_instruments": {"result": result}})
        # Live symbols may be another venue's spelling of the same option: keep ours.
        by_key = {
            (m["strike"], m["expiry"], m["optionType"] == "call"): m for m in markets.values()
        }
        out: dict[str, dict[str, Any]] = {}
        for symbol, spec in self.specs.items():
            market = dict(by_key[(spec.strike, spec.expiry_ms, spec.call)])
            market["symbol"] = symbol
            out[symbol] = market
        return out

    def paper_venue(
        self,
        *,
        markets: Mapping[str, MarketDict],
        balances: Mapping[str, float],
        clock: Clock,
        latency_ms: float,
        exchange_id: str,
        terms: Mapping[str, PerpTerms],
    ) -> OptionPaperVenue:
        """The paper venue with the option markets on it (``bot.app`` builds it in place of
        :func:`bot.venues.perp.make_paper_venue`): option orders go through the same
        order manager, latency, matching, journal and kill switch as the others."""
        options = self.option_markets() if self.settings.trade else {}
        funds = dict(balances)
        for settle in {str(m["settle"]) for m in options.values()}:
            funds[settle] = funds.get(settle, 0.0) + self.settings.paper_balance
        return make_option_paper_venue(
            markets=markets,
            option_markets=options,
            balances=funds,
            clock=clock,
            latency_ms=latency_ms,
            exchange_id=exchange_id,
            terms=terms,
            fee_rate=self.settings.quoting.fee_rate,
        )

    def attach(
        self,
        trader: Trader | None,
        listeners: list[Listener],
        *,
        paper: bool,
        killswitch: KillSwitch | None = None,
    ) -> None:
        """The desk after the trader (it sees the underlying's fills first), trading
        through the trader's order manager and risk engine; the option markets under the
        kill switch; the hedge on the underlying's strategy."""
        position = _position_reader(trader, self.settings.underlying)
        trade = paper and self.settings.trade and trader is not None
        self.desk = OptionDesk(
            self.settings,
            self.specs,
            self.log,
            trade=trade,
            underlying_position=position,
            underlying_resting=_resting_reader(trader, self.settings.underlying),
            orders=trader.manager if trade and trader is not None else None,
            risk=trader.risk if trade and trader is not None else None,
            skip=_skip_reader(trader),
            journal=trader.journal if trader is not None else None,
        )
        self.closers.append(self.desk.aclose)
        listeners.append(self.desk)
        recorder = trader.recorder if trader is not None else None
        if recorder is not None:
            # --report: a table of option episodes in place of a chart per option book.
            recorder.skip.update(self.specs)
            recorder.appendix.append(self.desk.report_html)
        if killswitch is not None and trade:
            killswitch.add_symbols(list(self.specs))
        if trader is not None and self.settings.hedge.enabled and self.desk.trade:
            self.hedge = DeltaHedgeStrategy(
                trader.strategy,
                self.desk.hedge_delta,
                self.settings.hedge,
                trigger=self.settings.hedge_trigger(),
                cap=self.settings.limits.max_delta_total,
                option_extremes=self.desk.delta_extremes,
            )
            trader.strategy = self.hedge

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.label}
        if self.desk is not None:
            out.update(self.desk.summary())
            out["source"] = self.label
        if self.hedge is not None:
            out["hedge_orders"] = self.hedge.hedges
        return out

    def status(self) -> dict[str, Any]:
        out = self.desk.status() if self.desk is not None else {}
        out["source"] = self.label
        return out


def _skip_reader(trader: Trader | None) -> Callable[[], str | None]:
    """Why the trader would not quote now (kill switch, journal backpressure)."""

    def read() -> str | None:
        if trader is None:
            return None
        if trader.halted:
            return "halted"
        if trader.journal is not None and trader.journal.backpressure:
            return "backpressure"
        return None

    return read


def _position_reader(trader: Trader | None, symbol: str) -> Any:
    def read() -> float:
        if trader is None or symbol not in trader.desks:
            return 0.0
        return float(trader.desks[symbol].inventory.net_base)

    return read


def _resting_reader(trader: Trader | None, symbol: str) -> Callable[[], tuple[float, float]]:
    """The underlying's open orders (pending ones included: they may fill as soon as
    they land), remaining (buys, sells) in base."""

    def read() -> tuple[float, float]:
        if trader is None or symbol not in trader.desks:
            return 0.0, 0.0
        rules = trader.desks[symbol].rules
        buys = sells = 0.0
        for o in trader.manager.open_orders(symbol):
            base = rules.base_amount(o.price, o.remaining)
            if o.side == "buy":
                buys += base
            else:
                sells += base
        return buys, sells

    return read


def _spec_market(spec: OptionSpec) -> dict[str, Any]:
    """A minimal ccxt-shaped option market for :meth:`OptionSpec.from_market`."""
    return {
        "symbol": spec.symbol,
        "option": True,
        "base": spec.underlying,
        "settle": spec.underlying if spec.premium_in_base else "USD",
        "strike": spec.strike,
        "expiry": spec.expiry_ms,
        "optionType": "call" if spec.call else "put",
        "contractSize": spec.contract_size,
    }


class MergedFeed:
    """Several feeds' events, as they arrive (live feeds only: no ordering by time)."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self.feeds = list(feeds)
        self.stats = getattr(self.feeds[0], "stats", None)

    async def events(self) -> AsyncIterator[MarketEvent]:
        queue: asyncio.Queue[MarketEvent | BaseException | None] = asyncio.Queue()

        async def pump(feed: Feed) -> None:
            try:
                async for event in feed.events():
                    await queue.put(event)
            except Exception as e:  # surfaced by the consumer
                await queue.put(e)
            finally:
                await queue.put(None)

        tasks = [asyncio.ensure_future(pump(f)) for f in self.feeds]
        running = len(tasks)
        try:
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
