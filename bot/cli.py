"""``backstop``: the command line.

Flags map onto the settings tree and win over env vars and the config file. User
mistakes (bad config, bad flags, missing files) exit with status 2 and one line saying
what is wrong; they never print a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from bot import __version__
from bot.app import Run, assemble
from bot.control.commands import (
    add_control_commands,
    is_control_command,
    run_control_command,
)
from bot.control.metrics import Metrics
from bot.control.pidfile import PID_FILE_NAME, PidFile
from bot.control.server import ControlServer
from bot.daemon import Daemon, MetricsListener
from bot.display import LogProgress, TerminalView, summary_table
from bot.engine import Listener
from bot.errors import OperationalError, TemporaryError, UserError
from bot.exchange_sim.cli import (
    add_exchange_sim_command,
    is_exchange_sim_command,
    run_exchange_sim_command,
)
from bot.feeds.stress import format_stress_list, parse_stress_spec
from bot.fleet import FleetMember, add_fleet_kill_flags, run_fleet_kill, wants_fleet_kill
from bot.journal.audit import add_audit_commands, is_audit_command, run_audit_command
from bot.logs import make_logger, resolve_format
from bot.report.cli import add_report_command, is_report_command, run_report_command
from bot.settings import Settings, load_settings
from bot.summary import RunSummary
from bot.warning.cli import add_model_command, is_model_command, run_model_command
from strategies import STRATEGIES

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (see config/)")
    p.add_argument("--mode", choices=["paper", "testnet", "live"])
    p.add_argument("--exchange", metavar="ID", help="ccxt exchange id, e.g. binance")
    p.add_argument(
        "--symbol",
        action="append",
        metavar="SYM",
        help="market in ccxt's unified form (BTC/USDT); repeat for several",
    )
    p.add_argument(
        "--replay",
        action="append",
        type=Path,
        metavar="FILE",
        help="replay this recording (repeat to chain files in order)",
    )
    p.add_argument(
        "--feed", choices=["replay", "live"], help="market data source (default: replay)"
    )
    p.add_argument(
        "--speed", type=float, help="replay pace: 0 = as fast as possible, 1 = real time, N = Nx"
    )
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--secrets-dir", type=Path, help="directory of secret files (credentials)")
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def _policy_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the intervention policy (TOML; governance.policy_file), see docs/governance.md",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backstop",
        description="Liquidity backstop for crypto order books: detects depth fractures "
        "and quotes from a capped reserve.",
    )
    parser.add_argument("--version", action="version", version=f"backstop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the bot (default: paper mode replaying the bundled recording)",
        description="Run the bot. With no arguments: paper mode, offline, replaying the "
        "real Binance BTC/USDT recording bundled with the package.",
    )
    _common(run)
    run.add_argument("--confirm-live", action="store_true", help="required to start in live mode")
    _policy_flag(run)
    run.add_argument(
        "--strategy", choices=sorted(STRATEGIES), help="strategy to run (default: backstop)"
    )
    run.add_argument(
        "--stress",
        metavar="NAME[:k=v,...]",
        help="overlay a stress scenario on the replay (see --list-stress), e.g. fracture",
    )
    run.add_argument(
        "--list-stress", action="store_true", help="list the stress scenarios and exit"
    )
    run.add_argument(
        "--control",
        action="store_true",
        help="serve the control API for a replay too (always served for a live feed "
        "when control.enabled)",
    )
    run.add_argument("--summary-json", type=Path, metavar="PATH", help="write the summary here")
    run.add_argument(
        "--report",
        type=Path,
        metavar="PATH.html",
        help="write an episode report (HTML with PNG charts beside it)",
    )

    book = sub.add_parser(
        "book",
        help="live terminal view of the local book's depth bands",
        description="Show what the bot sees: depth within each band of mid and the top levels. "
        "Live (--feed live --exchange ID --symbol SYM) or on a recording (--replay FILE).",
    )
    _common(book)
    book.add_argument("--levels", type=int, default=10, help="top levels to show per side")

    config = sub.add_parser("config", help="validate a config and print it (secrets masked)")
    _common(config)
    _policy_flag(config)
    add_control_commands(sub)
    add_fleet_kill_flags(sub.choices["kill"])
    add_audit_commands(sub)
    add_exchange_sim_command(sub)
    add_report_command(sub)
    add_model_command(sub)
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as a nested dict (highest priority)."""
    out: dict[str, Any] = {}
    feed: dict[str, Any] = {}
    logging: dict[str, Any] = {}
    if args.mode:
        out["mode"] = args.mode
    if args.exchange:
        out["exchange"] = {"id": args.exchange}
    if args.state_dir:
        out["state_dir"] = args.state_dir
    if getattr(args, "confirm_live", False):
        out["confirm_live"] = True
    if getattr(args, "strategy", None):
        out["strategy"] = {"name": args.strategy}
    if getattr(args, "policy", None):
        out["governance"] = {"policy_file": args.policy}
    if args.replay:
        feed["source"] = "replay"
        feed["replay_files"] = args.replay
    if args.feed:
        feed["source"] = args.feed
    if args.speed is not None:
        feed["speed"] = args.speed
    if args.duration is not None:
        feed["duration_s"] = args.duration
    if args.log_format:
        logging["format"] = args.log_format
    if args.log_level:
        logging["level"] = args.log_level
    if feed:
        out["feed"] = feed
    if logging:
        out["logging"] = logging
    return out


def resolve_settings(args: argparse.Namespace, *, command: str) -> Settings:
    overrides = overrides_from_args(args)
    if command == "book" and args.speed is None and (args.replay or not args.feed):
        # A view is for watching: replay at real time unless told otherwise.
        overrides.setdefault("feed", {})["speed"] = 1.0
    settings = load_settings(args.config, overrides=overrides, secrets_dir=args.secrets_dir)
    if not args.symbol:
        return settings
    # --symbol selects markets: keep a configured market's thresholds when it has
    # one, defaults otherwise. Reloading keeps validation in one place.
    configured = {m.symbol: m.model_dump() for m in settings.markets}
    overrides["markets"] = [configured.get(sym, {"symbol": sym}) for sym in args.symbol]
    return load_settings(args.config, overrides=overrides, secrets_dir=args.secrets_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "list_stress", False):
        print(format_stress_list())
        return EXIT_OK
    if wants_fleet_kill(args):
        return run_fleet_kill(args)
    if is_control_command(args):
        return run_control_command(args)
    if is_audit_command(args):
        return run_audit_command(args)
    if is_exchange_sim_command(args):
        return run_exchange_sim_command(args)
    if is_report_command(args):
        return run_report_command(args)
    if is_model_command(args):
        return run_model_command(args)
    try:
        settings = resolve_settings(args, command=args.command)
        if args.command == "config":
            print(json.dumps(settings.model_dump(mode="json"), indent=2))
            return EXIT_OK
        return asyncio.run(_run(args, settings))
    except UserError as e:
        print(f"backstop: error: {e}", file=sys.stderr)
        return e.exit_code
    except (OperationalError, TemporaryError) as e:
        print(f"backstop: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    err: TextIO = sys.stderr
    fmt = resolve_format(settings.logging.format, err)
    log = make_logger(fmt, settings.logging.level, err).bind(mode=settings.mode)
    is_book = args.command == "book"
    interactive = fmt == "console" and err.isatty()
    view: TerminalView | None = None
    listener: Listener
    if interactive:
        view = TerminalView(Console(file=err), ladder_levels=args.levels if is_book else 0)
        listener = view
    else:
        listener = LogProgress(log, interval_s=1.0 if is_book else 5.0)

    stress_text = getattr(args, "stress", None)
    stress = parse_stress_spec(stress_text) if stress_text else None
    report_path: Path | None = getattr(args, "report", None)
    run = await assemble(
        settings,
        log=log,
        listeners=[listener],
        stress=stress,
        trade=not is_book,
        record=report_path is not None,
    )
    # Everything loaded so far (ccxt's exchange classes, markets, settings) lives as long
    # as the process: freezing it keeps the collector from walking it again, which cut
    # the worst pause on the hot path from ~150-215 ms to ~13 ms (docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_signal(signum: int) -> None:
        nonlocal interrupted
        interrupted = True
        run.request_stop(signum, stop)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, on_signal, sig)
    if settings.feed.source == "live" and settings.feed.duration_s is not None:
        loop.call_later(settings.feed.duration_s, stop.set)

    serve = not is_book and settings.control.enabled and (
        settings.feed.source == "live" or getattr(args, "control", False)
    )
    async with contextlib.AsyncExitStack() as stack:
        if serve and run.trader is not None:
            # One daemon per state dir; the control socket lives there too.
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(PidFile(settings.state_dir / PID_FILE_NAME))
            daemon = Daemon(run, log=log)
            metrics = Metrics()
            run.engine.add_listener(
                MetricsListener(metrics, run.trader, daemon.killswitch, options=run.options)
            )
            await stack.enter_async_context(
                ControlServer.from_settings(settings, daemon, log=log, metrics=metrics)
            )
            log.info("control_listening", socket=str(settings.control_socket_path))
        await stack.enter_async_context(FleetMember.for_run(settings, run, log=log))
        if view is not None:
            stack.enter_context(view)
        summary = await run.execute(stop)
    _report(summary, args, fmt, log)
    if report_path is not None:
        _write_report(run, report_path, log)
    return EXIT_INTERRUPTED if interrupted and settings.feed.source == "replay" else EXIT_OK


def _write_report(run: Run, path: Path, log: Any) -> None:
    trader = run.trader
    if trader is None or trader.recorder is None:
        raise UserError("--report needs a market the bot can trade (paper mode, known market)")
    from bot.report import render_report  # matplotlib: only when a report is written

    episodes = [ep for desk in trader.desks.values() for ep in desk.episodes.to_dicts()]
    path.parent.mkdir(parents=True, exist_ok=True)
    files = render_report(trader.recorder, episodes, path, title=f"backstop: {run.source}")
    log.info("report_written", files=[str(f) for f in files])


def _report(summary: RunSummary, args: argparse.Namespace, fmt: str, log: Any) -> None:
    path: Path | None = getattr(args, "summary_json", None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if fmt == "console":
        Console().print(summary_table(summary))
    else:
        log.info("run_summary", **summary.to_dict())
