"""The dashboard's server side: off unless enabled, pages without data, an API behind the
role tokens, escaped HTML, a live stream that reacts to the daemon's events at once, and
the journal views. (The page in a real browser: tests/test_dashboard_browser.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from pydantic import SecretStr

from bot.clock import NS_PER_SECOND, ManualClock
from bot.control.api import Health
from bot.control.server import SHUTDOWN_TIMEOUT_S, ControlServer
from bot.dashboard import Dashboard, DepthHistory
from bot.dashboard.journal_views import audit_html, episodes_html
from bot.dashboard.routes import CSP, STATIC
from bot.dashboard.views import MarketLimits, market_html, summary_html
from bot.engine import Listener
from bot.errors import ConfigError
from bot.governance.roles import TokenRegistry
from bot.journal import Journal
from bot.logs import null_logger
from bot.monitor import DepthSample
from bot.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
STATIC_DIR = REPO / "bot" / "control" / "static"
TOKENS = {
    "viewer.grafana": "view-" + "v" * 24,
    "operator.oncall": "oper-" + "o" * 24,
}
VIEWER = TOKENS["viewer.grafana"]
EVIL = '<img src=x onerror="alert(1)">'


def status_doc(state: str = "armed", reason: str | None = None) -> dict[str, Any]:
    return {
        "mode": "paper",
        "strategy": "backstop",
        "kill_switch": {"state": state, "reason": reason, "who": reason},
        "guards": {"daily_loss": "ok"},
        "markets": [
            {
                "symbol": "BTC/USDT",
                "book": {"health": "ok", "age_s": 0.1, "mid": 61_000.0, "spread_bps": 0.5},
                "depth": [{"band_bps": 10.0, "bid_quote": 1e5, "ask_quote": 2e5}],
                "engaged": True,
                "detector": "engaged",
                "paused": reason is not None,
                "pause_reason": reason,
                "open_orders": 4,
                "orders_held_back": 17,
                "inventory": {"BTC": 2.5, "USDT": 90_000.0},
                "committed_quote": 30_000.0,
                "pnl": {"realised_quote": 1.0, "unrealised_quote": float("nan")},
                "guards": {"stale_book": "ok", "reject_burst": f"pause: {reason}"},
                "warning": None,
            }
        ],
    }


class Source:
    """A daemon stand-in with what the dashboard reads (status, listener, events, journal)."""

    def __init__(self, journal: Path | None = None) -> None:
        self.doc = status_doc()
        self.listeners: list[Listener] = []
        self.callbacks: list[Callable[[], None]] = []
        self.journal = journal

    def symbols(self) -> list[str]:
        return ["BTC/USDT"]

    async def status(self) -> dict[str, Any]:
        return self.doc

    async def health(self) -> Health:
        return Health(ok=True)

    async def kill(self, reason: str, source: str) -> dict[str, Any]:
        return {}

    async def resume(self, reason: str, source: str) -> dict[str, Any]:
        return {}

    async def pause(self, symbol: str, reason: str, source: str) -> dict[str, Any]:
        return {}

    async def unpause(self, symbol: str, source: str) -> dict[str, Any]:
        return {}

    async def cancel_all(self, reason: str, source: str) -> dict[str, Any]:
        return {}

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def fracture_thresholds(self, symbol: str) -> tuple[float | None, float | None]:
        return (5e4, 6e4)

    def on_change(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    async def journal_path(self) -> Path | None:
        return self.journal


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must fit in ~104 bytes: not pytest's long tmp paths.
    root = Path(tempfile.mkdtemp(prefix="bsd-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def registry() -> TokenRegistry:
    return TokenRegistry({k: SecretStr(v) for k, v in TOKENS.items()})


def serve(root: Path, source: Source, *, dashboard: bool = True, **kw: Any) -> ControlServer:
    log = null_logger()
    board = Dashboard(source, log=log, **kw) if dashboard else None
    return ControlServer(
        source,
        socket_path=root / "c.sock",
        log=log,
        tcp_port=0,
        tokens=registry(),
        dashboard=board,
    )


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[tuple[ControlServer, Source]]:
    source = Source()
    async with serve(short_dir, source, refresh_s=60.0) as srv:
        yield srv, source


async def get(
    srv: ControlServer, path: str, *, token: str | None = None, host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host is not None:
        headers["Host"] = host
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{srv.tcp_port}{path}", headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def read_events(response: aiohttp.ClientResponse, n: int) -> list[tuple[str, Any]]:
    """The next ``n`` server-sent events of ``response``."""
    events: list[tuple[str, Any]] = []
    name, data = "", ""
    while len(events) < n:
        line = (await response.content.readline()).decode()
        if not line:
            raise AssertionError("the stream ended")
        line = line.rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "":
            events.append((name, json.loads(data)))
    return events


# ---- enabling --------------------------------------------------------------------------------


async def test_the_dashboard_is_off_unless_enabled_and_lives_on_tcp_only(
    short_dir: Path,
) -> None:
    async with serve(short_dir, Source(), dashboard=False) as srv:
        status, _, body = await get(srv, "/dashboard", token=VIEWER)
        assert status == 404
        assert b"unknown endpoint" in body
    with pytest.raises(ConfigError, match=r"control\.tcp_enabled"):
        load_settings(env={"BACKSTOP_CONTROL__DASHBOARD": "true"})
    enabled = load_settings(
        env={
            "BACKSTOP_CONTROL__DASHBOARD": "true",
            "BACKSTOP_CONTROL__TCP_ENABLED": "true",
            "BACKSTOP_CONTROL__TOKENS": json.dumps(TOKENS),
        }
    )
    assert enabled.control.dashboard
    assert Dashboard.from_settings(enabled, Source(), log=null_logger()) is not None
    assert Dashboard.from_settings(load_settings(env={}), Source(), log=null_logger()) is None
    board = Dashboard(Source(), log=null_logger())
    with pytest.raises(ConfigError, match="TCP listener"):
        ControlServer(
            Source(), socket_path=short_dir / "x.sock", log=null_logger(), dashboard=board
        )
    # The Unix socket never serves it (a browser cannot reach it anyway).
    async with serve(short_dir, Source()) as srv:
        connector = aiohttp.UnixConnector(path=str(srv.socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://x/dashboard") as r,
        ):
            assert r.status == 404


# ---- pages and static files -----------------------------------------------------------------


async def test_pages_need_no_token_hold_no_data_and_lock_the_page_down(
    server: tuple[ControlServer, Source],
) -> None:
    srv, _ = server
    for path in ("/dashboard", "/dashboard/episodes", "/dashboard/audit"):
        status, headers, body = await get(srv, path)
        assert status == 200, path
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Content-Security-Policy"] == CSP
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"
        page = body.decode()
        assert "BTC/USDT" not in page  # no data without a token
        assert "<script>" not in page  # no inline script: the CSP would refuse it
        assert "style=" not in page
        assert set(re.findall(r'src="([^"]+)"', page)) <= {
            "/dashboard/static/uPlot.iife.min.js",
            "/dashboard/static/dashboard.js",
        }
    assert "script-src 'self'" in CSP
    assert "unsafe" not in CSP
    # A page from another site that re-points its host name here (DNS rebinding).
    status, _, body = await get(srv, "/dashboard", host=f"evil.example:{srv.tcp_port}")
    assert status == 421
    assert b"127.0.0.1 or localhost" in body
    assert (await get(srv, "/dashboard", host=f"localhost:{srv.tcp_port}"))[0] == 200


async def test_the_vendored_chart_library_ships_unchanged_with_its_licence(
    server: tuple[ControlServer, Source],
) -> None:
    srv, _ = server
    readme = (STATIC_DIR / "README.md").read_text()
    for name in STATIC:
        status, headers, body = await get(srv, f"/dashboard/static/{name}")
        assert status == 200, name
        assert body == (STATIC_DIR / name).read_bytes()
        assert headers["X-Content-Type-Options"] == "nosniff"
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()
        assert digest in readme, f"{name} differs from the release the README names"
    licence = (STATIC_DIR / "LICENSE-uPlot.txt").read_text()
    assert licence.startswith("The MIT License")
    assert "Leon Sorokin" in licence
    for bad in ("/dashboard/static/nope.js", "/dashboard/static/..%2Fserver.py"):
        assert (await get(srv, bad))[0] == 404
    # The package ships them (pyproject package-data) and the daemon reads them from there.
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"control/static/*"' in pyproject
    assert '"dashboard/templates/*"' in pyproject


# ---- the API -----------------------------------------------------------------------------------


async def test_the_api_needs_a_token_and_the_stream_says_who_is_looking(
    server: tuple[ControlServer, Source],
) -> None:
    srv, _ = server
    for path in ("/dashboard/api/stream", "/dashboard/api/episodes", "/dashboard/api/audit"):
        status, _, body = await get(srv, path)
        assert status == 401, path
        assert b"missing bearer token" in body
        assert (await get(srv, path, token="x" * 30))[0] == 401
    assert srv.auth_failures == 6
    # No journal behind this daemon: said plainly.
    status, _, body = await get(srv, "/dashboard/api/episodes", token=VIEWER)
    assert status == 404
    assert b"keeps no journal" in body

    headers = {"Authorization": f"Bearer {VIEWER}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{srv.tcp_port}/dashboard/api/stream", headers=headers) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        (hello_name, hello), (update_name, update) = await read_events(r, 2)
    assert (hello_name, hello["name"], hello["role"]) == ("hello", "viewer.grafana", "viewer")
    assert update_name == "update"
    assert update["reset"] is True
    assert update["status"]["markets"][0]["pnl"]["unrealised_quote"] is None  # NaN: null
    assert 'data-state="armed"' in update["summary"]
    assert 'data-engaged="true"' in update["markets"][0]["html"]


async def test_a_kill_reaches_an_open_page_at_once_not_at_the_next_refresh(
    server: tuple[ControlServer, Source],
) -> None:
    srv, source = server  # refresh every 60 s: only the daemon's event can explain an update
    headers = {"Authorization": f"Bearer {VIEWER}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{srv.tcp_port}/dashboard/api/stream", headers=headers) as r,
    ):
        await read_events(r, 2)
        source.doc = status_doc("tripped_flat", "drill")
        for callback in source.callbacks:  # what the kill switch's record does
            callback()
        [(_, update)] = await asyncio.wait_for(read_events(r, 1), timeout=5)
    assert update["reset"] is False
    assert 'data-state="tripped_flat"' in update["summary"]
    assert "flat, no open orders of ours" in update["summary"]


async def test_a_stopping_server_ends_its_live_streams(short_dir: Path) -> None:
    srv = serve(short_dir, Source(), refresh_s=60.0)
    await srv.start()
    headers = {"Authorization": f"Bearer {VIEWER}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{srv.tcp_port}/dashboard/api/stream", headers=headers) as r,
    ):
        await read_events(r, 2)
        started = time.monotonic()
        await srv.aclose()
        took = time.monotonic() - started
        assert await asyncio.wait_for(r.content.read(), timeout=5) == b""
    # Without ending the streams the server would wait out its whole shutdown timeout.
    assert took < SHUTDOWN_TIMEOUT_S / 2


# ---- rendering ---------------------------------------------------------------------------------


def test_every_value_in_the_overview_is_escaped() -> None:
    doc = status_doc("tripped_flat", EVIL)
    doc["markets"][0]["symbol"] = EVIL
    limits = MarketLimits(
        base="BTC",
        quote="USDT",
        reserve_base=2.0,
        reserve_quote=120_000.0,
        floor_fraction=0.1,
        max_position_base=1.0,
        max_notional_quote=60_000.0,
    )
    rendered = summary_html(doc) + market_html(doc["markets"][0], limits)
    assert "<img" not in rendered
    assert rendered.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 4
    assert 'data-field="open-orders">4<' in rendered
    assert 'data-field="held-back">17<' in rendered
    # Inventory against the reserve: 0.5 BTC of the 1 BTC position cap, 30k of 60k committed.
    assert "0.500000 of 1.000000" in rendered
    assert "30,000.00 of 60,000.00 USDT" in rendered
    assert "PAUSED" in rendered


def sample(ts_s: float, bid: float) -> DepthSample:
    depth = np.zeros((2, 2, 2))
    depth[0, :, 1] = [bid, 2 * bid]
    depth[1, :, 1] = [bid + 1, 2 * bid + 1]
    return DepthSample(
        ts_ns=round(ts_s * NS_PER_SECOND),
        best_bid=99.0,
        best_ask=101.0,
        mid=100.0,
        spread_bps=200.0,
        bands_bps=(10.0, 50.0),
        depth=depth,
        buy_slippage_bps=None,
        sell_slippage_bps=None,
    )


def test_the_depth_history_keeps_one_point_a_step_and_hands_out_only_new_ones() -> None:
    history = DepthHistory(lambda symbol: (7.0, None), step_s=1.0, keep=3)
    book: Any = None
    for i, ts in enumerate([0.0, 0.4, 0.9, 1.0, 1.5, 2.2, 3.3, 4.3]):
        history.on_sample("BTC/USDT", book, sample(ts, 100.0 + i))
    # Kept: 0.0, 1.0, 2.2, 3.3, 4.3 (one per second of data), the last three of them.
    cols = history.columns("BTC/USDT")
    assert cols["t"] == [2.2, 3.3, 4.3]
    assert cols["bands_bps"] == [10.0, 50.0]
    assert cols["bid"] == [[105.0, 106.0, 107.0], [210.0, 212.0, 214.0]]
    assert cols["threshold_bid"] == [7.0] * 3
    assert cols["threshold_ask"] == [None] * 3
    seen = history.seq
    history.on_sample("BTC/USDT", book, sample(5.1, 1.0))  # too soon: not kept
    history.on_sample("BTC/USDT", book, sample(5.3, 1.0))
    assert history.columns("BTC/USDT", seen)["t"] == [5.3]
    assert history.columns("BTC/USDT", history.seq)["t"] == []
    assert history.latest_ns == round(5.3 * NS_PER_SECOND)


# ---- the journal views ---------------------------------------------------------------------------


def test_the_audit_view_shows_the_chain_and_the_kills_and_flags_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    clock = ManualClock(1_700_000_000 * NS_PER_SECOND)
    journal = Journal(path, clock=clock)
    for action, state, reason in [
        ("trip", "tripped_cancelling", "drill <b>"),
        ("flat", "tripped_flat", "drill <b>"),
        ("resume", "armed", "drill over"),
    ]:
        journal.append(
            "kill",
            {
                "action": action,
                "state": state,
                "reason": reason,
                "source": "operator",
                "who": "control tcp (127.0.0.1:1), token operator.oncall",
                "elapsed_ns": None,
            },
        )
        clock.advance(NS_PER_SECOND)
    assert journal.close()

    page = audit_html(path)
    assert 'data-ok="true"' in page
    assert [m for m in re.findall(r'data-action="(\w+)"', page)] == ["resume", "flat", "trip"]
    assert "drill &lt;b&gt;" in page
    assert "token operator.oncall" in page
    assert "No episode yet" in episodes_html(path)

    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE records SET payload = replace(payload, 'drill over', 'nothing') WHERE id = 3"
    )
    conn.commit()
    conn.close()
    page = audit_html(path)
    assert 'data-ok="false"' in page
    assert "BROKEN at record 3" in page
