"""`zato-gitops run`: the reconcile loop that makes merging enough, and puts back what drifts.

Why a loop of small decisions rather than "apply every interval": applying means observing every server over
SSH, so the loop first asks the remote for the branch head (`git ls-remote`, no fetch) and does nothing more
while it has not moved. When it has, it fetches once, builds the commit's desired state once, and reconciles
each cluster on its own (`Engine.apply(only=[cluster], desired=...)`), so one failing cluster never blocks
another. The outcome is the engine's typed `ClusterOutcome` (reason enums, no strings to match). Every poll first
lets the engine finish the record of a run that was killed and push notes kept locally (`Engine.recover`).
Per cluster, `ClusterStatus.due` decides:

- newest commit wins: a new head is attempted at once, whatever happened to the one before;
- a commit that failed for good (`Stalled`: an invalid manifest, a module Zato refused, an unknown host key) is
  recorded (a git note, as every apply is) and not tried again until a new commit arrives (or someone runs
  `zato-gitops reconcile`): the status says it waits for a person;
- a commit that failed for a reason that may pass (`Transient`: a server unreachable, a confirmation timeout) is
  retried with exponential backoff (`retry_backoff` doubling up to `retry_backoff_max`), through a one-off job.

Drift is a second job, every `drift_interval` (`drift.py`). Both jobs take one lock, so a drift heal never runs
beside a deploy; both turn what the engine reports into the status, metrics and notifications through the same
`outcome.Ledger`. The CLI's side of a running daemon (its lock, `daemon.json`, the API client) is `client.py`.

Everything runs on the process's one APScheduler (`scheduler.make_scheduler`); webhooks and `zato-gitops
reconcile` add a one-off job "now". Rolling restarts waiting for their `rollout.window` are rows in the rollout
store, not jobs: each poll of the leader runs those whose window has started (`Engine.due_rollouts`). SIGTERM sets
the engine's `stop` event, which long work checks between server steps (a rolling restart finishes the server it
is on; no new cluster is started), waits for the running job, writes the status and exits 0. One daemon per state
dir: `<state_dir>/daemon.lock` (an flock, released by the kernel if the process dies), beside the engine's
per-apply `<state_dir>/lock`.

With a shared `state_db` (PostgreSQL), two daemons on two nodes elect a leader (`db/leader.py`): the scheduler
runs, and the poll (with the rollouts whose window started) and the drift check act, only while this daemon
leads (`_on_role`); a standby serves the HTTP endpoint, forwards webhooks and requests to the leader and shows the
status the leader wrote. Losing the lead sets `halt`, which the engine checks between server steps, exactly as
SIGTERM does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler.apply.rollouts import TAKEN_UP
from reconciler.core.state import Desired
from reconciler.daemon.client import INFO_FILE, DaemonLock
from reconciler.daemon.conditions import Event, FailureKind, StatusStore, iso, short
from reconciler.daemon.drift import DriftCheck
from reconciler.daemon.http import Server, parse_listen
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notify import Notifier
from reconciler.daemon.outcome import Ledger, expected
from reconciler.db.leader import Election, SingleNode
from reconciler.db.schema import scope_name
from reconciler.engine.chain import Engine
from reconciler.engine.results import ApplyReport, error_outcome
from reconciler.engine.scheduler import make_scheduler
from reconciler.errors import Busy, ReconcilerError, Stalled, Transient
from reconciler.gitrepo.records import Action, Record
from reconciler.gitrepo.trust import Untrusted
from reconciler.settings import Settings

log = logging.getLogger("zato_gitops.daemon")

#: engine progress lines that come with every poll; logged at debug so the log has one line per event
_ROUTINE = ("fetching ", "commit ", "observing ", "recording ")


class Clock:
    """Wall time, injected (practice 9): tests of the loop's decisions pass their own."""

    def __call__(self) -> float:
        return time.time()


# --- the daemon ------------------------------------------------------------------------------------------------


class Daemon:
    def __init__(
        self, settings: Settings, *, clock: Callable[[], float] | None = None,
        engine_factory: Callable[[threading.Event], Engine] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir).expanduser().absolute()
        self.clock = clock or Clock()
        self.stop = threading.Event()
        #: what the engine checks between server steps: set on SIGTERM, and when this daemon stops leading
        self.halt = threading.Event()
        self._engine_factory = engine_factory or self._make_engine
        self._engine: Engine | None = None
        self.status = StatusStore.for_settings(settings)
        self.leader: SingleNode | Election = (
            Election(settings.state_db_url(), scope_name(settings.repo or "", settings.branch),
                     settings.failover_timeout)
            if settings.shared_state() else SingleNode())
        self.status.may_write = lambda: self.leader.is_leader
        self.metrics = Metrics()
        self.notifier = notifier or Notifier(settings.notify_urls, settings.notify_format,
                                             on_result=lambda ok: self.metrics.notifications.labels(
                                                 "sent" if ok else "failed").inc())
        # what the HTTP endpoint reads
        self.branch = settings.branch
        self.webhook_secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.api_token = secrets.token_urlsafe(32)
        self.ledger = Ledger(self.status, self.metrics, self.notifier, self.clock)
        self.drift = DriftCheck(self.ledger, self.halt, self.clock)
        self.lock = DaemonLock(self.state_dir)
        self.scheduler: BackgroundScheduler | None = None
        self.http: Server | None = None
        self._work = threading.Lock()  # one reconcile or drift check at a time
        self._req = threading.Lock()
        self._force_all = False
        self._force: set[str] = set()
        self._poll_now = False
        self._kick_pending = False
        self._busy_since: float | None = None
        self._last_poll_done: float | None = None
        self._source_error_logged = ""

    def _make_engine(self, stop: threading.Event) -> Engine:
        engine = Engine(self.settings, self._progress, stop=stop)
        engine.status_hook = lambda result, _update: self.metrics.commit_statuses.labels(result).inc()
        return engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the daemon's engine is made when it runs")
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine

    def _progress(self, msg: str) -> None:
        log.log(logging.DEBUG if msg.startswith(_ROUTINE) else logging.INFO, msg)

    # --- lifecycle -------------------------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or `self.stop`); 0 after a clean stop."""
        self.lock.acquire()
        info = self.state_dir / INFO_FILE
        try:
            self.status.load()
            for cs in self.status.clusters.values():
                self.ledger.gauges(cs)
            self.engine = self._engine_factory(self.halt)
            self.http = Server(parse_listen(self.settings.listen), self)
            self.http.start()
            started = iso(self.clock()) or ""
            fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "url": self.http.url, "token": self.api_token,
                           "started": started}, f)
            self.status.daemon = {"pid": os.getpid(), "url": self.http.url, "started": started}
            self.scheduler = make_scheduler(self.settings)
            s = self.settings
            self.scheduler.add_job(self.poll, IntervalTrigger(seconds=s.interval, jitter=s.interval * s.jitter),
                                   id="poll", name="poll the branch head", next_run_time=datetime.now(UTC))
            self.scheduler.add_job(self.drift_check, IntervalTrigger(seconds=s.drift_interval,
                                                                     jitter=s.drift_interval * s.jitter),
                                   id="drift", name="drift check")
            if install_signals:
                signal.signal(signal.SIGTERM, self._on_signal)
                signal.signal(signal.SIGINT, self._on_signal)
            self.scheduler.start(paused=True)  # resumed while this daemon leads
            self.leader.start(self._on_role, self._on_request)
            log.info("zato-gitops daemon started (pid %d): watching %s of %s every %.0f s, drift check every "
                     "%.0f s, listening on %s, state in %s", os.getpid(), s.branch, self.engine.source.safe_url,
                     s.interval, s.drift_interval, self.http.url,
                     "a shared database" if self.leader.shared else "this node's state dir", extra={"event": "started"})
            while not self.stop.wait(1.0):
                pass
            log.info("stopping: finishing the current step (no server is left stopped)", extra={"event": "stopping"})
            self.scheduler.shutdown(wait=True)
            self.http.stop()
            if self.leader.is_leader:
                with self.status.lock:
                    for cs in self.status.clusters.values():
                        cs.reconciling = False
                        cs.refresh(self.clock())
                    self.status.daemon = {}
                    self.status.save()
            self.leader.stop()  # last: a standby takes over only once this daemon's step is finished
            log.info("stopped", extra={"event": "stopped"})
            return 0
        finally:
            with contextlib.suppress(OSError):
                info.unlink()
            self.notifier.close(wait=True)
            if self._engine is not None:
                self._engine.close()
            self.lock.release()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            log.warning("still finishing the current step; SIGKILL aborts it (a server may then be left stopped)")
        self.halt.set()
        self.stop.set()

    # --- leading and standing by ---------------------------------------------------------------------------
    def _on_role(self, leader: bool) -> None:
        """Called by the election (its thread) when this daemon starts or stops leading."""
        self.metrics.leader.set(1 if leader else 0)
        if not leader:
            # finish the server step under way, start nothing new; the new leader resumes from the store
            self.halt.set()
            if self.scheduler is not None:
                self.scheduler.pause()
            log.warning("no longer leading: reconciling nothing until this daemon leads again",
                        extra={"event": "standby"})
            return
        if self.leader.shared:
            self._load_shared()  # what the last leader knew
        if self.scheduler is None:
            return
        if not self.stop.is_set():
            self.halt.clear()
        self.scheduler.resume()
        if self.leader.shared:
            log.info("leading: %s", self.leader.reason, extra={"event": "leader"})
            interrupted = self._interrupted_rollouts()
            if interrupted:
                self.request_reconcile(interrupted, "resuming the rollout the last leader left", force=True)

    def _interrupted_rollouts(self) -> list[str]:
        """Clusters with a rollout another daemon (or this one, before) left running."""
        try:
            return sorted({r.cluster for r in self.engine.store.all(TAKEN_UP)})
        except Exception as e:  # the poll resumes it anyway; this only makes it sooner
            log.warning("cannot read the rollout store: %s", e)
            return []

    def _on_request(self, request: dict[str, Any]) -> None:
        """A request a standby forwarded (NOTIFY): handled as if it had come here."""
        why = str(request.get("why", "a request")) + " (forwarded by a standby)"
        clusters = request.get("clusters")
        names = [str(c) for c in clusters] if isinstance(clusters, list) else None
        if request.get("action") == "suspend" and names:
            for c in names:
                with contextlib.suppress(KeyError):
                    self.set_suspended(c, bool(request.get("suspended")))
        elif request.get("action") == "reconcile":
            self.request_reconcile(names, why, force=bool(request.get("force")))

    # --- what the HTTP endpoint calls --------------------------------------------------------------------------
    def _follow(self) -> None:
        """A standby shows what the leader wrote (status and cluster gauges), not what it knew when it started."""
        if self.leader.shared and not self.leader.is_leader:
            self._load_shared()

    def _load_shared(self) -> None:
        self.status.load()
        for cs in self.status.clusters.values():
            self.ledger.gauges(cs)

    def status_dict(self) -> dict[str, Any]:
        self._follow()
        data = self.status.to_dict()
        data["daemon"] = dict(self.status.daemon) | {
            "role": self.leader.role, "role_reason": self.leader.reason,
            "busy_since": iso(self._busy_since), "last_poll_done": iso(self._last_poll_done),
            "scheduler_running": bool(self.scheduler and self.scheduler.running),
            "stopping": self.stop.is_set(),
        }
        return data

    def readiness(self) -> tuple[bool, str]:
        ok, why = self._readiness()
        return ok, f"{self.leader.role}: {why}"

    def _readiness(self) -> tuple[bool, str]:
        if not (self.scheduler and self.scheduler.running) or self.stop.is_set():
            return False, "the scheduler is not running"
        if self.leader.role == "unavailable":
            return False, self.leader.reason
        if self.status.db_error:
            return False, f"cannot write the status to the state database: {self.status.db_error}"
        if not self.leader.is_leader:
            return True, self.leader.reason
        if self._busy_since is not None:
            return True, f"reconciling since {iso(self._busy_since)}"
        if self._last_poll_done is None:
            return False, "the first poll has not finished yet"
        age = self.clock() - self._last_poll_done
        limit = max(3 * self.settings.interval * (1 + self.settings.jitter), 30.0)
        if age > limit:
            return False, f"the last poll finished {age:.0f} s ago (more than {limit:.0f} s)"
        return True, f"last poll {age:.0f} s ago"

    def metrics_text(self) -> tuple[bytes, str]:
        self._follow()
        return self.metrics.render(), self.metrics.content_type

    def count_webhook(self, provider: str, result: str) -> None:
        self.metrics.webhooks.labels(provider, result).inc()

    def request_reconcile(self, clusters: list[str] | None, why: str, *, force: bool) -> None:
        """Wake the poll now: `force` reconciles the clusters (all when None) even at an unchanged head;
        otherwise (a webhook) it is just an early poll."""
        log.info("reconcile requested: %s%s", why, f" ({', '.join(clusters)})" if clusters else "",
                 extra={"event": "requested"})
        if not self.leader.is_leader:
            failed = self.leader.forward({"action": "reconcile", "clusters": clusters, "why": why, "force": force})
            if failed:
                log.warning("cannot forward the request to the leader (%s); its next poll sees a push anyway",
                            failed)
            return
        with self._req:
            if force and clusters is None:
                self._force_all = True
            elif force and clusters:
                self._force.update(clusters)
            self._poll_now = True
            if self._kick_pending or self.scheduler is None:
                return
            self._kick_pending = True
        self.scheduler.add_job(self._kicked, id=f"now-{uuid.uuid4().hex[:8]}", name="reconcile now",
                               next_run_time=datetime.now(UTC))

    def _kicked(self) -> None:
        with self._req:
            self._kick_pending = False
        self.poll()

    def set_suspended(self, cluster: str, suspended: bool) -> None:
        if not self.leader.is_leader:
            if cluster not in self.status.clusters:
                raise KeyError(cluster)
            failed = self.leader.forward({"action": "suspend", "clusters": [cluster], "suspended": suspended})
            if failed:
                raise Transient(f"this daemon stands by and cannot reach the leader: {failed}")
            return
        with self.status.lock:
            if cluster not in self.status.clusters:
                raise KeyError(cluster)
            cs = self.status.clusters[cluster]
            cs.set_suspended(suspended, self.clock())
            self.ledger.gauges(cs)
            self.status.save()
        log.info("%s: %s", cluster, "suspended" if suspended else "resumed",
                 extra={"cluster": cluster, "event": "suspended" if suspended else "resumed"})
        if not suspended:
            # it may have missed commits, or drifted, while suspended: reconcile it now
            self.request_reconcile([cluster], f"{cluster} resumed", force=True)

    # --- the poll --------------------------------------------------------------------------------------------
    def poll(self) -> None:
        if self.halt.is_set() or not self.leader.is_leader:
            return
        with self._work:
            with self._req:
                force_all, force, self._force_all, self._force, self._poll_now = (
                    self._force_all, set(self._force), False, set(), False)
            self._busy_since = self.clock()
            try:
                self._poll(force_all, force)
            except Exception:
                log.exception("the poll failed unexpectedly; the next one runs as planned")
            finally:
                self._busy_since = None
                self._last_poll_done = now = self.clock()
                self.status.source.last_poll_at = now
                self.metrics.last_poll_ts.set(now)
                self.status.save()
                self._schedule_retry()

    def _run_due_rollouts(self) -> None:
        """Rolling restarts waiting in the rollout store for a window that has now started; a busy state dir
        (a manual apply) or a failure is tried again at the next poll."""
        try:
            due = self.engine.due_rollouts()
        except ReconcilerError as e:
            log.warning("cannot read the pending rollouts: %s", e.message)
            return
        for r in due:
            if self.halt.is_set():
                return
            log.info("%s: rollout %s: its window '%s' opened", r.cluster, r.id, r.window,
                     extra={"cluster": r.cluster, "event": "window-opened"})
            try:
                final, _ = self.engine.resume_rollout(r.id)
                log.info("%s: rollout %s %s", r.cluster, r.id, final.status, extra={"cluster": r.cluster})
            except Busy:
                log.info("%s: rollout %s: the state dir is busy, trying at the next poll", r.cluster, r.id)
            except ReconcilerError as e:
                log.warning("%s: rollout %s failed: %s", r.cluster, r.id, e.message, extra={"cluster": r.cluster})

    def _source_failed(self, e: ReconcilerError, kind: FailureKind) -> None:
        src = self.status.source
        src.error, src.error_kind = e.message, kind
        self.metrics.polls.labels("error").inc()
        if self._source_error_logged != e.message:  # once per distinct problem, not every poll
            log.warning("cannot read the branch: %s", e.message, extra={"event": "source-error"})
            self._source_error_logged = e.message

    def _poll(self, force_all: bool, force: set[str]) -> None:
        engine = self.engine
        src = self.status.source
        try:
            # first the record of a run that was killed, and notes an earlier push left behind
            pushed = engine.recover()
            if pushed is not None and not pushed.pushed:
                log.warning("deploy notes kept in the state dir, not pushed: %s", pushed.reason,
                            extra={"event": "notes-not-pushed"})
        except ReconcilerError as e:
            log.warning("cannot finish the records of earlier runs: %s", e.message)
        self._run_due_rollouts()
        try:
            remote = engine.source.remote_head()
            if remote is None:
                raise Stalled(f"the branch {self.branch!r} does not exist in {engine.source.safe_url}")
        except ReconcilerError as e:
            self._source_failed(e, "stalled" if isinstance(e, Stalled) else "transient")
            return
        now = self.clock()
        with self.status.lock:
            retry_due = any((t := cs.retry_at()) is not None and t <= now for cs in self.status.clusters.values())
        if remote == src.revision and not (force_all or force or retry_due):
            self.metrics.polls.labels("unchanged").inc()
            if src.error_kind == "transient":
                src.error, src.error_kind, self._source_error_logged = "", None, ""
            return
        try:
            head = engine.fetch()
        except Untrusted as e:  # unsigned, an unknown signer, or rewritten history: every cluster stalls on it
            for name in self._cluster_names(e.commit):
                self.status.cluster(name)
            self._commit_refused(e.commit, e, forced=force_all or bool(force))
            return
        except ReconcilerError as e:
            self._source_failed(e, "stalled" if isinstance(e, Stalled) else "transient")
            return
        self.metrics.polls.labels("changed" if head != src.revision else "unchanged").inc()
        if self._source_error_logged:
            log.info("the branch can be read again", extra={"event": "source-recovered"})
            self._source_error_logged = ""
        try:
            desired = engine.desired(head)
        except Stalled as e:
            self._commit_refused(head, e, forced=force_all or bool(force))
            return
        except ReconcilerError as e:
            self._source_failed(e, "transient")
            return
        src.error, src.error_kind = "", None
        names = [c.name for c in desired.manifest.clusters]
        with self.status.lock:
            for gone in set(self.status.clusters) - set(names):
                log.info("%s: no longer in the manifest; forgotten", gone, extra={"cluster": gone})
                del self.status.clusters[gone]
                self.metrics.forget(gone)
        for c in desired.manifest.clusters:
            self.metrics.servers.labels(c.name).set(len(c.servers))
        for name in names:
            if self.halt.is_set():
                log.info("stopping: %s and the clusters after it wait for the next start", name)
                return
            cs = self.status.cluster(name)
            due, why = cs.due(head, self.clock(), forced=force_all or name in force)
            if due:
                self._reconcile(name, head, why, desired)
            else:
                log.debug("%s: nothing to do (%s)", name, why)
        src.revision = head

    def _cluster_names(self, commit: str) -> list[str]:
        """The clusters a commit's manifest names, read as data only (nothing observed, nothing compiled)."""
        from reconciler.manifest.loader import load_manifest

        try:
            text = self.engine.source.read(commit, self.settings.manifest).decode("utf-8", "replace")
            return [c.name for c in load_manifest(text, self.settings.manifest).manifest.clusters]
        except (ReconcilerError, AttributeError):
            return []

    def _commit_refused(self, head: str, e: Stalled, forced: bool) -> None:
        """The commit itself is invalid (manifest, module that does not compile): every cluster stalls on it."""
        src = self.status.source
        first = src.revision != head or src.error != e.message or forced
        src.revision, src.error, src.error_kind = head, e.message, "stalled"
        if not first:
            return
        log.error("revision %s refused: %s", short(head), e.message,
                  extra={"revision": head, "event": "refused"})
        try:
            self.engine.audit.record(head, [Record(
                at=iso(self.clock()) or "", run=uuid.uuid4().hex[:12], by=self.engine.by, commit=head,
                action=Action.REFUSED, outcome="failed", reason=error_outcome(e).reason, detail=e.message)])
        except ReconcilerError as rec_err:
            log.warning("cannot record the refusal on %s: %s", short(head), rec_err.message)
        events: list[Event] = []
        now = self.clock()
        with self.status.lock:
            for cs in self.status.clusters.values():
                if cs.suspended:
                    continue
                events += cs.fail(head, "stalled", str(error_outcome(e).reason), e.message, now,
                                  retry_base=self.settings.retry_backoff, retry_max=self.settings.retry_backoff_max)
                self.metrics.reconciles.labels(cs.name, "deploy", "stalled").inc()
                self.ledger.gauges(cs)
        self.ledger.emit(events)

    def _reconcile(self, name: str, head: str, why: str, desired: Desired) -> None:
        cs = self.status.cluster(name)
        with self.status.lock:
            cs.begin(head, self.clock())
            self.status.save()
        log.info("%s: reconciling revision %s (%s)", name, short(head), why,
                 extra={"cluster": name, "revision": head, "event": "reconciling"})
        started = time.monotonic()
        report: ApplyReport | None = None
        try:
            report = self.engine.apply(only=[name], commit=head, desired=desired)
            outcome = report.cluster(name)
        except Exception as e:  # every error ends in the status; nothing escapes the loop
            if not expected(e):
                log.exception("%s: unexpected error while applying %s", name, short(head))
            outcome = error_outcome(e)
        self.metrics.reconcile_duration.labels(name, "deploy").observe(time.monotonic() - started)
        self.ledger.account(name, head, report)
        now = self.clock()
        with self.status.lock:
            if outcome.ok:
                events = cs.succeed(head, now, outcome.detail)
            else:
                assert outcome.kind is not None
                events = cs.fail(head, outcome.kind, str(outcome.reason), outcome.message, now,
                                 retry_base=self.settings.retry_backoff, retry_max=self.settings.retry_backoff_max,
                                 retry_at=outcome.retry_at)
            self.metrics.reconciles.labels(name, "deploy", "success" if outcome.ok else str(outcome.kind)).inc()
            self.ledger.gauges(cs)
            self.status.save()
        if outcome.ok:
            log.info("%s: revision %s applied (%s)", name, short(head), outcome.detail,
                     extra={"cluster": name, "revision": head, "event": "applied"})
        else:
            f = cs.failure
            then = (f"retry in {f.next_retry_at - now:.0f} s" if f and f.next_retry_at
                    else "waiting for a new commit")
            log.error("%s: revision %s failed (%s, %s): %s", name, short(head), outcome.reason, then,
                      outcome.message, extra={"cluster": name, "revision": head, "event": "failed",
                                              "reason": outcome.reason})
        self.ledger.emit(events)

    # --- drift (drift.py does the work) ----------------------------------------------------------------------
    def drift_check(self) -> None:
        if self.halt.is_set() or not self.leader.is_leader:
            return
        with self._work:
            self._busy_since = self.clock()
            try:
                self.drift.run(self.engine)
            except Exception:
                log.exception("the drift check failed unexpectedly; the next one runs as planned")
            finally:
                self._busy_since = None
                self.status.save()

    # --- helpers ---------------------------------------------------------------------------------------------
    def _schedule_retry(self) -> None:
        if self.scheduler is None or self.halt.is_set():
            return
        with self.status.lock:
            times = [t for cs in self.status.clusters.values() if (t := cs.retry_at()) is not None]
        if not times:
            return
        when = max(min(times), self.clock() + 0.5)
        self.scheduler.add_job(self.poll, "date", run_date=datetime.fromtimestamp(when, UTC), id="retry",
                               name="retry after a transient failure", replace_existing=True)
