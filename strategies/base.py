"""The one small interface every strategy implements.

A strategy is handed a :class:`MarketContext` (the book, the engine's depth sample, the
detector's reading, the inventory and the budget) and returns a :class:`Decision`: the
*full* set of quotes it wants resting on that market now (empty = none). It never
talks to an exchange: the trader passes the quotes through :mod:`bot.budget` (hard
caps, applied after the strategy so a buggy strategy cannot exceed them) to the order
manager, which alone reaches a venue and sends only the difference from what rests.
That is what lets the same strategy run on replayed data, the paper venue, a testnet or
a live account.

Strategies are synchronous, deterministic (no clock, no randomness: time is
``ctx.ts_ns``) and do not round prices or amounts -- the order manager rounds with the
market's precision. They do respect the market's minimums (:class:`MarketRules`) by not
asking for quotes too small to be sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.book import OrderBook
from bot.detector import DetectorUpdate
from bot.monitor import DepthSample

if TYPE_CHECKING:
    from bot.orders.events import OrderFilled

__all__ = [
    "REDUCE_TAG",
    "REPLENISH_TAG",
    "BudgetView",
    "Decision",
    "InventoryView",
    "MarketContext",
    "MarketRules",
    "Quote",
    "Strategy",
]


REPLENISH_TAG = "replenish:"
"""Tag prefix of quotes that rebalance the reserve after an episode: the episode tracker
books their fills as the episode's replenishment (and its cost), not as backstop flow."""

REDUCE_TAG = "reduce:"
"""Tag prefix of quotes that may only shrink a position (a perpetual in the REDUCING
state): the order manager sends them with ccxt's ``reduceOnly``."""


@dataclass(frozen=True, slots=True)
class Quote:
    """Rest a limit order. ``tag`` groups a strategy's quotes (e.g. ladder rung)."""

    symbol: str
    side: Literal["buy", "sell"]
    price: float
    amount: float
    post_only: bool = True
    tag: str = ""

    @property
    def notional(self) -> float:
        return self.price * self.amount


def _step(value: Any) -> float:
    """A ccxt precision entry as a step size.

    ccxt gives a step (``0.01``) in TICK_SIZE mode (Binance and most venues) and a
    number of decimals (``2``) in DECIMAL_PLACES mode; a value >= 1 is read as decimals.
    """
    if value is None:
        return 0.0
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        return 0.0
    return v if v < 1 else 10.0 ** -round(v)


def _limit(limits: Mapping[str, Any], name: str) -> float:
    entry = limits.get(name) or {}
    value = entry.get("min") if isinstance(entry, Mapping) else None
    return float(value) if value else 0.0


@dataclass(frozen=True, slots=True)
class MarketRules:
    """The parts of a ccxt market dict that sizing needs (0 = unknown / no limit).

    Amounts are in the market's order units: base for spot, contracts for contract
    markets (ccxt's ``contract``), whose value follows ccxt's ``contractSize`` and
    ``linear``/``inverse``: a linear contract is ``contract_size`` base (its notional
    ``amount x contract_size x price`` in quote), an inverse one is ``contract_size``
    quote (notional ``amount x contract_size``, worth ``/ price`` in base). For spot
    (``contract_size`` 1, linear) every conversion below is the identity on amounts.
    """

    price_tick: float = 0.0
    amount_step: float = 0.0
    amount_min: float = 0.0
    cost_min: float = 0.0
    contract_size: float = 1.0
    inverse: bool = False

    @classmethod
    def from_market(cls, market: Mapping[str, Any] | None) -> MarketRules:
        if not market:
            return cls()
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        contract = bool(market.get("contract"))
        size = float(market.get("contractSize") or 1.0) if contract else 1.0
        return cls(
            price_tick=_step(precision.get("price")),
            amount_step=_step(precision.get("amount")),
            amount_min=_limit(limits, "amount"),
            cost_min=_limit(limits, "cost"),
            contract_size=size if math.isfinite(size) and size > 0 else 1.0,
            inverse=contract and bool(market.get("inverse")),
        )

    @property
    def is_unit(self) -> bool:
        """True when an amount is one base unit (spot, or linear contracts of 1 base)."""
        return self.contract_size == 1.0 and not self.inverse

    def notional(self, price: float, amount: float) -> float:
        """Quote notional of ``amount`` (order units) at ``price``."""
        if self.inverse:
            return amount * self.contract_size
        return amount * self.contract_size * price

    def base_amount(self, price: float, amount: float) -> float:
        """Base-asset equivalent of ``amount`` (order units) at ``price``."""
        if self.inverse:
            return amount * self.contract_size / price if price > 0 else 0.0
        return amount * self.contract_size

    def amount_for_notional(self, notional: float, price: float) -> float:
        """Order units worth ``notional`` (quote) at ``price``."""
        if self.inverse:
            return notional / self.contract_size
        return notional / (self.contract_size * price) if price > 0 else 0.0

    def amount_for_base(self, base: float, price: float) -> float:
        """Order units worth ``base`` (base asset) at ``price``."""
        if self.inverse:
            return base * price / self.contract_size
        return base / self.contract_size

    def min_notional(self, price: float) -> float:
        """The smallest notional worth asking for at ``price``.

        The order manager truncates amounts to ``amount_step``, which can take up to one
        step off, so a quote needs that much headroom above the venue's cost and amount
        minimums to still pass them once rounded.
        """
        return max(self.cost_min, self.notional(price, self.amount_min)) + self.notional(
            price, self.amount_step
        )

    def quote_sample(self, sample: DepthSample) -> DepthSample:
        """``sample`` with its band depth in true base and quote units.

        The book's sizes are order units, so the monitor's ``quote`` column is
        ``size x price``: quote notional only when a unit is one base. For contracts it
        is rescaled (inverse: ``contracts x contract_size`` at each level, taken at the
        mid), so depth, deficits and floors read in quote on every market. The same
        object for spot and unit linear contracts.
        """
        if self.is_unit:
            return sample
        depth = sample.depth.copy()
        units = depth[..., 0].copy()
        if self.inverse:
            depth[..., 1] = units * self.contract_size
            depth[..., 0] = depth[..., 1] / sample.mid if sample.mid > 0 else 0.0
        else:
            depth[..., 0] = units * self.contract_size
            depth[..., 1] = depth[..., 1] * self.contract_size
        return replace(sample, depth=depth)


@dataclass(slots=True, unsafe_hash=True)
class InventoryView:
    """One market's inventory, as :class:`bot.inventory.Inventory` accounts it.

    Not frozen (built on every book update; a frozen constructor costs ~5x as much),
    but nothing assigns to a view once built; it hashes as the frozen one did.

    PnL is in quote units against simply holding the starting reserve: ``realised``
    closes position at average cost with fees folded into the cost basis, so
    ``realised_pnl + unrealised_pnl`` equals ``net_base x mid + (quote - start_quote)``.
    """

    base: float
    quote: float
    start_base: float
    start_quote: float
    net_base: float
    """Position taken on since the start, ``base - start_base`` (computed exactly)."""
    avg_cost: float | None
    """Average entry price of the net position (fees included); None when flat."""
    realised_pnl: float
    unrealised_pnl: float
    """``(mid - avg_cost) x net_base`` at the view's ``mid`` (0 when flat or no mid)."""
    fees_quote: float
    """Fees paid, valued in quote (base fees at the fill price)."""
    committed_quote: float
    """Resting orders' notional plus ``|net_base| x mid``."""
    mid: float | None

    @property
    def marked_pnl(self) -> float:
        return self.realised_pnl + self.unrealised_pnl

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "quote": self.quote,
            "start_base": self.start_base,
            "start_quote": self.start_quote,
            "net_base": self.net_base,
            "avg_cost": self.avg_cost,
            "realised_pnl": self.realised_pnl,
            "unrealised_pnl": self.unrealised_pnl,
            "marked_pnl": self.marked_pnl,
            "fees_quote": self.fees_quote,
            "committed_quote": self.committed_quote,
            "mid": self.mid,
        }


_INF = float("inf")


@dataclass(frozen=True, slots=True)
class BudgetView:
    """What one market may commit now, as :meth:`bot.budget.Budget.view` computes it.

    ``quote_room`` is for the *whole* desired set (both sides): the market's current
    quotes are replaced by it, so they do not count, while its position and orders on
    their way out do. Strategies size within these; the trader's budget fit enforces
    them afterwards anyway.
    """

    quote_room: float = _INF
    """Notional the full set of quotes may total (per-market and total caps)."""
    max_order_quote: float = _INF
    market_cap_quote: float = _INF
    """The per-market cap itself (for position limits)."""
    base_available: float = _INF
    """Base that sells may use: balance above the reserve floor, less leaving sells."""
    quote_available: float = _INF
    """Quote that buys may use: balance above the reserve floor, less leaving buys."""
    fee_rate: float = 0.0
    """Fee rate the balances must also cover (the larger of maker and taker)."""
    max_position_base: float | None = None
    """Configured cap on ``|net position|`` in base (risk.max_position_base), if any."""
    closing_is_free: bool = False
    """True on contract markets: the part of an order that only closes the position
    needs no margin, so the room does not limit it (balances still do)."""

    def position_limit_base(self, fraction: float, price: float) -> float:
        """The net position a strategy should stay within: ``fraction`` of the cap."""
        limit = fraction * self.market_cap_quote / price if price > 0 else 0.0
        if self.max_position_base is not None:
            limit = min(limit, self.max_position_base)
        return max(0.0, limit)


@dataclass(slots=True, unsafe_hash=True)
class MarketContext:
    """Everything a strategy may look at for one decision on one market.

    Read only. Not frozen: one is built for every reading that reaches ``decide`` (a
    trigger's among them), and a frozen constructor costs several times as much; nothing
    assigns to a context once built, and it hashes as the frozen one did.
    """

    symbol: str
    ts_ns: int
    book: OrderBook
    sample: DepthSample
    detector: DetectorUpdate | None
    """The detector's reading for this sample (None: no detector on this market)."""
    inventory: InventoryView
    budget: BudgetView
    rules: MarketRules = MarketRules()
    reduce_only: bool = False
    """The risk engine lets only orders that shrink the position through (a perpetual
    near liquidation or over its leverage): ask for nothing else."""
    paused_sides: frozenset[str] = frozenset()
    """Sides (``buy``/``sell``) the risk engine does not let grow the position now (the
    side that pays extreme funding)."""
    order_room: int | None = None
    """Orders the order-rate limit would let out now; None while it is full (a whole
    burst). A strategy may hold off a requote it has no room for."""


DecisionMode = Literal["idle", "backstop", "replenish", "market-make"]


@dataclass(slots=True, unsafe_hash=True)
class Decision:
    """The full desired set of resting quotes for the market (empty = none) and why.

    Read only; not frozen for the same reason as :class:`MarketContext`.
    """

    quotes: tuple[Quote, ...] = ()
    reason: str = ""
    mode: DecisionMode = "idle"


class Strategy(Protocol):
    name: str

    def decide(self, ctx: MarketContext) -> Decision:
        """Called after every applied book update (and detector reading) of a market."""
        ...

    def on_fill(self, fill: OrderFilled) -> None:
        """Called once per new fill of one of the strategy's orders (after the inventory)."""
        ...
