"""The outcome of one apply, as a status transition, and where every outcome is accounted for.

Why apart from the loop: a deploy, a retry and a drift heal all end the same way. The engine's report for one
cluster becomes an `Outcome` (`classify`, pure: success, or a failure with its kind, stalled/transient/waiting,
and a Flux-style reason), and the `Ledger` writes what the report says into the places an operator reads: each
server's state in the status (`conditions.py`), the Prometheus counters and gauges (`metrics.py`) and the
notifications of transitions (`notify.py`). The loop and the drift check decide *when* to apply; this module says
*what came of it*, the same way for both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from reconciler.apply.lease import LeaseHeld
from reconciler.core.release import left_git
from reconciler.daemon.conditions import ClusterStatus, Event, FailureKind, ServerState, StatusStore
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notify import Notifier
from reconciler.db import first_line
from reconciler.errors import Busy, ReconcilerError, Stalled

log = logging.getLogger("zato_gitops.daemon")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    kind: FailureKind | None = None
    reason: str = ""
    message: str = ""
    detail: str = ""  # for a success: what changed
    retry_at: float | None = None  # for "waiting": when the rollout window opens


def classify(report: Any, cluster: str) -> Outcome:
    """An `ApplyReport` for one cluster -> success, or a failure with its kind and a Flux-style reason.

    Stalled (needs a person): a server whose host key is unknown, a module Zato refused to deploy. Transient: a
    server unreachable, a cluster refused because a server is not running, a confirmation timeout, a failed copy.
    """
    unreachable = [(s, e) for c, s, e in report.report.unreachable if c == cluster]
    if unreachable:
        msgs = "; ".join(f"{s}: {e.message}" for s, e in unreachable)
        if any(isinstance(e, Stalled) for _, e in unreachable):
            first = next(e for _, e in unreachable if isinstance(e, Stalled))
            return Outcome(False, "stalled", type(first).__name__, msgs)
        return Outcome(False, "transient", "ServersUnreachable", msgs)
    refused = report.refused.get(cluster)
    if refused:
        return Outcome(False, "transient", "ServersNotReady", "; ".join(refused))
    results = report.results.get(cluster) or {}
    outcomes = {(s, m): o for s, r in results.items() for m, o in r.modules.items()}
    failed = [f"{s}: {m} {o}" for (s, m), o in sorted(outcomes.items()) if o == "failed"]
    if failed:
        return Outcome(False, "stalled", "DeployFailed", "Zato refused: " + "; ".join(failed))
    errors = [f"{s}: {r.error}" for s, r in sorted(results.items()) if r.error]
    other = [f"{s}: {m} {o}" for (s, m), o in sorted(outcomes.items()) if o != "confirmed"]
    if errors or other:
        reason = "ConfirmTimeout" if any(o == "timeout" for o in outcomes.values()) and not errors else "DeployError"
        return Outcome(False, "transient", reason, "; ".join(errors + other))
    rollout = (getattr(report, "rollouts", None) or {}).get(cluster)
    restarts: list[Any] = list(rollout[1]) if rollout else []
    if rollout is not None:
        ro = rollout[0]
        if ro.status == "halted":
            return Outcome(False, "stalled", "RolloutHalted", f"rolling restart {ro.id} {ro.message}")
        if ro.status != "finished":
            return Outcome(False, "transient", "RolloutInterrupted",
                           f"rolling restart {ro.id} stopped at {ro.done_count} of {len(ro.servers)} servers; "
                           "it resumes where it stopped")
    scheduled = (getattr(report, "scheduled", None) or {}).get(cluster)
    if scheduled is not None:
        rid, when = scheduled
        try:
            at: float | None = datetime.fromisoformat(when).timestamp() + 30
        except ValueError:
            at = None
        return Outcome(False, "waiting", "WaitingForWindow",
                       f"rolling restart {rid} waits for its window (next: {when})", retry_at=at)
    if not report.ok:
        return Outcome(False, "transient", "ApplyFailed", "the apply did not succeed")
    modules = {m for (_, m) in outcomes}
    parts = [f"{len(modules)} module{'s' if len(modules) != 1 else ''} hot-deployed"] if modules else []
    if restarts:
        n = sum(1 for r in restarts if r.outcome == "ready")
        parts.append(f"{n} server{'s' if n != 1 else ''} restarted")
    return Outcome(True, detail=", ".join(parts) or "no server change")


def classify_error(e: Exception) -> Outcome:
    if isinstance(e, LeaseHeld):
        # another reconciler (its own state dir, maybe another machine) holds the cluster's lease: wait for it
        return Outcome(False, "transient", "ClusterLeased", e.message)
    if isinstance(e, Busy):
        # the engine's per-apply lock is held by a manual `apply`: that passes on its own
        return Outcome(False, "transient", "StateDirBusy", e.message)
    if isinstance(e, Stalled):
        name = type(e).__name__
        return Outcome(False, "stalled", "Stalled" if name == "Stalled" else name, e.message)
    if isinstance(e, ReconcilerError):
        name = type(e).__name__
        return Outcome(False, "transient", name if name not in ("ReconcilerError", "Transient") else "ApplyError",
                       e.message)
    if isinstance(e, SQLAlchemyError):
        return Outcome(False, "transient", "StateDatabaseUnreachable", first_line(e))
    return Outcome(False, "transient", "InternalError", f"{type(e).__name__}: {e}")


def expected(e: Exception) -> bool:
    """An error the daemon reports in one line (no traceback): ours, or the state database going away."""
    return isinstance(e, ReconcilerError | SQLAlchemyError)


class Ledger:
    """Writes what an apply or plan report says into the status, the metrics and the notifications."""

    def __init__(self, status: StatusStore, metrics: Metrics, notifier: Notifier, clock: Callable[[], float]) -> None:
        self.status = status
        self.metrics = metrics
        self.notifier = notifier
        self.clock = clock

    def account(self, name: str, commit: str, report: Any) -> None:
        """Servers' states and the deploy and restart counters, from an apply or plan report."""
        if report is None:
            return
        plan_report = getattr(report, "report", report)
        now = self.clock()
        states: dict[str, ServerState] = {}
        obs = plan_report.observed.get(name)
        if obs is not None:
            for s in obs.servers:
                states[s.name] = ServerState("running" if s.running else "stopped", "", now)
            with contextlib.suppress(KeyError, AttributeError):  # a report without desired state (tests' fakes)
                gone = left_git(plan_report.desired.cluster(name).modules, obs, {})
                self.metrics.left_git.labels(name).set(len(gone))
                with self.status.lock:
                    self.status.cluster(name).left_git = [g.describe() for g in gone]
        for c, s, e in plan_report.unreachable:
            if c == name:
                states[s] = ServerState("unreachable", e.message, now)
        results = getattr(report, "results", {}).get(name) or {}
        for s, r in results.items():
            worst = "error" if r.error else next((o for o in r.modules.values() if o != "confirmed"), "confirmed")
            if s in states:
                states[s].last_outcome = worst
            for outcome in r.modules.values():
                self.metrics.deploys.labels(name, outcome).inc()
        rollout = (getattr(report, "rollouts", None) or {}).get(name)
        for r in rollout[1] if rollout else ():
            if r.outcome != "unchanged":
                self.metrics.restarts.labels(name, r.outcome).inc()
        with self.status.lock:
            cs = self.status.cluster(name)
            for s, st in states.items():
                if not st.last_outcome and s in cs.servers:
                    st.last_outcome = cs.servers[s].last_outcome
                cs.servers[s] = st
        if states:
            self.metrics.servers_reachable.labels(name).set(sum(st.state != "unreachable" for st in states.values()))

    def gauges(self, cs: ClusterStatus) -> None:
        m = self.metrics
        m.ready.labels(cs.name).set(1 if cs.ready() else 0)
        stalled = cs.conditions.get("Stalled")
        m.stalled.labels(cs.name).set(1 if stalled is not None and stalled.status == "True" else 0)
        m.suspended.labels(cs.name).set(1 if cs.suspended else 0)
        m.set_revision(cs.name, cs.last_applied_revision, cs.last_applied_at)

    def emit(self, events: list[Event]) -> None:
        for ev in events:
            log.debug("event %s: %s", ev.kind, ev.message,
                     extra={"cluster": ev.cluster, "revision": ev.revision, "event": f"notify-{ev.kind}"})
        self.notifier.send(events)

