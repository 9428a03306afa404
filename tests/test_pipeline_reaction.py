"""The reaction path's deferrals keep the journal and the orders exactly as they were.

- The journal holds an event's records (``hold``/``release``): nothing reaches the
  writer thread until the release, deferred payloads are built then, and the stored
  records, their order and their hash chain are those of appending them one by one.
- The order manager reuses the venue's rounding of an equal quote on the same market
  object, and rounds afresh once the market structure is replaced.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from order_fakes import OpenThrottle, RecordingSleep, publish_book

from bot.book import OrderBook
from bot.clock import ManualClock
from bot.journal import Journal
from bot.journal.audit import verify
from bot.journal.reader import JournalReader
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.orders import OrderManager, OrderManagerConfig
from bot.venues.paper import PaperVenue
from strategies.base import Quote

BTC = "BTC/USDT"


def _rows(path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    with JournalReader(path) as reader:
        return [(r.kind, r.ts_ns, dict(r.payload)) for r in reader.records()]


async def test_held_records_reach_the_journal_in_order_with_the_same_content(
    tmp_path: Path,
) -> None:
    plain = Journal(tmp_path / "plain.sqlite", clock=ManualClock(1))
    held = Journal(tmp_path / "held.sqlite", clock=ManualClock(1))
    built: list[int] = []

    def build(i: int) -> dict[str, Any]:
        built.append(i)
        return {"symbol": BTC, "n": i, "nested": [i, {"x": i / 3}]}

    for journal in (plain, held):
        journal.append("trace", {"symbol": BTC, "n": 0}, ts_ns=10)
        await journal.flush()
    held.hold()
    for i in (1, 2, 3):
        plain.append("trace", build(i), ts_ns=10 + i)
        held.append_deferred("trace", lambda i=i: build(i), ts_ns=10 + i)
        if i == 2:  # an ordinary append in between keeps its place
            plain.append("episode", {"id": "e1", "symbol": BTC}, ts_ns=99)
            held.append("episode", {"id": "e1", "symbol": BTC}, ts_ns=99)
    # Held: the builders have not run and the writer has nothing to commit.
    assert built == [1, 2, 3]
    assert held.pending == 4
    assert held.flush_sync(timeout=0.2) is True  # flush releases first
    assert built == [1, 2, 3, 1, 2, 3]
    await plain.flush()
    assert plain.close()
    assert held.close()
    assert _rows(tmp_path / "held.sqlite") == _rows(tmp_path / "plain.sqlite")
    for name in ("plain", "held"):
        assert verify(tmp_path / f"{name}.sqlite").ok


async def test_release_hands_over_once_and_appends_go_straight_through_after(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite", clock=ManualClock(1))
    calls: list[str] = []
    journal.hold()
    journal.append_deferred("trace", lambda: calls.append("built") or {"n": 1}, ts_ns=1)
    await asyncio.sleep(0.05)  # the writer thread would have committed it by now
    assert journal.stats.committed == 0
    assert calls == []
    assert journal.release() is True
    assert calls == ["built"]
    journal.append_deferred("trace", lambda: calls.append("now") or {"n": 2}, ts_ns=2)
    assert calls == ["built", "now"]  # not held: built at once
    await asyncio.wait_for(journal.flush(), 5)
    assert journal.stats.committed == 2
    assert journal.release() is True  # nothing held: a no-op
    journal.close()
    assert [p["n"] for _, _, p in _rows(tmp_path / "j.sqlite") if "n" in p] == [1, 2]


def test_a_failing_builder_keeps_its_record_number_and_the_rest(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", clock=ManualClock(1))
    journal.hold()
    journal.append_deferred("trace", lambda: {"n": 1}, ts_ns=1)
    journal.append_deferred("trace", lambda: {"n": 1 // 0}, ts_ns=2)
    journal.append_deferred("trace", lambda: {"n": 3}, ts_ns=3)
    assert journal.flush_sync(timeout=5)  # would hang if a number were lost
    journal.close()
    payloads = [p for kind, _, p in _rows(tmp_path / "j.sqlite") if kind == "trace"]
    assert payloads[0] == {"n": 1}
    assert payloads[2] == {"n": 3}
    assert "ZeroDivisionError" in payloads[1]["deferred_build_failed"]


def _manager(clock: ManualClock) -> tuple[OrderManager, PaperVenue, list[tuple[str, float]]]:
    markets = offline_markets("binance")
    assert markets is not None
    venue = PaperVenue(
        markets={BTC: markets[BTC]},
        balances={"USDT": 100_000.0, "BTC": 1.0},
        clock=clock,
    )
    publish_book(
        venue,
        OrderBook(BTC, clock=clock),
        BTC,
        clock.now_ns(),
        [[59_990.0, 1.0]],
        [[60_010.0, 1.0]],
    )
    rounded: list[tuple[str, float]] = []
    inner = venue.price_to_precision

    def counted(symbol: str, price: float) -> str:
        rounded.append((symbol, price))
        return inner(symbol, price)

    venue.price_to_precision = counted  # type: ignore[method-assign]
    om = OrderManager(
        venue,
        clock=clock,
        rng=random.Random(3),
        log=null_logger(),
        config=OrderManagerConfig(),
        throttler=OpenThrottle(),
        sleep=RecordingSleep(clock),
    )
    return om, venue, rounded


async def test_an_equal_ladder_is_not_rounded_again_until_the_market_changes() -> None:
    clock = ManualClock(1_700_000_000_000_000_000)
    om, venue, rounded = _manager(clock)
    ladder = [Quote(BTC, "buy", 59_000.123, 0.01), Quote(BTC, "sell", 61_000.987, 0.01)]
    first = om.sync_quotes(BTC, ladder)
    await om.drain()
    assert len(first.creating) == 2
    prices = sorted(o.price for o in om.open_orders(BTC))
    assert prices == [59_000.12, 61_000.99]  # bids down, asks up to the tick
    om.sync_quotes(BTC, ladder)  # the live orders' keys are rounded once
    n = len(rounded)
    again = om.sync_quotes(BTC, [Quote(BTC, "buy", 59_000.123, 0.01), ladder[1]])
    assert sorted(again.kept) == sorted(first.creating)
    assert not again.creating
    assert len(rounded) == n  # neither the quotes nor the live orders rounded again
    # A reloaded market structure (a new object) is rounded afresh.
    venue.markets[BTC] = dict(venue.markets[BTC])
    third = om.sync_quotes(BTC, ladder)
    assert sorted(third.kept) == sorted(first.creating)
    assert len(rounded) > n
    await om.aclose()
