"""The risk engine: checks every order before it is sent and watches the guards.

It is synchronous and owns no tasks: the daemon feeds it (``on_book``, ``on_notice``,
``on_feed_status``, ``on_equity``, ``on_balances``, ``tick``) and acts on what it
publishes (:mod:`bot.risk.events`): pull a paused market's quotes, trip the kill switch
on a ``kill`` guard. Time is the injected clock, so a replay guards exactly like live.

Guard lifecycle (one latch per guard and scope -- a market, or the account):

==============  ======================================  ==================================
level           when it fires (condition turns true)    when it lets go
==============  ======================================  ==================================
warn            a ``GuardEvent``, a warning logged      as soon as the condition is false
pause, data     event; the market is PAUSED             healthy for ``data_resume_s``
pause, other    event; market (or every market, for     condition false *and*
                an account-wide guard) PAUSED           ``pause_cooldown_s`` since it
                                                        fired (unless not
                                                        ``pause_auto_resume``); or
                                                        operator ``unpause``
kill            event; trading state HALTED             only when trading resumes
                                                        (``set_trading_state``): then it
                                                        fires again if still true
reduce          event; the market is REDUCING: quotes   condition false *and*
                pulled, only orders that shrink the     ``pause_cooldown_s`` since it
                position pass                           fired (always automatic)
pause_side      event; one side may not grow the        as soon as the condition is false
                position (funding)
==============  ======================================  ==================================

Perpetual futures guards (fed :meth:`RiskEngine.on_position` with a
:class:`~bot.positions.PositionReading` on every book update) have fixed levels
(:data:`~bot.risk.events.PERP_LEVELS`): ``liquidation_distance`` (mark within
``min_liquidation_distance_bps`` of the liquidation price), ``max_leverage``
(effective leverage over ``max_leverage``) and ``position_limit`` (position over its
contract or notional cap, e.g. after the price moved) REDUCE; ``funding_cost``
(``|funding rate| > max_funding_rate``) pauses the paying side (buys when the rate is
positive); ``mark_price_band`` (mark and last trade price further apart than
``mark_last_band_bps``) pauses the market like a data guard.

A guard fires once per episode (on the rising edge), not on every evaluation. An
operator's ``unpause`` lifts every pause reason of that market except data guards
(quoting on a stale or broken book is never right) and its own ``pause``; the
guards' latches are left alone, so a guard whose condition persists does not re-pause
the market until it has let go and fired again. When trading resumes after a kill the
drawdown peak is re-based to the current equity (the operator has acknowledged the
loss); the daily loss is not, so a day over its loss limit trips again.

Section banners follow Nautilus' ``risk/engine.pyx``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bot.book import BookState, OrderBook
from bot.clock import NS_PER_SECOND, Clock
from bot.feeds.events import FeedState, FeedStatus
from bot.logs import Logger
from bot.orders.events import OrderActionFailed, OrderNotice
from bot.positions import PositionReading
from bot.risk.bucket import TokenBucket
from bot.risk.checks import (
    Check,
    QuoteContext,
    check_after_valid,
    check_order,
    check_valid,
    reduces_position,
)
from bot.risk.events import (
    OPERATOR,
    PERP_LEVELS,
    Guard,
    GuardEvent,
    GuardLevel,
    MarketState,
    MarketStateChanged,
    RiskEvent,
    RiskObserver,
    TradingState,
    TradingStateChanged,
)
from bot.settings.models import RiskSettings
from strategies.base import Quote

NS_PER_DAY = 86_400 * NS_PER_SECOND
MAX_BUFFERED_EVENTS = 10_000
"""Events kept for :meth:`RiskEngine.drain_events` (oldest dropped beyond this)."""

_DISCONNECTED = frozenset({FeedState.DISCONNECTED, FeedState.RESYNCING, FeedState.ENDED})
MARKET_GUARDS = (
    Guard.STALE_BOOK,
    Guard.INVALID_BOOK,
    Guard.FEED_DISCONNECTED,
    Guard.REJECT_BURST,
    Guard.FAT_FINGER,
)
ACCOUNT_GUARDS = (Guard.RATE_LIMITED, Guard.BALANCE_MISMATCH, Guard.DAILY_LOSS, Guard.DRAWDOWN)
_RATE_LIMITED_ERROR = "RateLimited"  # OrderActionFailed.error for bot.errors.RateLimited
_WOULD_TAKE_ERROR = "WouldTake"  # for bot.errors.WouldTake
_MARGIN_NS = 1_000_000

Scope = str | None  # a market's symbol, or None for the whole account


_INF = float("inf")


def _n(x: float) -> str:
    return f"{x:.8g}"


@dataclass(slots=True)
class _Latch:
    """One guard on one scope."""

    level: GuardLevel
    order: int = 0
    """Creation order: latches are settled in this order, as they always were."""
    active: bool = False
    condition: bool = False
    reason: str = ""
    fired_ns: int = 0
    clear_since_ns: int | None = None


@dataclass(slots=True)
class _MarketData:
    last_update_ns: int | None = None
    book_state: BookState = BookState.EMPTY
    crossed: bool = False
    feed_state: FeedState | None = None
    feed_detail: str = ""
    latches: tuple[_Latch, _Latch, _Latch] | None = None
    """Its stale, invalid-book and disconnected latches, once all three exist (looked
    up once, not per update: latches are never replaced)."""


@dataclass(frozen=True, slots=True)
class MarketRisk:
    """One market's risk state, for status and the display."""

    symbol: str
    state: MarketState
    reasons: Mapping[str, str]
    """What holds it paused: guard name (or ``operator``) -> reason."""
    since_ns: int


@dataclass(slots=True)
class QuotesCheck:
    allowed: list[Quote] = field(default_factory=list)
    denied: list[tuple[Quote, str]] = field(default_factory=list)


class RiskEngine:
    """Pre-trade checks, trading state, per-market pauses and guards. Not thread-safe."""

    def __init__(
        self,
        config: RiskSettings,
        *,
        clock: Clock,
        log: Logger,
        symbols: Iterable[str] = (),
    ) -> None:
        if not isinstance(config, RiskSettings):
            raise TypeError("config must be a RiskSettings")
        self.config = config
        self._guards = config.guards
        self._clock = clock
        self._log = log
        now = clock.now_ns()
        self._trading_state = TradingState.ACTIVE
        self._trading_reason = ""
        self._bucket = TokenBucket(
            rate_per_s=config.max_orders_per_second, capacity=config.max_order_burst, now_ns=now
        )
        self._markets: dict[str, _MarketData] = {}
        self._pauses: dict[str, dict[str, str]] = {}
        self._reducing: dict[str, dict[str, str]] = {}
        self._paying_side: dict[str, str] = {}
        self._paused_since: dict[str, int] = {}
        self._latches: dict[tuple[Guard, Scope], _Latch] = {}
        # Latches that are active with their condition false: the only ones
        # :meth:`_settle_all` can let go. Kept as they change, so settling costs nothing
        # per event however many markets there are.
        self._releasable: dict[tuple[Guard, Scope], _Latch] = {}
        # No market can be stale before this data time (the oldest book update plus
        # ``stale_book_s``): the timer looks at every market only once it has passed.
        self._stale_ns = int(config.guards.stale_book_s * NS_PER_SECOND)
        self._next_stale_check: int | None = None
        self._rejects: dict[str, deque[int]] = {}
        self._burst_watch: tuple[int, list[tuple[deque[int], _Latch]]] | None = None
        self._loss_latches: tuple[_Latch, _Latch] | None = None
        self._rate_limits: deque[int] = deque()
        self._equity: dict[str, float] = {}
        self._equity_total: float | None = None
        self._day: int | None = None
        self._day_start_equity = 0.0
        self._peak_equity: float | None = None
        self._observers: list[RiskObserver] = []
        self._events: deque[RiskEvent] = deque(maxlen=MAX_BUFFERED_EVENTS)
        self.denials: Counter[str] = Counter()
        self._checks: dict[str, Sequence[Check]] = {}
        """Denials by code (the part before ``:``), for metrics."""
        for symbol in symbols:
            self._market(symbol)

    # -- QUERIES -----------------------------------------------------------------------

    @property
    def trading_state(self) -> TradingState:
        return self._trading_state

    @property
    def symbols(self) -> list[str]:
        return list(self._markets)

    def market_state(self, symbol: str) -> MarketRisk:
        reasons = self._pauses.get(symbol, {})
        reducing = self._reducing.get(symbol, {})
        state = MarketState.ACTIVE
        if reasons:
            state = MarketState.PAUSED
        elif reducing:
            state, reasons = MarketState.REDUCING, reducing
        return MarketRisk(
            symbol=symbol,
            state=state,
            reasons=MappingProxyType(dict(reasons)),
            since_ns=self._paused_since.get(symbol, 0),
        )

    def is_paused(self, symbol: str) -> bool:
        return bool(self._pauses.get(symbol))

    def is_reducing(self, symbol: str) -> bool:
        """True while a position guard lets only position-reducing orders through."""
        return bool(self._reducing.get(symbol))

    def paused_sides(self, symbol: str) -> frozenset[str]:
        """Sides that may not grow the position now (the side paying extreme funding)."""
        latch = self._latches.get((Guard.FUNDING_COST, symbol))
        side = self._paying_side.get(symbol)
        if latch is None or not latch.active or side is None:
            return frozenset()
        return frozenset({side})

    def guard_status(self, symbol: str | None = None) -> dict[str, str]:
        """Guard name -> ``ok`` or ``<level>: <reason>``; a market's guards, or the account's."""
        guards: tuple[Guard, ...] = MARKET_GUARDS if symbol is not None else ACCOUNT_GUARDS
        if symbol is not None:  # a perpetual's guards, once it has been read
            guards += tuple(g for g in PERP_LEVELS if (g, symbol) in self._latches)
        out: dict[str, str] = {}
        for guard in guards:
            latch = self._latches.get((guard, symbol))
            out[guard.value] = f"{latch.level}: {latch.reason}" if latch and latch.active else "ok"
        return out

    def loss(self) -> dict[str, float | None]:
        """Equity, the day's loss and the drawdown from peak, as the guards see them."""
        total = self._total_equity()
        return {
            "equity": total,
            "daily_loss": None if total is None else self._day_start_equity - total,
            "peak_equity": self._peak_equity,
            "drawdown": None
            if total is None or self._peak_equity is None
            else self._peak_equity - total,
        }

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``backstop status``."""
        return {
            "trading_state": self._trading_state.value,
            "trading_reason": self._trading_reason,
            "markets": {
                s: {
                    "state": self.market_state(s).state.value,
                    "reasons": dict(self._pauses.get(s, {})),
                    "reducing": dict(self._reducing.get(s, {})),
                    "guards": self.guard_status(s),
                }
                for s in self._markets
            },
            "guards": self.guard_status(None),
            "loss": self.loss(),
            "order_tokens": round(self._bucket.available(self._clock.now_ns()), 3),
            "denials": dict(self.denials),
        }

    # -- EVENTS ------------------------------------------------------------------------

    def subscribe(self, observer: RiskObserver) -> Callable[[], None]:
        """Call ``observer`` with every event as it happens; returns the unsubscribe function."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def drain_events(self) -> list[RiskEvent]:
        """Every event since the last drain (at most :data:`MAX_BUFFERED_EVENTS`), oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def _emit(self, event: RiskEvent) -> None:
        self._events.append(event)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:  # one broken observer must not stop the guards
                self._log.exception("risk_observer_failed", kind=type(event).__name__)

    # -- PRE-TRADE CHECKS --------------------------------------------------------------

    def check_quote(
        self, quote: Quote, ctx: QuoteContext, *, count_rate: bool = True
    ) -> str | None:
        """None if ``quote`` may be sent now, else why not (``UPPER_SNAKE: k=v``).

        Call it for an order about to be sent: when allowed, it takes one token of the
        order rate (``count_rate=False`` leaves the rate to :meth:`admit_order`).
        """
        denial = self._check(quote, ctx)
        if denial is None and count_rate:
            denial = self.admit_order()
        if denial is not None:
            self._deny(quote, denial)
        return denial

    def check_quotes(self, quotes: Sequence[Quote], ctx: QuoteContext) -> QuotesCheck:
        """Check a set of orders in turn, each as if the allowed ones before it were sent.

        For a strategy's full desired set before the order manager diffs it: the order
        rate is *not* counted here (most of the set is usually already resting); count
        it with :meth:`admit_order` where an order is actually sent.
        """
        result = QuotesCheck()
        last = len(quotes) - 1
        # The usual set: one market with no state-dependent denial possible (active, not
        # paused, reducing or side-paused, default checks). There _check comes down to
        # check_valid then check_after_valid; the state is read once per symbol and read
        # again after any denial (a fat finger fires a guard, observers may act).
        plain: str | None = None
        config = self.config
        own = False  # ctx is a with_sent copy of our own (QuoteContext.send may write it)
        for i, quote in enumerate(quotes):
            symbol = quote.symbol
            if symbol != plain:
                plain = symbol if self._plain(symbol) else None
            if symbol == plain:
                price, amount = quote.price, quote.amount
                if (
                    type(price) is float
                    and type(amount) is float
                    and 0.0 < price < _INF
                    and 0.0 < amount < _INF
                    and (quote.side == "buy" or quote.side == "sell")
                ):
                    denial = check_after_valid(quote, ctx, config)
                else:
                    denial = check_valid(quote, ctx, config) or check_after_valid(
                        quote, ctx, config
                    )
                if denial is not None and denial.startswith("FAT_FINGER"):
                    self._fire_momentary(Guard.FAT_FINGER, quote.symbol, denial, {})
            else:
                denial = self._check(quote, ctx)
            if denial is None:
                result.allowed.append(quote)
                if i < last:  # nothing reads the context after the last quote
                    if own:
                        ctx.send(quote)
                    else:
                        ctx, own = ctx.with_sent(quote), True
            else:
                plain = None
                self._deny(quote, denial)
                result.denied.append((quote, denial))
        return result

    def rehearse_quotes(self, quotes: Sequence[Quote], ctx: QuoteContext) -> int:
        """:meth:`check_quotes`' checks of ``quotes`` with nothing counted, denied or
        fired (the trader's rehearsal of a trigger, :meth:`bot.trader.Trader.rehearse`):
        how many would pass the default checks. Reads no state and changes none."""
        config = self.config
        passed = 0
        for quote in quotes:
            if (check_valid(quote, ctx, config) or check_after_valid(quote, ctx, config)) is None:
                passed += 1
                ctx = ctx.with_sent(quote)
        return passed

    def _plain(self, symbol: str) -> bool:
        """True when no stateful check of :meth:`_check` can deny an order on ``symbol``
        and its checks are the default ones (:func:`check_after_valid`)."""
        return (
            self._trading_state is TradingState.ACTIVE
            and not self._pauses.get(symbol)
            and not self._reducing.get(symbol)
            and not self.paused_sides(symbol)
            and symbol not in self._checks
        )

    def use_checks(self, symbols: Iterable[str], checks: Sequence[Check]) -> None:
        """Check orders on ``symbols`` with ``checks`` instead of :data:`CHECKS`: markets
        whose prices are not a spot or perpetual price (option premiums, checked against
        greek limits: :mod:`bot.options.checks`). The stateful checks (trading state,
        pauses, reducing) still come first."""
        for symbol in symbols:
            self._checks[symbol] = tuple(checks)

    def order_room(self, reserved: int = 0) -> int | None:
        """Orders the order rate lets out now, less ``reserved`` (creates already
        decided, not yet sent); None while the bucket is full and nothing is reserved."""
        bucket = self._bucket
        tokens = bucket.available(self._clock.now_ns()) - reserved
        return None if tokens >= bucket.capacity else max(0, int(tokens))

    def admit_order(self) -> str | None:
        """Take one token of the order rate: None if there was one, else the denial."""
        if self._bucket.try_take(self._clock.now_ns()):
            return None
        return (
            f"ORDER_RATE_EXCEEDED: max_per_s={self.config.max_orders_per_second:g} "
            f"burst={self.config.max_order_burst}"
        )

    def _check(self, quote: Quote, ctx: QuoteContext) -> str | None:
        if self._trading_state is TradingState.HALTED:
            return f"TRADING_HALTED: reason={self._trading_reason or '-'}"
        denial = check_valid(quote, ctx, self.config)
        if denial is not None:
            return denial
        reasons = self._pauses.get(quote.symbol)
        if reasons:
            return f"MARKET_PAUSED: symbol={quote.symbol} reasons={','.join(sorted(reasons))}"
        if self._trading_state is TradingState.REDUCING and not reduces_position(quote, ctx):
            return (
                f"TRADING_REDUCING: side={quote.side} amount={_n(quote.amount)} "
                f"position={_n(ctx.position_base)}"
            )
        reducing = self._reducing.get(quote.symbol)
        if reducing and not reduces_position(quote, ctx):
            return (
                f"MARKET_REDUCING: symbol={quote.symbol} side={quote.side} "
                f"amount={_n(quote.amount)} position={_n(ctx.position_base)} "
                f"reasons={','.join(sorted(reducing))}"
            )
        if quote.side in self.paused_sides(quote.symbol) and not reduces_position(quote, ctx):
            return (
                f"SIDE_PAUSED: symbol={quote.symbol} side={quote.side} "
                f"guard={Guard.FUNDING_COST.value} position={_n(ctx.position_base)}"
            )
        # check_valid passed above: the default set (CHECKS_AFTER_VALID) skips it.
        checks = self._checks.get(quote.symbol)
        if checks is None:
            denial = check_after_valid(quote, ctx, self.config)
        else:
            denial = check_order(quote, ctx, self.config, checks)
        if denial is not None and denial.startswith("FAT_FINGER"):
            self._fire_momentary(Guard.FAT_FINGER, quote.symbol, denial, {})
        return denial

    def _deny(self, quote: Quote, denial: str) -> None:
        code = denial.split(":", 1)[0]
        self.denials[code] += 1
        self._log.debug("order_denied", symbol=quote.symbol, quote=str(quote), reason=denial)

    # -- TRADING STATE -----------------------------------------------------------------

    def set_trading_state(self, state: TradingState, *, reason: str, who: str = "") -> bool:
        """Change the account's trading state; publishes ``TradingStateChanged``.

        Returns False (and publishes nothing) if it already was ``state``. Leaving
        HALTED re-arms the kill-level guards and re-bases the drawdown peak.
        """
        previous = self._trading_state
        if state is previous:
            return False
        now = self._clock.now_ns()
        self._trading_state = state
        self._trading_reason = reason
        if previous is TradingState.HALTED:
            for key, latch in self._latches.items():
                if latch.level is GuardLevel.KILL:
                    latch.active = False
                    latch.clear_since_ns = None
                    self._releasable.pop(key, None)
            total = self._total_equity()
            if total is not None:
                self._peak_equity = total
        log = self._log.warning if state is TradingState.HALTED else self._log.info
        log("trading_state", previous=previous.value, state=state.value, reason=reason, who=who)
        self._emit(TradingStateChanged(now, previous, state, reason, who))
        if previous is TradingState.HALTED:
            # Conditions that still hold fire again at once, rather than at their next input.
            self._evaluate_losses(now)
        return True

    # -- OPERATOR PAUSES ---------------------------------------------------------------

    def pause(self, symbol: str, *, reason: str, who: str = "") -> str | None:
        """Pause a market by hand (only :meth:`unpause` lifts it). None, or why not."""
        if symbol not in self._markets:
            return f"UNKNOWN_MARKET: symbol={symbol}"
        text = f"OPERATOR_PAUSE: who={who or '-'} reason={reason}"
        self._set_pauses([symbol], OPERATOR, text, cause=f"OPERATOR: who={who or '-'}")
        return None

    def unpause(self, symbol: str, *, who: str = "") -> str | None:
        """Lift the operator's pause and every non-data guard's pause of ``symbol``.

        None if the market is active afterwards; otherwise why not (``NOT_PAUSED`` or
        ``STILL_PAUSED`` naming the data guards that still hold it) or ``UNKNOWN_MARKET``.
        """
        if symbol not in self._markets:
            return f"UNKNOWN_MARKET: symbol={symbol}"
        reasons = self._pauses.get(symbol, {})
        if not reasons:
            return f"NOT_PAUSED: symbol={symbol}"
        data = {g.value for g in Guard if g.is_data}
        lifted = [key for key in reasons if key not in data]
        if lifted:
            self._change(
                [symbol],
                lambda: [reasons.pop(key) for key in lifted],
                cause=f"UNPAUSED: who={who or '-'} lifted={','.join(sorted(lifted))}",
            )
        if reasons:
            return f"STILL_PAUSED: symbol={symbol} guards={','.join(sorted(reasons))}"
        return None

    # -- INPUTS ------------------------------------------------------------------------

    def on_book(self, symbol: str, book: OrderBook, now_ns: int | None = None) -> None:
        """After every applied (or dropped) book update of ``symbol``."""
        now = self._now(now_ns)
        data = self._market(symbol)
        last = book.last_update_ns
        if last is not None:
            data.last_update_ns = last
            due = self._next_stale_check
            if due is not None and last + self._stale_ns - _MARGIN_NS < due:
                self._next_stale_check = last + self._stale_ns - _MARGIN_NS
        data.book_state = book.state
        valid = book.state is BookState.VALID
        bid, ask = (book.best_bid(), book.best_ask()) if valid else (None, None)
        data.crossed = bid is not None and ask is not None and bid >= ask
        self._evaluate_data(symbol, now)
        self._settle_all(now)

    def on_feed_status(self, status: FeedStatus) -> None:
        now = self._now(status.ts_ns)
        data = self._market(status.symbol)
        data.feed_state = status.state
        data.feed_detail = status.detail
        self._evaluate_data(status.symbol, now)
        self._settle_all(now)

    def on_notice(self, notice: OrderNotice) -> None:
        """Every order manager notice (subscribe this to the manager)."""
        if not isinstance(notice, OrderActionFailed):
            return
        now = self._now(notice.ts_ns)
        if notice.error == _RATE_LIMITED_ERROR:
            self._rate_limits.append(notice.ts_ns)
        elif notice.error == _WOULD_TAKE_ERROR:
            # A post-only quote the venue refused as would-take: nothing happened, and
            # the order manager holds that price back (bot.orders.fence). In a fast
            # market several come at once; pausing the backstop for them would pull it
            # out exactly when it is needed.
            return
        else:
            self._rejects.setdefault(notice.symbol, deque()).append(notice.ts_ns)
            self._market(notice.symbol)
        self._evaluate_bursts(now)
        self._settle_all(now)

    def on_equity(self, key: str | None, equity: float, now_ns: int | None = None) -> None:
        """Latest marked PnL (realised + unrealised, in quote) of a market, or the total.

        ``key`` a symbol: the total is the sum of every market's latest value. ``key``
        None: ``equity`` is the total itself (and replaces the sum from then on).
        """
        now = self._now(now_ns)
        if key is None:
            self._equity_total = equity
        else:
            self._equity[key] = equity
        self._evaluate_losses(now)
        self._settle_all(now)

    def on_balances(
        self,
        venue: Mapping[str, float],
        expected: Mapping[str, float],
        now_ns: int | None = None,
    ) -> None:
        """Compare the venue's balances with the bot's accounting (currency -> total).

        Only currencies the bot accounts for (``expected``) are compared; a missing
        venue balance counts as zero.
        """
        now = self._now(now_ns)
        tolerance = self._guards.balance_tolerance_fraction
        worst = self.balance_mismatch(venue, expected)
        if worst is None:
            self._observe(Guard.BALANCE_MISMATCH, None, False, now)
        else:
            ccy, have, want = worst
            self._observe(
                Guard.BALANCE_MISMATCH,
                None,
                True,
                now,
                f"BALANCE_MISMATCH: currency={ccy} venue={_n(have)} bot={_n(want)} "
                f"diff={_n(have - want)} tolerance_fraction={tolerance:g}",
                {"venue": have, "bot": want, "diff": have - want},
            )
        self._settle_all(now)

    def balance_mismatch(
        self, venue: Mapping[str, float], expected: Mapping[str, float]
    ) -> tuple[str, float, float] | None:
        """The currency furthest outside the tolerance, as ``(ccy, venue, bot)``; None if
        every accounted currency agrees (a pure check: no guard is fed)."""
        tolerance = self._guards.balance_tolerance_fraction
        worst: tuple[str, float, float] | None = None
        worst_excess = 0.0
        for ccy, want in expected.items():
            have = float(venue.get(ccy, 0.0))
            diff = abs(have - want)
            allowed = tolerance * max(abs(have), abs(want))
            if diff > allowed and diff - allowed >= worst_excess:
                worst, worst_excess = (ccy, have, want), diff - allowed
        return worst

    def on_position(self, reading: PositionReading, now_ns: int | None = None) -> None:
        """A perpetual's position at its mark (every book update): the position guards."""
        now = self._now(now_ns if now_ns is not None else reading.ts_ns)
        symbol = reading.symbol
        self._market(symbol)
        lim = reading.limits
        distance = reading.liquidation_distance_bps
        self._observe(
            Guard.LIQUIDATION_DISTANCE,
            symbol,
            distance is not None and distance < lim.min_liquidation_distance_bps,
            now,
            f"LIQUIDATION_DISTANCE: symbol={symbol} mark={_n(reading.mark)} "
            f"liquidation={_n(reading.liquidation_price or 0.0)} distance_bps={distance or 0:.1f} "
            f"min_bps={lim.min_liquidation_distance_bps:g} contracts={_n(reading.contracts)}",
            {"distance_bps": distance or 0.0, "min_bps": lim.min_liquidation_distance_bps},
        )
        leverage = reading.leverage
        self._observe(
            Guard.MAX_LEVERAGE,
            symbol,
            leverage is not None and leverage > lim.max_leverage,
            now,
            f"MAX_LEVERAGE: symbol={symbol} leverage={_n(leverage or 0.0)} "
            f"max={lim.max_leverage:g} contracts={_n(reading.contracts)}",
            {"leverage": leverage or 0.0, "max": lim.max_leverage},
        )
        over = []
        cap = lim.max_position_contracts
        if cap is not None and abs(reading.contracts) > cap * (1 + 1e-9):
            over.append(f"contracts={_n(abs(reading.contracts))} max_contracts={cap:g}")
        cap = lim.max_position_notional_quote
        if cap is not None and reading.notional_quote > cap * (1 + 1e-9):
            over.append(f"notional={_n(reading.notional_quote)} max_notional={cap:g}")
        self._observe(
            Guard.POSITION_LIMIT,
            symbol,
            bool(over),
            now,
            f"POSITION_LIMIT: symbol={symbol} " + " ".join(over),
        )
        rate = reading.funding_rate
        if abs(rate) > lim.max_funding_rate:
            self._paying_side[symbol] = "buy" if rate > 0 else "sell"
        self._observe(
            Guard.FUNDING_COST,
            symbol,
            abs(rate) > lim.max_funding_rate,
            now,
            f"FUNDING_COST: symbol={symbol} rate={rate:g} max={lim.max_funding_rate:g} "
            f"paying_side={'long' if rate > 0 else 'short'}",
            {"rate": rate, "max": lim.max_funding_rate},
        )
        band = reading.mark_last_bps
        self._observe(
            Guard.MARK_PRICE_BAND,
            symbol,
            band is not None and band > lim.mark_last_band_bps,
            now,
            f"MARK_PRICE_BAND: symbol={symbol} mark={_n(reading.mark)} "
            f"last={_n(reading.last or 0.0)} distance_bps={band or 0:.1f} "
            f"max_bps={lim.mark_last_band_bps:g}",
            {"distance_bps": band or 0.0, "max_bps": lim.mark_last_band_bps},
        )
        self._settle_all(now)

    def tick(self, now_ns: int | None = None) -> None:
        """Timer: staleness without updates, sliding windows, cool-downs."""
        now = self._now(now_ns)
        self._evaluate_staleness(now)
        self._evaluate_bursts(now)
        self._settle_all(now)

    def _evaluate_staleness(self, now: int) -> None:
        """The timer's part of the data guards. Only staleness changes with time alone
        (the other data conditions change with their inputs, which evaluate them), and
        no market can be stale before its last update plus ``stale_book_s``: until the
        oldest market's moment comes, there is nothing to look at."""
        due = self._next_stale_check
        if due is not None and now < due:
            return
        oldest: int | None = None
        for symbol, data in self._markets.items():
            self._evaluate_data(symbol, now)
            last = data.last_update_ns
            if last is not None and (oldest is None or last < oldest):
                oldest = last
        # A millisecond early: the guard compares float seconds.
        self._next_stale_check = None if oldest is None else oldest + self._stale_ns - _MARGIN_NS

    # -- GUARDS ------------------------------------------------------------------------

    def _evaluate_data(self, symbol: str, now: int) -> None:
        data = self._markets[symbol]
        g = self._guards
        held = data.latches
        if held is not None and data.last_update_ns is not None:
            # Every update of a healthy market: each condition false and each latch at
            # rest with a false condition, so _observe() would change nothing.
            if not (
                (now - data.last_update_ns) / NS_PER_SECOND > g.stale_book_s
                or data.book_state is BookState.INVALID
                or data.crossed
                or data.feed_state in _DISCONNECTED
            ) and not any(latch.active or latch.condition for latch in held):
                return
        elif data.last_update_ns is not None:
            latches = self._latches
            found = [
                latches.get((guard, symbol))
                for guard in (Guard.STALE_BOOK, Guard.INVALID_BOOK, Guard.FEED_DISCONNECTED)
            ]
            if found[0] is not None and found[1] is not None and found[2] is not None:
                data.latches = (found[0], found[1], found[2])
        # Reasons are written only for a condition that holds (runs on every update).
        if data.last_update_ns is not None:
            age_s = (now - data.last_update_ns) / NS_PER_SECOND
            stale = age_s > g.stale_book_s
            self._observe(
                Guard.STALE_BOOK,
                symbol,
                stale,
                now,
                f"STALE_BOOK: symbol={symbol} age_s={age_s:.3f} max_s={g.stale_book_s:g}"
                if stale
                else "",
                {"age_s": age_s, "max_s": g.stale_book_s} if stale else None,
            )
        invalid = data.book_state is BookState.INVALID or data.crossed
        why = "crossed" if data.crossed else data.book_state.value
        self._observe(
            Guard.INVALID_BOOK,
            symbol,
            invalid,
            now,
            f"INVALID_BOOK: symbol={symbol} state={why}" if invalid else "",
        )
        state = data.feed_state
        down = state in _DISCONNECTED
        self._observe(
            Guard.FEED_DISCONNECTED,
            symbol,
            down,
            now,
            f"FEED_DISCONNECTED: symbol={symbol} state={state} detail={data.feed_detail or '-'}"
            if down
            else "",
        )

    def _bursts_at_rest(self) -> bool:
        """True when :meth:`_evaluate_bursts` would change nothing (it runs after every
        event): no failure in any window, and every burst latch at rest and false."""
        g = self._guards
        if self._rate_limits or g.rate_limited_count < 1 or g.reject_burst_count < 1:
            return False
        watched = self._burst_watch
        if watched is None or watched[0] != len(self._rejects):
            # Each failure window with its latch, looked up once: neither dict ever
            # replaces or drops an entry, and _rejects only grows (checked by its size).
            latches = self._latches
            pairs: list[tuple[deque[int], _Latch]] = []
            latch = latches.get((Guard.RATE_LIMITED, None))
            if latch is None:
                return False
            pairs.append((self._rate_limits, latch))
            for symbol, times in self._rejects.items():
                latch = latches.get((Guard.REJECT_BURST, symbol))
                if latch is None:
                    return False
                pairs.append((times, latch))
            watched = self._burst_watch = (len(self._rejects), pairs)
        for times, latch in watched[1]:  # a loop: cheaper than any() over a generator
            if times or latch.active or latch.condition:
                break
        else:
            return True
        return False

    def _evaluate_bursts(self, now: int) -> None:
        if self._bursts_at_rest():
            return
        g = self._guards
        window_ns = int(g.reject_burst_window_s * NS_PER_SECOND)
        for symbol, times in self._rejects.items():
            while times and times[0] <= now - window_ns:
                times.popleft()
            burst = len(times) >= g.reject_burst_count
            self._observe(
                Guard.REJECT_BURST,
                symbol,
                burst,
                now,
                f"REJECT_BURST: symbol={symbol} failures={len(times)} "
                f"window_s={g.reject_burst_window_s:g} max={g.reject_burst_count}"
                if burst
                else "",
                {"failures": len(times), "window_s": g.reject_burst_window_s} if burst else None,
            )
        window_ns = int(g.rate_limited_window_s * NS_PER_SECOND)
        while self._rate_limits and self._rate_limits[0] <= now - window_ns:
            self._rate_limits.popleft()
        limited = len(self._rate_limits) >= g.rate_limited_count
        self._observe(
            Guard.RATE_LIMITED,
            None,
            limited,
            now,
            f"RATE_LIMITED: failures={len(self._rate_limits)} "
            f"window_s={g.rate_limited_window_s:g} max={g.rate_limited_count}"
            if limited
            else "",
            {"failures": len(self._rate_limits), "window_s": g.rate_limited_window_s}
            if limited
            else None,
        )

    def _total_equity(self) -> float | None:
        if self._equity_total is not None:
            return self._equity_total
        return sum(self._equity.values()) if self._equity else None

    def _evaluate_losses(self, now: int) -> None:
        total = self._total_equity()
        if total is None:
            return
        day = now // NS_PER_DAY
        if day != self._day:
            self._day = day
            self._day_start_equity = total
        if self._peak_equity is None or total > self._peak_equity:
            self._peak_equity = total
        limit = self.config.max_daily_loss_quote
        loss = self._day_start_equity - total
        over = loss >= limit
        held = self._loss_latches
        if held is None:
            daily = self._latches.get((Guard.DAILY_LOSS, None))
            drawdown_latch = self._latches.get((Guard.DRAWDOWN, None))
            if daily is not None and drawdown_latch is not None:
                held = self._loss_latches = (daily, drawdown_latch)
        elif (
            not over
            and not self._peak_equity - total >= self.config.max_drawdown_quote
            and not any(latch.active or latch.condition for latch in held)
        ):
            return  # both false and both at rest: _observe() would change nothing
        self._observe(
            Guard.DAILY_LOSS,
            None,
            over,
            now,
            f"DAILY_LOSS: loss={_n(loss)} max={limit:g} equity={_n(total)} "
            f"day_start={_n(self._day_start_equity)}"
            if over
            else "",
            {"loss": loss, "max": limit, "equity": total} if over else None,
        )
        limit = self.config.max_drawdown_quote
        drawdown = self._peak_equity - total
        over = drawdown >= limit
        self._observe(
            Guard.DRAWDOWN,
            None,
            over,
            now,
            f"DRAWDOWN: drawdown={_n(drawdown)} max={limit:g} equity={_n(total)} "
            f"peak={_n(self._peak_equity)}"
            if over
            else "",
            {"drawdown": drawdown, "max": limit, "equity": total} if over else None,
        )

    def _level(self, guard: Guard) -> GuardLevel:
        fixed = PERP_LEVELS.get(guard)
        if fixed is not None:
            return fixed
        return GuardLevel(getattr(self._guards, guard.value))

    def _latch(self, guard: Guard, scope: Scope) -> _Latch:
        latch = self._latches.get((guard, scope))
        if latch is None:
            latch = _Latch(self._level(guard), order=len(self._latches))
            self._latches[(guard, scope)] = latch
        return latch

    def _observe(
        self,
        guard: Guard,
        scope: Scope,
        condition: bool,
        now: int,
        reason: str = "",
        numbers: Mapping[str, float] | None = None,
    ) -> None:
        """The guard's condition as just evaluated: fire on the rising edge."""
        latch = self._latch(guard, scope)
        latch.condition = condition
        if not condition:
            if latch.active:
                self._releasable[(guard, scope)] = latch
                if latch.clear_since_ns is None:
                    latch.clear_since_ns = now
            return
        self._releasable.pop((guard, scope), None)
        latch.clear_since_ns = None
        if latch.active:
            latch.reason = reason  # keep status current
            return
        latch.active = True
        latch.reason = reason
        latch.fired_ns = now
        self._fire(guard, scope, latch, now, reason, numbers or {})

    def _fire_momentary(
        self, guard: Guard, scope: Scope, reason: str, numbers: Mapping[str, float]
    ) -> None:
        """A guard whose condition is an event (a fat-finger order), not a lasting state."""
        now = self._clock.now_ns()
        self._observe(guard, scope, True, now, reason, numbers)
        self._observe(guard, scope, False, now)

    def _fire(
        self,
        guard: Guard,
        scope: Scope,
        latch: _Latch,
        now: int,
        reason: str,
        numbers: Mapping[str, float],
    ) -> None:
        level = latch.level
        self._log.warning(
            "guard_fired", guard=guard.value, level=level.value, symbol=scope, reason=reason
        )
        self._emit(GuardEvent(now, guard, level, scope, reason, MappingProxyType(dict(numbers))))
        if level is GuardLevel.PAUSE:
            symbols = list(self._markets) if scope is None else [scope]
            self._set_pauses(symbols, guard.value, reason, cause=f"GUARD: guard={guard.value}")
        elif level is GuardLevel.KILL:
            self.set_trading_state(TradingState.HALTED, reason=reason, who=f"guard:{guard.value}")
        elif level is GuardLevel.REDUCE and scope is not None:
            self._set_reducing([scope], guard.value, reason, cause=f"GUARD: guard={guard.value}")

    def _settle_all(self, now: int) -> None:
        if not self._releasable:
            return
        ready = sorted(self._releasable.items(), key=lambda item: item[1].order)
        for (guard, scope), latch in ready:
            if latch.active and not latch.condition:
                self._settle(guard, scope, latch, now)

    def _settle(self, guard: Guard, scope: Scope, latch: _Latch, now: int) -> None:
        """Let go of an active guard whose condition is false, if its level allows it now."""
        clear_since = latch.clear_since_ns if latch.clear_since_ns is not None else now
        cause = f"RECOVERED: guard={guard.value}"
        if latch.level is GuardLevel.KILL:
            return  # only a resume of trading lets go (set_trading_state)
        if latch.level is GuardLevel.REDUCE:
            cooldown = self._guards.pause_cooldown_s
            if (now - latch.fired_ns) / NS_PER_SECOND < cooldown:
                return
            latch.active = False
            latch.clear_since_ns = None
            self._releasable.pop((guard, scope), None)
            if scope is not None:
                self._clear_reducing(
                    [scope], guard.value, cause=f"{cause} cooldown_s={cooldown:g}"
                )
            return
        if latch.level is GuardLevel.PAUSE:
            if guard.is_data:
                healthy_s = (now - clear_since) / NS_PER_SECOND
                if healthy_s < self._guards.data_resume_s:
                    return
                cause += f" healthy_s={healthy_s:.3f}"
            else:
                if not self._guards.pause_auto_resume:
                    return  # operator only
                cooldown = self._guards.pause_cooldown_s
                since_s = (now - latch.fired_ns) / NS_PER_SECOND
                if since_s < cooldown:
                    return
                cause += f" cooldown_s={cooldown:g}"
        latch.active = False
        latch.clear_since_ns = None
        self._releasable.pop((guard, scope), None)
        if latch.level is GuardLevel.PAUSE:
            symbols = list(self._markets) if scope is None else [scope]
            self._clear_pauses(symbols, guard.value, cause=cause)
        else:
            self._log.info("guard_cleared", guard=guard.value, symbol=scope)

    # -- MARKET STATE ------------------------------------------------------------------

    def _market(self, symbol: str) -> _MarketData:
        data = self._markets.get(symbol)
        if data is None:
            data = self._markets[symbol] = _MarketData()
            self._pauses[symbol] = {}
            self._reducing[symbol] = {}
            # A new market joins the account-wide pauses in force.
            for (guard, scope), latch in list(self._latches.items()):
                if scope is None and latch.active and latch.level is GuardLevel.PAUSE:
                    self._pauses[symbol][guard.value] = latch.reason
            if self._pauses[symbol]:
                self._paused_since[symbol] = self._clock.now_ns()
        return data

    def _set_pauses(self, symbols: list[str], key: str, reason: str, *, cause: str) -> None:
        def apply() -> None:
            for s in symbols:
                self._pauses[s][key] = reason

        self._change(symbols, apply, cause=cause)

    def _set_reducing(self, symbols: list[str], key: str, reason: str, *, cause: str) -> None:
        def apply() -> None:
            for s in symbols:
                self._reducing[s][key] = reason

        self._change(symbols, apply, cause=cause)

    def _clear_reducing(self, symbols: list[str], key: str, *, cause: str) -> None:
        def apply() -> None:
            for s in symbols:
                self._reducing[s].pop(key, None)

        self._change(symbols, apply, cause=cause)

    def _clear_pauses(self, symbols: list[str], key: str, *, cause: str) -> None:
        def apply() -> None:
            for s in symbols:
                self._pauses[s].pop(key, None)

        self._change(symbols, apply, cause=cause)

    def _change(self, symbols: list[str], apply: Callable[[], object], *, cause: str) -> None:
        before = {s: self.market_state(s).state for s in symbols}
        apply()
        now = self._clock.now_ns()
        for s in symbols:
            state = self.market_state(s).state
            if state is before[s]:
                continue
            if state is MarketState.ACTIVE:
                self._paused_since.pop(s, None)
            else:
                self._paused_since[s] = now
            reasons = self.market_state(s).reasons
            self._log.info("market_state", symbol=s, state=state.value, cause=cause)
            self._emit(MarketStateChanged(now, s, before[s], state, reasons, cause))

    def _now(self, ts_ns: int | None) -> int:
        # Inputs carry their own stamps; the clock may be a little ahead of them.
        now = self._clock.now_ns()
        return now if ts_ns is None else max(ts_ns, now)
