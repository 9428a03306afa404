"""The USDⓈ-M futures emulator through real ccxt ``binanceusdm`` (REST and ccxt.pro).

Figures are hand-computed from the bundled BTCUSDT perpetual's terms: maker 0.02 %,
taker 0.04 %, maintenance 2.5 %, tick 0.1, lot 0.001, minimum notional 5 USDT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import pytest
from futures_support import ccxt_venue, exchange_info

from bot.clock import ManualClock, WallClock
from bot.exchange_sim.events import AccountChanged
from bot.exchange_sim.futures import FuturesEngine
from bot.exchange_sim.futures_server import BinanceFuturesEmulator
from bot.venues.ccxt_venue import CcxtVenue

PERP, RAW = "BTC/USDT:USDT", "BTCUSDT"
KEY, SECRET = "usdm-key", "usdm-secret"
WITHIN_S = 5.0


@pytest.fixture(scope="module")
def usdm_entry() -> dict[str, Any]:
    return exchange_info("usdm")


@asynccontextmanager
async def emulator(
    usdm_entry: dict[str, Any], **kwargs: Any
) -> AsyncIterator[BinanceFuturesEmulator]:
    kwargs.setdefault("clock", WallClock())
    async with BinanceFuturesEmulator(
        exchange_info=[usdm_entry], api_key=KEY, secret=SECRET, balances={"USDT": "10000"}, **kwargs
    ) as emu:
        emu.engine.seed_book(
            RAW, bids=[("60000", "5"), ("59999.9", "5")], asks=[("60000.1", "5"), ("60000.2", "5")]
        )
        yield emu


def venue(emu: BinanceFuturesEmulator) -> AbstractAsyncContextManager[CcxtVenue]:
    return ccxt_venue("binanceusdm", emu, KEY, SECRET)


@pytest.fixture
async def emu(usdm_entry: dict[str, Any]) -> AsyncIterator[BinanceFuturesEmulator]:
    async with emulator(usdm_entry) as e:
        yield e


async def long_01(v: CcxtVenue) -> dict[str, Any]:
    """Isolated 5x, then buy 0.1 at the ask (taker)."""
    await v.set_margin_mode("isolated", PERP)
    await v.set_leverage(5, PERP)
    return await v.create_order(PERP, "limit", "buy", 0.1, 60000.1, {"clientOrderId": "t-1"})


async def test_markets_and_book_come_from_the_fapi_endpoints(emu: BinanceFuturesEmulator) -> None:
    async with venue(emu) as v:
        book = await v.fetch_order_book(PERP, 5)
        markets = v.markets
    assert list(markets) == [PERP]
    m = markets[PERP]
    assert (m["id"], m["linear"], m["contractSize"], m["settle"]) == ("BTCUSDT", True, 1.0, "USDT")
    assert (m["precision"]["price"], m["precision"]["amount"]) == (0.1, 0.001)
    assert book["bids"] == [[60000.0, 5.0], [59999.9, 5.0]]
    assert book["nonce"] == emu.engine.books[RAW].last_update_id
    assert {path for _, path, _ in emu.requests} == {"/fapi/v1/exchangeInfo", "/fapi/v1/depth"}


async def test_a_taker_fill_opens_an_isolated_position_with_binance_arithmetic(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        order = await long_01(v)
        (position,) = await v.fetch_positions([PERP])
        balance = await v.fetch_balance()
        (trade,) = await v.fetch_my_trades(PERP)
    assert (order["status"], order["filled"], order["clientOrderId"]) == ("closed", 0.1, "t-1")
    # Value 6,000.01; taker fee 0.04 % = 2.400004; margin 6,000.01 / 5 = 1,200.002.
    assert trade["fee"] == {"currency": "USDT", "cost": 2.400004}
    assert trade["takerOrMaker"] == "taker"
    assert position["side"] == "long"
    assert position["contracts"] == 0.1
    assert position["entryPrice"] == 60000.1
    assert position["marginMode"] == "isolated"
    assert position["positionMargin"] == 1200.002  # isolated wallet
    assert position["markPrice"] == 60000.05  # the mid
    assert position["unrealizedPnl"] == -0.005
    # Liquidation: (N x entry - M) / (N x (1 - mmr)) = 4,800.008 / 0.0975.
    assert position["liquidationPrice"] == pytest.approx(49230.85128205, abs=1e-8)
    # Wallet 10,000 - 2.400004; free = wallet - margin; the adapter reports the wallet
    # as the total (ccxt's would be the margin balance, wallet + unrealised).
    assert balance["USDT"]["total"] == 9997.599996
    assert balance["USDT"]["free"] == 8797.597996
    assert balance["USDT"]["used"] == 1200.002
    assert emu.engine.margin_types[RAW] == "ISOLATED"


async def test_reduce_only_is_accepted_refused_and_expired_as_binance_does(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        await long_01(v)
        # Growing the long is not reducing: -2022, which ccxt raises as InvalidOrder.
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):
            await v.create_order(PERP, "limit", "buy", 0.01, 59990, {"reduceOnly": True})
        # Nor is selling more than the position.
        with pytest.raises(ccxt.InvalidOrder, match="ReduceOnly Order is rejected"):
            await v.create_order(PERP, "limit", "sell", 0.2, 60010, {"reduceOnly": True})
        # Closing half, post-only, rests; a market buy at its price fills it (maker).
        close = await v.create_order(
            PERP, "limit", "sell", 0.05, 60010, {"reduceOnly": True, "postOnly": True}
        )
        assert (close["status"], close["reduceOnly"], close["postOnly"]) == ("open", True, True)
        emu.engine.market_trade(RAW, 60010.0, 1.0, "buy")
        (position,) = await v.fetch_positions([PERP])
        trades = await v.fetch_my_trades(PERP)
        # A reduce-only order larger than the position left expires when a fill shrinks it.
        stale = await v.create_order(PERP, "limit", "sell", 0.05, 60020, {"reduceOnly": True})
        await v.create_order(PERP, "limit", "sell", 0.03, 60000)  # taker: long 0.05 -> 0.02
        expired = await v.fetch_order(stale["id"], PERP)
        balance = await v.fetch_balance()
    assert position["contracts"] == 0.05
    assert position["positionMargin"] == 600.001  # half the margin released
    # Realised 0.05 x (60,010 - 60,000.1) = 0.495; maker fee 3,000.5 x 0.02 % = 0.6001.
    assert trades[-1]["info"]["realizedPnl"] == "0.49500000"
    assert trades[-1]["fee"]["cost"] == 0.6001
    assert expired["status"] == "expired"
    assert expired["reduceOnly"] is True
    # 10,000 - 2.400004 + 0.495 - 0.6001 + 0.03 x (60,000 - 60,000.1) - 0.72 (taker fee).
    assert balance["USDT"]["total"] == pytest.approx(9996.771896, abs=1e-9)
    assert emu.engine.positions[RAW].contracts == Decimal("0.020")


async def test_order_refusals_map_to_ccxt_exceptions_as_on_binance(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        await v.set_leverage(5, PERP)
        # Post-only (GTX) that would take: -5022.
        with pytest.raises(ccxt.OrderNotFillable, match="-5022"):
            await v.create_order(PERP, "limit", "buy", 0.01, 60000.1, {"postOnly": True})
        # 10 BTC at 5x needs 120,000 USDT of margin: -2019.
        with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
            await v.create_order(PERP, "limit", "buy", 10, 59000)
        # Under the 5 USDT minimum notional: -4164 (a reduce-only order may be smaller).
        with pytest.raises(ccxt.InvalidOrder, match="-4164"):
            await v.create_order(PERP, "limit", "buy", 0.001, 1000)
        # Two orders with one client id: -4116.
        await v.create_order(PERP, "limit", "buy", 0.01, 59000, {"clientOrderId": "dup"})
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):
            await v.create_order(PERP, "limit", "buy", 0.01, 59000, {"clientOrderId": "dup"})
    assert not emu.engine.trades


async def test_leverage_and_margin_type_follow_binance(emu: BinanceFuturesEmulator) -> None:
    async with venue(emu) as v:
        await v.set_margin_mode("isolated", PERP)
        with pytest.raises(ccxt.MarginModeAlreadySet):
            await v.set_margin_mode("isolated", PERP)
        await v.set_leverage(10, PERP)
        await v.create_order(PERP, "limit", "buy", 0.1, 60000.1)
        with pytest.raises(ccxt.ExchangeError, match="-4161"):
            await v.set_leverage(5, PERP)  # no lowering under an open isolated position
        await v.set_leverage(20, PERP)
    assert emu.engine.positions[RAW].leverage == Decimal(20)
    assert emu.engine.positions[RAW].margin == Decimal("600.001")  # opened at 10x


async def test_the_user_stream_pushes_orders_fills_balance_and_position(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        ex = v.exchange
        orders = asyncio.ensure_future(v.watch_orders(PERP))
        trades = asyncio.ensure_future(v.watch_my_trades(PERP))
        balance = asyncio.ensure_future(ex.watch_balance())
        moves = asyncio.ensure_future(ex.watch_positions([PERP]))
        await asyncio.wait_for(emu.ws.wait_until(lambda s: s.user_streams >= 1), WITHIN_S)
        await long_01(v)
        (order,) = await asyncio.wait_for(orders, WITHIN_S)
        (fill,) = await asyncio.wait_for(trades, WITHIN_S)
        account = await asyncio.wait_for(balance, WITHIN_S)
        # ccxt updates its balance object in place: read it before the next fill.
        wallet, update = account["USDT"]["total"], account["info"]
        # The first answer is ccxt's REST snapshot (flat then); the next is pushed.
        assert await asyncio.wait_for(moves, WITHIN_S) == []
        moves = asyncio.ensure_future(ex.watch_positions([PERP]))
        await v.create_order(PERP, "limit", "sell", 0.04, 60000)
        positions = await asyncio.wait_for(moves, WITHIN_S)
    assert (order["clientOrderId"], order["status"], order["filled"]) == ("t-1", "closed", 0.1)
    assert order["reduceOnly"] is False
    assert (fill["price"], fill["amount"], fill["fee"]["cost"]) == (60000.1, 0.1, 2.400004)
    assert update["e"] == "ACCOUNT_UPDATE"
    assert update["a"]["m"] == "ORDER"
    assert wallet == 9997.599996  # wb: the wallet
    (pos,) = update["a"]["P"]
    assert (pos["pa"], pos["ep"], pos["iw"], pos["mt"]) == (
        "0.10000000",
        "60000.10000000",
        "1200.00200000",
        "isolated",
    )
    assert [(p["symbol"], p["side"], p["contracts"]) for p in positions] == [(PERP, "long", 0.06)]
    # The listen key came from POST /fapi/v1/listenKey; the stream is served at
    # /fstream/private/ws?listenKey=..., where ccxt 4.5 connects.
    assert ("POST", "/fapi/v1/listenKey", 200) in emu.requests


async def test_a_user_stream_needs_a_live_listen_key(emu: BinanceFuturesEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        # The listen key itself needs the API key (Binance's USER_STREAM security).
        async with session.post(emu.base_url + "/fapi/v1/listenKey") as refused:
            assert (refused.status, (await refused.json())["code"]) == (401, -2014)
        headers = {"X-MBX-APIKEY": KEY}
        async with session.post(emu.base_url + "/fapi/v1/listenKey", headers=headers) as made:
            key = (await made.json())["listenKey"]
        url = emu.ws_base_url + "/fstream/private/ws?listenKey=nope"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)
        async with session.ws_connect(emu.ws_base_url + f"/fstream/private/ws?listenKey={key}"):
            await asyncio.wait_for(emu.ws.wait_until(lambda s: s.user_streams == 1), WITHIN_S)
            emu.ws.close_listen_key()  # DELETE /fapi/v1/listenKey ends the stream
            await asyncio.wait_for(emu.ws.wait_until(lambda s: s.user_streams == 0), WITHIN_S)


async def test_depth_and_trades_stream_on_fstream_with_contiguous_ids(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        ex = v.exchange
        book = await asyncio.wait_for(ex.watch_order_book(PERP), WITHIN_S)
        first = book["nonce"]
        prints = asyncio.ensure_future(ex.watch_trades(PERP))
        await asyncio.wait_for(emu.ws.wait_until(lambda s: s.subscriptions >= 2), WITHIN_S)
        emu.engine.market_trade(RAW, 60000.0, 0.5, "sell")
        (tape,) = await asyncio.wait_for(prints, WITHIN_S)
        emu.engine.seed_book(RAW, bids=[("60000", "4")], asks=[("60000.1", "5")])
        book = await asyncio.wait_for(ex.watch_order_book(PERP), WITHIN_S)
    assert (tape["price"], tape["amount"], tape["side"]) == (60000.0, 0.5, "sell")
    assert book["bids"][:1] == [[60000.0, 4.0]]
    assert book["nonce"] > first  # ccxt checked pu == its nonce on every diff
    assert all("/fstream/public/ws" in url for url in ex.clients if "fstream" in url)


async def test_funding_is_paid_from_the_isolated_margin_at_the_funding_time() -> None:
    entry = exchange_info("usdm")
    clock = ManualClock(start_ns=3_600 * 10**9 * 1000)  # a whole hour: a funding time
    engine = FuturesEngine([entry], clock, {"USDT": "10000"}, funding_interval_s=3600.0)
    events: list[Any] = []
    engine.subscribe(events.append)
    engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.2", "5")])
    engine.set_margin_type(RAW, "ISOLATED")
    engine.set_leverage(RAW, 5)
    engine.place(
        symbol=RAW,
        side="SELL",
        order_type="LIMIT",
        time_in_force="IOC",
        price=Decimal("60000"),
        qty=Decimal("0.2"),
        client_order_id="s",
    )
    wallet, margin = engine.wallets["USDT"], engine.positions[RAW].margin
    clock.advance(3_600 * 10**9)  # the next funding time ...
    engine.seed_book(RAW, bids=[("61000", "5")], asks=[("61000.1", "5")])  # ... first update
    # Short 0.2 at mark 61,000.05, rate 1 bp: receives 0.2 x 61,000.05 x 0.0001 = 1.220001.
    (row,) = engine.income
    assert (row.income_type, row.income) == ("FUNDING_FEE", Decimal("1.2200010000"))
    assert engine.wallets["USDT"] - wallet == Decimal("1.220001")
    assert engine.positions[RAW].margin - margin == Decimal("1.220001")
    funding = [e for e in events if isinstance(e, AccountChanged) and e.reason == "FUNDING_FEE"]
    assert len(funding) == 1
    assert funding[0].balances == (("USDT", engine.wallets["USDT"], Decimal("1.2200010000")),)


async def test_funding_rate_and_history_through_ccxt(usdm_entry: dict[str, Any]) -> None:
    # The venue's clock starts at the wall clock (ccxt signs with it) and is moved by
    # hand past a funding time, well within the requests' recvWindow.
    clock = ManualClock(start_ns=time.time_ns())
    async with emulator(usdm_entry, clock=clock, funding_interval_s=1.0) as emu, venue(emu) as v:
        await v.set_margin_mode("isolated", PERP)
        await v.create_order(PERP, "limit", "buy", 0.1, 60000.1)
        rate = await v.fetch_funding_rate(PERP)
        clock.advance(1_000_000_000)
        emu.engine.seed_book(RAW, bids=[("60000", "5")], asks=[("60000.2", "5")])
        history = await v.exchange.fetch_funding_history(PERP)
    assert rate["fundingRate"] == 0.0001
    assert rate["markPrice"] == 60000.05
    assert rate["fundingTimestamp"] > rate["timestamp"]
    # Long 0.1 at mark 60,000.1 pays 0.1 x 60,000.1 x 0.0001 = 0.600001.
    assert [h["amount"] for h in history] == [-0.600001]
    assert history[0]["code"] == "USDT"


async def test_admin_state_shows_the_position(emu: BinanceFuturesEmulator) -> None:
    async with venue(emu) as v:
        await long_01(v)
    async with (
        aiohttp.ClientSession() as session,
        session.get(emu.base_url + "/_sim/state") as reply,
    ):
        state = await reply.json()
    (position,) = state["positions"]
    assert (position["symbol"], position["positionAmt"], position["marginType"]) == (
        "BTCUSDT",
        "0.10000000",
        "isolated",
    )
    assert state["balances"]["USDT"] == {"wallet": "9997.59999600", "available": "8797.59799600"}
    assert state["trades"][0]["realizedPnl"] == "0.00000000"
