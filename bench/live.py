"""Tick to trade on loopback: the venue's message -> the bot's first order at the venue.

    .venv/bin/python -m bench.live [--quick] [--drills N]

``bench/reaction.py`` times the engine in-process, in paper mode. This times what a
live bot adds around it, through the real parts: a ``backstop run`` process in testnet
mode (``config/paper.toml``'s backstop strategy) trading against the in-process
Binance emulator on 127.0.0.1, which replays the bundled recording at real time with
the ``fracture`` overlay. Each drill is a fresh emulator and daemon; the recording is
skipped quickly to ``LEAD_S`` before its fracture (a different one per drill), so the
bot connects and warms its baseline on a real-time market.

Measured on the emulator's side, on the wall clock the bot stamps its journal with:

* from: the emulator publishing the depth diff whose update id (Binance's ``u``) the
  bot names in its ``detector_transition`` log line when it engages: the message that
  moved it (the daemon logs the book's update id for this);
* to: the emulator accepting the bot's first order after it (its engine's ``NEW``),
  and the last order of that first ladder: the orders the daemon handed to ccxt before
  any of them came back (its journal's first run of ``submitted`` records after the
  episode's start), matched to the emulator's acceptances by client order id. A
  requote a few hundred ms later is the next decision's, not this ladder's.

That is the websocket on loopback, ccxt.pro's handler and order book, the live feed's
copy into our book, the engine and the strategy, the order manager, ccxt's
``create_order`` (request building, HMAC signing, aiohttp) and the emulator's request
handling. A ladder's later orders share the daemon's loop and ccxt's limiter with the first.

Baselines: the same path on a 1-second clock tick (Hummingbot's strategies act on
``Clock`` ticks of ``tick_size`` = 1 s), modelled: a uniform wait over the second, plus
our measured time; and, run, the same drills with ``exchange.keep_warm_s = 0``: the
order connection then is whatever aiohttp kept (it closes idle ones after 15 s), so the
first order of an episode opens a new one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import REPO, header, percentiles
from bot.clock import ManualClock, WallClock
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchange_sim.events import DepthDiff, OrderChanged, VenueEvent
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.feeds.replay import ReplayFeed, bundled_sample_paths
from bot.feeds.stress import StressedFeed, parse_stress_spec
from bot.journal.reader import JournalReader

KEY, SECRET = "bench-key", "bench-secret"
EXCHANGE_INFO = REPO / "bot" / "data" / "binance_exchange_info_symbols.json"
RESERVE = {"BTC": "2", "USDT": "120000"}
PREFIX = "bs1-"
"""Client order id prefix of the bot's orders."""
LEAD_S = 25.0
"""Recording replayed at real time before the fracture: the daemon starts (~3-5 s),
then its detector builds a baseline on the rest."""
BASELINE_WINDOW_S = 10.0
"""The detector's baseline window, shortened from config/paper.toml's 60 s so a drill
does not take minutes; the latency does not depend on it."""
FIRST_FRACTURE_S, LAST_FRACTURE_S = 90.0, 600.0
LADDER_GAP_S = 0.5
TICK_S = 1.0


@dataclass
class Drill:
    fracture_s: float
    update_id: int
    to_first_ns: int
    to_last_ns: int
    orders: int
    received_ns: int
    """Sent -> the bot's feed stamped the book it engaged on (its episode's start)."""
    submitted_ns: int
    """Sent -> the bot's order manager handed its first order to ccxt (journal)."""
    arrived_ns: int
    """Sent -> the first order request reached the emulator's HTTP handler."""


@dataclass
class _Venue:
    """What the emulator saw, stamped as it happened."""

    sent_ns: dict[int, int] = field(default_factory=dict)
    """Depth diff ``last_id`` -> when the emulator published it."""
    accepted_ns: dict[str, int] = field(default_factory=dict)
    """Client order id -> when the emulator accepted that order (in acceptance order)."""
    arrived_ns: list[int] = field(default_factory=list)
    """When each order request reached the emulator's HTTP handler, in order."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_request(self, key: str, _request: object) -> None:
        if key == "POST /api/v3/order":
            self.arrived_ns.append(time.time_ns())

    def on_event(self, event: VenueEvent) -> None:
        # The bot's journal stamps on the same clock (WallClock), in its own process.
        now = time.time_ns()
        if isinstance(event, DepthDiff):
            self.sent_ns[event.last_id] = now
        elif (
            isinstance(event, OrderChanged)
            and event.execution == "NEW"
            and event.order.client_order_id.startswith(PREFIX)
        ):
            self.accepted_ns[event.order.client_order_id] = now
        self.changed.set()

    async def more(self, count: Any) -> bool:
        """Whether ``count()`` grows within :data:`LADDER_GAP_S`."""
        before = count()
        try:
            await asyncio.wait_for(self._grown(count, before), LADDER_GAP_S)
        except TimeoutError:
            return False
        return True

    async def _grown(self, count: Any, before: int) -> None:
        while count() <= before:
            self.changed.clear()
            await self.changed.wait()

    async def until(self, predicate: Any, within_s: float, what: str) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), within_s)
        except TimeoutError:
            raise SystemExit(f"bench.live: not within {within_s:g} s: {what}") from None


def drill_config(emu: BinanceSpotEmulator, state: Path, *, warm: bool) -> dict[str, Any]:
    config = rehearsal_config(emu, load_toml(REPO / "config" / "paper.toml"), state_dir=state)
    config["markets"][0]["baseline_window_s"] = BASELINE_WINDOW_S
    if not warm:
        config["exchange"]["keep_warm_s"] = 0
    config["logging"] = {"format": "json", "level": "info"}
    return config


async def _read_engaged(stderr: asyncio.StreamReader, lines: list[str]) -> int:
    """The update id of the book the daemon engaged on (from its JSON log)."""
    async for raw in stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        if '"detector_transition"' not in line:
            continue
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if record.get("state") == "engaged" and record.get("update_id") is not None:
                return int(record["update_id"])
    raise SystemExit("bench.live: the daemon exited before engaging:\n" + "".join(lines[-30:]))


async def drill(fracture_s: float, tmp: Path, *, warm: bool = True) -> Drill:
    spot = json.loads(EXCHANGE_INFO.read_text())["spot"]
    venue = _Venue()
    async with BinanceSpotEmulator(
        exchange_info=[spot], api_key=KEY, secret=SECRET, clock=WallClock(), balances=RESERVE
    ) as emu:
        emu.engine.subscribe(venue.on_event)
        emu.on_request = venue.on_request
        data_clock = ManualClock()
        skip_s = fracture_s - LEAD_S
        replay = ReplayFeed(bundled_sample_paths(), clock=data_clock, speed=1.0, unpaced_s=skip_s)
        feed = StressedFeed(replay, parse_stress_spec(f"fracture:start_s={fracture_s:g}"))
        market = asyncio.ensure_future(MarketDriver(emu.engine, feed).run())
        path = tmp / "live.toml"
        path.write_text(toml_document(drill_config(emu, tmp / "state", warm=warm)))
        daemon: asyncio.subprocess.Process | None = None
        lines: list[str] = []
        try:
            # The venue has a book and the market runs at real time before the bot connects.
            first = replay.stats

            def at_lead() -> bool:
                return (
                    first.first_ts_ns is not None
                    and data_clock.now_ns() >= first.first_ts_ns + skip_s * 1e9
                )

            await venue.until(at_lead, 120.0, f"the market reaches {skip_s:g} s")
            env = {"BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": SECRET}
            daemon = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "backstop"), "run", "--config", str(path),
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert daemon.stderr is not None
            update_id = await asyncio.wait_for(_read_engaged(daemon.stderr, lines), LEAD_S + 30)
            sent = venue.sent_ns.get(update_id)
            if sent is None:
                raise SystemExit(f"bench.live: no depth diff with update id {update_id}")
            await venue.until(
                lambda: any(t > sent for t in venue.accepted_ns.values()),
                10.0,
                "an order after the trigger",
            )
            # Give the rest of the first ladder time to arrive: orders until a gap of
            # LADDER_GAP_S (which of them were the ladder, the journal says below).
            while await venue.more(lambda: sum(t > sent for t in venue.accepted_ns.values())):
                pass
        finally:
            if daemon is not None:
                with contextlib.suppress(ProcessLookupError):
                    daemon.terminate()
                await daemon.wait()
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market
    received, submitted, batch = journal_stamps(tmp / "state" / "journal.sqlite")
    arrived = next(t for t in venue.arrived_ns if t > submitted)
    ladder = sorted(venue.accepted_ns[c] for c in batch if c in venue.accepted_ns)
    if not ladder:
        raise SystemExit(f"bench.live: none of the first ladder's orders {batch} was accepted")
    return Drill(
        fracture_s,
        update_id,
        to_first_ns=ladder[0] - sent,
        to_last_ns=ladder[-1] - sent,
        orders=len(ladder),
        received_ns=received - sent,
        submitted_ns=submitted - sent,
        arrived_ns=arrived - sent,
    )


def journal_stamps(path: Path) -> tuple[int, int, list[str]]:
    """(the first episode's start, its first order's submission, the client ids of its
    first ladder) from the daemon's journal, on its clock."""
    with JournalReader(path) as journal:
        episodes = journal.episodes()
        if not episodes:
            raise SystemExit("bench.live: the daemon journaled no episode")
        start = int(episodes[0]["start_ts_ns"])
        batch = first_ladder(journal.orders(since_ns=start))
    if not batch:
        raise SystemExit("bench.live: the daemon journaled no order after its episode started")
    return start, batch[0][0], [client_id for _, client_id in batch]


def first_ladder(orders: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(submission stamp, client id) of the orders the bot handed to the venue before
    any of them came back: the first run of ``submitted`` records in ``orders`` (journal
    order). The order manager sends a decision's creates in one go, so an acceptance,
    a cancel or a later decision's submissions all come after that run."""
    batch: list[tuple[int, str]] = []
    for record in orders:
        if record.get("event") == "submitted":
            batch.append((int(record["ts_ns"]), str(record["client_id"])))
        elif batch:
            break
    return batch


def fractures(n: int) -> list[float]:
    if n == 1:
        return [FIRST_FRACTURE_S]
    step = (LAST_FRACTURE_S - FIRST_FRACTURE_S) / (n - 1)
    return [round(FIRST_FRACTURE_S + i * step, 1) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 drill, no baseline drills")
    parser.add_argument("--drills", type=int, default=5, help="drills of each kind (5)")
    args = parser.parse_args(argv)
    n = 1 if args.quick else args.drills
    if n < 1:
        parser.error("--drills must be >= 1")
    results: list[Drill] = []
    cold: list[Drill] = []
    t0 = time.perf_counter()
    for at in fractures(n):
        with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
            results.append(asyncio.run(drill(at, Path(tmp))))
        if not args.quick:
            with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
                cold.append(asyncio.run(drill(at, Path(tmp), warm=False)))
    wall = time.perf_counter() - t0
    print(header("bench.live: tick to trade on loopback (bench/live.py)"))
    print(
        f"{n} drill(s) of each kind, {wall:.0f} s: backstop run (testnet mode, "
        f"config/paper.toml) against the Binance emulator on 127.0.0.1, fracture at "
        f"{results[0].fracture_s:g}..{results[-1].fracture_s:g} s of the recording; "
        "times on the emulator's side"
    )
    print(f"{'measure':<52}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    first = [d.to_first_ns / 1e6 for d in results]
    last = [d.to_last_ns / 1e6 for d in results]
    rng = random.Random(0)
    tick = [rng.uniform(0, TICK_S * 1e3) + t for t in first for _ in range(50)]
    received = [d.received_ns / 1e6 for d in results]
    submitted = [(d.submitted_ns - d.received_ns) / 1e6 for d in results]
    arrived = [(d.arrived_ns - d.submitted_ns) / 1e6 for d in results]
    accepted = [(d.to_first_ns - d.arrived_ns) / 1e6 for d in results]
    rows: list[tuple[str, list[float]]] = [
        ("trigger message sent -> first order accepted", first),
        ("trigger message sent -> last order of that ladder", last),
        ("first order on a 1 s clock tick, modelled (baseline)", tick),
        ("  of which: sent -> the bot's feed has the book", received),
        ("  the bot's book -> first order handed to ccxt", submitted),
        ("  handed to ccxt -> the request reaches the venue", arrived),
        ("  the venue's HTTP handler -> order accepted", accepted),
    ]
    if cold:
        rows += [
            (
                "first order, connections not kept warm (baseline)",
                [d.to_first_ns / 1e6 for d in cold],
            ),
            (
                "  of which: handed to ccxt -> request at the venue",
                [(d.arrived_ns - d.submitted_ns) / 1e6 for d in cold],
            ),
        ]
    for label, values in rows:
        p50, p99, worst = percentiles(values)
        print(f"{label:<52}{p50:>10.2f}{p99:>10.2f}{worst:>10.2f}")
    b50, b99, _ = percentiles(tick)
    o50, o99, _ = percentiles(first)
    print(f"{'ratio (baseline / ours), first order':<52}{b50 / o50:>10.0f}{b99 / o99:>10.0f}")
    print(f"orders in the first ladder: {', '.join(str(d.orders) for d in results)}")
    if cold:
        c50 = percentiles([d.to_first_ns / 1e6 for d in cold])[0]
        print(
            f"keep-warm (exchange.keep_warm_s) vs aiohttp's 15 s keep-alive alone: first order "
            f"p50 {o50:.2f} vs {c50:.2f} ms on loopback, where a new connection is one TCP "
            "handshake; to a real venue it is TCP + TLS, two or three round trips"
        )
    print(
        "of which: from the daemon's journal (its episode's start: the feed's stamp on the "
        "book it engaged on; its first order's 'submitted'); the websocket and ccxt.pro's "
        "handler are in the first part, the engine in the second, ccxt's create_order "
        "(rate limiter, signing, aiohttp), loopback HTTP and the emulator process getting "
        "to the request (it replays the market meanwhile) in the third, the emulator's "
        "request handling in the last"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
