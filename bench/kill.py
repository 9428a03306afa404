"""Kill latency against the exchange emulator: kill command to "no open orders" at the venue.

    .venv/bin/python -m bench.kill [--quick] [--drills N]

A real ``backstop run`` process in testnet mode (market-maker strategy, so it always
has quotes out) trades against the in-process Binance emulator replaying the bundled
recording at real time. Each drill: wait until the bot's quotes rest on the emulator,
send ``kill`` over the control socket, and time until the emulator's own book holds
none of our orders; then ``resume`` and repeat. Times are wall clock, measured by the
emulator side (the venue's view is the one that matters).

The baseline is Hummingbot's kill switch, which checks its P&L condition every 10 s:
a trigger waits for the next check, on average 5 s, before any cancel is sent. That
figure is modelled (a uniform wait over the 10 s period plus our own measured cancel
time), not measured: Hummingbot is not installed here.
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
from pathlib import Path

from bench._common import header, percentiles
from bot.clock import ManualClock, WallClock
from bot.control.client import ControlClient, ControlTarget
from bot.exchange_sim import BinanceSpotEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.feeds.replay import ReplayFeed, bundled_sample_paths

REPO = Path(__file__).resolve().parents[1]
KEY, SECRET = "bench-key", "bench-secret"
EXCHANGE_INFO = REPO / "bot" / "data" / "binance_exchange_info_symbols.json"
POLL_PERIOD_S = 10.0  # Hummingbot's kill switch check interval


async def drills(n: int, state: Path) -> list[float]:
    spot = json.loads(EXCHANGE_INFO.read_text())["spot"]
    async with BinanceSpotEmulator(
        exchange_info=[spot],
        api_key=KEY,
        secret=SECRET,
        clock=WallClock(),
        balances={"BTC": "2", "USDT": "120000"},
    ) as emu:
        changed = asyncio.Event()
        emu.engine.subscribe(lambda _e: changed.set())
        feed = ReplayFeed(bundled_sample_paths(), clock=ManualClock(), speed=1.0, unpaced_s=60)
        market = asyncio.ensure_future(MarketDriver(emu.engine, feed).run())
        config = rehearsal_config(emu, load_toml(REPO / "config" / "paper.toml"), state_dir=state)
        config["strategy"]["name"] = "market-maker"
        config["logging"] = {"format": "json", "level": "warning"}
        path = state.parent / "bench-kill.toml"
        path.write_text(toml_document(config))
        env = {**os.environ, "BACKSTOP_EXCHANGE__API_KEY": KEY, "BACKSTOP_EXCHANGE__SECRET": SECRET}
        daemon = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "backstop"), "run", "--config", str(path),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        def ours_open() -> int:
            return sum(1 for o in emu.engine.open_orders() if o.client_order_id.startswith("bs1-"))

        async def until(predicate: object, within_s: float) -> None:
            async def wait() -> None:
                while not predicate():  # type: ignore[operator]
                    changed.clear()
                    await changed.wait()

            await asyncio.wait_for(wait(), within_s)

        times: list[float] = []
        try:
            target = ControlTarget.for_state_dir(state)
            for i in range(n):
                await until(lambda: ours_open() > 0, 60.0)
                async with ControlClient(target) as control:
                    sent = time.perf_counter()
                    reply = asyncio.ensure_future(control.kill(f"bench drill {i}"))
                    await until(lambda: ours_open() == 0, 10.0)
                    times.append(time.perf_counter() - sent)
                    await reply
                    await control.resume(f"bench drill {i} done")
        finally:
            with contextlib.suppress(ProcessLookupError):
                daemon.terminate()
            await daemon.wait()
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market
        return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 drills (smoke run)")
    parser.add_argument("--drills", type=int, default=20)
    args = parser.parse_args(argv)
    n = 3 if args.quick else args.drills
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp:
        times = asyncio.run(drills(n, Path(tmp) / "state"))
    p50, p99, worst = (x * 1000 for x in percentiles(times))
    rng = random.Random(0)
    modelled = [rng.uniform(0, POLL_PERIOD_S) + t for t in times for _ in range(50)]
    b50, b99, bmax = (x * 1000 for x in percentiles(modelled))
    print(header(f"bench.kill: kill command -> no open order of ours at the venue ({n} drills)"))
    print(f"{'measure':<44}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    ours = "backstop (control socket, emulator on loopback)"
    print(f"{ours:<44}{p50:>10.1f}{p99:>10.1f}{worst:>10.1f}")
    print(f"{'10 s P&L poll, modelled (Hummingbot)':<44}{b50:>10.1f}{b99:>10.1f}{bmax:>10.1f}")
    print(f"{'ratio (baseline / backstop)':<44}{b50 / p50:>10.1f}{b99 / p99:>10.1f}{'':>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
