"""The outcome of one apply, as a status transition, and where every outcome is accounted for.

Why apart from the loop: a deploy, a retry and a drift heal all end the same way. The engine's report for one
cluster is a typed `ClusterOutcome` (`ApplyReport.cluster`, or `error_outcome` for an apply that raised: success,
or a failure with its kind, stalled/transient/waiting, and a `Reason` enum), and the `Ledger` writes what the
report says into the places an operator reads: each server's state in the status (`conditions.py`), the
Prometheus counters and gauges (`metrics.py`) and the notifications of transitions (`notify.py`). The loop and
the drift check decide *when* to apply; this module says *what came of it*, the same way for both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.release import left_git
from reconciler.daemon.conditions import ClusterStatus, Event, ServerState, StatusStore
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notify import Notifier
from reconciler.engine.results import ApplyReport, PlanReport
from reconciler.errors import ReconcilerError

log = logging.getLogger("zato_gitops.daemon")


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

    def account(self, name: str, commit: str, report: ApplyReport | PlanReport | None) -> None:
        """Servers' states and the deploy and restart counters, from an apply or plan report."""
        if report is None:
            return
        applied = report if isinstance(report, ApplyReport) else None
        plan_report = report.report if isinstance(report, ApplyReport) else report
        now = self.clock()
        states: dict[str, ServerState] = {}
        obs = plan_report.observed.get(name)
        if obs is not None:
            for o in obs.servers:
                states[o.name] = ServerState("running" if o.running else "stopped", "", now)
            with contextlib.suppress(KeyError, AttributeError):  # a report without desired state (tests' fakes)
                gone = left_git(plan_report.desired.cluster(name).modules, obs, {})
                self.metrics.left_git.labels(name).set(len(gone))
                with self.status.lock:
                    self.status.cluster(name).left_git = [g.describe() for g in gone]
        for c, s, e in plan_report.unreachable:
            if c == name:
                states[s] = ServerState("unreachable", e.message, now)
        results = applied.results.get(name, {}) if applied is not None else {}
        for s, r in results.items():
            worst = "error" if r.error else next((o for o in r.modules.values() if o != "confirmed"), "confirmed")
            if s in states:
                states[s].last_outcome = worst
            for outcome in r.modules.values():
                self.metrics.deploys.labels(name, outcome).inc()
        rollout = applied.rollouts.get(name) if applied is not None else None
        for restart in rollout[1] if rollout else ():
            if restart.outcome != "unchanged":
                self.metrics.restarts.labels(name, restart.outcome).inc()
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

