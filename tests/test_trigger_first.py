"""The trigger's orders go out before the work that is not worth delaying them for:
the reading's own records, and the observers of the orders' notices."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from paper_runs import paper_run

from bot.orders import SyncResult
from bot.venues.paper import PaperVenue


async def test_the_triggers_records_follow_all_its_orders_to_the_venue(tmp_path: Path) -> None:
    run = await paper_run(tmp_path, "fracture:start_s=65", feed={"duration_s": 75.0})
    trader, venue = run.trader, run.venue
    assert trader is not None
    assert isinstance(venue, PaperVenue)
    creates: list[str] = []
    create = venue.create_order

    async def counted(*args: Any, **kwargs: Any) -> Any:
        creates.append(kwargs.get("params", args[-1] if args else {})["clientOrderId"])
        return await create(*args, **kwargs)

    venue.create_order = counted  # type: ignore[method-assign]
    first_sync: list[SyncResult] = []
    sync = trader.manager.sync_quotes

    def noted_sync(*args: Any, **kwargs: Any) -> SyncResult:
        result = sync(*args, **kwargs)
        if result.creating and not first_sync:
            first_sync.append(result)
        return result

    trader.manager.sync_quotes = noted_sync  # type: ignore[method-assign]
    started: list[list[str]] = []  # the creates at the venue when the episode started
    for desk in trader.desks.values():
        episodes = desk.episodes
        on_update = episodes.on_update

        def spied(*args: Any, _on: Any = on_update, _eps: Any = episodes, **kwargs: Any) -> Any:
            had = _eps.current is not None
            ended = _on(*args, **kwargs)
            if not had and _eps.current is not None:
                started.append(list(creates))
            return ended

        episodes.on_update = spied  # type: ignore[method-assign]
    decided: list[list[str]] = []  # the creates at the venue when the decision was recorded
    evidence = trader.evidence
    assert evidence is not None  # config/paper.toml runs under a governance policy
    on_reading = evidence.on_reading

    def recorded(reading: Any) -> None:
        if reading.allowed and not decided:
            decided.append(list(creates))
        on_reading(reading)

    evidence.on_reading = recorded  # type: ignore[method-assign]
    await run.execute()

    assert first_sync, "the fracture never engaged the backstop"
    ladder = first_sync[0].creating
    assert len(ladder) >= 2
    # The episode opened (journal record, transition log) once every create of the
    # trigger's ladder had been handed to the venue, in ladder order.
    assert started[0] == ladder
    # So was the governance's decision record of that reading; in the journal it still
    # comes before the orders' records.
    assert decided[0] == ladder
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT kind, payload FROM records ORDER BY id").fetchall()
    kinds = [kind for kind, _ in rows]
    quoting = [i for i, (kind, p) in enumerate(rows) if kind == "decision" and json.loads(p)["q"]]
    assert quoting
    assert quoting[0] < kinds.index("order")
