"""Episodes: every intervention of the backstop as one auditable record.

An episode starts on the detector update that moves it to an active state (ENGAGED,
or straight through with a zero dwell) and ends on the one that returns it to CALM.
:class:`EpisodeTracker` (one per market) is fed, in the trader's order:

- :meth:`~EpisodeTracker.on_update` with every detector reading, the inventory view and
  the committed notional at that moment (starts and ends episodes, tracks depth,
  spread, health and the most collateral committed);
- :meth:`~EpisodeTracker.on_notice` with every order-manager notice for the market and
  the order's tag (counts quotes placed, books fills).

Fills while an episode is active are its flow. Fills after it ended are booked to the
last episode: replenishment fills (tag starting with ``replenish:``) as its
*replenishment*, with what rebalancing cost against the mid at the fill, fees
included; anything else (a quote that filled while its cancel was in flight) as a
late fill of the episode. The id is ``SYMBOL@start_ts_ns``: deterministic, so a replay
gives the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bot.detector import Cause, DetectorUpdate, Recovery, Trigger
from bot.inventory import currencies
from bot.orders.events import OrderFilled, OrderNotice, OrderStateChanged
from bot.positions import is_contract
from strategies.base import REPLENISH_TAG, InventoryView

_INF = float("inf")


@dataclass(frozen=True, slots=True)
class Units:
    """How a fill's amount turns into base and quote volume.

    Spot amounts are base units. Contract markets count contracts: a linear contract is
    ``contract_size`` base, an inverse one ``contract_size`` quote (so its base worth
    depends on the price). Floats, not :class:`~bot.positions.ContractSpec`'s Decimals:
    these are report totals, and the exact books live in the inventory.
    """

    contract_size: float = 1.0
    inverse: bool = False

    @classmethod
    def of(cls, market: Mapping[str, Any] | None) -> Units:
        if not is_contract(market):
            return SPOT_UNITS
        assert market is not None
        return cls(float(market.get("contractSize") or 1.0), bool(market.get("inverse")))

    def base(self, amount: float, price: float) -> float:
        size = amount * self.contract_size
        return size / price if self.inverse else size

    def quote(self, amount: float, price: float) -> float:
        size = amount * self.contract_size
        return size if self.inverse else size * price


SPOT_UNITS: Final = Units()


@dataclass(slots=True)
class Flow:
    """Fills in one direction and their totals, in base and quote units."""

    fills: int = 0
    base: float = 0.0
    quote: float = 0.0

    def add(self, amount: float, price: float, units: Units = SPOT_UNITS) -> None:
        self.fills += 1
        self.base += units.base(amount, price)
        self.quote += units.quote(amount, price)

    def to_dict(self) -> dict[str, Any]:
        avg = self.quote / self.base if self.base else None
        return {"fills": self.fills, "base": self.base, "quote": self.quote, "avg_price": avg}


@dataclass(slots=True)
class Replenishment:
    """Rebalancing after an episode: its fills and what they cost against the mid."""

    bought: Flow = field(default_factory=Flow)
    sold: Flow = field(default_factory=Flow)
    fees_quote: float = 0.0
    cost_quote: float = 0.0
    """Price paid over the mid at each fill (buys) or received under it (sells), plus
    fees: what rebalancing cost compared with trading at mid for free."""
    unpriced_fills: int = 0
    """Fills with no mid known at the time (their price cost is not in ``cost_quote``)."""
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None

    @property
    def fills(self) -> int:
        return self.bought.fills + self.sold.fills

    def to_dict(self) -> dict[str, Any]:
        return {
            "fills": self.fills,
            "bought": self.bought.to_dict(),
            "sold": self.sold.to_dict(),
            "fees_quote": self.fees_quote,
            "cost_quote": self.cost_quote,
            "unpriced_fills": self.unpriced_fills,
            "first_ts_ns": self.first_ts_ns,
            "last_ts_ns": self.last_ts_ns,
        }


@dataclass(slots=True)
class Episode:
    id: str
    symbol: str
    start_ts_ns: int
    trigger: Trigger | None
    """The rule (and numbers) that started the episode."""
    inventory_before: InventoryView
    depth_before: tuple[float, float]
    """(bid, ask) band quote depth (own quotes excluded) on the engaging update."""
    baseline_before: tuple[float | None, float | None]
    end_ts_ns: int | None = None
    recovery: Recovery | None = None
    inventory_after: InventoryView | None = None
    depth_after: tuple[float, float] | None = None
    depth_min: list[float] = field(default_factory=lambda: [_INF, _INF])
    max_spread_bps: float = 0.0
    min_health: float = 1.0
    relapses: int = 0
    quotes_placed: int = 0
    bought: Flow = field(default_factory=Flow)
    sold: Flow = field(default_factory=Flow)
    late_fills: int = 0
    fees_quote: float = 0.0
    fees: dict[str, float] = field(default_factory=dict)
    max_committed_quote: float = 0.0
    replenishment: Replenishment = field(default_factory=Replenishment)

    @property
    def active(self) -> bool:
        return self.end_ts_ns is None

    @property
    def fills(self) -> int:
        return self.bought.fills + self.sold.fills

    @property
    def duration_s(self) -> float | None:
        return None if self.end_ts_ns is None else (self.end_ts_ns - self.start_ts_ns) / 1e9

    @property
    def realised_pnl(self) -> float | None:
        """Realised PnL booked during the episode (inventory's average-cost figure)."""
        after = self.inventory_after
        return None if after is None else after.realised_pnl - self.inventory_before.realised_pnl

    @property
    def marked_pnl(self) -> float | None:
        """The episode's trades valued at the mid at its end, fees included:
        ``(quote_after - quote_before) + (base_after - base_before) x mid_after``."""
        after, before = self.inventory_after, self.inventory_before
        if after is None or after.mid is None:
            return None
        return (after.quote - before.quote) + (after.base - before.base) * after.mid

    def to_dict(self) -> dict[str, Any]:
        after = self.inventory_after
        seen = self.depth_min[0] != _INF
        return {
            "id": self.id,
            "symbol": self.symbol,
            "start_ts_ns": self.start_ts_ns,
            "end_ts_ns": self.end_ts_ns,
            "duration_s": self.duration_s,
            "active": self.active,
            "trigger": None if self.trigger is None else self.trigger.to_dict(),
            "recovery": None if self.recovery is None else self.recovery.to_dict(),
            "relapses": self.relapses,
            "quotes_placed": self.quotes_placed,
            "fills": self.fills,
            "late_fills": self.late_fills,
            "volume": {
                "bought": self.bought.to_dict(),
                "sold": self.sold.to_dict(),
                "base": self.bought.base + self.sold.base,
                "quote": self.bought.quote + self.sold.quote,
            },
            "inventory_before": self.inventory_before.to_dict(),
            "inventory_after": None if after is None else after.to_dict(),
            "realised_pnl": self.realised_pnl,
            "marked_pnl": self.marked_pnl,
            "fees_quote": self.fees_quote,
            "fees": dict(self.fees),
            "max_committed_quote": self.max_committed_quote,
            "depth": {
                "before": list(self.depth_before),
                "baseline_before": list(self.baseline_before),
                "min": list(self.depth_min) if seen else None,
                "after": None if self.depth_after is None else list(self.depth_after),
            },
            "max_spread_bps": self.max_spread_bps,
            "min_health": self.min_health,
            "replenishment": self.replenishment.to_dict(),
        }


class EpisodeTracker:
    """Episodes of one market. Not thread-safe; fed in event order."""

    def __init__(self, symbol: str, market: Mapping[str, Any] | None = None) -> None:
        self.symbol = symbol
        self.units = Units.of(market)
        """Contract sizes of ``market`` (ccxt unified); spot when it is None."""
        self.base_currency, self.quote_currency = currencies(symbol)
        self.current: Episode | None = None
        self.finished: list[Episode] = []
        self.unattributed_fills = 0
        """Fills seen before any episode (e.g. another strategy's)."""

    @property
    def episodes(self) -> list[Episode]:
        """Every episode, finished ones first, then the open one (if any)."""
        return [*self.finished, *([self.current] if self.current is not None else [])]

    @property
    def last(self) -> Episode | None:
        if self.current is not None:
            return self.current
        return self.finished[-1] if self.finished else None

    def to_dicts(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.episodes]

    # ------------------------------------------------------------------ detector

    def on_update(
        self,
        update: DetectorUpdate,
        inventory: InventoryView,
        *,
        committed_quote: float | None = None,
    ) -> Episode | None:
        """Take one detector reading; returns the episode it ended, if any.

        ``committed_quote`` defaults to ``inventory.committed_quote``.
        """
        committed = inventory.committed_quote if committed_quote is None else committed_quote
        ep = self.current
        if ep is None:
            if not update.active:
                return None
            ep = self.current = self.opening(update, inventory, committed)
            return None
        self._fold(ep, update, committed)
        if update.active:
            return None
        t = update.transition
        ep.end_ts_ns = update.ts_ns
        ep.recovery = t.recovery if t is not None else None
        ep.inventory_after = inventory
        ep.depth_after = update.depth
        self.finished.append(ep)
        self.current = None
        return ep

    def opening(
        self, update: DetectorUpdate, inventory: InventoryView, committed_quote: float
    ) -> Episode:
        """The episode ``update`` (an engaging one) opens, as it stands after that reading.

        A function of its arguments only, which nothing changes afterwards: the journal
        builds the episode's start record with it once the trigger's orders have left.
        """
        ep = Episode(
            id=f"{self.symbol}@{update.ts_ns}",
            symbol=self.symbol,
            start_ts_ns=update.ts_ns,
            trigger=update.episode_trigger or update.trigger,
            inventory_before=inventory,
            depth_before=update.depth,
            baseline_before=update.baseline,
        )
        self._fold(ep, update, committed_quote)
        return ep

    @staticmethod
    def _fold(ep: Episode, update: DetectorUpdate, committed: float) -> None:
        t = update.transition
        if t is not None and Cause.RELAPSED in t.causes:
            ep.relapses += 1
        for i in (0, 1):
            ep.depth_min[i] = min(ep.depth_min[i], update.depth[i])
        ep.max_spread_bps = max(ep.max_spread_bps, update.spread_bps)
        ep.min_health = min(ep.min_health, update.health)
        ep.max_committed_quote = max(ep.max_committed_quote, committed)

    # ------------------------------------------------------------------ orders

    def on_notice(self, notice: OrderNotice, *, tag: str = "", mid: float | None = None) -> None:
        """Take one order-manager notice; ``tag`` is the order's, ``mid`` the latest mid."""
        if notice.symbol != self.symbol:
            return
        if isinstance(notice, OrderFilled):
            self.on_fill(notice, tag=tag, mid=mid)
        elif (
            isinstance(notice, OrderStateChanged)
            and notice.previous is None
            and self.current is not None
            and not tag.startswith(REPLENISH_TAG)
        ):
            self.current.quotes_placed += 1

    def on_fill(self, fill: OrderFilled, *, tag: str = "", mid: float | None = None) -> None:
        if fill.symbol != self.symbol:
            return
        ep = self.last
        if ep is None:
            self.unattributed_fills += 1
            return
        replenish = not ep.active and tag.startswith(REPLENISH_TAG)
        fee_q = self._fee_quote(fill, None if replenish else ep.fees)
        if replenish:
            r = ep.replenishment
            (r.bought if fill.side == "buy" else r.sold).add(fill.amount, fill.price, self.units)
            r.fees_quote += fee_q
            r.cost_quote += fee_q
            if mid is None:
                r.unpriced_fills += 1
            else:
                gap = fill.price - mid if fill.side == "buy" else mid - fill.price
                r.cost_quote += gap * self.units.base(fill.amount, fill.price)
            if r.first_ts_ns is None:
                r.first_ts_ns = fill.ts_ns
            r.last_ts_ns = fill.ts_ns
            return
        (ep.bought if fill.side == "buy" else ep.sold).add(fill.amount, fill.price, self.units)
        ep.fees_quote += fee_q
        if not ep.active:
            ep.late_fills += 1

    def _fee_quote(self, fill: OrderFilled, fees: dict[str, float] | None) -> float:
        """The fee in quote (base fees at the fill price); also added to ``fees`` by currency."""
        cost = fill.fee_cost or 0.0
        if not cost:
            return 0.0
        ccy = fill.fee_currency or self.quote_currency
        if fees is not None:
            fees[ccy] = fees.get(ccy, 0.0) + cost
        if ccy == self.base_currency:
            return cost * fill.price
        return cost if ccy == self.quote_currency else 0.0
