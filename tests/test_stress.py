"""Stress overlays on the bundled real recording: each scenario changes the book exactly as
documented, the stressed stream stays valid for the order book, and runs are reproducible."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.book import BookState, OrderBook, Side
from bot.clock import NS_PER_SECOND, ManualClock
from bot.engine import Engine, Market
from bot.errors import UserError
from bot.feeds.events import (
    BookDelta,
    BookSnapshot,
    FeedState,
    FeedStatus,
    Levels,
    MarketEvent,
    Trade,
)
from bot.feeds.replay import ReplayFeed, ReplayStats, bundled_sample_paths
from bot.feeds.stress import (
    STRESS_SCENARIOS,
    FeedStall,
    Fracture,
    SpreadBlowout,
    StressedFeed,
    StressSpec,
    WallPull,
    format_spec,
    format_stress_list,
    parse_stress_spec,
    resolve,
    spec_params,
)
from bot.feeds.stress.scale import BookScaler, Shape
from bot.logs import Logger
from bot.monitor import DepthMonitor
from bot.settings import MarketSettings
from bot.summary import stats_dict

SYM = "BTCUSDT"  # the bundled sample's raw id (no symbol map in these tests)
ALL = 1_000_000  # "every level" for OrderBook.top


# ---------------------------------------------------------------------- harness


@dataclass
class Run:
    """A stressed replay: the true book (fed the recording) next to the stressed one."""

    true: OrderBook
    out: OrderBook
    feed: StressedFeed
    events: list[MarketEvent] = field(default_factory=list)
    t0: int | None = None
    now: int = 0

    @property
    def t_s(self) -> float:
        assert self.t0 is not None
        return (self.now - self.t0) / NS_PER_SECOND


class _Tee:
    """The replay, applying each depth event to ``run.true`` before the overlay sees it."""

    def __init__(self, replay: ReplayFeed) -> None:
        self.replay = replay
        self.stats = replay.stats
        self.run: Run | None = None

    async def events(self) -> AsyncIterator[MarketEvent]:
        run = self.run
        assert run is not None
        async for ev in self.replay.events():
            if run.t0 is None:
                run.t0 = ev.ts_ns
            run.now = max(run.now, ev.ts_ns)
            if isinstance(ev, BookSnapshot | BookDelta):
                run.true.apply(ev)
            yield ev


async def drive(
    spec: StressSpec | str,
    duration_s: float,
    on_depth: Callable[[Run, MarketEvent], None] | None = None,
    *,
    symbol: str | None = None,
) -> Run:
    if isinstance(spec, str):
        spec = parse_stress_spec(spec)
    clock = ManualClock()
    tee = _Tee(ReplayFeed(bundled_sample_paths(), clock=clock, duration_s=duration_s))
    feed = StressedFeed(tee, spec, symbol=symbol)
    run = Run(OrderBook(SYM, clock=ManualClock()), OrderBook(SYM, clock=ManualClock()), feed)
    tee.run = run
    async for ev in feed.events():
        run.events.append(ev)
        if isinstance(ev, BookSnapshot | BookDelta):
            run.out.apply(ev)
            if on_depth is not None:
                on_depth(run, ev)
    return run


def no_drops(book: OrderBook) -> dict[str, int]:
    return {d.value: n for d, n in book.drops.items() if n}


def books_equal(a: OrderBook, b: OrderBook) -> bool:
    return all(np.array_equal(a.top(ALL, s), b.top(ALL, s)) for s in (Side.BID, Side.ASK))


def intensity(t: float, start: float, ramp: float, hold: float, recover: float) -> float:
    """The documented profile: 0 -> 1 over ramp, 1 for hold, 1 -> 0 over recover."""
    x = t - start
    if x < 0:
        return 0.0
    if x < ramp:
        return x / ramp
    x -= ramp
    if x < hold:
        return 1.0
    x -= hold
    if x < recover:
        return 1.0 - x / recover
    return 0.0


def expected_side(true: OrderBook, side: Side, width_bps: float, fraction: float) -> Levels:
    """True levels with ``1 - fraction`` of the size within ``width_bps`` of the true mid."""
    rows = true.top(ALL, side)
    mid = true.mid()
    assert mid is not None
    dist = np.abs(rows[:, 0] - mid) / mid * 1e4
    factor = np.where(dist <= width_bps, 1.0 - fraction, 1.0) if width_bps > 0 else 1.0
    rows[:, 1] *= factor
    return rows[rows[:, 1] > 0]


def assert_side_matches(run: Run, side: Side, width_bps: float, fraction: float) -> None:
    want = expected_side(run.true, side, width_bps, fraction)
    got = run.out.top(ALL, side)
    assert got.shape == want.shape
    assert np.array_equal(got[:, 0], want[:, 0])
    np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-12, atol=0)


def digest(events: list[MarketEvent]) -> str:
    h = hashlib.sha256()
    for ev in events:
        for f in dataclasses.fields(ev):
            v = getattr(ev, f.name)
            h.update(v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- specs


def test_names_alone_give_the_documented_defaults() -> None:
    assert parse_stress_spec("fracture") == Fracture()
    assert parse_stress_spec("wall-pull") == WallPull()
    assert parse_stress_spec(" Spread_Blowout ") == SpreadBlowout()
    assert parse_stress_spec("feed-stall:") == FeedStall()
    f = Fracture()
    assert (f.fraction, f.band_bps, f.side) == (0.9, 25.0, "both")
    assert (f.start_s, f.ramp_s, f.hold_s, f.recover_s) == (240.0, 3.0, 30.0, 60.0)


def test_parameters_are_parsed_typed_and_round_trip_through_format_spec() -> None:
    spec = parse_stress_spec("fracture: fraction=0.5, side=BID, start_s=12, seed=7, jitter=0.2")
    assert spec == Fracture(fraction=0.5, side="bid", start_s=12.0, seed=7, jitter=0.2)
    assert format_spec(spec) == "fracture:fraction=0.5,side=bid,start_s=12,seed=7,jitter=0.2"
    stall = parse_stress_spec("feed-stall:announce=false,stall_s=2.5")
    assert stall == FeedStall(announce=False, stall_s=2.5)
    for s in (spec, stall, WallPull(side="bid", gap_bps=7.25), SpreadBlowout(), Fracture()):
        assert parse_stress_spec(format_spec(s)) == s


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("crash", ["unknown stress scenario 'crash'", "fracture", "wall-pull", "feed-stall"]),
        ("fracture:depth=0.5", ["unknown parameter 'depth'", "fraction", "band_bps", "recover_s"]),
        ("fracture:fraction=lots", ["fraction must be a number in [0, 1]", "'lots'"]),
        ("fracture:fraction=1.5", ["fraction must be a number in [0, 1]", "1.5"]),
        ("fracture:band_bps=0", ["band_bps must be a number > 0"]),
        ("fracture:hold_s=-1", ["hold_s must be a number >= 0"]),
        ("fracture:hold_s=nan", ["hold_s must be a number"]),
        ("fracture:side=up", ["side must be one of both, bid, ask", "'up'"]),
        ("wall-pull:side=both", ["side must be one of bid, ask"]),
        ("feed-stall:stall_s=0", ["stall_s must be a number > 0"]),
        ("feed-stall:announce=maybe", ["announce must be true or false"]),
        ("fracture:seed=1.5", ["seed must be an integer"]),
        ("fracture:fraction=0.5,fraction=0.6", ["'fraction' given twice"]),
        ("fracture:fraction", ["expected key=value", "'fraction'"]),
        ("fracture:jitter=2", ["jitter must be a number in [0, 1]"]),
    ],
)
def test_bad_specs_are_user_errors_that_say_what_is_valid(text: str, fragments: list[str]) -> None:
    with pytest.raises(UserError) as exc:
        parse_stress_spec(text)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_building_a_spec_in_code_is_validated_too() -> None:
    with pytest.raises(UserError, match="fraction"):
        Fracture(fraction=-0.1)
    with pytest.raises(UserError, match="side"):
        WallPull(side="both")  # type: ignore[arg-type]


def test_the_list_names_every_scenario_parameter_and_default() -> None:
    text = format_stress_list()
    for name, cls in STRESS_SCENARIOS.items():
        assert f"{name}: {cls.summary}" in text
        for p in spec_params(cls):
            assert f"    {p.name}=" in text
    assert "fraction=0.9  " in text
    assert "announce=true  " in text


def test_jitter_is_seeded_bounded_and_off_by_default() -> None:
    assert resolve(Fracture(seed=5)) == Fracture(seed=5)  # no jitter: seed is irrelevant
    a = resolve(Fracture(seed=1, jitter=0.5))
    assert a == resolve(Fracture(seed=1, jitter=0.5))
    assert a != resolve(Fracture(seed=2, jitter=0.5))
    assert a.jitter == 0.0
    assert a.side == "both"  # only numbers are jittered
    assert 120.0 <= a.start_s <= 360.0
    for seed in range(50):
        r = resolve(Fracture(seed=seed, jitter=1.0))
        assert isinstance(r, Fracture)
        assert 0.0 <= r.fraction <= 1.0
        assert r.band_bps > 0


# ---------------------------------------------------------------------- scenarios on real data


async def test_fracture_scales_the_band_exactly_along_the_documented_profile() -> None:
    start, ramp, hold, recover, band, frac = 8.0, 2.0, 5.0, 6.0, 25.0, 0.9
    spec = Fracture(start_s=start, ramp_s=ramp, hold_s=hold, recover_s=recover)
    seen: dict[str, float] = {}

    def check(run: Run, ev: MarketEvent) -> None:
        t = run.t_s
        s = intensity(t, start, ramp, hold, recover)
        for side in (Side.BID, Side.ASK):
            assert_side_matches(run, side, band if s > 0 else 0.0, frac * s)
        ratio = run.out.depth_within(20, Side.BID).base / run.true.depth_within(20, Side.BID).base
        if start + ramp + 1 <= t < start + ramp + hold and "hold" not in seen:
            seen["hold"] = ratio
        if t >= start + ramp + hold + recover / 2 and "half" not in seen:
            seen["half"] = ratio
        if t < start:
            seen["before"] = ratio

    run = await drive(spec, 30.0, check)
    assert seen["before"] == 1.0
    assert seen["hold"] == pytest.approx(1 - frac, rel=1e-9)
    assert seen["half"] == pytest.approx(1 - frac / 2, abs=0.03)  # half-way back
    assert books_equal(run.out, run.true)  # whole again, exactly
    assert no_drops(run.out) == {}
    assert run.out.state is BookState.VALID
    stress = run.feed.stats.stress
    assert stress.reached_start
    assert stress.reached_end
    assert stress.events_rewritten > 0
    assert stress.rows_added > 0


async def test_one_sided_fracture_leaves_the_other_side_as_recorded() -> None:
    def check(run: Run, ev: MarketEvent) -> None:
        assert np.array_equal(run.out.top(ALL, Side.ASK), run.true.top(ALL, Side.ASK))

    run = await drive("fracture:side=bid,start_s=3,ramp_s=0,hold_s=5,recover_s=2", 12.0, check)
    assert no_drops(run.out) == {}
    # Trades are left exactly as recorded.
    recorded = run.feed.stats.feed
    assert isinstance(recorded, ReplayStats)
    assert sum(isinstance(e, Trade) for e in run.events) == recorded.events["trade"]


async def test_wall_pull_opens_a_price_gap_on_one_side_then_refills_it() -> None:
    start, hold, recover, gap = 5.0, 4.0, 6.0, 20.0
    gaps_seen: list[tuple[float, float]] = []

    def check(run: Run, ev: MarketEvent) -> None:
        t = run.t_s
        s = intensity(t, start, 0.0, hold, recover)
        assert_side_matches(run, Side.ASK, gap * s, 1.0 if s > 0 else 0.0)
        assert np.array_equal(run.out.top(ALL, Side.BID), run.true.top(ALL, Side.BID))
        mid, ask = run.true.mid(), run.out.best_ask()
        assert mid is not None
        assert ask is not None
        gaps_seen.append((t, (ask - mid) / mid * 1e4))

    run = await drive(WallPull(start_s=start, hold_s=hold, recover_s=recover), 20.0, check)
    during = [g for t, g in gaps_seen if start <= t < start + hold]
    refill = [g for t, g in gaps_seen if start + hold + 2 <= t < start + hold + 4]
    after = [g for t, g in gaps_seen if t >= start + hold + recover]
    assert during
    assert min(during) > gap  # nothing left for sale within the gap
    assert refill
    assert all(0.2 * gap < g < 0.8 * gap for g in refill)  # closing from the outside in
    assert max(after) < 1.0  # back to the recorded ~0.01 bps spread
    assert books_equal(run.out, run.true)
    assert no_drops(run.out) == {}


async def test_spread_blowout_widens_both_sides_then_narrows_back() -> None:
    start, hold, recover, bps = 4.0, 3.0, 3.0, 30.0
    spreads: list[tuple[float, float]] = []

    def check(run: Run, ev: MarketEvent) -> None:
        s = intensity(run.t_s, start, 0.0, hold, recover)
        for side in (Side.BID, Side.ASK):
            assert_side_matches(run, side, bps * s, 1.0 if s > 0 else 0.0)
        spread = run.out.spread_bps()
        assert spread is not None
        spreads.append((run.t_s, spread))

    spec = SpreadBlowout(start_s=start, hold_s=hold, recover_s=recover)
    run = await drive(spec, 14.0, check)
    during = [sp for t, sp in spreads if start <= t < start + hold]
    assert during
    assert min(during) > 2 * bps  # past the default max_spread_bps of 50
    assert max(sp for t, sp in spreads if t < start) < 1.0
    assert books_equal(run.out, run.true)
    assert no_drops(run.out) == {}


async def test_feed_stall_withholds_everything_then_resyncs_with_a_true_snapshot() -> None:
    start, stall = 4.0, 3.0
    run = await drive(FeedStall(start_s=start, stall_s=stall), 12.0)
    assert run.t0 is not None
    t0 = run.t0
    lo, hi = t0 + int(start * NS_PER_SECOND), t0 + int((start + stall) * NS_PER_SECOND)
    # Nothing at all is delivered inside the window.
    assert not [e for e in run.events if lo <= e.ts_ns < hi and not isinstance(e, BookDelta)]
    assert not [e for e in run.events if lo <= e.ts_ns < hi and isinstance(e, BookDelta)]
    # The first thing after it is a resync, the way a live feed announces one.
    i = next(i for i, e in enumerate(run.events) if e.ts_ns >= hi)
    resync = run.events[i : i + 3]
    assert [type(e) for e in resync] == [FeedStatus, FeedStatus, BookSnapshot]
    assert [e.state for e in resync[:2]] == [FeedState.RESYNCING, FeedState.CONNECTED]  # type: ignore[union-attr]
    assert run.events[i - 1].ts_ns < lo  # silence between the two
    stats = run.feed.stats.stress
    assert stats.withheld["delta"] > 0
    assert stats.withheld["trade"] > 0
    assert stats.resync_snapshots == 1
    # The stream continues from the snapshot with no gap, and ends on the true book.
    assert no_drops(run.out) == {}
    assert run.out.snapshots_applied == 2
    assert books_equal(run.out, run.true)
    assert isinstance(run.events[-1], FeedStatus)
    assert run.events[-1].state is FeedState.ENDED


async def test_feed_stall_without_announce_resumes_with_the_snapshot_alone() -> None:
    run = await drive("feed-stall:start_s=2,stall_s=1,announce=false", 5.0)
    assert not any(isinstance(e, FeedStatus) and e.state is not FeedState.ENDED for e in run.events)
    assert sum(isinstance(e, BookSnapshot) for e in run.events) == 2
    assert no_drops(run.out) == {}
    assert books_equal(run.out, run.true)


async def test_a_scenario_that_starts_after_the_data_leaves_the_stream_untouched() -> None:
    clock = ManualClock()
    plain = [
        e async for e in ReplayFeed(bundled_sample_paths(), clock=clock, duration_s=5).events()
    ]
    run = await drive("fracture:start_s=100", 5.0)
    assert digest(run.events) == digest(plain)
    assert not run.feed.stats.stress.reached_start
    run = await drive("fracture:start_s=1", 5.0, symbol="ETHUSDT")  # another market
    assert digest(run.events) == digest(plain)


async def test_same_spec_same_stream_and_a_different_seed_a_different_one() -> None:
    a = await drive("fracture:start_s=4,ramp_s=1,hold_s=2,recover_s=2,jitter=0.5,seed=3", 10.0)
    b = await drive("fracture:start_s=4,ramp_s=1,hold_s=2,recover_s=2,jitter=0.5,seed=3", 10.0)
    c = await drive("fracture:start_s=4,ramp_s=1,hold_s=2,recover_s=2,jitter=0.5,seed=4", 10.0)
    assert digest(a.events) == digest(b.events)
    assert digest(a.events) != digest(c.events)
    assert a.feed.stats.stress.resolved != c.feed.stats.stress.resolved
    assert a.feed.stats.stress.resolved["start_s"] != 4.0  # the jitter was applied


async def test_default_fracture_trips_the_default_detector_thresholds_on_the_sample() -> None:
    """The numbers the default MarketSettings act on, measured on the stressed sample:
    quote depth within the first band below baseline_fraction x its 60 s baseline for
    engage_dwell_s (and never before the scenario), then above recovery_fraction x that
    baseline for disengage_dwell_s once the book has healed."""
    cfg = MarketSettings(symbol="BTC/USDT")
    spec = Fracture()
    band = cfg.bands_bps[0]
    ts: list[float] = []
    depth: list[tuple[float, float]] = []

    def sample(run: Run, ev: MarketEvent) -> None:
        ts.append(run.t_s)
        depth.append(
            (run.out.depth_within(band, Side.BID).quote, run.out.depth_within(band, Side.ASK).quote)
        )

    end = spec.start_s + spec.ramp_s + spec.hold_s + spec.recover_s
    run = await drive(spec, end + 30.0, sample)
    assert no_drops(run.out) == {}
    t = np.array(ts)
    for side in (0, 1):
        d = np.array([x[side] for x in depth])

        def baseline(i: int, d: np.ndarray = d) -> float:
            j = int(np.searchsorted(t, t[i] - cfg.baseline_window_s))
            return float(np.median(d[j : i + 1]))

        below = np.array([d[i] < cfg.baseline_fraction * baseline(i) for i in range(len(t))])
        runs = _runs(t, below, cfg.engage_dwell_s)
        assert runs, "the default fracture never held below the default threshold"
        first = runs[0]
        assert spec.start_s <= first < spec.start_s + spec.ramp_s + 1.0
        assert all(spec.start_s <= r < end for r in runs)  # no false alarm on calm data
        i_engage = int(np.searchsorted(t, first + cfg.engage_dwell_s))
        frozen = baseline(int(np.searchsorted(t, spec.start_s)))
        healed = (d > cfg.recovery_fraction * frozen) & (t > t[i_engage])
        assert _runs(t, healed, cfg.disengage_dwell_s), "depth never recovered"


def _runs(t: np.ndarray, flag: np.ndarray, dwell_s: float) -> list[float]:
    """Start times of stretches where ``flag`` holds for at least ``dwell_s``."""
    out, begin = [], None
    for ti, f in zip(t.tolist(), flag.tolist(), strict=True):
        if f and begin is None:
            begin = ti
        elif not f and begin is not None:
            if ti - begin >= dwell_s:
                out.append(begin)
            begin = None
    if begin is not None and t[-1] - begin >= dwell_s:
        out.append(begin)
    return out


async def test_the_engine_takes_a_stressed_feed_and_reports_its_stats(log: Logger) -> None:
    clock = ManualClock()
    replay = ReplayFeed(bundled_sample_paths(), clock=clock, duration_s=8)
    feed = StressedFeed(
        replay, parse_stress_spec("fracture:start_s=2,ramp_s=1,hold_s=2,recover_s=2")
    )
    book = OrderBook(SYM, clock=clock)
    market = Market(SYM, book, DepthMonitor.for_bands([10.0], 50_000.0))
    engine = Engine(feed=feed, markets={SYM: market}, log=log)
    await engine.run()
    assert engine.ended
    assert no_drops(book) == {}
    low = market.monitor.lows[(Side.BID, 10.0)]
    assert low.ts_ns is not None
    assert replay.stats.first_ts_ns is not None
    assert 2.0 <= (low.ts_ns - replay.stats.first_ts_ns) / NS_PER_SECOND < 7.0
    exported = stats_dict(feed.stats)
    assert exported["events"]["delta"] > 0  # the replay's own stats, unchanged
    assert exported["stress"]["spec"] == "fracture:start_s=2,ramp_s=1,hold_s=2,recover_s=2"
    assert exported["stress"]["reached_end"] is True
    assert isinstance(feed.stats.feed, ReplayStats)
    assert feed.stats.malformed == replay.stats.malformed


# ---------------------------------------------------------------------- the scaler, property


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 40))
@example(seed=159239, steps=13)
def test_scaled_book_is_always_the_true_book_times_the_factor(seed: int, steps: int) -> None:
    """Random books, deltas that move the mid and remove/add levels, and a shape that
    changes at every step: the downstream book always equals the true book scaled, and
    never drops an update."""
    rng = np.random.default_rng(seed)
    scaler = BookScaler("X")
    out = OrderBook("X", clock=ManualClock())
    mid = 100.0
    ticks = np.arange(1, 150)
    bids = np.column_stack((mid - ticks * 0.01, rng.uniform(0.1, 5, ticks.size)))
    asks = np.column_stack((mid + ticks * 0.01, rng.uniform(0.1, 5, ticks.size)))
    uid = 1000

    def shapes() -> tuple[Shape, Shape]:
        def one() -> Shape:
            if rng.random() < 0.25:
                return Shape()
            return Shape(float(rng.uniform(0, 120)), float(rng.choice([1.0, rng.uniform(0, 1)])))

        return one(), one()

    b, a = shapes()
    snap = BookSnapshot("X", 0, bids, asks, update_id=uid)
    assert out.apply(scaler.process(snap, b, a)) is None
    for step in range(steps + 1):
        true = scaler.true_book
        tb, ta = true.best_bid(), true.best_ask()
        assert tb is not None
        assert ta is not None
        # A new touch price on one side, removing whatever of the other side it crosses
        # (unless that would empty the other side), plus random size changes elsewhere.
        pb, pa = true.top(ALL, Side.BID)[:, 0], true.top(ALL, Side.ASK)[:, 0]
        move = round(float(rng.integers(-20, 21)) * 0.01, 2)
        rows_b: list[list[float]] = []
        rows_a: list[list[float]] = []
        if move > 0 and (pa > tb + move).any():
            new_bid = tb + move
            rows_a = [[float(p), 0.0] for p in pa[pa <= new_bid]]
            rows_b.append([new_bid, float(rng.uniform(0.1, 3))])
            pa = pa[pa > new_bid]
        elif move < 0 and (pb < ta + move).any():
            new_ask = ta + move
            rows_b = [[float(p), 0.0] for p in pb[pb >= new_ask]]
            rows_a.append([new_ask, float(rng.uniform(0.1, 3))])
            pb = pb[pb < new_ask]
        for rows, px in ((rows_b, pb), (rows_a, pa)):
            for p in rng.choice(px, size=min(8, px.size - 1), replace=False):
                rows.append([float(p), float(rng.choice([0.0, rng.uniform(0.01, 4)]))])
        last = uid + 3
        delta = BookDelta(
            "X",
            step + 1,
            np.array(rows_b, dtype=np.float64).reshape(-1, 2),
            np.array(rows_a, dtype=np.float64).reshape(-1, 2),
            first_id=uid + 1,
            last_id=last,
        )
        uid = last
        b, a = shapes() if step < steps else (Shape(), Shape())  # last step: all restored
        emitted = scaler.process(delta, b, a)
        assert out.apply(emitted) is None
        assert true.state is BookState.VALID
        for side, shape in ((Side.BID, b), (Side.ASK, a)):
            want = expected_side(
                true, side, shape.width_bps if shape.active else 0.0, shape.fraction
            )
            got = out.top(ALL, side)
            assert np.array_equal(got[:, 0], want[:, 0])
            np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-12, atol=0)
    assert books_equal(out, scaler.true_book)
    assert scaler.scaled_levels == 0
    assert no_drops(out) == {}
