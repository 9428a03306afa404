"""What the journal stores: record kinds and their payloads, built from the bot's events.

The journal is one append-only, hash-chained table (``records``: id, ts_ns, kind,
payload JSON, prev_hash, hash, plus the indexed copies symbol, client_id and ref);
per-kind views (``orders``, ``fills``, ``episodes``...) give it the shape of separate
tables for SQL users (see :mod:`bot.journal.schema`). One log rather than one table
per kind because a single chain then orders *everything* (an order's state change,
the fill it caused, the guard that fired after it) and one verification covers it all.

Kinds and their payload keys (every payload is a JSON object):

``start``     config fingerprint at start: version, fingerprint, settings (the settings
              dump without secrets), credentials (which are set, never their values), mode
``close``     a clean shutdown (its absence before the next ``start`` means a crash)
``order``     an order's state change: client_id, exchange_id, symbol, side, price, amount,
              filled, previous, state, event, reason, tag, post_only
``fill``      one trade of one of our orders: client_id, exchange_id, symbol, side, trade_id,
              price, amount, fee_cost, fee_currency, liquidity (maker/taker), venue_ts_ms,
              source (``stream``: reported by the order manager; ``reconcile``: found on
              the venue after a restart). At most once per (client_id, trade_id).
``funding``   one funding payment of a perpetual, as the venue booked it (testnet/live):
              symbol, id (the venue's, e.g. Binance ``tranId``), amount (received, < 0:
              paid; a decimal string), currency, time_ms, source (``venue``: read while
              running; ``reconcile``: found at a start). At most once per (symbol, id).
``order_failed`` a venue action that failed for good: client_id, symbol, action, error, reason
``balance``   a balance snapshot: source, balances {currency: {free, used, total}}
``episode``   an episode's ``Episode.to_dict()`` (recorded at its start and at its end;
              the latest record per id is its final state)
``option_episode``  an option episode's ``OptionEpisode.to_dict()`` plus underlying,
              synthetic and caps (``[options.limits]``), recorded at its start, at its end
              and at shutdown; the latest record per (symbol, start_ms) is its final state
``guard``     a guard fired: guard, level, symbol, reason, numbers
``market_state``  a market paused/resumed: symbol, previous, state, reasons, cause
``trading_state`` account trading state: previous, state, reason, who
``kill``      a kill-switch trip, flat confirmation, failure to confirm, or resume:
              action, previous, state, reason, source, who, elapsed_ns, numbers
``policy``    the intervention policy in force: at start (action ``start``) and at every
              change (``change``): hash, previous_hash, name, source, policy (normalised),
              text, who, reason (:mod:`bot.governance.policy`)
``approval``  a resume approval under the two-person rule: action, state (``pending``,
              ``approved``, ``refused``), approver, approvers, needed, reason, refused,
              trip, loss_trip
``evidence``  an episode's evidence window opening (detector and strategy state, limits,
              the readings since the last checkpoint) or closing
              (:mod:`bot.governance.evidence`)
``decision``  one detector reading in an evidence window: the market data, the bot's
              inventory and budget, and what the detector, strategy, budget and risk
              engine decided
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from bot.journal.chain import canonical_json

# Type-only imports (and imports inside functions): the order, risk and kill-switch
# packages pull in ccxt and pydantic, which ``backstop audit`` (and a reader in a
# notebook) should not have to load.
if TYPE_CHECKING:
    from bot.killswitch import KillRecord
    from bot.orders.events import OrderActionFailed, OrderFilled, OrderStateChanged
    from bot.orders.state import TrackedOrder
    from bot.risk.events import GuardEvent, MarketStateChanged, TradingStateChanged
    from bot.settings.models import Settings

START: Final = "start"
CLOSE: Final = "close"
ORDER: Final = "order"
FILL: Final = "fill"
FUNDING: Final = "funding"
ORDER_FAILED: Final = "order_failed"
BALANCE: Final = "balance"
EPISODE: Final = "episode"
OPTION_EPISODE: Final = "option_episode"
GUARD: Final = "guard"
MARKET_STATE: Final = "market_state"
TRADING_STATE: Final = "trading_state"
KILL: Final = "kill"
TRACE: Final = "trace"
"""Book, detector and inventory rows for reports (:mod:`bot.journal.trace`)."""
POLICY: Final = "policy"
APPROVAL: Final = "approval"
EVIDENCE: Final = "evidence"
DECISION: Final = "decision"
WARNING: Final = "warning"
"""The early warning's alarm going up or down (:mod:`bot.warning.live`)."""

KINDS: Final = frozenset(
    {
        START,
        CLOSE,
        ORDER,
        FILL,
        FUNDING,
        ORDER_FAILED,
        BALANCE,
        EPISODE,
        OPTION_EPISODE,
        GUARD,
        MARKET_STATE,
        TRADING_STATE,
        KILL,
        TRACE,
        POLICY,
        APPROVAL,
        EVIDENCE,
        DECISION,
        WARNING,
    }
)

# Settings fields that hold secrets: left out of the fingerprint and the stored dump.
SECRET_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "exchange": frozenset({"api_key", "secret", "password"}),
    "control": frozenset({"token", "tokens"}),
    "fleet": frozenset({"password"}),
}


class Entry(NamedTuple):
    """One record on its way to the database: the payload already in canonical JSON.

    A tuple of plain values, so the garbage collector stops tracking it: a deep queue
    of entries then adds nothing to the GC pauses of the event loop's thread.
    """

    seq: int
    kind: str
    ts_ns: int
    text: str
    symbol: str | None
    client_id: str | None
    ref: str | None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def derived_columns(kind: str, payload: Mapping[str, Any]) -> tuple[str | None, ...]:
    """(symbol, client_id, ref): the indexed copies of payload fields.

    ``ref`` is a fill's trade id or an episode's id. Verification recomputes these from
    the (hashed) payload, so editing them is detected too.
    """
    ref: str | None = None
    if kind == FILL:
        ref = _str_or_none(payload.get("trade_id"))
    elif kind == EPISODE:
        ref = _str_or_none(payload.get("id"))
    return _str_or_none(payload.get("symbol")), _str_or_none(payload.get("client_id")), ref


def make_entry(seq: int, kind: str, ts_ns: int, payload: Mapping[str, Any]) -> Entry:
    symbol, client_id, ref = derived_columns(kind, payload)
    return Entry(seq, kind, int(ts_ns), canonical_json(payload), symbol, client_id, ref)


class RawEntry(NamedTuple):
    """An :class:`Entry` whose payload is not encoded yet: the journal's writer thread
    encodes it (:meth:`encoded`), off the event loop. Only for payloads nothing changes
    after they are handed over (fresh dicts of plain values)."""

    seq: int
    kind: str
    ts_ns: int
    payload: Mapping[str, Any]
    symbol: str | None
    client_id: str | None
    ref: str | None

    def encoded(self) -> Entry:
        text = canonical_json(self.payload)
        return Entry(self.seq, self.kind, self.ts_ns, text, self.symbol, self.client_id, self.ref)


def make_raw_entry(seq: int, kind: str, ts_ns: int, payload: Mapping[str, Any]) -> RawEntry:
    symbol, client_id, ref = derived_columns(kind, payload)
    return RawEntry(seq, kind, int(ts_ns), payload, symbol, client_id, ref)


# ---------------------------------------------------------------------------- payloads


def order_payload(notice: OrderStateChanged, order: TrackedOrder | None = None) -> dict[str, Any]:
    """``order``: the notice, plus what only the tracked order knows (side, price...)."""
    return {
        "client_id": notice.client_id,
        "exchange_id": notice.exchange_id,
        "symbol": notice.symbol,
        "side": order.side if order is not None else None,
        "price": order.price if order is not None else None,
        "amount": order.amount if order is not None else None,
        "filled": notice.filled,
        "previous": None if notice.previous is None else notice.previous.value,
        "state": notice.state.value,
        "event": notice.event.value,
        "reason": notice.reason,
        "tag": order.tag if order is not None else None,
        "post_only": order.post_only if order is not None else None,
    }


def fill_payload(
    notice: OrderFilled, order: TrackedOrder | None = None, *, source: str = "stream"
) -> dict[str, Any]:
    return {
        "client_id": notice.client_id,
        "exchange_id": order.exchange_id if order is not None else None,
        "symbol": notice.symbol,
        "side": notice.side,
        "trade_id": notice.trade_id,
        "price": notice.price,
        "amount": notice.amount,
        "fee_cost": notice.fee_cost,
        "fee_currency": notice.fee_currency,
        "liquidity": notice.taker_or_maker,
        "venue_ts_ms": notice.venue_ts_ms,
        "source": source,
    }


def failure_payload(notice: OrderActionFailed) -> dict[str, Any]:
    return {
        "client_id": notice.client_id,
        "symbol": notice.symbol,
        "action": notice.action,
        "error": notice.error,
        "reason": notice.reason,
    }


def risk_payload(event: GuardEvent | MarketStateChanged | TradingStateChanged) -> dict[str, Any]:
    from bot.risk.events import GuardEvent, MarketStateChanged

    if isinstance(event, GuardEvent):
        return {
            "guard": event.guard.value,
            "level": event.level.value,
            "symbol": event.symbol,
            "reason": event.reason,
            "numbers": dict(event.numbers),
        }
    if isinstance(event, MarketStateChanged):
        return {
            "symbol": event.symbol,
            "previous": event.previous.value,
            "state": event.state.value,
            "reasons": dict(event.reasons),
            "cause": event.cause,
        }
    return {
        "previous": event.previous.value,
        "state": event.state.value,
        "reason": event.reason,
        "who": event.who,
    }


def risk_kind(event: GuardEvent | MarketStateChanged | TradingStateChanged) -> str:
    from bot.risk.events import GuardEvent, MarketStateChanged

    if isinstance(event, GuardEvent):
        return GUARD
    return MARKET_STATE if isinstance(event, MarketStateChanged) else TRADING_STATE


def kill_payload(record: KillRecord) -> dict[str, Any]:
    return {
        "action": record.action,
        "previous": record.previous.value,
        "state": record.state.value,
        "reason": record.reason,
        "source": record.source,
        "who": record.who,
        "elapsed_ns": record.elapsed_ns,
        "numbers": dict(record.numbers),
    }


_BALANCE_META = frozenset({"info", "timestamp", "datetime", "free", "used", "total", "debt"})


def balance_payload(balance: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """From a ccxt balance structure: per currency free/used/total (as floats)."""

    def num(x: Any) -> float | None:
        try:
            return None if x is None else float(x)
        except (TypeError, ValueError):
            return None

    balances: dict[str, dict[str, float | None]] = {}
    for ccy, entry in balance.items():
        if ccy in _BALANCE_META or not isinstance(entry, Mapping):
            continue
        balances[str(ccy)] = {k: num(entry.get(k)) for k in ("free", "used", "total")}
    return {"source": source, "balances": balances}


def settings_dump(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values, with every secret field left out (not masked: a
    masked value would still say whether it changed, which is not the dump's business)."""
    exclude: dict[str, Any] = {section: set(fields) for section, fields in SECRET_FIELDS.items()}
    dump: dict[str, Any] = settings.model_dump(mode="json", exclude=exclude)
    return dump


def fingerprint(settings: Settings, version: str) -> str:
    """sha256 of the canonical JSON of the secret-free settings dump and the version."""
    text = canonical_json({"settings": settings_dump(settings), "version": version})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def start_payload(settings: Settings, version: str) -> dict[str, Any]:
    credentials = {
        field: settings.exchange.credentials_present((field,))
        for field in sorted(SECRET_FIELDS["exchange"])
    }
    return {
        "version": version,
        "fingerprint": fingerprint(settings, version),
        "settings": settings_dump(settings),
        "credentials": credentials,
        "mode": settings.mode,
        "pid": os.getpid(),
    }
