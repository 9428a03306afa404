"""Shared by the pipeline benchmarks: the header line, percentiles, the paper settings."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.logs import Logger, make_logger
from bot.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.toml"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"machine: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}"


def header(title: str) -> str:
    import ccxt

    return "\n".join(
        [
            title,
            machine(),
            f"python {platform.python_version()} ({sys.implementation.name}), "
            f"numpy {np.__version__}, ccxt {ccxt.__version__}",
        ]
    )


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99, max (nan when empty)."""
    if not values:
        return (float("nan"),) * 3
    a = np.asarray(values, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def paper_settings(state_dir: Path, **overrides: Any) -> Settings:
    """``config/paper.toml`` as shipped (the environment ignored), with ``overrides``."""
    merged: dict[str, Any] = {"state_dir": state_dir}
    merged.update(overrides)
    return load_settings(PAPER, env={}, overrides=merged)


def devnull_logger(settings: Settings) -> Logger:
    """The run's real logger (JSON, configured level), writing to /dev/null: log calls on
    the measured path cost what they cost in a daemon, minus the terminal."""
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return make_logger("json", settings.logging.level, stream=sink)


def row(cells: Sequence[str], widths: Sequence[int], left: int = 1) -> str:
    """Cells padded to ``widths``: the first ``left`` left-aligned, the rest right."""
    out = [
        f"{c:<{w}s}" if i < left else f"{c:>{w}s}"
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return " ".join(out).rstrip()


def fmt_map(m: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in m.items())
