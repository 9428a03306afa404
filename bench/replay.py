"""Replay benchmark: the whole pipeline on the bundled recording, and many markets at 10x.

    .venv/bin/python -m bench.replay [--quick] [--reps N] [--markets N] [--seconds S]

Part 1, throughput: the bundled Binance spot BTCUSDT sample (650 s, 99,574 websocket
messages: 6,495 depth diffs + 1 snapshot, 19,904 trades and 73,174 bookTicker messages
the bot reads and skips) replayed as fast as possible through everything ``backstop
run --config config/paper.toml`` builds (``bot.app.assemble``): read + gzip + parse +
depth sync, book, depth monitor, detector, backstop strategy, budget, risk, order
manager, paper venue, journal (SQLite, FULL sync) and the JSON logger (to /dev/null).
No stress overlay, so the detector stays calm and the strategy decides "no quotes" on
every update: this is the cost of watching. Rows:

* ``full pipeline``: messages (lines) per second and events (depth + trades) per second;
* ``feed only``: the replay's read + parse + sync alone, no engine (the floor);
* ``ccxt.pro binance`` (baseline): the same files read the same way, each depth and trade
  message handed to ccxt.pro's own Binance websocket handler
  (``Client.handle_text_or_binary_message``: orjson decode, ``handle_order_book`` with
  its sequence checks and ``OrderBook`` updates, ``handle_trade`` into its trade cache),
  the snapshot applied through its ``fetch_order_book_snapshot``. That is what a ccxt
  bot spends to keep a book and a trade list, before any strategy runs.
* ``live feed``: what ``backstop run`` on an exchange spends before its engine: the
  same ccxt.pro handlers, then, per message, what ``LiveFeed`` does when
  ``watch_order_book``/``watch_trades`` resolve: the synced book's top 1,000 levels a
  side copied out into our order book, each new trade converted and deduplicated
  (every message resolves here; a busy live bot skips to the latest book instead).

Throughput is the median of ``--reps`` passes; each workload runs in its own child
process, whose peak RSS (``ru_maxrss``: imports included) is reported.

Part 2, many markets: ``--markets N`` copies of the first ``--seconds`` of the recording,
one per market ``X00/USDT``, ``X01/USDT``, ... (the text ``BTCUSDT`` renamed, each copy's
receive times shifted by ``i x 100 ms / N`` so the copies interleave instead of arriving
in lockstep; market definitions cloned from the bundled BTC/USDT one), with the
``fracture`` overlay on every market at ``start_s`` 65, all in one process at 10x the
recorded message rate. The risk limits that are totals over markets (order rate and
burst, total notional) are scaled by N, so every market can quote. Reaction latency
is measured as in ``bench/reaction.py`` and counted from each message's *scheduled*
arrival: time spent queued behind other markets' messages is included. Baseline: the
same run with one market. It runs twice: once with every depth message handed to the
engine (the worst case: a replay's), and once with the depth messages of a market that
arrived while the bot was busy conflated into one, as the live feed does (it copies
ccxt.pro's synced book whenever ``watch_order_book`` resolves, so a busy bot sees the
latest book, not each diff; :func:`bench.reaction.instrument`). A conflated update is
charged from its oldest message's arrival and with the parse time of all of them.
The conflated run is repeated with the markets split over two processes of N/2 (every
other copy each), started together, as a fleet of daemons would run them: the
"markets in parallel" option, on this machine's two cores. And once more assembled
without trading (feed, books and depth samples, as ``backstop book`` runs), timed to
the depth sample: the floor that parsing and queueing alone set, below which no
strategy or engine design can go. Each run reports the engine thread's busy share,
the engine time per event, and how bursty the schedule is (events due per 10 ms:
the copies' trade bursts coincide, as a market-wide move's do).

The events are read and rewritten by the overlay before each run
(:func:`bench.reaction.preload`) and handed over from memory, each keeping the
processor busy for its measured read + parse time: the overlay's own work, as much CPU
as the bot's at 50 markets, does not compete with the bot as it did when read live.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from bench._common import REPO, devnull_logger, header, paper_settings, percentiles, row
from bench.reaction import FIRST_START_S, Probe, collect, instrument, preload
from bot.feeds.replay import BUNDLED_SAMPLE, bundled_sample_paths

SPEED = 10.0
SHARDS = 2
"""Processes the sharded run splits the markets over: one per core here."""
_CHUNK = 1 << 18


def _freeze() -> None:
    """As ``backstop run`` does after start-up (bot/cli.py): the long-lived objects built
    so far are frozen out of the collector's reach."""
    gc.collect()
    gc.freeze()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------- children


async def _full_once(seconds: float | None) -> dict[str, Any]:
    from bot.app import assemble

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        feed: dict[str, Any] = {} if seconds is None else {"duration_s": seconds}
        settings = paper_settings(Path(tmp), feed=feed, control={"enabled": False})
        run = await assemble(settings, log=devnull_logger(settings))
        _freeze()
        t0 = time.perf_counter()
        try:
            await run.execute()
        finally:
            gc.unfreeze()
        wall = time.perf_counter() - t0
    stats: Any = run.feed.stats  # type: ignore[attr-defined]
    return {"wall": wall, "lines": stats.lines, "events": stats.total_events}


async def _feed_once(seconds: float | None) -> dict[str, Any]:
    from bot.clock import ManualClock
    from bot.feeds.replay import ReplayFeed

    feed = ReplayFeed(bundled_sample_paths(), clock=ManualClock(), duration_s=seconds)
    t0 = time.perf_counter()
    async for _ in feed.events():
        pass
    wall = time.perf_counter() - t0
    return {"wall": wall, "lines": feed.stats.lines, "events": feed.stats.total_events}


def _lines(path: Path) -> Iterator[bytes]:
    with gzip.GzipFile(path, "rb") as f:
        rest = b""
        while chunk := f.read1(_CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


async def _live_once(seconds: float | None) -> dict[str, Any]:
    """The live feed's path: ccxt.pro's handlers, then the feed's copy into our book."""
    return await _ccxt_once(seconds, live=True)


async def _ccxt_once(seconds: float | None, *, live: bool = False) -> dict[str, Any]:
    """ccxt.pro's Binance handlers on the recorded depth and trade messages; with
    ``live``, each handled message then goes where ``LiveFeed`` takes it: the synced
    book copied out (``LiveFeed._to_snapshot``) into our order book, each new trade
    converted (``LiveFeed._to_trade``, deduplicated by id). The handler's own time is
    also summed per message kind (``handler_us``: mean per depth diff and per trade)."""
    import random as _random

    import ccxt.pro

    from bot.book import OrderBook
    from bot.clock import WallClock
    from bot.feeds.live import LiveFeed, _RecentIds
    from bot.markets import offline_markets

    ex = ccxt.pro.binance({"enableRateLimit": False})
    clock = WallClock()
    feed = LiveFeed(ex, ["BTC/USDT"], clock=clock, rng=_random.Random(0))
    stats = feed.stats.symbols["BTC/USDT"]
    ours = OrderBook("BTC/USDT", clock=clock)
    seen = _RecentIds(maxlen=4096)
    markets = offline_markets("binance") or {}
    ex.set_markets(list(markets.values()))
    symbol = "BTC/USDT"
    client = ex.client("wss://stream.binance.com:9443/stream")
    ex.orderbooks[symbol] = ex.order_book({}, 1000)  # as watch_order_book does
    subscription = {"symbol": symbol, "limit": 1000, "type": "spot", "params": {}}
    handle = client.handle_text_or_binary_message
    n_lines = n_events = 0
    handled = {"depth": 0, "trade": 0}  # ns in ccxt.pro's handler, per message kind
    counted = {"depth": 0, "trade": 0}
    end_ns: int | None = None
    t0 = time.perf_counter()
    for path in bundled_sample_paths():
        for line in _lines(path):
            n_lines += 1
            sp = line.find(b" ")
            ts = int(line[:sp])
            if end_ns is None and seconds is not None:
                end_ns = ts + int(seconds * 1e9)
            if end_ns is not None and ts > end_ns:
                break
            body = line[sp + 1 :]
            if b"@bookTicker" in body[:40]:
                continue  # not subscribed by a ccxt bot watching the book and trades
            n_events += 1
            if body.startswith(b'{"lastUpdateId"'):
                snap = json.loads(body)
                book = ex.parse_order_book(snap, symbol)
                book["nonce"] = snap["lastUpdateId"]

                async def rest(*_: Any, _book: Any = book) -> Any:
                    return _book

                ex.fetch_rest_order_book_safe = rest
                await ex.fetch_order_book_snapshot(client, None, subscription)
            else:
                text = body.decode()
                h0 = time.perf_counter_ns()
                handle(text)
                took = time.perf_counter_ns() - h0
                if b"depthUpdate" in body[:80]:
                    handled["depth"] += took
                    counted["depth"] += 1
                else:
                    handled["trade"] += took
                    counted["trade"] += 1
                if not live:
                    continue
                if b"depthUpdate" in body[:80]:
                    snap = feed._to_snapshot(stats, symbol, ex.orderbooks[symbol])
                    if snap is not None and snap.bids.size and snap.asks.size:
                        ours.apply(snap)
                elif symbol in ex.trades:
                    trade = ex.trades[symbol][-1]
                    feed._to_trade(stats, symbol, trade, clock.now_ns(), seen)
    wall = time.perf_counter() - t0
    book = ex.orderbooks[symbol]
    if book["nonce"] is None or not book["bids"]:
        raise SystemExit("ccxt baseline: the order book never synced")
    await ex.close()
    per_message_us = {k: handled[k] / counted[k] / 1e3 if counted[k] else 0.0 for k in handled}
    return {"wall": wall, "lines": n_lines, "events": n_events, "handler_us": per_message_us}


def _reps(kind: str, reps: int, seconds: float | None) -> dict[str, Any]:
    once = {"full": _full_once, "feed": _feed_once, "ccxt": _ccxt_once, "live": _live_once}[kind]
    walls: list[float] = []
    last: dict[str, Any] = {}
    for _ in range(reps):
        last = asyncio.run(once(seconds))
        walls.append(last["wall"])
    last["wall"] = statistics.median(walls)
    last["walls"] = walls
    return last


# ----------------------------------------------------------------------------- markets


def market_symbol(i: int) -> tuple[str, str]:
    """Unified symbol and Binance id of copy ``i``."""
    return f"X{i:02d}/USDT", f"X{i:02d}USDT"


def write_copies(
    n: int, seconds: float, out: Path, copies: Sequence[int] | None = None
) -> list[Path]:
    """Renamed, time-shifted copies ``copies`` (default: all) of ``n``, of the first
    ``seconds`` of the recording (uncompressed), one file per market."""
    shift = int(100_000_000 / n)  # 100 ms (one depth interval) spread over the copies
    src: list[bytes] = []
    end_ns: int | None = None
    for path in bundled_sample_paths():
        for line in _lines(path):
            if not line:
                continue
            ts = int(line[: line.find(b" ")])
            end_ns = end_ns or ts + int(seconds * 1e9)
            if ts > end_ns:
                break
            src.append(line)
    paths = []
    for i in range(n) if copies is None else copies:
        _, raw = market_symbol(i)
        up, low = raw.encode(), raw.lower().encode()
        path = out / f"{raw.lower()}.txt"
        with path.open("wb") as f:
            for line in src:
                sp = line.find(b" ")
                ts = int(line[:sp]) + i * shift
                body = line[sp:].replace(b"BTCUSDT", up).replace(b"btcusdt", low)
                f.write(b"%d%s\n" % (ts, body))
        paths.append(path)
    return paths


def cloned_markets(n: int) -> dict[str, dict[str, Any]]:
    from bot.markets import offline_markets

    known = offline_markets("binance") or {}
    btc = known["BTC/USDT"]
    out = dict(known)
    for i in range(n):
        symbol, raw = market_symbol(i)
        m = json.loads(json.dumps(btc))
        base = symbol.split("/")[0]
        m.update(id=raw, lowercaseId=raw.lower(), symbol=symbol, base=base, baseId=base)
        m["info"]["symbol"], m["info"]["baseAsset"] = raw, base
        out[symbol] = m
    return out


async def _markets_once(
    n: int,
    seconds: float,
    conflate: bool = False,
    shard: tuple[int, int] | None = None,
    speed: float = SPEED,
    floor: bool = False,
) -> dict[str, Any]:
    """``n`` markets in this process; ``shard`` (k, of): this process is the k-th of
    ``of`` sharing the copies of n x of markets (every of-th copy). Once set up it says
    ``ready`` on stdout and starts replaying at the ``time.time()`` read from stdin, so
    that the shards' timelines start together (:func:`measure_shards`).

    ``floor``: assembled without trading (feed, books and depth samples only, as
    ``backstop book`` runs); ``decision_ns`` is then message -> depth sample, the part
    of the reaction that no strategy or engine design can take away."""
    import bot.app
    from bot.feeds.stress import parse_stress_spec
    from bot.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="bench-markets-") as tmp:
        if shard is None:
            files = write_copies(n, seconds, Path(tmp))
        else:
            k, of = shard
            files = write_copies(n * of, seconds, Path(tmp), range(k, n * of, of))
        base = load_settings(REPO / "config" / "paper.toml", env={})
        market = base.markets[0].model_dump(mode="json")
        risk = base.risk
        copies = range(n) if shard is None else range(shard[0], n * shard[1], shard[1])
        markets = [dict(market, symbol=market_symbol(i)[0]) for i in copies]
        settings = paper_settings(
            Path(tmp),
            markets=markets,
            feed={"replay_files": [str(p) for p in files], "speed": 0},
            control={"enabled": False},
            risk={
                "max_orders_per_second": risk.max_orders_per_second * n,
                "max_order_burst": risk.max_order_burst * n,
                "max_total_notional_quote": max(
                    risk.max_total_notional_quote, risk.max_notional_per_market_quote * n
                ),
            },
        )
        clones = cloned_markets(n if shard is None else n * shard[1])
        with mock.patch.object(bot.app, "offline_markets", return_value=clones):
            spec = parse_stress_spec(f"fracture:start_s={FIRST_START_S:g}")
            run = await bot.app.assemble(
                settings, log=devnull_logger(settings), stress=spec, trade=not floor
            )
            probe = Probe()
            # Read and rewritten by the overlay first: handed over from memory, paced by
            # the probe, each costing its measured parse time.
            events = await preload(settings, spec)
            instrument(run, probe, speed=speed, conflate=conflate, preloaded=events)
            _freeze()
            if shard is not None:
                print("ready", flush=True)
                start_at = float(sys.stdin.readline())
                await asyncio.sleep(max(0.0, start_at - time.time()))
            t0 = time.perf_counter()
            cpu0 = time.thread_time()
            try:
                await run.execute()
            finally:
                gc.unfreeze()
            cpu = time.thread_time() - cpu0
            wall = time.perf_counter() - t0
    res = collect([probe])
    if floor:
        msgs = probe.msgs
        samples = probe.stages.get("sample", {})
        res.decision.ours_ns[:] = [msgs[i].reaction_ns(t) for i, t in samples.items()]
    lag = [r[3] for r in probe.records]  # Msg.late_ns
    # How bursty the schedule is: events due in each 10 ms of the run's timeline.
    window = int(10_000_000 * speed)
    first = probe.records[0][0] if probe.records else 0
    per_window = Counter((r[0] - first) // window for r in probe.records)
    burst = [float(v) for v in per_window.values()]
    handled: dict[str, list[int]] = {"book": [], "other": []}
    for rec, took in zip(probe.records, probe.handled, strict=False):
        handled["book" if rec[5] else "other"].append(took)
    # The engine's thread, busy: its CPU time over the run's own timeline (the wall
    # time less the pacing sleeps' overshoot). It includes the parse each message costs
    # and the bench's own bookkeeping.
    timeline = wall - probe.overshoot_ns / 1e9
    return {
        "markets": n,
        "speed": speed,
        "conflate": conflate,
        "wall": wall,
        "data_s": seconds,
        "messages": len(probe.records),
        "decision_ns": res.decision.ours_ns,
        "trigger_ns": res.trigger_first.ours_ns,
        "trigger_all_ns": res.trigger_all.ours_ns,
        "triggers": res.triggers,
        "late_p99_ns": percentiles(lag)[1],
        "late_max_ns": max(lag) if lag else 0,
        "overshoot_s": probe.overshoot_ns / 1e9,
        "burst": percentiles(burst),
        "busy": cpu / timeline if timeline > 0 else 0.0,
        "handled_us": {
            kind: [len(v), sum(v) / len(v) / 1e3 if v else 0.0, *(
                x / 1e3 for x in percentiles(v)[:2]
            )]
            for kind, v in handled.items()
        },
    }


# ----------------------------------------------------------------------------- parent


def measure(args: Sequence[str], *, in_process: bool) -> dict[str, Any]:
    """One workload (``full|feed|ccxt reps seconds|all`` or ``markets n seconds``), in
    a child process of its own (clean peak RSS) or in this one (quick smoke runs)."""
    if in_process:
        return _workload(args)
    cmd = [sys.executable, "-m", "bench.replay", "--child", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_shards(
    n: int, seconds: float, shards: int, *, floor: bool = False, speed: float = SPEED
) -> dict[str, Any]:
    """``n`` markets conflated as the live feed does, split over ``shards`` processes
    replaying at the same time (one daemon per group of markets, as a fleet runs them);
    their figures merged. ``floor``: each assembled without trading (``_markets_once``)."""
    per = n // shards
    cmd = [sys.executable, "-m", "bench.replay", "--child", "markets", str(per), str(seconds)]
    extra = ["floor"] if floor else []
    if speed != SPEED:
        extra += ["speed", str(speed)]
    procs = [
        subprocess.Popen(
            [*cmd, "conflate", "shard", str(k), str(shards), *extra],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(shards)
    ]
    for p in procs:  # set up (imports, copies, assembly): then start together
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            _, err = p.communicate()
            raise SystemExit(f"shard failed to start:\n{err[-4000:]}")
    start_at = time.time() + 0.2
    outs = []
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start_at}\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"shard failed:\n{err[-4000:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    merged = dict(outs[0], markets=per * shards, shards=shards)
    for key in ("decision_ns", "trigger_ns", "trigger_all_ns"):
        merged[key] = [v for o in outs for v in o[key]]
    for key in ("messages", "triggers"):
        merged[key] = sum(o[key] for o in outs)
    for key in ("wall", "late_p99_ns", "late_max_ns", "rss_mb", "overshoot_s", "busy"):
        merged[key] = max(o[key] for o in outs)
    merged["handled_us"] = None  # per process: not merged
    return merged


def _workload(args: Sequence[str]) -> dict[str, Any]:
    kind, *rest = args
    imports_mb = _rss_mb()
    if kind == "markets":
        # markets N SECONDS [conflate] [shard K OF] [speed X] [floor]
        conflate = "conflate" in rest
        shard: tuple[int, int] | None = None
        if "shard" in rest:
            at = rest.index("shard")
            shard = (int(rest[at + 1]), int(rest[at + 2]))
        speed = float(rest[rest.index("speed") + 1]) if "speed" in rest else SPEED
        floor = "floor" in rest
        out = asyncio.run(
            _markets_once(int(rest[0]), float(rest[1]), conflate, shard, speed, floor)
        )
    else:
        out = _reps(kind, int(rest[0]), None if rest[1] == "all" else float(rest[1]))
    out["imports_rss_mb"] = imports_mb
    out["rss_mb"] = _rss_mb()
    return out


THROUGHPUT_COLS = (
    "workload",
    "messages/s",
    "events/s",
    "vs ccxt",
    "peak RSS MB",
    "at start MB",
    "wall s",
)
THROUGHPUT_W = (52, 12, 10, 8, 12, 12, 7)
MARKET_COLS = ("measure (reaction, from scheduled arrival)", "n", "p50 ms", "p99 ms", "max ms")
MARKET_W = (52, 8, 9, 9, 9)


CAPACITY_GRID = ((50, 1.0), (50, 2.0), (50, 5.0), (5, 10.0), (10, 10.0), (15, 10.0), (20, 10.0))
"""(markets, replay speed) pairs the capacity grid runs, each in a process of its own."""
SHARDED_GRID = ((50, 2.0), (50, 3.0), (50, 5.0))
"""(markets, replay speed) pairs the capacity grid runs split over :data:`SHARDS` processes."""


def capacity(
    seconds: float,
    grid: Sequence[tuple[int, float]] = CAPACITY_GRID,
    sharded: Sequence[tuple[int, float]] = SHARDED_GRID,
) -> None:
    """How many markets one process serves within the 5 ms target: part 2's conflated
    run (every market fracturing at once) for each (markets, speed) of ``grid``; then
    how fast ``sharded``'s markets may go split over one process per core."""
    print(
        f"{seconds:g} s of data per market, fracture on every market at start_s "
        f"{FIRST_START_S:g}, depth conflated as the live feed does, one process each; "
        "speed 1 = the recording's own rate (~10 depth updates and ~30 trades a second)"
    )
    cols = ("markets x speed", "decision p50 ms", "p99 ms", "trigger p99 ms", "<= 5 ms")
    widths = (16, 16, 9, 15, 8)
    print(row(cols, widths))
    for n, speed in grid:
        r = measure(
            ["markets", str(n), str(seconds), "conflate", "speed", str(speed)], in_process=False
        )
        print(row(_capacity_cells(n, speed, r), widths), flush=True)
    if not sharded:
        return
    print(f"split over {SHARDS} processes (every other market each), started together:")
    print(row(cols, widths))
    for n, speed in sharded:
        r = measure_shards(n, seconds, SHARDS, speed=speed)
        print(row(_capacity_cells(n, speed, r), widths), flush=True)


def _capacity_cells(n: int, speed: float, r: dict[str, Any]) -> tuple[str, ...]:
    d50, d99, _ = percentiles([v / 1e6 for v in r["decision_ns"]])
    _, t99, _ = percentiles([v / 1e6 for v in r["trigger_ns"]])
    return (
        f"{n} x {speed:g}",
        f"{d50:.2f}",
        f"{d99:.2f}",
        f"{t99:.2f}",
        "yes" if d99 <= 5.0 and t99 <= 5.0 else "no",
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.replay", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 60 s of data, 3 markets")
    ap.add_argument("--reps", type=int, default=None, help="throughput passes (default 3)")
    ap.add_argument("--markets", type=int, default=None, help="markets in part 2 (default 50)")
    ap.add_argument(
        "--seconds", type=float, default=None, help="data replayed in part 2 (default 90)"
    )
    ap.add_argument(
        "--capacity",
        action="store_true",
        help="only the capacity grid: markets x replay speed within p99 5 ms (~7 min)",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(_workload(args.child)))
        return 0
    if args.capacity:
        print(header("replay benchmark, capacity (bench/replay.py --capacity)"))
        capacity(args.seconds or 90.0)
        return 0

    reps = args.reps or (1 if args.quick else 3)
    part1_s = "60" if args.quick else "all"
    n_markets = args.markets or (3 if args.quick else 50)
    part2_s = args.seconds or (10.0 if args.quick else 90.0)
    # Quick runs stay in this process: a child costs ~3 s of imports. Peak RSS is then
    # this process's, cumulative.
    inproc = args.quick

    print(header("replay benchmark (bench/replay.py)"))
    names = ", ".join(BUNDLED_SAMPLE)
    span = "first 60 s of " if args.quick else ""
    print(f"\npart 1: {span}{names} as fast as possible; median of {reps} pass(es)")
    results = {
        k: measure([k, str(reps), part1_s], in_process=inproc)
        for k in ("feed", "ccxt", "live", "full")
    }
    labels = {
        "full": "ours: full pipeline (paper, calm: no stress)",
        "feed": "ours: feed only (read + parse + sync)",
        "ccxt": "ccxt.pro binance handlers: book + trades (baseline)",
        "live": "live feed: ccxt.pro handlers + copy to our book",
    }
    print(row(THROUGHPUT_COLS, THROUGHPUT_W))
    base = results["ccxt"]["lines"] / results["ccxt"]["wall"]
    for kind, r in results.items():
        mps = r["lines"] / r["wall"]
        print(
            row(
                (
                    labels[kind],
                    f"{mps:,.0f}",
                    f"{r['events'] / r['wall']:,.0f}",
                    f"{mps / base:.2f}x",
                    f"{r['rss_mb']:.0f}",
                    f"{r['imports_rss_mb']:.0f}",
                    f"{r['wall']:.2f}",
                ),
                THROUGHPUT_W,
            )
        )
    print(
        f"messages = lines read ({results['full']['lines']:,}: depth, trades, and bookTicker "
        f"read and skipped); events = depth + trades used ({results['full']['events']:,}); "
        "RSS at start = after imports, before the replay"
        + (" (quick: all in this process, RSS cumulative)" if inproc else "")
    )
    per = results["ccxt"]["handler_us"]
    print(
        f"ccxt.pro's handler alone, per message (last pass): depth diff {per['depth']:.1f} us, "
        f"trade {per['trade']:.1f} us"
    )

    print(
        f"\npart 2: {n_markets} market(s) vs 1, {part2_s:g} s of data at {SPEED:g}x the recorded "
        f"rate, fracture on every market at start_s {FIRST_START_S:g}"
    )
    if part2_s <= FIRST_START_S + 4:
        print("(quick: the replayed data ends before the fracture: no trigger rows)")
    many = measure(["markets", str(n_markets), str(part2_s)], in_process=inproc)
    merged = measure(["markets", str(n_markets), str(part2_s), "conflate"], in_process=inproc)
    floor = measure(
        ["markets", str(n_markets), str(part2_s), "conflate", "floor"], in_process=inproc
    )
    sharded = measure_shards(n_markets, part2_s, SHARDS)
    sharded_floor = measure_shards(n_markets, part2_s, SHARDS, floor=True)
    one = measure(["markets", "1", str(part2_s)], in_process=inproc)
    print(row((*MARKET_COLS, "1 market p99", "ratio p99"), (*MARKET_W, 13, 10)))
    per = n_markets // SHARDS
    for title, run in (
        (f"{n_markets} markets, every depth message handed to the engine", many),
        (f"{n_markets} markets, depth messages conflated as the live feed does", merged),
        (
            f"{per * SHARDS} markets in {SHARDS} processes of {per} at once (one per core), "
            "conflated",
            sharded,
        ),
        (
            f"{n_markets} markets conflated, assembled without trading (feed, books, depth "
            "samples: no engine design goes below this)",
            floor,
        ),
        (f"{per * SHARDS} markets in {SHARDS} processes of {per}, without trading", sharded_floor),
    ):
        print(f"{title}:")
        for label, key in (
            ("book message -> strategy decision", "decision_ns"),
            ("trigger -> first quote order handed to venue", "trigger_ns"),
            ("trigger -> last order of that decision", "trigger_all_ns"),
        ):
            p50, p99, pmax = percentiles([v / 1e6 for v in run[key]])
            _, one99, _ = percentiles([v / 1e6 for v in one[key]])
            if run in (floor, sharded_floor):
                if key != "decision_ns":
                    continue
                label = "book message -> depth sample (the floor)"
            print(
                row(
                    (
                        "  " + label,
                        f"{len(run[key]):,}",
                        f"{p50:,.2f}",
                        f"{p99:,.2f}",
                        f"{pmax:,.2f}",
                        f"{one99:,.2f}",
                        f"{one99 / p99:.2f}x",
                    ),
                    (*MARKET_W, 13, 10),
                )
            )
    for label, r in (
        (f"{n_markets} markets", many),
        (f"{n_markets} markets conflated", merged),
        (f"{per * SHARDS} markets in {SHARDS} processes, conflated", sharded),
        (f"{n_markets} markets conflated, without trading", floor),
        (f"{per * SHARDS} markets in {SHARDS} processes, without trading", sharded_floor),
        ("1 market", one),
    ):
        needed = r["messages"] / (r["data_s"] / SPEED)
        print(
            f"{label}: {r['messages']:,} events handed over in {r['wall']:.1f} s, of which "
            f"{r['overshoot_s']:.1f} s pacing sleeps overran (the schedule asks "
            f"{needed:,.0f}/s); engine thread busy {100 * r['busy']:.0f}%"
            + (" (the busier process)" if r.get("shards") else "")
            + f"; behind schedule p99 {r['late_p99_ns'] / 1e6:.2f} ms, "
            f"max {r['late_max_ns'] / 1e6:.2f} ms; peak RSS {r['rss_mb']:.0f} MB"
        )
        b50, b99, bmax = r["burst"]
        print(
            f"  events due per 10 ms of the schedule: p50 {b50:,.0f}, p99 {b99:,.0f}, "
            f"max {bmax:,.0f}" + (" (the first process)" if r.get("shards") else "")
        )
        if r.get("handled_us"):
            print(
                "  engine time per event handed over, us (n, mean, p50, p99): "
                + "; ".join(
                    f"{kind} {n:,}, {mean:.1f}, {p50:.1f}, {p99:.1f}"
                    for kind, (n, mean, p50, p99) in r["handled_us"].items()
                )
            )
    print("ratio = 1-market figure / N-market figure (<1: slower with N markets)")
    print(
        "busy = the engine thread's CPU time over the run's timeline (wall less the sleeps' "
        "overrun): engine, each message's parse, and the bench's own bookkeeping"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
