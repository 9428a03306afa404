"""What a trigger is made of: a deterministic profile of the readings that cost the most.

    .venv/bin/python -m bench.profile_trigger [--quick] [--runs N] [--top N]

A diagnostic beside the benchmarks, not one of them: it has no baseline, and its times
are cProfile's (each call pays the profiler's hook, so they run ~2x the real ones). What
it is for is the *shape* of the work, which the profiler does not distort: how many Python
calls a reading makes and which parts of the engine hold its time.

The run is ``bench.reaction``'s back-to-back run (``bot.app.assemble`` on
``config/paper.toml``, the bundled replay with the ``fracture`` overlay at the same
start times). ``Trader.on_sample`` (the whole reading: detector, strategy, budget, risk,
order manager, journal hold) is profiled on every book sample; kept are the reading that
engages the market (the trigger) and the engaged readings after it (the ladder mostly
held, sometimes requoted).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import REPO, devnull_logger, header, paper_settings, row
from bench.reaction import AFTER_START_S, FIRST_START_S, execute_frozen, starts
from bot.app import assemble
from bot.detector import DetectorState
from bot.feeds.stress import parse_stress_spec
from bot.trader import Trader

_ROOTS = (str(REPO) + "/", sysconfig.get_paths()["stdlib"] + "/", "site-packages/")


@dataclass
class Kind:
    """The profiles of one kind of reading, merged."""

    readings: int = 0
    stats: pstats.Stats | None = None

    def add(self, profile: cProfile.Profile) -> None:
        self.readings += 1
        if self.stats is None:
            self.stats = pstats.Stats(profile)
        else:
            self.stats.add(profile)

    def calls(self) -> float:
        """Python and builtin calls per reading (cProfile counts every call)."""
        return self.stats.total_calls / self.readings if self.stats else 0.0  # type: ignore[attr-defined]

    def rows(self) -> tuple[float, list[tuple[str, float, float, float]]]:
        """The reading's own total and, per function: (name, calls, own, inclusive) per
        reading, in seconds."""
        if self.stats is None:
            return 0.0, []
        table: dict[Any, Any] = self.stats.stats  # type: ignore[attr-defined]
        out = []
        total = 0.0
        n = self.readings
        for (path, line, name), (_, calls, own, inclusive, _) in table.items():
            if name == "on_sample" and path.endswith("bot/trader.py"):
                total = inclusive / n
            out.append((_short(path, line, name), calls / n, own / n, inclusive / n))
        return total, out


@dataclass
class Profiles:
    trigger: Kind = field(default_factory=Kind)
    engaged: Kind = field(default_factory=Kind)


class _Profiled:
    """The trader as the engine's listener, with each reading profiled on its own."""

    def __init__(self, trader: Trader, into: Profiles) -> None:
        self._trader = trader
        self._into = into

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trader, name)

    def on_sample(self, symbol: str, book: Any, sample: Any) -> None:
        profile = cProfile.Profile()
        profile.enable()
        self._trader.on_sample(symbol, book, sample)
        profile.disable()
        desk = self._trader.desks.get(symbol)
        update = desk.last_update if desk is not None else None
        if update is None or update.state is not DetectorState.ENGAGED:
            return
        kind = self._into.trigger if update.transition is not None else self._into.engaged
        kind.add(profile)


async def profile_run(start_s: float, into: Profiles) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        settings = paper_settings(
            Path(tmp), feed={"duration_s": start_s + AFTER_START_S}, control={"enabled": False}
        )
        spec = parse_stress_spec(f"fracture:start_s={start_s:g}")
        run = await assemble(settings, log=devnull_logger(settings), stress=spec)
        trader = run.trader
        if trader is None:
            raise SystemExit("bench.profile_trigger: the run was assembled without a trader")
        engine = run.engine
        # The engine calls its listeners' on_sample: the trader is swapped for a wrapper
        # (its own attributes are slots and cannot be patched).
        engine._listeners = [
            _Profiled(trader, into) if listener is trader else listener
            for listener in engine._listeners
        ]
        await execute_frozen(run)


def _short(path: str, line: int, name: str) -> str:
    for root in _ROOTS:
        at = path.find(root)
        if at >= 0:
            path = path[at + len(root) :]
            break
    return f"{name} ({path}:{line})" if path != "~" else name


def report(label: str, kind: Kind, top: int) -> None:
    total, rows = kind.rows()
    print(
        f"\n{label}: {kind.readings} readings, {kind.calls():,.0f} calls each, "
        f"{total * 1e6:,.0f} us profiled"
    )
    if not rows or total <= 0:
        return
    widths = (64, 7, 9, 11)
    print(row(("function (inclusive share first)", "calls", "own %", "incl. %"), widths))
    rows.sort(key=lambda r: -r[3])
    for name, calls, own, inclusive in rows[:top]:
        cells = (name[:63], f"{calls:.3g}", f"{own / total:.1%}", f"{inclusive / total:.1%}")
        print(row(cells, widths))
    largest = max(rows, key=lambda r: r[2])
    print(f"largest own time: {largest[0]}, {largest[2] / total:.1%} of the reading")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.profile_trigger", description=(__doc__ or "").splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="2 runs (smoke run)")
    ap.add_argument("--runs", type=int, default=None, help="replays, one trigger each (10)")
    ap.add_argument("--top", type=int, default=20, help="functions listed per kind (20)")
    args = ap.parse_args(argv)
    runs = args.runs or (2 if args.quick else 10)
    if runs < 1 or args.top < 1:
        ap.error("--runs and --top must be >= 1")
    plan = [FIRST_START_S, FIRST_START_S + 10] if args.quick and not args.runs else starts(runs)
    into = Profiles()
    for start_s in plan:
        asyncio.run(profile_run(start_s, into))
    print(header("trigger profile (bench/profile_trigger.py)"))
    print(
        f"cProfile around Trader.on_sample, bench.reaction's back-to-back runs (fracture at "
        f"start_s {plan[0]:g}..{plan[-1]:g}); times are the profiler's (~2x the real ones), "
        "shares of the whole reading"
    )
    report("trigger (the reading that engages a market)", into.trigger, args.top)
    report("engaged readings after it", into.engaged, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
