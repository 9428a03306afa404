"""The option risk checks closed in OPTIONS-3, by hand and in a run: the perpetual's
resting orders in the option delta worst case, the gamma limits, the premium sanity band
(``PRICE_OUTSIDE_PREMIUM_BAND``).

By hand: F = K = 60,000, t = 0.25 years, sigma = 0.5 (the example config's surface at the
money), so d1 = 0.125 and, per contract of 1 BTC, delta N(0.125) = 0.5497382, vega 118.7513
USD per vol point, gamma phi(0.125) / (F sigma sqrt t) = 0.3958377 / 15,000 = 2.6389e-5 per
USD, i.e. 0.0158335 BTC of delta per 1 % move; call premium 5,968.59 USD = 0.0994764 BTC.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from options_support import CONFIG, SHORT, is_option

from bot.app import assemble
from bot.book import OrderBook
from bot.clock import ManualClock
from bot.feeds.events import levels
from bot.feeds.stress import parse_stress_spec
from bot.logs import make_logger
from bot.monitor import DepthMonitor
from bot.options.checks import GreekCheck, OptionPricing, PremiumBandCheck, premium_band
from bot.options.desk import OptionDesk
from bot.options.episodes import episodes_html
from bot.options.gate import Extremes, GreekGate
from bot.orders import OrderStateChanged
from bot.report.html import render_report
from bot.risk.checks import QuoteContext
from bot.risk.greeks import GreekExposure, GreekLimits, black76, check_greeks
from bot.risk.options import OptionSpec
from bot.settings import load_settings
from strategies.base import Quote

NOW_MS = 1_723_161_600_000  # 2024-08-09 00:00 UTC
QUARTER_MS = round(0.25 * 365 * 86_400_000)
CALL = "BTC/USD:BTC-241108-60000-C"
PUT = "BTC/USD:BTC-241108-60000-P"
PERP = "BTC/USDT:USDT"
DELTA = 0.5497382
GAMMA_PCT = 0.0158335


def _spec(symbol: str, call: bool) -> OptionSpec:
    return OptionSpec(symbol, "BTC", 60_000.0, NOW_MS + QUARTER_MS, call, 1.0, True)


def _desk(position: float, resting: tuple[float, float]) -> OptionDesk:
    """A desk with the forward at 60,000 (the perpetual's mid), no option book yet (so
    the configured surface: 0.5 at the money), the perpetual's position and resting
    orders as given."""
    settings = load_settings(CONFIG)
    assert settings.options is not None
    desk = OptionDesk(
        settings.options,
        {CALL: _spec(CALL, True), PUT: _spec(PUT, False)},
        make_logger("json", "warning", None),
        underlying_position=lambda: position,
        underlying_resting=lambda: resting,
    )
    clock = ManualClock(NOW_MS * 1_000_000)
    perp = OrderBook(PERP, clock=clock)
    perp.apply_snapshot(levels([[59_999.9, 5.0]]), levels([[60_000.1, 5.0]]))
    sample = DepthMonitor.for_bands((10.0,), 1.0).observe(perp, clock.now_ns())
    assert sample is not None
    desk.on_sample(PERP, perp, sample)
    assert desk.forward == pytest.approx(60_000.0)
    return desk


def _quote(side: str, amount: float, price: float = 0.0995, symbol: str = CALL) -> Quote:
    return Quote(symbol, "buy" if side == "buy" else "sell", price, amount)


CTX = QuoteContext(mid=0.0995, best_bid=0.098, best_ask=0.101)


def test_the_perpetuals_resting_orders_count_in_the_option_delta_worst_case() -> None:
    settings = load_settings(CONFIG)
    limits = GreekLimits(max_delta_per_order=0.5, max_delta_total=1.0)
    # Perp long 0.5 BTC, no perp order resting: buying 0.3 calls (delta 0.1649) fits.
    calm = GreekCheck(limits, _desk(0.5, (0.0, 0.0)))
    assert calm(_quote("buy", 0.3), CTX, settings.risk) is None
    # The same with a perp bid of 0.4 BTC resting: if both fill, 0.5 + 0.4 + 0.1649 =
    # 1.0649 > 1.0. Refused, naming the worst case it starts from (0.9).
    desk = _desk(0.5, (0.4, 0.0))
    check = GreekCheck(limits, desk)
    denial = check(_quote("buy", 0.3), CTX, settings.risk)
    assert denial == "DELTA_EXCEEDS_MAX_TOTAL: delta=0.9 delta_after=1.0649215 max=1"
    # Selling the call pushes delta the other way: the perp bid does not count there.
    assert check(_quote("sell", 0.3), CTX, settings.risk) is None
    # The gate (which sizes before the check) sees the same worst case: room 0.1 BTC =
    # 0.18 contracts -> trimmed to the 0.1 lot, and it passes the check.
    gate = GreekGate(limits)
    per = desk.per_contract(desk.specs[CALL], "buy")
    ((n, reason),) = gate.admit([(2.0, per)], desk.extremes_without(CALL), 0.1)
    assert (n, reason) == (0.1, None)
    assert check(_quote("buy", n), CTX, settings.risk) is None
    # Resting perp asks count on the low side: position 0.5, asks 1.6 -> -1.1 already;
    # shorting calls would push further (refused), buying them is fine.
    short = GreekCheck(limits, _desk(0.5, (0.0, 1.6)))
    denial = short(_quote("sell", 0.3), CTX, settings.risk)
    assert denial is not None
    assert denial.startswith("DELTA_EXCEEDS_MAX_TOTAL: delta=-1.1 delta_after=-1.2649")
    assert short(_quote("buy", 0.3), CTX, settings.risk) is None


def test_black76_gamma_by_hand_and_as_a_limit() -> None:
    g = black76(60_000, 60_000, 0.25, 0.5, call=True)
    assert g.gamma == pytest.approx(0.3958377 / 15_000, rel=1e-6)
    assert g.gamma_per_pct(60_000) == pytest.approx(GAMMA_PCT, abs=1e-7)
    # It is the delta's slope: a 1 USD move each way changes delta by 2 x gamma.
    up = black76(60_001, 60_000, 0.25, 0.5, call=True).delta
    down = black76(59_999, 60_000, 0.25, 0.5, call=True).delta
    assert (up - down) / 2 == pytest.approx(g.gamma, rel=1e-6)
    # A put has the call's gamma; at expiry there is none.
    assert black76(60_000, 60_000, 0.25, 0.5, call=False).gamma == pytest.approx(g.gamma)
    assert black76(60_000, 60_000, 0.0, 0.5, call=True).gamma == 0.0

    limits = GreekLimits(max_gamma_per_order=0.05, max_gamma_total=0.1)
    per = GreekExposure(DELTA, 118.7513, GAMMA_PCT)
    # Per order: 4 contracts = 0.0633 > 0.05.
    denial = check_greeks(per.times(4.0), GreekExposure(), limits)
    assert denial == "GAMMA_EXCEEDS_MAX_PER_ORDER: gamma=0.063334 max=0.05"
    # 3 contracts (0.0475) fit alone; on top of 0.06 of long gamma they do not.
    assert check_greeks(per.times(3.0), GreekExposure(), limits) is None
    denial = check_greeks(per.times(3.0), GreekExposure(0.0, 0.0, 0.06), limits)
    assert denial == "GAMMA_EXCEEDS_MAX_TOTAL: gamma=0.06 gamma_after=0.1075005 max=0.1"
    # Selling (short gamma) from there shrinks it: not refused for the total.
    assert check_greeks(per.times(-3.0), GreekExposure(0.0, 0.0, 0.06), limits) is None
    # The gate trims to the lot that fits: (0.1 - 0.06) / 0.0158335 = 2.53 -> 2.5.
    gate = GreekGate(limits)
    worst = Extremes.of(GreekExposure(0.0, 0.0, 0.06), [])
    ((n, reason),) = gate.admit([(5.0, per)], worst, 0.1)
    assert (n, reason) == (2.5, None)
    assert worst.hi_gamma == pytest.approx(0.06 + 2.5 * GAMMA_PCT)
    # Nothing left: the next lot is refused with the gamma total's reason.
    ((n, reason),) = gate.admit([(1.0, per)], worst, 0.1)
    assert n == 0.0
    assert reason is not None
    assert reason.startswith("GAMMA_EXCEEDS_MAX_TOTAL")
    # The desk's per-contract greeks carry gamma in the same unit, signed by side.
    desk = _desk(0.0, (0.0, 0.0))
    buy = desk.per_contract(desk.specs[CALL], "buy")
    sell = desk.per_contract(desk.specs[PUT], "sell")
    assert buy.gamma == pytest.approx(GAMMA_PCT, abs=1e-7)
    assert sell.gamma == pytest.approx(-GAMMA_PCT, abs=1e-7)


def test_the_premium_band_by_hand() -> None:
    # Model 0.0994764 BTC; at 40 and 60 % volatility 0.0796557 and 0.1192354 BTC;
    # rounded outwards to the 0.0001 tick: [0.0796, 0.1193].
    pricing = OptionPricing(_spec(CALL, True), 60_000.0, 0.25, 0.5)
    band = premium_band(pricing, 10.0, 5, 0.0001)
    assert band.model == pytest.approx(0.0994764, abs=1e-7)
    assert (band.low, band.high) == (pytest.approx(0.0796), pytest.approx(0.1193))
    assert band.bound == 1.0  # a call is worth at most the forward: 1 BTC per BTC
    put = premium_band(OptionPricing(_spec(PUT, False), 50_000.0, 0.25, 0.5), 10.0, 5, 0.0001)
    assert put.bound == pytest.approx(60_000 / 50_000)  # a put at most K/F

    settings = load_settings(CONFIG)
    check = PremiumBandCheck(_desk(0.0, (0.0, 0.0)), 10.0, 5, 0.0001)
    for price in (0.0796, 0.0995, 0.1193):
        assert check(_quote("buy", 1.0, price), CTX, settings.risk) is None
    low = check(_quote("buy", 1.0, 0.0795), CTX, settings.risk)
    assert low == (
        "PRICE_OUTSIDE_PREMIUM_BAND: price=0.0795 low=0.0796 high=0.1193 model=0.09947645 "
        "iv=0.5000 vol_points=10"
    )
    high = check(_quote("sell", 1.0, 0.1194), CTX, settings.risk)
    assert high is not None
    assert high.startswith("PRICE_OUTSIDE_PREMIUM_BAND: price=0.1194 low=0.0796")
    assert check(_quote("buy", 1.0, 0.00005), CTX, settings.risk) == (
        "PRICE_OUTSIDE_PREMIUM_BAND: price=5e-05 below tick=0.0001"
    )
    above = check(_quote("sell", 1.0, 1.2), CTX, settings.risk)
    assert above == "PRICE_OUTSIDE_PREMIUM_BAND: price=1.2 above bound=1 (call at forward=60000)"
    # Two minutes before expiry the model is 0.000389 BTC and 10 vol points are under a
    # tick: the band is the model +/- 5 ticks instead, floored at one tick, on the grid.
    soon = OptionPricing(_spec(CALL, True), 60_000.0, 120 / (365 * 86_400), 0.5)
    near = premium_band(soon, 10.0, 5, 0.0001)
    assert near.model == pytest.approx(0.000389, abs=1e-6)
    assert (near.low, near.high) == (0.0001, pytest.approx(0.0009))


# ---- in a run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stressed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """130 s of the example with the perpetual fractured too (``--stress``): its backstop
    rests orders while option quotes are decided."""
    settings = load_settings(CONFIG, overrides=SHORT)
    assert settings.options is not None
    cap = settings.options.limits.max_delta_total
    log = make_logger("json", "warning", None)
    stress = parse_stress_spec("fracture:band_bps=3000,start_s=40,hold_s=60")

    async def go() -> dict[str, Any]:
        run = await assemble(settings, log=log, stress=stress, record=True)
        assert run.options is not None
        assert run.trader is not None
        desk, manager = run.options.desk, run.trader.manager
        assert desk is not None
        rules = run.trader.desks[PERP].rules
        admitted: list[dict[str, float]] = []

        def on_notice(notice: object) -> None:
            # A new option order: the worst case in the way it pushes delta, recomputed
            # here from the manager's own lists (the perp's orders in base) and the
            # desk's option positions, must be within the cap when it is admitted.
            if not (isinstance(notice, OrderStateChanged) and notice.previous is None):
                return
            if not is_option(notice.symbol):
                return
            order = manager.get(notice.client_id)
            assert order is not None
            perp = manager.open_orders(PERP)
            buys = sum(rules.base_amount(o.price, o.remaining) for o in perp if o.side == "buy")
            sells = sum(rules.base_amount(o.price, o.remaining) for o in perp if o.side == "sell")
            options = [desk._exposure_of(o) for o in manager.open_orders() if is_option(o.symbol)]
            net = desk.net_exposure().delta
            push = desk._exposure_of(order).delta
            if push > 0:
                worst = net + buys + sum(max(0.0, g.delta) for g in options)
            else:
                worst = net - sells + sum(min(0.0, g.delta) for g in options)
            admitted.append({"worst": abs(worst), "perp_resting": buys + sells, "push": push})

        manager.subscribe(on_notice)
        await run.execute()
        # A fat finger through the same risk engine: ten times the book's price.
        spec = next(iter(run.options.specs.values()))
        pricing = desk.pricing_of(spec.symbol)
        assert pricing is not None
        model = premium_band(pricing, 10.0, 5, 0.0001).model
        fat = Quote(spec.symbol, "sell", round(10 * model + 0.001, 4), 0.1)
        check = run.trader.risk.check_quotes([fat], QuoteContext(mid=model))
        recorder = run.trader.recorder
        assert recorder is not None
        out = tmp_path_factory.mktemp("options-report") / "report.html"
        render_report(recorder, [], out, title="options")
        return {
            "report": out.read_text(),
            "drawn": sorted(recorder.markets),
            "specs": {s: spec.expiry_ms for s, spec in run.options.specs.items()},
            "admitted": admitted,
            "cap": cap,
            "fat": check.denied,
            "denials": dict(run.trader.risk.denials),
            "summary": run.options.summary(),
        }

    return asyncio.run(go())


def test_every_option_order_is_admitted_within_the_cap_with_perp_orders_resting(
    stressed_run: dict[str, Any],
) -> None:
    admitted = stressed_run["admitted"]
    assert len(admitted) >= 20
    # The perpetual's backstop had orders resting when some option orders were admitted:
    # the worst case counted them, and still held.
    assert sum(1 for a in admitted if a["perp_resting"] > 0) >= 5
    assert max(a["worst"] for a in admitted) <= stressed_run["cap"] + 1e-9
    assert stressed_run["summary"]["max_abs_net_delta"] <= stressed_run["cap"]


def test_gamma_and_premium_band_refusals_are_the_risk_engines(
    stressed_run: dict[str, Any],
) -> None:
    summary = stressed_run["summary"]
    # The example's gamma cap binds on the short-dated options and is counted.
    assert summary["risk_refused"].get("GAMMA_EXCEEDS_MAX_TOTAL", 0) > 0
    assert (
        summary["greek_denied"]["GAMMA_EXCEEDS_MAX_TOTAL"]
        == (stressed_run["denials"]["GAMMA_EXCEEDS_MAX_TOTAL"])
    )
    assert summary["max_abs_gamma"] <= summary["max_gamma_total"]
    # The strategy's own quotes never fall outside the band; a fat finger does.
    assert summary["premium_band_refused"] == 0
    ((_, denial),) = stressed_run["fat"]
    assert denial.startswith("PRICE_OUTSIDE_PREMIUM_BAND: price=")
    assert stressed_run["denials"]["PRICE_OUTSIDE_PREMIUM_BAND"] == 1


def test_option_episodes_are_in_the_summary_and_the_html_report(
    stressed_run: dict[str, Any],
) -> None:
    summary = stressed_run["summary"]
    episodes = summary["episode_list"]
    assert len(episodes) == summary["episodes_total"] >= 5
    # Fills land in the episode whose quotes they were; none is invented.
    fills = sum(e["fills"] for e in episodes)
    assert 0 < fills <= summary["inventory"]["fills"]
    assert sum(e["quotes"] for e in episodes) <= summary["quotes_placed"]
    for e in episodes:
        assert e["peak_abs_net_delta"] <= stressed_run["cap"]
        assert e["min_bid_vega"] is None or e["min_bid_vega"] >= 0.0
        expiry = stressed_run["specs"][e["symbol"]]
        if e["end_ms"] is not None:
            assert e["start_ms"] <= e["end_ms"] <= expiry
    # The 23:56 expiry's books stop updating: its episodes end (at expiry at the latest).
    first = min(stressed_run["specs"].values())
    short = [e for e in episodes if stressed_run["specs"][e["symbol"]] == first]
    assert short
    assert all(e["end_ms"] is not None for e in short)
    # The HTML report: the table (one row per episode), and no chart per option book.
    report = stressed_run["report"]
    assert "Option episodes on BTC/USDT:USDT (SYNTHETIC option books)" in report
    assert report.count('<tr data-symbol="BTC/USD:BTC-') == len(episodes)
    assert stressed_run["drawn"] == [PERP]


def test_the_option_episode_table_escapes_and_says_when_there_is_none() -> None:
    assert "No option episode." in episodes_html([], {}, synthetic=False, underlying="X")
    row = {
        "symbol": "<b>x</b>",
        "start_ms": NOW_MS,
        "end_ms": NOW_MS + 2_500,
        "quotes": 3,
        "refused": 1,
        "fills": 2,
        "filled_contracts": 0.7,
        "min_bid_vega": 1.25,
        "min_ask_vega": None,
        "baseline_vega": [10.0, None],
        "peak_abs_net_delta": 0.5,
        "peak_abs_vega": 12.0,
        "peak_abs_gamma": 0.01,
    }
    html = episodes_html([row], {"max_delta_total": 1.0}, synthetic=True, underlying="<i>")
    assert "<b>" not in html
    assert "<i>" not in html
    assert "<td>2024-08-09 00:00:00</td><td>2.5</td><td>3</td><td>1</td><td>2 (0.7)</td>" in html
    assert "<td>1.2 / 10.0</td><td>- / -</td>" in html
