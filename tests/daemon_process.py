"""The bot as an operator runs it: ``backstop run`` in its own process, logging JSON.

The test's event loop keeps serving the in-process exchange emulator while it waits,
so the daemon is started with asyncio's subprocess support and its log is read by a
task. Tests wait for log records with :meth:`Daemon.wait_for` (an awaited condition,
not a sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BACKSTOP = str(Path(sys.executable).parent / "backstop")
Record = dict[str, Any]


class Daemon:
    def __init__(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.args = [BACKSTOP, *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.records: list[Record] = []
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Daemon:
        self._proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        self._reader = asyncio.ensure_future(self._read())
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        async for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            async with self._changed:
                self.lines.append(line)
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.records.append(json.loads(line))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def find(self, predicate: Callable[[Record], bool]) -> Record | None:
        return next((r for r in self.records if predicate(r)), None)

    def events(self, name: str) -> list[Record]:
        return [r for r in self.records if r.get("event") == name]

    async def wait_for(
        self, predicate: Callable[[Record], bool], *, within_s: float = 60.0, what: str = ""
    ) -> Record:
        """The first log record (past or future) matching ``predicate``."""

        async def first() -> Record:
            async with self._changed:
                while True:
                    found = self.find(predicate)
                    if found is not None:
                        return found
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(
                            f"daemon exited before {what or 'the awaited record'}:\n"
                            + "\n".join(self.lines[-40:])
                        )
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(first(), within_s)
        except TimeoutError:
            raise AssertionError(
                f"no {what or 'matching record'} within {within_s}s:\n"
                + "\n".join(self.lines[-40:])
            ) from None

    async def wait_event(self, name: str, *, within_s: float = 60.0, **fields: Any) -> Record:
        return await self.wait_for(
            lambda r: r.get("event") == name and all(r.get(k) == v for k, v in fields.items()),
            within_s=within_s,
            what=f"{name} {fields or ''}",
        )

    def signal(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    async def wait(self, within_s: float = 60.0) -> int:
        assert self._proc is not None
        code = await asyncio.wait_for(self._proc.wait(), within_s)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> None:
        """Kill if still running (test teardown)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)
            await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


async def run_cli(args: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run a one-shot ``backstop`` command; ``(exit code, stdout + stderr)``."""
    proc = await asyncio.create_subprocess_exec(
        BACKSTOP,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")
