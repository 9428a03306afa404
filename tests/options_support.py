"""What the paper runs of the synthetic option chain share: the example config and the
short run the option tests take on it (130 s of the bundled USD-M recording as the
forward, three expiries, two strikes, the chain's fracture overlay pulling depth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG = Path("config/paper-options.toml")
SHORT: dict[str, Any] = {
    "feed": {"duration_s": 130.0},
    "options": {
        "synthetic": {
            "expiries": ["2024-08-08T23:56:00Z", "2024-08-09T08:00:00Z", "2024-08-30T08:00:00Z"],
            "strikes": [61000, 62000],
            "stress": "fracture:band_bps=3000,start_s=50,ramp_s=2,hold_s=30,recover_s=20",
        }
    },
}
"""Overrides of CONFIG for the short run."""


def is_option(symbol: str) -> bool:
    """An option of the synthetic chain (not its perpetual forward)."""
    return symbol.startswith("BTC/USD:BTC-")
