"""One owner at a time: an exclusive `flock` on a file in the state dir, holding the owner's pid.

Two locks use it: `<state_dir>/lock`, taken by every apply (a daemon and a manual `apply` take turns), and
`<state_dir>/daemon.lock`, held by a daemon for its whole life (one daemon per state dir). flock is released by
the kernel when the process dies, so a crashed reconciler never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class LockHeld(Exception):
    """Someone else holds the lock; `holder` is the pid written in the file (or "unknown")."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.path = path
        self.holder = holder


class PidLock:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `LockHeld` at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(self.path, holder) from e
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def is_held(self) -> bool:
        """Whether someone holds the lock now (tested by trying to share it)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie, killed but not yet reaped, counts as gone)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def process_start(pid: int) -> str:
    """When the process started (clock ticks since boot, /proc's field 22), "" where /proc cannot tell. With the
    pid it names one process: a pid reused after a restart (pid 1 in a container) has another start."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, start: str) -> bool:
    """Whether the process `pid` that started at `start` (from `process_start`; "" if unknown) still runs."""
    return pid_alive(pid) and (not start or process_start(pid) in ("", start))
