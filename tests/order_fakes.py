"""Test doubles for the order manager: a scripted, error-injecting venue, a gate throttle,
a recording sleep and a recording logger.

The venue keeps its own little order book of *exchange-side* orders (what the venue
believes), returns ccxt-shaped dicts, raises real ccxt exception classes, and rounds
with a real ccxt Binance object loaded with the bundled BTC/USDT market, so precision
and limits behave as on Binance.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ccxt

from bot.clock import NS_PER_MS, NS_PER_SECOND, ManualClock
from bot.markets import offline_markets

BTC = "BTC/USDT"


@dataclass
class Step:
    """What the next call of a method does instead of (or before) answering normally.

    ``error``: raise it. ``effect``: perform the normal side effect anyway (a create
    that reached the venue but whose reply was lost). ``hold``: wait for this future
    first; it resolves to None (answer normally) or to a Step to follow instead.
    """

    error: BaseException | None = None
    effect: bool = False
    hold: asyncio.Future[Step | None] | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)


class Held:
    """A call held by the test: ``await entered.wait()``, then ``release()``/``fail()``."""

    def __init__(self, step: Step) -> None:
        self._step = step

    @property
    def entered(self) -> asyncio.Event:
        return self._step.entered

    def release(self) -> None:
        assert self._step.hold is not None
        self._step.hold.set_result(None)

    def fail(self, error: BaseException, *, effect: bool = False) -> None:
        assert self._step.hold is not None
        self._step.hold.set_result(Step(error=error, effect=effect))


class FakeVenue:
    """A venue implementing bot.venues.base.Venue (+ watch_orders/watch_my_trades)."""

    id = "fake"

    def __init__(self, clock: ManualClock | None = None) -> None:
        self._precision = ccxt.binance({"enableRateLimit": False})
        markets = offline_markets("binance")
        assert markets is not None
        self._precision.set_markets(list(markets.values()))
        self.markets: dict[str, Any] = {BTC: self._precision.markets[BTC]}
        self.has: dict[str, Any] = {
            "watchOrders": True,
            "watchMyTrades": True,
            "cancelAllOrders": False,
        }
        self._clock = clock or ManualClock(1_723_161_255_000_000_000)
        self.orders: dict[str, dict[str, Any]] = {}  # exchange id -> order (venue's truth)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._script: defaultdict[str, deque[Step]] = defaultdict(deque)
        self._called = asyncio.Condition()
        self._ids = itertools.count(1000)
        self._trade_ids = itertools.count(5000)
        self.order_pushes: asyncio.Queue[list[dict[str, Any]] | BaseException] = asyncio.Queue()
        self.trade_pushes: asyncio.Queue[list[dict[str, Any]] | BaseException] = asyncio.Queue()

    # -- scripting ----------------------------------------------------------------

    def fail(self, method: str, error: BaseException, *, effect: bool = False) -> None:
        """The next call of ``method`` raises ``error`` (after acting, if ``effect``)."""
        self._script[method].append(Step(error=error, effect=effect))

    def hold(self, method: str) -> Held:
        """The next call of ``method`` waits until the test releases (or fails) it."""
        step = Step(hold=asyncio.get_running_loop().create_future())
        self._script[method].append(step)
        return Held(step)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def wait_calls(self, method: str, n: int) -> None:
        """Until ``method`` has been called at least ``n`` times."""
        async with self._called:
            await self._called.wait_for(lambda: self.count(method) >= n)

    async def _enter(self, method: str, args: tuple[Any, ...]) -> Step | None:
        self.calls.append((method, args))
        async with self._called:
            self._called.notify_all()
        if not self._script[method]:
            return None
        step = self._script[method].popleft()
        step.entered.set()
        if step.hold is not None:
            follow = await step.hold
            return follow
        return step

    # -- exchange-side helpers for tests -------------------------------------------

    def add_order(
        self,
        client_id: str | None,
        *,
        side: str = "buy",
        price: float = 60_000.0,
        amount: float = 0.01,
        filled: float = 0.0,
        symbol: str = BTC,
    ) -> dict[str, Any]:
        """An order placed on the account by someone (us in an earlier run, or a human)."""
        order = self._new_order(symbol, side, amount, price, client_id, post_only=False)
        order["filled"] = filled
        order["remaining"] = amount - filled
        self.orders[order["id"]] = order
        return dict(order)

    def find(self, client_id: str) -> dict[str, Any] | None:
        for order in self.orders.values():
            if order["clientOrderId"] == client_id:
                return order
        return None

    def fill(self, client_id: str, amount: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Fill ``amount`` of an order on the venue; returns (order copy, trade dict)."""
        order = self.find(client_id)
        assert order is not None, client_id
        order["filled"] = round(order["filled"] + amount, 10)
        order["remaining"] = round(order["amount"] - order["filled"], 10)
        if order["remaining"] <= 0:
            order["status"] = "closed"
        trade = {
            "id": str(next(self._trade_ids)),
            "order": order["id"],
            "symbol": order["symbol"],
            "side": order["side"],
            "price": order["price"],
            "amount": amount,
            "cost": amount * order["price"],
            "takerOrMaker": "maker",
            "fee": {"cost": amount * order["price"] * 0.001, "currency": "USDT"},
            "timestamp": self._ms(),
            "datetime": None,
            "type": "limit",
            "info": {},
        }
        return dict(order), trade

    def _ms(self) -> int:
        return self._clock.now_ns() // NS_PER_MS

    def _new_order(
        self,
        symbol: str,
        side: str,
        amount: float,
        price: float | None,
        client_id: str | None,
        *,
        post_only: bool,
    ) -> dict[str, Any]:
        return {
            "id": str(next(self._ids)),
            "clientOrderId": client_id,
            "symbol": symbol,
            "type": "limit",
            "side": side,
            "price": price,
            "amount": amount,
            "filled": 0.0,
            "remaining": amount,
            "status": "open",
            "timestamp": self._ms(),
            "datetime": None,
            "postOnly": post_only,
            "timeInForce": "PO" if post_only else "GTC",
            "trades": [],
            "fee": None,
            "info": {},
        }

    def _lookup(self, id: str, params: dict[str, Any] | None) -> dict[str, Any]:
        client_id = (params or {}).get("clientOrderId")
        order = self.find(client_id) if client_id is not None else self.orders.get(id)
        if order is None:
            raise ccxt.OrderNotFound(f"fake: order {id or client_id} does not exist")
        return order

    # -- the Venue protocol ---------------------------------------------------------

    async def load_markets(self, reload: bool = False) -> dict[str, Any]:
        return self.markets

    async def fetch_order_book(
        self, symbol: str, limit: int | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = dict(params or {})
        step = await self._enter("create_order", (symbol, type, side, amount, price, params))

        def act() -> dict[str, Any]:
            order = self._new_order(
                symbol,
                side,
                amount,
                price,
                params.get("clientOrderId"),
                post_only=bool(params.get("postOnly")),
            )
            self.orders[order["id"]] = order
            return dict(order)

        return self._finish(step, act)

    async def cancel_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        step = await self._enter("cancel_order", (id, symbol, dict(params or {})))

        def act() -> dict[str, Any]:
            order = self._lookup(id, params)
            if order["status"] != "open":
                raise ccxt.OrderNotFound(f"fake: order {order['id']} is {order['status']}")
            order["status"] = "canceled"
            return dict(order)

        return self._finish(step, act)

    async def cancel_all_orders(
        self, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        raise AssertionError("the order manager must never cancel everyone's orders")

    async def fetch_open_orders(
        self,
        symbol: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        step = await self._enter("fetch_open_orders", (symbol,))
        return self._finish(
            step,
            lambda: [
                dict(o)
                for o in self.orders.values()
                if o["status"] == "open" and (symbol is None or o["symbol"] == symbol)
            ],
        )

    async def fetch_order(
        self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        step = await self._enter("fetch_order", (id, symbol, dict(params or {})))
        return self._finish(step, lambda: dict(self._lookup(id, params)))

    async def fetch_my_trades(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    async def fetch_balance(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {}

    async def watch_orders(self, symbol: str | None = None, *args: Any) -> list[dict[str, Any]]:
        item = await self.order_pushes.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def watch_my_trades(self, symbol: str | None = None, *args: Any) -> list[dict[str, Any]]:
        item = await self.trade_pushes.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return str(self._precision.amount_to_precision(symbol, amount))

    def price_to_precision(self, symbol: str, price: float) -> str:
        return str(self._precision.price_to_precision(symbol, price))

    async def close(self) -> None:
        return None

    @staticmethod
    def _finish(step: Step | None, act: Any) -> Any:
        if step is not None and step.error is not None:
            if step.effect:
                act()
            raise step.error
        return act()


class OpenThrottle:
    """Admits everything; counts entries."""

    def __init__(self) -> None:
        self.entries = 0

    async def __aenter__(self) -> None:
        self.entries += 1

    async def __aexit__(self, *exc: object) -> None:
        return None


class GateThrottle:
    """Admits ``capacity`` calls, then holds further calls until the test opens more room."""

    def __init__(self, capacity: int) -> None:
        self.admitted = 0
        self._capacity = capacity
        self._room = asyncio.Condition()
        self.waiting = 0

    async def __aenter__(self) -> None:
        async with self._room:
            self.waiting += 1
            self._room.notify_all()
            await self._room.wait_for(lambda: self.admitted < self._capacity)
            self.waiting -= 1
            self.admitted += 1
            self._room.notify_all()

    async def settled(self, waiting: int) -> None:
        """Until exactly ``waiting`` calls are held at the gate."""
        async with self._room:
            await self._room.wait_for(lambda: self.waiting == waiting)

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def allow(self, more: int) -> None:
        async with self._room:
            self._capacity += more
            self._room.notify_all()


class RecordingSleep:
    """Records requested delays and advances the clock instead of sleeping."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(int(seconds * NS_PER_SECOND))
        await asyncio.sleep(0)


class RecordingLogger:
    """Duck-typed structlog logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, **kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._log("exception", event, **kw)

    def has(self, event: str, level: str | None = None) -> bool:
        return any(e == event and (level is None or lv == level) for lv, e, _ in self.records)

    def events(self, names: Iterable[str]) -> list[str]:
        wanted = set(names)
        return [e for _, e, _ in self.records if e in wanted]


def publish_book(
    venue: Any,
    book: Any,
    symbol: str,
    now_ns: int,
    bids: list[list[float]],
    asks: list[list[float]],
) -> None:
    """Apply a snapshot to ``book`` and show it to the paper ``venue`` as the engine would."""
    import numpy as np

    from bot.feeds.events import BookSnapshot, levels
    from bot.monitor import DepthSample

    assert book.apply(BookSnapshot(symbol, now_ns, levels(bids), levels(asks))) is None
    sample = DepthSample(
        ts_ns=now_ns,
        best_bid=bids[0][0],
        best_ask=asks[0][0],
        mid=(bids[0][0] + asks[0][0]) / 2,
        spread_bps=0.0,
        bands_bps=(),
        depth=np.zeros((2, 0, 2)),
        buy_slippage_bps=None,
        sell_slippage_bps=None,
    )
    venue.on_sample(symbol, book, sample)
