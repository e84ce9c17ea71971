"""What a plan or an apply found and did, as plain data for the CLI, the daemon and `render`.

These live below the engine (which builds them) so that the renderers and the daemon's status page can read them
without importing the engine: the floors of the house have no arrow pointing up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.apply.hotdeploy import ServerResult
from reconciler.apply.rollout import RestartOutcome
from reconciler.apply.store import Rollout
from reconciler.core.plan import Plan
from reconciler.core.state import Desired, ObservedCluster
from reconciler.gitrepo.notes import PushResult
from reconciler.observe import ObserveError


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

    @property
    def ok(self) -> bool:
        return (
            self.report.complete
            and not self.refused
            and all(r.ok for servers in self.results.values() for r in servers.values())
            and all(r.status == "finished" for r, _ in self.rollouts.values())
        )
