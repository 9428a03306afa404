"""The hot path's shortcuts keep the behaviour they replace.

- The risk engine's timer looks at the markets only when one of them can have gone
  stale; a stale market is still caught on the first tick past ``stale_book_s``, with
  any number of markets.
- The trader keeps each market's committed collateral between that market's changes;
  every other market's budget still sees exactly what a full recount gives.
- Journal payloads handed over raw are encoded on the writer thread into the same
  text, hashes and chain (``audit verify`` passes).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from bench._common import paper_settings
from bench.replay import cloned_markets, market_symbol, write_copies
from bot.book import OrderBook
from bot.clock import NS_PER_SECOND, ManualClock
from bot.feeds.events import BookSnapshot, levels
from bot.journal import Journal
from bot.journal.audit import verify
from bot.journal.chain import canonical_json
from bot.logs import null_logger
from bot.risk import Guard, GuardEvent, MarketStateChanged, RiskEngine, RiskEvent
from bot.settings.models import GuardSettings, RiskSettings
from bot.trader import Trader

S = NS_PER_SECOND


def _book(symbol: str, clock: ManualClock) -> OrderBook:
    b = OrderBook(symbol, clock=clock)
    snap = BookSnapshot(symbol, clock.now_ns(), levels([[99.0, 1.0]]), levels([[101.0, 1.0]]))
    assert b.apply(snap) is None
    return b


def test_a_stale_market_among_many_is_caught_on_the_first_tick_past_the_limit() -> None:
    clock = ManualClock(1_000 * S)
    symbols = [f"X{i:02d}/USDT" for i in range(40)]
    engine = RiskEngine(
        RiskSettings(guards=GuardSettings(stale_book_s=5.0, data_resume_s=1.0)),
        clock=clock,
        log=null_logger(),
        symbols=symbols,
    )
    events: list[RiskEvent] = []
    engine.subscribe(events.append)
    for s in symbols:
        engine.on_book(s, _book(s, clock))
    engine.tick()
    quiet = symbols[17]
    for step in range(1, 60):  # every market but one updates every 100 ms
        clock.advance(S // 10)
        for s in symbols:
            if s != quiet:
                engine.on_book(s, _book(s, clock))
        engine.tick()
        fired = [e for e in events if isinstance(e, GuardEvent)]
        if step <= 50:  # 5.0 s without an update is not yet stale
            assert not fired, step
    (event,) = [e for e in events if isinstance(e, GuardEvent)]
    assert (event.guard, event.symbol) == (Guard.STALE_BOOK, quiet)
    assert event.reason == f"STALE_BOOK: symbol={quiet} age_s=5.100 max_s=5"
    assert engine.is_paused(quiet)
    assert not any(engine.is_paused(s) for s in symbols if s != quiet)
    # Fresh data: healthy for data_resume_s, then the market resumes on a tick.
    engine.on_book(quiet, _book(quiet, clock))
    clock.advance(S)
    engine.tick()
    assert not engine.is_paused(quiet)
    (resumed,) = [e for e in events if isinstance(e, MarketStateChanged) and e.symbol == quiet][1:]
    assert resumed.cause == "RECOVERED: guard=stale_book healthy_s=1.000"


def _fresh_committed(trader: Trader, symbol: str) -> float:
    total = 0.0
    for other, desk in trader.desks.items():
        if other == symbol or desk.last_mid is None:
            continue
        total += desk.inventory.committed_quote(trader.manager.open_orders(other), desk.last_mid)
    return total


async def test_committed_elsewhere_equals_a_full_recount_through_an_episode(
    tmp_path: Path,
) -> None:
    """Three markets quote through a fracture (orders placed, filled, replaced): every
    reading's figure for the other markets is the one a recount gives."""
    import bot.app
    from bot.feeds.stress import parse_stress_spec
    from bot.settings import load_settings

    n, seconds = 3, 75.0
    files = write_copies(n, seconds, tmp_path)
    base = load_settings(Path("config/paper.toml"), env={})
    market = base.markets[0].model_dump(mode="json")
    settings = paper_settings(
        tmp_path,
        markets=[dict(market, symbol=market_symbol(i)[0]) for i in range(n)],
        feed={"replay_files": [str(p) for p in files], "speed": 0},
        control={"enabled": False},
        risk={
            "max_orders_per_second": base.risk.max_orders_per_second * n,
            "max_order_burst": base.risk.max_order_burst * n,
            "max_total_notional_quote": base.risk.max_notional_per_market_quote * n,
        },
    )
    checked: list[float] = []
    original = Trader._committed_elsewhere

    def compare(self: Trader, symbol: str) -> float:
        got = original(self, symbol)
        assert got == _fresh_committed(self, symbol)
        checked.append(got)
        return got

    with (
        mock.patch.object(bot.app, "offline_markets", return_value=cloned_markets(n)),
        mock.patch.object(Trader, "_committed_elsewhere", compare),
    ):
        run = await bot.app.assemble(
            settings, log=null_logger(), stress=parse_stress_spec("fracture:start_s=65")
        )
        summary = await run.execute()
    assert checked
    assert any(v > 0 for v in checked)  # other markets had quotes out
    markets: dict[str, Any] = (summary.trading or {})["markets"]
    assert all(m["episodes"] for m in markets.values())


def test_raw_payloads_are_encoded_by_the_writer_into_a_verifiable_chain(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, synchronous="NORMAL", clock=ManualClock(5 * S))
    payloads: list[dict[str, Any]] = [
        {"symbol": "BTC/USDT", "client_id": f"c{i}", "price": 0.1 * i, "nan": float("nan")}
        for i in range(50)
    ]
    for i, payload in enumerate(payloads):
        journal.append("order", payload, ts_ns=i, owned=i % 2 == 0)
    assert journal.close()
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT payload, client_id FROM records WHERE kind = 'order' ORDER BY id"
    ).fetchall()
    conn.close()
    # Encoded on either thread, the stored text is the canonical JSON of the payload.
    assert [r[0] for r in rows] == [canonical_json(p) for p in payloads]
    assert [r[1] for r in rows] == [p["client_id"] for p in payloads]
    assert json.loads(rows[3][0])["nan"] == "nan"
    report = verify(path)
    assert report.ok, report


@pytest.mark.parametrize("owned", [True, False])
def test_backpressure_keeps_order_with_raw_payloads(tmp_path: Path, owned: bool) -> None:
    journal = Journal(tmp_path / "j.sqlite", synchronous="NORMAL", queue_size=2)
    for i in range(40):
        journal.append("trace", {"i": i}, ts_ns=i, owned=owned)
    assert journal.close()
    conn = sqlite3.connect(tmp_path / "j.sqlite")
    got = [
        json.loads(p)["i"]
        for (p,) in conn.execute("SELECT payload FROM records WHERE kind = 'trace' ORDER BY id")
    ]
    conn.close()
    assert got == list(range(40))
