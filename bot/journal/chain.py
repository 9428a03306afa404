"""Canonical JSON and the hash chain that makes the journal tamper-evident.

Every record's hash is ``sha256(prev_hash + canonical_json(record))`` (hex digests,
UTF-8), where ``record`` is ``{"id", "kind", "payload", "ts_ns"}`` and the first record
chains from :data:`GENESIS_HASH`. Editing any of those fields of any record changes its
hash; fixing that hash up breaks the next record's ``prev_hash``; deleting a record
breaks the ``prev_hash`` of the one after it (and leaves a gap in the ids). Only the
*tail* can be cut off without a trace inside the file: compare the head
(:attr:`~bot.journal.audit.VerifyReport.head_hash`) with one noted elsewhere (logs, a
report sent to the reserve's governors) to rule that out.

Canonical JSON: keys sorted, no whitespace, floats as Python's ``repr`` (shortest
round-trip form, what :func:`json.dumps` writes), non-ASCII escaped (``\\uXXXX``), so the
stored text is pure ASCII and hashes the same everywhere. JSON has no NaN or infinity:
such floats are stored as the strings ``"nan"``, ``"inf"`` and ``"-inf"``. The payload
text is stored exactly as it was hashed, so verification never depends on re-encoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first record."""


def _default(obj: Any) -> Any:
    """JSON form of the types records carry (dataclass events, enums, mapping proxies...).

    Anything else becomes its ``str``: a record is never refused (and so never lost)
    because one field of it has an unexpected type.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, PurePath | Decimal):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def _dumps(obj: Any) -> str:
    return json.dumps(
        obj,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
        default=_default,
    )


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: str keys, lists, non-finite floats as strings."""
    if isinstance(obj, str | bool | int) or obj is None:
        return obj.value if isinstance(obj, Enum) else obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(_scalar_key(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    converted = _default(obj)
    if isinstance(converted, str):
        return converted
    return to_jsonable(converted)


def _scalar_key(key: Any) -> Any:
    return key.value if isinstance(key, Enum) else key


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (see the module docstring)."""
    try:
        return _dumps(obj)  # the fast path: C encoder, no copy
    except (ValueError, TypeError):
        # A NaN/inf somewhere, or keys that cannot be sorted together (int and str).
        return _dumps(to_jsonable(obj))


def record_text(record_id: int, ts_ns: int, kind: str, payload_text: str) -> str:
    """``canonical_json({"id", "kind", "payload", "ts_ns"})`` with the payload already
    canonical: built by hand so the payload is not encoded twice on the hot path."""
    return (
        f'{{"id":{int(record_id)},"kind":{_dumps(kind)},'
        f'"payload":{payload_text},"ts_ns":{int(ts_ns)}}}'
    )


def link(prev_hash: str, text: str) -> str:
    """The hash of a record whose canonical text is ``text``."""
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()
