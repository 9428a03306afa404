"""The operator's commands: ``backstop status|kill|resume|pause|unpause|cancel-all`` and
``backstop policy show|set|hash``.

Each talks to the running daemon over its control socket, prints the outcome and
returns the exit status: 0 done, 1 the daemon is not running or failed, 2 the daemon
refused the command as asked (the reason is printed). Never a traceback.

``bot/cli.py`` calls :func:`add_control_commands` on its subparsers and, when
:func:`is_control_command` says so, returns :func:`run_control_command` (before loading
any settings: these commands only need to find the socket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.control.client import CommandFailed, ControlClient, ControlTarget, DaemonNotRunning
from bot.errors import BackstopError, UserError
from bot.settings.models import MIN_TOKEN_CHARS, env_name

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

TOKEN_ENV = env_name(("control", "token"))
DEFAULT_PAUSE_REASON = "paused by the operator"
DEFAULT_CANCEL_REASON = "cancel-all by the operator"

Target = Path | str | ControlTarget


def _target(where: Target) -> ControlTarget:
    return where if isinstance(where, ControlTarget) else ControlTarget.for_state_dir(where)


async def _guarded(
    where: Target,
    action: str,
    work: Callable[[ControlClient], Awaitable[None]],
    err: TextIO,
) -> int:
    """Run ``work`` with a client; turn every failure into one line and an exit status."""
    try:
        async with ControlClient(_target(where)) as client:
            await work(client)
    except DaemonNotRunning as e:
        print(str(e), file=err)
        return EXIT_FAILURE
    except CommandFailed as e:
        print(f"backstop {action}: refused: {e}", file=err)
        return EXIT_USAGE if e.is_user_mistake else EXIT_FAILURE
    except UserError as e:
        print(f"backstop {action}: {e}", file=err)
        return EXIT_USAGE
    except BackstopError as e:
        print(f"backstop {action}: {e}", file=err)
        return EXIT_FAILURE
    return EXIT_OK


# ---- async commands (use these from inside an event loop) ---------------------------


async def status_async(
    where: Target, as_json: bool = False, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    stdout = out or sys.stdout

    async def work(client: ControlClient) -> None:
        data = await client.status()
        if as_json:
            print(json.dumps(data, indent=2, default=str), file=stdout)
        else:
            print_status(data, stdout)

    return await _guarded(where, "status", work, err or sys.stderr)


async def command_async(
    where: Target,
    action: str,
    *,
    reason: str | None = None,
    symbol: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``action``: kill, resume, pause, unpause or cancel-all."""
    stdout = out or sys.stdout

    async def work(client: ControlClient) -> None:
        result = await _send(client, action, reason=reason, symbol=symbol)
        print(describe_result(action, result), file=stdout)

    return await _guarded(where, action, work, err or sys.stderr)


async def _send(
    client: ControlClient, action: str, *, reason: str | None, symbol: str | None
) -> dict[str, Any]:
    # The server checks the fields too; checking here only spares a round trip for
    # the obvious mistakes with a message that names the flag.
    def need_reason() -> str:
        if reason is None or not reason.strip():
            raise UserError("--reason is required: say why (it is logged and journaled)")
        return reason

    if action == "kill":
        return await client.kill(need_reason())
    if action == "resume":
        return await client.resume(need_reason())
    if action == "pause":
        assert symbol is not None
        return await client.pause(symbol, reason or DEFAULT_PAUSE_REASON)
    if action == "unpause":
        assert symbol is not None
        return await client.unpause(symbol)
    if action == "cancel-all":
        return await client.cancel_all(reason or DEFAULT_CANCEL_REASON)
    raise UserError(f"unknown control command {action!r}")


_DONE = {
    "kill": "kill switch tripped",
    "resume": "kill switch re-armed",
    "pause": "market paused",
    "unpause": "market unpaused",
    "cancel-all": "cancel-all done",
    "policy": "policy in force",
}


def describe_result(action: str, result: Mapping[str, Any]) -> str:
    """One line for a command's result: the daemon's ``message``, else the fields."""
    message = result.get("message")
    if isinstance(message, str) and message:
        return message
    fields = [
        f"{k}={v}" for k, v in result.items() if isinstance(v, str | int | float | bool | None)
    ]
    head = _DONE.get(action, f"{action} done")
    return f"{head} ({', '.join(fields)})" if fields else head


# ---- sync commands (what the CLI calls) -----------------------------------------------


def status(
    state_dir: Target,
    as_json: bool = False,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    return asyncio.run(status_async(state_dir, as_json, out=out, err=err))


def kill(
    state_dir: Target, reason: str, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    return asyncio.run(command_async(state_dir, "kill", reason=reason, out=out, err=err))


def resume(
    state_dir: Target, reason: str, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    return asyncio.run(command_async(state_dir, "resume", reason=reason, out=out, err=err))


def pause(
    state_dir: Target,
    symbol: str,
    reason: str | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    return asyncio.run(
        command_async(state_dir, "pause", symbol=symbol, reason=reason, out=out, err=err)
    )


def unpause(
    state_dir: Target, symbol: str, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    return asyncio.run(command_async(state_dir, "unpause", symbol=symbol, out=out, err=err))


def cancel_all(
    state_dir: Target,
    reason: str | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    return asyncio.run(command_async(state_dir, "cancel-all", reason=reason, out=out, err=err))


# ---- argparse ---------------------------------------------------------------------------

CONTROL_COMMANDS = ("status", "kill", "resume", "pause", "unpause", "cancel-all", "policy")


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("state"),
        help="the daemon's state dir (its control socket is STATE_DIR/control.sock)",
    )
    p.add_argument("--socket", type=Path, metavar="PATH", help="control socket, if not the default")
    p.add_argument(
        "--tcp",
        type=int,
        metavar="PORT",
        help=f"use the TCP control API on 127.0.0.1:PORT; the token comes from {TOKEN_ENV} "
        "or --token-file",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="file holding your control token: needed on TCP; on the socket it makes you "
        "that token's role and name (admins approving a resume under the two-person rule)",
    )


def add_control_commands(subparsers: Any) -> None:
    """Register the control subcommands on ``parser.add_subparsers(...)``'s result."""
    sub = subparsers
    p = sub.add_parser(
        "status",
        help="what the running daemon is doing",
        description="Mode, kill switch, and per market: book health, depth against its "
        "thresholds, engagement, open orders, inventory, PnL and guards.",
    )
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    _connection_flags(p)
    p = sub.add_parser(
        "kill",
        help="trip the kill switch: stop quoting and cancel every order",
        description="Stop the strategy, cancel every order and confirm none is left. The "
        "daemon stays tripped (across restarts) until `backstop resume`.",
    )
    p.add_argument("--reason", required=True, help="why (logged and journaled)")
    _connection_flags(p)
    p = sub.add_parser("resume", help="re-arm a tripped kill switch")
    p.add_argument("--reason", required=True, help="why it is safe again (logged and journaled)")
    _connection_flags(p)
    p = sub.add_parser("pause", help="stop quoting one market (cancels its orders)")
    p.add_argument("symbol", metavar="SYMBOL", help="e.g. BTC/USDT")
    p.add_argument("--reason", help=f"why (default: {DEFAULT_PAUSE_REASON!r})")
    _connection_flags(p)
    p = sub.add_parser("unpause", help="let a paused market quote again")
    p.add_argument("symbol", metavar="SYMBOL", help="e.g. BTC/USDT")
    _connection_flags(p)
    p = sub.add_parser(
        "cancel-all", help="cancel every open order now (the strategy keeps running)"
    )
    p.add_argument("--reason", help=f"why (default: {DEFAULT_CANCEL_REASON!r})")
    _connection_flags(p)
    _add_policy_command(sub)


def _add_policy_command(sub: Any) -> None:
    policy = sub.add_parser(
        "policy",
        help="the intervention policy: show the one in force, put a new one in force, hash one",
        description="The policy file decides when the backstop engages, where, how far and how "
        "it quotes (docs/governance.md). `set` needs the admin role and a reason.",
    )
    verbs = policy.add_subparsers(dest="policy_command", required=True, metavar="{show,set,hash}")
    p = verbs.add_parser("show", help="the policy the running daemon is under")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    _connection_flags(p)
    p = verbs.add_parser("set", help="put a new policy in force now (admin; journaled)")
    p.add_argument("file", type=Path, metavar="FILE", help="the new policy (TOML)")
    p.add_argument("--reason", required=True, help="why (logged and journaled)")
    _connection_flags(p)
    p = verbs.add_parser("hash", help="check a policy file offline and print its version hash")
    p.add_argument("file", type=Path, metavar="FILE")


def is_control_command(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) in CONTROL_COMMANDS


def target_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ControlTarget:
    """Where to connect: --tcp (token from env or --token-file), --socket, or the state dir."""
    env = os.environ if environ is None else environ
    if args.tcp is None and args.token_file is not None:
        mine = _read_token_file(args.token_file)
        if args.socket is not None:
            return ControlTarget(socket_path=args.socket, token=mine)
        return ControlTarget.for_state_dir(args.state_dir, mine)
    if args.tcp is not None:
        if args.token_file is not None:
            try:
                token = args.token_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise UserError(f"--token-file {args.token_file}: {e.strerror or e}") from None
        else:
            token = env.get(TOKEN_ENV, "").strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise UserError(
                f"--tcp needs the control token: set {TOKEN_ENV} or pass --token-file "
                "(never on the command line)"
            )
        return ControlTarget.tcp(args.tcp, SecretStr(token))
    if args.socket is not None:
        return ControlTarget(socket_path=args.socket)
    return ControlTarget.for_state_dir(args.state_dir)


def _read_token_file(path: Path) -> SecretStr:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise UserError(f"--token-file {path}: {e.strerror or e}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(f"--token-file {path}: too short to be a control token")
    return SecretStr(token)


def run_control_command(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the parsed control subcommand; returns the exit status."""
    stderr = err or sys.stderr
    if args.command == "policy" and args.policy_command == "hash":
        return policy_hash(args.file, out=out, err=stderr)
    try:
        target = target_from_args(args, environ)
    except UserError as e:
        print(f"backstop {args.command}: {e}", file=stderr)
        return EXIT_USAGE
    if args.command == "policy":
        return asyncio.run(policy_async(target, args, out=out, err=stderr))
    if args.command == "status":
        return status(target, args.json, out=out, err=stderr)
    return asyncio.run(
        command_async(
            target,
            args.command,
            reason=getattr(args, "reason", None),
            symbol=getattr(args, "symbol", None),
            out=out,
            err=stderr,
        )
    )


# ---- the policy -------------------------------------------------------------------------


def policy_hash(path: Path, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``backstop policy hash FILE``: validate it and print its version (no daemon needed)."""
    from bot.governance.policy import load_policy_file

    try:
        loaded = load_policy_file(path)
    except UserError as e:
        print(f"backstop policy hash: {e}", file=err or sys.stderr)
        return EXIT_USAGE
    print(f"{loaded.hash}  {path}  {loaded.policy.name}".rstrip(), file=out or sys.stdout)
    return EXIT_OK


async def policy_async(
    where: Target,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    stdout = out or sys.stdout
    verb = args.policy_command

    async def work(client: ControlClient) -> None:
        if verb == "show":
            data = await client.policy()
            if args.json:
                print(json.dumps(data, indent=2, default=str), file=stdout)
                return
            print(
                f"policy {data.get('hash')} ({data.get('name') or 'unnamed'})\n"
                f"  from {data.get('source')}; {data.get('changes', 0)} change(s) since start",
                file=stdout,
            )
            print(data.get("text") or json.dumps(data.get("policy"), indent=2), file=stdout)
            return
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{args.file}: cannot read it: {e}") from None
        if not args.reason.strip():
            raise UserError("--reason is required: say why (it is logged and journaled)")
        print(describe_result("policy", await client.set_policy(text, args.reason)), file=stdout)

    return await _guarded(where, f"policy {verb}", work, err or sys.stderr)


# ---- human status -----------------------------------------------------------------------

_KILL_STYLE = {"armed": "bold green", "tripped_cancelling": "bold red", "tripped_flat": "bold red"}
_BOOK_STYLE = {"ok": "green", "stale": "yellow", "invalid": "red", "disconnected": "red"}


def _quote(x: Any) -> str:
    if not isinstance(x, int | float):
        return "-"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.2f}M"
    if a >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.2f}"


def _amount(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, int | float) else "-"


def _not_ok(guards: Any) -> list[tuple[str, str]]:
    if not isinstance(guards, Mapping):
        return []
    return [(str(k), str(v)) for k, v in guards.items() if str(v) != "ok"]


def _guard_style(state: str) -> str:
    level = state.split(":", 1)[0].strip()
    return "red" if level in ("kill", "pause", "tripped") else "yellow"


def _guards_cell(guards: Any) -> Text:
    """The table shows a summary; the details follow the table, one line each."""
    if not isinstance(guards, Mapping) or not guards:
        return Text("-", style="dim")
    bad = _not_ok(guards)
    if not bad:
        return Text("all ok", style="green")
    worst = "red" if any(_guard_style(state) == "red" for _, state in bad) else "yellow"
    return Text(f"{len(bad)} not ok", style=worst)


def _guard_lines(prefix: str, guards: Any) -> list[Text]:
    return [
        Text(f"{prefix}{name}: {state}", style=_guard_style(state))
        for name, state in _not_ok(guards)
    ]


def _depth(bands: Any) -> Text:
    if not isinstance(bands, list) or not bands:
        return Text("-", style="dim")
    out = Text()
    for i, band in enumerate(bands):
        if not isinstance(band, Mapping):
            continue
        threshold = band.get("threshold_quote")
        bid, ask = band.get("bid_quote"), band.get("ask_quote")
        low = isinstance(threshold, int | float) and any(
            isinstance(v, int | float) and v < threshold for v in (bid, ask)
        )
        line = f"{band.get('band_bps', '?'):>4}bp {_quote(bid)} / {_quote(ask)}"
        if isinstance(threshold, int | float):
            line += f" (min {_quote(threshold)})"
        out.append(("\n" if i else "") + line, style="red" if low else "")
    return out


def _book(book: Any) -> Text:
    if not isinstance(book, Mapping):
        return Text("-", style="dim")
    health = str(book.get("health", "?"))
    text = Text(health, style=_BOOK_STYLE.get(health, ""))
    age = book.get("age_s")
    if isinstance(age, int | float):
        text.append(f" {age:.1f}s", style="dim")
    spread = book.get("spread_bps")
    if isinstance(spread, int | float):
        text.append(f", spread {spread:.1f}bp")
    return text


def _engaged(market: Mapping[str, Any]) -> Text:
    detector = market.get("detector")
    text = Text(
        "yes" if market.get("engaged") else "no",
        style="bold magenta" if market.get("engaged") else "",
    )
    if detector:
        text.append(f" ({detector})", style="dim")
    warning = market.get("warning")
    if isinstance(warning, Mapping):
        text.append(_warning(warning))
    if market.get("paused"):
        text.append("\nPAUSED", style="bold yellow")
        if market.get("pause_reason"):
            text.append(f": {market['pause_reason']}", style="yellow")
    return text


_WARNING_STYLE = {"high": "bold red", "elevated": "yellow", "low": "dim", "unknown": "dim"}


def _warning(warning: Mapping[str, Any]) -> Text:
    """The early warning under the detector state: its level and probability, and while
    the alarm is up the feature that pushes it most (docs/early-warning.md)."""
    level = str(warning.get("level", "unknown"))
    p = warning.get("probability")
    line = f"\nwarning {level}" + (f" {p:.0%}" if isinstance(p, int | float) else "")
    top = warning.get("top")
    if warning.get("alarm") and isinstance(top, list) and top and isinstance(top[0], Mapping):
        line += f" ({top[0].get('feature', '?')})"
    if warning.get("pre_armed"):
        line += ", pre-armed"
    return Text(line, style=_WARNING_STYLE.get(level, ""))


def _pnl(pnl: Any) -> str:
    if not isinstance(pnl, Mapping):
        return "-"
    realised, unrealised = pnl.get("realised_quote"), pnl.get("unrealised_quote")
    total = pnl.get("total_quote")
    if total is None and isinstance(realised, int | float) and isinstance(unrealised, int | float):
        total = realised + unrealised
    return f"{_quote(total)} ({_quote(realised)} realised)"


def _orders(market: Mapping[str, Any]) -> str:
    """Open orders, and the creates held back so far when there were any."""
    cell = str(market.get("open_orders", "-"))
    held = market.get("orders_held_back")
    if isinstance(held, int) and held > 0:
        cell += f"\n({held:,} held back)"
    return cell


def status_table(data: Mapping[str, Any]) -> Table:
    table = Table(title="markets", title_justify="left", show_lines=True)
    for column in ("market", "book", "depth bid / ask", "engaged", "orders", "inventory",
                   "committed", "pnl", "guards"):  # fmt: skip
        table.add_column(column, no_wrap=column in ("market", "depth bid / ask", "guards"))
    markets = data.get("markets")
    for market in markets if isinstance(markets, list) else []:
        if not isinstance(market, Mapping):
            continue
        inventory = market.get("inventory")
        inv = (
            "\n".join(f"{k} {_amount(v)}" for k, v in inventory.items())
            if isinstance(inventory, Mapping) and inventory
            else "-"
        )
        table.add_row(
            str(market.get("symbol", "?")),
            _book(market.get("book")),
            _depth(market.get("depth")),
            _engaged(market),
            _orders(market),
            inv,
            _quote(market.get("committed_quote")),
            _pnl(market.get("pnl")),
            _guards_cell(market.get("guards")),
        )
    return table


def _option_lines(options: object) -> list[Text]:
    """The option book's greeks, then one line per engaged option (``status.options``)."""
    if not isinstance(options, Mapping):
        return []
    raw = options.get("limits")
    limits: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    head = Text(
        f"options{' (SYNTHETIC)' if options.get('synthetic') else ''} "
        f"on {options.get('underlying', '?')}: "
        f"net delta {_num(options.get('net_delta'))} (cap {_num(limits.get('max_delta_total'))}), "
        f"vega {_num(options.get('vega'))} (cap {_num(limits.get('max_vega_total'))}), "
        f"gamma {_num(options.get('gamma'))} (cap {_num(limits.get('max_gamma_total'))}), "
        f"engaged {options.get('engaged', 0)}, open orders {options.get('open_orders', 0)}"
    )
    lines = [head]
    rows = options.get("options")
    for o in rows if isinstance(rows, list) else []:
        if not (isinstance(o, Mapping) and o.get("engaged")):
            continue
        lines.append(
            Text(
                f"  option {o.get('symbol', '?')} {o.get('detector', '?')}: "
                f"iv {_num(o.get('iv_mid'))}, vega depth bid {_num(o.get('bid_vega'))} "
                f"ask {_num(o.get('ask_vega'))}, position {_num(o.get('position'))}, "
                f"open orders {o.get('open_orders', 0)}",
                style="bold yellow",
            )
        )
    return lines


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def print_status(data: Mapping[str, Any], out: TextIO) -> None:
    # Not a terminal (a pipe, a file, a log): wide enough that no cell wraps.
    console = Console(file=out, width=None if out.isatty() else 200, highlight=False)
    kill = data.get("kill_switch")
    kill = kill if isinstance(kill, Mapping) else {}
    state = str(kill.get("state", "?"))
    head = Text("backstop", style="bold")
    head.append(f"  mode {data.get('mode', '?')}")
    if "pid" in data:
        head.append(f"  pid {data['pid']}")
    uptime = data.get("uptime_s")
    if isinstance(uptime, int | float):
        hours, rest = divmod(int(uptime), 3600)
        head.append(f"  up {hours}h{rest // 60:02d}m")
    head.append("  kill switch ")
    head.append(state.upper().replace("_", " "), style=_KILL_STYLE.get(state, "bold"))
    if state != "armed" and kill.get("reason"):
        head.append(f" ({kill['reason']}, by {kill.get('source') or '?'}")
        head.append(f", since {kill['since']})" if kill.get("since") else ")")
    console.print(head)
    policy = data.get("policy")
    if isinstance(policy, Mapping):
        line = Text(f"policy {str(policy.get('hash'))[:12]} ", style="dim")
        line.append(f"{policy.get('name') or 'unnamed'} (from {policy.get('source')})", style="dim")
        pending = policy.get("pending_approval")
        if isinstance(pending, Mapping):
            line.append(
                f"  resume approved by {', '.join(pending.get('approvers') or [])}: needs "
                f"{pending.get('needed')} admins",
                style="bold yellow",
            )
        console.print(line)
    console.print(status_table(data))
    markets = data.get("markets")
    lines = _guard_lines("guard ", data.get("guards"))
    for market in markets if isinstance(markets, list) else []:
        if isinstance(market, Mapping):
            lines += _guard_lines(f"guard {market.get('symbol', '?')} ", market.get("guards"))
    for line in lines:
        console.print(line)
    for line in _option_lines(data.get("options")):
        console.print(line)
    pnl = data.get("pnl")
    if isinstance(pnl, Mapping):
        console.print(f"total pnl: {_pnl(pnl)}")
    control = data.get("control")
    if isinstance(control, Mapping):
        failures = control.get("auth_failures", 0)
        console.print(
            Text(
                f"control: refused auth attempts {failures}",
                style="bold red" if failures else "dim",
            )
        )
