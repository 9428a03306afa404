"""Collateral caps, applied by the trader *after* the strategy: a buggy strategy cannot pass them.

For one market, the quotes the strategy wants (its full desired set, which replaces the
market's current quotes) are checked in order against:

==================  =================================================================
``ORDER_CAP``       each quote's notional <= ``risk.max_order_quote``
``MARKET_CAP``      ``|net position| x mid`` + orders on their way out + kept quotes
                    <= ``risk.max_notional_per_market_quote``
``TOTAL_CAP``       the same plus every other market's committed notional
                    <= ``risk.max_total_notional_quote``
``QUOTE_BALANCE``   buys' notional x (1 + fee rate) <= quote above the reserve floor,
                    less what leaving buys lock
``BASE_BALANCE``    sells' amount x (1 + fee rate) <= base above the reserve floor,
                    less what leaving sells lock
``POSITION_CAP``    if every buy (or every sell) filled, ``|net position|`` would stay
                    <= ``risk.max_position_base[base asset]`` (when configured)
==================  =================================================================

**Contract markets** (:class:`~bot.inventory.PerpInventory`: perpetuals, amounts in
contracts) commit *collateral*, not notional: the reserve is margin, and what a market
commits is the initial margin of its resting orders (``notional / leverage``) plus the
maintenance margin of its position. The same caps apply to that, and the balance checks
become one:

==================  =================================================================
``ORDER_CAP``       each quote's notional (``rules.notional``) <= ``risk.max_order_quote``
``MARKET_CAP``      position maintenance margin + leaving orders' and kept quotes'
                    initial margin <= ``risk.max_notional_per_market_quote``
``TOTAL_CAP``       the same plus every other market's committed collateral
``MARGIN_BALANCE``  kept quotes' initial margin + fees <= free margin (wallet above the
                    reserve floor, less the position's and leaving orders' margin)
``POSITION_CAP``    ``|position|`` if every buy (or sell) filled, in contracts, within the
                    tightest of ``[markets.perp] max_position_contracts``,
                    ``max_position_notional_quote`` (at mid) and ``risk.max_position_base``
==================  =================================================================

The part of a quote that would only close the position needs no initial margin (as on
the exchange), so reducing quotes fit even when the margin is used up.

A quote over a limit is trimmed to fit when what is left still meets the market's
minimum notional; otherwise it is refused, with the binding limit as its reason. Quotes
that reduce the net position are checked first (filling them lowers the collateral
at risk), then the rest in the strategy's order (innermost rungs first).

Notional here is ``(price + tick / 2) x amount``: the order manager rounds prices to the
nearest tick, which can add up to half a tick. Amounts are only ever truncated.

"Orders on their way out" (``leaving``) are this market's orders the desired set cannot
replace -- those being cancelled, which can still fill until the venue confirms -- so they
count against every cap until they are gone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.inventory import AnyInventory, PerpInventory, RestingOrder, currencies
from bot.positions import dec
from strategies.base import BudgetView, MarketRules, Quote

if TYPE_CHECKING:
    from bot.settings.models import RiskSettings, Settings

_INF = float("inf")
# Trimmed amounts are shaved by this relative margin so float sums of the kept
# notionals cannot land a hair over a cap.
_SHAVE = 1e-12

ORDER_CAP = "ORDER_CAP"
MARKET_CAP = "MARKET_CAP"
TOTAL_CAP = "TOTAL_CAP"
QUOTE_BALANCE = "QUOTE_BALANCE"
BASE_BALANCE = "BASE_BALANCE"
POSITION_CAP = "POSITION_CAP"
MARGIN_BALANCE = "MARGIN_BALANCE"
BAD_QUOTE = "BAD_QUOTE"


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    max_order_quote: float = _INF
    max_market_quote: float = _INF
    max_total_quote: float = _INF
    max_position_base: Mapping[str, float] = field(default_factory=dict)
    """Base asset code -> cap on ``|net position|`` in that asset."""

    @classmethod
    def from_risk(cls, risk: RiskSettings) -> BudgetLimits:
        return cls(
            max_order_quote=risk.max_order_quote,
            max_market_quote=risk.max_notional_per_market_quote,
            max_total_quote=risk.max_total_notional_quote,
            max_position_base=dict(risk.max_position_base),
        )


@dataclass(frozen=True, slots=True)
class Margin:
    """A contract market's margin state for the fit (amounts in contracts, money in quote)."""

    leverage: float
    free_quote: float
    """Free margin above the reserve floor, less the position's and leaving orders' margin."""
    position_units: float = 0.0
    """Signed position in contracts."""
    maintenance_quote: float = 0.0
    """The position's maintenance margin at mid (committed collateral)."""
    max_position_units: float | None = None
    """The tightest position cap, in contracts at mid."""
    leaving_buy_units: float = 0.0
    leaving_sell_units: float = 0.0


@dataclass(frozen=True, slots=True)
class Exposure:
    """One market's state the budget checks a desired set against.

    Build it with :meth:`Budget.exposure`; the fields are plain numbers so tests (and the
    property test) can make any scenario.
    """

    symbol: str
    mid: float
    net_base: float = 0.0
    """Position vs the reserve's start, in base."""
    base_free: float = _INF
    """Base balance above the reserve floor."""
    quote_free: float = _INF
    """Quote balance above the reserve floor."""
    leaving_quote: float = 0.0
    """Notional of this market's orders on their way out (count until gone)."""
    leaving_buy_base: float = 0.0
    leaving_buy_quote: float = 0.0
    """Amount and notional of the leaving buys (they lock quote, may still fill)."""
    leaving_sell_base: float = 0.0
    """Amount of the leaving sells (they lock base, may still fill)."""
    other_markets_quote: float = 0.0
    """Committed notional of every other market (position + resting)."""
    fee_rate: float = 0.0
    max_position_base: float | None = None
    rules: MarketRules = field(default_factory=MarketRules)
    margin: Margin | None = None
    """Set on a contract market: caps then apply to collateral (``leaving_quote`` is
    the leaving orders' initial margin)."""

    @property
    def position_quote(self) -> float:
        return abs(self.net_base) * self.mid

    @property
    def committed_quote(self) -> float:
        """This market's committed notional (collateral, on a contract market) before any
        new quote."""
        if self.margin is not None:
            return self.margin.maintenance_quote + self.leaving_quote
        return self.position_quote + self.leaving_quote


@dataclass(frozen=True, slots=True)
class BudgetNote:
    """A quote the budget trimmed (``kept_amount > 0``) or refused (``kept_amount == 0``)."""

    quote: Quote
    reason: str
    """UPPER_SNAKE code of the binding limit (see the module docstring)."""
    detail: str
    kept_amount: float = 0.0

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Fit:
    quotes: tuple[Quote, ...]
    """What may be sent, trimmed where needed, in the strategy's order."""
    refused: tuple[BudgetNote, ...] = ()
    trimmed: tuple[BudgetNote, ...] = ()
    committed_quote: float = 0.0
    """This market's committed notional if every kept quote rests (position + leaving +
    kept notionals with the half-tick margin)."""


def _notional(price: float, amount: float, tick: float) -> float:
    return (price + tick / 2.0) * amount


class Budget:
    """The caps for a run: limits shared by every market, a reserve floor per market."""

    def __init__(
        self,
        limits: BudgetLimits,
        floor_fractions: Mapping[str, float] | None = None,
        *,
        default_floor_fraction: float = 0.0,
    ) -> None:
        self.limits = limits
        self.floor_fractions = dict(floor_fractions or {})
        self.default_floor_fraction = default_floor_fraction

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls(
            BudgetLimits.from_risk(settings.risk),
            {m.symbol: m.reserve.floor_fraction for m in settings.markets},
        )

    # ------------------------------------------------------------------ inputs

    def exposure(
        self,
        inventory: AnyInventory,
        mid: float,
        *,
        leaving: Iterable[RestingOrder] = (),
        other_markets_quote: float = 0.0,
        fee_rate: float = 0.0,
        rules: MarketRules | None = None,
    ) -> Exposure:
        """The exposure of ``inventory``'s market at ``mid``.

        ``leaving``: its orders the desired set cannot replace (being cancelled);
        ``other_markets_quote``: what the other markets commit
        (:meth:`~bot.inventory.Inventory.committed_quote` of each); ``fee_rate``: the
        larger of the market's maker and taker rates.
        """
        if isinstance(inventory, PerpInventory):
            return self._margin_exposure(
                inventory,
                mid,
                list(leaving),
                other_markets_quote=other_markets_quote,
                fee_rate=fee_rate,
                rules=rules if rules is not None else MarketRules(),
            )
        symbol = inventory.symbol
        floor = self.floor_fractions.get(symbol, self.default_floor_fraction)
        lq = lbb = lbq = lsb = 0.0
        for o in leaving:
            remaining = max(0.0, o.remaining)
            n = remaining * o.price
            lq += n
            if o.side == "buy":
                lbb += remaining
                lbq += n
            else:
                lsb += remaining
        base_ccy, _ = currencies(symbol)
        return Exposure(
            symbol=symbol,
            mid=mid,
            net_base=inventory.net_base,
            base_free=inventory.base - float(inventory.start_base) * floor,
            quote_free=inventory.quote - float(inventory.start_quote) * floor,
            leaving_quote=lq,
            leaving_buy_base=lbb,
            leaving_buy_quote=lbq,
            leaving_sell_base=lsb,
            other_markets_quote=other_markets_quote,
            fee_rate=fee_rate,
            max_position_base=self.limits.max_position_base.get(base_ccy),
            rules=rules if rules is not None else MarketRules(),
        )

    def _margin_exposure(
        self,
        inventory: PerpInventory,
        mid: float,
        leaving: list[RestingOrder],
        *,
        other_markets_quote: float,
        fee_rate: float,
        rules: MarketRules,
    ) -> Exposure:
        spec = inventory.spec
        floor = self.floor_fractions.get(inventory.symbol, self.default_floor_fraction)
        mark = dec(mid)
        caps: list[float] = []
        p = inventory.limits
        if p.max_position_contracts is not None:
            caps.append(p.max_position_contracts)
        if p.max_position_notional_quote is not None:
            caps.append(rules.amount_for_notional(p.max_position_notional_quote, mid))
        base_cap = self.limits.max_position_base.get(spec.base)
        if base_cap is not None:
            caps.append(rules.amount_for_base(base_cap, mid))
        cap = min(caps) if caps else None
        return Exposure(
            symbol=inventory.symbol,
            mid=mid,
            net_base=inventory.net_base,
            leaving_quote=float(spec.to_quote(inventory.order_margin(leaving), mark)),
            other_markets_quote=other_markets_quote,
            fee_rate=fee_rate,
            max_position_base=None if cap is None else rules.base_amount(mid, cap),
            rules=rules,
            margin=Margin(
                leverage=float(inventory.position.leverage),
                free_quote=float(spec.to_quote(inventory.margin_free(leaving, floor), mark)),
                position_units=inventory.net_units,
                maintenance_quote=float(spec.to_quote(inventory.position.maintenance(mark), mark)),
                max_position_units=cap,
                leaving_buy_units=sum(max(0.0, o.remaining) for o in leaving if o.side == "buy"),
                leaving_sell_units=sum(
                    max(0.0, o.remaining) for o in leaving if o.side == "sell"
                ),
            ),
        )

    def view(self, exposure: Exposure) -> BudgetView:
        """What the strategy may size against (the fit enforces it afterwards)."""
        if exposure.margin is not None:
            return self._margin_view(exposure, exposure.margin)
        lim, e = self.limits, exposure
        market_room = lim.max_market_quote - e.committed_quote
        total_room = lim.max_total_quote - e.other_markets_quote - e.committed_quote
        fee = 1.0 + e.fee_rate
        # Leave the fit's half-tick rounding margin (and float dust) out of the room and
        # the per-order cap, so a strategy that uses all of them is not trimmed by a hair.
        margin = 1.0 - (e.rules.price_tick / e.mid if e.mid > 0 else 0.0) - 1e-9
        return BudgetView(
            quote_room=max(0.0, min(market_room, total_room) * margin),
            max_order_quote=lim.max_order_quote * margin,
            market_cap_quote=lim.max_market_quote,
            base_available=max(0.0, e.base_free - e.leaving_sell_base * fee),
            quote_available=max(0.0, e.quote_free - e.leaving_buy_quote * fee),
            fee_rate=e.fee_rate,
            max_position_base=e.max_position_base,
        )

    def _margin_view(self, e: Exposure, m: Margin) -> BudgetView:
        """A contract market's view: rooms turned from collateral into notional."""
        lim = self.limits
        market_room = lim.max_market_quote - e.committed_quote
        total_room = lim.max_total_quote - e.other_markets_quote - e.committed_quote
        margin = 1.0 - (e.rules.price_tick / e.mid if e.mid > 0 else 0.0) - 1e-9
        per_notional = 1.0 / m.leverage + e.fee_rate  # margin + fee one unit of notional needs
        free_notional = max(0.0, m.free_quote) / per_notional
        net = e.net_base
        cap_quote = lim.max_market_quote * m.leverage
        if m.max_position_units is not None:
            cap_quote = min(cap_quote, e.rules.notional(e.mid, m.max_position_units))
        return BudgetView(
            quote_room=max(0.0, min(market_room, total_room) * m.leverage * margin),
            max_order_quote=lim.max_order_quote * margin,
            market_cap_quote=cap_quote,
            base_available=free_notional / e.mid + max(0.0, net) if e.mid > 0 else 0.0,
            quote_available=free_notional + max(0.0, -net) * e.mid,
            fee_rate=e.fee_rate,
            max_position_base=e.max_position_base,
            closing_is_free=True,
        )

    # ------------------------------------------------------------------ the fit

    def fit(self, desired: Sequence[Quote], exposure: Exposure) -> Fit:
        """Keep, trim or refuse each desired quote so that no cap can be exceeded."""
        if exposure.margin is not None:
            return self._fit_margin(desired, exposure, exposure.margin)
        lim, e = self.limits, exposure
        tick = e.rules.price_tick
        fee = 1.0 + e.fee_rate
        market_room = lim.max_market_quote - e.committed_quote
        total_room = lim.max_total_quote - e.other_markets_quote - e.committed_quote
        quote_room = e.quote_free - e.leaving_buy_quote * fee
        base_room = e.base_free - e.leaving_sell_base * fee
        cap = e.max_position_base
        buy_pos_room = _INF if cap is None else cap - e.net_base - e.leaving_buy_base
        sell_pos_room = _INF if cap is None else cap + e.net_base - e.leaving_sell_base

        net = e.net_base
        # Flat (no quote reduces the position): the stable sort below keeps the order.
        order: Sequence[int] = (
            sorted(range(len(desired)), key=lambda i: 0 if _reduces(desired[i], net) else 1)
            if net > 0 or net < 0
            else range(len(desired))
        )
        kept: dict[int, Quote] = {}
        refused: list[BudgetNote] = []
        trimmed: list[BudgetNote] = []
        committed = e.committed_quote
        for i in order:
            q = desired[i]
            bad = _bad(q, e.symbol)
            if bad:
                refused.append(BudgetNote(q, BAD_QUOTE, bad))
                continue
            unit = q.price + tick / 2.0  # notional per unit of amount
            # The tightest bound, the first of equals (as min() over them in this order);
            # compared one by one: this runs for every quote of every decision.
            reason, allowed = ORDER_CAP, lim.max_order_quote / unit
            bound = market_room / unit
            if bound < allowed:
                reason, allowed = MARKET_CAP, bound
            bound = total_room / unit
            if bound < allowed:
                reason, allowed = TOTAL_CAP, bound
            if q.side == "buy":
                bound = quote_room / (q.price * fee)
                if bound < allowed:
                    reason, allowed = QUOTE_BALANCE, bound
                if buy_pos_room < allowed:
                    reason, allowed = POSITION_CAP, buy_pos_room
            else:
                bound = base_room / fee
                if bound < allowed:
                    reason, allowed = BASE_BALANCE, bound
                if sell_pos_room < allowed:
                    reason, allowed = POSITION_CAP, sell_pos_room
            amount = q.amount
            if allowed < amount:
                amount = allowed * (1.0 - _SHAVE)
                need = e.rules.min_notional(q.price)
                detail = _detail(reason, q, allowed, e)
                # Float dust left of a used-up room is no room at all.
                if not amount > q.amount * 1e-9 or amount * q.price < need:
                    refused.append(BudgetNote(q, reason, detail))
                    continue
                trimmed.append(BudgetNote(q, reason, detail, amount))
                q = Quote(q.symbol, q.side, q.price, amount, q.post_only, q.tag)
            n = _notional(q.price, amount, tick)
            market_room -= n
            total_room -= n
            committed += n
            if q.side == "buy":
                quote_room -= q.price * amount * fee
                buy_pos_room -= amount
            else:
                base_room -= amount * fee
                sell_pos_room -= amount
            kept[i] = q
        quotes = tuple(kept[i] for i in sorted(kept))
        return Fit(quotes, tuple(refused), tuple(trimmed), committed)


    def _fit_margin(self, desired: Sequence[Quote], e: Exposure, m: Margin) -> Fit:
        """The fit on a contract market: amounts in contracts, caps on collateral."""
        lim, rules = self.limits, e.rules
        tick = rules.price_tick
        market_room = lim.max_market_quote - e.committed_quote
        total_room = lim.max_total_quote - e.other_markets_quote - e.committed_quote
        margin_room = m.free_quote
        pos, cap = m.position_units, m.max_position_units
        pos_room = {
            "buy": _INF if cap is None else cap - pos - m.leaving_buy_units,
            "sell": _INF if cap is None else cap + pos - m.leaving_sell_units,
        }
        closable = {
            "buy": max(0.0, -pos - m.leaving_buy_units),
            "sell": max(0.0, pos - m.leaving_sell_units),
        }
        order = sorted(range(len(desired)), key=lambda i: 0 if _reduces(desired[i], pos) else 1)
        kept: dict[int, Quote] = {}
        refused: list[BudgetNote] = []
        trimmed: list[BudgetNote] = []
        committed = e.committed_quote
        for i in order:
            q = desired[i]
            bad = _bad(q, e.symbol)
            if bad:
                refused.append(BudgetNote(q, BAD_QUOTE, bad))
                continue
            per = rules.notional(q.price + tick / 2.0, 1.0)  # notional per contract
            im = per / m.leverage
            fee = rules.notional(q.price, 1.0) * e.fee_rate
            free = closable[q.side]  # contracts that only close the position: no margin

            def with_margin(room: float, cost: float, free: float = free) -> float:
                return free + max(0.0, room) / cost

            if free * fee >= margin_room:
                balance = max(0.0, margin_room) / fee if fee > 0 else free
            else:
                balance = (margin_room + free * im) / (im + fee)
            bounds: list[tuple[str, float]] = [
                (ORDER_CAP, lim.max_order_quote / per),
                (MARKET_CAP, with_margin(market_room, im)),
                (TOTAL_CAP, with_margin(total_room, im)),
                (MARGIN_BALANCE, balance),
                (POSITION_CAP, pos_room[q.side]),
            ]
            reason, allowed = min(bounds, key=lambda b: b[1])
            amount = q.amount
            if allowed < amount:
                amount = allowed * (1.0 - _SHAVE)
                detail = _detail(reason, q, allowed, e)
                need = rules.min_notional(q.price)
                if not amount > q.amount * 1e-9 or rules.notional(q.price, amount) < need:
                    refused.append(BudgetNote(q, reason, detail))
                    continue
                trimmed.append(BudgetNote(q, reason, detail, amount))
                q = Quote(q.symbol, q.side, q.price, amount, q.post_only, q.tag)
            opening = max(0.0, amount - free)
            closable[q.side] -= min(amount, free)
            market_room -= opening * im
            total_room -= opening * im
            margin_room -= opening * im + amount * fee
            committed += opening * im
            pos_room[q.side] -= amount
            kept[i] = q
        quotes = tuple(kept[i] for i in sorted(kept))
        return Fit(quotes, tuple(refused), tuple(trimmed), committed)


def _reduces(q: Quote, net_base: float) -> bool:
    return (net_base > 0 and q.side == "sell") or (net_base < 0 and q.side == "buy")


def _bad(q: Quote, symbol: str) -> str:
    if q.symbol != symbol:
        return f"quote for {q.symbol} checked against {symbol}"
    if q.side not in ("buy", "sell"):
        return f"side {q.side!r}"
    if not (math.isfinite(q.price) and q.price > 0 and math.isfinite(q.amount) and q.amount > 0):
        return f"price {q.price} amount {q.amount}"
    return ""


def _detail(reason: str, q: Quote, allowed: float, e: Exposure) -> str:
    return (
        f"{q.side} {q.amount:.8g} @ {q.price:.8g} ({q.tag or 'untagged'}): "
        f"{reason.lower().replace('_', ' ')} leaves room for {max(0.0, allowed):.8g} "
        f"(net position {e.net_base:.8g}, committed {e.committed_quote:.2f})"
    )
