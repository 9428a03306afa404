"""Whole paper runs for tests: ``config/paper.toml`` as shipped, through a stress overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.app import Run, assemble
from bot.feeds.stress import parse_stress_spec
from bot.logs import null_logger
from bot.settings import load_settings

PAPER = Path(__file__).resolve().parent.parent / "config" / "paper.toml"


async def paper_run(root: Path, stress: str, **overrides: Any) -> Run:
    """``config/paper.toml`` (the environment ignored) with its state dir and journal
    under ``root``, the control socket off and ``overrides`` on top, assembled with the
    ``stress`` overlay on the bundled recording. Not started."""
    settings = load_settings(
        PAPER,
        env={},
        overrides={
            "state_dir": root / "state",
            "journal": {"path": root / "journal.sqlite"},
            "control": {"enabled": False},
            **overrides,
        },
    )
    return await assemble(settings, log=null_logger(), stress=parse_stress_spec(stress))
