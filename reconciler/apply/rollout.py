"""The rolling restart: static changes installed one server at a time, each gated on the server being ready.

Why this shape (issue 3, docs/rollouts.md): what Zato reads only at start (service-sources.txt, its
directories, zato_extra_paths) needs a restart, and the load balancer needs servers to send traffic to. So:
servers in manifest order, at most `max_unavailable` of them down at once; each server's files are written just
before its own restart (a halted rollout leaves the servers after it untouched), the previous files kept; on a
failure that server's files are put back, it is restarted on them, and the rollout halts.

The rollout carries out the plan it was made from, never a new one (issue 8): each server's `Restart` (the files
with their old and new sha256, the new service-sources.txt, the shared files it writes or only restarts for, its
paths) is persisted in the `RolloutStore` when the rollout is created. At the server's turn the preconditions are
checked (every file it writes is still at its planned old or new sha256) and the operations are executed; a
server whose shared extra_paths another server of its host already wrote is restarted all the same.

Every step is written to the store before it is taken, so a reconciler killed at any point resumes at the same
server and the same step: it never stops a server that already went through `starting`, never restarts a `done`
server, and finishes the in-flight one before touching the next. A server that stops answering after we stopped
it (SSH lost) is retried with backoff within `ready_timeout`; if it is still unreachable the rollout stays
`running` with that server at its step, and the next apply, `rollouts resume` or the daemon brings it back before
anything else: no second server is stopped while one we stopped may be down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Event
from typing import TYPE_CHECKING

from reconciler.apply import files
from reconciler.apply.restart import ServerControl, source_failures
from reconciler.apply.rollouts import DOWN, OPEN, Rollout, now
from reconciler.core.plan import FileChange, Restart
from reconciler.core.state import DesiredCluster, LogMark
from reconciler.db import db_errors
from reconciler.errors import Interrupted, ReconcilerError, Unreachable
from reconciler.transport import Transport, script_argv

if TYPE_CHECKING:  # the store (SQLAlchemy) is made by whoever runs a rollout
    from reconciler.apply.store import RolloutStore

Progress = Callable[[str], None]
#: called before a server's turn changes anything; raises `Interrupted` (e.g. the cluster lease was lost) to stop
#: the rollout there
Guard = Callable[[], None]

#: sha256 of each path given (or `-` when it does not exist), one `path<TAB>sha` line each
HASH_SCRIPT = r"""
for p in "$@"; do
  if [ -f "$p" ]; then s=$(sha256sum -- "$p") || exit 3; printf '%s\t%s\n' "$p" "${s%% *}"
  else printf '%s\t-\n' "$p"; fi
done
"""

MARK_SCRIPT = r"""stat -c '%s %i' -- "$1" 2>/dev/null || echo "0 0" """


@dataclass
class RestartOutcome:
    server: str
    outcome: str  # ready | rolled-back | failed | unchanged | interrupted | unreachable
    started: str = ""
    ready: str = ""
    duration: float = 0.0
    files: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("ready", "unchanged")


class PreconditionFailed(ReconcilerError):
    """A file changed on the server after the plan was made: the planned operations no longer apply."""


class RolloutRunner:
    def __init__(
        self,
        store: RolloutStore,
        desired: DesiredCluster,
        transports: Mapping[str, Transport],
        *,
        progress: Progress = lambda _: None,
        stop: Event | None = None,
        poll: float = 0.25,
        guard: Guard = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        backoff: tuple[float, float] = (0.5, 5.0),
    ) -> None:
        self.store = store
        self.desired = desired
        self.spec = desired.spec
        self.transports = transports
        self.progress = progress
        self.stop = stop or Event()
        self.poll = poll
        self.guard = guard
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff

    def say(self, server: str, what: str) -> None:
        self.progress(f"{self.spec.name}/{server}: {what}")

    def run(self, rollout: Rollout) -> list[RestartOutcome]:
        """Carry out (or resume) a rollout; returns one outcome per server that did something this time."""
        self._refuse_while_another_left_a_server_down(rollout)
        self.store.set_status(rollout.id, "running", "")
        if rollout.status == "halted":  # resuming after a person fixed things: retry the failed server
            for s in rollout.servers:
                if s.step in ("failed", "rolled-back"):
                    self.store.update_server(rollout.id, s.server, step="pending", detail="")
        todo = [s.server for s in sorted(rollout.servers, key=lambda s: (s.step not in DOWN, s.position))
                if s.step != "done"]
        outcomes: list[RestartOutcome] = []
        for batch in self._batches(rollout.id, todo):
            if self.stop.is_set():
                self.store.set_status(rollout.id, "interrupted", "interrupted; resumes at the next start")
                outcomes.append(RestartOutcome(batch[0], "interrupted"))
                return outcomes
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                results = list(pool.map(lambda s: self.one(rollout.id, s), batch))
            outcomes += results
            lost = [r for r in results if r.outcome in ("unreachable", "interrupted")]
            if lost:
                names = ", ".join(r.server for r in lost)
                msg = (f"interrupted: {names} cannot be reached ({lost[0].error}); the next apply or "
                       "`rollouts resume` brings it back before any other server is stopped"
                       if lost[0].outcome == "unreachable" else
                       f"interrupted before {names}: {lost[0].error}; resumes at the next start")
                self.store.set_status(rollout.id, "running", msg)
                self.progress(f"{self.spec.name}: rollout {rollout.id} {msg}")
                return outcomes
            failed = [r for r in results if not r.ok]
            if failed:
                names = ", ".join(r.server for r in failed)
                untouched = todo[todo.index(batch[-1]) + 1 :]
                msg = f"halted: {names} failed ({failed[0].error})" + (
                    f"; not touched: {', '.join(untouched)}" if untouched else "")
                self.store.set_status(rollout.id, "halted", msg)
                self.progress(f"{self.spec.name}: rollout {rollout.id} {msg}")
                return outcomes
        self.store.set_status(rollout.id, "finished", "")
        return outcomes

    def _refuse_while_another_left_a_server_down(self, rollout: Rollout) -> None:
        for other in self.store.all((*OPEN, "superseded"), cluster=rollout.cluster):
            down = [s.server for s in other.servers if s.step in DOWN]
            if other.id != rollout.id and down:
                raise ReconcilerError(
                    f"rollout {other.id} of cluster {rollout.cluster} stopped {', '.join(down)} and has not seen it "
                    f"ready again; no other server is stopped before it is back",
                    hint=f"bring it back first: zato-gitops rollouts resume {other.id}")

    def _batches(self, rid: str, todo: list[str]) -> list[list[str]]:
        """At most `max_unavailable` servers per batch, and never a server with the writer of its host's shared
        files in the same batch: the writer's files must be in place before the other one starts."""
        size = max(1, self.spec.rollout.max_unavailable)
        batches: list[list[str]] = []
        cur: list[str] = []
        hosts_writing: set[str] = set()
        for server in todo:
            r = self.restart_of(rid, server)
            waits_for_writer = r.shared and not r.writes_shared and r.host in hosts_writing
            if cur and (len(cur) >= size or waits_for_writer):
                batches.append(cur)
                cur, hosts_writing = [], set()
            cur.append(server)
            if r.shared and r.writes_shared:
                hosts_writing.add(r.host)
        if cur:
            batches.append(cur)
        return batches

    def restart_of(self, rid: str, server: str) -> Restart:
        data = self.store.plan_of(rid, server)
        if data is None:
            raise ReconcilerError(f"rollout {rid} keeps no plan for {server} (made by an older zato-gitops)",
                                  hint="cancel it (`zato-gitops rollouts cancel`) and run apply again")
        return Restart.from_dict(data)

    # --- one server ------------------------------------------------------------------------------------------
    def one(self, rid: str, server: str) -> RestartOutcome:
        """Take one server through its steps; a lost connection is retried with backoff within ready_timeout."""
        timeout = float(self.spec.rollout.ready_timeout)
        deadline: float | None = None
        delay = self.backoff[0]
        while True:
            try:
                return self._one(rid, server)
            except Unreachable as e:
                deadline = deadline if deadline is not None else self.clock() + timeout
                step = self.store.get(rid).server(server).step
                if self.clock() + delay > deadline or self.stop.is_set():
                    self.store.update_server(rid, server, detail=f"unreachable at step {step}: {e.message}")
                    self.say(server, f"UNREACHABLE at step {step}: {e.message}")
                    return RestartOutcome(server, "unreachable", error=e.message)
                self.say(server, f"lost at step {step} ({e.message}); trying again in {delay:.1f} s")
                self.sleep(delay)
                delay = min(delay * 2, self.backoff[1])

    def _one(self, rid: str, server: str) -> RestartOutcome:
        p = self.store.get(rid).server(server)
        restart = self.restart_of(rid, server)
        transport = self.transports[server]
        timeout = float(self.spec.rollout.ready_timeout)
        ctl = ServerControl(transport, self.spec.zato_command, restart.server_dir, restart.port, poll=self.poll)
        tdir = files.txn_dir(restart.work_dir, f"{rid}-{server}")
        step = p.step
        #: whether this server's process may have been stopped by this rollout (a resumed turn past `writing`
        #: counts): only then does a failure need a restart on the previous files
        stopped = step not in ("pending", "writing")
        out = RestartOutcome(server, "ready", files=[c.path for c in restart.writes])
        t0 = time.monotonic()
        try:
            if step == "pending":
                self.guard()
                self.check_preconditions(transport, restart)
                step = "writing"
            if step == "writing":
                mark = self._log_mark(transport, restart.log)
                self.store.update_server(rid, server, step="writing", log_size=mark.size, log_inode=mark.inode)
                ops = self._ops(restart)
                if ops:
                    if not files.staged(transport, tdir):
                        files.stage(transport, tdir, ops)
                    self.say(server, f"writing {len(ops)} file{'s' if len(ops) != 1 else ''}")
                    files.apply(transport, tdir)
                elif restart.shared:
                    self.say(server, "restarting for its host's extra_paths (written by another server)")
                step = "stopping"
                self.store.update_server(rid, server, step="stopping", started=now())
            self._drain(ctl, server, "drain")
            if step == "stopping":
                self.say(server, "stopping (`zato stop`, then waiting for the process to end and the port to be free)")
                stopped = True
                ctl.stop(timeout)
                step = "starting"
                self.store.update_server(rid, server, step="starting")
            if step == "starting":
                if ctl.running_pid() is None:
                    self.say(server, "starting")
                    ctl.start(timeout)
                step = "waiting"
                self.store.update_server(rid, server, step="waiting")
            if step in ("waiting", "verifying"):
                mark = self._mark(rid, server, restart)
                self.say(server, f"waiting for /zato/ping and the Started line (a Zato start takes 9-16 s; giving "
                                 f"up after {timeout:.0f} s)")
                ready = ctl.wait_ready(mark, timeout)
                out.lines = ready.lines
                if not ready.ok:
                    raise ReconcilerError(ready.error)
                self.store.update_server(rid, server, step="verifying")
                bad = source_failures(ready.lines, self._managed(restart.server_dir))
                if bad:
                    out.lines = bad
                    raise ReconcilerError("came up without a service source: " + bad[0].split(" - ")[-1][:300])
            self._drain(ctl, server, "ready")
            out.duration = time.monotonic() - t0
            cur = self.store.get(rid).server(server)
            out.started, out.ready = cur.started or "", now()
            self.store.update_server(rid, server, step="done", ready=out.ready, detail="")
            self.say(server, f"ready ({out.duration:.1f} s)")
            return out
        except Unreachable:
            raise
        except Interrupted as e:
            self.say(server, f"not started: {e.message}")
            return RestartOutcome(server, "interrupted", error=e.message)
        except PreconditionFailed as e:
            # nothing was written or stopped: the server runs as it did; a new apply plans again
            out.error, out.outcome = e.message, "failed"
            self.store.update_server(rid, server, step="failed", detail=e.message)
            self.say(server, f"NOT TOUCHED: {e.message}")
            return out
        except db_errors():
            # the store (the state database) went away mid-step: never leave a server this run stopped down. The
            # step stays as last written; whoever resumes the rollout repeats it (a stop and start more, no harm)
            self._bring_back(ctl, server, timeout)
            raise
        except ReconcilerError as e:
            out.error = e.message
            out.outcome = "failed"
            self.store.update_server(rid, server, step="failed", detail=e.message)
            self.say(server, f"FAILED: {e.message}")
            return self._roll_back(rid, server, restart, ctl, transport, tdir, out, timeout, restart_it=stopped)

    def check_preconditions(self, transport: Transport, restart: Restart) -> None:
        """Every file this server's turn installs is still at the sha256 the plan saw, or already at the new one
        (written by an earlier, interrupted turn, or by the writer of its host's shared files)."""
        changes: list[FileChange] = [*restart.changes, *restart.shared]
        if not changes:
            return
        have = self._hashes(transport, [c.path for c in changes])
        moved = [c for c in changes if have.get(c.path) not in (c.old_sha256, c.new_sha256)]
        if moved:
            c = moved[0]
            raise PreconditionFailed(
                f"{c.path} changed since the plan (planned from {_short(c.old_sha256)}, now "
                f"{_short(have.get(c.path))})" + (f" and {len(moved) - 1} more" if len(moved) > 1 else ""),
                hint="run apply again: it plans from what the servers have now")

    # --- helpers ---------------------------------------------------------------------------------------------
    def _hashes(self, transport: Transport, paths: list[str]) -> dict[str, str | None]:
        r = transport.run(script_argv(HASH_SCRIPT, *paths))
        if not r.ok:
            raise ReconcilerError(f"{transport.label}: cannot read the files to install: {r.err_text()[:200]}")
        out: dict[str, str | None] = {}
        for line in r.text().splitlines():
            path, _, sha = line.rpartition("\t")
            out[path] = None if sha == "-" else sha
        return out

    def _log_mark(self, transport: Transport, log: str) -> LogMark:
        r = transport.run(script_argv(MARK_SCRIPT, log))
        parts = r.text().split()
        if len(parts) != 2 or not all(x.isdigit() for x in parts):
            raise ReconcilerError(f"{transport.label}: cannot stat {log}: {r.text()[:100]!r}")
        return LogMark(log, int(parts[0]), int(parts[1]))

    def _roll_back(
        self, rid: str, server: str, restart: Restart, ctl: ServerControl, transport: Transport, tdir: str,
        out: RestartOutcome, timeout: float, *, restart_it: bool = True,
    ) -> RestartOutcome:
        """Put the server's previous files back and, if this rollout may have stopped it, restart it on them.

        A failure before the stop (staging, writing, the drain) leaves the process running the code it loaded at
        its last start: putting the files back is all it takes, and a restart would only cost an outage.
        """
        try:
            if files.staged(transport, tdir):
                files.rollback(transport, tdir)
                self.say(server, "previous files put back")
            if not restart_it:
                self._drain(ctl, server, "ready")
                out.outcome = "rolled-back"
                self.store.update_server(rid, server, step="rolled-back", detail=out.error)
                self.say(server, "never stopped: it keeps running on its previous files, no restart needed")
                out.ready = now()
                return out
            self.say(server, "restarting on its previous files: stopping, then waiting for it to start again")
            ctl.stop(timeout)
            ctl.start(timeout)
            ready = ctl.wait_ready(self._mark(rid, server, restart), timeout)
            if not ready.ok:
                raise ReconcilerError(ready.error)
            self._drain(ctl, server, "ready")
            out.outcome = "rolled-back"
            self.store.update_server(rid, server, step="rolled-back", detail=out.error)
            self.say(server, "rolled back and running again on its previous files")
        except ReconcilerError as e:
            out.error += f"; rolling back failed too: {e.message}"
            self.store.update_server(rid, server, step="failed", detail=out.error)
            self.say(server, f"rolling back failed: {e.message}")
        out.ready = now()
        return out

    def _bring_back(self, ctl: ServerControl, server: str, timeout: float) -> None:
        try:
            if ctl.running_pid() is None:
                self.say(server, "the rollout store cannot be written: starting the server again before stopping")
                ctl.start(timeout)
        except ReconcilerError as e:
            self.say(server, f"starting it again failed too: {e.message}")

    def _ops(self, restart: Restart) -> list[files.FileOp]:
        data = {f.repo_path: f.data for t in (*self.desired.sources, *self.desired.extras) for f in t.files.values()}
        ops: list[files.FileOp] = []
        for c in restart.writes:
            if c.kind == "service-sources":
                text = (restart.sources_text or "").encode()
                ops.append(files.FileOp(c.path, text, c.new_sha256))
            elif c.change == "removed":
                ops.append(files.FileOp(c.path, None))
            else:
                ops.append(files.FileOp(c.path, data[c.repo_path or ""], c.new_sha256))
        return ops

    def _mark(self, rid: str, server: str, restart: Restart) -> LogMark:
        p = self.store.get(rid).server(server)
        return LogMark(restart.log, p.log_size or 0, p.log_inode or 0)

    def _managed(self, server_dir: str) -> list[str]:
        return [*(t.path_on(server_dir) for t in self.desired.sources), *self.desired.source_lines]

    def _drain(self, ctl: ServerControl, server: str, state: str) -> None:
        ha = self.spec.rollout.haproxy
        if ha is None:
            return
        ctl.haproxy(ha.socket, ha.backend, server, state)
        self.say(server, f"HAProxy {ha.backend}/{server}: {state}")


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "absent"
