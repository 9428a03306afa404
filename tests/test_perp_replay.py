"""The backstop on the bundled perpetual futures recordings, end to end, in paper mode:
Binance USD-M BTCUSDT (linear, USDT-margined) and COIN-M BTCUSD_PERP (inverse, coin-
margined, 100 USD contracts) with the documented ``fracture`` stress.

Each replay checks that the backstop engages on the fracture and steps back, stays
inside its collateral caps, and that its contract accounting is right three ways: the
bot's own books equal the paper exchange's (position, entry, isolated margin, wallet,
funding), the PnL equals what the venue's trade list says by cash flow (no averaging:
sum the trades), and the margin equals the position's value at entry over the leverage.

To stay fast the runs are short (``duration_s``): the baseline window is 30 s and the
fracture starts 35 s in. On USD-M funding is paid every minute instead of every 8 hours,
so it happens within the run (the recordings carry no funding stream; the rate is the
configured one); on COIN-M it is not, so its margin must be exactly its entry value.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.app import assemble
from bot.feeds.stress.specs import parse_stress_spec
from bot.inventory import PerpInventory
from bot.logs import null_logger
from bot.markets import offline_markets
from bot.settings import load_settings, validate_symbols
from bot.settings.models import Settings
from bot.venues.perp import PerpPaperVenue

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bot" / "data"
NS = 1_000_000_000
TIGHT = Decimal("1e-12")
STRESS = "fracture:start_s=35,hold_s=15,recover_s=15"


@dataclass
class Outcome:
    settings: Settings
    summary: dict[str, Any]
    inventory: PerpInventory
    venue: PerpPaperVenue
    trades: list[dict[str, Any]]
    mid: float
    max_committed_quote: float


def settings_for(
    config: str, files: list[str], tmp: Path, duration_s: float, funding_interval_h: float
) -> Settings:
    settings = load_settings(
        REPO / "config" / config,
        env={},
        overrides={
            "state_dir": str(tmp),
            "feed": {"replay_files": [str(DATA / f) for f in files], "duration_s": duration_s},
        },
    )
    m = settings.markets[0]
    short = m.model_copy(
        update={
            "baseline_window_s": 30.0,
            "perp": m.perp.model_copy(update={"funding_interval_h": funding_interval_h}),
        }
    )
    return settings.model_copy(update={"markets": [short]})


async def replay(settings: Settings) -> Outcome:
    run = await assemble(settings, log=null_logger(), stress=parse_stress_spec(STRESS))
    summary = (await run.execute()).to_dict()
    assert run.trader is not None
    assert isinstance(run.venue, PerpPaperVenue)
    symbol = settings.markets[0].symbol
    desk = run.trader.desks[symbol]
    assert isinstance(desk.inventory, PerpInventory)
    assert desk.last_mid is not None
    return Outcome(
        settings,
        summary,
        desk.inventory,
        run.venue,
        await run.venue.fetch_my_trades(symbol),
        desk.last_mid,
        desk.max_committed_quote,
    )


async def replay_usdm(tmp: Path) -> Outcome:
    # Funding every minute, so that positions pay it within the short run.
    files = ["usdm_btcusdt_20240808.gz"]
    return await replay(settings_for("paper-usdm.toml", files, tmp, 80, 1 / 60))


async def replay_coinm(tmp: Path) -> Outcome:
    files = ["cm_btcusd_perp_20240808.gz", "cm_btcusd_perp_20240809.gz"]
    # Funding every 8 h (00:00 UTC is past the run's end): the margin stays its entry value.
    return await replay(settings_for("paper-coinm.toml", files, tmp, 75, 8))


def d(x: float) -> Decimal:
    return Decimal(repr(x))


def cash_flow_pnl(o: Outcome) -> Decimal:
    """Settle-currency PnL from the venue's own trade list, by cash flow.

    Linear: money in for sells and out for buys, ``contracts x size x price``, and the
    open position marked at ``+contracts x size x mid``. Inverse: coins in for buys and
    out for sells, ``contracts x size / price``, the open position at
    ``-contracts x size / mid``. Less fees, plus funding.
    """
    spec = o.inventory.spec
    size = spec.contract_size
    total, position = Decimal(0), Decimal(0)
    for t in o.trades:
        q, p = d(t["amount"]), d(t["price"])
        sign = 1 if t["side"] == "buy" else -1
        position += sign * q
        flow = q * size / p if spec.inverse else -q * size * p
        total += sign * flow - d(t["fee"]["cost"])
    mid = d(o.mid)
    total += -position * size / mid if spec.inverse else position * size * mid
    return total + o.venue.position(spec.symbol).funding


def check_run(o: Outcome) -> None:
    symbol = o.settings.markets[0].symbol
    market = o.summary["trading"]["markets"][symbol]
    window = o.summary["feed"]["stress"]
    first = o.summary["feed"]["first_ts_ns"]

    # The backstop engaged on the fracture (a 1 s dwell after the ramp starts) and stood
    # down after the book healed, and it traded.
    (episode,) = market["episodes"]
    assert (
        window["window_start_ts_ns"]
        <= episode["start_ts_ns"]
        <= window["window_start_ts_ns"] + 5 * NS
    )
    assert episode["start_ts_ns"] - first >= 35 * NS
    assert episode["end_ts_ns"] is not None
    assert episode["end_ts_ns"] >= window["window_end_ts_ns"]
    assert episode["quotes_placed"] > 0
    assert episode["fills"] > 0
    assert len(o.trades) == o.inventory.fills > 0

    # The episode's volume is in base and quote units, not contracts: each fill's base
    # worth (linear: contracts x size; inverse: contracts x size / price) and quote worth.
    spec = o.inventory.spec
    size = float(spec.contract_size)
    base = sum(t["amount"] * size / (t["price"] if spec.inverse else 1.0) for t in o.trades)
    quote = sum(t["amount"] * size * (1.0 if spec.inverse else t["price"]) for t in o.trades)
    flows = [episode["volume"]["bought"], episode["volume"]["sold"]]
    flows += [episode["replenishment"][k] for k in ("bought", "sold")]
    assert sum(f["fills"] for f in flows) == len(o.trades)
    assert sum(f["base"] for f in flows) == pytest.approx(base, rel=1e-9)
    assert sum(f["quote"] for f in flows) == pytest.approx(quote, rel=1e-9)

    # Within its caps: committed collateral (orders' initial margin + the position's
    # maintenance margin) never above the per-market cap; the position within its limits.
    assert 0 < o.max_committed_quote <= o.settings.risk.max_notional_per_market_quote
    perp = o.settings.markets[0].perp
    venue_pos = o.venue.position(symbol)
    assert perp.max_position_contracts is not None
    assert abs(venue_pos.contracts) <= Decimal(repr(perp.max_position_contracts))

    # The bot's books are the exchange's books.
    ours = o.inventory.position
    assert ours.contracts == venue_pos.contracts
    assert ours.entry == pytest.approx(venue_pos.entry, rel=TIGHT)
    assert ours.margin == pytest.approx(venue_pos.margin, rel=TIGHT, abs=TIGHT)
    assert ours.funding == pytest.approx(venue_pos.funding, rel=TIGHT, abs=TIGHT)
    settle = o.inventory.spec.settle
    assert o.inventory.wallet == pytest.approx(o.venue._total[settle], rel=TIGHT)
    assert sum((f.amount for f in o.venue.funding_history), Decimal(0)) == venue_pos.funding
    # PnL: realised + unrealised at the last mid = the trade list's cash flow.
    pnl = o.inventory.realised_settle() + o.inventory.unrealised_settle(o.mid)
    assert pnl == pytest.approx(cash_flow_pnl(o), rel=Decimal("1e-9"), abs=TIGHT)


async def test_usdm_linear_replay_backstops_the_fracture_with_exact_accounting(
    tmp_path: Path,
) -> None:
    usdm = await replay_usdm(tmp_path)
    check_run(usdm)
    inv, venue = usdm.inventory, usdm.venue
    assert (inv.spec.inverse, inv.spec.settle) == (False, "USDT")
    # Fills are whole lots of 0.001 BTC contracts; value = contracts x 1 x price (USDT).
    for t in usdm.trades:
        assert t["cost"] == pytest.approx(t["amount"] * t["price"])
        assert t["fee"]["currency"] == "USDT"
    # A position was held across funding times: funding was paid at the configured rate
    # on the mark (mid) then, longs paying shorts.
    assert venue.funding_history
    assert inv.funding_payments == len(venue.funding_history)
    for f in venue.funding_history:
        assert f.amount == pytest.approx(-f.contracts * f.mark_price * f.rate)


async def test_coinm_inverse_replay_backstops_the_fracture_with_exact_accounting(
    tmp_path: Path,
) -> None:
    coinm = await replay_coinm(tmp_path)
    check_run(coinm)
    inv, venue = coinm.inventory, coinm.venue
    assert (inv.spec.inverse, inv.spec.settle, inv.spec.contract_size) == (True, "BTC", 100)
    # Value of a fill = contracts x 100 USD / price, in BTC; fees in BTC.
    for t in coinm.trades:
        assert t["cost"] == pytest.approx(t["amount"] * 100 / t["price"])
        assert t["fee"]["currency"] == "BTC"
    # Volume in USD is contracts x 100, whatever the price.
    assert inv.volume_quote == pytest.approx(100 * sum(t["amount"] for t in coinm.trades))
    assert venue.funding_history == []
    assert inv.funding_payments == 0
    pos = venue.position("BTC/USD:BTC")
    # Isolated margin = the position's value at its (harmonic) entry / leverage, in BTC.
    value = abs(pos.contracts) * 100 / pos.entry if pos.contracts else Decimal(0)
    assert pos.margin == pytest.approx(value / pos.leverage, rel=TIGHT, abs=TIGHT)


def test_the_example_configs_load_and_name_bundled_markets() -> None:
    for name, exchange, symbol in (
        ("paper-usdm.toml", "binanceusdm", "BTC/USDT:USDT"),
        ("paper-coinm.toml", "binancecoinm", "BTC/USD:BTC"),
    ):
        settings = load_settings(REPO / "config" / name, env={})
        markets = offline_markets(exchange)
        assert markets is not None
        validate_symbols(settings, markets, source=f"{exchange} (bundled offline markets)")
        assert settings.exchange.id == exchange
        assert settings.symbols == [symbol]
        for path in settings.feed.replay_files:
            assert (REPO / path).is_file()  # relative to the repository root
        perp = settings.markets[0].perp
        assert perp.leverage <= perp.max_leverage
        reserve = settings.markets[0].reserve
        # The reserve is margin in the settle currency, nothing else.
        assert (reserve.base > 0) == (symbol == "BTC/USD:BTC")
        assert (reserve.quote > 0) == (symbol == "BTC/USDT:USDT")


if __name__ == "__main__":  # print what the replays did (for docs/derivatives.md)
    import asyncio
    import json
    import tempfile

    async def show() -> None:
        for name, make in (("USD-M", replay_usdm), ("COIN-M", replay_coinm)):
            with tempfile.TemporaryDirectory() as tmp:
                o = await make(Path(tmp))
            symbol = o.settings.markets[0].symbol
            m = o.summary["trading"]["markets"][symbol]
            ep = m["episodes"][0]
            print(name, "wall_s", round(o.summary["wall_s"], 2), "fills", len(o.trades))
            print(" episode", {k: ep[k] for k in ("duration_s", "quotes_placed", "fills")})
            print(" max committed collateral (quote)", round(o.max_committed_quote, 2))
            print(" inventory", json.dumps(o.inventory.to_dict(o.mid), indent=1))
            print(" cash-flow pnl", cash_flow_pnl(o), "funding", o.venue.funding_history[:2])

    asyncio.run(show())
