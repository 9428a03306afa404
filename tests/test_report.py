"""Visual episode reports: what an operator opens after a replay or a day of running.

The end-to-end tests run the real stack (replay -> book -> detector -> backstop ->
budget -> risk -> order manager -> paper venue) on the bundled recording with the
`fracture` overlay brought forward, feed a ReportRecorder the way the trading loop
does, and check the report: one section per episode with its numbers and a chart, PNGs
that decode, the same bytes on a second render. The memory tests feed synthetic
readings for an hour of data time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib import image as mpimg
from PIL import Image

from bot.app import assemble
from bot.book import OrderBook
from bot.clock import ManualClock
from bot.detect.config import DetectorConfig
from bot.detect.machine import DetectorState
from bot.detect.report import DetectorUpdate
from bot.episodes import Episode
from bot.feeds.events import Trade
from bot.feeds.stress import parse_stress_spec
from bot.logs import null_logger
from bot.monitor import DepthSample
from bot.orders.events import OrderFilled, OrderStateChanged
from bot.orders.state import OrderEvent, OrderState
from bot.report import ReportRecorder, render_report
from bot.settings import load_settings
from bot.trader import Trader
from strategies.base import InventoryView

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
EARLY_FRACTURE = "fracture:start_s=65"
SYMBOL = "BTC/USDT"
NS = 1_000_000_000
PNG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


class TradingLoopTap:
    """Feeds the recorder's trading-loop hooks from the trader after each sample, as the
    trader itself will once wired (placed after the trader among the listeners)."""

    def __init__(self, recorder: ReportRecorder) -> None:
        self.recorder = recorder
        self.trader: Trader | None = None
        self.sample_ts: list[int] = []  # every sample's time, to check what was kept

    def on_sample(self, symbol: str, book: OrderBook, sample: DepthSample) -> None:
        assert self.trader is not None
        self.sample_ts.append(sample.ts_ns)
        self.recorder.on_sample(symbol, book, sample)
        desk = self.trader.desks[symbol]
        if desk.last_update is not None:
            self.recorder.on_detector(symbol, desk.last_update)
        orders = self.trader.manager.open_orders(symbol)
        view = desk.inventory.view(sample.mid, orders)
        committed = desk.inventory.committed_quote(orders, sample.mid)
        self.recorder.on_inventory(symbol, sample.ts_ns, view, committed)

    def on_trade(self, trade: Trade) -> None:
        self.recorder.on_trade(trade)


@dataclass
class ReplayReport:
    recorder: ReportRecorder
    episodes: list[dict[str, Any]]
    paths: list[Path]
    html: str
    fills: int
    placed: int
    sample_ts: list[int]


async def _replay(tmp: Path) -> tuple[ReportRecorder, list[dict[str, Any]], int, int, list[int]]:
    settings = load_settings(
        PAPER, env={}, overrides={"state_dir": tmp / "state", "feed": {"duration_s": 200}}
    )
    recorder = ReportRecorder.from_markets(settings.markets)
    tap = TradingLoopTap(recorder)
    run = await assemble(
        settings, log=null_logger(), listeners=[tap], stress=parse_stress_spec(EARLY_FRACTURE)
    )
    assert run.trader is not None
    tap.trader = run.trader
    recorder.order_lookup = run.trader.manager.get
    placed: list[str] = []

    def count(notice: object) -> None:
        if isinstance(notice, OrderStateChanged) and notice.previous is None:
            placed.append(notice.client_id)

    run.trader.manager.subscribe(recorder.on_notice)
    run.trader.manager.subscribe(count)
    await run.execute()
    desk = run.trader.desks[SYMBOL]
    return recorder, desk.episodes.to_dicts(), desk.inventory.fills, len(placed), tap.sample_ts


@pytest.fixture(scope="module")
def replay_report(tmp_path_factory: pytest.TempPathFactory) -> ReplayReport:
    tmp = tmp_path_factory.mktemp("replay-report")
    recorder, episodes, fills, placed, sample_ts = asyncio.run(_replay(tmp))
    paths = render_report(recorder, episodes, tmp / "out" / "report.html", title="Replay report")
    return ReplayReport(
        recorder, episodes, paths, paths[0].read_text(encoding="utf-8"), fills, placed, sample_ts
    )


def _embedded(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in PNG_RE.findall(html)]


# ---------------------------------------------------------------------- end to end


def test_replay_report_has_an_overview_and_a_section_per_episode(
    replay_report: ReplayReport,
) -> None:
    episodes, html = replay_report.episodes, replay_report.html
    assert len(episodes) == 1  # the overlay brings one fracture
    out = replay_report.paths[0]
    assert replay_report.paths == [
        out,
        out.parent / "report-overview.png",
        out.parent / "report-episode-01.png",
    ]
    assert all(p.is_file() and p.stat().st_size > 0 for p in replay_report.paths)
    assert "<h1>Replay report</h1>" in html
    assert "<h2>Overview</h2>" in html
    assert "no episode" not in html.lower()
    sections = re.findall(
        r'<section class="episode" id="episode-(\d+)">(.*?)</section>', html, re.S
    )
    assert [n for n, _ in sections] == ["1"]
    body = sections[0][1]
    assert f"<h2>Episode 1: {episodes[0]['id']}</h2>" in body
    assert "<h3>Numbers</h3>" in body
    assert "<h3>Charts</h3>" in body
    assert len(PNG_RE.findall(body)) == 1
    # One embedded PNG per chart, byte for byte the files written beside the page.
    assert _embedded(html) == [p.read_bytes() for p in replay_report.paths[1:]]


def test_episode_table_gives_the_episodes_numbers(replay_report: ReplayReport) -> None:
    ep = replay_report.episodes[0]
    html = replay_report.html
    row = re.compile(r"<tr><th>([^<]+)</th><td>(.*?)</td></tr>")
    rows = dict(row.findall(html.split('id="episode-1"', 1)[1]))
    assert rows["Trigger"].startswith("baseline on the bid side: ")
    assert " below the threshold " in rows["Trigger"]
    assert rows["Quotes placed"] == f"{ep['quotes_placed']:,}"
    assert rows["Fills"].startswith(f"{ep['fills']:,} (")
    assert rows["Duration"] == f"{ep['duration_s']:,.1f} s"
    assert rows["Start"].endswith("UTC")
    assert rows["End"].endswith("UTC")
    assert rows["Max committed collateral"] == f"{ep['max_committed_quote']:,.2f} USDT"
    assert rows["Marked PnL (at the mid at the end, fees included)"] == (
        f"{ep['marked_pnl']:,.2f} USDT"
    )
    for label in ("Depth before", "Depth min", "Depth after"):
        assert re.fullmatch(r"[\d,]+ / [\d,]+", rows[f"{label}, bid / ask"])


def test_charts_decode_at_a_readable_size_without_a_software_stamp(
    replay_report: ReplayReport,
) -> None:
    overview, episode = replay_report.paths[1:]
    for path, min_w, min_h in ((overview, 800, 600), (episode, 800, 1100)):
        pixels = mpimg.imread(path)
        h, w = pixels.shape[:2]
        assert min_w <= w <= 2000
        assert min_h <= h <= 2000
        assert float(np.std(pixels[..., :3])) > 0.05  # drawn on, not a blank canvas
        assert "Software" not in Image.open(path).info


def test_recorder_sees_every_quote_and_fill_of_the_run(replay_report: ReplayReport) -> None:
    trace = replay_report.recorder.markets[SYMBOL]
    assert trace.seen["quotes"] == replay_report.placed
    assert trace.seen["quotes_without_order"] == 0
    assert len(trace.all_quotes()) == replay_report.placed  # all near the episode: all kept
    assert len(trace.all_fills()) == replay_report.fills > 0
    ended = [q for q in trace.all_quotes() if q.ended_ns is not None]
    assert ended
    assert all(q.ended_ns is not None and q.ended_ns >= q.placed_ns for q in ended)
    assert {q.end_state for q in ended} >= {"canceled"}
    # The detector's active stretches line up with the episode.
    ep = replay_report.episodes[0]
    assert trace.spans[0].start_ns == ep["start_ts_ns"]
    assert trace.spans[-1].end_ns == ep["end_ts_ns"]


def test_recorder_keeps_every_sample_near_the_episode_and_one_a_second_elsewhere(
    replay_report: ReplayReport,
) -> None:
    trace = replay_report.recorder.markets[SYMBOL]
    ep = replay_report.episodes[0]
    # Late samples (released after a resync) count as simultaneous, as in the detector.
    fed = np.maximum.accumulate(np.array(replay_report.sample_ts, dtype=np.int64))
    kept = trace.view("book").ts
    assert trace.seen["samples"] == len(fed)
    lo, hi = ep["start_ts_ns"] - 30 * NS, ep["end_ts_ns"] + 30 * NS
    tail = fed[-1] - 30 * NS

    def full(ts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        return np.asarray(((ts >= lo) & (ts <= hi)) | (ts >= tail), dtype=np.bool_)

    # Near the episode, and in the last 30 s (an episode could still have begun): all.
    np.testing.assert_array_equal(kept[full(kept)], fed[full(fed)])
    # Elsewhere: one sample from each second that had any, and no more.
    kept_out, fed_out = kept[~full(kept)], fed[~full(fed)]
    assert np.isin(kept_out, fed_out).all()
    assert len(np.unique(kept_out // NS)) == len(kept_out)
    assert np.isin(np.unique(fed_out // NS), kept // NS).all()
    assert len(kept_out) < len(fed_out) / 5
    assert len(trace.view("detector")) == len(kept) == len(trace.view("inventory"))


def test_rendering_twice_gives_identical_files(replay_report: ReplayReport, tmp_path: Path) -> None:
    again = render_report(
        replay_report.recorder,
        replay_report.episodes,
        tmp_path / "report.html",
        title="Replay report",
    )
    assert again[0].read_text(encoding="utf-8") == replay_report.html
    assert [p.read_bytes() for p in again[1:]] == [p.read_bytes() for p in replay_report.paths[1:]]


# ---------------------------------------------------------------------- synthetic feed

BANDS = (10.0, 50.0, 200.0)
CONFIG = DetectorConfig(band_bps=10.0, baseline_fraction=0.3, recovery_fraction=0.6)


def _sample(ts: int, depth: float) -> DepthSample:
    arr = np.zeros((2, len(BANDS), 2))
    for b in range(len(BANDS)):
        arr[:, b, 1] = depth * (b + 1)
        arr[:, b, 0] = depth * (b + 1) / 60_000.0
    return DepthSample(ts, 59_999.5, 60_000.5, 60_000.0, 0.17, BANDS, arr, None, None)


def _update(ts: int, state: DetectorState, depth: float) -> DetectorUpdate:
    return DetectorUpdate(
        ts_ns=ts,
        state=state,
        transition=None,
        trigger=None,
        depth=(depth, depth),
        baseline=(3e6, 3e6),
        ratio=(depth / 3e6, depth / 3e6),
        baseline_ready=True,
        spread_bps=0.17,
        health=1.0,
        sigma_bps=None,
        engaged_since_ns=None,
        episode_trigger=None,
    )


def _view(base: float = 2.0) -> InventoryView:
    return InventoryView(
        base=base,
        quote=120_000.0,
        start_base=2.0,
        start_quote=120_000.0,
        net_base=base - 2.0,
        avg_cost=None,
        realised_pnl=0.0,
        unrealised_pnl=0.0,
        fees_quote=0.0,
        committed_quote=0.0,
        mid=60_000.0,
    )


def _feed(
    recorder: ReportRecorder, seconds: int, rate_hz: int, active: tuple[float, float] | None
) -> int:
    """``seconds`` of readings at ``rate_hz``, the detector active within ``active`` (s)."""
    book = OrderBook(SYMBOL, clock=ManualClock())
    start = 1_723_161_000 * NS
    step = NS // rate_hz
    n = seconds * rate_hz
    for i in range(n):
        ts = start + i * step
        t = i / rate_hz
        on = active is not None and active[0] <= t < active[1]
        depth = 5e5 if on else 3e6
        recorder.on_sample(SYMBOL, book, _sample(ts, depth))
        recorder.on_detector(
            SYMBOL, _update(ts, DetectorState.ENGAGED if on else DetectorState.CALM, depth)
        )
        recorder.on_inventory(SYMBOL, ts, _view(), 0.0)
    return n


def test_an_hour_of_data_keeps_a_point_a_second_and_every_sample_near_the_episode() -> None:
    recorder = ReportRecorder({SYMBOL: CONFIG})
    rate = 10
    episode = (1800.0, 1860.0)
    fed = _feed(recorder, 3600, rate, episode)
    trace = recorder.markets[SYMBOL]
    book = trace.view("book")
    t = book.ts - book.ts[0]
    near = (t >= (1800 - 30) * NS) & (t <= (1860 + 30) * NS)
    # Every sample from 30 s before the start (unknown then) to 30 s after the end...
    assert int(near.sum()) == (60 + 60) * rate + 1
    # ...the last 30 s still at full resolution (the tail), one a second elsewhere.
    tail = t >= t[-1] - 30 * NS
    assert int(tail.sum()) == 30 * rate + 1
    far = ~near & ~tail
    assert int(far.sum()) == 3600 - 120 - 31
    assert len(np.unique(t[far] // NS)) == int(far.sum())
    assert fed == 36_000
    assert len(book) == int(near.sum() + tail.sum() + far.sum())
    assert len(trace.view("detector")) == len(trace.view("inventory")) == len(book)
    assert [(s.state, (s.start_ns - book.ts[0]) / NS) for s in trace.spans] == [
        (DetectorState.ENGAGED, 1800.0)
    ]


def test_a_busy_quoter_away_from_episodes_keeps_a_bounded_number_of_orders() -> None:
    recorder = ReportRecorder({SYMBOL: CONFIG}, max_outside_events=5)
    book = OrderBook(SYMBOL, clock=ManualClock())
    start = 1_723_161_000 * NS
    for i in range(100):
        ts = start + i * NS
        recorder.on_sample(SYMBOL, book, _sample(ts, 3e6))
        recorder.on_detector(SYMBOL, _update(ts, DetectorState.CALM, 3e6))
        recorder.on_notice(
            OrderFilled(
                ts, f"c{i}", SYMBOL, "buy", f"t{i}", 60_000.0, 0.001, None, None, None, None
            )
        )
    trace = recorder.markets[SYMBOL]
    # The last 30 s are still in the tail (an episode could yet start); older ones thinned.
    assert len(trace.all_fills()) == 5 + 31  # 5 kept, the last 31 in the tail
    assert trace.dropped_events == 100 - 31 - 5
    assert trace.seen["fills"] == 100


def test_quotes_are_drawn_from_the_order_they_belong_to() -> None:
    @dataclass
    class Order:
        side: str
        price: float
        amount: float
        tag: str = ""

    orders = {"q1": Order("buy", 59_990.0, 0.1)}
    recorder = ReportRecorder(order_lookup=orders.get)
    start = 1_723_161_000 * NS

    def changed(ts: int, cid: str, prev: OrderState | None, state: OrderState) -> None:
        event = OrderEvent.SUBMITTED if prev is None else OrderEvent.CANCELED
        recorder.on_notice(OrderStateChanged(ts, cid, SYMBOL, None, prev, state, event, 0.0, ""))

    changed(start, "q1", None, OrderState.PENDING_NEW)
    changed(start + NS, "q1", OrderState.PENDING_CANCEL, OrderState.CANCELED)
    changed(start + 2 * NS, "q2", None, OrderState.PENDING_NEW)  # unknown to the lookup
    trace = recorder.markets[SYMBOL]
    [quote] = trace.all_quotes()
    assert (quote.side, quote.price, quote.amount) == ("buy", 59_990.0, 0.1)
    assert (quote.placed_ns, quote.ended_ns, quote.end_state) == (start, start + NS, "canceled")
    assert trace.seen["quotes"] == 2
    assert trace.seen["quotes_without_order"] == 1


def test_a_run_without_episodes_gets_the_overview_and_says_so(tmp_path: Path) -> None:
    recorder = ReportRecorder({SYMBOL: CONFIG})
    _feed(recorder, 120, 2, None)
    paths = render_report(recorder, [], tmp_path / "calm.html", title="Calm run")
    assert paths == [tmp_path / "calm.html", tmp_path / "calm-overview.png"]
    html = paths[0].read_text(encoding="utf-8")
    assert "No episode: the detector never engaged." in html
    assert '<section class="episode"' not in html
    assert _embedded(html) == [paths[1].read_bytes()]
    assert Image.open(io.BytesIO(paths[1].read_bytes())).size[0] >= 800


def test_an_episode_still_active_at_the_end_is_drawn_up_to_the_last_reading(
    tmp_path: Path,
) -> None:
    recorder = ReportRecorder({SYMBOL: CONFIG})
    _feed(recorder, 90, 4, (60.0, 1e9))
    trace = recorder.markets[SYMBOL]
    start = trace.spans[0].start_ns
    ep = Episode(
        id=f"{SYMBOL}@{start}",
        symbol=SYMBOL,
        start_ts_ns=start,
        trigger=None,
        inventory_before=_view(),
        depth_before=(5e5, 5e5),
        baseline_before=(3e6, 3e6),
    ).to_dict()
    paths = render_report(recorder, [ep], tmp_path / "r.html", title="Open episode")
    html = paths[0].read_text(encoding="utf-8")
    assert "still active when the data ended" in html
    assert len(_embedded(html)) == 2
    assert "Drawn: 240 book points" in html  # 30 s before the start to the last reading
