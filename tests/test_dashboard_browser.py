"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a
real daemon: ``backstop run`` replaying the bundled sample with the ``fracture`` stress,
its control API on 127.0.0.1 with role tokens and the dashboard on.

One daemon serves the module (it replays at 10x: the fracture from 65 s of data holds to
the end of the recording, about a minute of wall time); the kill and resume tests run
last, in that order, because they trip and re-arm the daemon's kill switch. Every wait
is on the page (Playwright's ``expect`` and ``wait_for_function``) or on the daemon's own
log lines, never a sleep.

Skips, saying why, when Playwright or the browser is missing (``./.ci/run`` installs
Debian's ``chromium`` with apt-get when it can).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_support import DashboardDaemon, dashboard_daemon

playwright_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed: pip install -e '.[dev]'",
)
from playwright.sync_api import BrowserContext, Page, expect  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
CHROMIUM = Path(os.environ.get("BACKSTOP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STRESS = "fracture:start_s=65,hold_s=600"
SPEED = "10"
TOKENS = {
    "viewer.grafana": "view-" + "v" * 24,
    "operator.oncall": "oper-" + "o" * 24,
    "admin.alice": "alice-" + "a" * 24,
}
SYMBOL = "BTC/USDT"
WAIT_MS = 30_000

if not CHROMIUM.is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: the browser tests need Debian's chromium "
        "(./.ci/run installs it with apt-get; or apt-get install chromium, or set "
        "BACKSTOP_CHROMIUM)",
        allow_module_level=True,
    )

expect.set_options(timeout=WAIT_MS)


Daemon = DashboardDaemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with dashboard_daemon(
        ["--config", str(PAPER), "--stress", STRESS, "--speed", SPEED],
        TOKENS,
        state_prefix="bsdash-",
    ) as d:
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    profile = tempfile.mkdtemp(prefix="bsdash-chromium-")  # an empty user-data-dir
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Opened:
    page: Page
    problems: list[str]
    """Script errors and Content-Security-Policy violations: must stay empty."""


def open_page(browser: BrowserContext, daemon: Daemon, path: str, token_name: str) -> Opened:
    page = browser.new_page()  # a new tab: its own sessionStorage
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and ("Content Security Policy" in m.text or "Refused" in m.text)
            else None
        ),
    )
    page.goto(daemon.base + path)
    page.fill("#token-input", TOKENS[token_name])
    page.click("#token-form button[type=submit]")
    return Opened(page, problems)


def chart_data(page: Page) -> Any:
    return page.evaluate(
        "(s) => window.backstop.charts[s].charts[0].data.map((a) => a.slice())", SYMBOL
    )


def test_the_overview_shows_a_live_depth_chart_and_the_engaged_backstop(
    browser: BrowserContext, daemon: Daemon
) -> None:
    opened = open_page(browser, daemon, "/dashboard", "viewer.grafana")
    page = opened.page
    expect(page.locator("#who")).to_have_text("viewer.grafana (viewer)")
    engaged = page.locator(".market [data-testid=engaged]")
    expect(engaged).to_have_attribute("data-engaged", "true")
    expect(engaged).to_have_text("ENGAGED")
    expect(page.locator("[data-testid=kill-state]")).to_have_attribute("data-state", "armed")
    chart = page.locator('figure.depth-chart[data-band-index="0"]')
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.locator("figure.depth-chart")).to_have_count(3)  # one per band

    before = chart_data(page)
    page.wait_for_function(
        "([s, t]) => { const d = window.backstop.charts[s].charts[0].data[0];"
        " return d.length && d[d.length - 1] > t; }",
        arg=[SYMBOL, before[0][-1]],
    )
    after = chart_data(page)
    t, bid, ask, threshold_bid, threshold_ask = after
    assert len(t) > len(before[0])
    assert t[-1] > before[0][-1]
    assert t == sorted(t)
    assert chart.get_attribute("data-last-ts") is not None
    # The fracture, as the chart draws it: first-band depth under its threshold.
    assert threshold_bid[-1] is not None
    assert threshold_ask[-1] is not None
    assert bid[-1] < threshold_bid[-1]
    assert ask[-1] < threshold_ask[-1]  # the overlay thins both sides
    assert max(v for v in bid if v is not None) > threshold_bid[-1]  # before the fracture
    # The numbers beside the chart are the daemon's own.
    status = daemon.api("/status", TOKENS["viewer.grafana"])
    assert status["markets"][0]["engaged"] is True
    expect(page.locator("[data-field=mode]")).to_have_text(status["mode"])
    assert opened.problems == []
    if shot := os.environ.get("BACKSTOP_DASHBOARD_SCREENSHOT"):
        page.screenshot(path=shot, full_page=True)
    page.close()


def test_a_viewer_token_cannot_kill(browser: BrowserContext, daemon: Daemon) -> None:
    opened = open_page(browser, daemon, "/dashboard", "viewer.grafana")
    page = opened.page
    expect(page.locator("#actions")).to_be_visible()
    page.fill("#reason", "a viewer tries")
    page.click("#kill")
    expect(page.locator("#kill-confirm")).to_be_visible()
    page.click("#kill-yes")
    result = page.locator("#action-result")
    expect(result).to_have_attribute("data-ok", "false")
    expect(result).to_contain_text(
        "refused (403): viewer.grafana has the viewer role; POST /kill needs operator"
    )
    status = daemon.api("/status", TOKENS["viewer.grafana"])
    assert status["kill_switch"]["state"] == "armed"
    expect(page.locator("[data-testid=kill-state]")).to_have_attribute("data-state", "armed")
    assert opened.problems == []
    page.close()


def test_the_episodes_page_draws_an_episode_from_the_journal(
    browser: BrowserContext, daemon: Daemon
) -> None:
    opened = open_page(browser, daemon, "/dashboard/episodes", "viewer.grafana")
    page = opened.page
    rows = page.locator("[data-testid=episode-row]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(SYMBOL)
    expect(rows.first).to_contain_text("baseline")
    page.click("button.show-episode")
    expect(page.locator("#episode h2")).to_contain_text(f"Episode 1: {SYMBOL}@")
    expect(page.locator("#episode table.numbers")).to_contain_text("Trigger")
    page.wait_for_function(
        "() => { const i = document.querySelector('img.episode-png');"
        " return i !== null && i.complete && i.naturalWidth > 600; }",
        timeout=WAIT_MS,
    )
    assert opened.problems == []
    page.close()


def test_the_kill_button_trips_the_kill_switch_to_flat(
    browser: BrowserContext, daemon: Daemon
) -> None:
    opened = open_page(browser, daemon, "/dashboard", "operator.oncall")
    page = opened.page
    expect(page.locator("#who")).to_have_text("operator.oncall (operator)")
    open_orders = page.locator(".market [data-field=open-orders]")
    expect(open_orders).not_to_have_text("0")  # quoting into the fracture
    reason = page.locator("#reason")

    # Pause and unpause the market: the same control API calls as the CLI's.
    reason.fill("browser pause drill")
    page.select_option("#market", SYMBOL)
    page.click("#pause")
    expect(page.locator("#action-result")).to_have_attribute("data-ok", "true")
    expect(page.locator(".market .badge.paused")).to_be_visible()
    assert daemon.api("/status", TOKENS["operator.oncall"])["markets"][0]["paused"] is True
    page.click("#unpause")
    expect(page.locator("#action-result")).to_contain_text(f"{SYMBOL} unpaused")
    expect(page.locator(".market .badge.paused")).to_have_count(0)
    expect(open_orders).not_to_have_text("0")  # quoting again
    page.click("#cancel-all")
    expect(page.locator("#action-result")).to_contain_text("cancelling")
    expect(open_orders).not_to_have_text("0")  # armed: the strategy quotes again

    # Kill: a reason, a confirmation step, and no kill when the operator says no.
    reason.fill("")
    page.click("#kill")
    expect(page.locator("#action-result")).to_contain_text("Give a reason first")
    expect(page.locator("#kill-confirm")).to_be_hidden()
    reason.fill("browser drill")
    page.click("#kill")
    page.click("#kill-no")
    expect(page.locator("#kill-confirm")).to_be_hidden()
    assert daemon.api("/status", TOKENS["operator.oncall"])["kill_switch"]["state"] == "armed"
    page.click("#kill")
    page.click("#kill-yes")

    kill_state = page.locator("[data-testid=kill-state]")
    expect(kill_state).to_have_attribute("data-state", "tripped_flat")
    expect(kill_state).to_contain_text("flat")
    expect(open_orders).to_have_text("0")
    expect(page.locator("#action-result")).to_contain_text("kill switch tripped")
    expect(page.locator("#kill-switch")).to_contain_text("token operator.oncall")
    status = daemon.api("/status", TOKENS["operator.oncall"])
    assert status["kill_switch"]["state"] == "tripped_flat"
    assert status["kill_switch"]["reason"] == "browser drill"
    assert status["kill_switch"]["who"].endswith(", token operator.oncall")
    assert status["markets"][0]["open_orders"] == 0
    assert opened.problems == []

    # Journaled like the CLI's kill: the audit page reads it back from the journal.
    page.goto(daemon.base + "/dashboard/audit")  # same tab: the token is still there
    expect(page.locator("[data-testid=chain]")).to_have_attribute("data-ok", "true")
    trip = page.locator('[data-testid=kill-row][data-action="trip"]')
    expect(trip).to_contain_text("browser drill")
    expect(trip).to_contain_text("operator")
    expect(trip).to_contain_text("token operator.oncall")
    expect(page.locator('[data-testid=kill-row][data-action="flat"]')).to_have_count(1)
    assert opened.problems == []
    page.close()


def test_resume_needs_an_admin_token(browser: BrowserContext, daemon: Daemon) -> None:
    """After the kill above: an operator's resume is refused, an admin's re-arms."""
    operator = open_page(browser, daemon, "/dashboard", "operator.oncall").page
    expect(operator.locator("[data-testid=kill-state]")).to_have_attribute(
        "data-state", "tripped_flat"
    )
    operator.fill("#reason", "drill over")
    operator.click("#resume")
    expect(operator.locator("#action-result")).to_contain_text(
        "operator.oncall has the operator role; POST /resume needs admin"
    )
    operator.close()
    opened = open_page(browser, daemon, "/dashboard", "admin.alice")
    admin = opened.page
    admin.fill("#reason", "drill over")
    admin.click("#resume")
    expect(admin.locator("#action-result")).to_contain_text("kill switch re-armed")
    expect(admin.locator("[data-testid=kill-state]")).to_have_attribute("data-state", "armed")
    status = daemon.api("/status", TOKENS["viewer.grafana"])
    assert status["kill_switch"]["state"] == "armed"
    assert opened.problems == []
    admin.close()
