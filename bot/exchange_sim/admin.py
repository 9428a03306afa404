"""The emulator's admin API (``/_sim/...``): faults and state over HTTP.

For the CLI and for tests that run the bot in another process. Not part of
Binance's API: no signature (the emulator binds 127.0.0.1), no request weight, not
in the venue's request log.

``POST /_sim/faults`` takes one fault as JSON, e.g.
``{"kind": "fail", "endpoint": "POST /api/v3/order", "n": 2, "status": 503}``;
``GET /_sim/state`` returns balances, orders, our trades, request counts and
websocket connection counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from bot.exchange_sim import views
from bot.exchange_sim.engine import SimOrder, SpotEngine
from bot.exchange_sim.faults import ANY, Faults
from bot.exchange_sim.ws import WsStats

Json = dict[str, Any]

FAULT_KINDS = (
    "fail",
    "rate_limit",
    "ban",
    "reject_orders",
    "delay",
    "ws_drop",
    "ws_stall",
    "depth_gap",
    "depth_out_of_order",
    "clock_skew",
    "clear",
)
FIELDS = frozenset({"kind", "endpoint", "n", "status", "seconds", "symbol", "ms"})


class BadFault(ValueError):
    """A fault request the admin API refuses (400); the message names the field."""


def apply_fault(
    faults: Faults, spec: Any, *, endpoints: Collection[str], symbols: Collection[str]
) -> None:
    """Validate ``spec`` (the parsed JSON body) and inject the fault it describes."""
    if not isinstance(spec, Mapping):
        raise BadFault("body: expected a JSON object")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise BadFault(f"field {unknown[0]!r}: unknown (expected one of {sorted(FIELDS)})")
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise BadFault(f"field 'kind': must be one of {list(FAULT_KINDS)}, got {kind!r}")
    if kind == "fail":
        faults.fail_next(
            _endpoint(spec, endpoints), _int(spec, "n", 1, 1), _int(spec, "status", 503, 400, 599)
        )
    elif kind == "rate_limit":
        faults.rate_limit_next(
            _endpoint(spec, endpoints), _int(spec, "n", 1, 1), _whole_seconds(spec, 1)
        )
    elif kind == "ban":
        faults.ban_next(
            _endpoint(spec, endpoints), _int(spec, "n", 1, 1), _whole_seconds(spec, 120)
        )
    elif kind == "reject_orders":
        faults.reject_next_orders(_int(spec, "n", 1, 1))
    elif kind == "delay":
        faults.delay_next(
            _endpoint(spec, endpoints), _int(spec, "n", 1, 1), _seconds(spec, 1.0, positive=False)
        )
    elif kind == "ws_drop":
        faults.drop_websockets()
    elif kind == "ws_stall":
        faults.stall_websockets(_seconds(spec, None, positive=True))
    elif kind == "depth_gap":
        faults.depth_gap(_symbol(spec, symbols), _int(spec, "n", 1, 1))
    elif kind == "depth_out_of_order":
        faults.depth_out_of_order(_symbol(spec, symbols))
    elif kind == "clock_skew":
        faults.clock_skew_ms = _int(spec, "ms", None)
    else:
        faults.clear()


def _int(
    spec: Mapping[str, Any],
    name: str,
    default: int | None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = spec.get(name, default)
    if value is None:
        raise BadFault(f"field {name!r}: required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadFault(f"field {name!r}: must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise BadFault(f"field {name!r}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise BadFault(f"field {name!r}: must be at most {maximum}, got {value}")
    return value


def _seconds(spec: Mapping[str, Any], default: float | None, *, positive: bool) -> float:
    value = spec.get("seconds", default)
    if value is None:
        raise BadFault("field 'seconds': required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadFault(f"field 'seconds': must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise BadFault(f"field 'seconds': must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def _whole_seconds(spec: Mapping[str, Any], default: int) -> int:
    # Retry-After is whole seconds on the wire; 2.0 (a CLI's float) means 2.
    value = spec.get("seconds", default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _int({"seconds": value}, "seconds", default, 0)


def _endpoint(spec: Mapping[str, Any], endpoints: Collection[str]) -> str:
    value = spec.get("endpoint", ANY)
    if value != ANY and value not in endpoints:
        raise BadFault(
            f"field 'endpoint': must be '*' or one of {sorted(endpoints)}, got {value!r}"
        )
    return str(value)


def _symbol(spec: Mapping[str, Any], symbols: Collection[str]) -> str:
    value = spec.get("symbol")
    if value is None:
        raise BadFault("field 'symbol': required")
    if value not in symbols:
        raise BadFault(f"field 'symbol': must be one of {sorted(symbols)}, got {value!r}")
    return str(value)


def order_json(order: SimOrder) -> Json:
    return {
        "orderId": order.order_id,
        "clientOrderId": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "timeInForce": order.time_in_force,
        "price": views.num(order.price),
        "origQty": views.num(order.orig_qty),
        "executedQty": views.num(order.executed_qty),
        "cummulativeQuoteQty": views.num(order.cumm_quote),
        "status": order.status,
        "time": order.time_ms,
        "updateTime": order.update_ms,
    }


def state_json(
    engine: SpotEngine,
    requests: Sequence[tuple[str, str, int]],
    websockets: WsStats,
    *,
    now_ms: int,
    stalled: bool,
) -> Json:
    by_endpoint: dict[str, dict[str, int]] = {}
    for (method, path, status), count in sorted(Counter(requests).items()):
        by_endpoint.setdefault(f"{method} {path}", {})[str(status)] = count
    return {
        "time": now_ms,
        "balances": {
            asset: {"free": views.num(b.free), "locked": views.num(b.locked)}
            for asset, b in sorted(engine.balances.items())
        },
        "open_orders": [order_json(o) for o in engine.orders.values() if o.is_open],
        "orders": [order_json(o) for o in engine.orders.values()],
        "trades": [views.trade_json(t) for t in engine.trades],
        "requests": {"total": len(requests), "by_endpoint": by_endpoint},
        "websockets": {**websockets.as_json(), "stalled": stalled},
    }
