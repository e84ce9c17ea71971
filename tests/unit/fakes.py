"""A recording fake transport and a scripted Zato server model, for unit tests at the transport seam.

pyinfra's FakeConnector and kopf's "mock our own wrappers" habit: the fake implements `Transport` and nothing
below it. It records every call (`FakeTransport.calls`) and answers from `FakeServer`, a small model of one Zato
server's machine: files as a dict, a process that runs or not, a log, and the knobs a test turns to make faults
(`reachable`, `fail_start`, `on_call` to act right after a given call, e.g. drop the network after `zato stop`).

The fake recognises the reconciler's fixed scripts by identity (they are module constants) and carries out what
each would do on a real server; an argv it does not know fails the test loudly instead of answering something.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from reconciler.apply import files as files_mod
from reconciler.apply import hotdeploy, lease, logtail, restart, rollout
from reconciler.errors import Unreachable
from reconciler.transport import RunResult


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ok(out: str = "") -> RunResult:
    return RunResult(0, out.encode(), b"")


@dataclass
class FakeServer:
    """One server's machine as the reconciler sees it through the transport."""

    name: str
    server_dir: str
    files: dict[str, bytes] = field(default_factory=dict)
    running: bool = True
    pid: int = 100
    log: bytearray = field(default_factory=bytearray)
    inode: int = 7
    reachable: bool = True
    #: `zato start` fails (exit 18) this many more times
    fail_start: int = 0
    #: called with every argv after it ran (a test drops the network after a given step, for instance)
    on_call: Callable[[FakeServer, Sequence[str]], None] | None = None
    #: what the server loaded at its last start: path -> sha256 (service_sources and extra_paths it read)
    loaded: dict[str, str] = field(default_factory=dict)
    #: (event, server) in the order they happened, shared between servers of a cluster to check "never two down"
    journal: list[tuple[str, str]] = field(default_factory=list)
    clock: list[int] = field(default_factory=lambda: [1_000_000])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, line: str) -> None:
        self.log += f"2026-11-29 10:00:00,000 - INFO - {self.pid}:Main - zato:1 - {line}\n".encode()

    def start(self) -> None:
        self.pid += 1
        self.running = True
        self.loaded = {p: sha(b) for p, b in self.files.items() if not p.startswith(self.server_dir + "/work/")}
        self.journal.append(("started", self.name))
        self.say(f"Started `{self.name}@prod` (pid: {self.pid})")

    def stop(self) -> None:
        self.running = False
        self.journal.append(("stopped", self.name))


class FakeTransport:
    """`Transport` over a `FakeServer`; `calls` holds a short name of every call, in order."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.label = f"{server.name} (fake)"
        self.calls: list[str] = []

    # --- the protocol ----------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> RunResult:
        s = self.server
        name = self._name(argv)
        with s.lock:
            self.calls.append(name)
            if not s.reachable:
                raise Unreachable(f"{self.label}: connection refused")
            result = self._answer(name, list(argv), stdin)
        if s.on_call is not None:
            s.on_call(s, argv)
        return result

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        with self.server.lock:
            self.calls.append(f"put {path}")
            if not self.server.reachable:
                raise Unreachable(f"{self.label}: connection refused")
            self.server.files[path] = data

    def close(self) -> None:
        self.calls.append("close")

    # --- what the server does --------------------------------------------------------------------------------
    SCRIPTS: ClassVar[dict[str, str]] = {
        files_mod.APPLY_SCRIPT: "txn-apply", files_mod.ROLLBACK_SCRIPT: "txn-rollback",
        rollout.HASH_SCRIPT: "hashes", rollout.MARK_SCRIPT: "log-mark", logtail.READ_SCRIPT: "read-log",
        restart.RUNNING_SCRIPT: "running?", restart.WAIT_GONE_SCRIPT: "wait-gone", lease.LEASE_SCRIPT: "lease",
        restart.CLEAR_STALE_SCRIPT: "clear-stale",
        hotdeploy.INSTALL_SCRIPT: "install",
    }

    def _name(self, argv: Sequence[str]) -> str:
        if len(argv) > 2 and argv[0] == "sh" and argv[1] == "-c":
            return self.SCRIPTS.get(argv[2], "unknown-script")
        if len(argv) > 1 and argv[1] in ("start", "stop", "wait"):
            return f"zato {argv[1]}"
        return " ".join(argv[:2])

    def _answer(self, name: str, argv: list[str], stdin: bytes | None) -> RunResult:
        s = self.server
        args = argv[4:] if argv[0] == "sh" else argv
        if name == "mkdir -p":
            return ok()
        if name == "test -f":
            return RunResult(0 if args[2] in s.files else 1, b"", b"")
        if name == "hashes":
            return ok("".join(f"{p}\t{sha(s.files[p]) if p in s.files else '-'}\n" for p in args))
        if name == "log-mark":
            return ok(f"{len(s.log)} {s.inode}\n")
        if name == "read-log":
            off = int(args[1])
            return ok(f"@@stat {s.inode} {len(s.log)}\n@@new\n" + s.log[off:].decode())
        if name == "running?":
            return ok(f"running {s.pid}" if s.running else "stopped")
        if name == "clear-stale":  # the model keeps no pidfile of a stopped server
            return ok("absent")
        if name == "wait-gone":
            return ok("gone") if not s.running else RunResult(1, b"process alive: 1", b"")
        if name == "zato stop":
            if not s.running:
                return RunResult(2, b"", b"no pidfile")
            s.stop()
            return ok()
        if name == "zato start":
            if s.running:
                return RunResult(16, b"", b"already running")
            if s.fail_start:
                s.fail_start -= 1
                return RunResult(18, b"start failed", b"")
            s.start()
            return ok()
        if name == "zato wait":
            return ok() if s.running else RunResult(1, b"", b"")
        if name == "txn-apply":
            return self._txn(args[0], rollback=False)
        if name == "txn-rollback":
            return self._txn(args[0], rollback=True)
        if name == "lease":
            return self._lease(*args)
        if name == "install":
            return self._install(args, stdin or b"")
        raise AssertionError(f"the fake server does not know {argv[:3]!r}")

    def _txn(self, tdir: str, *, rollback: bool) -> RunResult:
        s = self.server
        ops = [line.split("\t", 1) for line in s.files[f"{tdir}/ops"].decode().splitlines() if line]
        if not rollback:
            for line in s.files.get(f"{tdir}/sums", b"").decode().splitlines():
                want, _, rel = line.partition("  ")
                if sha(s.files.get(f"{tdir}/{rel}", b"")) != want:
                    return RunResult(3, b"uploaded files do not match their sha256", b"")
        for n, dst in ops:
            old, absent, new = f"{tdir}/old/{n}", f"{tdir}/old/{n}.absent", f"{tdir}/new/{n}"
            if rollback:
                if old in s.files:
                    s.files[dst] = s.files[old]
                elif absent in s.files:
                    s.files.pop(dst, None)
                continue
            if old not in s.files and absent not in s.files:
                if dst in s.files:
                    s.files[old] = s.files[dst]
                else:
                    s.files[absent] = b""
            if new in s.files:
                s.files[dst] = s.files[new]
            else:
                s.files.pop(dst, None)
        return ok("rolled-back" if rollback else "applied")

    def _lease(self, action: str, path: str, token: str, ttl: str, owner: str, pid: str, state: str,
               force: str) -> RunResult:
        s = self.server
        now = s.clock[0]
        cur = s.files.get(path, b"").decode().strip()
        parts = cur.split("\t") if cur else ["", "0", "0", "", "", ""]
        ctoken, cexp, csince = parts[0], int(parts[1]), parts[2]

        def write(since: str) -> None:
            s.files[path] = f"{token}\t{now + int(ttl)}\t{since}\t{owner}\t{pid}\t{state}\n".encode()

        if action == "acquire":
            if not cur or ctoken == token or cexp <= now or (force and ctoken == force):
                write(csince if ctoken == token else str(now))
                return ok(f"@@held {now}\n")
            return ok(f"@@taken {now}\n{cur}\n")
        if action == "renew":
            if ctoken == token:
                write(csince)
                return ok(f"@@held {now}\n")
            return ok(f"@@lost {now}\n{cur}\n")
        if ctoken == token:
            s.files.pop(path, None)
        return ok(f"@@released {now}\n")

    def _install(self, args: list[str], body: bytes) -> RunResult:
        """The tar on stdin (`sums` and `files/<name>`): verified as a whole, then copied into the pickup dir."""
        s = self.server
        pickup = args[1]
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        sums = [line.split("  ", 1) for line in members["sums"].decode().splitlines() if line]
        bad = [name for want, name in sums if sha(members.get(f"files/{name}", b"")) != want]
        if bad:
            return RunResult(3, f"@@bad {' '.join(bad)}\n".encode(), b"")
        for _want, name in sums:
            s.files[posixpath.join(pickup, name)] = members[f"files/{name}"]
            if s.running:  # Zato picks it up and says so
                s.say(f"Deployed 1 service from `{s.server_dir}/work/hot-deploy/current/{name}` -> ['x']")
        return ok("@@copied\n")
