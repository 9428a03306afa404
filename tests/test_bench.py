"""Smoke runs of the benchmarks, so they keep working as the code under them changes.

A benchmark's figures depend on the machine; what a test can honestly assert is that it
still runs end to end on the real objects and prints its table. ``bench/book.py``'s
``--quick`` mode replays the whole bundled recording three ways (~30 s here), so its
parts are run on a small synthetic stream instead, including its own check that the
three books agree.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is not installed, it lives beside bot/

    def load(name: str) -> ModuleType:
        return importlib.import_module(f"bench.{name}")

    return load


def has_columns(header: str, names: list[str]) -> bool:
    """Every name appears in ``header``, in this order."""
    at = 0
    for name in names:
        at = header.find(name, at)
        if at < 0:
            return False
        at += len(name)
    return True


def test_reaction_quick_prints_its_table(bench: object, capsys: pytest.CaptureFixture[str]) -> None:
    reaction = bench("reaction")  # type: ignore[operator]

    assert reaction.main(["--quick"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "reaction benchmark (bench/reaction.py)"
    assert out[1].startswith("machine: ")
    head = next(i for i, line in enumerate(out) if line.startswith("measure "))
    assert has_columns(
        out[head],
        [
            "measure",
            "n",
            "ours p50 us",
            "ours p99 us",
            "ours max us",
            "tick p50 ms",
            "tick p99 ms",
            "tick max ms",
            "p50 ratio",
            "p99 ratio",
        ],
    )
    rows = out[head + 1 : head + 4]
    assert [r[:44].strip() for r in rows] == [
        "trigger -> first quote order handed to venue",
        "trigger -> last order of that decision",
        "book message -> strategy decision",
    ]
    for r in rows:
        n = int(r[44:].split()[0].replace(",", ""))
        assert n > 0  # both quick runs reached the fracture and quoted
    # The paced run: its own table, and its trigger quoted too.
    paced = next(i for i, line in enumerate(out) if line.startswith("paced: "))
    head = next(i for i in range(paced, len(out)) if out[i].startswith("measure "))
    first = out[head + 1]
    assert first.startswith("trigger -> first quote order handed to venue")
    assert int(first[44:].split()[0].replace(",", "")) == 1
    # Order churn: both runs timed the same engaged events; requoting sent more orders,
    # and the per-action figure came out of them.
    churn = next(i for i, line in enumerate(out) if line.startswith("order churn: "))
    assert has_columns(out[churn + 1], ["run", "events", "actions", "engine ms", "per event us"])
    hold, requote = (out[churn + 2][52:].split(), out[churn + 3][52:].split())
    assert out[churn + 2].startswith("holding the ladder")
    assert out[churn + 3].startswith("requoting on every change")
    assert hold[0] == requote[0] != "0"  # the same events, and some
    assert int(requote[1].replace(",", "")) > int(hold[1].replace(",", ""))
    assert out[churn + 4].startswith("per order action (a create or a cancel), all in: ")
    # The machine's cold penalty: a row per idle gap, the first the back-to-back base.
    cold = next(i for i, line in enumerate(out) if line.startswith("the machine's cold penalty"))
    assert has_columns(out[cold + 1], ["idle before the message", "p50 us", "p90 us", "vs no idle"])
    gaps = [line[:36].strip() for line in out[cold + 2 : cold + 7]]
    assert gaps == ["none (back to back)", "0.5 ms", "2 ms", "10 ms", "50 ms"]
    assert out[cold + 2].split()[-1] == "1.0x"
    assert all(float(line.split()[-3].replace(",", "")) > 0 for line in out[cold + 2 : cold + 7])


def test_replay_quick_prints_its_tables(bench: object, capsys: pytest.CaptureFixture[str]) -> None:
    replay = bench("replay")  # type: ignore[operator]

    assert replay.main(["--quick"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "replay benchmark (bench/replay.py)"
    assert out[1].startswith("machine: ")
    head = out.index(next(line for line in out if line.startswith("workload ")))
    assert has_columns(
        out[head],
        ["workload", "messages/s", "events/s", "vs ccxt", "peak RSS MB", "at start MB", "wall s"],
    )
    assert [r[:52].strip() for r in out[head + 1 : head + 5]] == [
        "ours: feed only (read + parse + sync)",
        "ccxt.pro binance handlers: book + trades (baseline)",
        "live feed: ccxt.pro handlers + copy to our book",
        "ours: full pipeline (paper, calm: no stress)",
    ]
    handler = next(line for line in out if line.startswith("ccxt.pro's handler alone"))
    assert float(handler.split("depth diff ")[1].split(" us")[0]) > 0
    assert float(handler.split("trade ")[1].split(" us")[0]) > 0
    many = out.index(next(line for line in out if line.startswith("measure (reaction")))
    assert has_columns(out[many], ["n", "p50 ms", "p99 ms", "max ms", "1 market p99", "ratio p99"])
    assert out[many + 1] == "3 markets, every depth message handed to the engine:"
    assert out[many + 2].strip().startswith("book message -> strategy decision")
    conflated = out.index("3 markets, depth messages conflated as the live feed does:")
    assert out[conflated + 1].strip().startswith("book message -> strategy decision")
    sharded = out.index("2 markets in 2 processes of 1 at once (one per core), conflated:")
    assert out[sharded + 1].strip().startswith("book message -> strategy decision")
    floor = out.index(next(line for line in out if "assembled without trading" in line))
    assert out[floor + 1].strip().startswith("book message -> depth sample (the floor)")
    assert int(out[floor + 1].split()[7].replace(",", "")) > 0  # samples were timed
    split_floor = out.index("2 markets in 2 processes of 1, without trading:")
    assert out[split_floor + 1].strip().startswith("book message -> depth sample (the floor)")
    busy = [line for line in out if "engine thread busy" in line]
    assert len(busy) == 6  # every run says how busy its engine was
    assert all(0 < float(line.split("busy ")[1].split("%")[0]) < 100 for line in busy)


def test_replay_capacity_prints_a_row_per_markets_and_speed(
    bench: object, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = bench("replay")  # type: ignore[operator]

    # Child processes, as the full grid's runs are: one, then two of one market each.
    replay.capacity(10.0, ((2, 10.0),), ((2, 3.0),))

    out = capsys.readouterr().out.splitlines()
    split = out.index("split over 2 processes (every other market each), started together:")
    for at, speed in ((1, "10"), (split + 1, "3")):
        assert has_columns(out[at], ["markets x speed", "decision p50 ms", "p99 ms", "<= 5 ms"])
        cells = out[at + 1].split()
        assert cells[:3] == ["2", "x", speed]
        assert float(cells[3]) > 0
        assert cells[-1] in ("yes", "no")


def test_book_bench_parts_run_and_agree_on_a_small_stream(bench: object) -> None:
    book = bench("book")  # type: ignore[operator]
    stream = book.synthetic(3_000, 7)

    book.check_agreement(stream)  # raises SystemExit if the three books disagree
    rows = book.bench_stream(stream, 1)

    assert [r[0] for r in rows] == [
        "(a) apply: rows/s",
        "(a) apply: messages/s",
        "(b) mixed: messages/s",
        "(c) depth query p50",
        "(c) depth query p99",
    ]
    assert all(v > 0 for r in rows for v in r[2:])


def test_conflated_diffs_leave_the_book_as_the_diffs_one_by_one(bench: object) -> None:
    """The replay benchmark's live-feed model merges a market's pending diffs: the book
    after the merged diff must be the book after each of them in turn."""
    import random

    import numpy as np

    from bot.book import OrderBook
    from bot.clock import ManualClock
    from bot.feeds.events import BookDelta, BookSnapshot, Trade, levels

    reaction = bench("reaction")  # type: ignore[operator]
    rng = random.Random(7)

    def rows(lo: float) -> list[list[float]]:
        return [[lo + rng.randrange(20) * 0.5, float(rng.choice([0, 1, 2, 3]))] for _ in range(6)]

    snap = BookSnapshot(
        "X",
        1,
        levels([[90.0 + i * 0.5, 1.0] for i in range(20)]),
        levels([[101.0 + i * 0.5, 1.0] for i in range(20)]),
        update_id=10,
    )
    diffs = [
        BookDelta(
            "X", 2 + k, levels(rows(90.0)), levels(rows(101.0)), first_id=11 + k, last_id=11 + k
        )
        for k in range(8)
    ]
    trade = Trade("X", 5, 100.0, 1.0, "buy", "t1")
    one_by_one, merged = OrderBook("X", clock=ManualClock()), OrderBook("X", clock=ManualClock())
    for book in (one_by_one, merged):
        assert book.apply(snap) is None
    for d in diffs:
        assert one_by_one.apply(d) is None
    batch = [(e, 0, 10) for e in (*diffs[:3], trade, *diffs[3:])]
    out = reaction._conflate(batch, lambda e: e.ts_ns)
    # The trade keeps its place; the diffs become one, at the last one's place, due
    # when the first was, charged every diff's parse time.
    assert [type(e).__name__ for e, _, _ in out] == ["Trade", "BookDelta"]
    event, due, parse = out[1]
    assert (due, parse) == (2, 80)
    assert (event.first_id, event.last_id) == (11, 18)
    assert merged.apply(event) is None
    for side in ("bid", "ask"):
        assert np.array_equal(one_by_one.top(50, side), merged.top(50, side))


@pytest.mark.e2e
def test_live_quick_times_a_real_daemon_against_the_emulator(
    bench: object, capsys: pytest.CaptureFixture[str]
) -> None:
    live = bench("live")  # type: ignore[operator]

    assert live.main(["--quick"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "bench.live: tick to trade on loopback (bench/live.py)"
    head = next(i for i, line in enumerate(out) if line.startswith("measure "))
    assert has_columns(out[head], ["measure", "p50 ms", "p99 ms", "max ms"])
    first = out[head + 1]
    assert first.startswith("trigger message sent -> first order accepted")
    # A positive time, and the parts add up to it (they are differences of stamps).
    total = float(first[52:].split()[0])
    parts = [float(out[head + i][52:].split()[0]) for i in range(4, 8)]
    assert total > 0
    assert sum(parts) == pytest.approx(total, abs=0.02)
    assert out[-2].startswith("orders in the first ladder: ")


def test_live_first_ladder_stops_before_the_requote(bench: object) -> None:
    live = bench("live")  # type: ignore[operator]
    ms = 1_000_000

    def order(event: str, client_id: str, at_ms: float) -> dict[str, object]:
        return {"event": event, "client_id": client_id, "ts_ns": int(at_ms * ms)}

    # The shape of a drill's journal where the market moved 0.3 s after the trigger:
    # six creates, their acceptances, then cancels and the next decision's creates.
    first = [order("submitted", f"c{i}", 3.0 + i / 10) for i in range(6)]
    later = [
        *(order("accepted", f"c{i}", 10.0 + i) for i in range(6)),
        order("cancel_requested", "c1", 304.0),
        order("canceled", "c1", 308.0),
        order("submitted", "c6", 314.0),
        order("submitted", "c7", 314.5),
    ]

    assert live.first_ladder([*first, *later]) == [(r["ts_ns"], r["client_id"]) for r in first]
    assert live.first_ladder(later[6:]) == [(314 * ms, "c6"), (int(314.5 * ms), "c7")]
    assert live.first_ladder(later[:6]) == []


def test_profile_trigger_quick_profiles_one_trigger_per_run(
    bench: object, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = bench("profile_trigger")  # type: ignore[operator]

    assert prof.main(["--quick", "--top", "5"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "trigger profile (bench/profile_trigger.py)"
    for label, exactly in (("trigger (", 2), ("engaged readings", None)):
        at = next(i for i, line in enumerate(out) if line.startswith(label))
        found = re.search(r": (\d+) readings, ([\d,]+) calls each", out[at])
        assert found is not None
        readings, calls = found.groups()
        # Two runs, each engaging once; the engaged readings follow each trigger.
        assert int(readings) == exactly if exactly else int(readings) > 10
        assert int(calls.replace(",", "")) > 100
        assert has_columns(out[at + 1], ["function", "calls", "own %", "incl. %"])
        # The whole reading first (100%), then its parts, largest first.
        shares = [float(line.split()[-1].rstrip("%")) for line in out[at + 2 : at + 7]]
        assert out[at + 2].startswith("on_sample (bot/trader.py:")
        assert shares[0] == 100.0
        assert shares == sorted(shares, reverse=True)
        assert out[at + 7].startswith("largest own time: ")


def test_ab_quick_times_both_trees(bench: object, capsys: pytest.CaptureFixture[str]) -> None:
    ab = bench("ab")  # type: ignore[operator]

    # HEAD against the working tree: a checkout, then a paced run in a process of each.
    assert ab.main(["HEAD", "--quick"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "A/B benchmark (bench/ab.py)"
    head = next(i for i, line in enumerate(out) if line.startswith("tree "))
    assert has_columns(out[head], ["n", "p50 us", "p90 us", "p99 us", "max us", "last p50 us"])
    base, ours, ratio = out[head + 1 : head + 4]
    assert base.startswith("baseline HEAD (")
    assert ours.startswith("this tree")
    for line in (base, ours):  # each tree's run reached the trigger and quoted
        n, p50 = line[34:].split()[:2]
        assert n == "1"
        assert float(p50.replace(",", "")) > 0
    assert ratio.startswith("ratio this / baseline")


def test_ab_refuses_an_unknown_revision(bench: object) -> None:
    ab = bench("ab")  # type: ignore[operator]

    with pytest.raises(SystemExit, match="not a revision of this repository: 'no-such-rev'"):
        ab.main(["no-such-rev", "--quick"])
