"""Binance's error replies: an HTTP status plus a ``{"code", "msg"}`` body.

ccxt maps the *code* (and sometimes the exact *msg*) to its exception classes, so
the texts here are copied from Binance's documented errors, not paraphrased.
"""

from __future__ import annotations


class ApiError(Exception):
    """Raised anywhere in the emulator; the server turns it into the HTTP reply."""

    def __init__(
        self,
        status: int,
        code: int,
        msg: str,
        headers: dict[str, str] | None = None,
        *,
        text: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = dict(headers or {})
        # A non-JSON body, as a load balancer in front of the venue sends on a 5xx.
        self.text = text

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def missing_param(name: str) -> ApiError:
    return ApiError(
        400,
        -1102,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def bad_param(name: str) -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")


def invalid_symbol() -> ApiError:
    return ApiError(400, -1121, "Invalid symbol.")


def filter_failure(name: str) -> ApiError:
    # ccxt greps the body for "LOT_SIZE"/"PRICE_FILTER" and raises InvalidOrder.
    return ApiError(400, -1013, f"Filter failure: {name}")


def order_rejected(msg: str) -> ApiError:
    return ApiError(400, -2010, msg)


WOULD_TAKE = "Order would immediately match and take."
INSUFFICIENT_BALANCE = "Account has insufficient balance for requested action."
DUPLICATE_ORDER = "Duplicate order sent."


def unknown_order() -> ApiError:
    return ApiError(400, -2011, "Unknown order sent.")


def order_does_not_exist() -> ApiError:
    return ApiError(400, -2013, "Order does not exist.")


def bad_signature() -> ApiError:
    return ApiError(400, -1022, "Signature for this request is not valid.")


def invalid_api_key() -> ApiError:
    return ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def api_key_format_invalid() -> ApiError:
    return ApiError(401, -2014, "API-key format invalid.")
