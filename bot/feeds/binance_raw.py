"""Binance's raw market-data messages -> normalised events.

One parser for every place the bot meets Binance's own wire format: the replay of
hftbacktest captures (``<local_receive_ns> <raw JSON>`` lines, :func:`iter_capture`),
and later a live raw-websocket feed and a local exchange emulator
(:func:`parse_message`, one decoded message at a time).

Handled: combined-stream messages ``{"stream": ..., "data": {...}}`` and bare stream
payloads for ``depthUpdate`` (spot ``U``/``u``; USD-M and COIN-M futures also ``pu`` and
``T``), ``trade`` and ``bookTicker``, and the REST depth snapshot
``{"lastUpdateId": ..., "bids": ..., "asks": ...}`` (no symbol of its own: the caller
says whose it is).

Conventions:
- ``ts_ns`` is the local receive time given by the caller; ``exchange_ts_ns`` is Binance's
  ``T`` (transaction/trade time, closest to when the book changed) or else ``E`` (event
  time), in ms converted to ns; ``None`` when the message has neither (spot snapshot).
- Trade side is the aggressor's: ``m: true`` means the buyer was the maker, so the
  aggressor sold. Futures trades with ``X`` other than ``"MARKET"`` (liquidation,
  insurance fund, ADL) are not aggressor flow and are skipped.
- Symbols are Binance ids (``data["s"]``, else the stream name's prefix upper-cased),
  translated through ``symbol_map`` (raw id -> unified) when given.
- A message that is not JSON, lacks a field or has non-numeric levels raises
  :class:`MalformedMessage` (:func:`parse_message`) or is counted by reason
  (:func:`iter_capture`). Values are not judged: NaN, negative or crossed levels pass
  through as floats for the order book to reject.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from bot import _book_kernel
from bot.clock import NS_PER_MS
from bot.feeds.events import BookDelta, BookSnapshot, Levels, Trade, levels

# orjson parses these lines about twice as fast as the json module.
_loads: Callable[[bytes], Any] = orjson.loads

BinanceMarket = Literal["spot", "usdm", "coinm"]

RawEvent = BookSnapshot | BookDelta | Trade
"""What the raw parsers produce (a feed adds :class:`~bot.feeds.events.FeedStatus`)."""


class MalformedMessage(ValueError):
    """A message the parser cannot use. ``reason`` is a short stable key for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid/ask from the ``bookTicker`` stream.

    Not a :data:`~bot.feeds.events.MarketEvent`: the book is rebuilt from depth diffs;
    this is only a cross-check of its top (and a cheap top-of-book source if ever needed).
    """

    symbol: str
    ts_ns: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    update_id: int | None = None
    exchange_ts_ns: int | None = None


def raw_symbol_from_stream(stream: str) -> str:
    """``"btcusd_perp@depth@0ms"`` -> ``"BTCUSD_PERP"``."""
    return stream.partition("@")[0].upper()


def _exchange_ts(data: Mapping[str, Any]) -> int | None:
    ms = data.get("T")
    if ms is None:
        ms = data.get("E")
    if ms is None:
        return None
    try:
        return int(ms) * NS_PER_MS
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_field", f"timestamp {ms!r}") from e


def _levels(rows: object) -> Levels:
    try:
        return levels(rows)
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_levels", str(e)) from e


def parse_depth_update(data: Mapping[str, Any], ts_ns: int, symbol: str) -> BookDelta:
    """A ``depthUpdate`` payload (the ``data`` of a combined-stream message)."""
    try:
        first_id = int(data["U"])
        last_id = int(data["u"])
        pu = data.get("pu")
        prev_id = None if pu is None else int(pu)
        bids_raw = data["b"]
        asks_raw = data["a"]
    except KeyError as e:
        raise MalformedMessage("missing_field", f"depthUpdate without {e}") from e
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_field", f"depthUpdate ids: {e}") from e
    # Positional, in field order: once per message, and keywords cost per call.
    return BookDelta(
        symbol,
        ts_ns,
        _levels(bids_raw),
        _levels(asks_raw),
        first_id,
        last_id,
        prev_id,
        _exchange_ts(data),
    )


def parse_trade(data: Mapping[str, Any], ts_ns: int, symbol: str) -> Trade | None:
    """A ``trade`` payload; ``None`` for futures trades that are not ``X == "MARKET"``."""
    try:
        kind = data.get("X")
        if kind is not None and kind != "MARKET":
            return None
        buyer_is_maker = data["m"]
        trade_id = data["t"]
        price = float(data["p"])
        amount = float(data["q"])
    except KeyError as e:
        raise MalformedMessage("missing_field", f"trade without {e}") from e
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_field", f"trade: {e}") from e
    if type(buyer_is_maker) is not bool:
        raise MalformedMessage("bad_field", f"trade m={buyer_is_maker!r}")
    return Trade(  # positional, in field order (as BookDelta above)
        symbol,
        ts_ns,
        price,
        amount,
        "sell" if buyer_is_maker else "buy",
        str(trade_id),
        _exchange_ts(data),
    )


def parse_book_ticker(data: Mapping[str, Any], ts_ns: int, symbol: str) -> BookTicker:
    """A ``bookTicker`` payload (spot has no ``e``/``E``/``T``; futures has them)."""
    try:
        u = data.get("u")
        return BookTicker(
            symbol=symbol,
            ts_ns=ts_ns,
            bid=float(data["b"]),
            bid_size=float(data["B"]),
            ask=float(data["a"]),
            ask_size=float(data["A"]),
            update_id=None if u is None else int(u),
            exchange_ts_ns=_exchange_ts(data),
        )
    except KeyError as e:
        raise MalformedMessage("missing_field", f"bookTicker without {e}") from e
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_field", f"bookTicker: {e}") from e


def parse_depth_snapshot(msg: Mapping[str, Any], ts_ns: int, symbol: str) -> BookSnapshot:
    """A REST depth snapshot (``/api/v3/depth``, ``/fapi/v1/depth``, ``/dapi/v1/depth``)."""
    try:
        update_id = int(msg["lastUpdateId"])
        bids_raw = msg["bids"]
        asks_raw = msg["asks"]
    except KeyError as e:
        raise MalformedMessage("missing_field", f"depth snapshot without {e}") from e
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_field", f"depth snapshot lastUpdateId: {e}") from e
    return BookSnapshot(
        symbol=symbol,
        ts_ns=ts_ns,
        bids=_levels(bids_raw),
        asks=_levels(asks_raw),
        update_id=update_id,
        exchange_ts_ns=_exchange_ts(msg),
    )


def _is_book_ticker(data: Mapping[str, Any]) -> bool:
    # Spot bookTicker payloads carry no "e"; recognise them by their keys.
    return data.get("e") == "bookTicker" or ("e" not in data and "B" in data and "A" in data)


def parse_message(
    msg: object,
    ts_ns: int,
    *,
    symbol_map: Mapping[str, str] | None = None,
    snapshot_symbol: str | None = None,
) -> RawEvent | BookTicker | None:
    """One decoded Binance message -> event; ``None`` for streams the bot does not use.

    ``snapshot_symbol`` is the (unified) symbol a REST snapshot belongs to: the snapshot
    itself does not say. Raises :class:`MalformedMessage`.
    """
    if not isinstance(msg, dict):
        raise MalformedMessage("not_an_object", type(msg).__name__)
    data = msg.get("data")
    stream = msg.get("stream")
    if data is None:
        if "lastUpdateId" in msg:
            if snapshot_symbol is None:
                raise MalformedMessage("snapshot_without_symbol")
            return parse_depth_snapshot(msg, ts_ns, snapshot_symbol)
        if "e" not in msg and "B" not in msg:
            raise MalformedMessage("unknown_message", "neither a stream message nor a snapshot")
        data = msg  # a bare (non-combined) stream payload
    if isinstance(data, list):
        return None  # array streams (!ticker@arr, ...): not used
    if not isinstance(data, dict):
        raise MalformedMessage("not_an_object", f"data is {type(data).__name__}")
    raw = data.get("s")
    if not isinstance(raw, str):
        if not isinstance(stream, str):
            raise MalformedMessage("missing_field", "no symbol (neither data.s nor stream)")
        raw = raw_symbol_from_stream(stream)
    symbol = symbol_map.get(raw, raw) if symbol_map is not None else raw
    kind = data.get("e")
    if kind == "depthUpdate":
        return parse_depth_update(data, ts_ns, symbol)
    if kind == "trade":
        return parse_trade(data, ts_ns, symbol)
    if _is_book_ticker(data):
        return parse_book_ticker(data, ts_ns, symbol)
    return None


# --- hftbacktest captures ----------------------------------------------------------------

_BOOK_TICKER = b"@bookTicker"
_TICKER_WINDOW = 96
"""Bytes after the timestamp within which a bookTicker stream name must appear. The
stream key comes first in a combined message, so this never scans a big depth line."""

_SYMBOL_RE = re.compile(rb'"s":"([^"]+)"')
_STREAM_RE = re.compile(rb'"stream":"([^"@]+)@')


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    """What the first lines of a capture say about it."""

    raw_symbol: str | None
    """Binance id of the first stream message (the snapshot lines belong to it)."""
    market: BinanceMarket | None
    """From the first depth diff: no ``pu`` -> spot; ``pu`` and ``ps`` -> COIN-M; else USD-M."""
    first_ts_ns: int | None


def sniff_capture(lines: Iterable[bytes], max_lines: int = 2000) -> CaptureInfo:
    """Scans the head of a capture for its symbol and market kind (cheap regexes, no JSON)."""
    raw_symbol: str | None = None
    market: BinanceMarket | None = None
    first_ts: int | None = None
    for n, line in enumerate(lines):
        if n >= max_lines or (raw_symbol is not None and market is not None):
            break
        sp = line.find(b" ")
        if first_ts is None and sp > 0:
            with contextlib.suppress(ValueError):
                first_ts = int(line[:sp])
        head = line[: sp + 200]
        if b'"stream"' not in head:
            continue
        if raw_symbol is None:
            m = _SYMBOL_RE.search(line)
            if m is not None:
                raw_symbol = m.group(1).decode("ascii", "replace")
            else:
                ms = _STREAM_RE.search(head)
                if ms is not None:
                    raw_symbol = ms.group(1).decode("ascii", "replace").upper()
        if market is None and b'"depthUpdate"' in head:
            # Spot diffs have no "pu"; COIN-M ones also name the pair ("ps").
            market = "spot" if b'"pu":' not in line else "coinm" if b'"ps":' in head else "usdm"
    return CaptureInfo(raw_symbol=raw_symbol, market=market, first_ts_ns=first_ts)


_depth_rows = _book_kernel.depth_rows()
_F64 = np.float64


def _loads_depth_fast(body: bytes) -> Any:
    """Decodes a depth message with its price levels as JSON numbers, not strings.

    Binance quotes every price and size (``["61800.20","2.909"]``), and turning ~50-2000
    short strings per message into floats one by one dominates replay time. The level
    arrays come last in a ``depthUpdate``. The compiled reader (``bot/_bookc.c``
    ``depth_rows``) turns them into float64 rows directly, the same bits as the JSON
    path; else (not built, or a layout it does not take) stripping their quotes lets
    the JSON parser read them as numbers (about twice as fast as strings). Any surprise
    in the layout makes the result invalid JSON, and the caller falls back to the plain
    path.
    """
    i = body.find(b',"b":[')
    if i < 0:
        return None
    end = body.rstrip()
    closers = len(end) - len(end.rstrip(b"}"))
    if closers == 0:
        return None
    head = body[:i] + end[-closers:]
    rows = None if _depth_rows is None else _depth_rows(end, i + 1, len(end) - closers)
    if rows is not None:
        msg = _loads(head)
        data = msg.get("data", msg) if isinstance(msg, dict) else None
        if not isinstance(data, dict):
            return None
        # Reshaped here, judged by levels() as the JSON path's lists are.
        data["b"] = np.frombuffer(rows[0], _F64).reshape(-1, 2)
        data["a"] = np.frombuffer(rows[1], _F64).reshape(-1, 2)
        return msg
    tail = end[i + 1 : -closers].translate(None, b'"')  # b:[[1,2],...],a:[[...]]
    if not tail.startswith(b"b:["):
        return None
    msg = _loads(head)
    arrays = _loads(b'{"b":' + tail[2:].replace(b"],a:[", b'],"a":[', 1) + b"}")
    data = msg.get("data", msg) if isinstance(msg, dict) else None
    if not isinstance(data, dict) or not isinstance(arrays, dict):
        return None
    data.update(arrays)
    return msg


def iter_capture(
    lines: Iterable[bytes],
    *,
    skipped: Counter[str],
    malformed: Counter[str],
    symbol_map: Mapping[str, str] | None = None,
    default_symbol: str | None = None,
    book_tickers: bool = False,
) -> Iterator[RawEvent | BookTicker]:
    """Events from the lines of an hftbacktest Binance capture, in file order.

    Never raises on bad input: each line yields one event, or is counted in ``skipped``
    (streams not used: ``book_ticker``, ``non_market_trade``, ``other_stream``, ``blank``)
    or in ``malformed`` by reason. REST snapshot lines belong to ``default_symbol`` (the
    capture's raw id, see :func:`sniff_capture`), else to the first stream symbol seen.
    ``book_tickers=True`` yields :class:`BookTicker` instead of skipping them.

    A capture holds one symbol, as hftbacktest's collector writes them; streams of other
    symbols in it are parsed with their own symbols, but snapshots go to the file's.
    """
    file_symbol: str | None = None  # unified symbol the snapshot lines belong to
    if default_symbol is not None:
        file_symbol = (
            symbol_map.get(default_symbol, default_symbol) if symbol_map else default_symbol
        )
    # Skipped tickers (most lines of a capture) are counted here and added to ``skipped``
    # before anything else touches it or an event is yielded: its counts and key order
    # are the same to anyone who can look.
    tickers = 0
    try:
        for line in lines:
            sp = line.find(b" ")
            if sp <= 0:
                if line.strip():
                    malformed["no_timestamp"] += 1
                else:
                    if tickers:
                        skipped["book_ticker"] += tickers
                        tickers = 0
                    skipped["blank"] += 1
                continue
            if not book_tickers and line.find(_BOOK_TICKER, sp, sp + _TICKER_WINDOW) >= 0:
                tickers += 1
                continue
            try:
                ts_ns = int(line[:sp])
            except ValueError:
                malformed["bad_timestamp"] += 1
                continue
            body = line[sp + 1 :]
            msg: Any = None
            if body.find(b'"depthUpdate"', 0, 120) >= 0:
                try:
                    msg = _loads_depth_fast(body)
                except (ValueError, RecursionError):
                    msg = None
            if msg is None:
                try:
                    msg = _loads(body)
                except (ValueError, RecursionError):
                    malformed["invalid_json"] += 1
                    continue
            try:
                if type(msg) is dict and "lastUpdateId" in msg and "data" not in msg:
                    if file_symbol is None:
                        raise MalformedMessage("snapshot_without_symbol")
                    if tickers:
                        skipped["book_ticker"] += tickers
                        tickers = 0
                    yield parse_depth_snapshot(msg, ts_ns, file_symbol)
                    continue
                event = parse_message(msg, ts_ns, symbol_map=symbol_map)
            except MalformedMessage as e:
                malformed[e.reason] += 1
                continue
            if event is None:
                kind = msg.get("data", msg).get("e") if type(msg) is dict else None
                if tickers:
                    skipped["book_ticker"] += tickers
                    tickers = 0
                skipped["non_market_trade" if kind == "trade" else "other_stream"] += 1
                continue
            if type(event) is BookTicker and not book_tickers:
                tickers += 1  # a ticker the cheap check missed (bare payload)
                continue
            if file_symbol is None:
                file_symbol = event.symbol
            if tickers:
                skipped["book_ticker"] += tickers
                tickers = 0
            yield event
    finally:
        if tickers:
            skipped["book_ticker"] += tickers
