"""A/B benchmark: the paced trigger of this tree against another revision, interleaved.

    .venv/bin/python -m bench.ab REV [--rounds R] [--runs N] [--quick]

The reaction benchmark's paced runs (``bench.reaction``: the bundled replay with the
``fracture`` overlay, messages arriving at the recorded rate from 2 s after the
fracture start, the trigger rehearsed while arming) on two trees: the working tree and
``REV`` (any git revision: a commit, a tag, ``HEAD~3``), checked out with ``git
archive`` into a temporary directory. Each round runs ``N`` paced runs in a process of
each tree, in alternating order (ABBA), the same fracture starts for both; rounds move
the starts. Printed per tree: trigger -> first order p50/p90/p99/max, the last order of
the ladder, and the processor time per run.

Why interleaved: the machine drifts by 100-200 us between sets of runs of the same tree
(docs/benchmarks.md, Reaction); two sets taken one after the other compare the machine's
moods, not the trees. ``bench.reaction``'s own part 4 (the machine's cold penalty) tells
how cold the machine is at the time.

The compiled order book store (``bot/_bookc.c``) is copied from this tree when the
revision's source is the same, and built with ``cc`` otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import REPO, header, row

PLAN = 40
"""Fracture starts a round's runs are drawn from (``bench.reaction.starts(PLAN)``)."""


def checkout(rev: str, dst: Path) -> str:
    """``rev`` of this repository extracted into ``dst``, with its compiled order book
    store; returns the commit's short hash. Raises ``SystemExit`` naming a revision git
    does not know."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if sha.returncode != 0:
        raise SystemExit(f"bench.ab: not a revision of this repository: {rev!r}")
    archive = subprocess.Popen(["git", "archive", rev], cwd=REPO, stdout=subprocess.PIPE)
    with archive:
        subprocess.run(["tar", "-x", "-C", str(dst)], stdin=archive.stdout, check=True)
    if archive.returncode != 0:
        raise SystemExit(f"bench.ab: git archive {rev} failed")
    _store(dst)
    return sha.stdout.strip()


def _store(tree: Path) -> None:
    """The compiled order book store of ``tree``: this tree's when the source matches."""
    name = f"_bookc{sysconfig.get_config_var('EXT_SUFFIX')}"
    ours, out = REPO / "bot" / name, tree / "bot" / name
    source = tree / "bot" / "_bookc.c"
    if not source.exists():
        return  # a revision from before the store: the book falls back to numpy
    if ours.exists() and source.read_bytes() == (REPO / "bot" / "_bookc.c").read_bytes():
        shutil.copy2(ours, out)
        return
    include = sysconfig.get_paths()["include"]
    flags = ["-shared", "-fPIC", "-O2", "-ffp-contract=off", f"-I{include}"]
    subprocess.run(["cc", *flags, str(source), "-o", str(out), "-lm"], check=True)


def run_child(tree: Path, offset: int, runs: int) -> dict[str, Any]:
    """``runs`` paced runs in a process of ``tree``'s own code (its ``bench.reaction``;
    ``bench/ab.py`` itself is this tree's in both, see :func:`main`)."""
    cmd = [sys.executable, "-m", "bench.ab", "--child", str(offset), str(runs)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench.ab: runs in {tree} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def child(offset: int, runs: int) -> dict[str, Any]:
    """The paced runs themselves, in the tree this process was started in."""
    import bench.reaction as reaction

    starts = reaction.starts(PLAN)
    step = max(1, PLAN // runs)
    plan = [starts[(offset + i * step) % PLAN] for i in range(runs)]
    cpu0 = time.process_time()
    probes = [asyncio.run(reaction.one_run(s, paced=True)) for s in plan]
    cpu = time.process_time() - cpu0
    res = reaction.collect(probes)
    return {
        "first": [v / 1e3 for v in res.trigger_first.ours_ns],
        "all": [v / 1e3 for v in res.trigger_all.ours_ns],
        "cpu_per_run": cpu / max(runs, 1),
    }


COLUMNS = ("tree", "n", "p50 us", "p90 us", "p99 us", "max us", "last p50 us", "cpu s/run")
WIDTHS = (34, 5, 9, 9, 9, 9, 12, 10)


def summary(first: list[float], last: list[float], cpu: list[float]) -> list[float]:
    a = np.asarray(first) if first else np.asarray([np.nan])
    b = np.asarray(last) if last else np.asarray([np.nan])
    return [
        float(np.percentile(a, 50)),
        float(np.percentile(a, 90)),
        float(np.percentile(a, 99)),
        float(a.max()),
        float(np.percentile(b, 50)),
        float(np.mean(cpu)) if cpu else float("nan"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.ab", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("rev", nargs="?", help="the baseline: a git revision (HEAD, a sha, a tag)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 4)")
    ap.add_argument("--runs", type=int, default=None, help="paced runs per tree per round (10)")
    ap.add_argument("--quick", action="store_true", help="one round of one run (smoke run)")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if args.rev is None:
        ap.error("name the baseline revision, e.g. HEAD")
    rounds = args.rounds or (1 if args.quick else 4)
    runs = args.runs or (1 if args.quick else 10)
    if rounds < 1 or runs < 1:
        ap.error("--rounds and --runs must be >= 1")
    print(header("A/B benchmark (bench/ab.py)"))
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        base = Path(tmp)
        sha = checkout(args.rev, base)
        # The runs' driver is this file in both trees; what they time is each tree's own.
        shutil.copy2(Path(__file__), base / "bench" / "ab.py")
        trees = {f"baseline {args.rev} ({sha})": base, "this tree": REPO}
        firsts: dict[str, list[float]] = {k: [] for k in trees}
        lasts: dict[str, list[float]] = {k: [] for k in trees}
        cpus: dict[str, list[float]] = {k: [] for k in trees}
        t0 = time.perf_counter()
        for r in range(rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                out = run_child(trees[name], r, runs)
                firsts[name] += out["first"]
                lasts[name] += out["all"]
                cpus[name].append(out["cpu_per_run"])
        wall = time.perf_counter() - t0
    print(
        f"paced trigger -> first order handed to the venue; {rounds} round(s) x {runs} run(s) "
        f"per tree, interleaved ({wall:.0f} s)"
    )
    print(row(COLUMNS, WIDTHS))
    figures = {name: summary(firsts[name], lasts[name], cpus[name]) for name in trees}
    for name in trees:
        cells = [f"{v:,.1f}" for v in figures[name][:5]] + [f"{figures[name][5]:.2f}"]
        print(row((name, f"{len(firsts[name])}", *cells), WIDTHS))
    baseline, ours = (figures[name] for name in trees)
    ratios = (f"{o / b:.2f}x" for o, b in zip(ours, baseline, strict=True))
    print(row(("ratio this / baseline", "", *ratios), WIDTHS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
