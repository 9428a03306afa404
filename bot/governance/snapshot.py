"""The detector's exact state as JSON values, and back: the start of an episode's evidence.

A detector's decisions depend on everything it has seen (its baselines are EWMAs of the
whole history), so an episode can only be re-run from a copy of its state taken before
the episode. :func:`dump` turns that state (plain objects, dataclasses, tuples, deques,
enums, floats including inf/nan) into JSON values with small type tags; :func:`load`
rebuilds it. Floats survive exactly (JSON keeps ``repr``'s shortest round-trip form).

Only classes from :data:`ALLOWED_MODULES` are rebuilt: a journal is evidence handed to
outsiders, and loading it must never instantiate anything else (this is why the
format is not pickle).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections import deque
from enum import Enum
from typing import Any

ALLOWED_MODULES: tuple[str, ...] = (
    "bot.detect.",
    "bot.detector",
    "bot.book",
    "strategies.",
)


class SnapshotError(ValueError):
    """A state that cannot be dumped, or a dump that cannot (or may not) be loaded."""


def _allowed(module: str) -> bool:
    return any(module == m or module.startswith(m) for m in ALLOWED_MODULES)


def _float(x: float) -> Any:
    return x if math.isfinite(x) else {"$f": repr(x)}


def _fields(obj: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    raise SnapshotError(f"{type(obj).__name__}: neither a dataclass nor a plain object")


def dump(obj: Any, *, skip: frozenset[str] = frozenset(), path: str = "") -> Any:
    """``obj`` as JSON values; ``skip`` leaves out top-level attributes (e.g. config)."""
    try:
        return _fast(obj, skip)
    except SnapshotError:
        # The fast walk keeps no path; the careful one names where the problem is.
        return _dump(obj, skip=skip, path=path)


_PLAIN = (int, str, bool, type(None))


def _fast(obj: Any, skip: frozenset[str] = frozenset()) -> Any:
    """:func:`_dump` without the element paths (built only for an error message): the
    detector is dumped every ``checkpoint_s`` while calm, mostly deques of floats.
    Exact types first; anything else takes :func:`_dump`'s checks in its order."""
    t = type(obj)
    if t is float:
        return obj if math.isfinite(obj) else {"$f": repr(obj)}
    if t in _PLAIN:
        return obj
    if t is list:
        return [_fast(x) for x in obj]
    if t is deque:
        return {"$q": [_fast(x) for x in obj], "max": obj.maxlen}
    if t is tuple:
        return {"$t": [_fast(x) for x in obj]}
    if t is dict:
        return {"$d": [[_fast(k), _fast(v)] for k, v in obj.items()]}
    info = _CLASSES.get(t)
    if info is None:
        if isinstance(obj, Enum | bool | str | int | float | tuple | list | deque | dict):
            return _dump(obj)  # subclasses: as the careful walk does (rare)
        if not _allowed(t.__module__):
            raise SnapshotError(f"{t.__module__}.{t.__qualname__} is not snapshottable")
        names = (
            tuple(f.name for f in dataclasses.fields(obj))
            if dataclasses.is_dataclass(obj)
            else None
        )
        info = _CLASSES[t] = (f"{t.__module__}:{t.__qualname__}", names)
    tag, names = info
    if names is None:
        fields = {k: _fast(v) for k, v in _fields(obj).items() if k not in skip}
    else:
        fields = {k: _fast(getattr(obj, k)) for k in names if k not in skip}
    return {"$o": tag, "f": fields}


_CLASSES: dict[type, tuple[str, tuple[str, ...] | None]] = {}
"""Per snapshottable class, learnt on first sight (a checkpoint is taken every
``checkpoint_s``): its ``$o`` tag and, for a dataclass, its field names."""


def _dump(obj: Any, *, skip: frozenset[str] = frozenset(), path: str = "") -> Any:
    # Enums first: StrEnum and IntEnum members are also str and int.
    if isinstance(obj, Enum):
        cls = type(obj)
        return {"$e": f"{cls.__module__}:{cls.__qualname__}", "v": obj.value}
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, tuple):
        return {"$t": [_dump(x, path=f"{path}[{i}]") for i, x in enumerate(obj)]}
    if isinstance(obj, list):
        return [_dump(x, path=f"{path}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, deque):
        return {"$q": [_dump(x, path=f"{path}[{i}]") for i, x in enumerate(obj)], "max": obj.maxlen}
    if isinstance(obj, dict):
        return {
            "$d": [[_dump(k, path=path), _dump(v, path=f"{path}[{k!r}]")] for k, v in obj.items()]
        }
    cls = type(obj)
    if not _allowed(cls.__module__):
        raise SnapshotError(
            f"{path or 'state'}: {cls.__module__}.{cls.__qualname__} is not snapshottable"
        )
    fields = {k: _dump(v, path=f"{path}.{k}") for k, v in _fields(obj).items() if k not in skip}
    return {"$o": f"{cls.__module__}:{cls.__qualname__}", "f": fields}


def _class(name: str) -> type[Any]:
    module, _, qualname = name.partition(":")
    if not _allowed(module) or not qualname:
        raise SnapshotError(f"refusing to load {name!r}: not a detector or strategy class")
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        raise SnapshotError(f"unknown class {name!r} (a journal from another version?)") from None
    if not isinstance(target, type):
        raise SnapshotError(f"{name!r} is not a class")
    return target


def load(data: Any) -> Any:
    """The object :func:`dump` described."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [load(x) for x in data]
    if not isinstance(data, dict):
        raise SnapshotError(f"unexpected {type(data).__name__} in a snapshot")
    if "$f" in data:
        return float(data["$f"])
    if "$t" in data:
        return tuple(load(x) for x in data["$t"])
    if "$q" in data:
        return deque((load(x) for x in data["$q"]), maxlen=data.get("max"))
    if "$d" in data:
        return {load(k): load(v) for k, v in data["$d"]}
    if "$e" in data:
        enum_cls = _class(str(data["$e"]))
        if not issubclass(enum_cls, Enum):
            raise SnapshotError(f"{data['$e']!r} is not an enum")
        return enum_cls(data["v"])
    if "$o" in data:
        cls = _class(str(data["$o"]))
        obj = object.__new__(cls)
        restore(obj, data)
        return obj
    raise SnapshotError("unknown snapshot tag")


def restore(obj: object, data: Any) -> None:
    """Set ``obj``'s attributes from a :func:`dump` of an object of the same class."""
    if not isinstance(data, dict) or "$o" not in data:
        raise SnapshotError("not an object snapshot")
    cls = type(obj)
    if data["$o"] != f"{cls.__module__}:{cls.__qualname__}":
        raise SnapshotError(f"snapshot of {data['$o']} cannot restore a {cls.__qualname__}")
    for name, value in data["f"].items():
        # object.__setattr__: frozen dataclasses (triggers, recoveries) are rebuilt too.
        object.__setattr__(obj, name, load(value))
