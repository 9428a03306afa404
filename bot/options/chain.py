"""A SYNTHETIC option chain: Deribit-style BTC option books priced off the underlying.

There is no option recording in the repository, so offline runs need option books from
somewhere. :class:`SyntheticChainFeed` wraps the underlying's feed (the bundled USD-M
BTCUSDT recording) and, every ``step_s`` of data time, emits a snapshot of every
unexpired option's book:

- forward ``F`` = the underlying's true mid (its own book, kept here from the events);
- volatility ``sigma(K) = atm_vol + skew x ln(K/F) + smile x ln(K/F)^2`` (floored at 5 %);
- level ``i`` of the bids at Black-76 with ``sigma - half - i x half / 2`` vol points, of
  the asks at ``sigma + half + i x half / 2``, as a premium in BTC (``price / F``),
  rounded outwards to the tick; sizes ``level_size x (1 + U(-noise, noise))``, rounded to
  the 0.1-contract lot, from a ``random.Random(seed)``;
- with ``trade_probability`` per option and step, one print of ``trade_size`` at the
  touch, aggressor side drawn from the same generator.

Same recording and settings, same stream. Markets are built by ccxt's own Deribit
parser from instrument entries in Deribit's ``public/get_instruments`` format, so the
symbols are ``BTC/USD:BTC-240809-62000-C`` with ``type: option``, ``strike``,
``expiry``, ``optionType``, ``contractSize`` 1 and BTC settlement. Stress overlays
(:mod:`bot.feeds.stress`) wrap this feed and so scale option books as well.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from bot.book import OrderBook
from bot.clock import ManualClock
from bot.feeds.events import BookDelta, BookSnapshot, MarketEvent, Trade
from bot.feeds.stress import FeedStall, parse_stress_spec, resolve
from bot.feeds.stress.scale import BookScaler, ScalePlan
from bot.options.settings import SyntheticChainSettings, expiry_ms
from bot.risk.greeks import black76
from bot.risk.options import OptionSpec

SYNTHETIC_LABEL = "synthetic option chain (Black-76 on the underlying's mid; not market data)"
TICK = 0.0001
"""Premium tick, BTC (Deribit's below 0.005; used throughout for finer synthetic books)."""
LOT = 0.1
_MIN_VOL = 0.05
_DAY_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class _Feed(Protocol):
    def events(self) -> AsyncIterator[MarketEvent]: ...


def deribit_instrument(base: str, strike: float, expiry: int, call: bool) -> dict[str, Any]:
    """One entry of Deribit's ``public/get_instruments`` result (its documented fields)."""
    day = datetime.fromtimestamp(expiry / 1000, tz=UTC)
    code = f"{day.day}{_DAY_NAMES[day.month - 1]}{day.year % 100:02d}"
    letter = "C" if call else "P"
    return {
        "tick_size": TICK,
        "taker_commission": 0.0003,
        "strike": float(strike),
        "settlement_period": "day",
        "settlement_currency": base,
        "quote_currency": base,
        "option_type": "call" if call else "put",
        "min_trade_amount": LOT,
        "maker_commission": 0.0003,
        "kind": "option",
        "is_active": True,
        "instrument_name": f"{base}-{code}-{strike:g}-{letter}",
        "expiration_timestamp": expiry,
        "creation_timestamp": expiry - 30 * 86_400_000,
        "counter_currency": "USD",
        "contract_size": 1.0,
        "block_trade_commission": 0.0003,
        "base_currency": base,
    }


def chain_markets(cfg: SyntheticChainSettings, base: str = "BTC") -> dict[str, dict[str, Any]]:
    """The chain's ccxt option markets (calls and puts, every expiry x strike)."""
    from bot.markets import markets_from_responses

    result = [
        deribit_instrument(base, strike, expiry_ms(text), call)
        for text in cfg.expiries
        for strike in cfg.strikes
        for call in (True, False)
    ]
    return markets_from_responses("deribit", {"get_instruments": {"result": result}})


def surface_vol(cfg: SyntheticChainSettings, strike: float, forward: float) -> float:
    x = math.log(strike / forward)
    return max(_MIN_VOL, cfg.atm_vol + cfg.skew * x + cfg.smile * x * x)


def option_book(
    spec: OptionSpec,
    cfg: SyntheticChainSettings,
    forward: float,
    now_ms: int,
    rng: random.Random,
) -> tuple[list[list[float]], list[list[float]]] | None:
    """``(bids, asks)`` rows of one option's synthetic book; None once it has expired."""
    t = spec.years_to_expiry(now_ms)
    if t <= 0:
        return None
    sigma = surface_vol(cfg, spec.strike, forward)
    half = cfg.half_spread_vol_points / 100.0

    def premium(vol: float) -> float:
        return black76(forward, spec.strike, t, max(vol, 1e-4), spec.call).price / forward

    def size() -> float:
        noisy = cfg.level_size * (1.0 + rng.uniform(-cfg.size_noise, cfg.size_noise))
        return round(max(LOT, round(noisy / LOT) * LOT), 1)

    bids: list[list[float]] = []
    asks: list[list[float]] = []
    for i in range(cfg.levels):
        step = half + i * half / 2.0
        # At least a tick between levels: a far-from-the-money option moves less than
        # a tick per vol point.
        bid = math.floor(premium(sigma - step) / TICK + 1e-9) * TICK
        ask = math.ceil(premium(sigma + step) / TICK - 1e-9) * TICK
        if bids:
            bid = min(bid, bids[-1][0] - TICK)
        if asks:
            ask = max(ask, asks[-1][0] + TICK)
        ask = max(ask, TICK * (2 if i == 0 else 1))
        if bid >= TICK - 1e-12:
            bids.append([round(bid, 4), size()])
        asks.append([round(ask, 4), size()])
    if bids and asks and bids[0][0] >= asks[0][0]:
        bids = [row for row in bids if row[0] < asks[0][0]]
    return bids, asks


class SyntheticChainFeed:
    """The underlying's feed with synthetic option books interleaved (see module doc)."""

    label = SYNTHETIC_LABEL

    def __init__(
        self,
        inner: _Feed,
        *,
        underlying: str,
        markets: Mapping[str, Mapping[str, Any]],
        cfg: SyntheticChainSettings,
    ) -> None:
        self.inner = inner
        self.underlying = underlying
        self.specs: list[OptionSpec] = [OptionSpec.from_market(m) for m in markets.values()]
        self.cfg = cfg
        self.stats = getattr(inner, "stats", None)
        self.snapshots = 0
        self.trades = 0
        # [options.synthetic] stress: the overlay's own scaling, on option books only.
        self.plan: ScalePlan | None = None
        self.scalers: dict[str, BookScaler] = {}
        if cfg.stress is not None:
            spec = resolve(parse_stress_spec(cfg.stress))
            assert not isinstance(spec, FeedStall)
            self.plan = ScalePlan.of(spec)

    async def events(self) -> AsyncIterator[MarketEvent]:
        book = OrderBook(self.underlying, clock=ManualClock())
        rng = random.Random(self.cfg.seed)
        step_ns = round(self.cfg.step_s * 1e9)
        next_ns: int | None = None
        t0: int | None = None
        async for event in self.inner.events():
            yield event
            if t0 is None:
                t0 = event.ts_ns
            if event.symbol == self.underlying and isinstance(event, BookSnapshot | BookDelta):
                book.apply(event)
            ts = event.ts_ns
            if next_ns is not None and ts < next_ns:
                continue
            mid = book.mid()
            if mid is None:
                continue
            next_ns = ts + step_ns
            shapes = self.plan.at((ts - t0) / 1e9) if self.plan is not None else None
            for out in self._chain(ts, mid, rng):
                if shapes is not None and isinstance(out, BookSnapshot):
                    scaler = self.scalers.setdefault(out.symbol, BookScaler(out.symbol))
                    scaled = scaler.process(out, *shapes)
                    assert isinstance(scaled, BookSnapshot)
                    out = scaled
                yield out

    def _chain(self, ts_ns: int, forward: float, rng: random.Random) -> Iterator[MarketEvent]:
        now_ms = ts_ns // 1_000_000
        for spec in self.specs:
            rows = option_book(spec, self.cfg, forward, now_ms, rng)
            if rows is None:
                continue
            bids, asks = rows
            self.snapshots += 1
            yield BookSnapshot(spec.symbol, ts_ns, _levels(bids), _levels(asks))
            if bids and asks and rng.random() < self.cfg.trade_probability:
                buy = rng.random() < 0.5
                self.trades += 1
                yield Trade(
                    spec.symbol,
                    ts_ns,
                    asks[0][0] if buy else bids[0][0],
                    self.cfg.trade_size,
                    "buy" if buy else "sell",
                    f"syn-{self.trades}",
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "synthetic_option_snapshots": self.snapshots,
            "synthetic_option_trades": self.trades,
        }


def _levels(rows: Sequence[Sequence[float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    if not rows:
        return np.empty((0, 2), dtype=np.float64)
    return np.asarray(rows, dtype=np.float64)
