"""One daemon per state dir: a pid file held under an exclusive ``flock``.

The lock, not the file's existence, is what counts: the kernel drops it when the
process dies however it dies (SIGKILL, OOM, power loss of a container), so a pid file
left behind by a dead daemon is simply taken over, and no pid-reuse guesswork
("is pid 4242 still a backstop?") is needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from bot.errors import OperationalError, UserError

PID_FILE_NAME = "backstop.pid"


class AlreadyRunning(UserError):
    """Another daemon holds the state dir."""

    exit_code = 1


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class PidFile:
    """``with PidFile(state_dir / "backstop.pid"):`` for the daemon's whole life.

    Entering writes our pid and holds the lock, or raises :class:`AlreadyRunning` naming
    the other daemon's pid. ``previous_pid`` is the pid found in a stale file that was
    taken over (worth a log line), else None. Leaving removes the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous_pid: int | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OperationalError(f"cannot create state dir {self.path.parent}: {e}") from None
        # Loop: the file we locked may have been unlinked by its previous holder between
        # our open() and flock() (it removes the file on exit, still holding the lock);
        # a lock on an unlinked inode excludes nobody, so lock the file now at the path.
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise OperationalError(f"cannot open pid file {self.path}: {e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid is not None else "pid unknown"
                raise AlreadyRunning(
                    f"another backstop ({who}) is running on state dir {self.path.parent} "
                    f"(it holds {self.path}); stop it first, or use another --state-dir"
                ) from None
            except OSError as e:
                os.close(fd)
                raise OperationalError(f"cannot lock pid file {self.path}: {e}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.previous_pid = _read_pid(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise OperationalError(f"cannot write pid file {self.path}: {e}") from None
        self._fd = fd

    def release(self) -> None:
        """Idempotent. Unlink first, then unlock: see the loop in :meth:`acquire`."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
