"""The rolling restart: static changes installed one server at a time, each gated on the server being ready.

Why this shape (issue 3, docs/rollouts.md): what Zato reads only at start (service-sources.txt, its
directories, zato_extra_paths) needs a restart, and the load balancer needs servers to send traffic to. So:
servers in manifest order, at most `max_unavailable` of them down at once; each server's files are written just
before its own restart (a halted rollout leaves the servers after it untouched), the previous files kept; on a
failure that server's files are put back, it is restarted on them, and the rollout halts.

Every step is written to the `RolloutStore` before it is taken, so a reconciler killed at any point resumes at the
same server and the same step: it never stops a server that already went through `starting`, never restarts a
`done` server, and finishes the in-flight one before touching the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Event

from reconciler.apply import files
from reconciler.apply.restart import ServerControl, source_failures
from reconciler.apply.store import Rollout, RolloutStore, now
from reconciler.core.plan import Restart, restart_for
from reconciler.core.state import DesiredCluster, LogMark, ObservedServer
from reconciler.errors import ReconcilerError
from reconciler.transport import Transport

Progress = Callable[[str], None]
Observe = Callable[[str], ObservedServer]


@dataclass
class RestartOutcome:
    server: str
    outcome: str  # ready | rolled-back | failed | unchanged | interrupted
    started: str = ""
    ready: str = ""
    duration: float = 0.0
    files: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("ready", "unchanged")


def _port(bind: str) -> int:
    try:
        return int(bind.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 17010


class RolloutRunner:
    def __init__(
        self,
        store: RolloutStore,
        desired: DesiredCluster,
        transports: Mapping[str, Transport],
        observe: Observe,
        *,
        progress: Progress = lambda _: None,
        stop: Event | None = None,
        poll: float = 0.25,
    ) -> None:
        self.store = store
        self.desired = desired
        self.spec = desired.spec
        self.transports = transports
        self.observe = observe
        self.progress = progress
        self.stop = stop or Event()
        self.poll = poll

    def say(self, server: str, what: str) -> None:
        self.progress(f"{self.spec.name}/{server}: {what}")

    def run(self, rollout: Rollout) -> list[RestartOutcome]:
        """Carry out (or resume) a rollout; returns one outcome per server that did something this time."""
        self.store.set_status(rollout.id, "running", "")
        todo = [s.server for s in rollout.servers if s.step not in ("done",)]
        if rollout.status == "halted":  # resuming after a person fixed things: retry the failed server
            for s in rollout.servers:
                if s.step in ("failed", "rolled-back"):
                    self.store.update_server(rollout.id, s.server, step="pending", detail="")
        outcomes: list[RestartOutcome] = []
        size = max(1, self.spec.rollout.max_unavailable)
        for i in range(0, len(todo), size):
            if self.stop.is_set():
                self.store.set_status(rollout.id, "interrupted", "interrupted; resumes at the next start")
                outcomes.append(RestartOutcome(todo[i], "interrupted"))
                return outcomes
            batch = todo[i : i + size]
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                results = list(pool.map(lambda s: self.one(rollout.id, s), batch))
            outcomes += results
            failed = [r for r in results if not r.ok]
            if failed:
                names = ", ".join(r.server for r in failed)
                untouched = todo[i + size :]
                msg = f"halted: {names} failed ({failed[0].error})" + (
                    f"; not touched: {', '.join(untouched)}" if untouched else "")
                self.store.set_status(rollout.id, "halted", msg)
                self.progress(f"{self.spec.name}: rollout {rollout.id} {msg}")
                return outcomes
        self.store.set_status(rollout.id, "finished", "")
        return outcomes

    # --- one server ------------------------------------------------------------------------------------------
    def one(self, rid: str, server: str) -> RestartOutcome:
        rollout = self.store.get(rid)
        p = rollout.server(server)
        transport = self.transports[server]
        obs = self.observe(server)
        timeout = float(self.spec.rollout.ready_timeout)
        ctl = ServerControl(transport, self.spec.zato_command, obs.paths.server_dir, _port(obs.paths.bind),
                            poll=self.poll)
        tdir = files.txn_dir(obs.paths.work_dir, f"{rid}-{server}")
        step = p.step
        out = RestartOutcome(server, "ready")
        restart: Restart | None = None
        t0 = time.monotonic()
        try:
            if step == "pending":
                restart = restart_for(self.desired, obs)
                if restart is None:
                    self.store.update_server(rid, server, step="done", detail="already up to date")
                    self.say(server, "up to date, no restart")
                    return RestartOutcome(server, "unchanged")
                step = "writing"
            if step == "writing":
                self.store.update_server(rid, server, step="writing", log_size=obs.log.size, log_inode=obs.log.inode)
                restart = restart or restart_for(self.desired, obs)
                ops = self._ops(restart)
                out.files = [op.path for op in ops]
                if ops:
                    if not files.staged(transport, tdir):
                        files.stage(transport, tdir, ops)
                    self.say(server, f"writing {len(ops)} file{'s' if len(ops) != 1 else ''}")
                    files.apply(transport, tdir)
                if restart is not None and restart.shared:
                    self.store.add_host_written(rid, restart.host)
                    self.store.update_server(rid, server, wrote_shared=True)
                step = "stopping"
                self.store.update_server(rid, server, step="stopping", started=now())
            self._drain(ctl, server, "drain")
            if step == "stopping":
                self.say(server, "stopping")
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
                mark = self._mark(rid, server, obs)
                self.say(server, "waiting for /zato/ping and the Started line")
                ready = ctl.wait_ready(mark, timeout)
                out.lines = ready.lines
                if not ready.ok:
                    raise ReconcilerError(ready.error)
                self.store.update_server(rid, server, step="verifying")
                bad = source_failures(ready.lines, self._managed(obs.paths.server_dir))
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
        except ReconcilerError as e:
            out.error = e.message
            out.outcome = "failed"
            self.store.update_server(rid, server, step="failed", detail=e.message)
            self.say(server, f"FAILED: {e.message}")
            return self._roll_back(rid, server, ctl, transport, tdir, out, timeout)

    def _roll_back(
        self, rid: str, server: str, ctl: ServerControl, transport: Transport, tdir: str, out: RestartOutcome,
        timeout: float,
    ) -> RestartOutcome:
        try:
            if files.staged(transport, tdir):
                files.rollback(transport, tdir)
                self.say(server, "previous files put back")
            ctl.stop(timeout)
            ctl.start(timeout)
            obs = self.observe(server)
            ready = ctl.wait_ready(self._mark(rid, server, obs), timeout)
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

    # --- helpers ---------------------------------------------------------------------------------------------
    def _ops(self, restart: Restart | None) -> list[files.FileOp]:
        if restart is None:
            return []
        data = {f.repo_path: f.data for t in (*self.desired.sources, *self.desired.extras) for f in t.files.values()}
        ops: list[files.FileOp] = []
        for c in (*restart.changes, *restart.shared):
            if c.kind == "service-sources":
                text = (restart.sources_text or "").encode()
                ops.append(files.FileOp(c.path, text, c.new_sha256))
            elif c.change == "removed":
                ops.append(files.FileOp(c.path, None))
            else:
                ops.append(files.FileOp(c.path, data[c.repo_path or ""], c.new_sha256))
        return ops

    def _mark(self, rid: str, server: str, obs: ObservedServer) -> LogMark:
        p = self.store.get(rid).server(server)
        if p.log_size is not None and p.log_inode is not None:
            return LogMark(obs.paths.log, p.log_size, p.log_inode)
        return obs.log

    def _managed(self, server_dir: str) -> list[str]:
        return [*(t.path_on(server_dir) for t in self.desired.sources), *self.desired.source_lines]

    def _drain(self, ctl: ServerControl, server: str, state: str) -> None:
        ha = self.spec.rollout.haproxy
        if ha is None:
            return
        ctl.haproxy(ha.socket, ha.backend, server, state)
        self.say(server, f"HAProxy {ha.backend}/{server}: {state}")
