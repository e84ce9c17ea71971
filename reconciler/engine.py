"""The reconcile chain: source -> desired -> observe -> plan -> apply -> record, with a finaliser that records.

Flux's controllers chain small steps and always patch status at the end; this module does the same for one run:
each step hands plain data to the next, and whatever happens after the commit is known (a refusal, a failure on
a server, success) ends up as records in the commit's git note. The CLI and the daemon both call this module;
neither knows how a step is done.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.apply.hotdeploy import ServerResult, hot_deploy
from reconciler.audit import Audit, PushResult, format_at
from reconciler.desired import build_desired
from reconciler.errors import Stalled
from reconciler.observe import ObserveError, observe_all
from reconciler.plan import Plan, plan
from reconciler.settings import Settings
from reconciler.source import Source
from reconciler.state import Desired, ObservedCluster
from reconciler.transport.connect import Connections
from reconciler.transport.ssh import SSHOptions

Progress = Callable[[str], None]


def utc_now() -> str:
    return format_at(datetime.now(UTC))


def _iso(ts: float) -> str:
    return format_at(datetime.fromtimestamp(ts, UTC))


@dataclass
class PlanReport:
    commit: str
    desired: Desired
    observed: dict[str, ObservedCluster]
    plan: Plan
    unreachable: list[ObserveError]

    @property
    def complete(self) -> bool:
        return not self.unreachable


@dataclass
class ApplyReport:
    report: PlanReport
    results: dict[str, dict[str, ServerResult]] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)  # cluster -> reasons it was not applied
    note: PushResult | None = None
    run_id: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.report.complete
            and not self.refused
            and all(r.ok for servers in self.results.values() for r in servers.values())
        )


class StateLock:
    """One reconciler at a time per state dir: an exclusive flock on `<state_dir>/lock`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise Stalled(
                f"another zato-gitops (pid {holder}) is working on the state dir {self.path.parent}",
                hint="wait for it to finish, or give this one its own --state-dir",
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Engine:
    """One reconciler's view of one repository and its servers."""

    def __init__(
        self, settings: Settings, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> None:
        if not settings.repo:
            raise Stalled("no repository given", hint="pass --repo PATH_OR_URL, or set `repo:` in the --config file")
        self.settings = settings
        self.progress: Progress = progress or (lambda _: None)
        #: set by the daemon on SIGTERM: long work (a rolling restart) finishes the current server step and stops
        self.stop = stop or threading.Event()
        self.source = Source(
            settings.repo, settings.branch, settings.state_dir, ssh_command=settings.git_ssh_command()
        )
        self.audit = Audit(self.source)
        self.by = f"{getpass.getuser()}@{socket.gethostname()}"

    @contextmanager
    def locked(self) -> Iterator[None]:
        lock = StateLock(self.settings.state_dir)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def connections(self) -> Connections:
        return Connections(
            SSHOptions(
                identity=self.settings.identity,
                known_hosts=self.settings.known_hosts,
                connect_timeout=self.settings.connect_timeout,
            )
        )

    # --- steps ---------------------------------------------------------------------------------------------
    def fetch(self) -> str:
        self.progress(f"fetching {self.settings.branch}")
        commit = self.source.fetch()
        self.progress(f"commit {commit[:12]}")
        return commit

    def desired(self, commit: str) -> Desired:
        return build_desired(self.source, commit, self.settings.manifest)

    def observe(self, desired: Desired, conns: Connections, only: list[str] | None = None) -> PlanReport:
        clusters = [c for c in desired.clusters if only is None or c.name in only]
        n = sum(len(c.spec.servers) for c in clusters)
        self.progress(f"observing {n} server{'s' if n != 1 else ''}")
        observed, failures = observe_all(
            clusters, conns.get, parallelism=self.settings.parallelism, timeout=self.settings.command_timeout
        )
        return PlanReport(desired.commit, desired, observed, plan(desired, observed), failures)

    def plan(self, only: list[str] | None = None, commit: str | None = None) -> PlanReport:
        """The plan for the branch head (fetched), or for `commit` (already fetched) when given."""
        commit = commit or self.fetch()
        desired = self.desired(commit)
        with self.connections() as conns:
            return self.observe(desired, conns, only)

    def apply(self, only: list[str] | None = None, commit: str | None = None) -> ApplyReport:
        """Apply the branch head (fetched), or `commit` (already fetched) when given, to the clusters in `only`."""
        with self.locked():
            commit = commit or self.fetch()
            run_id = uuid.uuid4().hex[:12]
            try:
                desired = self.desired(commit)
            except Stalled as e:
                self._record(commit, [self._record_base(run_id, commit) | {
                    "action": "refused", "outcome": "failed", "detail": e.message}])
                raise
            with self.connections() as conns:
                report = self.observe(desired, conns, only)
                result = ApplyReport(report, run_id=run_id)
                records: list[dict[str, Any]] = []
                for cluster_plan in report.plan.clusters:
                    name = cluster_plan.cluster
                    if cluster_plan.empty:
                        continue
                    if cluster_plan.blocked:
                        result.refused[name] = list(cluster_plan.blocked)
                        records.append(self._record_base(run_id, commit) | {
                            "cluster": name, "action": "refused", "outcome": "failed",
                            "detail": "; ".join(cluster_plan.blocked)})
                        continue
                    dc = desired.cluster(name)
                    spec = dc.spec
                    transports = {s.name: conns.get(spec, s) for s in spec.servers}
                    servers = hot_deploy(
                        dc, report.observed[name], cluster_plan, transports,
                        timeout=spec.confirm_timeout or self.settings.confirm_timeout,
                        poll=self.settings.confirm_poll, progress=self.progress,
                        parallelism=self.settings.parallelism,
                    )
                    result.results[name] = servers
                    records += self._hot_records(run_id, commit, dc.modules, name, servers)
                for c, s, err in report.unreachable:
                    records.append(self._record_base(run_id, commit) | {
                        "cluster": c, "server": s, "action": "observe", "outcome": "failed", "detail": err.message})
            if records:
                result.note = self._record(commit, records)
            return result

    # --- records -------------------------------------------------------------------------------------------
    def _record_base(self, run_id: str, commit: str) -> dict[str, Any]:
        return {"at": utc_now(), "run": run_id, "by": self.by, "commit": commit}

    def _hot_records(
        self, run_id: str, commit: str, modules: Any, cluster: str, servers: dict[str, ServerResult]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for server, r in servers.items():
            for module, outcome in sorted(r.modules.items()):
                m = modules[module]
                rec = self._record_base(run_id, commit) | {
                    "cluster": cluster, "server": server, "action": "hot-deploy", "module": m.repo_path,
                    "blob": m.blob, "sha256": m.sha256, "dropped": module in r.dropped, "outcome": outcome,
                    "started": _iso(r.started), "finished": _iso(r.finished),
                }
                if outcome != "confirmed":
                    rec["detail"] = r.error or "\n".join(r.lines.get(module, []))[-2000:]
                out.append(rec)
        return out

    def _record(self, commit: str, records: list[dict[str, Any]]) -> PushResult:
        self.progress(f"recording {len(records)} record{'s' if len(records) != 1 else ''} on {commit[:12]}")
        return self.audit.record(commit, records)

