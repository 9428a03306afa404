"""CcxtVenue: the thin adapter over a real ccxt.pro exchange.

The Binance tests run real ccxt code (request building, signing, response parsing)
with only the HTTP transport replaced, so they check what would go on the wire.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs

import ccxt
import ccxt.pro
import pytest
from order_fakes import OpenThrottle, RecordingSleep

from bot.clock import ManualClock
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.orders import OrderManager, OrderState
from bot.venues.base import Venue
from bot.venues.ccxt_venue import CcxtVenue, ClientIdStyle
from strategies.base import Quote

BTC = "BTC/USDT"


def _binance_order(**over: Any) -> dict[str, Any]:
    reply = {
        "symbol": "BTCUSDT",
        "orderId": 28,
        "orderListId": -1,
        "clientOrderId": "bs1-abc-0",
        "transactTime": 1723161255000,
        "price": "60000.00",
        "origQty": "0.01000",
        "executedQty": "0.00000",
        "cummulativeQuoteQty": "0.00",
        "status": "NEW",
        "timeInForce": "GTC",
        "type": "LIMIT_MAKER",
        "side": "BUY",
        "fills": [],
    }
    reply.update(over)
    return reply


class BinanceWire:
    """A ccxt.pro Binance whose HTTP transport answers from a list and records requests."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.exchange = ccxt.pro.binance({"apiKey": "key", "secret": "secret"})
        markets = offline_markets("binance")
        assert markets is not None
        self.exchange.set_markets(list(markets.values()))
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self._replies = list(replies)
        self.exchange.fetch = self._fetch

    async def _fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        query = body if body else (url.split("?", 1)[1] if "?" in url else "")
        self.requests.append((method, url.split("?")[0], parse_qs(query)))
        return self._replies.pop(0)


async def test_binance_create_sends_our_client_id_and_post_only_on_the_wire() -> None:
    wire = BinanceWire([_binance_order()])
    venue = CcxtVenue(wire.exchange, log=null_logger())

    order = await venue.create_order(
        BTC, "limit", "buy", 0.01, 60_000.0, {"clientOrderId": "bs1-abc-0", "postOnly": True}
    )

    ((method, url, sent),) = wire.requests
    assert (method, url.endswith("/api/v3/order")) == ("POST", True)
    assert sent["newClientOrderId"] == ["bs1-abc-0"]
    assert sent["type"] == ["LIMIT_MAKER"]  # Binance's post-only
    assert (order["id"], order["clientOrderId"], order["status"]) == ("28", "bs1-abc-0", "open")
    await venue.close()


async def test_binance_lookup_by_client_id_uses_orig_client_order_id() -> None:
    wire = BinanceWire([_binance_order(status="FILLED", executedQty="0.01000")])
    venue = CcxtVenue(wire.exchange, log=null_logger())

    order = await venue.fetch_order("", BTC, {"clientOrderId": "bs1-abc-0"})

    ((method, _, sent),) = wire.requests
    assert method == "GET"
    assert sent["origClientOrderId"] == ["bs1-abc-0"]
    assert "orderId" not in sent
    assert order["status"] == "closed"
    await venue.close()


async def test_order_manager_over_real_ccxt_binance(clock: ManualClock) -> None:
    wire = BinanceWire([])
    venue = CcxtVenue(wire.exchange, log=null_logger())
    om = OrderManager(
        venue,
        clock=clock,
        rng=random.Random(5),
        log=null_logger(),
        throttler=OpenThrottle(),
        sleep=RecordingSleep(clock),
    )
    result = om.sync_quotes(BTC, [Quote(BTC, "buy", 60_000.004, 0.0123456)])
    (cid,) = result.creating
    wire._replies.append(_binance_order(clientOrderId=cid, origQty="0.01234"))
    await om.drain()

    ((_, _, sent),) = wire.requests
    assert sent["newClientOrderId"] == [cid]
    assert (sent["price"], sent["quantity"]) == (["60000"], ["0.01234"])
    order = om.get(cid)
    assert order is not None
    assert (order.state, order.exchange_id) == (OrderState.OPEN, "28")
    await venue.close()


class FakeExchange:
    """Just the ccxt.pro surface the adapter touches."""

    def __init__(self, exchange_id: str = "someex", *, cancel_all: bool = False) -> None:
        self.id = exchange_id
        self.has: dict[str, Any] = {
            "cancelAllOrders": cancel_all,
            "fetchOpenOrders": True,
            "fetchClosedOrders": True,
        }
        self.markets: dict[str, Any] | None = None
        self.open = [
            {"id": "1", "symbol": BTC, "clientOrderId": "t-bs1-a-0", "status": "open"},
            {"id": "2", "symbol": BTC, "clientOrderId": "web_x", "status": "open"},
            {"id": "3", "symbol": BTC, "clientOrderId": None, "status": "open"},
        ]
        self.closed = [{"id": "4", "symbol": BTC, "clientOrderId": "t-bs1-a-1", "status": "closed"}]
        self.calls: list[tuple[str, Any]] = []
        self.gone = {"2"}  # cancelling this one races with a fill

    async def fetch_open_orders(self, symbol: Any, since: Any, limit: Any, params: Any) -> Any:
        self.calls.append(("fetch_open_orders", symbol))
        return [dict(o) for o in self.open]

    async def fetch_closed_orders(self, symbol: Any, since: Any, limit: Any, params: Any) -> Any:
        self.calls.append(("fetch_closed_orders", symbol))
        return [dict(o) for o in self.closed]

    async def cancel_order(self, id: str, symbol: Any, params: Any) -> Any:
        self.calls.append(("cancel_order", (id, params)))
        if id in self.gone:
            raise ccxt.OrderNotFound(id)
        return {"id": id, "symbol": symbol, "status": "canceled", "clientOrderId": "t-bs1-a-0"}

    async def cancel_all_orders(self, symbol: Any, params: Any) -> Any:
        self.calls.append(("cancel_all_orders", symbol))
        return []

    async def create_order(self, *args: Any) -> Any:
        self.calls.append(("create_order", args))
        return {"id": "9", "clientOrderId": args[-1].get("text"), "status": "open"}

    async def fetch_order(self, id: str, symbol: Any, params: Any) -> Any:
        self.calls.append(("fetch_order", (id, params)))
        return {"id": id, "clientOrderId": "t-bs1-a-0", "status": "open"}


def test_ccxt_venue_satisfies_the_venue_protocol() -> None:
    venue: Venue = CcxtVenue(FakeExchange(), log=null_logger())
    assert venue.has["cancelAllOrders"] is True  # emulated, so always available
    assert venue.markets == {}


async def test_cancel_all_is_emulated_one_by_one_where_missing() -> None:
    ex = FakeExchange()
    venue = CcxtVenue(ex, log=null_logger())

    canceled = await venue.cancel_all_orders(BTC)

    assert [c for c in ex.calls if c[0] == "cancel_all_orders"] == []
    assert [c[1][0] for c in ex.calls if c[0] == "cancel_order"] == ["1", "2", "3"]
    assert [o["id"] for o in canceled] == ["1", "3"]  # "2" was already gone


async def test_native_cancel_all_is_used_where_available() -> None:
    ex = FakeExchange(cancel_all=True)
    await CcxtVenue(ex, log=null_logger()).cancel_all_orders(BTC)
    assert ex.calls == [("cancel_all_orders", BTC)]


async def test_client_id_decoration_is_added_on_send_and_stripped_on_return() -> None:
    ex = FakeExchange("gate")
    venue = CcxtVenue(ex, log=null_logger())

    order = await venue.create_order(BTC, "limit", "buy", 1.0, 10.0, {"clientOrderId": "bs1-a-0"})
    listed = await venue.fetch_open_orders(BTC)

    sent = ex.calls[0][1][-1]
    assert sent == {"text": "t-bs1-a-0"}
    assert order["clientOrderId"] == "bs1-a-0"
    assert listed[0]["clientOrderId"] == "bs1-a-0"


@pytest.mark.parametrize(("wanted", "found"), [("bs1-a-0", "1"), ("bs1-a-1", "4")])
async def test_lookup_by_client_id_searches_listings_where_ccxt_cannot(
    wanted: str, found: str
) -> None:
    ex = FakeExchange("gate")
    venue = CcxtVenue(ex, log=null_logger(), style=ClientIdStyle("text", "t-", False))

    order = await venue.fetch_order("", BTC, {"clientOrderId": wanted})

    assert order["id"] == found
    assert [c for c in ex.calls if c[0] == "fetch_order"] == []


async def test_lookup_by_client_id_of_an_unknown_order_raises_order_not_found() -> None:
    venue = CcxtVenue(
        FakeExchange(), log=null_logger(), style=ClientIdStyle(by_client_id_lookup=False)
    )
    with pytest.raises(ccxt.OrderNotFound):
        await venue.fetch_order("", BTC, {"clientOrderId": "bs1-zz-9"})
