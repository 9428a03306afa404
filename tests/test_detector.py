"""The fracture detector: each rule, warm-up, baseline freezing, dwell and hysteresis,
volatility, and a replay of the bundled (calm) real recording."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.book import OrderBook, Side
from bot.clock import ManualClock
from bot.detect.machine import TRANSITIONS, Cause
from bot.detect.volatility import Volatility
from bot.detector import (
    DetectorConfig,
    DetectorListener,
    DetectorState,
    DetectorUpdate,
    FractureDetector,
    Rule,
)
from bot.engine import Engine, Market
from bot.errors import ConfigError
from bot.feeds.events import Trade
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.logs import Logger
from bot.monitor import DepthMonitor, DepthSample
from bot.settings import MarketSettings

NS = 1_000_000_000
MS = 1_000_000
CALM, ARMING, ENGAGED, RECOVERING = (
    DetectorState.CALM,
    DetectorState.ARMING,
    DetectorState.ENGAGED,
    DetectorState.RECOVERING,
)


def sample(
    t_ms: int, bid: float, ask: float | None = None, *, spread_bps: float = 1.0, mid: float = 100.0
) -> DepthSample:
    """A one-band sample at ``t_ms`` with ``bid``/``ask`` quote depth in the band."""
    ask = bid if ask is None else ask
    depth = np.array([[[bid / mid, bid]], [[ask / mid, ask]]], dtype=np.float64)
    half = mid * spread_bps / 2e4
    return DepthSample(
        ts_ns=t_ms * MS,
        best_bid=mid - half,
        best_ask=mid + half,
        mid=mid,
        spread_bps=spread_bps,
        bands_bps=(10.0,),
        depth=depth,
        buy_slippage_bps=None,
        sell_slippage_bps=None,
    )


def config(**kw: object) -> DetectorConfig:
    base: dict[str, object] = {
        "baseline_window_s": 60.0,
        "warmup_s": 60.0,
        "engage_dwell_s": 1.0,
        "disengage_dwell_s": 10.0,
    }
    base.update(kw)
    return DetectorConfig(**base)  # type: ignore[arg-type]


def feed(
    det: FractureDetector,
    start_ms: int,
    end_ms: int,
    bid: float,
    ask: float | None = None,
    *,
    step_ms: int = 100,
    spread_bps: float = 1.0,
) -> list[DetectorUpdate]:
    """Samples every ``step_ms`` from ``start_ms`` up to and including ``end_ms``."""
    return [
        det.update(sample(t, bid, ask, spread_bps=spread_bps))
        for t in range(start_ms, end_ms + 1, step_ms)
    ]


def warm(det: FractureDetector, depth: float = 1000.0, until_ms: int = 60_000) -> DetectorUpdate:
    updates = feed(det, 0, until_ms, depth)
    assert updates[-1].baseline_ready
    assert updates[-1].state is CALM
    return updates[-1]


def transitions(updates: Iterable[DetectorUpdate]) -> list[tuple[DetectorState, DetectorState]]:
    return [(u.transition.from_state, u.transition.to_state) for u in updates if u.transition]


def first(updates: Sequence[DetectorUpdate], state: DetectorState) -> DetectorUpdate:
    return next(u for u in updates if u.state is state)


# ---------------------------------------------------------------------------- config


def test_config_from_market_settings_carries_the_rules_and_dwells() -> None:
    market = MarketSettings(
        symbol="BTC/USDT",
        bands_bps=[5, 25],
        depth_floor_quote=10_000,
        baseline_fraction=0.4,
        baseline_window_s=30,
        max_depth_drop_per_s=0.5,
        max_spread_bps=20,
        engage_dwell_s=2,
        recovery_fraction=0.7,
        disengage_dwell_s=15,
    )
    cfg = DetectorConfig.from_market(market)
    assert (cfg.band_index, cfg.band_bps) == (0, 5.0)
    assert (cfg.depth_floor_quote, cfg.baseline_fraction, cfg.max_spread_bps) == (10_000, 0.4, 20)
    assert (cfg.baseline_window_s, cfg.warmup_s, cfg.max_depth_drop_per_s) == (30, 30, 0.5)
    assert (cfg.engage_dwell_s, cfg.recovery_fraction, cfg.disengage_dwell_s) == (2, 0.7, 15)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"baseline_fraction": 0.7, "recovery_fraction": 0.6}, "recovery_fraction must be >="),
        ({"baseline_window_s": 0.0}, "baseline_window_s must be > 0"),
        ({"engage_dwell_s": -1.0}, "engage_dwell_s must be >= 0"),
        ({"vol_trade_weight": 1.5}, "vol_trade_weight"),
        ({"max_spread_bps": math.nan}, "max_spread_bps is NaN"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**kw)


def test_transition_table_is_the_documented_one() -> None:
    assert TRANSITIONS == {
        (CALM, Cause.FRACTURED): ARMING,
        (ARMING, Cause.CLEARED): CALM,
        (ARMING, Cause.ENGAGE_DWELL): ENGAGED,
        (ENGAGED, Cause.RECOVERED): RECOVERING,
        (RECOVERING, Cause.RELAPSED): ENGAGED,
        (RECOVERING, Cause.DISENGAGE_DWELL): CALM,
    }


# ---------------------------------------------------------------------------- rules


def test_floor_rule_fires_from_the_first_sample_with_its_numbers() -> None:
    det = FractureDetector(config(depth_floor_quote=500.0))
    assert det.update(sample(0, 800, 900)).trigger is None
    u = det.update(sample(100, 800, 450))
    assert u.state is ARMING
    assert u.trigger is not None
    assert (u.trigger.rule, u.trigger.side) == (Rule.FLOOR, Side.ASK)
    assert (u.trigger.value, u.trigger.threshold, u.trigger.ts_ns) == (450, 500, 100 * MS)
    assert u.trigger.baseline == pytest.approx(900)  # the 0-100 ms interval, held at 900


def test_baseline_rule_fires_below_the_fraction_of_baseline_with_its_numbers() -> None:
    det = FractureDetector(config())
    warm(det)
    assert det.update(sample(60_100, 310, 1000)).trigger is None  # 0.31 of baseline: fine
    det = FractureDetector(config())
    warm(det)
    u = det.update(sample(60_100, 250, 1000))
    assert u.trigger is not None
    assert (u.trigger.rule, u.trigger.side) == (Rule.BASELINE, Side.BID)
    assert u.trigger.value == 250
    assert u.trigger.threshold == pytest.approx(300)
    assert u.trigger.baseline == pytest.approx(1000)
    assert u.trigger.ts_ns == 60_100 * MS
    assert u.ratio[0] == pytest.approx(0.25)
    assert u.state is ARMING


def test_no_baseline_trigger_during_warm_up_but_the_floor_still_works() -> None:
    det = FractureDetector(config(depth_floor_quote=50.0))
    feed(det, 0, 30_000, 1000)
    updates = feed(det, 30_100, 35_000, 100)  # 10% of baseline, half-way through warm-up
    assert all(not u.baseline_ready and u.trigger is None and u.state is CALM for u in updates)
    u = det.update(sample(35_100, 40))
    assert u.trigger is not None
    assert u.trigger.rule is Rule.FLOOR


def test_drop_rate_rule_measures_the_fall_over_the_lookback() -> None:
    # Samples every 125 ms = lookback / 8, so the reference is exactly 1 s old.
    det = FractureDetector(config(max_depth_drop_per_s=0.5, baseline_fraction=0.3))
    feed(det, 0, 60_000, 1000, step_ms=125)
    u = det.update(sample(60_125, 400))  # -60% of baseline in 1 s; still above 0.3
    assert u.trigger is not None
    assert (u.trigger.rule, u.trigger.side) == (Rule.DROP_RATE, Side.BID)
    assert u.trigger.value == pytest.approx(0.6)
    assert (u.trigger.threshold, u.trigger.depth) == (0.5, 400)
    assert u.trigger.baseline == pytest.approx(1000)


def test_drop_rate_keeps_holding_while_depth_stays_below_the_recovery_level() -> None:
    det = FractureDetector(config(max_depth_drop_per_s=0.5))
    warm(det)
    updates = feed(det, 60_100, 62_000, 400)  # fell fast to 0.4: between 0.3 and 0.6
    engaged = first(updates, ENGAGED)
    assert engaged.ts_ns == 61_100 * MS  # after the 1 s dwell, long after the fall ended
    assert engaged.episode_trigger is not None
    assert engaged.episode_trigger.rule is Rule.DROP_RATE
    assert engaged.episode_trigger.ts_ns == 60_100 * MS


def test_a_fast_fall_that_stops_at_a_healthy_level_does_not_arm() -> None:
    det = FractureDetector(config(max_depth_drop_per_s=0.2))
    warm(det)
    updates = feed(det, 60_100, 65_000, 700)  # -30% in 0.1 s, but 0.7 >= recovery 0.6
    assert all(u.state is CALM and u.trigger is None for u in updates)


def test_drop_rate_rule_is_off_when_zero() -> None:
    det = FractureDetector(config(max_depth_drop_per_s=0.0))
    warm(det)
    assert all(u.state is CALM for u in feed(det, 60_100, 65_000, 400))


def test_spread_rule_fires_on_a_wide_spread_with_its_numbers() -> None:
    det = FractureDetector(config(max_spread_bps=50.0))
    det.update(sample(0, 1000, spread_bps=49.0))
    u = det.update(sample(100, 1000, spread_bps=60.0))
    assert u.trigger is not None
    assert (u.trigger.rule, u.trigger.side, u.trigger.value, u.trigger.threshold) == (
        Rule.SPREAD,
        None,
        60.0,
        50.0,
    )


def test_rules_that_are_off_never_fire() -> None:
    det = FractureDetector(config(baseline_fraction=None, max_spread_bps=None))
    warm(det)
    updates = feed(det, 60_100, 70_000, 1.0, spread_bps=500.0)
    assert all(u.state is CALM and u.trigger is None for u in updates)


def test_own_quotes_are_not_counted_as_market_depth() -> None:
    det = FractureDetector(config())
    warm(det)
    u = det.update(sample(60_100, 1000, 1000), own_quote=(800.0, 0.0))
    assert u.depth == (200.0, 1000.0)
    assert u.trigger is not None
    assert u.trigger.side is Side.BID


# ---------------------------------------------------------------------------- baseline


def test_baseline_is_frozen_while_arming_and_barely_moves_while_engaged() -> None:
    det = FractureDetector(config())
    warm(det)
    updates = feed(det, 60_100, 90_000, 200)  # collapse to 20%, held 30 s
    arming = [u for u in updates if u.state is ARMING]
    assert arming
    assert all(u.baseline[0] == pytest.approx(1000) for u in arming)
    last = updates[-1]
    assert last.state is ENGAGED
    # 20x slower while engaged: 29 s engaged moves it by under 5% of the 800 gap (a
    # plain 60 s EWMA would have lost 1 - exp(-29 / 60) ~ 38% of it).
    assert 1000 - 0.05 * 800 < last.baseline[0] < 1000  # type: ignore[operator]
    assert last.ratio[0] is not None
    assert last.ratio[0] < 0.21


def test_frozen_baseline_option_does_not_move_at_all_while_engaged() -> None:
    det = FractureDetector(config(engaged_baseline_slowdown=math.inf))
    warm(det)
    last = feed(det, 60_100, 120_000, 200)[-1]
    assert last.state is ENGAGED
    assert last.baseline[0] == pytest.approx(1000)


def test_a_feed_stall_does_not_hand_the_baseline_to_the_last_value() -> None:
    det = FractureDetector(config())
    warm(det)
    det.update(sample(60_100, 400))
    u = det.update(sample(360_100, 400))  # five minutes later
    # Only max_baseline_step_s (1 s) of the stall counts: 1 s of 400, folded into a
    # bias-corrected average that has seen 60.1 s of 1000 (weight 1 - e^(-60.1/60)).
    w, k = 1 - math.exp(-60.1 / 60), math.exp(-1 / 60)
    assert u.baseline[0] == pytest.approx((k * w * 1000 + (1 - k) * 400) / (k * w + 1 - k))
    assert u.baseline[0] is not None
    assert u.baseline[0] > 980  # uncapped, five minutes of 400 would leave ~404


# ---------------------------------------------------------------------------- dwell


def test_a_dip_shorter_than_the_engage_dwell_does_not_engage() -> None:
    det = FractureDetector(config())
    warm(det)
    dip = feed(det, 60_100, 60_900, 100)  # 0.9 s < 1 s
    after = feed(det, 61_000, 70_000, 1000)
    assert transitions(dip + after) == [(CALM, ARMING), (ARMING, CALM)]
    assert all(not u.active for u in dip + after)


def test_a_dip_that_lasts_the_engage_dwell_engages_at_the_right_update() -> None:
    det = FractureDetector(config())
    warm(det)
    updates = feed(det, 60_100, 62_000, 100)
    engaged = first(updates, ENGAGED)
    assert engaged.ts_ns == 61_100 * MS
    assert engaged.transition is not None
    assert engaged.transition.engaged
    assert engaged.engaged_since_ns == 61_100 * MS
    assert engaged.episode_trigger is not None
    assert engaged.episode_trigger.ts_ns == 60_100 * MS  # the rule that began arming
    assert engaged.episode_trigger.rule is Rule.BASELINE


def test_zero_engage_dwell_engages_on_the_first_fractured_update() -> None:
    det = FractureDetector(config(engage_dwell_s=0.0))
    warm(det)
    u = det.update(sample(60_100, 100))
    assert u.state is ENGAGED
    assert u.transition is not None
    assert (u.transition.from_state, u.transition.causes) == (
        CALM,
        (Cause.FRACTURED, Cause.ENGAGE_DWELL),
    )


def engaged_detector(**kw: object) -> FractureDetector:
    det = FractureDetector(config(**kw))
    warm(det)
    assert feed(det, 60_100, 62_000, 100)[-1].state is ENGAGED
    return det


def test_a_short_recovery_does_not_disengage_and_a_full_one_does() -> None:
    det = engaged_detector()
    short = feed(det, 62_100, 67_000, 800)  # 5 s above 0.6 < 10 s dwell
    assert first(short, RECOVERING).ts_ns == 62_100 * MS
    assert all(u.active for u in short)
    dip = det.update(sample(67_100, 500))  # below recovery, above fracture: a relapse
    assert dip.state is ENGAGED
    assert dip.transition is not None
    assert dip.transition.causes == (Cause.RELAPSED,)
    assert det.relapses == 1
    assert dip.engaged_since_ns == 61_100 * MS  # the same episode
    full = feed(det, 67_200, 80_000, 900)
    end = first(full, CALM)
    assert end.ts_ns == 77_200 * MS  # 10 s after recovery resumed at 67.2 s
    assert end.transition is not None
    assert end.transition.disengaged
    recovery = end.transition.recovery
    assert recovery is not None
    assert recovery is det.last_recovery
    assert (recovery.since_ns, recovery.ts_ns) == (67_200 * MS, 77_200 * MS)
    assert recovery.min_ratio is not None
    assert recovery.min_ratio >= 0.6
    assert recovery.levels[0] == pytest.approx(0.6 * recovery.baseline[0])  # type: ignore[operator]
    assert end.engaged_since_ns is None
    assert end.episode_trigger is None


def test_relapse_into_a_fracture_during_recovery_goes_back_to_engaged() -> None:
    det = engaged_detector()
    feed(det, 62_100, 65_000, 900)
    u = det.update(sample(65_100, 50))
    assert u.state is ENGAGED
    assert u.trigger is not None
    assert u.trigger.rule is Rule.BASELINE
    assert u.episode_trigger is not None
    assert u.episode_trigger.ts_ns == 60_100 * MS


def test_spread_must_also_be_back_before_recovery_counts() -> None:
    det = engaged_detector(max_spread_bps=50.0)
    # Depth is back but the spread (45 bps) is above the recovery level (40): no recovery.
    wide = feed(det, 62_100, 80_000, 1000, spread_bps=45.0)
    assert all(u.state is ENGAGED for u in wide)
    assert first(feed(det, 80_100, 95_000, 1000, spread_bps=10.0), CALM).ts_ns == 90_100 * MS


def test_health_is_one_when_healthy_half_at_the_fracture_level_and_zero_when_empty() -> None:
    det = FractureDetector(config())
    assert warm(det).health == pytest.approx(1.0)
    assert det.update(sample(60_100, 300, 1000)).health == pytest.approx(0.5)
    assert det.update(sample(60_200, 0, 1000)).health == 0.0
    assert det.update(sample(60_300, 1000, 1000, spread_bps=80.0)).health == pytest.approx(0.5)


def test_late_samples_count_as_simultaneous_and_do_not_move_time_back() -> None:
    det = FractureDetector(config())
    warm(det)
    u = det.update(sample(59_000, 1000))
    assert u.ts_ns == 60_000 * MS
    assert u.baseline[0] == pytest.approx(1000)


# ---------------------------------------------------------------------------- hysteresis


def hover(
    det: FractureDetector, start_ms: int, level: float, noise: Sequence[float], steps: Sequence[int]
) -> list[DetectorUpdate]:
    """Depth ``level * baseline * (1 + n)`` for each noise n, times advancing by ``steps``."""
    out, t = [], start_ms
    for n, dt in zip(noise, steps, strict=False):
        t += dt
        out.append(det.update(sample(t, 1000 * level * (1 + n), 1000)))
    return out


NOISE = st.lists(st.floats(-0.15, 0.15), min_size=50, max_size=400)
STEPS = st.lists(st.integers(20, 400), min_size=400, max_size=400)


@settings(max_examples=40, deadline=None)
@given(noise=NOISE, steps=STEPS)
def test_noise_around_the_fracture_level_engages_at_most_once(
    noise: list[float], steps: list[int]
) -> None:
    det = FractureDetector(config(engaged_baseline_slowdown=math.inf))
    warm(det)
    updates = hover(det, 60_000, 0.3, noise, steps)
    flips = sum(
        1
        for u in updates
        if u.transition and u.transition.to_state.active != u.transition.from_state.active
    )
    assert flips <= 1  # once engaged it cannot stand down: 0.3 +- 15% never reaches 0.6


@settings(max_examples=40, deadline=None)
@given(noise=NOISE, steps=STEPS)
def test_noise_around_the_recovery_level_never_stands_down_early(
    noise: list[float], steps: list[int]
) -> None:
    det = engaged_detector(engaged_baseline_slowdown=math.inf)
    updates = hover(det, 62_000, 0.6, noise, steps)
    ends = [u for u in updates if u.transition and u.transition.disengaged]
    assert len(ends) <= 1
    assert not any(u.transition and u.transition.engaged for u in updates)  # no re-engage
    if ends:
        rec = ends[0].transition.recovery  # type: ignore[union-attr]
        assert rec is not None
        assert rec.ts_ns - rec.since_ns >= 10 * NS
        assert rec.min_ratio is not None
        assert rec.min_ratio >= 0.6


# ---------------------------------------------------------------------------- volatility


def test_volatility_matches_a_hand_computed_series() -> None:
    vol = Volatility(tau_s=10.0, warmup_s=0.0)
    points = [(0.0, 100.0), (1.0, 101.0), (1.5, 100.5), (3.5, 102.0)]
    for t, p in points:
        vol.on_mid(round(t * NS), p)
    # By hand: S = k*S + r^2, T = k*T + dt with k = exp(-dt/10).
    r1, r2, r3 = math.log(101 / 100), math.log(100.5 / 101), math.log(102 / 100.5)
    s = r1**2
    t = 1.0
    s, t = math.exp(-0.05) * s + r2**2, math.exp(-0.05) * t + 0.5
    s, t = math.exp(-0.2) * s + r3**2, math.exp(-0.2) * t + 2.0
    assert vol.sigma_bps == pytest.approx(1e4 * math.sqrt(s / t), rel=1e-12)


def test_volatility_is_per_second_whatever_the_sampling_rate() -> None:
    rng = np.random.default_rng(7)
    sigma_per_s = 2e-4  # 2 bps per sqrt(second)
    for dt_ms in (50, 1000):
        vol = Volatility(tau_s=1e9, warmup_s=1.0)
        price, dt = 100.0, dt_ms / 1000
        for i in range(20_000):
            vol.on_mid(i * dt_ms * MS, price)
            price *= math.exp(rng.normal(0, sigma_per_s * math.sqrt(dt)))
        assert vol.sigma_bps == pytest.approx(2.0, rel=0.03)


def test_trades_blend_into_volatility_by_variance_weight() -> None:
    vol = Volatility(tau_s=1e9, warmup_s=0.0, trade_weight=0.5)
    for i, (mid, px) in enumerate([(100.0, 100.0), (100.0, 101.0), (100.0, 100.0)]):
        vol.on_mid(i * NS, mid)
        vol.on_trade(i * NS, px)
    trade_var = (math.log(1.01) ** 2 + math.log(1 / 1.01) ** 2) / 2.0
    assert vol.sigma_bps == pytest.approx(1e4 * math.sqrt(0.5 * trade_var))
    mid_only = Volatility(tau_s=1e9, warmup_s=0.0)
    mid_only.on_trade(0, 100.0)
    mid_only.on_trade(NS, 200.0)
    assert mid_only.sigma_bps is None  # trade weight 0: trades ignored


def test_detector_reports_no_volatility_until_warm() -> None:
    det = FractureDetector(config(vol_warmup_s=5.0))
    updates = feed(det, 0, 6_000, 1000)
    assert updates[49].sigma_bps is None  # 4.9 s
    assert updates[-1].sigma_bps == 0.0  # the mid never moved


# ---------------------------------------------------------------------------- real data


async def test_the_bundled_calm_recording_never_engages_with_default_settings(
    log: Logger,
) -> None:
    market = MarketSettings(symbol="BTC/USDT")
    clock = ManualClock()
    updates: list[DetectorUpdate] = []
    listener = DetectorListener.from_markets([market], on_update=lambda _s, u: updates.append(u))
    engine = Engine(
        feed=ReplayFeed(bundled_sample_paths(), clock=clock, symbol_map={"BTCUSDT": "BTC/USDT"}),
        markets={
            market.symbol: Market(
                market.symbol,
                OrderBook(market.symbol, clock=clock),
                DepthMonitor.for_bands(market.bands_bps, market.reference_notional_quote),
            )
        },
        log=log,
        listeners=[listener],
    )
    await engine.run()
    assert len(updates) > 6000
    assert not any(u.active for u in updates)
    ready = [u for u in updates if u.baseline_ready]
    low = min(min(r for r in u.ratio if r is not None) for u in ready)
    # The sample's thinnest moment (bid side, 10 bps band) is a ~0.3 s dip to ~0.14 of
    # baseline: it arms the detector, and the engage dwell (1 s) keeps it from engaging.
    assert 0.1 < low < 0.3
    assert any(u.state is ARMING for u in updates)
    sigma = updates[-1].sigma_bps
    assert sigma is not None
    assert 0.1 < sigma < 5.0  # BTC: ~1 bp per sqrt(second)


def test_listener_routes_samples_and_trades_by_symbol() -> None:
    cfg = config(vol_trade_weight=1.0, vol_warmup_s=0.0)
    listener = DetectorListener({"A/B": cfg})
    book = OrderBook("A/B", clock=ManualClock())
    listener.on_sample("A/B", book, sample(0, 1000))
    listener.on_sample("C/D", book, sample(0, 1000))  # not ours: ignored
    listener.on_trade(Trade("A/B", 0, 100.0, 1.0, "buy", "1"))
    listener.on_trade(Trade("A/B", NS, 101.0, 1.0, "buy", "2"))
    assert set(listener.last) == {"A/B"}
    assert listener.detectors["A/B"].volatility.sigma_bps == pytest.approx(1e4 * math.log(1.01))


async def test_the_default_fracture_overlay_engages_once_and_stands_down_after_recovery(
    log: Logger,
) -> None:
    from bot.feeds.stress import StressedFeed, parse_stress_spec

    market = MarketSettings(symbol="BTC/USDT")
    clock = ManualClock()
    updates: list[DetectorUpdate] = []
    listener = DetectorListener.from_markets([market], on_update=lambda _s, u: updates.append(u))
    replay = ReplayFeed(bundled_sample_paths(), clock=clock, symbol_map={"BTCUSDT": "BTC/USDT"})
    feed = StressedFeed(replay, parse_stress_spec("fracture"))
    engine = Engine(
        feed=feed,
        markets={
            market.symbol: Market(
                market.symbol,
                OrderBook(market.symbol, clock=clock),
                DepthMonitor.for_bands(market.bands_bps, market.reference_notional_quote),
            )
        },
        log=log,
        listeners=[listener],
    )
    await engine.run()
    stress = feed.stats.stress
    assert stress.window_start_ts_ns is not None
    assert stress.window_end_ts_ns is not None
    starts = [u for u in updates if u.transition and u.transition.engaged]
    ends = [u for u in updates if u.transition and u.transition.disengaged]
    assert len(starts) == 1
    assert len(ends) == 1
    start, end = starts[0], ends[0]
    assert stress.window_start_ts_ns < start.ts_ns < stress.window_start_ts_ns + 10 * NS
    assert start.episode_trigger is not None
    assert start.episode_trigger.rule is Rule.BASELINE
    assert all(u.active for u in updates if start.ts_ns <= u.ts_ns < end.ts_ns)
    # It stands down only once the book has been whole again for the disengage dwell.
    assert end.ts_ns >= stress.window_end_ts_ns
    recovery = end.transition.recovery  # type: ignore[union-attr]
    assert recovery is not None
    assert recovery.ts_ns - recovery.since_ns >= 10 * NS
    assert recovery.min_ratio is not None
    assert recovery.min_ratio >= 0.6
    held = [u.ratio[0] for u in updates if start.ts_ns <= u.ts_ns < start.ts_ns + 20 * NS]
    assert max(r for r in held if r is not None) < 0.3  # the hold really is a fracture
