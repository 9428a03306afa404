"""Smoke run of ``bench/warning.py`` so it keeps working as the code under it changes.

Only that it runs end to end on the real objects and prints its table: timings depend
on the machine and are not asserted (the benchmark reports them).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_warning_benchmark_quick_prints_its_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # bench/ lives beside bot/, not installed
    bench = importlib.import_module("bench.warning")

    assert bench.main(["--quick"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "early-warning benchmark (bench/warning.py)"
    head = next(i for i, line in enumerate(out) if line.startswith("measure "))
    assert out[head].split() == ["measure", "n", "p50", "us", "p99", "us", "max", "us"]
    rows = {line.split()[0]: line.split()[1:] for line in out[head + 1 :]}
    assert set(rows) == {"features", "inference", "on_reading", "detector"}
    counts = {int(cells[0].replace(",", "")) for cells in rows.values()}
    assert len(counts) == 1  # every measure timed on every update
    assert counts.pop() > 1000
