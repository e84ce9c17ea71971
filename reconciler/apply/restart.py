"""Restart one Zato server safely: stop, wait until it is really gone, start, wait until it is really ready.

`zato stop` returns at once (it sends SIGTERM and deletes the pidfile) and `zato start` returns after about 1.2 s
without waiting for readiness (docs/zato-facts.md section 6). So after stop we wait until the process is gone and
the port is free (or start would fail with "Address already taken"), and after start until the log shows
``Started `server@cluster` `` past the offset taken before the stop and `zato wait` gets an answer from
/zato/ping. Zato starts even when a service source fails to import, so the log between start and ready is read
for `Could not load source` / `Could not import module` lines naming what we installed.

Two things a real 3.2 server was seen doing (docs/zato-facts.md): `zato start` prints OK and exits 0 even when the
server then dies while importing, so the wait for ready also watches the process and fails as soon as it is gone
(never a server reported ready that is not running); and a server that died leaves a stale pidfile, on which
`zato stop` and `zato info` exit 16 (`ProcessLookupError`, `NoSuchProcess`). Such a server is already stopped: the
stale pidfile is deleted, exactly as `zato start` itself deletes it, and the restart goes on. A start takes 9-16 s
before /zato/ping answers (32 s was seen once on a loaded machine), well inside the default `ready_timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reconciler.apply.logtail import read_log
from reconciler.core.state import LogMark
from reconciler.errors import ReconcilerError
from reconciler.transport import RunResult, Transport, script_argv
from reconciler.zato.logscan import clean_line
from reconciler.zato.profiles import COULD_NOT_IMPORT, COULD_NOT_LOAD, STARTED

WAIT_GONE_SCRIPT = r"""
pid=$1; port=$2; limit=$3
hex=$(printf ':%04X' "$port")
i=0
while :; do
  alive=0; if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then alive=1; fi
  listening=0
  if awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
       /proc/net/tcp /proc/net/tcp6 2>/dev/null; then listening=1; fi
  if [ $alive = 0 ] && [ $listening = 0 ]; then echo gone; exit 0; fi
  i=$((i + 1))
  if [ $i -ge $((limit * 10)) ]; then echo "process alive: $alive, port listening: $listening"; exit 1; fi
  sleep 0.1
done
"""

RUNNING_SCRIPT = r"""
cd "$1" || exit 2
if [ -s pidfile ] && [ -d "/proc/$(cat pidfile)" ]; then echo "running $(cat pidfile)"; else echo stopped; fi
"""

#: delete the pidfile only if it still names the same dead process (what `zato start` does with a stale one)
CLEAR_STALE_SCRIPT = r"""
cd "$1" || exit 2
[ -f pidfile ] || { echo absent; exit 0; }
p=$(cat pidfile)
if [ -n "$p" ] && [ -d "/proc/$p" ]; then echo "alive $p"; exit 1; fi
rm -f pidfile && echo "cleared $p"
"""

#: consecutive polls that must find the process gone before a start is declared dead (the pidfile may lag)
DEAD_POLLS = 2

HAPROXY_SCRIPT = r"""
sock=$1; cmd=$2
if command -v socat >/dev/null 2>&1; then
  printf '%s\n' "$cmd" | socat stdio "unix-connect:$sock"
elif command -v python3 >/dev/null 2>&1; then
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1]); s.sendall((sys.argv[2] + "\n").encode())
out = b""
while True:
    b = s.recv(65536)
    if not b: break
    out += b
sys.stdout.write(out.decode())' "$sock" "$cmd"
else
  echo "neither socat nor python3 is on this host to talk to HAProxy's socket"; exit 127
fi
"""


@dataclass
class Readiness:
    ok: bool
    lines: list[str] = field(default_factory=list)  # what the server logged from the mark to ready (or timeout)
    error: str = ""
    mark: LogMark | None = None


class ServerControl:
    """The `zato` command and the log of one server, through its transport."""

    def __init__(
        self,
        transport: Transport,
        zato: str,
        server_dir: str,
        port: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll: float = 0.25,
    ) -> None:
        self.t = transport
        self.zato = zato
        self.dir = server_dir
        self.port = port
        self.clock = clock
        self.sleep = sleep
        self.poll = poll

    def running_pid(self) -> int | None:
        r = self.t.run(script_argv(RUNNING_SCRIPT, self.dir))
        parts = r.text().split()
        return int(parts[1]) if len(parts) == 2 and parts[0] == "running" and parts[1].isdigit() else None

    def stop(self, timeout: float) -> None:
        pid = self.running_pid()
        if pid is None:
            self.clear_stale_pidfile()  # `zato stop` would exit 16 on it (ProcessLookupError)
        r = self.t.run([self.zato, "stop", self.dir], timeout=timeout)
        # 2: no pidfile (already stopped). 16 is an exception: a stale pidfile when the process is gone (then
        # nothing is left to stop), anything else (e.g. the process belongs to another user) is an error
        if r.exit_code == 16 and self.running_pid() is None:
            self.clear_stale_pidfile()
        elif r.exit_code not in (0, 2):
            raise ReconcilerError(f"`zato stop` exited {r.exit_code}: {_said(r)}")
        self.wait_gone(pid, timeout)

    def clear_stale_pidfile(self) -> None:
        """Delete a pidfile naming a process that is gone, as `zato start` does; a live one is left alone."""
        self.t.run(script_argv(CLEAR_STALE_SCRIPT, self.dir))

    def wait_gone(self, pid: int | None, timeout: float) -> None:
        limit = max(1, int(timeout))
        r = self.t.run(script_argv(WAIT_GONE_SCRIPT, str(pid or ""), str(self.port), str(limit)), timeout=limit + 30)
        if not r.ok:
            raise ReconcilerError(f"still running {limit} s after `zato stop` ({r.text().strip()})")

    def start(self, timeout: float) -> None:
        r = self.t.run([self.zato, "start", self.dir], timeout=timeout)
        if not r.ok:
            raise ReconcilerError(f"`zato start` exited {r.exit_code}: {_said(r)}")

    def wait_ready(self, mark: LogMark, timeout: float) -> Readiness:
        """Until the log shows Started past `mark` and /zato/ping answers (`zato wait`), or the timeout. A server
        whose process is gone meanwhile is not ready, whatever `zato start` printed: that fails at once."""
        deadline = self.clock() + timeout
        lines: list[str] = []
        started = False
        gone = 0
        while not started:
            chunk = read_log(self.t, mark)
            mark = chunk.mark
            lines += chunk.lines
            started = any(STARTED.search(line) for line in chunk.lines)
            if started:
                break
            gone = gone + 1 if self.running_pid() is None else 0
            if gone >= DEAD_POLLS:
                last = read_log(self.t, mark)  # its last words
                lines, mark = lines + last.lines, last.mark
                return Readiness(
                    False, lines, "the server died while starting (`zato start` said OK); see its log lines", mark
                )
            if self.clock() >= deadline:
                return Readiness(False, lines, f"no `Started` line in logs/server.log within {timeout:.0f} s", mark)
            self.sleep(self.poll)
        left = max(1, int(deadline - self.clock()))
        r = self.t.run([self.zato, "wait", "--path", self.dir, "--timeout", str(left)], timeout=left + 30)
        if not r.ok:
            return Readiness(False, lines, f"/zato/ping did not answer (`zato wait` exited {r.exit_code})", mark)
        return Readiness(True, lines, "", mark)

    def haproxy(self, socket: str, backend: str, server: str, state: str) -> None:
        cmd = f"set server {backend}/{server} state {state}"
        r = self.t.run(script_argv(HAPROXY_SCRIPT, socket, cmd), timeout=30)
        answer = r.text().strip()
        if not r.ok or answer:
            raise ReconcilerError(f"HAProxy refused `{cmd}` on {socket}: {answer or r.err_text()}")


def _said(r: RunResult) -> str:
    """What a `zato` command printed, clean of escape sequences (it may quote the server's coloured stderr)."""
    return "\n".join(clean_line(line) for line in (r.text() + r.err_text()).strip().splitlines())


def source_failures(lines: Sequence[str], managed: Sequence[str]) -> list[str]:
    """Lines saying a service source we manage did not load: `Could not load source` naming a file under a
    managed path, or `Could not import module` naming a managed entry (3.2 logs it made absolute)."""
    bad: list[str] = []
    for line in lines:
        m = COULD_NOT_LOAD.search(line) or COULD_NOT_IMPORT.search(line)
        if not m:
            continue
        named = m.group("path")
        if any(named == p or named.startswith(p.rstrip("/") + "/") or named.endswith("/" + p) for p in managed):
            bad.append(line)
    return bad
