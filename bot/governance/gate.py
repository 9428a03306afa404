"""The backstop under a policy: the policy's quoting limits, and its scope enforced.

:class:`GovernedStrategy` is the strategy the trader runs when ``strategy.name`` is
``backstop``. It builds the backstop from the policy's ``[quoting]`` and
``[replenishment]`` and, around each decision, applies ``[scope]``:

- a market outside ``scope.markets``: no quotes (the detector still watches it);
- an episode engaged for longer than ``scope.max_episode_s``: no quotes until the
  detector stands down (replenishment afterwards is allowed: it reduces the risk);
- ``scope.max_reserve_quote_per_episode``: while engaged, the strategy sizes within
  ``cap - |position| x mid`` (and its position limit within the cap), and whatever it
  asks for beyond that is dropped, outermost quotes first.

Deterministic, like every strategy: a replay re-runs it and must get the same quotes.
A policy change (:meth:`set_policy`) starts a fresh backstop: the next decision requotes
under the new limits rather than holding a ladder built under the old ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.governance.policy import Policy
from strategies.backstop import BackstopStrategy
from strategies.base import Decision, MarketContext, Quote

if TYPE_CHECKING:
    from bot.detector import DetectorUpdate
    from bot.orders.events import OrderFilled

NS_PER_S = 1_000_000_000
# Float dust in a sum of notionals must not drop a quote that fits.
_SLACK = 1e-9


class GovernedStrategy:
    name: str = "backstop"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = BackstopStrategy(policy.backstop_params())

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = BackstopStrategy(policy.backstop_params())

    def on_fill(self, fill: OrderFilled) -> None:
        self.inner.on_fill(fill)

    def decide(self, ctx: MarketContext) -> Decision:
        scope = self.policy.scope
        if ctx.symbol not in scope.markets:
            return Decision((), f"policy: {ctx.symbol} is outside the policy's scope")
        update = ctx.detector
        active = update is not None and update.active
        if (
            active
            and scope.max_episode_s is not None
            and update is not None
            and update.engaged_since_ns is not None
            and ctx.ts_ns - update.engaged_since_ns > scope.max_episode_s * NS_PER_S
        ):
            return Decision(
                (), f"policy: episode engaged over max_episode_s={scope.max_episode_s:g}"
            )
        cap = scope.max_reserve_quote_per_episode
        if not active or cap is None:
            return self.inner.decide(ctx)
        mid = ctx.sample.mid
        room = max(0.0, cap - abs(ctx.inventory.net_base) * mid)
        budget = replace(
            ctx.budget,
            quote_room=min(ctx.budget.quote_room, room),
            market_cap_quote=min(ctx.budget.market_cap_quote, cap),
        )
        decision = self.inner.decide(replace(ctx, budget=budget))
        kept = _within(decision.quotes, room, ctx)
        if len(kept) == len(decision.quotes):
            return decision
        return Decision(
            kept,
            f"{decision.reason}; policy: {len(decision.quotes) - len(kept)} quotes over "
            f"max_reserve_quote_per_episode={cap:g}",
            decision.mode,
        )

    def rehearse(self, ctx: MarketContext) -> Decision:
        """The inner strategy's rehearsal (see :meth:`BackstopStrategy.rehearse`), if it
        has one: nothing is decided, so the policy has nothing to say."""
        rehearse: Callable[[MarketContext], Decision] | None = getattr(
            self.inner, "rehearse", None
        )
        return rehearse(ctx) if rehearse is not None else Decision((), "no rehearsal")

    def quiet(
        self, symbol: str, update: DetectorUpdate, *, net_base: float, reduce_only: bool
    ) -> bool:
        """True when :meth:`decide` on this reading asks for no quotes and changes nothing
        (see :meth:`strategies.backstop.BackstopStrategy.quiet`)."""
        if symbol not in self.policy.scope.markets:
            return True
        return self.inner.quiet(symbol, update, net_base=net_base, reduce_only=reduce_only)

    def held(self, symbol: str) -> tuple[Quote, ...]:
        """The ladder the backstop is holding for ``symbol`` (part of an episode's start)."""
        resting: dict[str, tuple[Quote, ...]] = self.inner._ladders._resting
        return resting.get(symbol, ())

    def restore_held(self, symbol: str, quotes: tuple[Quote, ...]) -> None:
        resting: dict[str, tuple[Quote, ...]] = self.inner._ladders._resting
        if quotes:
            resting[symbol] = quotes
        else:
            resting.pop(symbol, None)


def _notional(q: Quote, ctx: MarketContext) -> float:
    # Contract markets value an amount by their rules; spot is price x amount.
    value = getattr(ctx.rules, "notional", None)
    return float(value(q.price, q.amount)) if callable(value) else q.notional


def _within(quotes: tuple[Quote, ...], room: float, ctx: MarketContext) -> tuple[Quote, ...]:
    """Quotes in order (innermost first) while their notional fits in ``room``."""
    kept: list[Quote] = []
    used = 0.0
    for q in quotes:
        n = _notional(q, ctx)
        if used + n > room * (1.0 + _SLACK):
            continue
        used += n
        kept.append(q)
    return tuple(kept)
