"""The option book's inventory: positions, premium, fees, mark-to-model and settlement.

Options here are coin-settled (Deribit style): premiums and fees are BTC, one contract is
one BTC of underlying. Per option the inventory keeps the net position in contracts;
``cash_btc`` is premium received minus premium paid minus fees plus settlements.

- **greeks** of the position: ``contracts x contract_size x`` Black-76 delta / vega per
  vol point at the forward and the option's volatility (the book's mid implied
  volatility when known, else the configured surface);
- **mark-to-model** value, USD: ``cash_btc x F + sum(contracts x size x model price)``;
  starting from zero, that is the PnL in USD at the current forward;
- **expiry settlement**: at or after an option's expiry, cash-settled against the
  forward then: an in-the-money option pays its intrinsic value
  ``max(0, F - K)`` (call) or ``max(0, K - F)`` (put) USD per unit, i.e. ``/ F`` BTC,
  from the short to the long; the position is closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.risk.greeks import GreekExposure, black76
from bot.risk.options import OptionSpec

VolFor = Callable[[OptionSpec], float]


@dataclass(frozen=True, slots=True)
class Settlement:
    symbol: str
    ts_ms: int
    contracts: float
    forward: float
    intrinsic_usd: float
    """Per unit of underlying."""
    cash_btc: float
    """What the position received (negative: paid)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "ts_ms": self.ts_ms,
            "contracts": self.contracts,
            "forward": self.forward,
            "intrinsic_usd": self.intrinsic_usd,
            "cash_btc": self.cash_btc,
        }


@dataclass(slots=True)
class OptionInventory:
    specs: Mapping[str, OptionSpec]
    positions: dict[str, float] = field(default_factory=dict)
    cash_btc: float = 0.0
    premium_paid_btc: float = 0.0
    premium_received_btc: float = 0.0
    fees_btc: float = 0.0
    fills: int = 0
    volume_contracts: float = 0.0
    settlements: list[Settlement] = field(default_factory=list)

    def apply_fill(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        price_btc: float,
        contracts: float,
        fee_btc: float = 0.0,
    ) -> None:
        spec = self.specs[symbol]
        premium = price_btc * contracts * spec.contract_size
        signed = contracts if side == "buy" else -contracts
        self.positions[symbol] = self.positions.get(symbol, 0.0) + signed
        if side == "buy":
            self.premium_paid_btc += premium
            self.cash_btc -= premium
        else:
            self.premium_received_btc += premium
            self.cash_btc += premium
        self.cash_btc -= fee_btc
        self.fees_btc += fee_btc
        self.fills += 1
        self.volume_contracts += contracts

    def settle_expired(self, now_ms: int, forward: float) -> list[Settlement]:
        """Settle every position whose option has expired, against ``forward``."""
        done: list[Settlement] = []
        for symbol, contracts in list(self.positions.items()):
            spec = self.specs[symbol]
            if spec.expiry_ms > now_ms:
                continue
            del self.positions[symbol]
            if contracts == 0:
                continue
            k = spec.strike
            intrinsic = max(0.0, forward - k) if spec.call else max(0.0, k - forward)
            cash = contracts * spec.contract_size * intrinsic / forward
            self.cash_btc += cash
            s = Settlement(symbol, now_ms, contracts, forward, intrinsic, cash)
            self.settlements.append(s)
            done.append(s)
        return done

    def exposure(self, forward: float, now_ms: int, vol_for: VolFor) -> GreekExposure:
        """Total delta (BTC), vega (USD per vol point) and gamma (BTC of delta per 1 %
        move) of the open positions."""
        delta = vega = gamma = 0.0
        for symbol, contracts in self.positions.items():
            if contracts == 0:
                continue
            spec = self.specs[symbol]
            g = black76(
                forward, spec.strike, spec.years_to_expiry(now_ms), vol_for(spec), spec.call
            )
            units = contracts * spec.contract_size
            delta += units * g.delta
            vega += units * g.vega_per_point
            gamma += units * g.gamma_per_pct(forward)
        return GreekExposure(delta, vega, gamma)

    def value_usd(self, forward: float, now_ms: int, vol_for: VolFor) -> float:
        """Mark-to-model value (= PnL since a flat start), USD at ``forward``."""
        value = self.cash_btc * forward
        for symbol, contracts in self.positions.items():
            spec = self.specs[symbol]
            g = black76(
                forward, spec.strike, spec.years_to_expiry(now_ms), vol_for(spec), spec.call
            )
            value += contracts * spec.contract_size * g.price
        return value

    def to_dict(self, forward: float | None, now_ms: int, vol_for: VolFor) -> dict[str, Any]:
        out: dict[str, Any] = {
            "positions": {s: c for s, c in sorted(self.positions.items()) if c},
            "cash_btc": self.cash_btc,
            "premium_paid_btc": self.premium_paid_btc,
            "premium_received_btc": self.premium_received_btc,
            "fees_btc": self.fees_btc,
            "fills": self.fills,
            "volume_contracts": self.volume_contracts,
            "settlements": [s.to_dict() for s in self.settlements],
        }
        if forward is not None:
            g = self.exposure(forward, now_ms, vol_for)
            out.update(
                delta=g.delta,
                vega=g.vega,
                mark_to_model_usd=self.value_usd(forward, now_ms, vol_for),
            )
        return out
