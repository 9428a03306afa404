"""``backstop exchange-sim``: run the Binance Spot emulator on a recorded market.

``backstop exchange-sim [--replay FILE ...] [--stress SPEC] [--speed X] ...`` serves the
emulator (REST, websockets, admin API) on 127.0.0.1, plays the recording into it and
prints where it listens plus the ``[exchange] urls_override`` table that points the bot
at it. It stops on Ctrl-C/SIGTERM, or when the replay ends (``--loop`` restarts it).

``backstop exchange-sim fault --url URL KIND [...]`` injects a fault into a running
emulator through its admin API (``POST /_sim/faults``) and prints the reply.

User mistakes and unreachable emulators are one line on stderr and exit status 2.
``bot/cli.py`` registers the command with :func:`add_exchange_sim_command` and runs it
with :func:`run_exchange_sim_command` when :func:`is_exchange_sim_command` says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from bot.clock import Clock, ManualClock, WallClock
from bot.errors import UserError
from bot.exchange_sim.futures_server import FUTURES_MARKETS, BinanceFuturesEmulator
from bot.exchange_sim.market import MarketDriver
from bot.exchange_sim.rehearsal import load_toml, rehearsal_config, toml_document
from bot.exchange_sim.server import BinanceSpotEmulator
from bot.feeds.replay import ReplayFeed, bundled_sample_paths, sniff_recording
from bot.feeds.stress import StressedFeed, StressSpec, format_spec, parse_stress_spec

COMMAND = "exchange-sim"
EXIT_OK = 0
EXIT_USAGE = 2
KEY_ENV = "BACKSTOP_SIM_API_KEY"
SECRET_ENV = "BACKSTOP_SIM_SECRET"
DEFAULT_BALANCES = {"USDT": Decimal(100_000), "BTC": Decimal(1)}
MARKETS = ("spot", "usdm", "coinm")
"""``--market``: Binance spot, Binance USDⓈ-M futures (``/fapi``) or COIN-M (``/dapi``)."""
DEFAULT_FUTURES_BALANCES = {"USDT": Decimal(100_000)}
DEFAULT_COINM_BALANCES = {"BTC": Decimal(10)}
USDM_SAMPLE = "usdm_btcusdt_20240808.gz"
COINM_SAMPLES = ("cm_btcusd_perp_20240808.gz", "cm_btcusd_perp_20240809.gz")
EXCHANGE_INFO_FILE = "binance_exchange_info_symbols.json"
FAULT_FIELDS = ("endpoint", "n", "status", "seconds", "symbol", "ms")
# config/ ships beside the package in a checkout and in the container image.
PAPER_CONFIG = Path(__file__).resolve().parents[2] / "config" / "paper.toml"
PAPER_USDM_CONFIG = PAPER_CONFIG.with_name("paper-usdm.toml")
PAPER_COINM_CONFIG = PAPER_CONFIG.with_name("paper-coinm.toml")

Token = Callable[[int], str]


@dataclass(frozen=True)
class SimOptions:
    """``backstop exchange-sim``'s arguments, checked."""

    replay: tuple[Path, ...]
    stress: StressSpec | None
    speed: float
    duration_s: float | None
    host: str
    port: int
    balances: Mapping[str, Decimal]
    api_key: str
    secret: str
    loop: bool
    write_config: Path | None = None
    """Where to write a testnet config for this emulator (``--write-config``)."""
    base_config: Path | None = None
    """The config it is made from (``--config``; default config/paper.toml, or
    config/paper-usdm.toml or paper-coinm.toml for ``--market usdm``/``coinm``)."""
    market: str = "spot"
    funding_rate: Decimal = Decimal("0.0001")
    funding_interval_s: float = 8 * 3600.0


# ---------------------------------------------------------------------- arguments


def add_exchange_sim_command(sub: Any) -> None:
    """Add ``exchange-sim`` (and its ``fault`` subcommand) to ``backstop``'s subparsers."""
    sim = sub.add_parser(
        COMMAND,
        help="run a local Binance Spot emulator on a recorded market (see docs/exchange-sim.md)",
        description="Serve a local Binance Spot venue (REST + websockets) whose market is a "
        "recording (default: the bundled BTCUSDT sample), and whose fills follow the paper "
        "venue's model. Prints the URL and the [exchange] urls_override table for the bot.",
    )
    sim.add_argument(
        "--market",
        choices=MARKETS,
        default="spot",
        help="spot (default): Binance Spot /api/v3; usdm: Binance USDⓈ-M futures /fapi "
        "(positions, isolated margin, funding; default data: the bundled USD-M recording); "
        "coinm: Binance COIN-M futures /dapi (inverse BTCUSD_PERP, BTC margin; default "
        "data: the bundled COIN-M recording)",
    )
    sim.add_argument(
        "--funding-rate",
        type=Decimal,
        default=Decimal("0.0001"),
        metavar="RATE",
        help="usdm/coinm: funding rate paid per interval (default 0.0001)",
    )
    sim.add_argument(
        "--funding-interval",
        type=float,
        default=8 * 3600.0,
        metavar="SECONDS",
        help="usdm/coinm: funding every SECONDS of the venue's clock (default 28800)",
    )
    sim.add_argument(
        "--replay",
        action="append",
        type=Path,
        metavar="FILE",
        help="recording to play (repeat to chain files; default: the bundled sample)",
    )
    sim.add_argument(
        "--stress", metavar="NAME[:k=v,...]", help="stress overlay, e.g. fracture (docs/stress.md)"
    )
    sim.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="replay pace: 1 = real time (default), N = N x, 0 = as fast as possible",
    )
    sim.add_argument(
        "--duration", type=float, metavar="SECONDS", help="play only this much of the data"
    )
    sim.add_argument("--loop", action="store_true", help="restart the replay when it ends")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sim.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    sim.add_argument(
        "--balance",
        action="append",
        metavar="ASSET=AMOUNT",
        help="starting balance; repeat per asset (default: USDT=100000 BTC=1)",
    )
    sim.add_argument(
        "--write-config",
        type=Path,
        metavar="PATH.toml",
        help="write a testnet config pointing at this emulator (from --config) to rehearse "
        "with: backstop run --config PATH.toml (the key and secret as its credentials)",
    )
    sim.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the config --write-config starts from (default: the bundled paper config)",
    )
    sim.add_argument("--api-key", help=f"API key to accept (or env {KEY_ENV}; default random)")
    sim.add_argument("--secret", help=f"its secret (or env {SECRET_ENV}; default random)")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    fault = sim_sub.add_parser(
        "fault",
        help="inject a fault into a running emulator",
        description="POST one fault to a running emulator's /_sim/faults and print the "
        "reply. KIND is e.g. fail, rate_limit, ban, reject_orders, delay, ws_drop, "
        "ws_stall, depth_gap, depth_out_of_order, clock_skew or clear (the emulator "
        "checks it and says what it accepts).",
    )
    fault.add_argument("--url", required=True, help="the emulator, e.g. http://127.0.0.1:8765")
    fault.add_argument("kind", metavar="KIND")
    fault.add_argument("--endpoint", help='e.g. "POST /api/v3/order" (default: any endpoint)')
    fault.add_argument("--n", type=int, help="how many requests it hits")
    fault.add_argument("--status", type=int, help="HTTP status to answer (fail)")
    fault.add_argument("--seconds", type=float, help="delay, stall or Retry-After seconds")
    fault.add_argument("--symbol", help="symbol for depth faults, e.g. BTCUSDT")
    fault.add_argument("--ms", type=int, help="clock skew in milliseconds (clock_skew)")


def is_exchange_sim_command(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) == COMMAND


def run_exchange_sim_command(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    token: Token = secrets.token_hex,
) -> int:
    """Run the parsed ``exchange-sim`` command; returns the exit status.

    ``environ`` (default ``os.environ``) is where the credentials' variables are read.
    """
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        if getattr(args, "sim_command", None) == "fault":
            return asyncio.run(send_fault(args.url, fault_body(args), out=stdout, err=stderr))
        options = options_from_args(args, environ=environ, token=token)
        return asyncio.run(serve(options, out=stdout, err=stderr))
    except UserError as e:
        print(f"backstop {COMMAND}: error: {e}", file=stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before the signal handlers were installed
        return EXIT_OK


def options_from_args(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    token: Token = secrets.token_hex,
) -> SimOptions:
    """Check ``args``; raises :class:`UserError` naming the bad one."""
    env = environ if environ is not None else os.environ
    if not (math.isfinite(args.speed) and args.speed >= 0):
        raise UserError(f"--speed must be >= 0 (0 = as fast as possible), got {args.speed}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise UserError(f"--duration must be > 0 seconds, got {args.duration}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    api_key = args.api_key or env.get(KEY_ENV)
    secret = args.secret or env.get(SECRET_ENV)
    if (api_key is None) != (secret is None):
        raise UserError(
            f"give both an API key and a secret (--api-key/--secret or {KEY_ENV}/"
            f"{SECRET_ENV}), or neither for a random pair"
        )
    if api_key is None or secret is None:
        api_key, secret = token(16), token(32)
    if args.config is not None and args.write_config is None:
        raise UserError("--config is the base of --write-config: give --write-config too")
    if args.config is not None and not args.config.is_file():
        raise UserError(f"--config {args.config}: no such file")
    market = getattr(args, "market", "spot") or "spot"
    funding_interval_s = float(getattr(args, "funding_interval", 8 * 3600.0))
    if not (math.isfinite(funding_interval_s) and funding_interval_s > 0):
        raise UserError(f"--funding-interval must be > 0 seconds, got {funding_interval_s}")
    funding_rate = Decimal(getattr(args, "funding_rate", Decimal("0.0001")))
    if not funding_rate.is_finite():
        raise UserError(f"--funding-rate must be a number, got {funding_rate}")
    if args.replay:
        replay = tuple(args.replay)
    elif market == "usdm":
        replay = (Path(str(resources.files("bot").joinpath("data", USDM_SAMPLE))),)
    elif market == "coinm":
        replay = tuple(
            Path(str(resources.files("bot").joinpath("data", name))) for name in COINM_SAMPLES
        )
    else:
        replay = tuple(bundled_sample_paths())
    for path in replay:
        sniff_recording(path)  # a missing or unknown file is a UserError naming it
    return SimOptions(
        replay=replay,
        stress=parse_stress_spec(args.stress) if args.stress else None,
        speed=args.speed,
        duration_s=args.duration,
        host=args.host,
        port=args.port,
        balances=parse_balances(
            args.balance,
            {"usdm": DEFAULT_FUTURES_BALANCES, "coinm": DEFAULT_COINM_BALANCES}.get(
                market, DEFAULT_BALANCES
            ),
        ),
        api_key=api_key,
        secret=secret,
        loop=args.loop,
        write_config=args.write_config,
        base_config=args.config,
        market=market,
        funding_rate=funding_rate,
        funding_interval_s=funding_interval_s,
    )


def parse_balances(
    items: Sequence[str] | None, default: Mapping[str, Decimal] = DEFAULT_BALANCES
) -> dict[str, Decimal]:
    """``["USDT=100000", "BTC=1.5"]`` -> ``{"USDT": 100000, "BTC": 1.5}`` (default if none)."""
    if not items:
        return dict(default)
    out: dict[str, Decimal] = {}
    for item in items:
        asset, sep, amount = item.partition("=")
        asset = asset.strip().upper()
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            value = Decimal("NaN")
        if not sep or not asset.isalnum() or not value.is_finite() or value < 0:
            raise UserError(
                f"--balance {item!r}: expected ASSET=AMOUNT with AMOUNT a number >= 0, "
                "e.g. --balance USDT=100000"
            )
        if asset in out:
            raise UserError(f"--balance: {asset} given twice")
        out[asset] = value
    return out


def fault_body(args: argparse.Namespace) -> dict[str, Any]:
    """The admin API's JSON for ``exchange-sim fault``: only the fields given."""
    body: dict[str, Any] = {"kind": args.kind}
    for name in FAULT_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    return body


# ---------------------------------------------------------------------- serving


def _spot_symbols(market: str = "spot") -> list[dict[str, Any]]:
    """The bundled exchangeInfo entry the emulator lists (``spot``, ``usdm``, ``coinm``)."""
    raw = json.loads(
        resources.files("bot").joinpath("data", EXCHANGE_INFO_FILE).read_text(encoding="utf-8")
    )
    return [raw[market]]


def _check_symbols(paths: Sequence[Path], listed: Sequence[str]) -> None:
    """Refuse a capture of a symbol the emulator does not list: nothing would trade."""
    for path in paths:
        raw = sniff_recording(path).raw_symbol
        if raw is not None and raw not in listed:
            raise UserError(
                f"replay file {path}: records {raw}, but the emulator lists only "
                f"{', '.join(listed)}"
            )


def _make_feed(options: SimOptions) -> ReplayFeed | StressedFeed:
    # A fresh clock per pass: a replay's data time starts again at the recording's.
    feed = ReplayFeed(
        options.replay, clock=ManualClock(), speed=options.speed, duration_s=options.duration_s
    )
    return StressedFeed(feed, options.stress) if options.stress is not None else feed


def toml_snippet(overrides: Mapping[str, str]) -> str:
    """The ``[exchange] urls_override`` table (TOML: dotted keys quoted)."""
    pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in overrides.items())
    return f"[exchange]\nurls_override = {{ {pairs} }}"


async def serve(
    options: SimOptions,
    *,
    out: TextIO,
    err: TextIO,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[BinanceSpotEmulator], Awaitable[None] | None] | None = None,
    clock: Clock | None = None,
) -> int:
    """Run the emulator until ``stop`` is set, a signal arrives, or the replay ends.

    ``on_ready(emulator)`` is called once it listens (tests use it to connect).
    ``clock`` is the venue's (default: the wall clock, which ccxt signs requests with).
    """
    symbols = _spot_symbols(options.market)
    _check_symbols(options.replay, [s["symbol"] for s in symbols])
    stop = stop if stop is not None else asyncio.Event()
    venue_clock = clock if clock is not None else WallClock()
    emu: BinanceSpotEmulator
    if options.market in FUTURES_MARKETS:
        emu = BinanceFuturesEmulator(
            market=FUTURES_MARKETS[options.market],
            exchange_info=symbols,
            api_key=options.api_key,
            secret=options.secret,
            clock=venue_clock,
            balances=options.balances,
            host=options.host,
            port=options.port,
            funding_rate=options.funding_rate,
            funding_interval_s=options.funding_interval_s,
        )
    else:
        emu = BinanceSpotEmulator(
            exchange_info=symbols,
            api_key=options.api_key,
            secret=options.secret,
            clock=venue_clock,
            balances=options.balances,
            host=options.host,
            port=options.port,
        )
    try:
        await emu.start()
    except OSError as e:
        await emu.close()
        raise UserError(
            f"cannot listen on {options.host}:{options.port}: {e.strerror or e}"
        ) from None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not everywhere
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        _announce(emu, options, out)
        if options.write_config is not None:
            _write_config(emu, options, out)
        if on_ready is not None:
            ready = on_ready(emu)
            if ready is not None:
                await ready
        passes = 0
        while not stop.is_set():
            passes += 1
            driver = MarketDriver(emu.engine, _make_feed(options))
            ended = await _run_until_stopped(driver.run(), stop)
            stats = driver.stats
            print(
                f"backstop {COMMAND}: replay pass {passes} "
                f"{'ended' if ended else 'stopped'}: {stats.applied} events, "
                f"{len(emu.engine.trades)} fills of ours so far",
                file=err,
            )
            if ended and not options.loop:
                break
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await emu.close()
    return EXIT_OK


async def _run_until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await ``work`` unless ``stop`` is set first (then cancel it); True if it finished."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    if task.cancelled():
        return False
    task.result()  # a failure of the replay is a bug: let it out
    return True


def _announce(emu: BinanceSpotEmulator, options: SimOptions, out: TextIO) -> None:
    files = ", ".join(p.name for p in options.replay)
    pace = "as fast as possible" if options.speed == 0 else f"at {options.speed:g}x"
    stress = f", stress {format_spec(options.stress)}" if options.stress else ""
    print(
        f"backstop {COMMAND}: listening on {emu.base_url} (api key {options.api_key}, "
        f"secret {options.secret}); replaying {files} {pace}{stress}",
        file=out,
    )
    print(
        '# Point the bot at it (mode = "testnet"; the key and secret above as its '
        "exchange credentials):",
        file=out,
    )
    print(toml_snippet(emu.url_overrides(websockets=True)), file=out, flush=True)


def _write_config(emu: BinanceSpotEmulator, options: SimOptions, out: TextIO) -> None:
    assert options.write_config is not None
    default_base = {"usdm": PAPER_USDM_CONFIG, "coinm": PAPER_COINM_CONFIG}.get(
        options.market, PAPER_CONFIG
    )
    base_path = options.base_config or default_base
    try:
        base = load_toml(base_path)
    except (OSError, ValueError) as e:
        raise UserError(f"--config {base_path}: cannot read it as TOML: {e}") from None
    path = options.write_config
    state_dir = path.parent / f"{path.stem}-state"
    try:
        path.write_text(toml_document(rehearsal_config(emu, base, state_dir=state_dir)))
    except OSError as e:
        raise UserError(f"--write-config {path}: {e.strerror or e}") from None
    print(
        f"# wrote {path} (state in {state_dir}); run it with:\n"
        f"BACKSTOP_EXCHANGE__API_KEY={options.api_key} "
        f"BACKSTOP_EXCHANGE__SECRET={options.secret} backstop run --config {path}",
        file=out,
        flush=True,
    )


# ---------------------------------------------------------------------- fault client


async def send_fault(url: str, body: Mapping[str, Any], *, out: TextIO, err: TextIO) -> int:
    """POST ``body`` to ``url``'s ``/_sim/faults``; print the reply. 0 if accepted, else 2."""
    target = url.rstrip("/") + "/_sim/faults"
    if not target.startswith(("http://", "https://")):
        print(f"backstop {COMMAND} fault: --url must be http(s)://HOST:PORT, got {url!r}", file=err)
        return EXIT_USAGE
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(target, json=dict(body)) as response,
        ):
            text = await response.text()
            status = response.status
    except aiohttp.ClientConnectorError as e:
        refused = isinstance(e.os_error, ConnectionRefusedError)
        reason = "connection refused" if refused else (e.os_error.strerror or str(e.os_error))
        print(f"backstop {COMMAND} fault: cannot reach the emulator at {url}: {reason}", file=err)
        return EXIT_USAGE
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        reason = str(e) or type(e).__name__
        print(f"backstop {COMMAND} fault: cannot reach the emulator at {url}: {reason}", file=err)
        return EXIT_USAGE
    try:
        reply: Any = json.loads(text)
    except ValueError:
        reply = None
    if status == 200 and isinstance(reply, dict) and reply.get("ok"):
        print(json.dumps(reply), file=out)
        return EXIT_OK
    detail = reply.get("error") if isinstance(reply, dict) else None
    print(f"backstop {COMMAND} fault: refused ({status}): {detail or text.strip()[:200]}", file=err)
    return EXIT_USAGE
