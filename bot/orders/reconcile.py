"""Reconciliation: compare the venue's open orders with what the manager tracks.

Pure classification; the manager performs the resulting actions. Orders whose client
id does not carry our prefix are only counted, never touched: the account may be shared
with a human or another bot.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.orders.state import TrackedOrder
from bot.orders.updates import OrderUpdate


@dataclass(slots=True)
class ReconcilePlan:
    # Tracked and open on the venue: apply the snapshot as an (idempotent) update.
    refresh: list[tuple[TrackedOrder, OrderUpdate]] = field(default_factory=list)
    # Ours, open on the venue, and known (journal, or tracked and only inferred gone).
    adopt: list[OrderUpdate] = field(default_factory=list)
    # Ours, open on the venue, unknown to us and to the journal: adopt or cancel (config).
    stray: list[OrderUpdate] = field(default_factory=list)
    # Tracked as unfinished, idle, but not among the open orders: look each one up.
    missing: list[TrackedOrder] = field(default_factory=list)
    foreign: int = 0
    # Tracked, finished by a venue report, yet listed open: a stale listing; ignored.
    stale: list[TrackedOrder] = field(default_factory=list)


def plan_reconcile(
    symbol: str,
    open_orders: Sequence[dict[str, Any]],
    *,
    tracked: Collection[TrackedOrder],
    find: Callable[[OrderUpdate], TrackedOrder | None],
    is_ours: Callable[[str | None], bool],
    known_client_ids: Collection[str],
    is_busy: Callable[[TrackedOrder], bool],
) -> ReconcilePlan:
    plan = ReconcilePlan()
    seen: set[str] = set()
    for raw in open_orders:
        update = OrderUpdate.from_ccxt(raw)
        if update.symbol is not None and update.symbol != symbol:
            continue
        order = find(update)
        if order is None and not is_ours(update.client_id):
            plan.foreign += 1
            continue
        if order is not None:
            seen.add(order.client_id)
            if not order.is_finished:
                plan.refresh.append((order, update))
            elif order.gone_inferred:
                plan.adopt.append(update)
            else:
                plan.stale.append(order)
        elif update.client_id in known_client_ids:
            plan.adopt.append(update)
        else:
            plan.stray.append(update)
    for order in tracked:
        if (
            order.symbol == symbol
            and not order.is_finished
            and order.client_id not in seen
            and not is_busy(order)
        ):
            plan.missing.append(order)
    return plan
