"""Stress scenario parameters: one frozen dataclass per scenario, parsed from text.

A spec is written ``name`` or ``name:key=value,key=value`` (``fracture:fraction=0.8,
side=bid``). Every parameter has a documented default and a valid range, checked on
construction, so a spec that exists is a valid one. Parameters marked *jittered* are
perturbed by :func:`resolve` when ``jitter > 0``: each is multiplied by
``1 + jitter * u`` with ``u`` uniform in [-1, 1] drawn, in field order, from a
generator seeded with ``seed``, then clipped to its range. ``jitter=0`` (the default)
makes ``seed`` irrelevant and the scenario exactly as written.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from bot.errors import UserError

__all__ = [
    "STRESS_SCENARIOS",
    "FeedStall",
    "Fracture",
    "SpreadBlowout",
    "StressSpec",
    "WallPull",
    "format_spec",
    "format_stress_list",
    "parse_stress_spec",
    "resolve",
    "spec_params",
]

SideChoice = Literal["both", "bid", "ask"]
OneSide = Literal["bid", "ask"]


def _m(
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    jitter: bool = False,
) -> dict[str, Any]:
    """A parameter's metadata: one-line help, valid range (``lo_open``: ``> lo``), jittered?"""
    return {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "jitter": jitter}


_SEED = "seed for the jitter draws (same seed, same scenario)"
_JITTER = "relative random perturbation of the jittered parameters, 0..1 (0 = none)"


@dataclass(frozen=True)
class Fracture:
    """Remove a fraction of the size near mid, hold, then let it come back gradually.

    Within ``band_bps`` of the (true) mid every level keeps ``1 - fraction * s(t)`` of
    its size, where ``s`` ramps 0 -> 1 over ``ramp_s``, stays 1 for ``hold_s`` and falls
    back to 0 over ``recover_s``. The defaults fire the default backstop config on the
    bundled sample: 10 bps depth drops to 10% of normal at 243 s, after a 240 s warm-up
    that fills the detector's 60 s baseline, and is whole again at 333 s.
    """

    name: ClassVar[str] = "fracture"
    summary: ClassVar[str] = (
        "depth fracture: remove `fraction` of the size within `band_bps` of mid over "
        "`ramp_s`, hold, recover gradually"
    )
    fraction: float = field(
        default=0.9,
        metadata=_m("share of the size removed within the band", lo=0, hi=1, jitter=True),
    )
    band_bps: float = field(
        default=25.0, metadata=_m("band around mid affected, bps", lo=0, lo_open=True, jitter=True)
    )
    side: SideChoice = field(default="both", metadata=_m("book side(s) affected"))
    start_s: float = field(
        default=240.0, metadata=_m("seconds into the data when the ramp starts", lo=0, jitter=True)
    )
    ramp_s: float = field(default=3.0, metadata=_m("seconds to remove the size", lo=0, jitter=True))
    hold_s: float = field(
        default=30.0, metadata=_m("seconds the book stays fractured", lo=0, jitter=True)
    )
    recover_s: float = field(
        default=60.0, metadata=_m("seconds to restore the size (linearly)", lo=0, jitter=True)
    )
    seed: int = field(default=0, metadata=_m(_SEED, lo=0))
    jitter: float = field(default=0.0, metadata=_m(_JITTER, lo=0, hi=1))

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class WallPull:
    """One side's levels within ``gap_bps`` of mid disappear: a price gap on that side.

    The gap opens from mid outwards over ``ramp_s`` (0 = at once), stays for
    ``hold_s`` and closes from the outside in over ``recover_s``.
    """

    name: ClassVar[str] = "wall-pull"
    summary: ClassVar[str] = (
        "one-sided wall pull: remove every level within `gap_bps` of mid on `side` "
        "(a price gap), hold, refill gradually"
    )
    side: OneSide = field(default="ask", metadata=_m("side pulled"))
    gap_bps: float = field(
        default=20.0, metadata=_m("width of the gap from mid, bps", lo=0, lo_open=True, jitter=True)
    )
    start_s: float = field(
        default=240.0, metadata=_m("seconds into the data when the pull starts", lo=0, jitter=True)
    )
    ramp_s: float = field(
        default=0.0, metadata=_m("seconds for the gap to open (0 = at once)", lo=0, jitter=True)
    )
    hold_s: float = field(
        default=20.0, metadata=_m("seconds the gap stays open", lo=0, jitter=True)
    )
    recover_s: float = field(
        default=30.0, metadata=_m("seconds for the gap to refill (outside in)", lo=0, jitter=True)
    )
    seed: int = field(default=0, metadata=_m(_SEED, lo=0))
    jitter: float = field(default=0.0, metadata=_m(_JITTER, lo=0, hi=1))

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class SpreadBlowout:
    """Both sides' levels within ``bps`` of mid disappear: the spread widens to ~2x bps.

    Opens over ``ramp_s`` (0 = at once), holds ``hold_s``, narrows back over
    ``recover_s``. The default (30 bps a side, a ~60 bps spread) is past the default
    ``max_spread_bps`` of 50.
    """

    name: ClassVar[str] = "spread-blowout"
    summary: ClassVar[str] = (
        "spread blow-out: remove both sides' levels within `bps` of mid, hold, narrow gradually"
    )
    bps: float = field(
        default=30.0,
        metadata=_m("levels this close to mid are removed, bps", lo=0, lo_open=True, jitter=True),
    )
    start_s: float = field(
        default=240.0, metadata=_m("seconds into the data when the spread opens", lo=0, jitter=True)
    )
    ramp_s: float = field(
        default=0.0, metadata=_m("seconds for the spread to open (0 = at once)", lo=0, jitter=True)
    )
    hold_s: float = field(
        default=20.0, metadata=_m("seconds the spread stays wide", lo=0, jitter=True)
    )
    recover_s: float = field(
        default=30.0, metadata=_m("seconds for the spread to narrow back", lo=0, jitter=True)
    )
    seed: int = field(default=0, metadata=_m(_SEED, lo=0))
    jitter: float = field(default=0.0, metadata=_m(_JITTER, lo=0, hi=1))

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class FeedStall:
    """No events at all for ``stall_s``, then a resync with a fresh snapshot.

    Everything received in the window (depth, trades, statuses except the end of
    data) is withheld. On the first event after it, the stream resumes the way a
    live feed's resync does: ``RESYNCING`` and ``CONNECTED`` statuses (if
    ``announce``), then a snapshot of the true book as it is now.
    """

    name: ClassVar[str] = "feed-stall"
    summary: ClassVar[str] = (
        "feed stall: no events for `stall_s`, then resume with a fresh snapshot (a resync)"
    )
    start_s: float = field(
        default=240.0,
        metadata=_m("seconds into the data when the feed goes silent", lo=0, jitter=True),
    )
    stall_s: float = field(
        default=15.0, metadata=_m("seconds without any event", lo=0, lo_open=True, jitter=True)
    )
    announce: bool = field(
        default=True, metadata=_m("emit RESYNCING/CONNECTED statuses before the snapshot")
    )
    seed: int = field(default=0, metadata=_m(_SEED, lo=0))
    jitter: float = field(default=0.0, metadata=_m(_JITTER, lo=0, hi=1))

    def __post_init__(self) -> None:
        _validate(self)


StressSpec = Fracture | WallPull | SpreadBlowout | FeedStall
"""A parsed, validated scenario."""

_S = TypeVar("_S", bound=StressSpec)

STRESS_SCENARIOS: Mapping[str, type[StressSpec]] = MappingProxyType(
    {cls.name: cls for cls in (Fracture, WallPull, SpreadBlowout, FeedStall)}
)
"""Scenario name -> its parameter class (``.summary`` is the one-line description)."""


@dataclass(frozen=True, slots=True)
class ParamInfo:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    jitter: bool = False

    def describe(self) -> str:
        """``fraction=0.9  share of ... [0, 1], jittered``."""
        if self.choices:
            valid = "|".join(self.choices)
        elif self.type is bool:
            valid = "true|false"
        else:
            valid = _range_text(self)
        extra = f" ({valid}{', jittered' if self.jitter else ''})" if valid else ""
        return f"{self.name}={_fmt(self.default)}  {self.help}{extra}"


def spec_params(cls: type[StressSpec]) -> tuple[ParamInfo, ...]:
    """The parameters of a scenario class, in order, with type, default, range and help."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        choices: tuple[str, ...] = ()
        typ: type
        if typing.get_origin(hint) is Literal:
            choices = tuple(str(a) for a in typing.get_args(hint))
            typ = str
        else:
            typ = hint
        m = f.metadata
        out.append(
            ParamInfo(
                name=f.name,
                type=typ,
                default=f.default,
                help=m["help"],
                choices=choices,
                lo=m["lo"],
                hi=m["hi"],
                lo_open=m["lo_open"],
                jitter=m["jitter"],
            )
        )
    return tuple(out)


def parse_stress_spec(text: str) -> StressSpec:
    """``"name"`` or ``"name:k=v,k=v"`` -> a validated spec.

    Raises :class:`UserError` naming the valid scenarios or parameters when the name,
    a key or a value is not right.
    """
    raw_name, sep, rest = text.strip().partition(":")
    name = raw_name.strip().lower().replace("_", "-")
    cls = STRESS_SCENARIOS.get(name)
    if cls is None:
        valid = ", ".join(STRESS_SCENARIOS)
        shown = raw_name.strip() or text
        raise UserError(f"unknown stress scenario {shown!r}; valid scenarios: {valid}")
    params = {p.name: p for p in spec_params(cls)}
    values: dict[str, Any] = {}
    if sep and rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise UserError(
                    f"stress {name}: expected key=value, got {item.strip()!r} "
                    f"(e.g. {name}:{next(iter(params))}={_fmt(params[next(iter(params))].default)})"
                )
            info = params.get(key)
            if info is None:
                valid = ", ".join(params)
                raise UserError(
                    f"stress {name}: unknown parameter {key!r}; valid parameters: {valid}"
                )
            if key in values:
                raise UserError(f"stress {name}: parameter {key!r} given twice")
            values[key] = _convert(name, info, value.strip())
    return cls(**values)


def resolve(spec: _S) -> _S:
    """The spec with its jitter applied (and ``jitter=0``); the spec itself if none.

    Deterministic: the same spec always resolves to the same values.
    """
    if spec.jitter == 0:
        return spec
    rng = np.random.default_rng(spec.seed)
    changes: dict[str, Any] = {"jitter": 0.0}
    cls = STRESS_SCENARIOS[spec.name]
    for info in spec_params(cls):
        if not info.jitter:
            continue
        # One draw per jittered field, in field order, whatever the values: changing
        # one parameter never changes the draws the others get.
        u = float(rng.uniform(-1.0, 1.0))
        value = float(getattr(spec, info.name)) * (1.0 + spec.jitter * u)
        if info.lo is not None:
            value = max(value, float(info.lo))
            if info.lo_open and value <= info.lo:
                value = float(getattr(spec, info.name))
        if info.hi is not None:
            value = min(value, float(info.hi))
        changes[info.name] = value
    return dataclasses.replace(spec, **changes)


def format_spec(spec: StressSpec) -> str:
    """Canonical text of a spec: the name plus the parameters that differ from defaults.

    ``parse_stress_spec(format_spec(s)) == s`` for every spec.
    """
    parts = []
    for info in spec_params(type(spec)):
        value = getattr(spec, info.name)
        if value != info.default:
            parts.append(f"{info.name}={_fmt(value)}")
    return spec.name + (":" + ",".join(parts) if parts else "")


def format_stress_list() -> str:
    """The text ``backstop run --list-stress`` prints: scenarios, parameters, defaults."""
    lines = ["Stress scenarios (use --stress NAME[:key=value,...]; docs/stress.md):", ""]
    for name, cls in STRESS_SCENARIOS.items():
        lines.append(f"{name}: {cls.summary}")
        for info in spec_params(cls):
            lines.append(f"    {info.describe()}")
        lines.append("")
    lines.append("Times are seconds from the first event of the replay.")
    return "\n".join(lines)


# ---------------------------------------------------------------------- helpers


def _validate(spec: StressSpec) -> None:
    for info in spec_params(type(spec)):
        value = getattr(spec, info.name)
        if info.choices:
            if value not in info.choices:
                raise UserError(
                    f"stress {spec.name}: {info.name} must be one of "
                    f"{', '.join(info.choices)}, got {value!r}"
                )
            continue
        if info.type is bool:
            if not isinstance(value, bool):
                raise UserError(f"stress {spec.name}: {info.name} must be true or false")
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and info.type is int:
            ok = isinstance(value, int)
        if ok:
            v = float(value)
            ok = math.isfinite(v)
            if ok and info.lo is not None:
                ok = v > info.lo if info.lo_open else v >= info.lo
            if ok and info.hi is not None:
                ok = v <= info.hi
        if not ok:
            kind = "an integer" if info.type is int else "a number"
            raise UserError(
                f"stress {spec.name}: {info.name} must be {kind} {_range_text(info)}, got {value!r}"
            )


def _convert(name: str, info: ParamInfo, text: str) -> Any:
    """Text -> the parameter's type (range checks happen in the class)."""
    if info.choices:
        return text.lower()
    if info.type is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UserError(f"stress {name}: {info.name} must be true or false, got {text!r}")
    try:
        return int(text) if info.type is int else float(text)
    except ValueError:
        kind = "an integer" if info.type is int else "a number"
        raise UserError(
            f"stress {name}: {info.name} must be {kind} {_range_text(info)}, got {text!r}"
        ) from None


def _range_text(info: ParamInfo) -> str:
    lo, hi = info.lo, info.hi
    if lo is not None and hi is not None:
        return f"in [{_fmt(lo)}, {_fmt(hi)}]"
    if lo is not None:
        return f"{'>' if info.lo_open else '>='} {_fmt(lo)}"
    if hi is not None:
        return f"<= {_fmt(hi)}"
    return ""


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == float(f"{value:g}") else repr(value)
    return str(value)
