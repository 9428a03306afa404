"""Watching option books: band depth per strike and expiry, in premium and vega notional.

A fracture on an option book is not a count of contracts: ten contracts of a far
out-of-the-money weekly are worth little premium and little vega, ten at the money of a
quarterly a lot. :class:`OptionBookMonitor` is an engine listener: it takes the forward
from the underlying's book (a perpetual or the same-expiry future: its mid), and for every
update of an option's book measures, per side, the liquidity within ``band_vol_points``
of the mid's implied volatility:

- ``contracts``: the levels' sizes;
- ``premium_quote``: ``size x contract_size x price``, the price in quote (a premium
  quoted in the coin, as on Deribit, converted at the forward);
- ``vega_quote``: ``size x contract_size x vega per vol point`` at the mid's implied
  volatility: what a 1-point move of volatility is worth across that liquidity.

Levels are in the band when their own implied volatility is within the band of the mid's
(a level priced outside what any volatility gives is left out); the touch always
counts. It keeps the latest reading per option and the thinnest vega depth seen per
side, and answers a surface of ``(expiry, strike) -> call / put`` readings. Markets are
ccxt option markets (``option``, ``strike``, ``expiry``, ``optionType``, ``contractSize``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.book import OrderBook, Side
from bot.feeds.events import Levels, Trade
from bot.monitor import DepthSample
from bot.risk.greeks import YEAR_S, black76, implied_vol

_LEVELS = 200
"""Levels read per side (option books are shallow)."""


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option market, from its ccxt structure."""

    symbol: str
    underlying: str
    """The base asset (BTC)."""
    strike: float
    expiry_ms: int
    call: bool
    contract_size: float
    premium_in_base: bool
    """The premium is quoted in the base coin (Deribit's BTC options), not in quote."""

    @classmethod
    def from_market(cls, market: Mapping[str, Any]) -> OptionSpec:
        if not market.get("option"):
            raise ValueError(f"{market.get('symbol')} is not an option market")
        info = market.get("info")
        premium_ccy = info.get("quote_currency") if isinstance(info, Mapping) else None
        base = str(market["base"])
        premium_ccy = premium_ccy or market.get("settle") or market.get("quote")
        return cls(
            symbol=str(market["symbol"]),
            underlying=base,
            strike=float(market["strike"]),
            expiry_ms=int(market["expiry"]),
            call=market.get("optionType") == "call",
            contract_size=float(market.get("contractSize") or 1.0),
            premium_in_base=premium_ccy == base,
        )

    def years_to_expiry(self, now_ms: int) -> float:
        return max(0.0, (self.expiry_ms - now_ms) / 1000.0 / YEAR_S)

    def premium_quote(self, price: float, forward: float) -> float:
        """A premium as the book quotes it, in quote per unit of underlying."""
        return price * forward if self.premium_in_base else price


@dataclass(frozen=True, slots=True)
class OptionSideDepth:
    levels: int = 0
    contracts: float = 0.0
    premium_quote: float = 0.0
    vega_quote: float = 0.0
    """Quote per vol point."""


@dataclass(frozen=True, slots=True)
class OptionDepth:
    """One option book's band depth at one moment."""

    symbol: str
    ts_ns: int
    strike: float
    expiry_ms: int
    call: bool
    forward: float
    mid_premium_quote: float
    iv_mid: float
    """Implied volatility of the mid premium (1.00 = 100 %)."""
    vega_per_point: float
    """Vega per vol point per contract at ``iv_mid``."""
    delta: float
    band_vol_points: float
    bid: OptionSideDepth
    ask: OptionSideDepth


def option_band_depth(
    spec: OptionSpec,
    bids: Levels,
    asks: Levels,
    *,
    forward: float,
    ts_ns: int,
    band_vol_points: float,
) -> OptionDepth | None:
    """The band depth of one option book; None without a two-sided book, a forward, time
    to expiry, or a mid that some volatility prices."""
    if not (len(bids) and len(asks) and forward > 0):
        return None
    t = spec.years_to_expiry(ts_ns // 1_000_000)
    if t <= 0:
        return None
    mid = spec.premium_quote((float(bids[0, 0]) + float(asks[0, 0])) / 2.0, forward)
    iv = implied_vol(mid, forward, spec.strike, t, spec.call)
    if iv is None:
        return None
    g = black76(forward, spec.strike, t, iv, spec.call)
    band = band_vol_points / 100.0

    def side(levels: Levels) -> OptionSideDepth:
        n, contracts, premium = 0, 0.0, 0.0
        for i, (price, size) in enumerate(levels.tolist()):
            quote_price = spec.premium_quote(price, forward)
            level_iv = implied_vol(quote_price, forward, spec.strike, t, spec.call)
            # The touch always counts: near expiry one tick is many vol points, and a
            # book whose touch is outside any band would read as empty for ever.
            if level_iv is None or (i > 0 and abs(level_iv - iv) > band + 1e-12):
                continue
            n += 1
            contracts += size
            premium += size * spec.contract_size * quote_price
        vega = contracts * spec.contract_size * g.vega_per_point
        return OptionSideDepth(n, contracts, premium, vega)

    return OptionDepth(
        symbol=spec.symbol,
        ts_ns=ts_ns,
        strike=spec.strike,
        expiry_ms=spec.expiry_ms,
        call=spec.call,
        forward=forward,
        mid_premium_quote=mid,
        iv_mid=iv,
        vega_per_point=g.vega_per_point,
        delta=g.delta,
        band_vol_points=band_vol_points,
        bid=side(bids),
        ask=side(asks),
    )


@dataclass(slots=True)
class OptionBookMonitor:
    """An engine listener over option books and their underlying's book."""

    underlying_symbol: str
    specs: dict[str, OptionSpec]
    band_vol_points: float = 2.0
    forward: float | None = None
    latest: dict[str, OptionDepth] = field(default_factory=dict)
    lows: dict[tuple[str, str], float] = field(default_factory=dict)
    """``(symbol, "bid"|"ask") ->`` the thinnest vega depth seen (quote per vol point)."""

    @classmethod
    def from_markets(
        cls, underlying_symbol: str, markets: Mapping[str, Mapping[str, Any]], **kw: Any
    ) -> OptionBookMonitor:
        specs = {s: OptionSpec.from_market(m) for s, m in markets.items() if m.get("option")}
        return cls(underlying_symbol, specs, **kw)

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        if symbol == self.underlying_symbol:
            self.forward = sample.mid
            return
        spec = self.specs.get(symbol)
        if spec is None or self.forward is None:
            return
        depth = option_band_depth(
            spec,
            book.top(_LEVELS, Side.BID),
            book.top(_LEVELS, Side.ASK),
            forward=self.forward,
            ts_ns=sample.ts_ns,
            band_vol_points=self.band_vol_points,
        )
        if depth is None:
            return
        self.latest[symbol] = depth
        for name, s in (("bid", depth.bid), ("ask", depth.ask)):
            key = (symbol, name)
            self.lows[key] = min(self.lows.get(key, math.inf), s.vega_quote)

    def on_trade(self, trade: Trade) -> None:
        return None

    def surface(self) -> dict[tuple[int, float], dict[str, OptionDepth]]:
        """``(expiry_ms, strike) -> {"call": ..., "put": ...}`` of the latest readings."""
        out: dict[tuple[int, float], dict[str, OptionDepth]] = {}
        for depth in self.latest.values():
            out.setdefault((depth.expiry_ms, depth.strike), {})["call" if depth.call else "put"] = (
                depth
            )
        return dict(sorted(out.items()))
