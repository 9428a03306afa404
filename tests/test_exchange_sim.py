"""The Binance Spot emulator, exercised by real ccxt over real HTTP on 127.0.0.1.

Every ccxt call here goes through the bot's own ``make_exchange`` (sandbox mode +
URL overrides), real request signing and real response/error parsing, so a passing
test means ccxt would behave the same against this emulator as against the testnet.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from bot.clock import NS_PER_SECOND, ManualClock, WallClock
from bot.exchange_sim import BinanceSpotEmulator, SpotEngine
from bot.exchange_sim.auth import check_timestamp
from bot.exchange_sim.errors import ApiError
from bot.exchange_sim.symbols import SymbolRules
from bot.exchanges import make_exchange

BTC = "BTC/USDT"
KEY = "test-key"
SECRET = "test-secret"
EXCHANGE_INFO = Path(__file__).parent.parent / "bot" / "data" / "binance_exchange_info_symbols.json"


@pytest.fixture(scope="module")
def spot_entry() -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(EXCHANGE_INFO.read_text())["spot"]
    return entry


def seed(emu: BinanceSpotEmulator) -> None:
    emu.engine.seed_book(
        "BTCUSDT",
        bids=[("60000", "1"), ("59990", "2")],
        asks=[("60010", "0.5"), ("60020", "1")],
    )


@asynccontextmanager
async def emulator(
    spot_entry: dict[str, Any], clock: Any = None, **kwargs: Any
) -> AsyncIterator[BinanceSpotEmulator]:
    # ccxt stamps signed requests with the wall clock, so the emulator's clock must
    # be close to it for private calls (as the real venue's is).
    async with BinanceSpotEmulator(
        exchange_info=[spot_entry],
        api_key=KEY,
        secret=SECRET,
        clock=clock or WallClock(),
        balances={"USDT": "100000", "BTC": "1"},
        **kwargs,
    ) as emu:
        seed(emu)
        yield emu


@asynccontextmanager
async def exchange(
    emu: BinanceSpotEmulator, *, secret: str = SECRET, api_key: str = KEY, pro: bool = False
) -> AsyncIterator[Any]:
    ex = make_exchange(
        "binance",
        sandbox=True,
        api_key=api_key,
        secret=secret,
        pro=pro,
        options={"fetchMarkets": {"types": ["spot"]}},
        url_overrides=emu.url_overrides(),
    )
    try:
        yield ex
    finally:
        await ex.close()


@pytest.fixture
async def emu(spot_entry: dict[str, Any]) -> AsyncIterator[BinanceSpotEmulator]:
    async with emulator(spot_entry) as e:
        yield e


@pytest.mark.parametrize("pro", [False, True])
async def test_markets_time_and_book(emu: BinanceSpotEmulator, pro: bool) -> None:
    async with exchange(emu, pro=pro) as ex:
        server_time = await ex.fetch_time()
        markets = await ex.load_markets()
        book = await ex.fetch_order_book(BTC, limit=5)
    assert abs(server_time - emu.now_ms()) < 5_000
    assert list(markets) == [BTC]
    m = markets[BTC]
    assert m["id"] == "BTCUSDT"
    assert m["spot"] is True
    assert m["precision"]["price"] == 0.01
    assert m["precision"]["amount"] == 0.00001
    assert m["limits"]["amount"] == {"min": 0.00001, "max": 9000.0}
    assert m["limits"]["cost"]["min"] == 5.0
    assert book["bids"] == [[60000.0, 1.0], [59990.0, 2.0]]
    assert book["asks"] == [[60010.0, 0.5], [60020.0, 1.0]]
    assert book["nonce"] == emu.engine.books["BTCUSDT"].last_update_id
    # Only the spot endpoints were asked for: nothing went to a URL we do not serve.
    assert {path for _, path, _ in emu.requests} == {
        "/api/v3/time",
        "/api/v3/exchangeInfo",
        "/api/v3/depth",
    }


async def test_default_fetch_markets_stays_on_the_emulator(emu: BinanceSpotEmulator) -> None:
    # Without the spot-only option ccxt also asks the futures testnet for markets;
    # the overrides send those calls here too, and they list nothing.
    ex = make_exchange(
        "binance", sandbox=True, api_key=KEY, secret=SECRET, url_overrides=emu.url_overrides()
    )
    try:
        markets = await ex.load_markets()
    finally:
        await ex.close()
    assert list(markets) == [BTC]
    assert sorted(path for _, path, _ in emu.requests) == [
        "/api/v3/exchangeInfo",
        "/dapi/v1/exchangeInfo",
        "/fapi/v1/exchangeInfo",
    ]


async def test_orders_with_client_ids_listed_queried_and_cancelled(
    emu: BinanceSpotEmulator,
) -> None:
    async with exchange(emu) as ex:
        limit = await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "bs-1"})
        maker = await ex.create_order(
            BTC, "limit", "sell", 0.02, 61000, {"clientOrderId": "bs-2", "postOnly": True}
        )
        assert limit["status"] == "open"
        assert limit["clientOrderId"] == "bs-1"
        assert maker["info"]["type"] == "LIMIT_MAKER"
        assert maker["clientOrderId"] == "bs-2"

        open_orders = await ex.fetch_open_orders(BTC)
        assert sorted(o["clientOrderId"] for o in open_orders) == ["bs-1", "bs-2"]
        # Our resting orders show in the public book, as on the venue.
        book = await ex.fetch_order_book(BTC)
        assert [59000.0, 0.01] in book["bids"]
        assert [61000.0, 0.02] in book["asks"]

        fetched = await ex.fetch_order(limit["id"], BTC)
        assert (fetched["clientOrderId"], fetched["amount"], fetched["price"]) == (
            "bs-1",
            0.01,
            59000.0,
        )
        cancelled = await ex.cancel_order(limit["id"], BTC)
        assert cancelled["status"] == "canceled"
        # Cancel by client id (what the bot does after a lost create reply).
        by_client = await ex.cancel_order(None, BTC, {"origClientOrderId": "bs-2"})
        assert by_client["id"] == maker["id"]
        assert by_client["status"] == "canceled"
        assert await ex.fetch_open_orders(BTC) == []
        assert (await ex.fetch_order(limit["id"], BTC))["status"] == "canceled"

        balance = await ex.fetch_balance()
    # Everything locked came back.
    assert balance["USDT"] == {"free": 100000.0, "used": 0.0, "total": 100000.0}
    assert balance["BTC"]["free"] == 1.0


async def test_unknown_orders_raise_order_not_found(emu: BinanceSpotEmulator) -> None:
    async with exchange(emu) as ex:
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order("424242", BTC)
        with pytest.raises(ccxt.OrderNotFound):
            await ex.fetch_order("424242", BTC)
        with pytest.raises(ccxt.OrderNotFound):  # nothing open: Binance says -2011
            await ex.cancel_all_orders(BTC)
    assert emu.requests[-1] == ("DELETE", "/api/v3/openOrders", 400)


async def test_crossing_limit_maker_is_rejected(emu: BinanceSpotEmulator) -> None:
    async with exchange(emu) as ex:
        with pytest.raises(ccxt.OrderImmediatelyFillable):
            await ex.create_order(BTC, "limit", "buy", 0.01, 60010, {"postOnly": True})
        assert await ex.fetch_open_orders(BTC) == []
    assert emu.engine.balance("USDT").locked == 0


async def test_order_rejections(emu: BinanceSpotEmulator) -> None:
    async with exchange(emu) as ex:
        await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "dup"})
        with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
            await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "dup"})
        with pytest.raises(ccxt.InsufficientFunds):
            await ex.create_order(BTC, "limit", "buy", 2, 59000)
        emu.faults.reject_next_orders(1, "Rule violated (emulator drill).")
        with pytest.raises(ccxt.InvalidOrder, match="emulator drill"):
            await ex.create_order(BTC, "limit", "buy", 0.01, 58000)
        await ex.create_order(BTC, "limit", "buy", 0.01, 58000)  # the fault was one-shot
        # 0.0001 * 100 < 5 USDT. ccxt greps bodies for LOT_SIZE/PRICE_FILTER only, so a
        # NOTIONAL failure (-1013) surfaces as BadRequest, exactly as from the testnet.
        with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
            await ex.create_order(BTC, "limit", "buy", 0.0001, 100)


async def test_crossing_limit_fills_and_moves_balances(emu: BinanceSpotEmulator) -> None:
    async with exchange(emu) as ex:
        # Takes 0.5 @ 60010 and 1.0 @ 60020, rests 0.1 @ 60020.
        order = await ex.create_order(BTC, "limit", "buy", 1.6, 60020, {"clientOrderId": "take"})
        assert order["status"] == "open"
        assert order["info"]["status"] == "PARTIALLY_FILLED"
        assert order["filled"] == 1.5
        assert order["cost"] == 30005.0 + 60020.0
        assert [(f["price"], f["amount"]) for f in order["trades"]] == [
            (60010.0, 0.5),
            (60020.0, 1.0),
        ]
        book = await ex.fetch_order_book(BTC)
        # The taken liquidity is gone; the rest of our bid is the new best bid.
        assert book["asks"] == []
        assert book["bids"][0] == [60020.0, 0.1]

        balance = await ex.fetch_balance()
        assert balance["BTC"]["free"] == pytest.approx(1 + 1.5 - 0.0015)  # taker fee in BTC
        assert balance["USDT"]["used"] == pytest.approx(0.1 * 60020)
        assert balance["USDT"]["total"] == pytest.approx(100000 - 90025)

        # The venue fills the rest of the resting order (maker) later.
        emu.engine.fill_resting(int(order["id"]), "0.1")
        done = await ex.fetch_order(order["id"], BTC)
        assert done["status"] == "closed"
        assert done["filled"] == 1.6

        trades = await ex.fetch_my_trades(BTC)
    assert [(t["price"], t["amount"], t["takerOrMaker"]) for t in trades] == [
        (60010.0, 0.5, "taker"),
        (60020.0, 1.0, "taker"),
        (60020.0, 0.1, "maker"),
    ]
    assert {t["order"] for t in trades} == {order["id"]}
    usdt, btc = emu.engine.balance("USDT"), emu.engine.balance("BTC")
    assert (usdt.free, usdt.locked) == (Decimal(100000) - Decimal(96027), Decimal(0))
    assert (btc.free, btc.locked) == (Decimal("1") + Decimal("1.6") - Decimal("0.0016"), Decimal(0))


async def test_sell_ioc_expires_the_rest(emu: BinanceSpotEmulator) -> None:
    emu.engine.seed_book("BTCUSDT", bids=[("60000", "0.6")], asks=[("60010", "1")])
    async with exchange(emu) as ex:
        order = await ex.create_order(BTC, "limit", "sell", 1.0, 59995, {"timeInForce": "IOC"})
    assert order["info"]["status"] == "EXPIRED"
    assert order["filled"] == 0.6
    assert emu.engine.balance("BTC").free == Decimal("0.4")
    assert emu.engine.balance("BTC").locked == 0
    # 36000 USDT received, minus the 0.1 % taker fee in USDT.
    assert emu.engine.balance("USDT").free == Decimal(100000) + Decimal(36000) - Decimal(36)


async def test_cancel_all_orders(emu: BinanceSpotEmulator) -> None:
    async with exchange(emu) as ex:
        await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "a"})
        await ex.create_order(BTC, "limit", "sell", 0.01, 61000, {"clientOrderId": "b"})
        cancelled = await ex.cancel_all_orders(BTC)
        assert sorted(o["info"]["origClientOrderId"] for o in cancelled) == ["a", "b"]
        assert all(o["status"] == "canceled" for o in cancelled)
        assert await ex.fetch_open_orders(BTC) == []


async def test_bad_secret_and_unknown_key_are_authentication_errors(
    emu: BinanceSpotEmulator,
) -> None:
    async with exchange(emu, secret="wrong") as ex:
        with pytest.raises(ccxt.AuthenticationError, match="Signature for this request"):
            await ex.fetch_balance()
    async with exchange(emu, api_key="nobody") as ex:
        with pytest.raises(ccxt.AuthenticationError, match="Invalid API-key"):
            await ex.fetch_balance()
    assert [status for _, path, status in emu.requests if path == "/api/v3/account"] == [400, 401]


async def test_clock_skew_beyond_recv_window(spot_entry: dict[str, Any]) -> None:
    # The venue's clock runs 30 s ahead of ours: signed requests are older than
    # ccxt's default recvWindow (10 s).
    wall = WallClock()
    skewed = ManualClock(start_ns=wall.now_ns() + 30 * NS_PER_SECOND)
    async with emulator(spot_entry, clock=skewed) as emu, exchange(emu) as ex:
        await ex.load_markets()
        with pytest.raises(ccxt.InvalidNonce, match="recvWindow"):
            await ex.fetch_balance()


async def test_request_weight_limit_gives_429_with_retry_after(
    spot_entry: dict[str, Any],
) -> None:
    # Public calls only: they carry no timestamp, so a frozen clock is fine here.
    clock = ManualClock(start_ns=1_723_161_255_000_000_000)  # 15 s into a minute
    async with emulator(spot_entry, clock=clock, weight_limit=30) as emu, exchange(emu) as ex:
        await ex.load_markets()  # exchangeInfo: weight 20
        await ex.fetch_order_book(BTC, limit=5)  # weight 5: 25
        await ex.fetch_order_book(BTC, limit=5)  # 30, the limit
        with pytest.raises(ccxt.DDoSProtection, match="429"):
            await ex.fetch_order_book(BTC, limit=5)
        assert ex.last_response_headers["Retry-After"] == "45"
        clock.advance(45 * NS_PER_SECOND)  # the next minute: a fresh window
        await ex.fetch_order_book(BTC, limit=5)
    assert [s for _, _, s in emu.requests] == [200, 200, 200, 429, 200]


async def test_injected_faults(emu: BinanceSpotEmulator) -> None:
    async with exchange(emu) as ex:
        await ex.load_markets()
        emu.faults.fail_next("POST /api/v3/order", status=503)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "x"})
        # A failed call placed nothing; the retry with the same client id goes through.
        assert await ex.fetch_open_orders(BTC) == []
        order = await ex.create_order(BTC, "limit", "buy", 0.01, 59000, {"clientOrderId": "x"})
        assert order["clientOrderId"] == "x"

        emu.faults.fail_next(status=502)  # any endpoint
        with pytest.raises(ccxt.NetworkError):
            await ex.fetch_balance()

        emu.faults.ban_next()
        with pytest.raises(ccxt.DDoSProtection, match="418"):
            await ex.fetch_time()


async def test_429s_then_a_ban_for_a_client_that_does_not_back_off(
    spot_entry: dict[str, Any],
) -> None:
    clock = ManualClock(start_ns=1_723_161_255_000_000_000)
    async with emulator(spot_entry, clock=clock) as emu, exchange(emu) as ex:
        await ex.load_markets()
        emu.faults.rate_limit_next("GET /api/v3/depth", n=2, retry_after_s=7)
        for _ in range(2):
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                await ex.fetch_order_book(BTC)
        assert ex.last_response_headers["Retry-After"] == "7"
        # Waiting out Retry-After is what a well-behaved client does: served again.
        clock.advance(7 * NS_PER_SECOND)
        await ex.fetch_order_book(BTC)

        emu.faults.rate_limit_next("GET /api/v3/depth", retry_after_s=7)
        with pytest.raises(ccxt.DDoSProtection, match="429"):
            await ex.fetch_order_book(BTC)
        clock.advance(NS_PER_SECOND)
        for _ in range(2):  # ignoring it: tolerated twice ...
            await ex.fetch_order_book(BTC)
        with pytest.raises(ccxt.DDoSProtection, match="418"):  # ... then banned
            await ex.fetch_time()
        assert ex.last_response_headers["Retry-After"] == "120"
        clock.advance(60 * NS_PER_SECOND)
        with pytest.raises(ccxt.DDoSProtection, match="418"):  # for every endpoint
            await ex.fetch_order_book(BTC)
        assert ex.last_response_headers["Retry-After"] == "60"
        clock.advance(60 * NS_PER_SECOND)
        await ex.fetch_order_book(BTC)
    assert emu.bans.bans == 1


def test_symbol_filters(spot_entry: dict[str, Any]) -> None:
    rules = SymbolRules.from_entry(spot_entry)
    rules.check(Decimal("60000.01"), Decimal("0.00012"))
    for price, qty, failed in [
        ("60000.001", "0.001", "PRICE_FILTER"),
        ("60000", "0.000001", "LOT_SIZE"),
        ("60000", "0.000015", "LOT_SIZE"),
        ("60000", "0.00001", "NOTIONAL"),
    ]:
        with pytest.raises(ApiError, match=failed):
            rules.check(Decimal(price), Decimal(qty))


def test_timestamp_window() -> None:
    now = 1_723_161_255_000
    check_timestamp({"timestamp": str(now - 4_999)}, now)
    check_timestamp({"timestamp": str(now - 59_000), "recvWindow": "60000"}, now)
    for params in (
        {"timestamp": str(now - 5_001)},
        {"timestamp": str(now + 1_001)},
        {},
    ):
        with pytest.raises(ApiError):
            check_timestamp(params, now)


def test_engine_fok_and_book_versions(spot_entry: dict[str, Any]) -> None:
    engine = SpotEngine([SymbolRules.from_entry(spot_entry)], ManualClock(), {"USDT": "100000"})
    engine.seed_book("BTCUSDT", bids=[("60000", "1")], asks=[("60010", "0.5")])
    version = engine.books["BTCUSDT"].last_update_id
    kwargs: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "order_type": "LIMIT",
        "time_in_force": "FOK",
        "price": Decimal("60010"),
        "client_order_id": "fok",
    }
    # More than the book holds within the limit: expires whole, takes nothing.
    order, fills = engine.place(qty=Decimal("0.6"), **kwargs)
    assert (order.status, fills) == ("EXPIRED", [])
    assert engine.depth("BTCUSDT", 5)[2] == [(Decimal("60010"), Decimal("0.5"))]
    assert engine.balance("USDT").free == Decimal(100000)
    assert engine.balance("USDT").locked == Decimal(0)
    order, fills = engine.place(qty=Decimal("0.5"), **kwargs)
    assert order.status == "FILLED"
    assert [(t.price, t.qty) for t in fills] == [(Decimal("60010"), Decimal("0.5"))]
    assert engine.books["BTCUSDT"].last_update_id > version
    with pytest.raises(ApiError, match="would immediately match"):
        engine.place(
            **{**kwargs, "order_type": "LIMIT_MAKER", "side": "SELL", "price": Decimal("60000")},
            qty=Decimal("0.1"),
        )


async def test_the_venue_keeps_retry_after_that_ccxt_drops(emu: BinanceSpotEmulator) -> None:
    from bot.exchanges import map_ccxt_error
    from bot.logs import null_logger
    from bot.venues.ccxt_venue import CcxtVenue

    async with exchange(emu) as ex:
        venue = CcxtVenue(ex, log=null_logger())
        await venue.load_markets()
        emu.faults.rate_limit_next("GET /api/v3/openOrders", retry_after_s=7)
        with pytest.raises(ccxt.DDoSProtection) as refused:
            await venue.fetch_open_orders(BTC)
    mapped = map_ccxt_error(refused.value)
    assert mapped.retry_after_s == 7.0  # type: ignore[attr-defined]


async def test_a_cancel_reply_names_the_cancelled_order_not_the_cancel(
    emu: BinanceSpotEmulator,
) -> None:
    """Binance spot's cancel reply carries the cancel request's own clientOrderId; the
    venue hands back our order's, so the order manager matches the reply to it."""
    from bot.logs import null_logger
    from bot.orders.updates import OrderUpdate
    from bot.venues.ccxt_venue import CcxtVenue

    async with exchange(emu) as ex:
        venue = CcxtVenue(ex, log=null_logger())
        await venue.load_markets()
        placed = await venue.create_order(
            BTC, "limit", "buy", 0.01, 59000.0, {"clientOrderId": "bs1-abc"}
        )
        raw = await ex.cancel_order(placed["id"], BTC)  # what ccxt itself reports
        assert raw["clientOrderId"] != "bs1-abc"
        again = await venue.create_order(
            BTC, "limit", "buy", 0.01, 59000.0, {"clientOrderId": "bs1-def"}
        )
        cancelled = await venue.cancel_order(again["id"], BTC)
    update = OrderUpdate.from_ccxt(cancelled)
    assert (update.client_id, update.exchange_id, update.status) == (
        "bs1-def",
        again["id"],
        "canceled",
    )
