"""The one seam between the reconciler and a server's machine.

Everything that touches a server goes through `Transport`: run an argv (never a shell string built from input),
put bytes at a path, and close. `ssh.py` implements it with paramiko (pooled, TCP_NODELAY, strict host keys) and
`local.py` with subprocess for a reconciler on the same host as a one-box Zato. Unit tests fake this protocol and
nothing below it, so paramiko is never monkeypatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunResult:
    """What a command printed and how it ended."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def err_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


class Transport(Protocol):
    """A connection to one server's machine. Implementations are safe to use from one thread at a time per call
    site; the SSH pool hands each server its own channel over a shared connection."""

    #: a label for messages, e.g. "server1 (zato@10.0.0.11:22)"
    label: str

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> RunResult:
        """Run argv on the machine. With SSH the argv is joined with `shlex.join`, so every argument reaches the
        remote program as given. Raises `errors.Unreachable` when the machine cannot be reached or the command
        does not end within `timeout`."""
        ...

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write `data` to `path` (its folder must exist), creating or truncating it."""
        ...

    def close(self) -> None:
        ...


def script_argv(script: str, *args: str) -> list[str]:
    """An argv that runs a constant POSIX sh script with positional arguments: `sh -c SCRIPT sh ARG...`.

    The script text is ours and fixed; every value from a manifest or a server travels as a positional
    parameter, so nothing from input is ever parsed by a shell."""
    return ["sh", "-c", script, "sh", *args]
