"""Replay of recorded market data: every supported format, chaining, bad input, pacing."""

from __future__ import annotations

import gzip
import itertools
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from bot.book import OrderBook
from bot.clock import NS_PER_MS, NS_PER_SECOND, ManualClock
from bot.errors import UserError
from bot.feeds import replay as replay_module
from bot.feeds.binance_raw import BookTicker, MalformedMessage, iter_capture, parse_message
from bot.feeds.events import (
    BookDelta,
    BookSnapshot,
    FeedState,
    FeedStatus,
    MarketEvent,
    Trade,
)
from bot.feeds.jsonl import FORMAT_VERSION, JsonlWriter
from bot.feeds.replay import (
    ReplayFeed,
    ReplayFormat,
    bundled_sample_paths,
    convert_to_jsonl,
    iter_recording,
    sniff_recording,
)

DATA = Path(__file__).parent / "data"
USDM = DATA / "usdm_btcusdt_20240808_head.gz"
COINM = DATA / "cm_btcusd_perp_20240808_head.gz"

# Real spot lines (from the bundled sample, level arrays shortened).
SPOT_DEPTH = (
    '1723161254137307667 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate",'
    '"E":1723161255408,"s":"BTCUSDT","U":50093239208,"u":50093239224,'
    '"b":[["61837.63000000","3.78826000"],["61820.99000000","0.00000000"]],'
    '"a":[["61838.04000000","0.32332000"]]}}'
)
SPOT_TRADE = (
    '1723161254087896568 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,'
    '"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,'
    '"m":true,"M":true}}'
)
SPOT_TICKER = (
    '1723161254087891268 {"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT",'
    '"b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)
SPOT_SNAPSHOT = (
    '1723161254206652067 {"lastUpdateId":50093239218,'
    '"bids":[["61837.63000000","3.78826000"],["61837.62000000","0.61700000"]],'
    '"asks":[["61837.64000000","1.54698000"]]}'
)


async def collect(feed: ReplayFeed) -> list[MarketEvent]:
    return [ev async for ev in feed.events()]


def write_lines(path: Path, lines: Sequence[str], *, compress: bool = True) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def same_event(a: MarketEvent, b: MarketEvent) -> bool:
    if type(a) is not type(b):
        return False
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if not (x.shape == y.shape and np.array_equal(x, y, equal_nan=True)):
                return False
        elif isinstance(x, float) and isinstance(y, float):
            if not (x == y or (np.isnan(x) and np.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def assert_same_events(got: Sequence[MarketEvent], want: Sequence[MarketEvent]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert same_event(a, b), f"event {i}: {a!r} != {b!r}"


def book_events(events: Sequence[MarketEvent]) -> list[BookSnapshot | BookDelta]:
    return [e for e in events if isinstance(e, BookSnapshot | BookDelta)]


# --- formats -----------------------------------------------------------------------------


def test_bundled_sample_is_the_two_chained_spot_files_in_order() -> None:
    paths = bundled_sample_paths()
    assert [p.name for p in paths] == ["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"]
    assert all(p.is_file() for p in paths)
    infos = [sniff_recording(p) for p in paths]
    assert {(i.format, i.raw_symbol, i.market) for i in infos} == {
        (ReplayFormat.HFTBACKTEST_BINANCE, "BTCUSDT", "spot")
    }


async def test_spot_capture_lines_become_normalised_events(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spot.gz", [SPOT_TICKER, SPOT_TRADE, SPOT_DEPTH, SPOT_SNAPSHOT])
    feed = ReplayFeed([path], clock=ManualClock(), symbol_map={"BTCUSDT": "BTC/USDT"})

    events = await collect(feed)

    trade, snap, delta, end = events
    assert isinstance(trade, Trade)
    assert trade == Trade(
        symbol="BTC/USDT",
        ts_ns=1723161254087896568,
        price=61837.63,
        amount=0.02,
        side="sell",  # m: true -> the buyer was the maker -> the aggressor sold
        trade_id="3735683259",
        exchange_ts_ns=1723161255342 * NS_PER_MS,
    )
    # The snapshot (no symbol of its own) belongs to the file's symbol; the diff that
    # arrived before it straddles its id (U <= 50093239219 <= u) and comes after it.
    assert isinstance(snap, BookSnapshot)
    assert snap.symbol == "BTC/USDT"
    assert snap.update_id == 50093239218
    assert snap.exchange_ts_ns is None  # spot REST snapshots carry no time
    np.testing.assert_array_equal(snap.bids, [[61837.63, 3.78826], [61837.62, 0.617]])
    assert isinstance(delta, BookDelta)
    assert (delta.first_id, delta.last_id, delta.prev_id) == (50093239208, 50093239224, None)
    assert delta.ts_ns == 1723161254137307667
    assert delta.exchange_ts_ns == 1723161255408 * NS_PER_MS
    np.testing.assert_array_equal(delta.bids, [[61837.63, 3.78826], [61820.99, 0.0]])
    np.testing.assert_array_equal(delta.asks, [[61838.04, 0.32332]])
    assert end == FeedStatus("BTC/USDT", snap.ts_ns, FeedState.ENDED, "end of data")
    assert feed.stats.skipped == {"book_ticker": 1}
    assert feed.stats.lines == 4
    assert feed.stats.events == {"trade": 1, "snapshot": 1, "delta": 1, "status": 1}


@pytest.mark.parametrize(
    ("path", "raw", "market", "snapshot_id", "snapshot_T"),
    [
        (USDM, "BTCUSDT", "usdm", 5123107852948, 1723161256493),
        (COINM, "BTCUSD_PERP", "coinm", 1007198635033, None),
    ],
)
async def test_futures_captures_replay_synchronised_with_pu_continuity(
    path: Path, raw: str, market: str, snapshot_id: int, snapshot_T: int | None
) -> None:
    info = sniff_recording(path)
    assert (info.raw_symbol, info.market) == (raw, market)
    feed = ReplayFeed([path], clock=ManualClock(), symbol_map={raw: "UNIFIED"})

    events = await collect(feed)

    book = book_events(events)
    snap = book[0]
    assert isinstance(snap, BookSnapshot)
    assert snap.symbol == "UNIFIED"
    assert snap.update_id == snapshot_id
    assert snap.bids.shape == (1000, 2)
    assert snap.asks.shape == (1000, 2)
    if snapshot_T is not None:
        assert snap.exchange_ts_ns == snapshot_T * NS_PER_MS
    deltas = [e for e in book[1:] if isinstance(e, BookDelta)]
    assert len(deltas) == len(book) - 1
    # Binance futures rule: the first diff has pu <= S < u; afterwards pu == previous u.
    first = deltas[0]
    assert first.prev_id is not None
    assert first.last_id is not None
    assert first.prev_id <= snapshot_id < first.last_id
    assert all(cur.prev_id == prev.last_id for prev, cur in itertools.pairwise(deltas))
    assert all(d.exchange_ts_ns is not None for d in deltas)
    trades = [e for e in events if isinstance(e, Trade)]
    assert trades
    assert {t.symbol for t in trades} == {"UNIFIED"}
    assert feed.stats.lines == 400
    assert not feed.stats.malformed
    with gzip.open(path, "rt") as f:
        assert feed.stats.stale_deltas + len(deltas) == sum('"depthUpdate"' in line for line in f)


def test_coinm_trade_amounts_are_contracts_and_sides_follow_m() -> None:
    skipped: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    trades = [
        e
        for e in iter_recording(sniff_recording(COINM), skipped=skipped, malformed=malformed)
        if isinstance(e, Trade)
    ]
    with gzip.open(COINM, "rt") as f:
        raw = [line for line in f if '"e":"trade"' in line]
    assert len(trades) == len(raw) == 6
    for t, line in zip(trades, raw, strict=True):
        assert t.amount == float(line.split('"q":"')[1].split('"')[0])
        assert t.amount.is_integer()  # COIN-M sizes are whole contracts
        assert t.side == ("sell" if '"m":true' in line else "buy")


def documented_jsonl_lines() -> list[str]:
    """The JSONL example lines of docs/replay-format.md, so the spec cannot drift."""
    doc = (Path(__file__).parent.parent / "docs" / "replay-format.md").read_text()
    return [line for line in doc.splitlines() if line.startswith('{"type":')]


async def test_documented_jsonl_examples_replay(tmp_path: Path) -> None:
    lines = documented_jsonl_lines()
    assert len(lines) == 5
    plain = write_lines(tmp_path / "doc.jsonl", lines, compress=False)
    zipped = write_lines(tmp_path / "doc.jsonl.gz", lines, compress=True)

    for path in (plain, zipped):
        assert sniff_recording(path).format is ReplayFormat.JSONL
        feed = ReplayFeed([path], clock=ManualClock())
        events = await collect(feed)
        assert [type(e).__name__ for e in events] == [
            "Trade",
            "BookSnapshot",
            "BookDelta",
            "FeedStatus",
            "FeedStatus",
        ]
        trade, snap, delta, status, end = events
        assert isinstance(trade, Trade)
        assert trade.side == "sell"
        assert trade.trade_id == "3735683259"
        assert isinstance(snap, BookSnapshot)
        assert snap.update_id == 50093239218
        assert isinstance(delta, BookDelta)
        assert delta.asks.shape == (0, 2)
        assert isinstance(status, FeedStatus)
        assert status.state is FeedState.DISCONNECTED
        assert isinstance(end, FeedStatus)
        assert end.state is FeedState.ENDED
        assert feed.stats.skipped == {"header": 1}


@pytest.mark.parametrize("fixture", [USDM, COINM])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
async def test_capture_converted_to_jsonl_replays_identically(
    tmp_path: Path, fixture: Path, suffix: str
) -> None:
    dst = tmp_path / f"converted{suffix}"
    symbol_map = {"BTCUSDT": "BTC/USDT:USDT", "BTCUSD_PERP": "BTC/USD:BTC"}

    stats = convert_to_jsonl([fixture], dst, symbol_map=symbol_map)

    assert stats.parsed > 0
    assert sniff_recording(dst).compressed is (suffix == ".jsonl.gz")
    original = await collect(ReplayFeed([fixture], clock=ManualClock(), symbol_map=symbol_map))
    # Symbols are already unified in the JSONL file; the map is harmless there.
    replayed = await collect(ReplayFeed([dst], clock=ManualClock(), symbol_map=symbol_map))
    assert_same_events(replayed, original)


async def test_jsonl_writer_keeps_values_the_book_must_reject(tmp_path: Path) -> None:
    # A recorder writes what it got; judging NaN/negative/crossed input is the book's job.
    path = tmp_path / "odd.jsonl.gz"
    bad = np.array([[np.nan, 1.0], [100.0, -2.0], [np.inf, 1.0]])
    written: list[MarketEvent] = [
        BookSnapshot("X", 1, bad, np.array([[90.0, 1.0]]), update_id=None),
        BookDelta("X", 2, bad, bad, first_id=1, last_id=2, prev_id=None, exchange_ts_ns=3),
        Trade("X", 3, float("nan"), 1.5, "buy", "t1"),
        FeedStatus("X", 4, FeedState.ENDED),  # not written: the replay says it itself
    ]
    with JsonlWriter(path, source="test") as writer:
        assert writer.write_all(written) == 3

    events = await collect(ReplayFeed([path], clock=ManualClock()))

    assert_same_events(events[:3], written[:3])
    assert [e.state for e in events[3:] if isinstance(e, FeedStatus)] == [FeedState.ENDED]
    assert len(events) == 4


async def test_chained_files_continue_one_book_and_order_does_not_matter() -> None:
    paths = bundled_sample_paths()
    feed = ReplayFeed(paths, clock=ManualClock())
    events = await collect(feed)

    stats = feed.stats
    assert stats.lines == 41_249 + 58_325
    assert stats.skipped == {"book_ticker": 28_040 + 45_134}
    assert stats.events["snapshot"] == 1  # 0809 has none: it continues 0808's book
    assert stats.events["trade"] == 9_757 + 10_147
    assert stats.events["delta"] + stats.stale_deltas == 3_451 + 3_044
    assert stats.unsynced_deltas == 0
    assert not stats.malformed
    assert stats.span_s == pytest.approx(650.6, abs=0.1)
    # Files are merged by receive time, so a reversed command line replays the same.
    reversed_events = await collect(ReplayFeed(paths[::-1], clock=ManualClock()))
    assert len(reversed_events) == len(events)
    assert all(a is b or same_event(a, b) for a, b in zip(events, reversed_events, strict=True))


async def test_a_continuation_file_alone_reports_that_it_has_no_snapshot() -> None:
    second = bundled_sample_paths()[1]
    feed = ReplayFeed([second], clock=ManualClock(), duration_s=5)
    events = await collect(feed)
    assert not book_events(events)
    end = events[-1]
    assert isinstance(end, FeedStatus)
    assert end.state is FeedState.ENDED
    assert "no depth snapshot" in end.detail
    assert feed.stats.unsynced_deltas > 0


def test_book_tickers_can_be_read_for_cross_checks(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "spot.gz", [SPOT_TICKER, SPOT_TRADE])
    skipped: Counter[str] = Counter()
    out = list(
        iter_recording(
            sniff_recording(path), skipped=skipped, malformed=Counter(), book_tickers=True
        )
    )
    assert out[0] == BookTicker(
        "BTCUSDT", 1723161254087891268, 61837.63, 3.78826, 61837.64, 1.54698, 50093239212, None
    )
    assert isinstance(out[1], Trade)
    assert not skipped


def test_parse_message_takes_bare_payloads_and_skips_non_market_trades() -> None:
    # A live raw websocket (single stream) sends the payload without the envelope.
    bare = {"e": "trade", "E": 1, "T": 2, "s": "BTCUSDT", "t": 7, "p": "1.5", "q": "2", "m": False}
    trade = parse_message(bare, 10, symbol_map={"BTCUSDT": "BTC/USDT:USDT"})
    assert trade == Trade("BTC/USDT:USDT", 10, 1.5, 2.0, "buy", "7", 2 * NS_PER_MS)
    assert parse_message({**bare, "X": "INSURANCE_FUND"}, 10) is None
    assert parse_message({"e": "markPriceUpdate", "s": "BTCUSDT"}, 10) is None
    with pytest.raises(MalformedMessage) as err:
        parse_message({"lastUpdateId": 5, "bids": [], "asks": []}, 10)
    assert err.value.reason == "snapshot_without_symbol"


# --- bad input ---------------------------------------------------------------------------


async def test_malformed_lines_are_counted_by_reason_and_never_stop_the_replay(
    tmp_path: Path,
) -> None:
    ts = "1723161254300000000 "
    nan_depth = SPOT_DEPTH.replace('"3.78826000"', '"NaN"').replace("50093239224", "50093239230")
    lines = [
        SPOT_SNAPSHOT,
        ts + '{"stream":"btcusdt@trade","data":{"e":"trade"',  # cut off
        ts + '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","s":"BTCUSDT",'
        '"u":50093239230,"b":[],"a":[]}}',  # no U
        ts + '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","s":"BTCUSDT",'
        '"U":50093239225,"u":50093239230,"b":[["abc","1"]],"a":[]}}',
        ts + '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","s":"BTCUSDT",'
        '"U":50093239225,"u":50093239230,"b":[["1","2","3"],["4"]],"a":[]}}',  # ragged
        ts + '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,'
        '"p":"1","q":"1","m":"yes"}}',
        ts + '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,'
        '"p":"x","q":"1","m":true}}',
        "notanumber " + SPOT_TRADE.split(" ", 1)[1],
        "garbage-without-space",
        ts + "[1, 2, 3]",
        "",
        SPOT_TRADE,
        nan_depth,
    ]
    path = write_lines(tmp_path / "bad.gz", lines)
    feed = ReplayFeed([path], clock=ManualClock())

    events = await collect(feed)

    assert feed.stats.malformed == {
        "invalid_json": 1,
        "missing_field": 1,
        "bad_levels": 2,
        "bad_field": 2,
        "bad_timestamp": 1,
        "no_timestamp": 1,
        "not_an_object": 1,
    }
    assert feed.stats.skipped == {"blank": 1}
    assert feed.stats.lines == len(lines)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["BookSnapshot", "Trade", "BookDelta", "FeedStatus"]
    # NaN is a value for the book to reject, not a parse error.
    delta = events[2]
    assert isinstance(delta, BookDelta)
    assert np.isnan(delta.bids[0, 1])


async def test_truncated_gzip_replays_what_is_complete(tmp_path: Path) -> None:
    whole = USDM.read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    feed = ReplayFeed([cut], clock=ManualClock())

    events = await collect(feed)

    assert feed.stats.malformed["truncated_file"] == 1
    assert 50 < feed.stats.lines < 400
    assert isinstance(events[-1], FeedStatus)
    assert events[-1].state is FeedState.ENDED


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("prices.csv", b"ts,price,size\n1,2,3\n", "unknown format"),
        ("binary.gz", gzip.compress(b"\x00\x01\x02garbage\n"), "unknown format"),
        ("object.jsonl", b'{"hello": "world"}\n', "unknown format"),
        ("empty.gz", b"", "empty"),
        ("blank.jsonl", b"\n\n", "empty"),
        (
            "future.jsonl",
            b'{"type":"header","format":"backstop-replay","version":%d}\n' % (FORMAT_VERSION + 1),
            "newer",
        ),
    ],
)
def test_unusable_files_are_a_user_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected) as err:
        ReplayFeed([path], clock=ManualClock())
    assert str(path) in str(err.value)


def test_missing_file_and_bad_settings_are_user_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gz"
    with pytest.raises(UserError, match="no such file") as err:
        ReplayFeed([missing], clock=ManualClock())
    assert str(missing) in str(err.value)
    sample = bundled_sample_paths()
    with pytest.raises(UserError, match="speed"):
        ReplayFeed(sample, clock=ManualClock(), speed=-1)
    with pytest.raises(UserError, match="duration"):
        ReplayFeed(sample, clock=ManualClock(), duration_s=0)
    with pytest.raises(UserError, match="no replay files"):
        ReplayFeed([], clock=ManualClock())


def test_format_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    # An uncompressed capture named .gz and a gzipped one with no suffix.
    plain = write_lines(tmp_path / "looks-gzipped.gz", [SPOT_TRADE], compress=False)
    zipped = write_lines(tmp_path / "capture", [SPOT_TRADE], compress=True)
    assert sniff_recording(plain).format is ReplayFormat.HFTBACKTEST_BINANCE
    assert not sniff_recording(plain).compressed
    assert sniff_recording(zipped).compressed


# --- clock, duration, pacing ----------------------------------------------------------------


def trades_at(path: Path, offsets_ns: Sequence[int], start_ns: int = 10 * NS_PER_SECOND) -> Path:
    with JsonlWriter(path) as writer:
        for i, off in enumerate(offsets_ns):
            writer.write(Trade("BTC/USDT", start_ns + off, 100.0, 1.0, "buy", str(i)))
    return path


class FakeWall:
    """A wall clock that only moves when the replay sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 5_000 * NS_PER_SECOND
        self.sleeps: list[float] = []

    def now_ns(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * NS_PER_SECOND)


async def test_clock_is_at_each_events_receive_time_when_it_is_yielded() -> None:
    clock = ManualClock()
    feed = ReplayFeed([USDM], clock=clock)
    latest = 0
    async for ev in feed.events():
        latest = max(latest, ev.ts_ns)
        # Diffs held back for the snapshot are older than it; the clock never goes back.
        assert clock.now_ns() == latest
    assert clock.now_ns() == feed.stats.last_ts_ns


async def test_full_speed_never_sleeps(tmp_path: Path) -> None:
    path = trades_at(tmp_path / "t.jsonl", [0, NS_PER_SECOND, 60 * NS_PER_SECOND])
    wall = FakeWall()
    events = await collect(
        ReplayFeed([path], clock=ManualClock(), speed=0, wall_clock=wall, sleep=wall.sleep)
    )
    assert len(events) == 4
    assert wall.sleeps == []


async def test_paced_replay_sleeps_only_when_ahead_of_the_wall_clock(tmp_path: Path) -> None:
    ms = NS_PER_MS
    offsets = [0, ms // 10, ms // 2, 1_200_000, 1000 * ms, 3000 * ms]
    path = trades_at(tmp_path / "t.jsonl", offsets)
    wall = FakeWall()
    start = wall.now
    feed = ReplayFeed([path], clock=ManualClock(), speed=2, wall_clock=wall, sleep=wall.sleep)

    received = []
    async for ev in feed.events():
        received.append((ev, wall.now - start))

    # At 2x: 1.2 ms of data is 0.6 ms of wall time, not worth a sleep; 1 s of data is
    # 0.5 s; 3 s of data is 1.5 s, of which 0.5 s have passed.
    assert wall.sleeps == pytest.approx([0.5, 1.0])
    for ev, elapsed in received:
        if isinstance(ev, Trade):
            due = (ev.ts_ns - 10 * NS_PER_SECOND) / 2
            assert elapsed >= due - ms  # never early by a millisecond or more


async def test_unpaced_start_skips_ahead_then_paces(tmp_path: Path) -> None:
    # Events each second for 10 s; the first 6 s of data at full speed, then 2x.
    path = trades_at(tmp_path / "t.jsonl", [i * NS_PER_SECOND for i in range(10)])
    wall = FakeWall()
    start = wall.now
    feed = ReplayFeed(
        [path], clock=ManualClock(), speed=2, unpaced_s=6, wall_clock=wall, sleep=wall.sleep
    )
    arrivals = [
        (ev.ts_ns, (wall.now - start) / NS_PER_SECOND)
        async for ev in feed.events()
        if isinstance(ev, Trade)
    ]

    first = arrivals[0][0]
    skipped = [at for ts, at in arrivals if ts - first <= 6 * NS_PER_SECOND]
    paced = [at for ts, at in arrivals if ts - first > 6 * NS_PER_SECOND]
    assert skipped == [0.0] * 7  # 0 s .. 6 s of data: no waiting at all
    assert paced == pytest.approx([0.5, 1.0, 1.5])  # then a second of data per 0.5 s


async def test_a_negative_unpaced_time_is_refused(tmp_path: Path) -> None:
    path = trades_at(tmp_path / "t.jsonl", [0])
    with pytest.raises(UserError, match="unpaced"):
        ReplayFeed([path], clock=ManualClock(), speed=1, unpaced_s=-1)


async def test_sub_millisecond_gaps_are_batched_not_slept_one_by_one(tmp_path: Path) -> None:
    step = NS_PER_MS // 10  # 100 events, 0.1 ms apart: 9.9 ms of data
    path = trades_at(tmp_path / "t.jsonl", [i * step for i in range(100)])
    wall = FakeWall()
    await collect(
        ReplayFeed([path], clock=ManualClock(), speed=1, wall_clock=wall, sleep=wall.sleep)
    )
    assert 0 < len(wall.sleeps) <= 10
    assert min(wall.sleeps) >= 0.001
    # The tail (< 1 ms) is not slept: the last events may come up to 1 ms early.
    assert 0.0089 <= sum(wall.sleeps) <= 0.0099


async def test_a_slow_consumer_is_not_made_to_wait(tmp_path: Path) -> None:
    path = trades_at(tmp_path / "t.jsonl", [i * NS_PER_SECOND for i in range(5)])
    wall = FakeWall()
    async for _ in ReplayFeed(
        [path], clock=ManualClock(), speed=1, wall_clock=wall, sleep=wall.sleep
    ).events():
        wall.now += 2 * NS_PER_SECOND  # each event takes longer to handle than the gap
    assert wall.sleeps == []


async def test_duration_stops_after_that_much_data_time() -> None:
    feed = ReplayFeed(bundled_sample_paths(), clock=ManualClock(), duration_s=30)
    events = await collect(feed)
    stats = feed.stats
    assert stats.stopped_by_duration
    assert stats.first_ts_ns is not None
    assert stats.last_ts_ns is not None
    assert 29.5 < stats.span_s <= 30
    assert all(e.ts_ns <= stats.first_ts_ns + 30 * NS_PER_SECOND for e in events[:-1])
    end = events[-1]
    assert isinstance(end, FeedStatus)
    assert end.state is FeedState.ENDED
    assert end.detail == "duration reached"


# --- end to end with the order book -------------------------------------------------------


async def test_bundled_sample_rebuilds_a_gapless_book_matching_the_book_ticker() -> None:
    paths = bundled_sample_paths()
    # The recording's own best bid/ask stream, keyed by update id.
    tickers: list[BookTicker] = []
    for path in paths:
        for ev in iter_recording(
            sniff_recording(path), skipped=Counter(), malformed=Counter(), book_tickers=True
        ):
            if isinstance(ev, BookTicker):
                tickers.append(ev)
    ticker_ids = [t.update_id or 0 for t in tickers]
    assert ticker_ids == sorted(ticker_ids)

    clock = ManualClock()
    book = OrderBook("BTCUSDT", clock=clock)
    checked = matched = 0
    async for ev in ReplayFeed(paths, clock=clock).events():
        if not isinstance(ev, BookSnapshot | BookDelta):
            continue
        assert book.apply(ev) is None
        uid = book.update_id
        assert uid is not None
        # The last ticker at or before the book's update id shows the top at that id.
        i = bisect_right(ticker_ids, uid) - 1
        if i < 0:
            continue
        checked += 1
        t = tickers[i]
        matched += (book.best_bid(), book.best_ask()) == (t.bid, t.ask)

    assert book.gaps == 0
    assert sum(book.drops.values()) == 0
    assert checked > 6000
    assert matched / checked > 0.99


@pytest.mark.parametrize("compress", [True, False])
def test_lines_cut_by_the_read_chunks_are_whole_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: bool
) -> None:
    # Chunks far smaller than a line: every line spans several reads, and each read ends
    # inside one. The events must be those of the file's lines read all at once.
    monkeypatch.setattr(replay_module, "_READ_CHUNK", 97)
    data = gzip.decompress(USDM.read_bytes())
    path = tmp_path / ("capture.gz" if compress else "capture")
    path.write_bytes(gzip.compress(data) if compress else data)
    skipped: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    expected = list(
        iter_capture(
            data.split(b"\n"),
            skipped=Counter(),
            malformed=Counter(),
            default_symbol=sniff_recording(path).raw_symbol,
        )
    )

    got = list(iter_recording(sniff_recording(path), skipped=skipped, malformed=malformed))

    assert not malformed
    assert len(got) == len(expected) > 50
    assert all(same_event(a, b) for a, b in zip(got, expected, strict=True))  # type: ignore[arg-type]
