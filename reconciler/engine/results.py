"""What a plan or an apply found and did, as plain data for the CLI, the daemon and `render`.

These live below the engine (which builds them) so that the renderers and the daemon's status page can read them
without importing the engine: the floors of the house have no arrow pointing up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from reconciler.apply.hotdeploy import ServerResult
from reconciler.apply.lease import LeaseHeld
from reconciler.apply.rollout import RestartOutcome
from reconciler.apply.rollouts import Rollout
from reconciler.core.plan import Plan
from reconciler.core.state import Desired, ObservedCluster
from reconciler.db import db_errors, first_line
from reconciler.errors import (
    Busy,
    HostKeyError,
    ManifestInvalid,
    ModulesInvalid,
    ReconcilerError,
    SourceError,
    Stalled,
    Unreachable,
)
from reconciler.gitrepo.notes import PushResult
from reconciler.gitrepo.records import Reason, Record
from reconciler.gitrepo.trust import Untrusted
from reconciler.observe import ObserveError

#: what to do about a cluster that did not end well: a person (stalled), a retry (transient), the window (waiting)
Kind = Literal["stalled", "transient", "waiting"]


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
    #: cluster -> (the rollout as it ended, what each server did)
    rollouts: dict[str, tuple[Rollout, list[RestartOutcome]]] = field(default_factory=dict)
    #: cluster -> (rollout id, next run) for rolling restarts waiting for their window
    scheduled: dict[str, tuple[str, str]] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)  # cluster -> reasons it was not applied
    note: PushResult | None = None
    run_id: str = ""
    #: every record this run wrote (the same ones as in the note)
    records: list[Record] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.report.complete
            and not self.refused
            and all(r.ok for servers in self.results.values() for r in servers.values())
            and all(r.status == "finished" for r, _ in self.rollouts.values())
        )

    def cluster(self, name: str) -> ClusterOutcome:
        """How the apply went for one cluster, typed: success with what changed, or a failure's kind and reason."""
        return cluster_outcome(self, name)


@dataclass(frozen=True)
class ClusterOutcome:
    """One cluster's result, as the daemon's status and notifications read it (Flux's Ready condition)."""

    ok: bool
    kind: Kind | None = None
    reason: Reason | None = None
    message: str = ""
    detail: str = ""  # for a success: what changed
    retry_at: float | None = None  # for "waiting": when the rollout window opens
    deployed: int = 0  # modules hot-deployed (confirmed)
    restarted: int = 0  # servers restarted and ready


def cluster_outcome(report: ApplyReport, cluster: str) -> ClusterOutcome:
    """Stalled (needs a person): a server whose host key is unknown, a module Zato refused to deploy, a halted
    rollout. Transient: a server unreachable, a cluster refused because a server is not running, a confirmation
    timeout, a failed copy, an interrupted rollout. Waiting: a rolling restart waiting for its window."""
    unreachable = [(s, e) for c, s, e in report.report.unreachable if c == cluster]
    if unreachable:
        msgs = "; ".join(f"{s}: {e.message}" for s, e in unreachable)
        if any(isinstance(e, Stalled) for _, e in unreachable):
            return ClusterOutcome(False, "stalled", Reason.HOST_KEY_UNKNOWN, msgs)
        return ClusterOutcome(False, "transient", Reason.SERVERS_UNREACHABLE, msgs)
    refused = report.refused.get(cluster)
    if refused:
        return ClusterOutcome(False, "transient", Reason.SERVERS_NOT_READY, "; ".join(refused))
    results = report.results.get(cluster) or {}
    outcomes = {(s, m): o for s, r in results.items() for m, o in r.modules.items()}
    failed = [f"{s}: {m} {o}" for (s, m), o in sorted(outcomes.items()) if o == "failed"]
    if failed:
        return ClusterOutcome(False, "stalled", Reason.DEPLOY_FAILED, "Zato refused: " + "; ".join(failed))
    errors = [f"{s}: {r.error}" for s, r in sorted(results.items()) if r.error]
    other = [f"{s}: {m} {o}" for (s, m), o in sorted(outcomes.items()) if o != "confirmed"]
    if errors or other:
        timeout = any(o == "timeout" for o in outcomes.values()) and not errors
        stopped = any(o == "interrupted" for o in outcomes.values()) and not errors
        reason = Reason.INTERRUPTED if stopped else Reason.CONFIRM_TIMEOUT if timeout else Reason.DEPLOY_ERROR
        return ClusterOutcome(False, "transient", reason, "; ".join(errors + other))
    rollout = report.rollouts.get(cluster)
    restarts = list(rollout[1]) if rollout else []
    if rollout is not None:
        ro = rollout[0]
        if ro.status == "halted":
            return ClusterOutcome(False, "stalled", Reason.ROLLOUT_HALTED, f"rolling restart {ro.id} {ro.message}")
        if ro.status != "finished":
            return ClusterOutcome(False, "transient", Reason.INTERRUPTED,
                                  f"rolling restart {ro.id} stopped at {ro.done_count} of {len(ro.servers)} servers; "
                                  "it resumes where it stopped")
    scheduled = report.scheduled.get(cluster)
    if scheduled is not None:
        rid, when = scheduled
        try:
            at: float | None = datetime.fromisoformat(when).timestamp() + 30
        except ValueError:
            at = None
        return ClusterOutcome(False, "waiting", Reason.WAITING_FOR_WINDOW,
                              f"rolling restart {rid} waits for its window (next: {when})", retry_at=at)
    if not report.ok:
        return ClusterOutcome(False, "transient", Reason.DEPLOY_ERROR, "the apply did not succeed")
    modules = {m for (_, m) in outcomes}
    restarted = sum(1 for r in restarts if r.outcome == "ready")
    parts = [f"{len(modules)} module{'s' if len(modules) != 1 else ''} hot-deployed"] if modules else []
    if restarts:
        parts.append(f"{restarted} server{'s' if restarted != 1 else ''} restarted")
    return ClusterOutcome(True, detail=", ".join(parts) or "no server change", deployed=len(modules),
                          restarted=restarted)


#: an error that ended an apply -> its reason; the first class the error is an instance of wins
ERROR_REASONS: tuple[tuple[type[ReconcilerError], Reason], ...] = (
    # another reconciler (its own state dir, maybe another machine) holds the cluster's lease: wait for it
    (LeaseHeld, Reason.CLUSTER_LEASED),
    (Busy, Reason.STATE_DIR_BUSY),  # a manual `apply` holds the state dir: that passes on its own
    (Untrusted, Reason.UNTRUSTED),
    (ManifestInvalid, Reason.MANIFEST_INVALID),
    (ModulesInvalid, Reason.MODULES_INVALID),
    (HostKeyError, Reason.HOST_KEY_UNKNOWN),
    (Unreachable, Reason.UNREACHABLE),
    (SourceError, Reason.SOURCE_ERROR),
    (Stalled, Reason.STALLED),
    (ReconcilerError, Reason.APPLY_ERROR),
)


def error_outcome(e: Exception) -> ClusterOutcome:
    """An apply that raised instead of returning a report: Stalled errors need a person, the rest may pass."""
    if isinstance(e, db_errors()):
        return ClusterOutcome(False, "transient", Reason.STATE_DB_UNREACHABLE, first_line(e))
    if not isinstance(e, ReconcilerError):
        return ClusterOutcome(False, "transient", Reason.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
    reason = next(r for cls, r in ERROR_REASONS if isinstance(e, cls))
    return ClusterOutcome(False, "stalled" if isinstance(e, Stalled) else "transient", reason, e.message)
