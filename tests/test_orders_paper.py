"""The order manager against the real PaperVenue: same code path as a live exchange.

The paper venue matches against a real-shaped local book that the test feeds through
its engine-listener interface (``on_sample``/``on_trade``); time is a ManualClock.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import ccxt
import pytest
from order_fakes import OpenThrottle, RecordingSleep, publish_book

from bot.book import OrderBook
from bot.clock import NS_PER_MS, ManualClock
from bot.feeds.events import Trade
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.orders import (
    ClientIdFactory,
    OrderActionFailed,
    OrderFilled,
    OrderManager,
    OrderManagerConfig,
    OrderNotice,
    OrderState,
)
from bot.venues.paper import PaperVenue
from strategies.base import Quote

BTC = "BTC/USDT"
S = OrderState
BIDS = [[59_990.0, 1.0], [59_980.0, 2.0]]
ASKS = [[60_010.0, 1.0], [60_020.0, 2.0]]


def bid(price: float, amount: float = 0.01) -> Quote:
    return Quote(BTC, "buy", price, amount)


def ask(price: float, amount: float = 0.01) -> Quote:
    return Quote(BTC, "sell", price, amount)


class Paper:
    def __init__(
        self, clock: ManualClock, *, latency_ms: float = 0.0, usdt: float = 10_000.0, **cfg: Any
    ) -> None:
        markets = offline_markets("binance")
        assert markets is not None
        self.clock = clock
        self.venue = PaperVenue(
            markets={BTC: markets[BTC]},
            balances={"USDT": usdt, "BTC": 0.1},
            clock=clock,
            latency_ms=latency_ms,
        )
        self.book = OrderBook(BTC, clock=clock)
        self.notices: list[OrderNotice] = []
        self.om = OrderManager(
            self.venue,
            clock=clock,
            rng=random.Random(9),
            log=null_logger(),
            config=OrderManagerConfig(**cfg),
            throttler=OpenThrottle(),
            sleep=RecordingSleep(clock),
        )
        self.om.subscribe(self.notices.append)
        self.publish_book()

    def publish_book(self, bids: list[list[float]] = BIDS, asks: list[list[float]] = ASKS) -> None:
        publish_book(self.venue, self.book, BTC, self.clock.now_ns(), bids, asks)

    def trade(self, price: float, amount: float, side: str) -> None:
        self.venue.on_trade(Trade(BTC, self.clock.now_ns(), price, amount, side, "p1"))  # type: ignore[arg-type]

    async def quote(self, *quotes: Quote) -> None:
        self.om.sync_quotes(BTC, quotes)
        await self.om.drain()

    async def venue_orders(self) -> list[dict[str, Any]]:
        return await self.venue.fetch_orders(BTC)


@pytest.fixture
def paper(clock: ManualClock) -> Paper:
    return Paper(clock)


async def test_quotes_rest_on_the_paper_venue_and_an_unchanged_sync_sends_nothing(
    paper: Paper,
) -> None:
    await paper.quote(bid(59_000.0), ask(61_000.0))
    await paper.quote(bid(59_000.0), ask(61_000.0))

    orders = await paper.venue_orders()
    assert [(o["side"], o["price"], o["status"], o["postOnly"]) for o in orders] == [
        ("buy", 59_000.0, "open", True),
        ("sell", 61_000.0, "open", True),
    ]
    assert all(paper.om.is_ours(o["clientOrderId"]) for o in orders)
    assert [o.state for o in paper.om.open_orders(BTC)] == [S.OPEN, S.OPEN]


async def test_requote_cancels_the_old_order_before_the_new_one_on_the_paper_venue(
    paper: Paper,
) -> None:
    await paper.quote(bid(59_000.0))
    await paper.quote(bid(59_100.0))

    orders = await paper.venue_orders()
    assert [(o["price"], o["status"]) for o in orders] == [
        (59_000.0, "canceled"),
        (59_100.0, "open"),
    ]
    assert [o.price for o in paper.om.open_orders(BTC)] == [59_100.0]


async def test_post_only_that_would_cross_is_rejected_and_reported(paper: Paper) -> None:
    await paper.quote(bid(60_010.0))  # at the best ask: would take

    assert paper.om.open_orders(BTC) == []
    (failure,) = [n for n in paper.notices if isinstance(n, OrderActionFailed)]
    assert (failure.action, failure.error) == ("create", "WouldTake")
    assert "immediately match" in failure.reason
    # Not resent into the same wall while the paper venue's book is unchanged.
    assert paper.om.would_take_walls() == {(BTC, "buy"): 60_010.0}


async def test_an_unfundable_quote_is_rejected_as_insufficient_funds(clock: ManualClock) -> None:
    paper = Paper(clock, usdt=100.0)
    await paper.quote(bid(59_000.0))
    (failure,) = [n for n in paper.notices if isinstance(n, OrderActionFailed)]
    assert "InsufficientFunds" in failure.reason
    assert await paper.venue_orders() == []


async def test_fills_arrive_through_watch_and_are_reported_once(paper: Paper) -> None:
    await paper.quote(bid(59_990.0, 0.01))
    filled = asyncio.Event()
    paper.om.subscribe(lambda n: filled.set() if isinstance(n, OrderFilled) else None)
    watcher = asyncio.create_task(paper.om.watch(BTC))
    for _ in range(5):  # a few loop turns: the watcher subscribes (no time passes)
        await asyncio.sleep(0)

    paper.clock.advance(10 * NS_PER_MS)
    paper.trade(59_980.0, 5.0, "sell")  # trades through our bid
    await asyncio.wait_for(filled.wait(), timeout=5)  # the timeout only guards a hang
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher

    assert paper.om.open_orders(BTC) == []
    (order,) = await paper.venue_orders()
    assert order["status"] == "closed"
    assert paper.om.get(order["clientOrderId"]).state is S.FILLED  # type: ignore[union-attr]
    fills = [n for n in paper.notices if isinstance(n, OrderFilled)]
    assert len(fills) == 1
    assert (fills[0].amount, fills[0].price, fills[0].taker_or_maker) == (0.01, 59_990.0, "maker")
    assert fills[0].fee_cost == pytest.approx(0.00001)  # 0.1% maker fee, paid in BTC


async def test_with_latency_the_order_is_pending_until_the_venue_handles_it(
    clock: ManualClock,
) -> None:
    paper = Paper(clock, latency_ms=50)
    result = paper.om.sync_quotes(BTC, [bid(59_000.0)])
    (cid,) = result.creating
    await asyncio.sleep(0)
    assert paper.om.get(cid).state is S.PENDING_NEW  # type: ignore[union-attr]

    paper.clock.advance(50 * NS_PER_MS)
    paper.publish_book()
    await paper.om.drain()

    assert paper.om.get(cid).state is S.OPEN  # type: ignore[union-attr]


async def test_reconcile_on_the_paper_venue_cancels_stray_own_orders_only(
    paper: Paper,
) -> None:
    earlier = ClientIdFactory("bs1", clock=ManualClock(1), rng=random.Random(1)).next()
    for cid in (earlier, "web_manual"):
        await paper.venue.create_order(BTC, "limit", "buy", 0.01, 58_000.0, {"clientOrderId": cid})

    report = await paper.om.reconcile(BTC)

    assert (report.canceled, report.foreign) == ([earlier], 1)
    status = {o["clientOrderId"]: o["status"] for o in await paper.venue_orders()}
    assert status == {earlier: "canceled", "web_manual": "open"}


class LostReply:
    """Wraps the paper venue: the first create's reply is lost (after or before it lands)."""

    def __init__(self, venue: PaperVenue, *, landed: bool) -> None:
        self._venue = venue
        self._landed = landed
        self._lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._venue, name)

    async def create_order(self, *args: Any) -> Any:
        if self._lost:
            return await self._venue.create_order(*args)
        self._lost = True
        if self._landed:
            await self._venue.create_order(*args)
        raise ccxt.RequestTimeout("reply lost")


@pytest.mark.parametrize("landed", [True, False])
async def test_a_lost_create_reply_is_resolved_by_client_id_on_the_paper_venue(
    paper: Paper, landed: bool
) -> None:
    om = OrderManager(
        LostReply(paper.venue, landed=landed),  # type: ignore[arg-type]
        clock=paper.clock,
        rng=random.Random(2),
        log=null_logger(),
        throttler=OpenThrottle(),
        sleep=RecordingSleep(paper.clock),
    )
    order = om.place(bid(59_000.0))
    await om.drain()

    assert not isinstance(order, str)
    assert order.state is (S.OPEN if landed else S.REJECTED)
    assert len(await paper.venue_orders()) == (1 if landed else 0)
