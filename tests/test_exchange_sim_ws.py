"""The emulator's websockets, exercised by real ccxt.pro over real sockets on 127.0.0.1.

Market state changes go through the real engine (``seed_book``, orders placed and
cancelled with ccxt's REST calls, ``fill_resting``, ``market_trade``); what ccxt's
``watch_*`` calls return must match what the venue's REST API says. Faults are
injected both from Python and over the admin HTTP API.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import pytest

from bot.clock import WallClock
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchange_sim.events import DepthDiff
from bot.exchange_sim.ws import WsStats
from bot.exchanges import make_exchange

BTC = "BTC/USDT"
KEY = "test-key"
SECRET = "test-secret"
T = 5.0  # seconds any single awaited condition may take
EXCHANGE_INFO = Path(__file__).parent.parent / "bot" / "data" / "binance_exchange_info_symbols.json"


@pytest.fixture(scope="module")
def spot_entry() -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(EXCHANGE_INFO.read_text())["spot"]
    return entry


@asynccontextmanager
async def emulator(spot_entry: dict[str, Any], **kwargs: Any) -> AsyncIterator[BinanceSpotEmulator]:
    # ccxt stamps signed requests with the wall clock, so the venue's must be close.
    async with BinanceSpotEmulator(
        exchange_info=[spot_entry],
        api_key=KEY,
        secret=SECRET,
        clock=WallClock(),
        balances={"USDT": "100000", "BTC": "1"},
        **kwargs,
    ) as emu:
        emu.engine.seed_book(
            "BTCUSDT",
            bids=[("60000", "1"), ("59990", "2")],
            asks=[("60010", "0.5"), ("60020", "1")],
        )
        yield emu


@pytest.fixture
async def emu(spot_entry: dict[str, Any]) -> AsyncIterator[BinanceSpotEmulator]:
    async with emulator(spot_entry) as e:
        yield e


@asynccontextmanager
async def pro(
    emu: BinanceSpotEmulator, *, secret: str = SECRET, extra_config: dict[str, Any] | None = None
) -> AsyncIterator[Any]:
    ex = make_exchange(
        "binance",
        sandbox=True,
        api_key=KEY,
        secret=secret,
        pro=True,
        # 100-level snapshots: the books here are tiny, and ccxt paces a 1000-level
        # depth call (its default for watch_order_book) at half a second.
        options={"fetchMarkets": {"types": ["spot"]}, "watchOrderBookLimit": 100},
        url_overrides=emu.url_overrides(websockets=True),
        extra_config=extra_config,
    )
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


async def until(emu: BinanceSpotEmulator, condition: Callable[[WsStats], bool]) -> WsStats:
    return await asyncio.wait_for(emu.ws.wait_until(condition), T)


async def synced_book(ex: Any, emu: BinanceSpotEmulator) -> Any:
    """ccxt's book once it has caught up with the venue's current depth version."""

    async def catch_up() -> Any:
        while True:
            book = await ex.watch_order_book(BTC)
            if book["nonce"] == emu.engine.books["BTCUSDT"].last_update_id:
                return book

    return await asyncio.wait_for(catch_up(), T)


async def assert_matches_rest(ex: Any, book: Any) -> None:
    rest = await ex.fetch_order_book(BTC, limit=100)
    assert book["nonce"] == rest["nonce"]
    assert book["bids"] == rest["bids"]
    assert book["asks"] == rest["asks"]


async def watch_until(
    watch: Callable[[], Any], done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Everything successive ``watch()`` calls return, until ``done(seen)``."""

    async def collect() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while not done(seen):
            seen.extend(dict(item) for item in await watch())
        return seen

    return await asyncio.wait_for(collect(), T)


# ----- public streams ----------------------------------------------------------------
async def test_order_book_follows_seeded_changes_and_our_orders(
    emu: BinanceSpotEmulator,
) -> None:
    async with pro(emu) as ex:
        book = await synced_book(ex, emu)
        assert book["bids"] == [[60000.0, 1.0], [59990.0, 2.0]]
        await assert_matches_rest(ex, book)

        emu.engine.seed_book(
            "BTCUSDT", bids=[("60001", "1.5"), ("59990", "2")], asks=[("60010", "0.25")]
        )
        book = await synced_book(ex, emu)
        assert book["bids"] == [[60001.0, 1.5], [59990.0, 2.0]]
        assert book["asks"] == [[60010.0, 0.25]]
        await assert_matches_rest(ex, book)

        order = await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "r1"})
        book = await synced_book(ex, emu)
        assert [59000.0, 0.01] in book["bids"]
        await assert_matches_rest(ex, book)

        await ex.cancel_order(order["id"], BTC)
        book = await synced_book(ex, emu)
        assert 59000.0 not in [price for price, _ in book["bids"]]
        await assert_matches_rest(ex, book)
    # One connection, one subscription: every update came over the same stream.
    assert emu.ws.stats().opened == 1


@pytest.mark.parametrize("fault", ["gap", "out_of_order"])
async def test_broken_depth_sequence_makes_ccxt_resync(
    emu: BinanceSpotEmulator, fault: str
) -> None:
    async with pro(emu) as ex:
        await synced_book(ex, emu)
        if fault == "gap":
            emu.faults.depth_gap("BTCUSDT")
        else:
            emu.faults.depth_out_of_order("BTCUSDT")
        emu.engine.seed_book("BTCUSDT", bids=[("60002", "1")], asks=[("60010", "0.5")])
        emu.engine.seed_book("BTCUSDT", bids=[("60003", "1")], asks=[("60010", "0.5")])
        # The next diff's U is not the previous u + 1: ccxt drops its book.
        with pytest.raises(ccxt.InvalidNonce):
            await asyncio.wait_for(ex.watch_order_book(BTC), T)
        # Watching again resubscribes and rebuilds from a fresh snapshot.
        book = await synced_book(ex, emu)
        assert book["bids"] == [[60003.0, 1.0]]
        await assert_matches_rest(ex, book)
        emu.engine.seed_book("BTCUSDT", bids=[("60004", "1")], asks=[("60010", "0.5")])
        book = await synced_book(ex, emu)
        assert book["bids"] == [[60004.0, 1.0]]


async def test_trades_stream(emu: BinanceSpotEmulator) -> None:
    async with pro(emu) as ex:
        pending = asyncio.ensure_future(ex.watch_trades(BTC))
        await until(emu, lambda s: s.subscriptions == 1)
        emu.engine.market_trade("BTCUSDT", 60010.0, 0.2, "buy")
        trades = await asyncio.wait_for(pending, T)
        # One of ours, taking the ask: on the tape too, seller as maker.
        await ex.create_order(BTC, "limit", "sell", 0.1, 60000)
        trades += await asyncio.wait_for(ex.watch_trades(BTC), T)
    assert [(t["price"], t["amount"], t["side"], t["symbol"]) for t in trades] == [
        (60010.0, 0.2, "buy", BTC),
        (60000.0, 0.1, "sell", BTC),
    ]
    assert [int(t["id"]) for t in trades] == [
        int(trades[0]["id"]),
        emu.engine.trades[-1].trade_id,
    ]
    assert trades[0]["info"]["e"] == "trade"


# ----- user data stream -------------------------------------------------------------
async def test_orders_stream_new_partial_fill_cancel(emu: BinanceSpotEmulator) -> None:
    async with pro(emu) as ex:
        watched = asyncio.ensure_future(
            watch_until(
                lambda: ex.watch_orders(BTC),
                lambda seen: seen[-1:] != [] and seen[-1]["status"] == "canceled",
            )
        )
        await until(emu, lambda s: s.user_streams == 1)
        order = await ex.create_order(BTC, "limit", "buy", 0.02, 59000, {"clientOrderId": "bs-w1"})
        emu.engine.fill_resting(int(order["id"]), "0.005")
        cancelled = await ex.cancel_order(order["id"], BTC)
        updates = await watched
    assert [(o["status"], o["filled"], o["remaining"]) for o in updates] == [
        ("open", 0.0, 0.02),
        ("open", 0.005, 0.015),
        ("canceled", 0.005, 0.015),
    ]
    # Every update is our order, under our own client id - also the cancel, whose
    # report carries the cancel request's id in "c" and ours in "C".
    assert {(o["id"], o["clientOrderId"], o["price"], o["side"]) for o in updates} == {
        (order["id"], "bs-w1", 59000.0, "buy")
    }
    report = updates[-1]["info"]
    assert (report["x"], report["C"]) == ("CANCELED", "bs-w1")
    assert report["c"] == cancelled["info"]["clientOrderId"] != "bs-w1"
    assert updates[1]["info"]["x"] == "TRADE"
    assert updates[0]["timestamp"] == emu.engine.orders[int(order["id"])].time_ms


async def test_my_trades_stream_with_fees(emu: BinanceSpotEmulator) -> None:
    async with pro(emu) as ex:
        watched = asyncio.ensure_future(
            watch_until(lambda: ex.watch_my_trades(BTC), lambda seen: len(seen) >= 3)
        )
        await until(emu, lambda s: s.user_streams == 1)
        # Takes 0.5 @ 60010 and 1.0 @ 60020 (taker), rests 0.1 that we then fill (maker).
        order = await ex.create_order(BTC, "limit", "buy", 1.6, 60020, {"clientOrderId": "t1"})
        emu.engine.fill_resting(int(order["id"]), "0.1")
        trades = await watched
        rest = await ex.fetch_my_trades(BTC)
    assert [
        (t["price"], t["amount"], t["takerOrMaker"], t["side"], t["fee"]["currency"])
        for t in trades
    ] == [
        (60010.0, 0.5, "taker", "buy", "BTC"),
        (60020.0, 1.0, "taker", "buy", "BTC"),
        (60020.0, 0.1, "maker", "buy", "BTC"),
    ]
    # The same trades, ids and fees as the REST API reports.
    assert [(t["id"], t["order"], t["fee"]["cost"]) for t in trades] == [
        (t["id"], t["order"], t["fee"]["cost"]) for t in rest
    ]
    assert [t["fee"]["cost"] for t in trades] == [0.0005, 0.001, 0.0001]


async def test_balance_stream(emu: BinanceSpotEmulator) -> None:
    async with pro(emu) as ex:
        pending = asyncio.ensure_future(ex.watch_balance())
        await until(emu, lambda s: s.user_streams == 1)
        await ex.create_order(BTC, "limit", "buy", 0.01, 59000)
        balance = await asyncio.wait_for(pending, T)
    assert balance["USDT"] == {"free": 100000 - 590.0, "used": 590.0, "total": 100000.0}
    assert balance["info"]["e"] == "outboundAccountPosition"


async def test_bad_secret_on_the_user_stream(emu: BinanceSpotEmulator) -> None:
    async with pro(emu, secret="wrong") as ex:
        with pytest.raises((ccxt.AuthenticationError, KeyError)) as raised:
            await asyncio.wait_for(ex.watch_orders(BTC), T)
    # ccxt 4.5.90 maps Binance's -1022 reply to AuthenticationError, then its own
    # cleanup deletes the subscription twice and raises KeyError('spot') on top.
    err: BaseException | None = raised.value
    while err is not None and not isinstance(err, ccxt.AuthenticationError):
        err = err.__context__
    assert err is not None, "no AuthenticationError in the exception chain"
    assert "Signature for this request is not valid" in str(err)
    assert emu.ws.stats().user_streams == 0


# ----- faults ---------------------------------------------------------------------------
async def test_dropped_connections_reconnect(emu: BinanceSpotEmulator) -> None:
    async with pro(emu) as ex:
        await synced_book(ex, emu)
        orders = asyncio.ensure_future(ex.watch_orders(BTC))
        await until(emu, lambda s: s.user_streams == 1)
        book_watch = asyncio.ensure_future(ex.watch_order_book(BTC))
        await asyncio.sleep(0)  # let it register its future before the drop

        assert emu.faults.drop_websockets() == 2
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(book_watch, T)
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(orders, T)

        # Watching again opens new connections and subscriptions.
        emu.engine.seed_book("BTCUSDT", bids=[("60005", "1")], asks=[("60010", "0.5")])
        book = await synced_book(ex, emu)
        await assert_matches_rest(ex, book)
        orders = asyncio.ensure_future(ex.watch_orders(BTC))
        await until(emu, lambda s: s.user_streams == 1)
        await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "after"})
        updates = await asyncio.wait_for(orders, T)
        assert [o["clientOrderId"] for o in updates] == ["after"]
    stats = emu.ws.stats()
    assert (stats.opened, stats.dropped) == (4, 2)


async def test_stall_holds_events_then_delivers_them(spot_entry: dict[str, Any]) -> None:
    stall_over = asyncio.Event()

    async def stall_sleep(_seconds: float) -> None:
        await stall_over.wait()

    async with emulator(spot_entry, sleep=stall_sleep) as emu, pro(emu) as ex:
        await synced_book(ex, emu)
        emu.faults.stall_websockets(30)
        emu.engine.seed_book("BTCUSDT", bids=[("60006", "1")], asks=[("60010", "0.5")])
        pending = asyncio.ensure_future(ex.watch_order_book(BTC))
        # The diff waits in the connection's queue; nothing is lost or disconnected.
        stats = emu.ws.stats()
        assert (stats.queued, stats.market) == (1, 1)
        assert emu.ws.stalled
        await ex.fetch_time()  # a REST round trip: the stream stays silent meanwhile
        assert not pending.done()
        stall_over.set()
        book = await asyncio.wait_for(pending, T)
        assert book["bids"] == [[60006.0, 1.0]]
        assert not emu.ws.stalled
        assert emu.ws.stats().opened == 1


async def test_slow_client_is_disconnected_others_keep_up(spot_entry: dict[str, Any]) -> None:
    async with (
        emulator(spot_entry, ws_queue_size=4) as emu,
        aiohttp.ClientSession() as session,
        # No compression: the payload must really fill the slow client's socket.
        session.ws_connect(emu.ws_base_url + "/stream/ws", compress=0) as fast,
        session.ws_connect(emu.ws_base_url + "/stream/ws", compress=0) as slow,
    ):
        for client in (fast, slow):
            await client.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1})
        assert await fast.receive_json() == {"result": None, "id": 1}
        await until(emu, lambda s: s.subscriptions == 2)
        # ~70 kB per diff; the slow client never reads, so its socket buffers fill,
        # its sender blocks, its queue overflows - the fast one reads every message.
        levels = tuple((Decimal(50_000 + i), Decimal(1)) for i in range(2_000))
        sent = 0
        while emu.ws.stats().slow_disconnects == 0 and sent < 2_000:
            sent += 1
            emu.ws.publish(DepthDiff("BTCUSDT", sent, sent, levels, (), sent))
            assert (await asyncio.wait_for(fast.receive_json(), T))["u"] == sent
        stats = emu.ws.stats()
        assert (stats.slow_disconnects, stats.market) == (1, 1)
        # The slow client finds its connection cut after what had reached its socket.
        received = 0
        while (await asyncio.wait_for(slow.receive(), T)).type == aiohttp.WSMsgType.TEXT:
            received += 1
        assert received < sent
        emu.ws.publish(DepthDiff("BTCUSDT", sent + 1, sent + 1, levels[:1], (), 0))
        assert (await asyncio.wait_for(fast.receive_json(), T))["u"] == sent + 1


async def test_delayed_reply_times_out_but_the_order_is_placed(
    spot_entry: dict[str, Any],
) -> None:
    reply_released = asyncio.Event()

    async def held(_seconds: float) -> None:
        await reply_released.wait()

    async with (
        emulator(spot_entry, sleep=held) as emu,
        pro(emu, extra_config={"timeout": 300}) as ex,
    ):
        emu.faults.delay_next("POST /api/v3/order", n=1, seconds=10)
        with pytest.raises(ccxt.RequestTimeout):
            await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "lost"})
        # The venue did place it: the bot's recovery finds it by client id.
        [found] = await ex.fetch_open_orders(BTC)
        assert found["clientOrderId"] == "lost"
        reply_released.set()


async def test_clock_skew(emu: BinanceSpotEmulator) -> None:
    async with pro(emu) as ex:
        emu.faults.clock_skew_ms = 30_000  # beyond ccxt's 10 s recvWindow
        server_time = await ex.fetch_time()
        assert server_time - WallClock().now_ns() // 1_000_000 in range(29_000, 31_000)
        # Orders and events are stamped with the same (skewed) venue clock.
        assert abs(server_time - emu.engine.now_ms()) < 1_000
        with pytest.raises(ccxt.InvalidNonce, match="recvWindow"):
            await ex.fetch_balance()
        emu.faults.clock_skew_ms = 0
        await ex.fetch_balance()


# ----- wire details ------------------------------------------------------------------
async def test_stream_and_ws_api_protocol_errors(emu: BinanceSpotEmulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(emu.ws_base_url + "/stream/ws") as market,
        session.ws_connect(emu.ws_base_url + "/ws-api/v3") as api,
    ):
        await market.send_json({"method": "SUBSCRIBE", "params": ["nosuch@depth"], "id": 7})
        assert (await market.receive_json())["error"]["code"] == 2
        await market.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 8})
        assert await market.receive_json() == {"result": None, "id": 8}
        await market.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
        assert await market.receive_json() == {"result": ["btcusdt@trade"], "id": 9}
        await market.send_json({"method": "FROB", "id": 10})
        reply = await market.receive_json()
        assert (reply["id"], reply["error"]["code"]) == (10, 2)

        await api.send_json({"id": "a", "method": "ping"})
        assert await api.receive_json() == {"id": "a", "status": 200, "result": {}}
        await api.send_json({"id": "b", "method": "order.place", "params": {}})
        assert await api.receive_json() == {
            "id": "b",
            "status": 400,
            "error": {"code": -1020, "msg": "This operation is not supported."},
        }
        await api.send_json(
            {"id": "c", "method": "userDataStream.subscribe.signature", "params": {"apiKey": KEY}}
        )
        assert (await api.receive_json())["error"]["code"] == -1102  # no signature

        # Signed as Binance documents it: every param but the signature, sorted by name.
        params: dict[str, Any] = {"apiKey": KEY, "timestamp": emu.now_ms(), "recvWindow": 5000}
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        bad = {**params, "signature": sign(payload, "wrong")}
        await api.send_json(
            {"id": 3, "method": "userDataStream.subscribe.signature", "params": bad}
        )
        assert await api.receive_json() == {
            "id": 3,
            "status": 400,
            "error": {"code": -1022, "msg": "Signature for this request is not valid."},
        }
        good = {**params, "signature": sign(payload, SECRET)}
        await api.send_json(
            {"id": 4, "method": "userDataStream.subscribe.signature", "params": good}
        )
        assert await api.receive_json() == {"id": 4, "status": 200, "result": {"subscriptionId": 0}}
        await until(emu, lambda s: s.user_streams == 1)
        emu.engine.place(
            symbol="BTCUSDT",
            side="BUY",
            order_type="LIMIT",
            time_in_force="GTC",
            price=Decimal(59000),
            qty=Decimal("0.01"),
            client_order_id="raw",
        )
        event = await api.receive_json()
        assert (event["subscriptionId"], event["event"]["e"]) == (0, "executionReport")
        assert (event["event"]["x"], event["event"]["c"], event["event"]["C"]) == ("NEW", "raw", "")
        assert (await api.receive_json())["event"]["e"] == "outboundAccountPosition"

        await api.send_json({"id": "d", "method": "userDataStream.unsubscribe"})
        assert await api.receive_json() == {"id": "d", "status": 200, "result": {}}
        assert emu.ws.stats().user_streams == 0


def sign(payload: str, secret: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


# ----- admin API ----------------------------------------------------------------------
async def post_fault(
    session: aiohttp.ClientSession, emu: BinanceSpotEmulator, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(emu.base_url + "/_sim/faults", json=body) as resp:
        return resp.status, await resp.json()


async def test_admin_faults_over_http(emu: BinanceSpotEmulator) -> None:
    async with aiohttp.ClientSession() as session, pro(emu) as ex:
        fail = {"kind": "fail", "endpoint": "GET /api/v3/depth", "n": 1, "status": 503}
        assert await post_fault(session, emu, fail) == (200, {"ok": True})
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.fetch_order_book(BTC)
        await ex.fetch_order_book(BTC)

        assert (await post_fault(session, emu, {"kind": "reject_orders", "n": 1}))[0] == 200
        with pytest.raises(ccxt.InvalidOrder):
            await ex.create_order(BTC, "limit", "buy", 0.01, 59000)

        await synced_book(ex, emu)
        gap = {"kind": "depth_gap", "symbol": "BTCUSDT"}
        assert (await post_fault(session, emu, gap))[0] == 200
        emu.engine.seed_book("BTCUSDT", bids=[("60002", "1")], asks=[("60010", "0.5")])
        emu.engine.seed_book("BTCUSDT", bids=[("60003", "1")], asks=[("60010", "0.5")])
        with pytest.raises(ccxt.InvalidNonce):
            await asyncio.wait_for(ex.watch_order_book(BTC), T)

        await synced_book(ex, emu)
        assert await post_fault(session, emu, {"kind": "ws_drop"}) == (200, {"ok": True})
        assert emu.ws.stats().dropped == 1

        skew = {"kind": "clock_skew", "ms": 30_000}
        assert (await post_fault(session, emu, skew))[0] == 200
        with pytest.raises(ccxt.InvalidNonce):
            await ex.fetch_balance()

        limit = {"kind": "rate_limit", "endpoint": "GET /api/v3/depth", "seconds": 7.0}
        assert (await post_fault(session, emu, limit))[0] == 200
        with pytest.raises(ccxt.DDoSProtection, match="429"):
            await ex.fetch_order_book(BTC)
        assert ex.last_response_headers["Retry-After"] == "7"
        for _ in range(2):  # not waiting out Retry-After ...
            await ex.fetch_order_book(BTC)
        with pytest.raises(ccxt.DDoSProtection, match="418"):  # ... ends in a ban
            await ex.fetch_order_book(BTC)

        # "clear" undoes the skew, the back-off owed and the ban.
        assert (await post_fault(session, emu, {"kind": "clear"}))[0] == 200
        await ex.fetch_balance()
        await ex.fetch_order_book(BTC)

        bad_inputs = [
            ({"kind": "explode"}, "'kind'"),
            ({"kind": "fail", "n": 0}, "'n'"),
            ({"kind": "fail", "status": "503"}, "'status'"),
            ({"kind": "delay", "endpoint": "GET /api/v3/nothing"}, "'endpoint'"),
            ({"kind": "depth_gap"}, "'symbol'"),
            ({"kind": "depth_gap", "symbol": "ETHUSDT"}, "'symbol'"),
            ({"kind": "ws_stall", "seconds": 0}, "'seconds'"),
            ({"kind": "ban", "seconds": 1.5}, "'seconds'"),
            ({"kind": "clock_skew"}, "'ms'"),
            ({"kind": "clear", "sekonds": 1}, "'sekonds'"),
        ]
        for body, field in bad_inputs:
            status, reply = await post_fault(session, emu, body)
            assert (status, reply["ok"]) == (400, False), body
            assert field in reply["error"], (body, reply)
    # Admin calls are not venue requests: not logged, not charged.
    assert not any(path.startswith("/_sim") for _, path, _ in emu.requests)


async def test_admin_state_matches_the_engine(emu: BinanceSpotEmulator) -> None:
    async with aiohttp.ClientSession() as session, pro(emu) as ex:
        resting = await ex.create_order(BTC, "limit", "buy", 0.02, 59000, {"clientOrderId": "s1"})
        emu.engine.fill_resting(int(resting["id"]), "0.005")
        await ex.create_order(BTC, "limit", "sell", 0.1, 60000, {"clientOrderId": "s2"})
        await synced_book(ex, emu)
        weight_before = emu.weights.used
        async with session.get(emu.base_url + "/_sim/state") as resp:
            assert resp.status == 200
            state = await resp.json()
        assert emu.weights.used == weight_before
    engine = emu.engine
    assert state["balances"] == {
        asset: {"free": f"{b.free:.8f}", "locked": f"{b.locked:.8f}"}
        for asset, b in engine.balances.items()
    }
    assert [(o["clientOrderId"], o["status"], o["executedQty"]) for o in state["orders"]] == [
        ("s1", "PARTIALLY_FILLED", "0.00500000"),
        ("s2", "FILLED", "0.10000000"),
    ]
    assert [o["orderId"] for o in state["open_orders"]] == [int(resting["id"])]
    assert state["open_orders"][0]["origQty"] == "0.02000000"
    assert [t["id"] for t in state["trades"]] == [t.trade_id for t in engine.trades]
    assert state["requests"]["by_endpoint"]["POST /api/v3/order"] == {"200": 2}
    assert state["requests"]["total"] == len(emu.requests)
    assert state["websockets"]["market"] == 1
    assert state["websockets"]["stalled"] is False
