"""Signed-request checks: API key, HMAC-SHA256 signature, timestamp window.

REST: Binance signs ``totalParams`` = the raw query string concatenated with the raw
request body (without the ``signature`` parameter itself); ccxt puts everything in
the query for GET/DELETE and in the form body for POST, the key in a header.

WebSocket API: the key is the ``apiKey`` parameter and the signed payload is every
parameter but ``signature``, sorted by name, as ``name=value`` pairs joined by ``&``
(ccxt's ``sign_params``: keysort + rawencode, booleans as ``true``/``false``).

Both are checked in Binance's order: key, then signature, then timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from bot.exchange_sim.errors import (
    ApiError,
    api_key_format_invalid,
    bad_signature,
    invalid_api_key,
    missing_param,
)

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
# Binance refuses timestamps more than 1 s ahead of its clock, whatever recvWindow says.
MAX_AHEAD_MS = 1_000


def _strip_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` without its ``signature=`` pair, and the signature (None if absent)."""
    kept: list[str] = []
    signature: str | None = None
    for pair in raw.split("&") if raw else []:
        if pair.startswith("signature="):
            signature = pair[len("signature=") :]
        else:
            kept.append(pair)
    return "&".join(kept), signature


def verify_key(api_key: str | None, credentials: Mapping[str, str]) -> None:
    """Binance's ``USER_STREAM`` security (listenKey endpoints): a known API key, no
    signature."""
    if not api_key:
        raise api_key_format_invalid()
    if api_key not in credentials:
        raise invalid_api_key()


def verify(
    *,
    api_key: str | None,
    credentials: Mapping[str, str],
    raw_query: str,
    raw_body: str,
    params: Mapping[str, str],
    now_ms: int,
) -> None:
    """Raise the :class:`ApiError` Binance would answer, or return if the request is good."""
    if not api_key:
        raise api_key_format_invalid()
    secret = credentials.get(api_key)
    if secret is None:
        raise invalid_api_key()
    query, sig_q = _strip_signature(raw_query)
    body, sig_b = _strip_signature(raw_body)
    signature = sig_q or sig_b
    if not signature:
        raise missing_param("signature")
    expected = hmac.new(secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise bad_signature()
    check_timestamp(params, now_ms)


def verify_ws_params(
    params: Mapping[str, Any], credentials: Mapping[str, str], now_ms: int
) -> None:
    """Check a WebSocket API request's ``params``; raise the :class:`ApiError` Binance would."""
    api_key = params.get("apiKey")
    if not isinstance(api_key, str) or not api_key:
        raise missing_param("apiKey")
    secret = credentials.get(api_key)
    if secret is None:
        raise invalid_api_key()
    signature = params.get("signature")
    if not isinstance(signature, str) or not signature:
        raise missing_param("signature")
    payload = "&".join(
        f"{name}={_ws_value(value)}"
        for name, value in sorted(params.items())
        if name != "signature"
    )
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise bad_signature()
    check_timestamp({k: _ws_value(v) for k, v in params.items()}, now_ms)


def _ws_value(value: Any) -> str:
    # JSON params arrive typed; the signature covers their text form.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_timestamp(params: Mapping[str, str], now_ms: int) -> None:
    raw_ts = params.get("timestamp")
    if not raw_ts or not raw_ts.isdigit():
        raise missing_param("timestamp")
    recv_window = int(params.get("recvWindow") or DEFAULT_RECV_WINDOW_MS)
    if recv_window > MAX_RECV_WINDOW_MS:
        raise ApiError(400, -1131, "recvWindow must be less than 60000")
    ts = int(raw_ts)
    if ts > now_ms + MAX_AHEAD_MS:
        raise ApiError(
            400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    if now_ms - ts > recv_window:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
