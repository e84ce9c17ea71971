"""Local transport: for a reconciler running on the same machine as a one-box Zato (`transport: local`).

It keeps the SSH transport's semantics so the rest of the reconciler cannot tell them apart: argv runs
without a shell, stdin is closed (EOF) unless given, a program that cannot be started ends as it would under
a remote shell (127 not found, 126 not executable), a timeout is `errors.Unreachable`, and `put` creates or
truncates the file and then sets its mode exactly (not filtered by the umask).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Sequence

from reconciler import errors
from reconciler.transport import RunResult

__all__ = ["LocalTransport"]


class LocalTransport:
    """Runs commands and writes files on this machine, as the reconciler's own user."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return f"LocalTransport({self.label!r})"

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> RunResult:
        if not argv:
            raise ValueError("run() needs a non-empty argv")
        args = list(argv)
        what = args[0]
        try:
            proc = subprocess.run(
                args,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise errors.Unreachable(
                f"{self.label}: `{what}` did not finish within {timeout:g}s",
                hint="the machine may be overloaded, or the command is stuck",
            ) from e
        except FileNotFoundError:
            return RunResult(127, b"", f"{what}: not found".encode())
        except PermissionError:
            return RunResult(126, b"", f"{what}: Permission denied".encode())
        except OSError as e:
            return RunResult(126, b"", f"{what}: {e.strerror or e}".encode())
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        except OSError as e:
            reason = e.strerror or str(e)
            hint = (
                "the folder must exist; the reconciler creates it before writing"
                if e.errno == errno.ENOENT
                else "the reconciler's user must be allowed to write there"
                if e.errno in (errno.EACCES, errno.EPERM)
                else ""
            )
            raise errors.Stalled(f"{self.label}: cannot write {path}: {reason}", hint=hint) from e

    def close(self) -> None:
        """Nothing to release."""
