"""The emulator's market: recorded data driven into the engine, our orders matched by the
paper venue's model, and the events the engine publishes for its streams."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.book import BookState, OrderBook, Side
from bot.clock import NS_PER_SECOND, ManualClock, WallClock
from bot.engine import Engine, Market
from bot.exchange_sim import BinanceSpotEmulator, SpotEngine, SymbolRules
from bot.exchange_sim.events import (
    BalancesChanged,
    DepthDiff,
    OrderChanged,
    PublicTrade,
    VenueEvent,
)
from bot.exchange_sim.market import YIELD_AFTER_S, YIELD_EVERY, MarketDriver
from bot.exchanges import make_exchange
from bot.feeds.events import BookDelta, BookSnapshot, FeedStatus, MarketEvent, Trade
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import StressedFeed, parse_stress_spec
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.monitor import DepthMonitor
from bot.venues.paper import PaperVenue

SYM = "BTCUSDT"
UNIFIED = "BTC/USDT"
EXCHANGE_INFO = Path(__file__).parent.parent / "bot" / "data" / "binance_exchange_info_symbols.json"
D = Decimal


@pytest.fixture(scope="module")
def spot_entry() -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(EXCHANGE_INFO.read_text())["spot"]
    return entry


def make_engine(
    spot_entry: dict[str, Any], clock: Any, balances: dict[str, str] | None = None
) -> SpotEngine:
    return SpotEngine(
        [SymbolRules.from_entry(spot_entry)],
        clock,
        balances if balances is not None else {"USDT": "1000000", "BTC": "10"},
    )


def replay(clock: ManualClock, duration_s: float, **kwargs: Any) -> ReplayFeed:
    return ReplayFeed(bundled_sample_paths(), clock=clock, duration_s=duration_s, **kwargs)


def place(engine: SpotEngine, side: str, price: Decimal | str, qty: str, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "symbol": SYM,
        "side": side,
        "order_type": "LIMIT",
        "time_in_force": "GTC",
        "price": D(price),
        "qty": D(qty),
        "client_order_id": f"c{len(engine.orders)}",
    }
    args.update(kw)
    return engine.place(**args)


def after(start_ns: int, seconds: float) -> Any:
    """A run_until predicate: the first book event ``seconds`` into the data."""

    def pred(ev: MarketEvent) -> bool:
        return isinstance(ev, BookDelta) and ev.ts_ns - start_ns >= seconds * NS_PER_SECOND

    return pred


class StreamClient:
    """A client of the depth stream doing what Binance documents: buffer the stream,
    fetch a snapshot, drop diffs the snapshot holds, apply the rest in order."""

    def __init__(self) -> None:
        self.diffs: list[DepthDiff] = []
        self.book: dict[str, dict[Decimal, Decimal]] | None = None
        self.last_id: int | None = None

    def on_event(self, event: VenueEvent) -> None:
        if isinstance(event, DepthDiff):
            self.diffs.append(event)
            if self.book is not None:
                self._apply(event)

    def snapshot(self, engine: SpotEngine) -> None:
        last_id, bids, asks = engine.depth(SYM, 1_000_000)
        self.book = {"bids": dict(bids), "asks": dict(asks)}
        self.last_id = last_id
        for diff in self.diffs:
            if diff.last_id > last_id:
                self._apply(diff)

    def _apply(self, diff: DepthDiff) -> None:
        assert self.book is not None
        assert self.last_id is not None
        assert diff.first_id == self.last_id + 1, "the stream skipped an update"
        for key, levels in (("bids", diff.bids), ("asks", diff.asks)):
            for price, size in levels:
                if size == 0:
                    self.book[key].pop(price, None)
                else:
                    self.book[key][price] = size
        self.last_id = diff.last_id


def rest_depth(engine: SpotEngine) -> tuple[int, dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    last_id, bids, asks = engine.depth(SYM, 1_000_000)
    return last_id, dict(bids), dict(asks)


# ---------------------------------------------------------------------- events


def test_events_of_seeding_taking_resting_and_cancelling(spot_entry: dict[str, Any]) -> None:
    engine = make_engine(spot_entry, ManualClock(start_ns=7 * NS_PER_SECOND))
    events: list[VenueEvent] = []
    unsubscribe = engine.subscribe(events.append)
    engine.seed_book(SYM, bids=[("60000", "1")], asks=[("60010", "0.5"), ("60020", "1")])
    # The second seed is a diff against the first: one level changed, one removed.
    engine.seed_book(SYM, bids=[("60000", "2")], asks=[("60010", "0.5")])
    assert [(e.bids, e.asks) for e in events if isinstance(e, DepthDiff)] == [
        (((D(60000), D(1)),), ((D(60010), D("0.5")), (D(60020), D(1)))),
        (((D(60000), D(2)),), ((D(60020), D(0)),)),
    ]
    events.clear()

    # Takes the 0.5 at 60010, rests 0.1 at 60010 as the new best bid.
    order, fills = place(engine, "BUY", "60010", "0.6")
    kinds = [type(e).__name__ + ":" + getattr(e, "execution", "") for e in events]
    assert kinds == [
        "OrderChanged:NEW",
        "BalancesChanged:",
        "PublicTrade:",
        "OrderChanged:TRADE",
        "BalancesChanged:",
        "DepthDiff:",
    ]
    new, lock, tape, trade, settle, diff = events
    assert isinstance(new, OrderChanged)
    assert new.order.executed_qty == 0
    assert new.order.status == "NEW"
    assert new.time_ms == 7_000
    assert isinstance(lock, BalancesChanged)
    assert lock.balances == (("USDT", D(1_000_000) - D("36006"), D("36006")),)
    assert isinstance(tape, PublicTrade)
    assert (tape.price, tape.qty, tape.buyer_is_maker) == (D(60010), D("0.5"), False)
    assert isinstance(trade, OrderChanged)
    assert trade.trade == fills[0]
    assert tape.trade_id == fills[0].trade_id  # one id space: the tape and myTrades agree
    assert (trade.order.status, trade.order.executed_qty) == ("PARTIALLY_FILLED", D("0.5"))
    assert isinstance(settle, BalancesChanged)
    assert dict((a, (f, lk)) for a, f, lk in settle.balances) == {
        "USDT": (D(1_000_000) - D("36006"), D("6001")),
        "BTC": (D(10) + D("0.5") - D("0.0005"), D(0)),
    }
    assert isinstance(diff, DepthDiff)
    assert (diff.bids, diff.asks) == (((D(60010), D("0.1")),), ((D(60010), D(0)),))
    assert diff.last_id == engine.depth(SYM, 5)[0]
    events.clear()

    engine.cancel(SYM, order.order_id, None)
    assert [type(e) for e in events] == [OrderChanged, BalancesChanged, DepthDiff]
    assert isinstance(events[0], OrderChanged)
    assert events[0].execution == "CANCELED"
    assert isinstance(events[2], DepthDiff)
    assert events[2].bids == ((D(60010), D(0)),)
    events.clear()

    unsubscribe()
    place(engine, "BUY", "59000", "0.01")
    assert events == []


def test_resting_orders_fill_by_the_queue_and_show_in_depth(spot_entry: dict[str, Any]) -> None:
    engine = make_engine(spot_entry, ManualClock())
    events: list[VenueEvent] = []
    engine.subscribe(events.append)
    engine.seed_book(SYM, bids=[("60000", "1")], asks=[("60010", "2")])
    order, _ = place(engine, "BUY", "60000", "0.3", order_type="LIMIT_MAKER")
    assert engine.depth(SYM, 1)[1] == [(D(60000), D("1.3"))]  # public 1 + ours 0.3

    # 0.8 sold at our price: all of it goes to the 1.0 queued ahead of us.
    assert engine.market_trade(SYM, 60000.0, 0.8, "sell") == []
    # 0.4 more: 0.2 left ahead of us, then 0.2 to us (maker, at our price).
    fills = engine.market_trade(SYM, 60000.0, 0.4, "sell")
    assert [(t.price, t.qty, t.is_maker) for t in fills] == [(D(60000), D("0.2"), True)]
    tape = [(e.price, e.qty, e.buyer_is_maker) for e in events if isinstance(e, PublicTrade)]
    # The tape: the market's first print, then ours, then the rest of the second print.
    assert tape == [
        (D(60000), D("0.8"), True),
        (D(60000), D("0.2"), True),
        (D(60000), D("0.2"), True),
    ]
    # The recorded book moves through our price: its asks there fill the rest.
    engine.seed_book(SYM, bids=[("59990", "1")], asks=[("60000", "0.05"), ("60010", "2")])
    assert order.executed_qty == D("0.25")
    # What we took from the 60000 ask is consumed: depth shows none of it now.
    assert engine.depth(SYM, 1)[2] == [(D(60010), D(2))]
    engine.fill_resting(order.order_id, "0.05")  # the test hook still works
    assert order.status == "FILLED"
    assert engine.depth(SYM, 1)[1] == [(D(59990), D(1))]
    # A second buyer cannot take the consumed 0.05 again.
    _, fills = place(engine, "BUY", "60000", "0.05", time_in_force="IOC")
    assert fills == []


def test_self_trade_prevention_expires_our_resting_order(spot_entry: dict[str, Any]) -> None:
    engine = make_engine(spot_entry, ManualClock())
    events: list[VenueEvent] = []
    engine.subscribe(events.append)
    engine.seed_book(SYM, bids=[("60000", "1")], asks=[("60020", "1")])
    ask, _ = place(engine, "SELL", "60010", "0.1")
    with pytest.raises(Exception, match="would immediately match"):
        place(engine, "BUY", "60010", "0.1", order_type="LIMIT_MAKER")
    bid, fills = place(engine, "BUY", "60010", "0.1")
    assert fills == []
    assert ask.status == "EXPIRED_IN_MATCH"
    assert bid.status == "NEW"
    expired = [e for e in events if isinstance(e, OrderChanged) and e.execution == "EXPIRED"]
    assert [e.order.order_id for e in expired] == [ask.order_id]
    assert engine.balance("BTC").locked == 0


# ---------------------------------------------------------------------- the recorded market


async def test_depth_is_the_recorded_book_under_a_fracture(spot_entry: dict[str, Any]) -> None:
    clock = ManualClock()
    spec = parse_stress_spec("fracture:start_s=5,ramp_s=2,hold_s=10,recover_s=10")
    feed = StressedFeed(replay(clock, 40), spec)
    engine = make_engine(spot_entry, clock)
    driver = MarketDriver(engine, feed)
    reference = OrderBook(SYM, clock=clock)  # an independent rebuild of the same events
    async for event in feed.events():
        driver.apply(event)
        if isinstance(event, BookSnapshot | BookDelta):
            assert reference.apply(event) is None
    stress = feed.stats.stress
    assert stress.reached_end
    assert stress.events_rewritten > 0
    assert reference.state is BookState.VALID
    _, bids, asks = engine.depth(SYM, 1_000_000)
    for side, shown in ((Side.BID, bids), (Side.ASK, asks)):
        rows = reference.top(reference.level_count(side), side).tolist()
        assert shown == [(Decimal(repr(p)), Decimal(repr(s))) for p, s in rows]
    assert driver.stats.book_drops == {}


async def test_the_depth_stream_rebuilds_rest_depth(spot_entry: dict[str, Any]) -> None:
    clock = ManualClock()
    engine = make_engine(spot_entry, clock)
    client = StreamClient()
    engine.subscribe(client.on_event)
    driver = MarketDriver(engine, replay(clock, 90))
    first = await driver.step()
    assert first is not None
    await driver.run_until(after(first.ts_ns, 20))
    client.snapshot(engine)  # joins mid-stream, as a websocket client would
    public = engine.books[SYM].public
    best_bid, best_ask = public.best_bid(), public.best_ask()
    assert best_bid is not None
    assert best_ask is not None
    # Ours in the book: a resting bid at the touch, and a taker that consumes the asks.
    bid, _ = place(engine, "BUY", repr(best_bid), "0.05", order_type="LIMIT_MAKER")
    _, taken = place(engine, "BUY", repr(round(best_ask * 1.0001, 2)), "0.4")
    assert taken
    await driver.run()
    assert driver.exhausted
    assert bid.executed_qty > 0  # the market reached it during the replay
    ids = [(d.first_id, d.last_id) for d in client.diffs]
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ids))
    last_id, bids, asks = rest_depth(engine)
    assert client.book == {"bids": bids, "asks": asks}
    assert client.last_id == last_id == ids[-1][1]


async def test_a_resting_bid_fills_only_when_the_market_reaches_it(
    spot_entry: dict[str, Any],
) -> None:
    clock = ManualClock()
    engine = make_engine(spot_entry, clock)
    driver = MarketDriver(engine, replay(clock, 260))
    first = await driver.step()
    assert first is not None
    await driver.run_until(after(first.ts_ns, 240))
    public = engine.books[SYM].public
    price = public.best_bid()
    assert price is not None
    queue = float(public.top(1, Side.BID)[0, 1])
    bid, _ = place(engine, "BUY", repr(price), "0.01", order_type="LIMIT_MAKER")
    prints_before_fill: list[float] = []
    reasons: list[str] = []
    before = bid.executed_qty
    while (event := await driver.step()) is not None:
        filled, before = bid.executed_qty > before, bid.executed_qty
        if not filled:
            if isinstance(event, Trade) and event.price == price and not reasons:
                prints_before_fill.append(event.amount)
            continue
        if isinstance(event, Trade):
            assert event.side == "sell"
            assert event.price <= price
            reasons.append("trade at" if event.price == price else "trade through")
        else:
            best_ask = public.best_ask()
            assert best_ask is not None
            assert best_ask <= price
            reasons.append("book through")
    assert reasons, "the market never reached the bid"
    # Prints at our price went to the queue ahead of us first: a touch is not a fill.
    assert len(prints_before_fill) >= 5
    assert sum(prints_before_fill) < queue
    assert all(t.is_maker and t.price == D(repr(price)) for t in engine.trades)


# ---------------------------------------------------------------------- one implementation


async def test_same_fills_as_the_paper_venue_on_the_same_data(
    spot_entry: dict[str, Any],
) -> None:
    """Every 10 s a 0.01 BTC post-only bid at the best bid and ask at the best ask, and
    now and then a 0.3 BTC taker, sent to the paper venue and to the emulator's engine
    on the same recorded events: the two must fill exactly the same."""
    clock = ManualClock()
    feed = replay(clock, 300)
    book = OrderBook(UNIFIED, clock=clock)
    markets = offline_markets("binance")
    assert markets is not None
    venue = PaperVenue(
        markets=markets, balances={"BTC": 10, "USDT": 1_000_000}, clock=clock, latency_ms=0
    )
    paper = Engine(
        feed=feed,
        markets={UNIFIED: Market(UNIFIED, book, DepthMonitor.for_bands((10.0,), 100_000.0))},
        log=null_logger(),
        listeners=[venue],
    )
    engine = make_engine(spot_entry, clock)
    driver = MarketDriver(engine, feed)
    pairs: list[tuple[str, int]] = []  # (paper id, emulator id), in placement order
    next_ns: int | None = None
    rounds = 0
    async for event in feed.events():
        if isinstance(event, FeedStatus):
            paper.handle(event)
        else:
            paper.handle(dataclasses.replace(event, symbol=UNIFIED))
        driver.apply(event)
        bid, ask = book.best_bid(), book.best_ask()
        if isinstance(event, Trade) or bid is None or ask is None:
            continue
        next_ns = event.ts_ns if next_ns is None else next_ns
        if event.ts_ns < next_ns:
            continue
        next_ns += 10 * NS_PER_SECOND
        for side, price in (("buy", bid), ("sell", ask)):
            p = await venue.create_order(UNIFIED, "limit", side, 0.01, price, {"postOnly": True})
            e, _ = place(engine, side.upper(), repr(price), "0.01", order_type="LIMIT_MAKER")
            pairs.append((p["id"], e.order_id))
        rounds += 1
        if rounds % 6 == 0:
            limit = venue.price_to_precision(UNIFIED, ask * 1.0002)
            p = await venue.create_order(UNIFIED, "limit", "buy", 0.3, float(limit))
            e, _ = place(engine, "BUY", limit, "0.3")
            pairs.append((p["id"], e.order_id))
    by_paper = {p: i for i, (p, _) in enumerate(pairs)}
    by_emu = {e: i for i, (_, e) in enumerate(pairs)}
    paper_fills = [
        (by_paper[t["order"]], D(t["info"]["price"]), D(t["info"]["qty"]), t["takerOrMaker"])
        for t in await venue.fetch_my_trades(UNIFIED)
    ]
    emu_fills = [
        (by_emu[t.order_id], t.price, t.qty, "maker" if t.is_maker else "taker")
        for t in engine.trades
    ]
    assert emu_fills == paper_fills
    assert len(pairs) >= 60
    takers = {f[0] for f in emu_fills if f[3] == "taker"}
    assert len(takers) >= 4
    assert sum(1 for f in emu_fills if f[3] == "maker") >= 100
    # Balances agree up to the venue's rounding of each commission to 8 decimals.
    balance = await venue.fetch_balance()
    for asset in ("BTC", "USDT"):
        mine = engine.balance(asset)
        assert float(mine.locked) == pytest.approx(balance[asset]["used"], abs=1e-9)
        assert float(mine.free) == pytest.approx(balance[asset]["free"], abs=len(emu_fills) * 1e-8)


# ---------------------------------------------------------------------- the driver


async def test_the_driver_reports_progress_and_the_end(spot_entry: dict[str, Any]) -> None:
    clock = ManualClock()
    wall = ManualClock()

    async def sleep(seconds: float) -> None:
        # Real-time pacing on a simulated wall clock: the time passes at once, and the
        # feed still hands the loop a turn where a real replay would wait.
        wall.advance(int(seconds * NS_PER_SECOND))
        await asyncio.sleep(0)

    engine = make_engine(spot_entry, clock)
    driver = MarketDriver(engine, replay(clock, 15, speed=1.0, wall_clock=wall, sleep=sleep))
    task = asyncio.create_task(driver.run())
    await asyncio.wait_for(driver.wait_applied(200), timeout=10)
    assert driver.stats.applied >= 200
    with pytest.raises(RuntimeError, match="already running"):
        await driver.step()
    await asyncio.wait_for(driver.wait_exhausted(), timeout=10)
    await task
    # Paced at real time: the (simulated) wall clock ran as long as the 15 s of data.
    assert wall.now_ns() >= 14 * NS_PER_SECOND
    # A wait for more than the feed holds ends with the feed.
    await asyncio.wait_for(driver.wait_applied(10**9), timeout=1)
    stats = driver.stats
    assert stats.events["snapshot"] == 1
    assert stats.events["status"] == 1
    assert stats.applied == sum(stats.events.values())
    assert engine.depth(SYM, 1)[1]
    assert await driver.step() is None


async def test_the_driver_ignores_symbols_the_venue_does_not_list(
    spot_entry: dict[str, Any],
) -> None:
    clock = ManualClock()
    engine = make_engine(spot_entry, clock)
    driver = MarketDriver(engine, replay(clock, 5, symbol_map={SYM: "ETHUSDT"}))
    await driver.run()
    assert driver.stats.ignored_symbols["ETHUSDT"] > 0
    assert engine.depth(SYM, 5)[1:] == ([], [])


# ---------------------------------------------------------------------- over HTTP


@pytest.fixture
async def emulator(spot_entry: dict[str, Any]) -> AsyncIterator[BinanceSpotEmulator]:
    async with BinanceSpotEmulator(
        exchange_info=[spot_entry],
        api_key="k",
        secret="s",
        clock=WallClock(),  # ccxt signs with the wall clock
        balances={"USDT": "100000", "BTC": "1"},
    ) as emu:
        yield emu


async def test_ccxt_trades_on_the_replayed_market(emulator: BinanceSpotEmulator) -> None:
    driver = MarketDriver(emulator.engine, replay(ManualClock(), 120))
    first = await driver.step()
    assert first is not None
    await driver.run_until(after(first.ts_ns, 30))
    ex = make_exchange(
        "binance",
        sandbox=True,
        api_key="k",
        secret="s",
        options={"fetchMarkets": {"types": ["spot"]}},
        url_overrides=emulator.url_overrides(),
    )
    try:
        book = await ex.fetch_order_book(UNIFIED, limit=5)
        last_id, bids, asks = emulator.engine.depth(SYM, 5)
        assert book["nonce"] == last_id
        assert book["bids"] == [[float(p), float(q)] for p, q in bids]
        assert book["asks"] == [[float(p), float(q)] for p, q in asks]
        best_bid = book["bids"][0][0]
        order = await ex.create_order(UNIFIED, "limit", "buy", 0.01, best_bid, {"postOnly": True})
        assert (await ex.fetch_order(order["id"], UNIFIED))["filled"] == 0
        oid = int(order["id"])
        await driver.run_until(lambda _e: emulator.engine.orders[oid].executed_qty > 0)
        filled = await ex.fetch_order(order["id"], UNIFIED)
        trades = await ex.fetch_my_trades(UNIFIED)
    finally:
        await ex.close()
    assert filled["filled"] > 0
    assert {(t["price"], t["takerOrMaker"]) for t in trades} == {(best_bid, "maker")}


async def test_a_replay_behind_schedule_still_lets_the_venue_serve_requests(
    spot_entry: dict[str, Any],
) -> None:
    """An unpaced replay (as one behind its schedule is) hands events out without
    awaiting; the driver gives the event loop a turn every YIELD_EVERY events, or sooner
    once YIELD_AFTER_S went by, so the venue's requests are served between slow events.
    Here each event takes 1 ms of the driver's clock (a loaded machine)."""
    ticks = itertools.count()
    slow = YIELD_AFTER_S / 2  # two events per turn at most

    def monotonic() -> float:
        return next(ticks) * slow

    clock = ManualClock()
    driver = MarketDriver(make_engine(spot_entry, clock), replay(clock, 30.0), monotonic=monotonic)
    seen: list[int] = []
    done = asyncio.Event()

    async def venue_requests() -> None:
        # Another task on the loop (the venue's HTTP server): note where the market was
        # each time it got a turn.
        while not done.is_set():
            seen.append(driver.stats.applied)
            await asyncio.sleep(0)

    other = asyncio.ensure_future(venue_requests())
    await driver.run()
    done.set()
    await other
    gaps = [b - a for a, b in itertools.pairwise(seen) if b > a]
    assert driver.stats.applied > 10 * YIELD_EVERY
    assert max(gaps) <= 3  # a turn every couple of slow events, not every 64
