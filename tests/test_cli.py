"""End to end through the command line, on the real recording bundled with the package."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.feeds.replay import bundled_sample_paths

TICKER_MARK = b"@bookTicker"


class ReferenceReplay:
    """An independent, deliberately naive rebuild of the bundled recording.

    Dicts of price -> size, Binance's documented sync procedure, and the 10 bps bid
    depth recomputed from scratch after every update. Shares no code with the bot.
    """

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.updates = 0
        self.first_ns = 0
        self.last_ns = 0
        self.min_bid_10bps: tuple[float, int] = (float("inf"), 0)

    def run(self) -> ReferenceReplay:
        last_id: int | None = None
        buffered: list[tuple[int, dict[str, Any]]] = []
        for path in bundled_sample_paths():
            with gzip.open(path, "rb") as fh:
                for line in fh:
                    if TICKER_MARK in line:
                        continue
                    stamp, raw = line.split(b" ", 1)
                    ts = int(stamp)
                    msg = json.loads(raw)
                    if "lastUpdateId" in msg:
                        last_id = msg["lastUpdateId"]
                        self._set(self.bids, msg["bids"])
                        self._set(self.asks, msg["asks"])
                        self._updated(ts)
                        for d_ts, d in buffered:
                            if d["u"] > last_id:
                                self._apply(d, d_ts)
                                last_id = d["u"]
                    elif msg["data"]["e"] == "depthUpdate":
                        d = msg["data"]
                        if last_id is None:
                            buffered.append((ts, d))
                        elif d["u"] > last_id:
                            self._apply(d, ts)
                            last_id = d["u"]
                    else:  # a trade
                        self._seen(ts)
        return self

    @staticmethod
    def _set(side: dict[float, float], rows: list[list[str]]) -> None:
        for p, q in rows:
            if float(q) == 0:
                side.pop(float(p), None)
            else:
                side[float(p)] = float(q)

    def _apply(self, d: dict[str, Any], ts: int) -> None:
        self._set(self.bids, d["b"])
        self._set(self.asks, d["a"])
        self._updated(ts)

    def _seen(self, ts: int) -> None:
        # Diffs superseded by the snapshot are never seen; released ones keep their stamp.
        self.first_ns = min(self.first_ns or ts, ts)
        self.last_ns = max(self.last_ns, ts)

    def _updated(self, ts: int) -> None:
        self._seen(ts)
        self.updates += 1
        mid = (max(self.bids) + min(self.asks)) / 2
        floor = mid * (1 - 10 / 1e4)
        base = sum(q for p, q in self.bids.items() if p >= floor)
        if base < self.min_bid_10bps[0]:
            self.min_bid_10bps = (base, ts)


@pytest.fixture(scope="module")
def reference() -> ReferenceReplay:
    return ReferenceReplay().run()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("run") / "summary.json"
    code = main(
        ["run", "--log-format", "json", "--log-level", "warning", "--summary-json", str(out)]
    )
    assert code == 0
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def test_default_run_replays_the_whole_bundled_recording(
    default_run: dict[str, Any], reference: ReferenceReplay
) -> None:
    s = default_run

    assert s["mode"] == "paper"
    assert str(s["source"]).startswith("replay:")
    assert s["book_updates"] == reference.updates
    assert s["gaps"] == 0
    assert s["total_dropped"] == 0
    assert s["span_s"] == pytest.approx((reference.last_ns - reference.first_ns) / 1e9, abs=1e-6)
    assert s["span_s"] > 10 * 60  # the two chained files give ~10m50s


def test_summary_reports_the_thinnest_book_the_reference_finds(
    default_run: dict[str, Any], reference: ReferenceReplay
) -> None:
    low = default_run["markets"]["BTC/USDT"]["min_depth"]["bid"]["10"]
    ref_base, ref_ts = reference.min_bid_10bps

    assert low["base"] == pytest.approx(ref_base, rel=1e-9)
    assert low["ts_ns"] == ref_ts
    assert low["quote"] == pytest.approx(low["base"] * low["mid"], rel=1e-3)


def test_bad_config_exits_2_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[markets]]\nsymbol = "BTC/USDT"\nbands_bps = [10, -5]\n')

    code = main(["run", "--config", str(cfg)])

    err = capsys.readouterr().err
    assert code == 2
    assert "bad.toml" in err
    assert "bands_bps" in err
    assert "Traceback" not in err


def test_missing_replay_file_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--replay", str(tmp_path / "nope.gz")])

    err = capsys.readouterr().err
    assert code == 2
    assert "nope.gz" in err
    assert "Traceback" not in err


def test_replay_of_another_symbol_says_what_the_recording_has(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "--symbol", "ETH/USDT", "--log-level", "error", "--log-format", "json"])

    err = capsys.readouterr().err
    assert code == 2
    assert "ETH/USDT" in err
    assert "BTC/USDT" in err


def test_live_mode_refuses_to_start_without_confirmation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "--mode", "live", "--feed", "live"])

    err = capsys.readouterr().err
    assert code == 2
    assert "confirm" in err.lower()


def test_console_script_runs_and_logs_json_when_not_a_terminal(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "backstop"
    out = tmp_path / "s.json"

    proc = subprocess.run(
        [str(exe), "run", "--duration", "20", "--summary-json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(rec["event"] == "run_summary" for rec in lines)
    summary = json.loads(out.read_text())
    assert 19.0 <= summary["span_s"] <= 20.0


def test_book_view_on_a_recording_reports_depth_bands(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["book", "--speed", "0", "--duration", "5", "--log-format", "json"])

    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    progress = [r for r in records if r["event"] == "progress"]
    assert code == 0
    assert progress, err
    assert progress[0]["symbol"] == "BTC/USDT"
    assert progress[0]["bands_bps"] == [10.0, 50.0, 200.0]
    assert all(q > 0 for q in progress[0]["bid_depth_quote"] + progress[0]["ask_depth_quote"])


def test_terminal_view_renders_bands_and_ladder(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from bot.book import OrderBook
    from bot.clock import ManualClock
    from bot.display import TerminalView
    from bot.feeds.events import levels
    from bot.monitor import DepthMonitor

    clock = ManualClock(1_000)
    book = OrderBook("BTC/USDT", clock=clock)
    book.apply_snapshot(levels([[100.0, 2.0], [99.0, 1.0]]), levels([[101.0, 3.0]]), update_id=1)
    sample = DepthMonitor.for_bands([100, 500], 50.0).observe(book, 1_000)
    assert sample is not None
    out = StringIO()
    view = TerminalView(Console(file=out, width=120), ladder_levels=5, monotonic=lambda: 0.0)

    with view:
        view.on_sample("BTC/USDT", book, sample)

    text = out.getvalue()
    assert "BTC/USDT" in text
    assert "100.00" in text  # the best bid on the ladder
    assert "101.00" in text
    assert "500" in text  # the widest band's row
