"""The first order after a long quiet leaves on an open connection (through real ccxt).

aiohttp, under ccxt, closes a connection that sat idle for 15 s; a backstop is idle for
hours between episodes, so its first order would open a new one: a TCP and a TLS
handshake before the request. ``CcxtVenue.keep_warm`` asks the server time through the
order and cancel exchanges whenever they have been idle ``period`` seconds, which keeps
their connections pooled. Which connection a request came on is told by its client port,
as the emulator on 127.0.0.1 sees it.

The keep-alive is shortened to KEEPALIVE_S here (aiohttp's connector attribute), so a
quiet longer than that takes a second instead of fifteen; the quiet itself is the
condition under test, so those tests sleep through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.clock import WallClock
from bot.errors import ConfigError
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchanges import make_exchange, make_reader
from bot.logs import null_logger
from bot.settings import load_settings
from bot.venues.ccxt_venue import CcxtVenue

KEY, SECRET = "warm-key", "warm-secret"
REPO = Path(__file__).resolve().parents[1]
EXCHANGE_INFO = REPO / "bot" / "data" / "binance_exchange_info_symbols.json"
KEEPALIVE_S = 0.5
PERIOD_S = 0.2
QUIET_S = 1.2
"""Longer than the keep-alive: without pings, the pooled connection is closed by then."""


class Requests:
    """Each REST request the emulator got: (method and path, client port)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.changed = asyncio.Event()

    def __call__(self, key: str, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append((key, int(peer[1]) if peer else -1))
        self.changed.set()

    def ports(self, key: str) -> list[int]:
        return [port for k, port in self.seen if k == key]

    async def until(self, predicate: Any, within_s: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), within_s)


@asynccontextmanager
async def venue() -> AsyncIterator[tuple[CcxtVenue, Requests]]:
    spot = json.loads(EXCHANGE_INFO.read_text())["spot"]
    async with BinanceSpotEmulator(
        exchange_info=[spot],
        api_key=KEY,
        secret=SECRET,
        clock=WallClock(),
        balances={"BTC": "1", "USDT": "100000"},
    ) as emu:
        seen = Requests()
        emu.on_request = seen
        exchange = make_exchange(
            emu.ccxt_id,
            sandbox=True,
            api_key=KEY,
            secret=SECRET,
            options=json.loads(json.dumps(emu.ccxt_options)),
            url_overrides=emu.url_overrides(),
        )
        await exchange.load_markets()
        canceller = make_reader(exchange)
        for ex in (exchange, canceller):
            ex.open()  # its aiohttp session and connector exist from here on
            ex.tcp_connector._keepalive_timeout = KEEPALIVE_S
        v = CcxtVenue(exchange, log=null_logger(), canceller=canceller)
        try:
            yield v, seen
        finally:
            await v.close()


async def buy(v: CcxtVenue, price: float) -> str:
    order = await v.create_order("BTC/USDT", "limit", "buy", 0.001, price, {"postOnly": True})
    return str(order["id"])


@contextlib.asynccontextmanager
async def warm(v: CcxtVenue, period_s: float) -> AsyncIterator[None]:
    task = asyncio.ensure_future(v.keep_warm(period_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_first_order_after_a_quiet_reuses_the_warm_connection() -> None:
    async with venue() as (v, seen), warm(v, PERIOD_S):
        await buy(v, 10_000)
        await asyncio.sleep(QUIET_S)  # the quiet under test
        await buy(v, 10_001)
        first, second = seen.ports("POST /api/v3/order")
        assert second == first  # the same TCP connection: no handshake before the order
        # It stayed open because the idle exchange asked the time on it meanwhile.
        assert first in seen.ports("GET /api/v3/time")


async def test_without_keep_warm_the_quiet_costs_a_new_connection() -> None:
    # The control: the case keep_warm exists for is real with this keep-alive.
    async with venue() as (v, seen):
        await buy(v, 10_000)
        await asyncio.sleep(QUIET_S)
        await buy(v, 10_001)
        first, second = seen.ports("POST /api/v3/order")
        assert second != first
        assert seen.ports("GET /api/v3/time") == []


async def test_the_cancel_path_is_kept_warm_too() -> None:
    async with venue() as (v, seen):
        order_id = await buy(v, 10_000)
        async with warm(v, PERIOD_S):
            # Two exchanges idle: the order one and the canceller each ask the time.
            await seen.until(lambda: len(set(seen.ports("GET /api/v3/time"))) >= 2)
            pinged = len(seen.ports("GET /api/v3/time"))
            await v.cancel_order(order_id, "BTC/USDT")
            cancel_port = seen.ports("DELETE /api/v3/order")[-1]
        assert cancel_port in seen.ports("GET /api/v3/time")[:pinged]
        assert cancel_port not in seen.ports("POST /api/v3/order")  # its own connection


def test_a_keep_warm_period_the_connection_would_not_survive_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"exchange\.keep_warm_s"):
        load_settings(env={}, overrides={"exchange": {"keep_warm_s": 20}})
    off = load_settings(env={}, overrides={"exchange": {"keep_warm_s": 0}})
    assert off.exchange.keep_warm_s == 0
