"""A real ``backstop run`` with its control API on 127.0.0.1 and the dashboard on, for
the tests that drive the dashboard in a headless Chromium.

The daemon is a plain subprocess (Playwright's sync API runs outside any event loop);
its JSON log is read by a thread, which hands over the TCP port once it listens.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class DashboardDaemon:
    proc: subprocess.Popen[str]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, token: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data


def _drain(proc: subprocess.Popen[str], port: queue.Queue[int]) -> None:
    """Read the daemon's JSON log (a pipe left unread would block it) and hand over the
    TCP port once it listens."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "control_listening" and record.get("tcp"):
                port.put(int(str(record["tcp"]).rsplit(":", 1)[1]))
    port.put(0)  # the log ended: the daemon is gone


@contextmanager
def dashboard_daemon(
    run_args: Sequence[str],
    tokens: Mapping[str, str],
    *,
    state_prefix: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[DashboardDaemon]:
    """``backstop run *run_args`` with the control API, the dashboard (refreshed every
    0.25 s) and ``tokens``; stopped, and its state dir removed, on exit."""
    state = Path(tempfile.mkdtemp(prefix=state_prefix, dir="/tmp"))  # short: a socket lives there
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BACKSTOP_CONTROL__TCP_ENABLED": "true",
        "BACKSTOP_CONTROL__TCP_PORT": "0",
        "BACKSTOP_CONTROL__DASHBOARD": "true",
        "BACKSTOP_CONTROL__DASHBOARD_REFRESH_S": "0.25",
        "BACKSTOP_CONTROL__TOKENS": json.dumps(dict(tokens)),
        **(env or {}),
    }
    exe = Path(sys.executable).parent / "backstop"
    proc = subprocess.Popen(
        [
            str(exe), "run", *run_args, "--control", "--state-dir", str(state),
            "--log-format", "json",
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )  # fmt: skip
    ports: queue.Queue[int] = queue.Queue()
    threading.Thread(target=_drain, args=(proc, ports), daemon=True).start()
    try:
        port = ports.get(timeout=60)
        assert port, f"the daemon exited before listening (status {proc.poll()})"
        yield DashboardDaemon(proc, port)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(state, ignore_errors=True)
