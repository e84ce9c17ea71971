"""The one seam between the reconciler and a server's machine.

Everything that touches a server goes through `Transport`: run an argv (never a shell string built from input),
put bytes at a path, and close. `ssh.py` implements it with paramiko (pooled, TCP_NODELAY, strict host keys) and
`local.py` with subprocess for a reconciler on the same host as a one-box Zato. Unit tests fake this protocol and
nothing below it, so paramiko is never monkeypatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


def _default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


@dataclass(frozen=True)
class SSHOptions:
    """How the reconciler logs in to servers' machines (here, not in transport/ssh.py, so a run that reaches
    only `transport: local` servers never imports paramiko)."""

    #: private key file; None means the SSH agent and the default keys (~/.ssh/id_*)
    identity: Path | None = None
    #: the ONLY known_hosts file consulted; host keys are never added to it automatically
    known_hosts: Path = field(default_factory=_default_known_hosts)
    #: seconds for TCP connect, SSH banner and authentication
    connect_timeout: float = 10.0
    #: seconds between SSH keepalive packets on idle connections (0 disables them)
    keepalive: float = 30.0
    #: the hosts' sshd MaxSessions (OpenSSH's default is 10); commands at once per connection stay below it
    max_sessions: int = 10
    #: seconds an SFTP request may take before the put is given up as Unreachable
    io_timeout: float = 60.0
    #: always True in production; False only exists to measure what Nagle costs
    tcp_nodelay: bool = True
