"""The project's own recording format: JSON Lines, optionally gzip-compressed.

One normalised event per line, so a recording replays exactly what a feed yielded,
whatever the venue. Specified in ``docs/replay-format.md``; the short version::

    {"type":"header","format":"backstop-replay","version":1,"source":"..."}
    {"type":"snapshot","ts_ns":1723161254206652067,"symbol":"BTC/USDT","update_id":50093239218,
     "bids":[[61837.63,3.78826],...],"asks":[[61837.64,1.54698],...]}
    {"type":"delta","ts_ns":...,"symbol":"BTC/USDT","first_id":..,"last_id":..,"prev_id":null,
     "exchange_ts_ns":...,"bids":[[61837.63,0.0]],"asks":[]}
    {"type":"trade","ts_ns":...,"symbol":"BTC/USDT","price":61837.63,"amount":0.02,
     "side":"sell","id":"3735683259","exchange_ts_ns":...}
    {"type":"status","ts_ns":...,"symbol":"BTC/USDT","state":"disconnected","detail":"..."}

:class:`JsonlWriter` writes it (live recording, conversion); :func:`iter_jsonl` reads it.
"""

from __future__ import annotations

import gzip
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson

from bot.feeds.events import (
    BookDelta,
    BookSnapshot,
    FeedState,
    FeedStatus,
    Levels,
    MarketEvent,
    Trade,
    levels,
)

_loads: Callable[[bytes], Any] = orjson.loads
_dumps: Callable[[object], bytes] = orjson.dumps


FORMAT_NAME = "backstop-replay"
FORMAT_VERSION = 1
"""Bumped when a reader of the previous version would misread new files."""

EVENT_TYPES = frozenset({"snapshot", "delta", "trade", "status"})


@dataclass(frozen=True, slots=True)
class JsonlHeader:
    version: int
    source: str = ""


def read_header(first_line: bytes) -> JsonlHeader | None:
    """The header when ``first_line`` starts a JSONL recording, else ``None``.

    A file without a header is accepted when its first line is an event. Raises
    ``ValueError`` for a header of a newer, unsupported version.
    """
    try:
        obj = _loads(first_line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == "header" and obj.get("format") == FORMAT_NAME:
        version = obj.get("version")
        if type(version) is not int or version < 1:
            raise ValueError(f"bad {FORMAT_NAME} header version {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{FORMAT_NAME} version {version} is newer than this bot reads "
                f"(up to {FORMAT_VERSION}); upgrade backstop"
            )
        source = obj.get("source")
        return JsonlHeader(version=version, source=source if isinstance(source, str) else "")
    if kind in EVENT_TYPES and "ts_ns" in obj:
        return JsonlHeader(version=FORMAT_VERSION)
    return None


# --- reading ------------------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    v = obj.get(key)
    return None if v is None else int(v)


def _levels(rows: object) -> Levels:
    try:
        return levels(rows)
    except (TypeError, ValueError) as e:
        raise _Bad("bad_levels") from e


def _symbol(obj: Mapping[str, Any], symbol_map: Mapping[str, str] | None) -> str:
    sym = obj["symbol"]
    if not isinstance(sym, str):
        raise _Bad("bad_field")
    return symbol_map.get(sym, sym) if symbol_map is not None else sym


def parse_event(obj: object, symbol_map: Mapping[str, str] | None = None) -> MarketEvent | None:
    """One decoded line -> event; ``None`` for a header. Raises ``ValueError`` with the reason
    (``missing_field``, ``bad_field``, ``bad_levels``, ``unknown_type``, ``not_an_object``)."""
    if not isinstance(obj, dict):
        raise ValueError("not_an_object")
    kind = obj.get("type")
    try:
        if kind == "delta":
            return BookDelta(
                symbol=_symbol(obj, symbol_map),
                ts_ns=int(obj["ts_ns"]),
                bids=_levels(obj["bids"]),
                asks=_levels(obj["asks"]),
                first_id=_opt_int(obj, "first_id"),
                last_id=_opt_int(obj, "last_id"),
                prev_id=_opt_int(obj, "prev_id"),
                exchange_ts_ns=_opt_int(obj, "exchange_ts_ns"),
            )
        if kind == "trade":
            side = obj["side"]
            if side != "buy" and side != "sell":
                raise _Bad("bad_field")
            return Trade(
                symbol=_symbol(obj, symbol_map),
                ts_ns=int(obj["ts_ns"]),
                price=float(obj["price"]),
                amount=float(obj["amount"]),
                side=side,
                trade_id=str(obj["id"]),
                exchange_ts_ns=_opt_int(obj, "exchange_ts_ns"),
            )
        if kind == "snapshot":
            return BookSnapshot(
                symbol=_symbol(obj, symbol_map),
                ts_ns=int(obj["ts_ns"]),
                bids=_levels(obj["bids"]),
                asks=_levels(obj["asks"]),
                update_id=_opt_int(obj, "update_id"),
                exchange_ts_ns=_opt_int(obj, "exchange_ts_ns"),
            )
        if kind == "status":
            detail = obj.get("detail", "")
            return FeedStatus(
                symbol=_symbol(obj, symbol_map),
                ts_ns=int(obj["ts_ns"]),
                state=FeedState(obj["state"]),
                detail=detail if isinstance(detail, str) else str(detail),
            )
        if kind == "header":
            return None
    except _Bad as e:
        raise ValueError(e.reason) from e
    except KeyError as e:
        raise ValueError("missing_field") from e
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError("bad_field") from e
    raise ValueError("unknown_type")


def iter_jsonl(
    lines: Iterable[bytes],
    *,
    skipped: Counter[str],
    malformed: Counter[str],
    symbol_map: Mapping[str, str] | None = None,
) -> Iterator[MarketEvent]:
    """Events from the lines of a JSONL recording, in file order.

    Never raises on bad input: lines are counted in ``skipped`` (``header``, ``blank``,
    ``ended_status``) or in ``malformed`` by reason. A recorded ``ended`` status is skipped
    because the replay announces the end of data itself.
    """
    for line in lines:
        try:
            obj = _loads(line)
        except (ValueError, RecursionError):
            if line.strip():
                malformed["invalid_json"] += 1
            else:
                skipped["blank"] += 1
            continue
        try:
            event = parse_event(obj, symbol_map)
        except ValueError as e:
            malformed[str(e)] += 1
            continue
        if event is None:
            skipped["header"] += 1
        elif type(event) is FeedStatus and event.state is FeedState.ENDED:
            skipped["ended_status"] += 1
        else:
            yield event


# --- writing ------------------------------------------------------------------------------


def _num(x: float) -> float | str:
    # JSON has no NaN/inf. Written as strings, they read back through float()/levels(),
    # so a recording stays faithful and the book still gets to reject them.
    return x if math.isfinite(x) else str(x)


def _rows(arr: Levels) -> list[list[float]] | list[list[float | str]]:
    if np.isfinite(arr).all():
        rows: list[list[float]] = arr.tolist()
        return rows
    return [[_num(p), _num(q)] for p, q in arr.tolist()]


def event_to_dict(event: MarketEvent) -> dict[str, object]:
    """The JSONL object for one event (keys in documented order)."""
    if type(event) is BookDelta:
        return {
            "type": "delta",
            "ts_ns": event.ts_ns,
            "symbol": event.symbol,
            "first_id": event.first_id,
            "last_id": event.last_id,
            "prev_id": event.prev_id,
            "exchange_ts_ns": event.exchange_ts_ns,
            "bids": _rows(event.bids),
            "asks": _rows(event.asks),
        }
    if type(event) is Trade:
        return {
            "type": "trade",
            "ts_ns": event.ts_ns,
            "symbol": event.symbol,
            "price": _num(event.price),
            "amount": _num(event.amount),
            "side": event.side,
            "id": event.trade_id,
            "exchange_ts_ns": event.exchange_ts_ns,
        }
    if type(event) is BookSnapshot:
        return {
            "type": "snapshot",
            "ts_ns": event.ts_ns,
            "symbol": event.symbol,
            "update_id": event.update_id,
            "exchange_ts_ns": event.exchange_ts_ns,
            "bids": _rows(event.bids),
            "asks": _rows(event.asks),
        }
    if type(event) is FeedStatus:
        return {
            "type": "status",
            "ts_ns": event.ts_ns,
            "symbol": event.symbol,
            "state": event.state.value,
            "detail": event.detail,
        }
    raise TypeError(f"not a market event: {type(event).__name__}")


class JsonlWriter:
    """Records events to a JSONL file (gzip-compressed when the name ends in ``.gz``).

    Writes the header on open. ``ended`` statuses are not written (a replay announces
    the end itself). Use as a context manager, or call :meth:`close`: a gzip file cut
    off without it loses its buffered tail, though the replay reads what is complete.
    """

    def __init__(self, path: Path | str, *, source: str = "", compress: bool | None = None) -> None:
        self.path = Path(path)
        if compress is None:
            compress = self.path.suffix == ".gz"
        self._file: io.BufferedIOBase = (
            gzip.open(self.path, "wb", compresslevel=6) if compress else open(self.path, "wb")  # noqa: SIM115
        )
        self.events_written = 0
        header = {"type": "header", "format": FORMAT_NAME, "version": FORMAT_VERSION}
        if source:
            header["source"] = source
        self._file.write(_dumps(header) + b"\n")

    def write(self, event: MarketEvent) -> None:
        if type(event) is FeedStatus and event.state is FeedState.ENDED:
            return
        self._file.write(_dumps(event_to_dict(event)) + b"\n")
        self.events_written += 1

    def write_all(self, events: Iterable[MarketEvent]) -> int:
        """Writes every event; returns how many were written."""
        before = self.events_written
        for event in events:
            self.write(event)
        return self.events_written - before

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
