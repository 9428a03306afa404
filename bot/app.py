"""Wiring: turn validated :class:`~bot.settings.Settings` into a running engine.

Everything the engine needs (clock, feed, books, listeners, logger) is built here and
passed in, so tests can build the same objects by hand with fakes where they need to.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt

from bot.book import OrderBook
from bot.clock import Clock, ManualClock, WallClock
from bot.engine import Engine, Feed, Listener, Market
from bot.errors import BackstopError, UserError
from bot.exchanges import make_exchange, map_ccxt_error
from bot.feeds.live import LiveFeed
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.logs import Logger
from bot.markets import market_id_map, offline_markets
from bot.monitor import DepthMonitor
from bot.settings import Settings, validate_symbols
from bot.summary import RunSummary, summarize


def replay_symbol_map(settings: Settings) -> dict[str, str]:
    """Raw exchange ids in a recording -> the configured unified symbols.

    Bundled market definitions give the exact id (``BTC/USDT:USDT`` -> ``BTCUSDT`` on
    USD-M); for other symbols we fall back to the exchange's usual concatenation
    (``ETH/USDT`` -> ``ETHUSDT``), which is what Binance-style recordings carry.
    """
    known = offline_markets(settings.exchange.id) or {}
    # Known spot ids first, so a recording of an unconfigured market is still named
    # in unified form when we report what it holds.
    mapping = market_id_map(known)
    for market in settings.markets:
        symbol = market.symbol
        raw = known[symbol]["id"] if symbol in known else symbol.split(":")[0].replace("/", "")
        mapping[str(raw)] = symbol
    return mapping


@dataclass
class Run:
    """One assembled run: call :meth:`execute` once."""

    settings: Settings
    engine: Engine
    feed: Feed
    source: str
    closers: list[Any] = field(default_factory=list)

    async def execute(self, stop: asyncio.Event | None = None) -> RunSummary:
        started = time.perf_counter()
        try:
            await self.engine.run(stop)
        finally:
            for close in self.closers:
                await close()
        wall = time.perf_counter() - started
        stats = getattr(self.feed, "stats", None)
        summary = summarize(
            self.engine,
            mode=self.settings.mode,
            source=self.source,
            wall_s=wall,
            feed_stats=stats,
            feed_malformed=_malformed(stats),
        )
        if self.source.startswith("replay") and summary.book_updates == 0:
            seen = ", ".join(sorted(self.engine.ignored_symbols)) or "no book data at all"
            configured = ", ".join(m.symbol for m in self.settings.markets)
            raise UserError(
                f"the replay has no book data for the configured market(s) {configured} "
                f"(it has: {seen}); set --symbol or markets[].symbol to match the recording"
            )
        return summary


def _malformed(stats: object) -> Counter[str]:
    raw = getattr(stats, "malformed", None)
    return Counter(raw) if isinstance(raw, Mapping) else Counter()


def _markets(settings: Settings, clock: Clock) -> dict[str, Market]:
    return {
        m.symbol: Market(
            symbol=m.symbol,
            book=OrderBook(m.symbol, clock=clock),
            monitor=DepthMonitor.for_bands(m.bands_bps, m.reference_notional_quote),
        )
        for m in settings.markets
    }


async def assemble(
    settings: Settings, *, log: Logger, listeners: Sequence[Listener] = ()
) -> Run:
    """Build the feed, books and engine for ``settings`` (loads markets for a live feed)."""
    if settings.feed.source == "replay":
        paths = list(settings.feed.replay_files) or bundled_sample_paths()
        replay_clock = ManualClock()
        replay = ReplayFeed(
            paths,
            clock=replay_clock,
            speed=settings.feed.speed,
            duration_s=settings.feed.duration_s,
            symbol_map=replay_symbol_map(settings),
        )
        names = ", ".join(Path(p).name for p in paths)
        engine = Engine(
            feed=replay,
            markets=_markets(settings, replay_clock),
            log=log,
            listeners=listeners,
        )
        log.info("replay_start", files=names, speed=settings.feed.speed)
        return Run(settings, engine, replay, source=f"replay:{names}")

    ex = settings.exchange
    exchange = make_exchange(
        ex.id,
        sandbox=settings.mode == "testnet",
        api_key=ex.api_key.get_secret_value() if ex.api_key else None,
        secret=ex.secret.get_secret_value() if ex.secret else None,
        password=ex.password.get_secret_value() if ex.password else None,
        options=ex.options,
    )
    try:
        try:
            markets = await exchange.load_markets()
        except (ccxt.BaseError, OSError) as e:
            mapped = map_ccxt_error(e)
            raise type(mapped)(f"could not load {ex.id} markets: {mapped}") from e
        validate_symbols(settings, markets, source=f"exchange {ex.id}")
    except BackstopError:
        await exchange.close()
        raise
    wall = WallClock()
    live = LiveFeed(
        exchange,
        [m.symbol for m in settings.markets],
        clock=wall,
        depth_limit=settings.feed.book_depth_limit,
        rest_fallback=settings.feed.rest_fallback,
        rest_poll_interval_s=settings.feed.rest_poll_interval_s,
        reconnect_initial_s=settings.feed.reconnect_initial_s,
        reconnect_max_s=settings.feed.reconnect_max_s,
        rng=random.Random(),
        logger=log,
    )
    engine = Engine(
        feed=live, markets=_markets(settings, wall), log=log, listeners=listeners
    )
    return Run(settings, engine, live, source=f"live:{ex.id}", closers=[live.aclose])
