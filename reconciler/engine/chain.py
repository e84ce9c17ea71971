"""The reconcile chain: source -> desired -> observe -> plan -> apply -> record, with a finaliser that records.

Flux's controllers chain small steps and always patch status at the end; this module does the same for one run:
each step hands plain data to the next, and whatever happens after the commit is known (a refusal, a failure on
a server, success) ends up as records in the commit's git note. The CLI and the daemon both call this module;
neither knows how a step is done.

Each apply is a `_Run`: the commit's desired state is built once for it (or handed in by the daemon) and passed
down to observe, plan, hot-deploy and rollouts; each step is journalled before its side effect
(`engine/journal.py`), and the run's finaliser writes the note whatever ends it (success, an exception, Ctrl-C,
SIGTERM). A run that was SIGKILLed is finished by the next one, first thing. A run is entered in the journal at
its first write, and whether a killed run or a rollout waits is first asked without SQLAlchemy (`db/probe.py`), so
an apply with nothing to do leaves the state database as it was and loads no database library. What comes back
is typed: an `ApplyReport` whose `cluster(name)` is a `ClusterOutcome`, and `Record`s with `Reason` enums.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.apply.hotdeploy import ServerResult, await_confirmations, hot_deploy
from reconciler.apply.lease import Lease, LeaseSite
from reconciler.apply.rollout import RestartOutcome, RolloutRunner
from reconciler.apply.rollouts import OPEN, TAKEN_UP, Rollout
from reconciler.core.desired import build_desired
from reconciler.core.plan import ClusterPlan, Plan, plan
from reconciler.core.release import Release, release, wanted_shas
from reconciler.core.state import Desired, DesiredCluster, Module
from reconciler.db.probe import quiet
from reconciler.engine.facts import FactFile
from reconciler.engine.listings import Listings
from reconciler.engine.results import ApplyReport, PlanReport
from reconciler.engine.scheduler import next_window, window_due, window_open
from reconciler.errors import Busy, ReconcilerError, SourceError, Stalled, Unreachable
from reconciler.githost.client import State, client_for
from reconciler.githost.statuses import ResultHook, StatusPoster, StatusUpdate
from reconciler.gitrepo import blobs, trust
from reconciler.gitrepo.notes import Audit, PushResult, format_at
from reconciler.gitrepo.records import INTERRUPTED, Action, Reason, Record
from reconciler.gitrepo.source import Source
from reconciler.locks import LockHeld, PidLock
from reconciler.observe import Answer, CacheMode, observe_all
from reconciler.settings import Settings
from reconciler.transport import SSHOptions
from reconciler.transport.connect import Connections

if TYPE_CHECKING:  # SQLAlchemy (~0.1 s) loads with the journal and the store, the first time a run needs them
    from reconciler.apply.store import RolloutStore
    from reconciler.engine.journal import HotDeployStep, Journal, Verdicts
    from reconciler.transport.ssh import SSHPool

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
        #: what each server's pickup and deployed dirs held when last observed: observe sends its digest
        self.listings = Listings(Path(settings.state_dir) / "listings.json")
        self._store: RolloutStore | None = None
        self._journal: Journal | None = None
        #: `apply --timeout`: an operator's word wins over the manifest's confirm_timeout
        self.confirm_timeout_override: float | None = None
        self.by = f"{getpass.getuser()}@{socket.gethostname()}"
        #: counts each commit status posted, retried or given up (the daemon points it at /metrics)
        self.status_hook: ResultHook | None = None
        self._statuses: StatusPoster | None = None
        self._statuses_off_said = False
        #: what the last observe asked each server and the fingerprint of its answer (engine/noop.py keeps them)
        self.answers: dict[tuple[str, str], Answer] = {}
        #: SSH connections the no-op memo's check made (engine/noop.py), used by the next `connections()`
        self.pool: SSHPool | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        with StateLock(self.settings.state_dir).held():
            yield

    def connections(self) -> Connections:
        pool, self.pool = self.pool, None
        return Connections(
            SSHOptions(
                identity=self.settings.identity,
                known_hosts=self.settings.known_hosts,
                connect_timeout=self.settings.connect_timeout,
            ),
            pool,
        )

    # --- steps ---------------------------------------------------------------------------------------------
    def fetch(self, fetched: str | None = None) -> str:
        """Fetch the branch head (unless this process just did: `fetched`) and check that it may be applied
        (`trust.Untrusted` when not)."""
        commit = fetched
        if commit is None:
            self.progress(f"fetching {self.settings.branch}")
            commit = self.source.fetch()
            self.progress(f"commit {commit[:12]}")
        self.check_trust(commit)
        return commit

    def fetch_to_apply(self, run_id: str | None = None, fetched: str | None = None) -> str:
        """`fetch()` for a command that applies: a head refused as untrusted is also recorded on its commit, so
        `history` shows who tried to release what (a plan records nothing)."""
        try:
            return self.fetch(fetched)
        except trust.Untrusted as e:
            self._record(e.commit, [Record(at=utc_now(), run=run_id or uuid.uuid4().hex[:12], by=self.by,
                                           commit=e.commit, action=Action.REFUSED, outcome="failed",
                                           reason=Reason.UNTRUSTED, detail=e.message)])
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

    def observe(
        self, desired: Desired, conns: Connections, only: list[str] | None = None, cache: CacheMode = "ro"
    ) -> PlanReport:
        """Observe and plan. `cache`: "rw" only under the cluster lease (apply), so `plan` writes nothing."""
        clusters = [c for c in desired.clusters if only is None or c.name in only]
        n = sum(len(c.spec.servers) for c in clusters)
        self.progress(f"observing {n} server{'s' if n != 1 else ''}")
        self.answers = {}
        observed, failures = observe_all(
            clusters, conns.get, parallelism=self.settings.parallelism, timeout=self.settings.command_timeout,
            cache=cache, expect=lambda dc, server: self.listings.expected(dc, server.name), answers=self.answers,
        )
        for dc in clusters:
            for server in observed[dc.name].servers if dc.name in observed else ():
                self.listings.remember(dc, server)
        self.listings.save()
        return PlanReport(desired.commit, desired, observed, plan(desired, observed), failures)

    def plan(
        self, only: list[str] | None = None, commit: str | None = None, desired: Desired | None = None
    ) -> PlanReport:
        """The plan for the branch head (fetched), or for `commit` (already fetched) when given; a caller that
        already built the commit's desired state passes it, and it is not built again."""
        if desired is None:
            desired = self.desired(commit or self.fetch())
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

    def apply(
        self, only: list[str] | None = None, commit: str | None = None, desired: Desired | None = None
    ) -> ApplyReport:
        """Apply the branch head (fetched), or `commit` (already fetched) when given, to the clusters in `only`.

        First the record of any run that was killed is finished (its journal, see engine/journal.py). Then per
        cluster: hot-deploys first (no restart needed), then the rolling restart for static changes, now or,
        with a `rollout.window`, as a pending rollout in the store that the daemon runs when the window starts.
        A rollout interrupted earlier is finished first, at the server where it stopped. Whatever happens, the run
        ends by recording what it did (`_run`'s finaliser): an exception, SIGINT or SIGTERM records what was done
        so far as `interrupted`."""
        with self.locked():
            commit = desired.commit if desired is not None else commit or self.fetch_to_apply()
            #: each commit's desired state, built once for this run (and the killed runs it finishes first)
            desireds = {desired.commit: desired} if desired is not None else {}
            with self.connections() as conns:
                self._recover(conns, desireds)
                with self._run(commit, conns, desireds) as run:
                    result = self._apply(run, only, conns)
            result.note = run.note
            try:
                trust.mark_applied(self.source, self.settings.branch, commit)
            except SourceError as e:  # the deploy happened: say so, and let the next apply mark it
                self.progress(f"warning: {e.message}")
            for name in result.report.plan.clusters:
                ok, why = cluster_status(result, name.cluster)
                self.post_status(commit, name.cluster, ok, why)
            return result

    def _apply(self, run: _Run, only: list[str] | None, conns: Connections) -> ApplyReport:
        commit = run.commit
        try:
            desired = run.desired(commit)
        except Stalled as e:
            run.add([run.record(Action.REFUSED, "failed", detail=e.message, reason=Reason.COMMIT_INVALID)])
            raise
        result = ApplyReport(PlanReport(commit, desired, {}, plan(desired, {}), []), run_id=run.id)
        names = [c.name for c in desired.clusters if only is None or c.name in only]
        for name in names:
            self.post_status(commit, name, None, f"deploying {commit[:12]}")
        try:
            self._apply_clusters(run, desired, names, conns, result)
        except Exception as e:
            for name in names:
                self.post_status(commit, name, False, f"error: {e}".splitlines()[0])
            raise
        result.records = run.records
        return result

    def _apply_clusters(
        self, run: _Run, desired: Desired, names: list[str], conns: Connections, result: ApplyReport
    ) -> None:
        with contextlib.ExitStack() as leases:
            # the leases come first: the plan must be made while no other reconciler changes the servers
            held = self._take_leases(leases, [desired.cluster(n) for n in names], conns)
            for rollout in self._taken_up():
                if rollout.cluster in names and rollout.cluster in held:
                    self._run_rollout(run, rollout.id, conns, result, held[rollout.cluster])
            report = self.observe(desired, conns, names, cache="rw")
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
                self._apply_cluster(run, desired, report, cluster_plan, conns, result, lease)
        unreachable = [run.record(Action.OBSERVE, "failed", cluster=c, server=s, detail=err.message,
                                  reason=Reason.HOST_KEY_UNKNOWN if isinstance(err, Stalled)
                                  else Reason.SERVERS_UNREACHABLE)
                       for c, s, err in report.unreachable]
        run.add(unreachable)

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
        self, run: _Run, desired: Desired, report: PlanReport, cluster_plan: ClusterPlan, conns: Connections,
        result: ApplyReport, lease: Lease,
    ) -> None:
        name, commit = cluster_plan.cluster, desired.commit
        dc = desired.cluster(name)
        spec = dc.spec
        if cluster_plan.blocked:
            result.refused[name] = list(cluster_plan.blocked)
            run.add([run.record(Action.REFUSED, "failed", cluster=name, detail="; ".join(cluster_plan.blocked),
                                reason=Reason.SERVERS_NOT_READY)])
            return
        transports = {s.name: conns.get(spec, s) for s in spec.servers}
        if cluster_plan.hot_deploys:
            observed = report.observed[name]
            confirms: dict[str, list[str]] = {}
            drops: dict[str, list[str]] = {}
            for h in cluster_plan.hot_deploys:
                for s in h.confirm_on:
                    confirms.setdefault(s, []).append(h.module)
                for s in h.drop_on:
                    drops.setdefault(s, []).append(h.module)
            op = run.journal.hot_deploy(
                run.id, name, commit,
                {h.module: (dc.modules[h.module].repo_path, dc.modules[h.module].blob, dc.modules[h.module].sha256)
                 for h in cluster_plan.hot_deploys},
                drops, confirms, {s: observed.server(s).log for s in confirms})
            servers = hot_deploy(
                dc, observed, cluster_plan, transports,
                timeout=self.confirm_timeout_override or spec.confirm_timeout or self.settings.confirm_timeout,
                poll=self.settings.confirm_poll, progress=self.progress, parallelism=self.settings.parallelism,
                on_copied=lambda server: run.journal.copied(run.id, op, server), stop=self.stop,
            )
            result.results[name] = servers
            run.add(self._hot_records(run, dc.modules, name, servers), op=op)
            if not all(r.ok for r in servers.values()):
                if cluster_plan.restarts:
                    result.refused[name] = ["a hot-deploy failed, so the rolling restart was not started"]
                return
        if not cluster_plan.restarts:
            return
        if cluster_plan.restart_blocked:
            result.refused[name] = list(cluster_plan.restart_blocked)
            run.add([run.record(Action.REFUSED, "failed", cluster=name, reason=Reason.SERVERS_NOT_READY,
                                detail="; ".join(cluster_plan.restart_blocked))])
            return
        resumed = result.rollouts.get(name)
        if resumed is not None and resumed[0].status != "finished":
            # the interrupted rollout resumed by this apply stopped again: starting another one now would only
            # repeat it; a person decides (`rollouts resume`) or a new commit supersedes it
            result.refused[name] = [f"rollout {resumed[0].id} {resumed[0].status}: {resumed[0].message}"]
            return
        for old in self.store.all(OPEN, cluster=name):
            self.store.set_status(old.id, "superseded", f"superseded by commit {commit[:12]}")
        plans = {r.server: r.to_dict() for r in cluster_plan.restarts}  # what `plan` showed, carried out as is
        window = spec.rollout.window
        if window and window_open(window, datetime.now(UTC)):
            self.progress(f"{name}: the rollout window '{window}' is open now")
            window = None
        if window:
            rollout = self.store.create(name, commit, plans, status="pending", window=window)
            start = next_window(window, datetime.now(UTC))
            when = start.isoformat() if start else "never"
            result.scheduled[name] = (rollout.id, when)
            self.progress(f"{name}: rolling restart {rollout.id} waits for its window '{window}' (next: {when})")
            run.add([run.record(Action.ROLLOUT_SCHEDULED, "pending", cluster=name, rollout=rollout.id,
                                reason=Reason.WAITING_FOR_WINDOW, detail=f"window '{window}', next {when}")])
            return
        rollout = self.store.create(name, commit, plans, status="running", window=None)
        self.progress(f"{name}: rolling restart {rollout.id} of {len(cluster_plan.restarts)} server(s), "
                      f"{spec.rollout.max_unavailable} at a time")
        self._run_rollout(run, rollout.id, conns, result, lease)

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
            self._record(made.commit, [Record(
                at=utc_now(), run=uuid.uuid4().hex[:12], by=self.by, commit=made.commit, action=Action.ROLLBACK,
                outcome="ok", detail=f"tree of {made.to[:12]} (was {made.parent[:12]}), by {self.by}",
                extra={"to": made.to, "from": made.parent})])
            return made

    # --- the run and its record step -----------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        if self._journal is None:
            from reconciler.engine.journal import Journal

            self._journal = Journal.for_settings(self.settings)
        return self._journal

    def _quiet(self) -> bool:
        """Whether the state database has nothing for a run to take up (no run left open, no rollout running or
        interrupted), asked without SQLAlchemy where `db/probe.py` can tell; when it cannot, or finds something,
        the journal and the store are asked (and decide, e.g., whether an open run is dead)."""
        return quiet(self.settings.state_db_url(), TAKEN_UP) is True

    def _killed_runs(self) -> list[str]:
        return [] if self._quiet() else self.journal.unfinished()

    def _taken_up(self) -> list[Rollout]:
        """The rollouts a run works on before anything else: running or interrupted (a run was working on them)."""
        return [] if self._quiet() else self.store.all(TAKEN_UP)

    @contextmanager
    def _run(self, commit: str, conns: Connections, desireds: dict[str, Desired] | None = None) -> Iterator[_Run]:
        """One run, journalled from its first write (`_Run.journal`); its finaliser always records (rule 14),
        whatever ends the block. A run that wrote nothing (it had nothing to do) has no journal to turn into a
        note: its finaliser only pushes the notes kept locally."""
        run = _Run(uuid.uuid4().hex[:12], commit, self, desireds if desireds is not None else {})
        try:
            yield run
        except BaseException as e:
            self.progress(f"the run ended early ({type(e).__name__}); recording what was done so far")
            raise
        finally:
            run.note = self._finish(run.id, conns, wait=False, desireds=run.desireds, journalled=run.opened)

    def _recover(self, conns: Connections, desireds: dict[str, Desired] | None = None) -> None:
        """Finish the records of runs that were killed (their journals are still open), before anything else."""
        for rid in self._killed_runs():
            self.progress(f"run {rid} was killed before it recorded what it did; finishing its record")
            self._finish(rid, conns, wait=True, desireds=desireds)

    def recover(self) -> PushResult | None:
        """What the daemon calls on every poll: finish the records of killed runs and push notes that are kept
        locally. Nothing happens (None) while someone else holds the state dir."""
        try:
            with self.locked():
                if not self._killed_runs() and not self.audit.pending():
                    return None
                with self.connections() as conns:
                    self._recover(conns)
                return self.audit.push_pending()
        except Busy:
            return None

    def _finish(
        self, run_id: str, conns: Connections, *, wait: bool, desireds: dict[str, Desired] | None = None,
        journalled: bool = True,
    ) -> PushResult | None:
        """Turn a run's journal into its note (records grouped by commit), then close the journal; a run that
        never `journalled` has none, so only the notes kept locally are pushed."""
        records = self._journalled(run_id, conns, wait, desireds) if journalled else []
        note: PushResult | None = None
        by_commit: dict[str, list[Record]] = {}
        for r in records:
            by_commit.setdefault(r.commit, []).append(r)
        try:
            for commit, recs in by_commit.items():
                note = self._record(commit, recs)
            if note is None:
                pushed = self.audit.push_pending()
                note = None if pushed.reason == "nothing to push" else pushed
        except ReconcilerError as e:
            # the journal stays open: the next run writes the note
            self.progress(f"cannot write the note of run {run_id} now ({e.message}); the next run will")
            return None
        if journalled:
            self.journal.close(run_id)
        return note

    def _journalled(
        self, run_id: str, conns: Connections, wait: bool, desireds: dict[str, Desired] | None
    ) -> list[Record]:
        """A run's records, from its journal. Hot-deploys the run did not see to the end are settled from the
        servers' logs since the journalled offsets (waiting for them to confirm when `wait`, for a run that was
        killed); rollouts from the rollout store."""
        from reconciler.engine.journal import hot_deploy_records, interrupt_rollout, rollout_records

        j = self.journal.read(run_id)
        records = list(j.records)
        cache = desireds if desireds is not None else {}
        base = Record(at=utc_now(), run=run_id, by=j.by, commit=j.commit, action=Action.HOT_DEPLOY,
                      outcome=INTERRUPTED)
        for step in j.pending_hot_deploys:
            records += hot_deploy_records(step, self._reread(step, conns, wait, cache), base, utc_now())
        recorded = {(r.rollout, r.server) for r in records if r.action == Action.RESTART}
        for rs in j.pending_rollouts:
            try:
                rollout = self.store.get(rs.rollout)
            except KeyError:
                continue
            records += rollout_records(rs, rollout, recorded, base)
            interrupt_rollout(self.store, rollout)
        return records

    def _reread(self, step: HotDeployStep, conns: Connections, wait: bool, cache: dict[str, Desired]) -> Verdicts:
        """The verdicts in the servers' logs since the journalled offsets, for a hot-deploy whose run ended
        before it saw them: one read, or (a killed run, files copied) until confirmed or confirm_timeout."""
        try:
            if step.commit not in cache:
                cache[step.commit] = self.desired(step.commit)
            dc = cache[step.commit].cluster(step.cluster)
            by_name = {s.name: s for s in dc.spec.servers}
            sent = {m for s, ms in step.drops.items() if s in step.copied for m in ms}
            confirms = {s: set(ms) & sent if step.copied else set(ms) for s, ms in step.confirms.items()}
            confirms = {s: ms for s, ms in confirms.items() if ms and s in by_name}
            transports = {s: conns.get(dc.spec, by_name[s]) for s in confirms}
        except (ReconcilerError, KeyError) as e:
            self.progress(f"cannot re-read the logs of {step.cluster}: {e}")
            return {}
        results = {s: ServerResult(s) for s in confirms}
        timeout = (self.confirm_timeout_override or dc.spec.confirm_timeout or self.settings.confirm_timeout
                   if wait and step.copied else 0.0)
        await_confirmations(dc, confirms, step.marks, transports, results, timeout=timeout,
                            poll=self.settings.confirm_poll, progress=self.progress,
                            parallelism=self.settings.parallelism)
        out: dict[str, dict[str, tuple[str, str]]] = {}
        for s, r in results.items():
            for m, o in r.modules.items():
                outcome = o if o in ("confirmed", "failed") or (o == "timeout" and timeout) else INTERRUPTED
                detail = "" if o == "confirmed" else "\n".join(r.lines.get(m, []))[-2000:]
                out.setdefault(s, {})[m] = (outcome, detail)
        return out

    # --- rollouts ------------------------------------------------------------------------------------------
    @property
    def store(self) -> RolloutStore:
        if self._store is None:
            from reconciler.apply.store import RolloutStore

            self._store = RolloutStore.for_settings(self.settings)
        return self._store

    def _run_rollout(self, run: _Run, rid: str, conns: Connections, result: ApplyReport | None, lease: Lease) -> None:
        """Carry out a persisted rollout as it was planned (the commit's files, each server's stored operations),
        with the commit's desired state built once for the run."""
        rollout = self.store.get(rid)
        run.add(self._unrecorded_restarts(run, rollout))
        dc = run.desired(rollout.commit).cluster(rollout.cluster)
        spec = dc.spec
        transports = {s.name: conns.get(spec, s) for s in spec.servers}
        op = run.journal.rollout(run.id, rollout)
        runner = RolloutRunner(self.store, dc, transports, progress=self.progress, stop=self.stop,
                               poll=self.settings.confirm_poll, guard=lease.check)
        outcomes = runner.run(rollout)
        final = self.store.get(rid)
        if result is not None:
            result.rollouts[rollout.cluster] = (final, outcomes)
        records = []
        for o in outcomes:
            rec = run.record(Action.RESTART, o.outcome, commit=rollout.commit, cluster=rollout.cluster,
                             server=o.server, rollout=rid, started=o.started, ready=o.ready,
                             duration=round(o.duration, 2), files=tuple(o.files))
            if o.outcome in (INTERRUPTED, "unreachable"):
                continue  # not finished: the run that finishes it records it
            if not o.ok:
                rec = rec.but(detail=(o.error + "\n" + "\n".join(o.lines[-10:]))[-2000:],
                              reason=Reason.ROLLED_BACK if o.outcome == "rolled-back" else Reason.RESTART_FAILED)
            records.append(rec)
        run.add(records, op=op)

    def _unrecorded_restarts(self, run: _Run, rollout: Rollout) -> list[Record]:
        """Restarts an earlier run finished but never recorded, and whose journal could not tell (its host died
        and a standby took over before the journal went stale): recorded now, from the store, so the history has
        no gap. A killed run of this host was already finished from its journal (`_recover`)."""
        done = [s for s in rollout.servers if s.step == "done" and s.ready]
        if not done:
            return []
        recorded = {str(r.get("server")) for r in self.audit.records_for(rollout.commit)
                    if r.get("action") == Action.RESTART and r.get("rollout") == rollout.id}
        return [run.record(Action.RESTART, "ready", commit=rollout.commit, cluster=rollout.cluster, server=s.server,
                           rollout=rollout.id, started=s.started or "", ready=s.ready or "",
                           detail="restarted by an earlier run that ended before recording it")
                for s in done if s.server not in recorded]

    def resume_rollout(self, rid: str) -> tuple[Rollout, list[RestartOutcome]]:
        """Run a pending, halted or interrupted rollout now (the window of a pending one is skipped)."""
        with self.locked():
            rollout = self.store.find(rid)
            if rollout.status not in OPEN:
                raise Stalled(f"rollout {rollout.id} is {rollout.status}; only pending, running or halted ones resume")
            self.source.fetch()
            desireds: dict[str, Desired] = {}
            with self.connections() as conns:
                self._recover(conns, desireds)
                with self._run(rollout.commit, conns, desireds) as run:
                    desired = run.desired(rollout.commit)
                    result = ApplyReport(PlanReport(rollout.commit, desired, {}, Plan("", ()), []))
                    self.post_status(rollout.commit, rollout.cluster, None, f"rolling restart {rollout.id} running")
                    try:
                        with self.lease(desired.cluster(rollout.cluster), conns).held() as lease:
                            self._run_rollout(run, rollout.id, conns, result, lease)
                    except Exception as e:
                        self.post_status(rollout.commit, rollout.cluster, False, f"error: {e}".splitlines()[0])
                        raise
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
            return self.store.get(rollout.id)

    def due_rollouts(self, now: datetime | None = None) -> list[Rollout]:
        """Pending rollouts whose window has started since they were created (the daemon runs them)."""
        now = now or datetime.now(UTC)
        return [r for r in self.store.all(("pending",)) if r.window and window_due(r.window, _parse(r.created), now)]

    # --- records -------------------------------------------------------------------------------------------
    def _hot_records(
        self, run: _Run, modules: Mapping[str, Module], cluster: str, servers: dict[str, ServerResult]
    ) -> list[Record]:
        out: list[Record] = []
        at, by = utc_now(), self.by
        for server, r in servers.items():
            started, finished, dropped = _iso(r.started), _iso(r.finished), set(r.dropped)
            for module, outcome in sorted(r.modules.items()):
                m = modules[module]
                # made whole, not run.record(...).but(...): a first deploy makes one per module and server
                detail, reason = "", None
                if outcome != "confirmed":
                    detail = r.error or "\n".join(r.lines.get(module, []))[-2000:]
                    reason = HOT_REASONS.get(outcome, Reason.DEPLOY_ERROR)
                out.append(Record(
                    at=at, run=run.id, by=by, commit=run.commit, action=Action.HOT_DEPLOY, outcome=outcome,
                    cluster=cluster, server=server, module=m.repo_path, blob=m.blob, sha256=m.sha256,
                    dropped=module in dropped, started=started, finished=finished, detail=detail, reason=reason))
        return out

    def _record(self, commit: str, records: list[Record]) -> PushResult:
        self.progress(f"recording {len(records)} record{'s' if len(records) != 1 else ''} on {commit[:12]}")
        return self.audit.record(commit, records)


#: a hot-deploy outcome that is not `confirmed` -> its reason
HOT_REASONS = {"failed": Reason.DEPLOY_FAILED, "timeout": Reason.CONFIRM_TIMEOUT, "not-sent": Reason.NOT_SENT,
               "error": Reason.DEPLOY_ERROR, INTERRUPTED: Reason.INTERRUPTED}


@dataclass
class _Run:
    """One run of the engine: its id, the desired state of each commit it touched (built once per commit and
    run), and what it recorded so far (also in the journal)."""

    id: str
    commit: str
    engine: Engine
    desireds: dict[str, Desired] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    note: PushResult | None = None
    #: whether this run is in the journal yet (`journal`)
    opened: bool = False

    @property
    def journal(self) -> Journal:
        """The run journal with this run open in it. Every write of the run comes through here, so the run is
        opened at its first write, which comes before the side effect it announces (modules about to be copied, a
        rollout taken up): a run killed before that did nothing to record. A run that never writes (nothing to
        do) never opens the journal, nor the state database."""
        journal = self.engine.journal
        if not self.opened:
            journal.open(self.id, self.commit, self.engine.by)
            self.opened = True
        return journal

    def desired(self, commit: str) -> Desired:
        if commit not in self.desireds:
            self.desireds[commit] = self.engine.desired(commit)
        return self.desireds[commit]

    def record(self, action: Action, outcome: str, **fields: object) -> Record:
        base = Record(at=utc_now(), run=self.id, by=self.engine.by, commit=self.commit, action=action,
                      outcome=outcome)
        return base.but(**fields)

    def add(self, records: list[Record], op: int | None = None) -> None:
        """What a step did, journalled at once (so a kill after this loses nothing); `op` is the step's entry."""
        if records or op is not None:
            self.journal.records(self.id, records, op)
        self.records += records


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


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
