"""The dashboard's options panel: the server-side fragment by hand, and in a real headless
Chromium (Debian's, driven by Playwright) against a real daemon replaying the options
example (``config/paper-options.toml``: the synthetic chain on the bundled USD-M
recording) with its control API on 127.0.0.1 and the dashboard on.

The daemon replays at 10x with the option books' fracture moved to 45 s of data and held
to the end, so option detectors engage a few seconds after start. Every wait is on the
page (Playwright's ``expect``) or on the daemon's own log, never a sleep. Skips, saying
why, when Playwright or the browser is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import DashboardDaemon, dashboard_daemon

from bot.dashboard.views import options_html

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "paper-options.toml"
CHROMIUM = Path(os.environ.get("BACKSTOP_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "view-" + "v" * 24
WAIT_MS = 30_000


def _status(**over: Any) -> dict[str, Any]:
    option = {
        "symbol": "BTC/USD:BTC-240809-62000-C",
        "detector": "engaged",
        "engaged": True,
        "iv_mid": 0.4912,
        "bid_vega": 12.5,
        "ask_vega": 80.25,
        "baseline_vega": [61.0, 79.5],
        "position": -1.2,
        "open_orders": 2,
        "episodes": 1,
    }
    calm = {**option, "symbol": "BTC/USD:BTC-240809-61000-P", "engaged": False, "position": 0.0}
    status = {
        "source": "synthetic: x",
        "synthetic": True,
        "underlying": "BTC/USDT:USDT",
        "forward": 61_234.5,
        "options": [option, calm],
        "engaged": 1,
        "episodes_total": 3,
        "delta": 0.4,
        "net_delta": -0.6543,
        "vega": -120.0,
        "gamma": 0.05,
        "limits": {"max_delta_total": 1.0, "max_vega_total": 400.0, "max_gamma_total": None},
        "hedge_trigger": 0.7,
        "open_orders": 2,
        "refused": {"DELTA_EXCEEDS_MAX_TOTAL": 7},
    }
    status.update(over)
    return status


def test_the_options_fragment_by_hand() -> None:
    html = options_html(_status())
    # Greeks against their caps (the caps bound both signs); no gamma cap configured.
    assert "-0.654 of &plusmn;1.000" in html
    assert '<meter min="0" max="1" high="0.9" value="0.6543">65%</meter>' in html
    assert "-120.00 of &plusmn;400.00" in html
    assert "0.050 (no cap)" in html
    assert "SYNTHETIC books" in html
    assert "DELTA_EXCEEDS_MAX_TOTAL 7" in html
    # One row for the engaged option (vega depth against baseline, iv in %), none for the
    # calm option that holds nothing.
    rows = re.findall(r'<tr data-symbol="([^"]+)"', html)
    assert rows == ["BTC/USD:BTC-240809-62000-C"]
    assert '<td data-field="bid-vega">12.5 / 61.0</td>' in html
    assert '<td data-field="iv">49.1</td>' in html
    assert '<td data-field="position">-1.20</td>' in html
    # A held but calm option is listed too; nothing engaged or held says so.
    held = options_html(_status(options=[{**_status()["options"][1], "position": 0.5}]))
    assert re.findall(r'<tr data-symbol="([^"]+)"', held) == ["BTC/USD:BTC-240809-61000-P"]
    assert 'data-engaged="false"' in held
    none = options_html(_status(options=[_status()["options"][1]]))
    assert "No option engaged or held." in none
    # Every value is escaped: the fragment goes in with innerHTML.
    evil = options_html(_status(underlying="<img src=x onerror=alert(1)>"))
    assert "<img" not in evil
    assert "&lt;img src=x onerror=alert(1)&gt;" in evil


# ---- in the browser ---------------------------------------------------------------------


Daemon = DashboardDaemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with dashboard_daemon(
        ["--config", str(CONFIG), "--speed", "10"],
        {"viewer.grafana": TOKEN},
        state_prefix="bsopt-",
        env={"BACKSTOP_OPTIONS__SYNTHETIC__STRESS": "fracture:band_bps=3000,start_s=45,hold_s=600"},
        cwd=REPO,
    ) as d:
        yield d


def test_the_overview_shows_the_options_panel_of_a_live_options_daemon(daemon: Daemon) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    profile = tempfile.mkdtemp(prefix="bsopt-chromium-")
    problems: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
                viewport={"width": 1280, "height": 1000},
            )
            try:
                page = context.new_page()
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type == "error" else None,
                )
                page.goto(daemon.base + "/dashboard")
                page.fill("#token-input", TOKEN)
                page.click("#token-form button[type=submit]")
                panel = page.locator("#options")
                expect(panel).to_be_visible()
                expect(panel.locator("[data-testid=options-synthetic]")).to_have_text(
                    "SYNTHETIC books"
                )
                # The option books' fracture engages detectors: a row per engaged option.
                engaged = panel.locator('tr[data-engaged="true"]')
                expect(engaged.first).to_be_visible()
                row = engaged.first
                expect(row.locator("[data-field=detector]")).to_have_text(
                    re.compile(r"^(engaged|recovering)$")
                )
                # Vega depth against a baseline: two numbers.
                expect(row.locator("[data-field=bid-vega]")).to_have_text(
                    re.compile(r"^[\d,]+\.\d / [\d,]+\.\d$")
                )
                net = panel.locator("[data-field=net-delta]").inner_text()
                vega = panel.locator("[data-field=vega]").inner_text()
                gamma = panel.locator("[data-field=gamma]").inner_text()
                symbol = row.get_attribute("data-symbol")
                page.close()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert problems == []
    # The numbers are the daemon's: its caps, and a net delta within them.
    status = daemon.api("/status", TOKEN)["options"]
    limits = status["limits"]
    m = re.match(r"^(-?[\d.]+) of ±([\d.]+)", net)
    assert m is not None, net
    assert float(m[2]) == limits["max_delta_total"] == 1.0
    assert abs(float(m[1])) <= limits["max_delta_total"]
    assert f"of ±{limits['max_vega_total']:,.2f}" in vega
    assert f"of ±{limits['max_gamma_total']:,.3f}" in gamma
    assert symbol in {o["symbol"] for o in status["options"]}
