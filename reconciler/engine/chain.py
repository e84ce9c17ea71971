"""The reconcile chain: source -> desired -> observe -> plan -> apply -> record, with a finaliser that records.

Flux's controllers chain small steps and always patch status at the end; this module does the same for one run:
each step hands plain data to the next, and whatever happens after the commit is known (a refusal, a failure on
a server, success) ends up as records in the commit's git note. The CLI and the daemon both call this module;
neither knows how a step is done.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from reconciler.apply.hotdeploy import ServerResult, hot_deploy
from reconciler.apply.lease import Lease, LeaseSite
from reconciler.apply.rollout import RestartOutcome, RolloutRunner
from reconciler.apply.store import OPEN, Rollout, RolloutStore
from reconciler.core.desired import build_desired
from reconciler.core.plan import ClusterPlan, Plan, plan
from reconciler.core.release import Release, release, wanted_shas
from reconciler.core.state import Desired, DesiredCluster
from reconciler.engine.facts import FactFile
from reconciler.engine.results import ApplyReport, PlanReport
from reconciler.engine.scheduler import PERSISTENT, cron_trigger, make_scheduler, runtime
from reconciler.errors import Busy, SourceError, Stalled, Unreachable
from reconciler.githost.client import State, client_for
from reconciler.githost.statuses import ResultHook, StatusPoster, StatusUpdate
from reconciler.gitrepo import blobs, trust
from reconciler.gitrepo.notes import Audit, PushResult, format_at
from reconciler.gitrepo.source import Source
from reconciler.locks import LockHeld, PidLock
from reconciler.observe import observe_all
from reconciler.settings import Settings
from reconciler.transport.connect import Connections
from reconciler.transport.ssh import SSHOptions

Progress = Callable[[str], None]


def utc_now() -> str:
    return format_at(datetime.now(UTC))


def _iso(ts: float) -> str:
    return format_at(datetime.fromtimestamp(ts, UTC))


class StateLock(PidLock):
    """One apply at a time per state dir: `<state_dir>/lock`. Held by someone else: `Busy`, a passing state."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir / "lock")

    def acquire(self) -> None:
        try:
            super().acquire()
        except LockHeld as e:
            raise Busy(
                f"another zato-gitops (pid {e.holder}) is working on the state dir {self.path.parent}",
                hint="wait for it to finish, or give this one its own --state-dir",
            ) from e


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
        #: sha256 and compile verdicts by blob id, so an unchanged module is never compiled twice
        self.facts = FactFile(Path(settings.state_dir) / "facts.json")
        self._store: RolloutStore | None = None
        #: `apply --timeout`: an operator's word wins over the manifest's confirm_timeout
        self.confirm_timeout_override: float | None = None
        #: the daemon's running scheduler; None in a one-shot command (a temporary one persists window jobs)
        self.scheduler: BackgroundScheduler | None = None
        self.by = f"{getpass.getuser()}@{socket.gethostname()}"
        #: counts each commit status posted, retried or given up (the daemon points it at /metrics)
        self.status_hook: ResultHook | None = None
        self._statuses: StatusPoster | None = None
        self._statuses_off_said = False

    @contextmanager
    def locked(self) -> Iterator[None]:
        with StateLock(self.settings.state_dir).held():
            yield

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
        """Fetch the branch head and check that it may be applied (`trust.Untrusted` when not)."""
        self.progress(f"fetching {self.settings.branch}")
        commit = self.source.fetch()
        self.progress(f"commit {commit[:12]}")
        self.check_trust(commit)
        return commit

    def fetch_to_apply(self, run_id: str | None = None) -> str:
        """`fetch()` for a command that applies: a head refused as untrusted is also recorded on its commit, so
        `history` shows who tried to release what (a plan records nothing)."""
        try:
            return self.fetch()
        except trust.Untrusted as e:
            self._record(e.commit, [self._record_base(run_id or uuid.uuid4().hex[:12], e.commit) | {
                "action": "refused", "outcome": "failed", "detail": e.message}])
            raise

    def check_trust(self, commit: str) -> None:
        """Refuse a head that is not signed by an allowed key, or that rewrites the applied history."""
        v = self.settings.verify
        if v.signatures != "off":
            sig = trust.check_signed(self.source, commit, v.signatures, v.allowed_signers)
            self.progress(f"commit {commit[:12]}: {sig.describe()}")
        if not v.allow_history_rewrite:
            trust.check_descends(self.source, self.settings.branch, commit)

    # --- commit statuses -----------------------------------------------------------------------------------
    @property
    def statuses(self) -> StatusPoster | None:
        """The commit status poster when `git_host` is configured and its token is there, else None."""
        host = self.settings.git_host
        if host is None:
            return None
        if self._statuses is None:
            if not host.token():
                if not self._statuses_off_said:  # once, not once per status
                    self.progress(f"commit statuses are off: the environment variable {host.token_env} is empty")
                    self._statuses_off_said = True
                return None
            self._statuses = StatusPoster(client_for(host), retries=host.retries, retry_delay=host.retry_delay,
                                          on_result=lambda r, u: self.status_hook(r, u) if self.status_hook else None)
        return self._statuses

    def post_status(self, commit: str, cluster: str, ok: bool | None, description: str) -> None:
        poster = self.statuses
        if poster is None:
            return
        state: State = "pending" if ok is None else "success" if ok else "failure"
        poster.post(StatusUpdate(commit, cluster, state, description, self.settings.external_url))

    def close(self) -> None:
        """Let queued commit statuses go out (bounded by their retries), then stop the poster."""
        if self._statuses is not None:
            host = self.settings.git_host
            bound = (host.timeout + host.retry_delay * 2 ** host.retries) * (host.retries + 1) if host else 30.0
            self._statuses.flush(bound)
            self._statuses.close()

    def desired(self, commit: str) -> Desired:
        try:
            return build_desired(self.source, commit, self.settings.manifest, self.facts)
        finally:
            self.facts.save()

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

    def fetch_ref(self, ref: str) -> str:
        """Fetch the branch (for the notes and the applied history) and `ref`; return the commit `ref` names.

        No trust check: a pull request is planned before anyone signs its merge; applying it is what is checked."""
        self.progress(f"fetching {ref}")
        self.source.fetch()
        commit = trust.fetch_ref(self.source, ref)
        self.progress(f"{ref} is commit {commit[:12]}")
        return commit

    def release(self, report: PlanReport) -> Release:
        """The plan in Zato's words: services added, changed and removed per module, modules that left git."""
        wanted = wanted_shas(report.plan, report.desired, report.observed)
        found: dict[str, bytes] = {}
        if wanted:
            blob_ids = [str(e.record["blob"]) for e in self.audit.history(limit=2000)
                        if e.record.get("sha256") in wanted and e.record.get("blob")]
            found = blobs.by_sha256(self.source, wanted, blob_ids, [
                trust.last_applied(self.source, self.settings.branch),
                self.source.ref_sha(self.source.tracking_ref)], known=self._known_sha256)
        return release(report.plan, report.desired, report.observed, found)

    def _known_sha256(self, blob: str) -> str | None:
        facts = self.facts.get(blob)
        return facts.sha256 if facts is not None else None

    def apply(self, only: list[str] | None = None, commit: str | None = None) -> ApplyReport:
        """Apply the branch head (fetched), or `commit` (already fetched) when given, to the clusters in `only`.

        Per cluster: hot-deploys first (no restart needed), then the rolling restart for static changes, now or,
        with a `rollout.window`, as a persisted job waiting for the window. A rollout interrupted earlier (the
        reconciler was killed) is finished first, at the server where it stopped."""
        with self.locked():
            run_id = uuid.uuid4().hex[:12]
            commit = commit or self.fetch_to_apply(run_id)
            try:
                desired = self.desired(commit)
            except Stalled as e:
                self._record(commit, [self._record_base(run_id, commit) | {
                    "action": "refused", "outcome": "failed", "detail": e.message}])
                raise
            names = [c.name for c in desired.clusters if only is None or c.name in only]
            for name in names:
                self.post_status(commit, name, None, f"deploying {commit[:12]}")
            try:
                result = self._apply_commit(commit, desired, run_id, names)
            except Exception as e:
                for name in names:
                    self.post_status(commit, name, False, f"error: {e}".splitlines()[0])
                raise
            try:
                trust.mark_applied(self.source, self.settings.branch, commit)
            except SourceError as e:  # the deploy happened: say so, and let the next apply mark it
                self.progress(f"warning: {e.message}")
            for name in names:
                ok, why = cluster_status(result, name)
                self.post_status(commit, name, ok, why)
            return result

    def _apply_commit(self, commit: str, desired: Desired, run_id: str, names: list[str]) -> ApplyReport:
        only = names
        result = ApplyReport(PlanReport(commit, desired, {}, plan(desired, {}), []), run_id=run_id)
        records: list[dict[str, Any]] = []
        with self.connections() as conns, contextlib.ExitStack() as leases:
            # the leases come first: the plan must be made while no other reconciler changes the servers
            held = self._take_leases(leases, [desired.cluster(n) for n in names], conns)
            for rollout in self.store.all(("running",)):
                if rollout.cluster in only and rollout.cluster in held:
                    records += self._run_rollout(rollout.id, conns, result, held[rollout.cluster], desired)
            report = self.observe(desired, conns, names)
            result.report = report
            for cluster_plan in report.plan.clusters:
                if cluster_plan.empty:
                    continue
                if cluster_plan.cluster not in held:  # came back between the lease and the observe
                    result.refused[cluster_plan.cluster] = ["no server answered when its lease was taken"]
                    continue
                lease = held[cluster_plan.cluster]
                if not lease.full:
                    result.refused[cluster_plan.cluster] = [
                        f"its first server did not answer when the lease was taken (it is on "
                        f"{lease.site.server if lease.site else '?'}); run again"]
                    continue
                records += self._apply_cluster(run_id, desired, report, cluster_plan, conns, result,
                                               held[cluster_plan.cluster])
            for c, s, err in report.unreachable:
                records.append(self._record_base(run_id, commit) | {
                    "cluster": c, "server": s, "action": "observe", "outcome": "failed", "detail": err.message})
        if records:
            result.note = self._record(commit, records)
        return result

    def _take_leases(
        self, stack: contextlib.ExitStack, clusters: list[DesiredCluster], conns: Connections
    ) -> dict[str, Lease]:
        """Hold the lease of every cluster (released when `stack` closes), or raise `LeaseHeld` having taken none.
        A cluster with no reachable server gets no lease: it cannot be observed, so nothing changes there."""
        held: dict[str, Lease] = {}
        for dc in clusters:
            lease = self.lease(dc, conns)
            try:
                stack.enter_context(lease.held())
            except Unreachable:
                continue
            held[dc.name] = lease
        return held

    def lease(self, dc: DesiredCluster, conns: Connections) -> Lease:
        sites = [LeaseSite(s.name, s.path, conns.get(dc.spec, s)) for s in dc.spec.servers]
        return Lease(dc.name, sites, owner=self.by, state_dir=str(self.settings.state_dir),
                     ttl=self.settings.lease_ttl, wait=self.settings.lease_wait)

    def _apply_cluster(
        self, run_id: str, desired: Desired, report: PlanReport, cluster_plan: ClusterPlan, conns: Connections,
        result: ApplyReport, lease: Lease,
    ) -> list[dict[str, Any]]:
        name, commit = cluster_plan.cluster, desired.commit
        dc = desired.cluster(name)
        spec = dc.spec
        records: list[dict[str, Any]] = []
        if cluster_plan.blocked:
            result.refused[name] = list(cluster_plan.blocked)
            return [self._record_base(run_id, commit) | {
                "cluster": name, "action": "refused", "outcome": "failed", "detail": "; ".join(cluster_plan.blocked)}]
        transports = {s.name: conns.get(spec, s) for s in spec.servers}
        if cluster_plan.hot_deploys:
            servers = hot_deploy(
                dc, report.observed[name], cluster_plan, transports,
                timeout=self.confirm_timeout_override or spec.confirm_timeout or self.settings.confirm_timeout,
                poll=self.settings.confirm_poll, progress=self.progress, parallelism=self.settings.parallelism,
            )
            result.results[name] = servers
            records += self._hot_records(run_id, commit, dc.modules, name, servers)
            if not all(r.ok for r in servers.values()):
                if cluster_plan.restarts:
                    result.refused[name] = ["a hot-deploy failed, so the rolling restart was not started"]
                return records
        if not cluster_plan.restarts:
            return records
        if cluster_plan.restart_blocked:
            result.refused[name] = list(cluster_plan.restart_blocked)
            return [*records, self._record_base(run_id, commit) | {
                "cluster": name, "action": "refused", "outcome": "failed",
                "detail": "; ".join(cluster_plan.restart_blocked)}]
        resumed = result.rollouts.get(name)
        if resumed is not None and resumed[0].status != "finished":
            # the interrupted rollout resumed by this apply stopped again: starting another one now would only
            # repeat it; a person decides (`rollouts resume`) or a new commit supersedes it
            result.refused[name] = [f"rollout {resumed[0].id} {resumed[0].status}: {resumed[0].message}"]
            return records
        for old in self.store.all(OPEN, cluster=name):
            self.store.set_status(old.id, "superseded", f"superseded by commit {commit[:12]}")
            self._unschedule(old.id)
        plans = {r.server: r.to_dict() for r in cluster_plan.restarts}  # what `plan` showed, carried out as is
        window = spec.rollout.window
        if window and window_open(window, datetime.now(UTC)):
            self.progress(f"{name}: the rollout window '{window}' is open now")
            window = None
        if window:
            rollout = self.store.create(name, commit, plans, status="pending", window=window)
            when = self._schedule(rollout.id, window)
            result.scheduled[name] = (rollout.id, when)
            self.progress(f"{name}: rolling restart {rollout.id} waits for its window '{window}' (next: {when})")
            return [*records, self._record_base(run_id, commit) | {
                "cluster": name, "action": "rollout-scheduled", "rollout": rollout.id, "outcome": "pending",
                "detail": f"window '{window}', next {when}"}]
        rollout = self.store.create(name, commit, plans, status="running", window=None)
        self.progress(f"{name}: rolling restart {rollout.id} of {len(cluster_plan.restarts)} server(s), "
                      f"{spec.rollout.max_unavailable} at a time")
        return [*records, *self._run_rollout(rollout.id, conns, result, lease, desired)]

    # --- rollback through git ------------------------------------------------------------------------------
    def rollback(self, to: str, message: str | None = None) -> trust.RollbackCommit:
        """Push a commit on the branch whose tree is `to`'s tree, and record it as a rollback on that commit.

        Git stays the truth: the new commit is what the daemon (or `apply`) installs next, like any other commit,
        so nothing has to remember that something was rolled back, and nothing undoes it."""
        v = self.settings.verify
        if v.signatures != "off" and not v.signing_key:
            raise Stalled("signed history is required (verify.signatures), but no key signs the rollback commit",
                          hint="set verify.signing_key in the reconciler's config to a key the allowed signers "
                               "list, or make the rollback commit by hand and sign it")
        with self.locked():
            self.progress(f"rolling {self.settings.branch} back to the tree of {to}")
            made = trust.make_rollback(self.source, self.settings.branch, to, self.by, message,
                                       sign_key=v.signing_key if v.signatures != "off" else None,
                                       sign_format=v.signatures)
            self.progress(f"pushed {made.commit[:12]} (tree of {made.to[:12]}, on top of {made.parent[:12]})")
            self._record(made.commit, [self._record_base(uuid.uuid4().hex[:12], made.commit) | {
                "action": "rollback", "outcome": "ok", "to": made.to, "from": made.parent,
                "detail": f"tree of {made.to[:12]} (was {made.parent[:12]}), by {self.by}"}])
            return made

    # --- rollouts ------------------------------------------------------------------------------------------
    @property
    def store(self) -> RolloutStore:
        if self._store is None:
            self._store = RolloutStore.for_settings(self.settings)
        return self._store

    def _run_rollout(
        self, rid: str, conns: Connections, result: ApplyReport | None, lease: Lease, desired: Desired
    ) -> list[dict[str, Any]]:
        """Carry out a persisted rollout as it was planned (the commit's files, each server's stored operations).
        `desired` is the run's, built once; a rollout of another commit reads that commit's files."""
        rollout = self.store.get(rid)
        records = self._unrecorded_restarts(rollout)
        if desired.commit != rollout.commit:
            desired = self.desired(rollout.commit)
        dc = desired.cluster(rollout.cluster)
        spec = dc.spec
        transports = {s.name: conns.get(spec, s) for s in spec.servers}
        runner = RolloutRunner(self.store, dc, transports, progress=self.progress, stop=self.stop,
                               poll=self.settings.confirm_poll, guard=lease.check)
        outcomes = runner.run(rollout)
        final = self.store.get(rid)
        if result is not None:
            result.rollouts[rollout.cluster] = (final, outcomes)
        for o in outcomes:
            if o.outcome in ("interrupted", "unreachable"):
                continue  # not finished: the run that finishes it records it
            rec = self._record_base(rid, rollout.commit) | {
                "cluster": rollout.cluster, "server": o.server, "action": "restart", "rollout": rid,
                "outcome": o.outcome, "started": o.started, "ready": o.ready, "duration": round(o.duration, 2),
                "files": o.files,
            }
            if not o.ok:
                rec["detail"] = (o.error + "\n" + "\n".join(o.lines[-10:]))[-2000:]
            records.append(rec)
        return records

    def _unrecorded_restarts(self, rollout: Rollout) -> list[dict[str, Any]]:
        """Restarts an earlier run finished but never recorded (it was SIGKILLed, or its host died and a standby
        took over): recorded now, from the store, so the history has no gap."""
        done = [s for s in rollout.servers if s.step == "done" and s.ready]
        if not done:
            return []
        recorded = {str(r.get("server")) for r in self.audit.records_for(rollout.commit)
                    if r.get("action") == "restart" and r.get("rollout") == rollout.id}
        return [self._record_base(rollout.id, rollout.commit) | {
            "cluster": rollout.cluster, "server": s.server, "action": "restart", "rollout": rollout.id,
            "outcome": "ready", "started": s.started, "ready": s.ready,
            "detail": "restarted by an earlier run that ended before recording it"}
            for s in done if s.server not in recorded]

    def resume_rollout(self, rid: str) -> tuple[Rollout, list[RestartOutcome]]:
        """Run a pending, halted or interrupted rollout now (the window of a pending one is skipped)."""
        with self.locked():
            rollout = self.store.find(rid)
            if rollout.status not in OPEN:
                raise Stalled(f"rollout {rollout.id} is {rollout.status}; only pending, running or halted ones resume")
            self._unschedule(rollout.id)
            self.source.fetch()
            desired = self.desired(rollout.commit)
            result = ApplyReport(PlanReport(rollout.commit, desired, {}, Plan("", ()), []))
            self.post_status(rollout.commit, rollout.cluster, None, f"rolling restart {rollout.id} running")
            try:
                with self.connections() as conns, \
                        self.lease(desired.cluster(rollout.cluster), conns).held() as lease:
                    records = self._run_rollout(rollout.id, conns, result, lease, desired)
            except Exception as e:
                self.post_status(rollout.commit, rollout.cluster, False, f"error: {e}".splitlines()[0])
                raise
            if records:
                self._record(rollout.commit, records)
            final, outcomes = result.rollouts[rollout.cluster]
            self.post_status(rollout.commit, rollout.cluster, final.status == "finished",
                             f"rolling restart {final.id} {final.status}" + (f": {final.message}"
                                                                             if final.status != "finished" else ""))
            return final, outcomes

    def cancel_rollout(self, rid: str) -> Rollout:
        with self.locked():
            rollout = self.store.find(rid)
            if rollout.status not in OPEN:
                raise Stalled(f"rollout {rollout.id} is already {rollout.status}")
            self.store.set_status(rollout.id, "cancelled", "cancelled by a person")
            self._unschedule(rollout.id)
            return self.store.get(rollout.id)

    def _schedule(self, rid: str, window: str) -> str:
        """Persist a job that runs the rollout at the window's next start; returns that time (UTC, ISO)."""
        sched = self.scheduler or make_scheduler(self.settings)
        temporary = self.scheduler is None
        if temporary:
            sched.start(paused=True)
        try:
            job = sched.add_job(
                "reconciler.engine.chain:run_scheduled_rollout", cron_trigger(window),
                args=[rid], id=f"rollout-{rid}", jobstore=PERSISTENT, replace_existing=True,
            )
            when = job.next_run_time
            return when.isoformat() if when else "never"
        finally:
            if temporary:
                sched.shutdown(wait=False)

    def _unschedule(self, rid: str) -> None:
        sched = self.scheduler or make_scheduler(self.settings)
        temporary = self.scheduler is None
        if temporary:
            sched.start(paused=True)
        try:
            with contextlib.suppress(JobLookupError):
                sched.remove_job(f"rollout-{rid}", jobstore=PERSISTENT)
        finally:
            if temporary:
                sched.shutdown(wait=False)

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



def cluster_status(result: ApplyReport, name: str) -> tuple[bool | None, str]:
    """One cluster's outcome for its commit status: ok (None while a restart waits for its window) and why."""
    if name in result.refused:
        return False, result.refused[name][0]
    unreachable = [s for c, s, _ in result.report.unreachable if c == name]
    if unreachable:
        return False, f"cannot reach {', '.join(unreachable)}"
    servers = result.results.get(name) or {}
    bad = sorted(s for s, r in servers.items() if not r.ok)
    if bad:
        return False, f"not confirmed on {', '.join(bad)}"
    rollout = result.rollouts.get(name)
    if rollout is not None and rollout[0].status != "finished":
        return False, f"rolling restart {rollout[0].id} {rollout[0].status}: {rollout[0].message}"
    if name in result.scheduled:
        rid, when = result.scheduled[name]
        return None, f"hot-deploys done; rolling restart {rid} waits for its window ({when})"
    n = len(servers)
    return True, f"every server runs {result.report.commit[:12]}" + (f" ({n} confirmed)" if n else "")


def window_open(window: str, now: datetime) -> bool:
    """Whether `now` falls in a minute the window's cron expression matches (UTC)."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    nxt = cron_trigger(window).get_next_fire_time(None, minute)
    return nxt is not None and nxt == minute


#: how long a windowed rollout that found the state dir busy waits before trying again
BUSY_RETRY = 15.0


def run_scheduled_rollout(rid: str) -> None:
    """The persisted job of a rollout waiting for its window (APScheduler calls it by this import path)."""
    engine: Engine = runtime("engine")
    try:
        rollout, _ = engine.resume_rollout(rid)
        engine.progress(f"scheduled rollout {rid}: {rollout.status}")
    except Busy:
        # a deploy holds the state dir right when the window opened: try again shortly rather than tomorrow
        if engine.scheduler is not None:
            engine.scheduler.add_job(
                "reconciler.engine.chain:run_scheduled_rollout",
                DateTrigger(datetime.now(UTC) + timedelta(seconds=BUSY_RETRY)),
                args=[rid], id=f"rollout-{rid}-retry", jobstore=PERSISTENT, replace_existing=True,
            )
        engine.progress(f"scheduled rollout {rid}: the state dir is busy, trying again in {BUSY_RETRY:.0f} s")
    except Exception as e:  # a job must never kill the scheduler's thread; the store keeps the status
        engine.progress(f"scheduled rollout {rid} failed: {e}")
