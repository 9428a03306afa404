"""The COIN-M futures emulator (``/dapi``, ``/dstream``) through real ccxt ``binancecoinm``.

The same engine as USDⓈ-M (:mod:`bot.exchange_sim.futures`), on the inverse BTCUSD
perpetual. Figures are hand-computed from the bundled BTCUSD_PERP's terms: contracts of
100 USD, margin and PnL in BTC, maker 0.01 %, taker 0.05 %, maintenance 2.5 %, tick
0.1, lot 1 contract. Inverse arithmetic (:mod:`bot.positions`), with ``N`` = contracts
x 100 USD::

    value = N / price (BTC)     pnl = N x (1/entry - 1/exit)
    liquidation (long) = N x (1 + mmr) / (margin + N / entry)
"""

from __future__ import annotations

import asyncio
import io
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
from futures_support import (
    HOUR_NS,
    MINUTE_NS,
    Session,
    ShiftedClock,
    assert_books_agree,
    ccxt_venue,
    exchange_info,
)

from bot.cli import build_parser
from bot.clock import ManualClock, WallClock
from bot.exchange_sim.cli import options_from_args, serve
from bot.exchange_sim.futures_server import COINM, BinanceFuturesEmulator
from bot.settings import Settings, load_settings
from bot.venues.ccxt_venue import CcxtVenue

PERP, RAW = "BTC/USD:BTC", "BTCUSD_PERP"
KEY, SECRET = "coinm-key", "coinm-secret"
WITHIN_S = 5.0
ONE = Decimal(1)


@pytest.fixture(scope="module")
def coinm_entry() -> dict[str, Any]:
    return exchange_info("coinm")


@asynccontextmanager
async def emulator(
    coinm_entry: dict[str, Any], **kwargs: Any
) -> AsyncIterator[BinanceFuturesEmulator]:
    kwargs.setdefault("clock", WallClock())
    async with BinanceFuturesEmulator(
        market=COINM,
        exchange_info=[coinm_entry],
        api_key=KEY,
        secret=SECRET,
        balances={"BTC": "1"},
        **kwargs,
    ) as emu:
        emu.engine.seed_book(
            RAW, bids=[("49999.9", "500"), ("49999.8", "500")], asks=[("50000", "500")]
        )
        yield emu


def venue(emu: BinanceFuturesEmulator) -> AbstractAsyncContextManager[CcxtVenue]:
    return ccxt_venue("binancecoinm", emu, KEY, SECRET)


@pytest.fixture
async def emu(coinm_entry: dict[str, Any]) -> AsyncIterator[BinanceFuturesEmulator]:
    async with emulator(coinm_entry) as e:
        yield e


async def long_10(v: CcxtVenue) -> dict[str, Any]:
    """Isolated 5x, then buy 10 contracts (1,000 USD) at the 50,000 ask (taker)."""
    await v.set_margin_mode("isolated", PERP)
    await v.set_leverage(5, PERP)
    return await v.create_order(PERP, "limit", "buy", 10, 50000, {"clientOrderId": "c-1"})


async def test_markets_and_book_come_from_the_dapi_endpoints(emu: BinanceFuturesEmulator) -> None:
    async with venue(emu) as v:
        book = await v.fetch_order_book(PERP, 5)
        markets = v.markets
    assert list(markets) == [PERP]
    m = markets[PERP]
    assert (m["id"], m["inverse"], m["contractSize"], m["settle"]) == (RAW, True, 100.0, "BTC")
    assert (m["precision"]["price"], m["precision"]["amount"]) == (0.1, 1.0)
    assert book["bids"] == [[49999.9, 500.0], [49999.8, 500.0]]
    assert book["nonce"] == emu.engine.books[RAW].last_update_id
    assert {path for _, path, _ in emu.requests} == {"/dapi/v1/exchangeInfo", "/dapi/v1/depth"}


async def test_a_taker_fill_opens_an_inverse_isolated_position(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        order = await long_10(v)
        (position,) = await v.fetch_positions([PERP])
        balance = await v.fetch_balance()
        (trade,) = await v.fetch_my_trades(PERP)
    assert (order["status"], order["filled"], order["average"]) == ("closed", 10.0, 50000.0)
    # Value 1,000 / 50,000 = 0.02 BTC; taker fee 0.05 % = 0.00001; margin 0.02 / 5 = 0.004.
    assert order["cost"] == 0.02  # cumBase
    assert (trade["cost"], trade["fee"]) == (0.02, {"currency": "BTC", "cost": 0.00001})
    assert (position["side"], position["contracts"], position["contractSize"]) == (
        "long",
        10.0,
        100.0,
    )
    assert (position["entryPrice"], position["marginMode"], position["leverage"]) == (
        50000.0,
        "isolated",
        5.0,
    )
    assert position["initialMargin"] == 0.004
    assert position["markPrice"] == 49999.95  # the mid
    # 1,000 x (1/50,000 - 1/49,999.95) = -2.0e-8 BTC (the venue says 8 decimals).
    assert position["unrealizedPnl"] == -0.00000002
    # Liquidation: 1,000 x 1.025 / (0.004 + 1,000 / 50,000) = 1,025 / 0.024.
    assert position["liquidationPrice"] == 42708.33333333
    # The wallet (BTC): 1 - 0.00001; free = wallet - margin.
    assert balance["BTC"]["total"] == 0.99999
    assert balance["BTC"]["free"] == 0.99599
    assert balance["BTC"]["used"] == 0.004
    assert {p for _, p, _ in emu.requests} >= {
        "/dapi/v1/marginType",
        "/dapi/v1/leverage",
        "/dapi/v1/order",
        "/dapi/v2/leverageBracket",
        "/dapi/v1/positionRisk",
        "/dapi/v1/account",
        "/dapi/v1/userTrades",
    }


async def test_closing_part_books_inverse_pnl_and_releases_margin(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        await long_10(v)
        emu.engine.seed_book(RAW, bids=[("51000", "500")], asks=[("51000.1", "500")])
        # Would flip the long: refused, as ccxt's inverse table maps Binance's -2022.
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):
            await v.create_order(PERP, "limit", "sell", 11, 51000, {"reduceOnly": True})
        await v.create_order(PERP, "limit", "sell", 4, 51000, {"reduceOnly": True})
        (position,) = await v.fetch_positions([PERP])
        trades = await v.fetch_my_trades(PERP)
    pos, wallet = emu.engine.positions[RAW], emu.engine.wallets["BTC"]
    # Sold 4 contracts (400 USD) @ 51,000: pnl 400 x (1/50,000 - 1/51,000) BTC; fee
    # 400 / 51,000 x 0.05 %, rounded up to 8 decimals: 0.00000393.
    realised = 400 * (ONE / 50000 - ONE / 51000)
    fee = (Decimal(400) / 51000 * Decimal("0.0005")).quantize(Decimal("1e-8"), ROUND_UP)
    assert fee == Decimal("0.00000393")
    assert pos.realised == realised
    assert wallet == ONE - Decimal("0.00001") + realised - fee
    assert pos.margin == Decimal("0.0024")  # 6 / 10 of 0.004 left
    # Initial margin at the mark (the mid 51,000.05): 600 / 51,000.05 / 5.
    assert (position["contracts"], position["initialMargin"]) == (6.0, 0.00235293)
    assert trades[-1]["info"]["realizedPnl"] == "0.00015686"
    assert trades[-1]["info"]["baseQty"] == "0.00784314"  # 400 / 51,000


async def test_funding_is_paid_in_btc_and_read_through_ccxt(coinm_entry: dict[str, Any]) -> None:
    # The venue's clock starts at the wall clock (ccxt signs with it) and is moved by
    # hand past a funding time, well within the requests' recvWindow.
    clock = ManualClock(start_ns=time.time_ns())
    async with (
        emulator(coinm_entry, clock=clock, funding_interval_s=1.0) as emu,
        venue(emu) as v,
    ):
        await long_10(v)
        rate = await v.fetch_funding_rate(PERP)
        clock.advance(1_000_000_000)
        emu.engine.seed_book(RAW, bids=[("49999.9", "500")], asks=[("50000.1", "500")])
        history = await v.fetch_funding_history(PERP)
    assert (rate["fundingRate"], rate["markPrice"]) == (0.0001, 49999.95)
    # Long 1,000 USD at mark 50,000 pays 1,000 / 50,000 x 1 bp = 0.000002 BTC.
    assert [(h["amount"], h["code"]) for h in history] == [(-0.000002, "BTC")]
    assert emu.engine.positions[RAW].margin == Decimal("0.004") - Decimal("0.000002")


async def test_the_user_stream_on_dstream_pushes_orders_balance_and_position(
    emu: BinanceFuturesEmulator,
) -> None:
    async with venue(emu) as v:
        ex = v.exchange
        orders = asyncio.ensure_future(v.watch_orders(PERP))
        trades = asyncio.ensure_future(v.watch_my_trades(PERP))
        balance = asyncio.ensure_future(ex.watch_balance())
        await asyncio.wait_for(emu.ws.wait_until(lambda s: s.user_streams >= 1), WITHIN_S)
        await long_10(v)
        (order,) = await asyncio.wait_for(orders, WITHIN_S)
        (fill,) = await asyncio.wait_for(trades, WITHIN_S)
        account = await asyncio.wait_for(balance, WITHIN_S)
        wallet, update = account["BTC"]["total"], account["info"]
        urls = list(ex.clients)
    assert (order["clientOrderId"], order["status"], order["filled"]) == ("c-1", "closed", 10.0)
    assert (fill["price"], fill["amount"], fill["fee"]) == (
        50000.0,
        10.0,
        {"cost": 0.00001, "currency": "BTC"},
    )
    assert (update["e"], update["a"]["m"], wallet) == ("ACCOUNT_UPDATE", "ORDER", 0.99999)
    (pos,) = update["a"]["P"]
    assert (pos["s"], pos["pa"], pos["iw"]) == (RAW, "10.00000000", "0.00400000")
    assert ("POST", "/dapi/v1/listenKey", 200) in emu.requests
    assert any("/dstream/ws/" in url for url in urls)


async def test_depth_and_trades_stream_on_dstream(emu: BinanceFuturesEmulator) -> None:
    async with venue(emu) as v:
        ex = v.exchange
        book = await asyncio.wait_for(ex.watch_order_book(PERP), WITHIN_S)
        first = book["nonce"]
        prints = asyncio.ensure_future(ex.watch_trades(PERP))
        await asyncio.wait_for(emu.ws.wait_until(lambda s: s.subscriptions >= 2), WITHIN_S)
        emu.engine.market_trade(RAW, 49999.9, 3, "sell")
        (tape,) = await asyncio.wait_for(prints, WITHIN_S)
        emu.engine.seed_book(RAW, bids=[("49999.9", "497")], asks=[("50000", "500")])
        book = await asyncio.wait_for(ex.watch_order_book(PERP), WITHIN_S)
        urls = list(ex.clients)
    assert (tape["price"], tape["amount"], tape["side"]) == (49999.9, 3.0, "sell")
    assert book["bids"][:1] == [[49999.9, 497.0]]
    assert book["nonce"] > first  # ccxt checked pu == its nonce on every diff
    assert urls
    assert all("/dstream/ws" in url for url in urls)


@pytest.fixture
def coinm_settings(tmp_path: Path) -> Settings:
    return load_settings(
        None,
        overrides={
            "state_dir": str(tmp_path),
            "exchange": {"id": "binancecoinm"},
            "markets": [
                {
                    "symbol": PERP,
                    "reserve": {"base": 1.0},
                    "perp": {"leverage": 5, "max_leverage": 10, "funding_interval_h": 1.0},
                }
            ],
        },
        env={"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": SECRET},
    )


async def test_the_bots_inverse_books_equal_the_venues_across_a_restart(
    coinm_entry: dict[str, Any], coinm_settings: Settings
) -> None:
    """Recovery on COIN-M: fills, the inverse position and the venue's funding in BTC."""
    start = (time.time_ns() // HOUR_NS + 1) * HOUR_NS + MINUTE_NS
    clock = ShiftedClock(start)
    async with emulator(coinm_entry, clock=clock, funding_interval_s=3600.0) as emu:
        one = Session(coinm_settings, emu, clock, key=KEY, secret=SECRET)
        await one.start()
        await one.take("buy", 10, 50000, 1)
        await one.take("buy", 10, 50000, 2)
        clock.jump_to(start + HOUR_NS)
        emu.engine.seed_book(RAW, bids=[("51999.9", "500")], asks=[("52000", "500")])
        await one.take("sell", 5, 51999.9, 3)
        await one.crash()

        two = Session(coinm_settings, emu, clock, key=KEY, secret=SECRET)
        report = (await two.start()).markets[PERP]
        await two.crash()
    assert (report.fills_missed, report.funding_missed) == (3, 1)
    assert_books_agree(two, emu)
    pos = emu.engine.positions[RAW]
    # Long 2,000 USD at 50,000 (0.04 BTC, margin 0.008) pays 2,000 / 51,999.95 x 1 bp at
    # the funding time, then 500 USD are sold at 51,999.9: margin x 15/20 remains.
    funding = -(Decimal(2000) / Decimal("51999.95") * Decimal("0.0001")).quantize(Decimal("1e-8"))
    assert pos.funding == funding == two.inventory.position.funding
    assert two.inventory.position.margin == (Decimal("0.008") + funding) * 15 / 20
    assert two.inventory.position.realised == 500 * (ONE / 50000 - ONE / Decimal("51999.9"))


async def test_exchange_sim_market_coinm_serves_the_recording_and_writes_a_coinm_config(
    tmp_path: Path,
) -> None:
    defaults = options_from_args(
        build_parser().parse_args(["exchange-sim", "--market", "coinm"]), environ={}
    )
    assert [p.name for p in defaults.replay] == [
        "cm_btcusd_perp_20240808.gz",
        "cm_btcusd_perp_20240809.gz",
    ]
    assert defaults.balances == {"BTC": Decimal(10)}
    seen: list[Any] = []
    out = io.StringIO()
    path = tmp_path / "rehearse-coinm.toml"
    argv = ["exchange-sim", "--market", "coinm", "--speed", "0", "--duration", "2"]
    args = build_parser().parse_args([*argv, "--write-config", str(path)])
    options = options_from_args(
        args, environ={"BACKSTOP_SIM_API_KEY": "k", "BACKSTOP_SIM_SECRET": "s"}
    )
    assert await serve(options, out=out, err=io.StringIO(), on_ready=seen.append) == 0
    (emu,) = seen
    assert isinstance(emu, BinanceFuturesEmulator)
    assert emu.market is COINM
    assert emu.engine.books[RAW].last_update_id > 1  # the COIN-M market was played in
    lines = [line for line in out.getvalue().splitlines() if line.startswith(("[", "urls_"))]
    table = tomllib.loads("\n".join(lines))
    assert table["exchange"]["urls_override"]["ws.inverse"] == emu.ws_base_url + "/dstream/ws"
    settings = load_settings(
        path, env={"BACKSTOP_EXCHANGE__API_KEY": "k", "BACKSTOP_EXCHANGE__SECRET": "s"}
    )
    assert (settings.mode, settings.exchange.id) == ("testnet", "binancecoinm")
    assert [m.symbol for m in settings.markets] == [PERP]  # paper-coinm's market
    assert settings.markets[0].reserve.base == 0.3
