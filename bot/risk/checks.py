"""Pre-trade checks: pure functions of a quote, what the caller knows now, and the limits.

Each check returns ``None`` (allowed) or a denial ``UPPER_SNAKE: k=v ...`` naming the
limit and the numbers that broke it (Nautilus' habit). :func:`check_order` runs them in
the order below and returns the first denial; the :class:`~bot.risk.engine.RiskEngine`
adds what needs state (trading state, paused markets, the order rate).

=============================  ==========================================================
``INVALID_QUOTE``              side not buy/sell; price or amount NaN, inf or <= 0
``NO_REFERENCE_PRICE``         no usable mid: no band can be checked, so nothing is sent
``FAT_FINGER_PRICE``           price further from mid than ``fat_finger_bps`` (a bug)
``FAT_FINGER_NOTIONAL``        notional above ``fat_finger_order_quote`` (a bug)
``PRICE_OUTSIDE_BAND``         price further from mid than ``price_band_bps``
``WOULD_CROSS``                would trade against the book, and is not a taker quote
``NOTIONAL_EXCEEDS_MAX_PER_ORDER``  notional above ``max_order_quote``
``AMOUNT_EXCEEDS_MAX_PER_ORDER``    amount above ``max_order_base[asset]``
``OPEN_ORDERS_EXCEED_MAX``     would be more than ``max_open_orders_per_market`` open
``MARKET_NOTIONAL_EXCEEDS_MAX``  committed on the market + notional above the market cap
``TOTAL_NOTIONAL_EXCEEDS_MAX``   committed on all markets + notional above the total cap
``POSITION_EXCEEDS_MAX``       if it (and our other orders that side) filled, the position
                               would exceed ``max_position_base[asset]`` and be larger
                               than before (an order that shrinks it is never refused)
``CONTRACTS_EXCEED_MAX``       likewise for a perpetual's ``max_position_contracts``
``POSITION_NOTIONAL_EXCEEDS_MAX``  ...and its ``max_position_notional_quote`` (at the price)
=============================  ==========================================================

On a contract market (``QuoteContext.leverage`` set) amounts and positions are
contracts, notional is ``MarketRules.notional`` (linear ``contracts x size x price``,
inverse ``contracts x size``), base caps compare the base-asset equivalent, and the
market/total caps compare *collateral*: the order's initial margin (notional /
leverage; none for an order that only closes the position) on top of the committed
collateral (orders' initial margin + the position's maintenance margin).

Fat-finger limits sit beyond the policy limits (band, order size): an order that far
out is not a strategy being aggressive but a unit or sign mistake, so the engine also
fires the ``fat_finger`` guard for it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bot.book import BookState, OrderBook
from bot.inventory import AnyInventory, PerpInventory, RestingOrder, currencies
from bot.positions import PerpLimits
from bot.settings.models import RiskSettings
from strategies.base import MarketRules, Quote

BPS = 1e4
# Position comparisons tolerate float dust (amounts are venue decimals; sums are not).
_EPS = 1e-12


def _n(x: float) -> str:
    return f"{x:.8g}"


@dataclass(frozen=True, slots=True)
class QuoteContext:
    """The market and our exposure as the caller sees them just before sending an order.

    Everything is *before* the order being checked: the checks add it themselves.
    """

    mid: float | None
    best_bid: float | None = None
    best_ask: float | None = None
    position_base: float = 0.0
    """Signed net position in the quote's base asset (all markets), in order units (base;
    contracts on a contract market)."""
    resting_buy_base: float = 0.0
    """Remaining amount of our open buys in this asset that stay when the order is sent."""
    resting_sell_base: float = 0.0
    open_orders: int = 0
    """Our open orders on this market."""
    market_committed_quote: float = 0.0
    """Resting orders' notional + ``|position| x mid`` on this market."""
    total_committed_quote: float = 0.0
    """The same over every market (this one included)."""
    rules: MarketRules = field(default_factory=MarketRules)
    """What an amount is worth (contract size, linear or inverse); spot by default."""
    leverage: float | None = None
    """A contract market's leverage: its caps compare collateral. None: spot."""
    perp: PerpLimits | None = None
    """A contract market's position limits."""

    def notional(self, quote: Quote) -> float:
        return self.rules.notional(quote.price, quote.amount)

    def collateral(self, quote: Quote) -> float:
        """What sending ``quote`` commits: its notional, or on a contract market its
        initial margin (none if it only closes the position)."""
        if self.leverage is None:
            return self.notional(quote)
        if reduces_position(quote, self):
            return 0.0
        return self.notional(quote) / self.leverage

    def with_sent(self, quote: Quote) -> QuoteContext:
        """The context after ``quote`` is sent: for checking a set of orders one by one."""
        notional = self.collateral(quote)
        buy = quote.side == "buy"
        sell = quote.side == "sell"
        # Built directly: dataclasses.replace re-reads every field by name (once per order).
        return QuoteContext(
            self.mid,
            self.best_bid,
            self.best_ask,
            self.position_base,
            self.resting_buy_base + (quote.amount if buy else 0),
            self.resting_sell_base + (quote.amount if sell else 0),
            self.open_orders + 1,
            self.market_committed_quote + notional,
            self.total_committed_quote + notional,
            self.rules,
            self.leverage,
            self.perp,
        )

    def send(self, quote: Quote) -> None:
        """:meth:`with_sent` written into this context itself, the same numbers: for a
        context its holder made with :meth:`with_sent` and shares with no one (the risk
        engine checking a set of orders one by one: one object instead of one per order)."""
        notional = self.collateral(quote)
        buy = quote.side == "buy"
        sell = quote.side == "sell"
        put = object.__setattr__  # frozen for everyone else
        put(self, "resting_buy_base", self.resting_buy_base + (quote.amount if buy else 0))
        put(self, "resting_sell_base", self.resting_sell_base + (quote.amount if sell else 0))
        put(self, "open_orders", self.open_orders + 1)
        put(self, "market_committed_quote", self.market_committed_quote + notional)
        put(self, "total_committed_quote", self.total_committed_quote + notional)

    @classmethod
    def build(
        cls,
        book: OrderBook | None,
        inventory: AnyInventory,
        orders: Iterable[RestingOrder],
        *,
        other_markets_quote: float = 0.0,
        position_base: float | None = None,
    ) -> QuoteContext:
        """From the bot's own objects: ``orders`` are our open orders that stay.

        ``position_base`` defaults to this market's net position; pass the asset's total
        when another market trades the same base asset.
        """
        resting = list(orders)
        valid = book is not None and book.state is BookState.VALID
        mid = book.mid() if valid and book is not None else None
        committed = inventory.committed_quote(resting, mid)
        perp = isinstance(inventory, PerpInventory)
        rules, leverage, limits = _SPOT_RULES, None, None
        if isinstance(inventory, PerpInventory):
            spec = inventory.spec
            rules = MarketRules(contract_size=float(spec.contract_size), inverse=spec.inverse)
            leverage = float(inventory.position.leverage)
            limits = inventory.limits
        net = inventory.net_units if perp else inventory.net_base
        return cls(
            mid=mid,
            best_bid=book.best_bid() if valid and book is not None else None,
            best_ask=book.best_ask() if valid and book is not None else None,
            position_base=net if position_base is None else position_base,
            resting_buy_base=sum(max(0.0, o.remaining) for o in resting if o.side == "buy"),
            resting_sell_base=sum(max(0.0, o.remaining) for o in resting if o.side == "sell"),
            open_orders=len(resting),
            market_committed_quote=committed,
            total_committed_quote=committed + other_markets_quote,
            rules=rules,
            leverage=leverage,
            perp=limits,
        )


_SPOT_RULES = MarketRules()
"""Spot's rules (immutable): shared rather than built for every context."""


def is_taker(quote: Quote, limits: RiskSettings) -> bool:
    """A deliberate taker: not post-only *and* tagged as one (see ``taker_tag_prefixes``)."""
    return not quote.post_only and any(quote.tag.startswith(p) for p in limits.taker_tag_prefixes)


def reduces_position(quote: Quote, ctx: QuoteContext) -> bool:
    """True if filling ``quote`` (with our other orders that side) only shrinks the position."""
    if quote.side == "buy":
        return ctx.position_base < 0 and ctx.resting_buy_base + quote.amount <= (
            -ctx.position_base + _EPS
        )
    return ctx.position_base > 0 and ctx.resting_sell_base + quote.amount <= (
        ctx.position_base + _EPS
    )


@functools.cache
def _asset(symbol: str) -> str:
    """The base asset of ``symbol`` (read for every order checked; a pure function)."""
    return currencies(symbol)[0]


def _distance_bps(price: float, mid: float) -> float:
    return abs(price - mid) / mid * BPS


# --------------------------------------------------------------------------- checks

Check = Callable[[Quote, QuoteContext, RiskSettings], "str | None"]


def check_valid(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    if quote.side not in ("buy", "sell"):
        return f"INVALID_QUOTE: field=side value={quote.side!r}"
    for name, value in (("price", quote.price), ("amount", quote.amount)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            return f"INVALID_QUOTE: field={name} value={value!r}"
    return None


def check_reference(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    mid = ctx.mid
    if mid is None or not math.isfinite(mid) or mid <= 0:
        return f"NO_REFERENCE_PRICE: symbol={quote.symbol} mid={mid}"
    return None


def check_fat_finger(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    assert ctx.mid is not None  # check_reference ran first
    distance = _distance_bps(quote.price, ctx.mid)
    if distance > limits.fat_finger_bps_limit:
        return (
            f"FAT_FINGER_PRICE: price={_n(quote.price)} mid={_n(ctx.mid)} "
            f"distance_bps={distance:.1f} max_bps={limits.fat_finger_bps_limit:g}"
        )
    notional = ctx.notional(quote)
    if notional > limits.fat_finger_quote_limit:
        return f"FAT_FINGER_NOTIONAL: notional={_n(notional)} max={limits.fat_finger_quote_limit:g}"
    return None


def check_price_band(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    assert ctx.mid is not None
    distance = _distance_bps(quote.price, ctx.mid)
    if distance > limits.price_band_bps:
        return (
            f"PRICE_OUTSIDE_BAND: price={_n(quote.price)} mid={_n(ctx.mid)} "
            f"distance_bps={distance:.1f} max_bps={limits.price_band_bps:g}"
        )
    return None


def check_cross(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    if is_taker(quote, limits):
        return None
    if quote.side == "buy" and ctx.best_ask is not None and quote.price >= ctx.best_ask:
        return f"WOULD_CROSS: side=buy price={_n(quote.price)} best_ask={_n(ctx.best_ask)}"
    if quote.side == "sell" and ctx.best_bid is not None and quote.price <= ctx.best_bid:
        return f"WOULD_CROSS: side=sell price={_n(quote.price)} best_bid={_n(ctx.best_bid)}"
    return None


def check_order_size(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    notional = ctx.notional(quote)
    if notional > limits.max_order_quote:
        return (
            f"NOTIONAL_EXCEEDS_MAX_PER_ORDER: notional={_n(notional)} "
            f"max={limits.max_order_quote:g}"
        )
    asset = currencies(quote.symbol)[0]
    max_base = limits.max_order_base.get(asset)
    amount = ctx.rules.base_amount(quote.price, quote.amount)
    if max_base is not None and amount > max_base:
        return (
            f"AMOUNT_EXCEEDS_MAX_PER_ORDER: asset={asset} amount={_n(amount)} "
            f"max={max_base:g}"
        )
    return None


def check_open_orders(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    if ctx.open_orders + 1 > limits.max_open_orders_per_market:
        return (
            f"OPEN_ORDERS_EXCEED_MAX: symbol={quote.symbol} open={ctx.open_orders} "
            f"max={limits.max_open_orders_per_market}"
        )
    return None


def check_notional(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    notional = ctx.collateral(quote)
    market = ctx.market_committed_quote + notional
    if market > limits.max_notional_per_market_quote:
        return (
            f"MARKET_NOTIONAL_EXCEEDS_MAX: symbol={quote.symbol} "
            f"committed={_n(ctx.market_committed_quote)} order={_n(notional)} "
            f"max={limits.max_notional_per_market_quote:g}"
        )
    total = ctx.total_committed_quote + notional
    if total > limits.max_total_notional_quote:
        return (
            f"TOTAL_NOTIONAL_EXCEEDS_MAX: committed={_n(ctx.total_committed_quote)} "
            f"order={_n(notional)} max={limits.max_total_notional_quote:g}"
        )
    return None


def check_position(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    asset = _asset(quote.symbol)
    max_base = limits.max_position_base.get(asset)
    if max_base is None:
        return None
    before, after = _position_after(quote, ctx)
    if not ctx.rules.is_unit:  # contracts: compare their base-asset equivalent
        before = ctx.rules.base_amount(quote.price, before)
        after = ctx.rules.base_amount(quote.price, after)
    if abs(after) > max_base + _EPS and abs(after) > abs(before):
        return (
            f"POSITION_EXCEEDS_MAX: asset={asset} side={quote.side} "
            f"position={_n(ctx.position_base)} position_after={_n(after)} max={max_base:g}"
        )
    return None


def _position_after(quote: Quote, ctx: QuoteContext) -> tuple[float, float]:
    """The position (order units) if our other orders that side filled, before and with
    ``quote``."""
    if quote.side == "buy":
        before = ctx.position_base + ctx.resting_buy_base
        return before, before + quote.amount
    before = ctx.position_base - ctx.resting_sell_base
    return before, before - quote.amount


def check_contract_position(
    quote: Quote, ctx: QuoteContext, limits: RiskSettings
) -> str | None:
    perp = ctx.perp
    if perp is None:
        return None
    before, after = _position_after(quote, ctx)
    if abs(after) <= abs(before):
        return None  # shrinking the position is never refused
    cap = perp.max_position_contracts
    if cap is not None and abs(after) > cap + _EPS:
        return (
            f"CONTRACTS_EXCEED_MAX: symbol={quote.symbol} side={quote.side} "
            f"contracts={_n(ctx.position_base)} contracts_after={_n(after)} max={cap:g}"
        )
    cap = perp.max_position_notional_quote
    notional = ctx.rules.notional(quote.price, abs(after))
    if cap is not None and notional > cap + _EPS:
        return (
            f"POSITION_NOTIONAL_EXCEEDS_MAX: symbol={quote.symbol} side={quote.side} "
            f"notional_after={_n(notional)} max={cap:g}"
        )
    return None


CHECKS: tuple[Check, ...] = (
    check_valid,
    check_reference,
    check_fat_finger,
    check_price_band,
    check_cross,
    check_order_size,
    check_open_orders,
    check_notional,
    check_position,
    check_contract_position,
)
CHECKS_AFTER_VALID: tuple[Check, ...] = CHECKS[1:]
""":data:`CHECKS` for a quote that already passed :func:`check_valid` (the engine's)."""


def check_after_valid(quote: Quote, ctx: QuoteContext, limits: RiskSettings) -> str | None:
    """``check_order(quote, ctx, limits, CHECKS_AFTER_VALID)``, the same denials word for
    word, with what several checks share (distance, notional, asset) computed once: the
    engine runs it for every quote of every decision."""
    mid = ctx.mid
    if mid is None or not math.isfinite(mid) or mid <= 0:
        return f"NO_REFERENCE_PRICE: symbol={quote.symbol} mid={mid}"
    price, amount = quote.price, quote.amount
    distance = abs(price - mid) / mid * BPS
    fat_bps = limits.fat_finger_bps_limit
    if distance > fat_bps:
        return (
            f"FAT_FINGER_PRICE: price={_n(price)} mid={_n(mid)} "
            f"distance_bps={distance:.1f} max_bps={fat_bps:g}"
        )
    rules = ctx.rules
    notional = rules.notional(price, amount)
    fat_quote = limits.fat_finger_quote_limit
    if notional > fat_quote:
        return f"FAT_FINGER_NOTIONAL: notional={_n(notional)} max={fat_quote:g}"
    if distance > limits.price_band_bps:
        return (
            f"PRICE_OUTSIDE_BAND: price={_n(price)} mid={_n(mid)} "
            f"distance_bps={distance:.1f} max_bps={limits.price_band_bps:g}"
        )
    denial = check_cross(quote, ctx, limits)
    if denial is not None:
        return denial
    if notional > limits.max_order_quote:
        return (
            f"NOTIONAL_EXCEEDS_MAX_PER_ORDER: notional={_n(notional)} "
            f"max={limits.max_order_quote:g}"
        )
    asset = _asset(quote.symbol)
    max_base = limits.max_order_base.get(asset)
    if max_base is not None:
        base = rules.base_amount(price, amount)
        if base > max_base:
            return (
                f"AMOUNT_EXCEEDS_MAX_PER_ORDER: asset={asset} amount={_n(base)} "
                f"max={max_base:g}"
            )
    if ctx.open_orders + 1 > limits.max_open_orders_per_market:
        return (
            f"OPEN_ORDERS_EXCEED_MAX: symbol={quote.symbol} open={ctx.open_orders} "
            f"max={limits.max_open_orders_per_market}"
        )
    if ctx.leverage is None:
        # Spot: the collateral is the notional above; the numbers check_notional and
        # check_position compare, computed as they do, and their words on a denial.
        if (
            ctx.market_committed_quote + notional > limits.max_notional_per_market_quote
            or ctx.total_committed_quote + notional > limits.max_total_notional_quote
        ):
            return check_notional(quote, ctx, limits)
        max_position = limits.max_position_base.get(asset)
        if max_position is not None:
            if not rules.is_unit:
                return check_position(quote, ctx, limits)
            if quote.side == "buy":
                before = ctx.position_base + ctx.resting_buy_base
                after = before + amount
            else:
                before = ctx.position_base - ctx.resting_sell_base
                after = before - amount
            if abs(after) > max_position + _EPS and abs(after) > abs(before):
                return check_position(quote, ctx, limits)
    else:
        denial = check_notional(quote, ctx, limits)
        if denial is not None:
            return denial
        if limits.max_position_base.get(asset) is not None:
            denial = check_position(quote, ctx, limits)
            if denial is not None:
                return denial
    if ctx.perp is None:
        return None
    return check_contract_position(quote, ctx, limits)


def check_order(
    quote: Quote, ctx: QuoteContext, limits: RiskSettings, checks: Sequence[Check] = CHECKS
) -> str | None:
    """The first denial among ``checks`` (:data:`CHECKS`), or None if the order may be sent."""
    for check in checks:
        denial = check(quote, ctx, limits)
        if denial is not None:
            return denial
    return None
