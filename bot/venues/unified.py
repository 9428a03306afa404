"""ccxt's ``safe_order`` for the orders the paper venue renders most: no fills yet.

Every create, cancel and their ``watch_orders`` updates hand the order manager a ccxt
order structure, which the paper venue builds as ccxt does, with ``safe_order`` (~40 us:
two dozen ``safe_*`` lookups and string-number helpers). An order that has not traded
takes one fixed path through it, which :func:`plain_order` follows directly: the same
keys in the same order, the same values of the same types. Orders with trades or a fee
are left to ``safe_order`` itself, and so is an exchange object whose ``number`` is not
``float`` (``safe_order`` would then make other number types).

``tests/test_unified_order.py`` holds the two to the same output over seeded orders of
every status, price and flag the venue makes; ccxt's function stays the reference.
"""

from __future__ import annotations

from typing import Any

_NO_TRIGGER = ("triggerPrice", "stopPrice", "takeProfitPrice", "stopLossPrice")


def _string(raw: dict[str, Any], key: str) -> str | None:
    """``Exchange.safe_string``: non-empty strings as they are, numbers as strings."""
    value = raw.get(key)
    t = type(value)
    if t is str:
        return value if value != "" else None
    if t is float or t is int:
        return str(value)
    return None


def plain_order(raw: dict[str, Any]) -> dict[str, Any] | None:
    """``safe_order(raw)`` (``number = float``) of an order without trades or fee, or None
    when ``raw`` is not such an order and ``safe_order`` must render it.

    Like ``safe_order``, ``raw`` gains ``"fees": []`` and the result is a new dict.
    """
    if raw.get("trades") or raw.get("fee") is not None or raw.get("fees") is not None:
        return None
    for key in _NO_TRIGGER:
        if raw.get(key) is not None:
            return None
    texts = [_string(raw, key) for key in ("amount", "filled", "remaining", "cost", "price")]
    try:
        # Each number read once. Not a number: safe_order's helpers make None of it.
        amount, filled, remaining, cost, price = (None if t is None else float(t) for t in texts)
    except ValueError:
        return None
    if amount is None or filled is None or remaining is None or cost is None:
        return None  # safe_order would derive one from the others
    if amount == 0:
        return None  # omit_zero: safe_order derives the amount from filled + remaining
    if filled != 0 or raw.get("average") is not None:
        return None  # an order that traded: average and cost are derived there
    time_in_force = _string(raw, "timeInForce")
    post_only = raw.get("postOnly")
    if time_in_force is None or post_only is None:
        return None  # safe_order derives one from the other
    timestamp = raw.get("timestamp")
    last_trade = raw.get("lastTradeTimestamp")
    last_update = raw.get("lastUpdateTimestamp")
    for stamp in (timestamp, last_trade, last_update):
        if stamp is not None and type(stamp) is not int:
            return None  # safe_integer would convert it
    if price == 0:
        price = None  # omit_zero (a market order takes its average there: None too)
    order_type = _string(raw, "type")
    datetime = _string(raw, "datetime")
    if datetime is None:
        return None  # safe_order formats the timestamp itself
    raw["fees"] = []
    return {
        **raw,
        "id": _string(raw, "id"),
        "clientOrderId": _string(raw, "clientOrderId"),
        "timestamp": timestamp,
        "datetime": datetime,
        "symbol": _string(raw, "symbol"),
        "type": order_type,
        "side": _string(raw, "side"),
        "lastTradeTimestamp": last_trade,
        "lastUpdateTimestamp": last_update,
        "price": price,
        "amount": amount,
        "cost": cost,
        "average": None,
        "filled": filled,
        "remaining": remaining,
        "timeInForce": time_in_force,
        "postOnly": post_only,
        "trades": [],
        "reduceOnly": raw.get("reduceOnly"),
        "stopPrice": None,
        "triggerPrice": None,
        "takeProfitPrice": None,
        "stopLossPrice": None,
        "status": _string(raw, "status"),
        "fee": None,
    }
