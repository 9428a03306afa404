"""LocalTestnet mode end to end: the real daemon, real ccxt, real sockets, the local emulator.

The emulator (Binance Spot's REST + websocket protocol) runs in the test's event loop,
replaying the bundled recording; ``backstop run`` runs in its own process with a
testnet config whose ``exchange.urls_override`` points ccxt's sandbox URLs at it. No
bot code knows it is not talking to testnet.binance.vision. Assertions read the
emulator's own books (its order log, balances, trades), not the bot's word.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import e2e_support as e2e
import pytest
from daemon_process import Daemon
from e2e_support import EmulatedTestnet, market_running, run_faster
from futures_support import exchange_info

from bot.clock import WallClock
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import (
    REHEARSAL_TIMEOUT_S,
    load_toml,
    rehearsal_config,
    toml_document,
)
from bot.feeds.replay import bundled_sample_paths
from bot.feeds.stress import StressedFeed, parse_stress_spec
from bot.journal import JournalReader

pytestmark = pytest.mark.e2e

KEY, SECRET = "e2e-key", "e2e-secret"
SYMBOL, RAW = "BTC/USDT", "BTCUSDT"
REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "config" / "paper.toml"
# The emulator's account holds exactly the configured reserve, so the bot's inventory
# and the venue's balances must agree to the last satoshi, not within a tolerance.
RESERVE = {"BTC": "2", "USDT": "120000"}
ORDER_KEY = "POST /api/v3/order"
ORDER_POST = ("POST", "/api/v3/order")
SPEED = 3.0
"""The emulator replays the recording at 3x: a minute of market in twenty seconds."""
# The recording's sell-off starts about 200 s in; tests skip to just before it.
SKIP_S = 130.0
"""The market-maker tests' market stands still this far in until the daemon watches it."""
HELD_AT_S = 136.0
"""The fracture test's market stands still this far in until the daemon watches it."""
FRACTURE = f"fracture:start_s={HELD_AT_S + e2e.CALM_S:g},hold_s=40,recover_s=40"


def emulated_config(
    emu: BinanceSpotEmulator, state_dir: Path, strategy: str, speed: float
) -> dict[str, Any]:
    """config/paper.toml rehearsed on the emulator (as ``exchange-sim --write-config``),
    its windows and rates fitted to a ``speed`` x market."""
    config = rehearsal_config(emu, load_toml(PAPER), state_dir=state_dir)
    # A generous REST timeout, as on the futures e2e: the rehearsal's 2 s turned a slow
    # loopback reply on a loaded machine into a failed start (exchangeInfo at start-up).
    # The REST fault drill sets its own (its delay fault must outlast it).
    config["exchange"]["timeout_s"] = 10.0
    run_faster(config, speed)
    config["strategy"]["name"] = strategy
    config["risk"]["guards"]["balance_check_s"] = 1.0
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(toml_document(config))
    return path


class LocalTestnet(EmulatedTestnet[BinanceSpotEmulator]):
    def totals(self) -> dict[str, float]:
        return {a: float(b.free + b.locked) for a, b in self.emu.engine.balances.items()}


@asynccontextmanager
async def local_testnet(
    tmp_path: Path,
    *,
    held_at_s: float = 0.0,
    stress: str | None = None,
    strategy: str = "backstop",
    config_changes: Callable[[dict[str, Any]], None] | None = None,
) -> AsyncIterator[LocalTestnet]:
    """The emulated testnet, its market standing still ``held_at_s`` into the recording
    (reached at once) until the daemon watches it (:func:`started`)."""
    spot = exchange_info("spot")
    async with BinanceSpotEmulator(
        exchange_info=[spot], api_key=KEY, secret=SECRET, clock=WallClock(), balances=RESERVE
    ) as emu:
        replay = e2e.held_replay(bundled_sample_paths(), speed=SPEED, held_at_s=held_at_s)
        feed = replay if stress is None else StressedFeed(replay, parse_stress_spec(stress))
        driver = MarketDriver(emu.engine, feed)
        state_dir = tmp_path / "state"
        config = emulated_config(emu, state_dir, strategy, SPEED)
        if config_changes is not None:
            config_changes(config)
        path = write_config(tmp_path / "testnet.toml", config)
        net = LocalTestnet(emu, driver, path, state_dir, KEY, SECRET)
        async with market_running(net, replay=replay, held_at_s=held_at_s):
            yield net


async def started(net: LocalTestnet, secret: str = SECRET) -> Daemon:
    """The daemon, ready (recovered, and flat if tripped) and watching the market."""
    daemon = await net.daemon(secret).start()
    await e2e.watching(net, daemon)
    return daemon


async def test_a_wrong_api_secret_stops_the_daemon_with_one_clear_line(tmp_path: Path) -> None:
    async with local_testnet(tmp_path) as net:
        daemon = await net.daemon(secret="wrong").start()
        try:
            code = await daemon.wait(within_s=60)
        finally:
            await daemon.stop()
        output = "\n".join(daemon.lines)
        assert code == 2, output[-3000:]
        assert "binance refused the API credentials" in output
        assert "Traceback" not in output
        # Refused at the door: not one order was attempted.
        assert not [r for r in net.emu.requests if r[1] == "/api/v3/order"]


async def test_the_daemon_backstops_a_fracture_on_the_emulated_testnet(tmp_path: Path) -> None:
    """The bot quotes into the fracture, one quote fills, and it steps back when calm.

    The fill comes from a taker the test plays (it sells into our best bid once that
    rests at the venue), not from the recording: whether a quote rests when one of the
    recording's sweeps passes is a race with wall-clock scheduling on a loaded machine.
    The recorded sweeps may still add fills; every assertion holds either way.
    """
    async with local_testnet(tmp_path, held_at_s=HELD_AT_S, stress=FRACTURE) as net:
        daemon = await started(net)
        try:
            await daemon.wait_event("detector_transition", state="engaged", within_s=60)
            # The quotes are on the venue's book (its own order log, not the bot's word).
            await net.until(lambda: len(net.ours_open()) > 0, within_s=30, what="quotes rest")
            hit = await e2e.taker_fills(net, RAW, "BUY")
            await daemon.wait_for(
                lambda r: r.get("event") == "detector_transition" and r.get("state") == "calm",
                within_s=90,
                what="the backstop steps back",
            )
            await net.until(lambda: not net.ours_open(), within_s=30, what="quotes withdrawn")
            # The bot's books and the venue's agree exactly (the account is the reserve).
            await books_agree(net)
            daemon.signal(signal.SIGTERM)
            code = await daemon.wait(within_s=30)
        finally:
            await daemon.stop()

        placed = net.ours()
        assert len(placed) >= 4
        assert len({o.client_order_id for o in placed}) == len(placed)
        assert {o.side for o in placed} == {"BUY", "SELL"}  # two-sided
        fills = net.emu.engine.trades
        assert fills
        # The taker's fill reached the bot by the user-data stream and was journaled.
        with JournalReader(net.state_dir / "journal.sqlite") as journal:
            journaled = {str(f["trade_id"]) for f in journal.fills(SYMBOL)}
        assert {str(t.trade_id) for t in hit} <= journaled
        # No guard fired: the book never went stale, balances always agreed.
        assert not daemon.events("guard"), daemon.events("guard")
        assert code == 0, "\n".join(daemon.lines[-30:])
        assert not net.ours_open()


async def books_agree(net: LocalTestnet) -> None:
    """Until the inventory the daemon reports equals the emulator's balances exactly."""

    def same(ours: dict[str, float], venue: dict[str, float]) -> bool:
        return abs(ours["BTC"] - venue["BTC"]) <= 1e-9 and abs(ours["USDT"] - venue["USDT"]) <= 1e-6

    await e2e.books_agree(net, SYMBOL, net.totals, same=same)


async def quoting(net: LocalTestnet, secret: str = SECRET) -> Daemon:
    daemon = await started(net, secret)
    await net.until(lambda: len(net.ours_open()) > 0, within_s=60, what="the bot quotes")
    return daemon


async def market_moves(net: LocalTestnet, events: int) -> None:
    """Let ``events`` more recorded market events reach the venue (and the bot)."""
    await net.driver.wait_applied(net.driver.stats.applied + events)


async def test_kill_flattens_at_the_venue_within_a_second_and_holds_across_a_restart(
    tmp_path: Path,
) -> None:
    async with local_testnet(tmp_path, held_at_s=SKIP_S, strategy="market-maker") as net:
        daemon = await quoting(net)
        try:
            loop = asyncio.get_running_loop()
            async with net.control() as control:
                sent = loop.time()
                reply = asyncio.ensure_future(control.kill("e2e drill"))
                await net.until(lambda: not net.ours_open(), within_s=5, what="flat at the venue")
                flat_s = loop.time() - sent
                result = await reply
            placed = len(net.ours())
            await market_moves(net, 300)  # ~3 s of market: the bot must stay out of it
            assert len(net.ours()) == placed
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(within_s=30) == 0
        finally:
            await daemon.stop()
        assert flat_s < 1.0, f"kill to flat took {flat_s:.3f} s"
        assert "none of ours left open" in result["message"]

        again = await started(net)
        try:
            async with net.control() as control:
                status = await control.status()
            await market_moves(net, 300)
            assert len(net.ours()) == placed  # still halted: nothing placed after restart
            again.signal(signal.SIGTERM)
            await again.wait(within_s=30)
        finally:
            await again.stop()
        assert status["kill_switch"]["state"] == "tripped_flat"
        assert status["kill_switch"]["reason"] == "e2e drill"


async def test_after_sigkill_a_restart_finds_its_orders_and_the_fills_it_missed(
    tmp_path: Path,
) -> None:
    async with local_testnet(tmp_path, held_at_s=SKIP_S, strategy="market-maker") as net:
        daemon = await quoting(net)
        await net.until(lambda: len(net.ours_open()) >= 4, within_s=30, what="a full ladder")
        daemon.signal(signal.SIGKILL)
        await daemon.wait(within_s=30)
        await daemon.stop()
        resting = net.ours_open()
        assert resting, "the crash left orders on the book"

        # While the bot is down its quotes keep working: one fills completely, one in part.
        full, part = resting[0], resting[1]
        net.emu.engine.fill_resting(full.order_id, full.remaining)
        net.emu.engine.fill_resting(part.order_id, part.remaining / 2)
        missed = {
            t.trade_id
            for t in net.emu.engine.trades
            if t.order_id in (full.order_id, part.order_id)
        }

        again = await started(net)
        try:
            recovered = again.events("recovered")[0]["markets"][SYMBOL]
            async with net.control() as control:
                await control.kill("freeze to compare the books")
            await books_agree(net)
            again.signal(signal.SIGTERM)
            await again.wait(within_s=30)
        finally:
            await again.stop()

        assert recovered["fills_missed"] >= len(missed)
        assert recovered["adopted"] >= 1  # its resting quotes, found by client id
        assert recovered["canceled"] == 0  # all of them known from the journal
        assert not net.ours_open()
        with JournalReader(net.state_dir / "journal.sqlite") as journal:
            journaled = {str(f["trade_id"]) for f in journal.fills(SYMBOL)}
        assert {str(t) for t in missed} <= journaled


def order_posts(net: LocalTestnet) -> list[int]:
    return [status for method, path, status in net.emu.requests if (method, path) == ORDER_POST]


async def wanted_again(net: LocalTestnet) -> None:
    """Make the bot want to place an order now, whatever the market does: the venue
    cancels one of its resting quotes (as an exchange may), and the strategy, whose
    desired quotes have not changed, puts it back."""
    await net.until(lambda: bool(net.ours_open()), within_s=30, what="a resting quote")
    order = net.ours_open()[0]
    net.emu.engine.cancel(RAW, order.order_id, None)


def journaled(net: LocalTestnet) -> dict[str, dict[str, Any]]:
    """Each order's latest state in the daemon's journal (read while it runs)."""
    with JournalReader(net.state_dir / "journal.sqlite") as journal:
        return journal.order_states(SYMBOL)


async def lookups_settled(net: LocalTestnet, timed_out: str) -> None:
    """Until the journal has the timed-out create under the venue's id and the 503'd
    one given up as never placed: the bot's lookups (after the timeout, then a backoff
    per "not found") are done. The journal is read again after each REST request the
    venue serves (the balance check's come every second)."""
    served = -1

    def settled() -> bool:
        nonlocal served
        if len(net.emu.requests) == served:
            return False
        served = len(net.emu.requests)
        states = journaled(net)
        found = states.get(timed_out, {}).get("exchange_id") is not None
        return found and any(s["state"] == "rejected" for s in states.values())

    await net.until(settled, within_s=60, what="the timed-out and the 503'd creates settled")


def short_timeout(config: dict[str, Any]) -> None:
    config["exchange"]["timeout_s"] = REHEARSAL_TIMEOUT_S


async def test_rest_faults_cost_no_order_its_identity_and_bring_no_ban(tmp_path: Path) -> None:
    async with local_testnet(
        tmp_path, held_at_s=SKIP_S, strategy="market-maker", config_changes=short_timeout
    ) as net:
        daemon = await quoting(net)
        try:
            # A burst of 429s on order entry: the bot backs off and comes back.
            net.emu.faults.rate_limit_next(ORDER_KEY, n=3, retry_after_s=1)
            await wanted_again(net)
            await net.until(
                lambda: order_posts(net).count(429) == 3 and order_posts(net)[-1] == 200,
                within_s=30,
                what="three 429s, then an order accepted",
            )
            # It waited out Retry-After: the emulator bans a client that does not (418).
            assert net.emu.bans.bans == 0
            # A create that executes but whose reply never comes back in time (ccxt
            # times out after exchange.timeout_s = 2 s) ...
            placed_before = len(net.ours())
            net.emu.faults.delay_next(ORDER_KEY, n=1, seconds=3.0)
            await wanted_again(net)
            await net.until(lambda: len(net.ours()) > placed_before, within_s=30, what="a create")
            timed_out = net.ours()[placed_before]
            # ... and one that a gateway refuses with a 503 before the venue sees it.
            net.emu.faults.fail_next(ORDER_KEY, n=1, status=503)
            await wanted_again(net)
            await net.until(
                lambda: 503 in order_posts(net) and order_posts(net)[-1] == 200,
                within_s=30,
                what="a 503, then an order accepted",
            )
            await lookups_settled(net, timed_out.client_order_id)
            async with net.control() as control:
                await control.kill("end of the fault drill")
            daemon.signal(signal.SIGTERM)
            await daemon.wait(within_s=30)
        finally:
            await daemon.stop()

        statuses = [status for _, _, status in net.emu.requests]
        assert 418 not in statuses  # backed off: never banned
        assert not net.ours_open()
        venue = {o.client_order_id: o for o in net.ours()}
        with JournalReader(net.state_dir / "journal.sqlite") as journal:
            states = journal.order_states(SYMBOL)
        # Every order the venue holds is one the bot journaled, under the venue's id.
        for cid, order in venue.items():
            assert cid in states, f"{cid} is on the venue but unknown to the bot"
            assert states[cid].get("exchange_id") == str(order.order_id)
        # The timed-out create was found, not re-sent under another id.
        assert states[timed_out.client_order_id]["state"] in ("canceled", "filled")
        # Orders the bot gave up as never placed are indeed not on the venue.
        never = [cid for cid, s in states.items() if s["state"] == "rejected"]
        assert all(cid not in venue for cid in never)
        assert never, "the 503'd create is journaled as never placed"


def another(daemon: Daemon, event: str, **fields: Any) -> Callable[[], Awaitable[None]]:
    """An awaitable for the next log record ``event`` (with ``fields``) from now on."""

    def count() -> int:
        return sum(
            1
            for r in daemon.records
            if r.get("event") == event and all(r.get(k) == v for k, v in fields.items())
        )

    seen = count()

    async def wait() -> None:
        await daemon.wait_for(lambda _r: count() > seen, within_s=30, what=f"another {event}")

    return wait


async def test_stream_faults_resync_the_book_and_the_order_stream(tmp_path: Path) -> None:
    async with local_testnet(tmp_path, held_at_s=SKIP_S, strategy="market-maker") as net:
        daemon = await quoting(net)
        try:
            # Every websocket cut at once: market data and the private order stream.
            reconnected = another(daemon, "feed_status", state="connected")
            reconciled = another(daemon, "reconciled")
            net.emu.faults.drop_websockets()
            await reconnected()
            await reconciled()  # orders re-listed: nothing the dead stream carried is lost
            placed = len(net.ours())
            await net.until(lambda: len(net.ours()) > placed, within_s=30, what="quoting again")

            # A missing diff: the book must be rebuilt from a fresh snapshot.
            resyncing = another(daemon, "feed_status", state="resyncing")
            reconnected = another(daemon, "feed_status", state="connected")
            net.emu.faults.depth_gap(RAW)
            await resyncing()
            await reconnected()
            placed = len(net.ours())
            await net.until(lambda: len(net.ours()) > placed, within_s=30, what="quoting again")
            daemon.signal(signal.SIGTERM)
            await daemon.wait(within_s=30)
        finally:
            await daemon.stop()
        # Quoting paused while the feed was down and came back by itself ...
        guards = {(g["guard"], g["action"]) for g in daemon.events("guard")}
        assert guards <= {("feed_disconnected", "pause"), ("invalid_book", "pause")}, guards
        assert len(daemon.events("market_resumed")) >= len(daemon.events("market_paused"))
        # ... and never quoted on a broken book: no post-only order crossed the market.
        assert not daemon.events("order_action_failed"), daemon.events("order_action_failed")
        assert not net.ours_open()
