"""Options by hand: a position's Black-76 greeks, expiry settlement, the greek gate's
trims and refusals (with the reason), the delta hedge's size, and [options] settings
errors naming the field and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.book import OrderBook
from bot.clock import ManualClock
from bot.errors import ConfigError
from bot.feeds.events import levels
from bot.monitor import DepthMonitor
from bot.options.gate import Extremes, GreekGate
from bot.options.inventory import OptionInventory
from bot.options.settings import HedgeSettings
from bot.risk.greeks import GreekExposure, GreekLimits, black76
from bot.risk.options import OptionSpec
from bot.settings import load_settings
from strategies.base import (
    REPLENISH_TAG,
    BudgetView,
    Decision,
    InventoryView,
    MarketContext,
    MarketRules,
    Quote,
)
from strategies.option_backstop import DeltaHedgeStrategy

NOW_MS = 1_723_161_600_000  # 2024-08-09 00:00 UTC
QUARTER_MS = round(0.25 * 365 * 86_400_000)  # t = 0.25 years
CALL = "BTC/USD:BTC-241108-60000-C"
PUT = "BTC/USD:BTC-241108-60000-P"


def spec(symbol: str, call: bool, expiry_ms: int = NOW_MS + QUARTER_MS) -> OptionSpec:
    return OptionSpec(symbol, "BTC", 60_000.0, expiry_ms, call, 1.0, premium_in_base=True)


def flat(_spec: OptionSpec) -> float:
    return 0.5


def test_position_greeks_by_hand() -> None:
    # F = K = 60,000, t = 0.25, sigma = 0.5: call delta N(0.125) = 0.5497382, put delta
    # 0.5497382 - 1 = -0.4502618; vega 11,875.13 per 1.00 = 118.7513 per point, both.
    inv = OptionInventory({CALL: spec(CALL, True), PUT: spec(PUT, False)})
    inv.apply_fill(CALL, "buy", 0.1, 2.0)
    inv.apply_fill(PUT, "sell", 0.1, 1.0)
    g = inv.exposure(60_000.0, NOW_MS, flat)
    # Long 2 calls, short 1 put: 2 x 0.5497382 + 0.4502618 = 1.5497382 BTC of delta;
    # vega (2 - 1) x 118.7513 = 118.7513 USD per vol point.
    assert g.delta == pytest.approx(1.5497382, abs=1e-6)
    assert g.vega == pytest.approx(118.7513, abs=1e-3)
    # Premium: paid 0.2, received 0.1 BTC. Model value: -0.1 BTC x 60,000 + (2 - 1) x
    # 5,968.6 = -31.4 USD (the calls were bought at 6,000 USD, above the model's 5,968.6).
    assert (inv.premium_paid_btc, inv.premium_received_btc) == (0.2, 0.1)
    assert inv.cash_btc == pytest.approx(-0.1)
    price = black76(60_000, 60_000, 0.25, 0.5, True).price
    assert inv.value_usd(60_000.0, NOW_MS, flat) == pytest.approx(-6_000 + price)
    assert price == pytest.approx(5_968.6, abs=0.05)


def test_expiry_settlement_pays_intrinsic_value_at_the_forward() -> None:
    expiry = NOW_MS + 60_000
    specs = {CALL: spec(CALL, True, expiry), PUT: spec(PUT, False, expiry)}
    inv = OptionInventory(specs)
    inv.apply_fill(CALL, "buy", 0.05, 2.0, fee_btc=0.0006)  # 2 x 0.0003
    inv.apply_fill(PUT, "sell", 0.01, 1.0, fee_btc=0.0003)
    assert inv.cash_btc == pytest.approx(-0.1 - 0.0006 + 0.01 - 0.0003)  # -0.0909
    assert inv.settle_expired(expiry - 1, 62_000.0) == []  # not yet
    done = inv.settle_expired(expiry, 62_000.0)
    # Calls 2,000 USD in the money at F = 62,000: 2 x 2,000 / 62,000 = 0.0645161 BTC.
    # The put (K 60,000 < F) expires worthless: settled at 0, the premium kept.
    by_symbol = {s.symbol: s for s in done}
    assert by_symbol[CALL].intrinsic_usd == 2_000.0
    assert by_symbol[CALL].cash_btc == pytest.approx(0.0645161, abs=1e-7)
    assert by_symbol[PUT].cash_btc == 0.0
    assert inv.positions == {}
    assert inv.cash_btc == pytest.approx(-0.0909 + 0.0645161, abs=1e-7)
    # Short an in-the-money put instead: the short pays. K 60,000, F 57,000: -3,000/57,000.
    inv2 = OptionInventory(specs)
    inv2.apply_fill(PUT, "sell", 0.06, 1.0)
    (s,) = inv2.settle_expired(expiry, 57_000.0)
    assert s.cash_btc == pytest.approx(-3_000 / 57_000)
    assert inv2.cash_btc == pytest.approx(0.06 - 3_000 / 57_000)


def test_greek_gate_trims_then_refuses_with_the_reason() -> None:
    g = black76(60_000, 60_000, 0.25, 0.5, call=True)  # delta 0.5497, vega 118.75 / point
    per = GreekExposure(g.delta, g.vega_per_point)
    limits = GreekLimits(
        max_delta_per_order=0.5, max_vega_per_order=1_000, max_delta_total=1.0, max_vega_total=500
    )
    gate = GreekGate(limits)
    # Per order: 0.5 / 0.5497 = 0.909 contracts: 2 wanted, trimmed to the 0.9 lot.
    ((n, reason),) = gate.admit([(2.0, per)], Extremes.of(GreekExposure(), []), 0.1)
    assert (n, reason) == (0.9, None)
    assert gate.trimmed == 1
    # Total: at delta 0.9 there is room for 0.1 / 0.5497 = 0.18 -> 0.1 contract.
    ((n, reason),) = gate.admit([(0.5, per)], Extremes.of(GreekExposure(0.9, 0.0), []), 0.1)
    assert (n, reason) == (0.1, None)
    # At 0.99 the room (0.018 contracts) is under one lot: refused, with the reason.
    ((n, reason),) = gate.admit([(0.5, per)], Extremes.of(GreekExposure(0.99, 0.0), []), 0.1)
    assert n == 0.0
    assert reason is not None
    # The reason names the binding cap: one lot (0.055) would take 0.99 past 1.0.
    assert reason.startswith("DELTA_EXCEEDS_MAX_TOTAL: delta=0.99 delta_after=1.0449738")
    assert gate.denied["DELTA_EXCEEDS_MAX_TOTAL"] == 1
    # Selling shrinks the delta: allowed up to the per-order cap (0.9), and the worst
    # case then counts both the bid and the ask resting.
    sell = GreekExposure(-g.delta, -g.vega_per_point)
    worst = Extremes.of(GreekExposure(0.99, 0.0), [])
    out = gate.admit([(0.5, per), (2.0, sell)], worst, 0.1)
    assert out == [(0.0, out[0][1]), (0.9, None)]
    assert worst.lo_delta == pytest.approx(0.99 - 0.9 * g.delta)
    # Resting orders elsewhere count: three bids of 1 contract of vega 118.75 rest on
    # other options (356.3); one more contract fits (475), a second does not (> 500).
    others = [GreekExposure(0.0, g.vega_per_point)] * 3
    ((n, reason),) = gate.admit(
        [(2.0, GreekExposure(0.0, g.vega_per_point))], Extremes.of(GreekExposure(), others), 0.1
    )
    assert n == pytest.approx(1.2)  # (500 - 356.25) / 118.75 = 1.21 -> 1.2


class _Inner:
    name = "backstop"

    def decide(self, ctx: MarketContext) -> Decision:
        return Decision(
            (
                Quote(ctx.symbol, "buy", 61_000.0, 0.01, tag="backstop:bid:0"),
                Quote(ctx.symbol, "sell", 61_700.0, 0.05, tag=REPLENISH_TAG + "sell"),
            ),
            "inner",
            "backstop",
        )

    def on_fill(self, fill: object) -> None:
        return None


def _ctx(net_base: float) -> MarketContext:
    clock = ManualClock(NOW_MS * 1_000_000)
    book = OrderBook("BTC/USDT:USDT", clock=clock)
    book.apply_snapshot(levels([[61_599.9, 5.0]]), levels([[61_600.1, 5.0]]))
    sample = DepthMonitor.for_bands((10.0,), 1.0).observe(book, clock.now_ns())
    assert sample is not None
    inv = InventoryView(0.0, 0.0, 0.0, 0.0, net_base, None, 0.0, 0.0, 0.0, 0.0, 61_600.0)
    rules = MarketRules(price_tick=0.1, amount_step=0.001, amount_min=0.001, cost_min=100.0)
    return MarketContext(
        "BTC/USDT:USDT", clock.now_ns(), book, sample, None, inv, BudgetView(), rules
    )


def test_delta_hedge_size_and_side() -> None:
    delta = [0.75]
    hedge = DeltaHedgeStrategy(
        _Inner(), lambda: delta[0], HedgeSettings(delta_limit=0.2, max_cost_bps=10)
    )
    # Options +0.75, perp +0.1: net 0.85 > 0.2 -> sell 0.85 BTC = 0.85 contracts of 1 BTC,
    # 10 bps through the mid: 61,600 x 0.999 = 61,538.4. The inner replenish is dropped.
    d = hedge.decide(_ctx(0.1))
    tags = [q.tag for q in d.quotes]
    assert tags == ["backstop:bid:0", "hedge:sell"]
    h = d.quotes[-1]
    assert (h.side, h.amount, h.post_only) == ("sell", 0.85, False)
    assert h.price == pytest.approx(61_538.4)
    # In flight: the very same order again, so the order manager keeps it.
    delta[0] = 0.76
    assert hedge.decide(_ctx(0.1)).quotes[-1] is h
    # Filled: net 0.76 + 0.1 - 0.85 = 0.01 within the limit -> no hedge.
    assert [q.tag for q in hedge.decide(_ctx(-0.75)).quotes] == ["backstop:bid:0"]
    # Short delta -0.5 (puts): buy 0.5, capped by max_order_base.
    delta[0] = -1.6
    capped = DeltaHedgeStrategy(_Inner(), lambda: delta[0], HedgeSettings(max_order_base=1.0))
    q = capped.decide(_ctx(0.0)).quotes[-1]
    assert (q.side, q.amount) == ("buy", 1.0)
    assert q.price == pytest.approx(61_600 * 1.001)
    assert hedge.hedges == 1


CONFIG = Path("config/paper-options.toml")


def _with(tmp_path: Path, old: str, new: str) -> Path:
    text = CONFIG.read_text()
    assert old in text
    path = tmp_path / "options.toml"
    path.write_text(text.replace(old, new))
    return path


def test_the_example_config_loads() -> None:
    settings = load_settings(CONFIG)
    assert settings.options is not None
    assert settings.options.underlying == "BTC/USDT:USDT"
    assert settings.options.synthetic is not None
    assert len(settings.options.synthetic.expiries) == 3


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'underlying = "BTC/USDT:USDT"',
            'underlying = "ETH/USDT:USDT"',
            "options.underlying: 'ETH/USDT:USDT' is not a configured market",
        ),
        (
            "max_delta_per_order = 0.5",
            "max_delta_per_order = 5",
            "options.limits.max_delta_per_order: must be at most max_delta_total (1)",
        ),
        ('stress = "fracture:', 'stress = "fracture:nope=1,', "options.synthetic.stress"),
        (
            '"2024-08-30T08:00:00Z"]',
            '"2024-08-30T08:00:00Z", "2024-08-30T12:00:00Z"]',
            "options.synthetic.expiries[3]: two expiries on 2024-08-30",
        ),
        ("max_vega_total = 400", "max_vega_total = -1", "options.limits.max_vega_total"),
    ],
)
def test_options_settings_errors_name_field_and_file(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = _with(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_settings(path)
    message = str(e.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message.strip()


def test_the_desk_settles_expired_positions_on_the_next_forward() -> None:
    from bot.logs import make_logger
    from bot.options.desk import OptionDesk

    settings = load_settings(CONFIG)
    assert settings.options is not None
    expiry = NOW_MS + 60_000
    specs = {CALL: spec(CALL, True, expiry), PUT: spec(PUT, False, expiry)}
    desk = OptionDesk(settings.options, specs, make_logger("json", "warning", None))
    desk.inventory.apply_fill(CALL, "buy", 0.05, 1.0)
    clock = ManualClock(NOW_MS * 1_000_000)
    perp = OrderBook("BTC/USDT:USDT", clock=clock)
    perp.apply_snapshot(levels([[61_999.9, 5.0]]), levels([[62_000.1, 5.0]]))
    monitor = DepthMonitor.for_bands((10.0,), 1.0)
    sample = monitor.observe(perp, clock.now_ns())
    assert sample is not None
    desk.on_sample("BTC/USDT:USDT", perp, sample)
    assert desk.inventory.settlements == []  # a minute before expiry: still open
    # Net delta: the long call, near expiry and 2,000 in the money: about 1 BTC.
    assert desk.status()["net_delta"] == pytest.approx(1.0, abs=1e-6)
    clock.advance(60 * 1_000_000_000)
    sample = monitor.observe(perp, clock.now_ns())
    assert sample is not None
    desk.on_sample("BTC/USDT:USDT", perp, sample)
    (s,) = desk.inventory.settlements
    assert (s.symbol, s.forward) == (CALL, 62_000.0)
    assert s.cash_btc == pytest.approx(2_000 / 62_000)
    assert desk.status()["net_delta"] == 0.0
