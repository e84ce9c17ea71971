"""`plan` with a server down: what the cluster's other servers would get, shown as a partial plan.

The engine plans a cluster only when every one of its servers answered: a cluster is deployed and confirmed as a
whole, so `apply` leaves a cluster with an unobserved server alone. But a person (or a script) asking `plan` with
one server down still wants to see what is pending on the servers that did answer; hiding it made an outage look
like "nothing to do". So, for display only, each such cluster is planned again over its reachable servers. The
result is marked partial (with the servers it lacks), `changes_pending` stays unknown and the exit code stays 1:
nothing here changes what `apply` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconciler.core.plan import ClusterPlan, plan_cluster
from reconciler.engine.results import PlanReport
from reconciler.observe import observe_all


@dataclasses.dataclass(frozen=True)
class PartialPlan:
    plan: ClusterPlan
    unobserved: tuple[str, ...]


def partial_plans(engine: Any, report: PlanReport) -> list[PartialPlan]:
    """A plan over the reachable servers of every cluster the report left out because one server did not answer."""
    missing: dict[str, set[str]] = {}
    for cluster, server, _ in report.unreachable:
        missing.setdefault(cluster, set()).add(server)
    restricted = []
    for dc in report.desired.clusters:
        if dc.name not in missing or dc.name in report.observed:
            continue
        reachable = [s for s in dc.spec.servers if s.name not in missing[dc.name]]
        if reachable:
            restricted.append(dataclasses.replace(dc, spec=dc.spec.model_copy(update={"servers": reachable})))
    if not restricted:
        return []
    settings = engine.settings
    with engine.connections() as conns:
        observed, _ = observe_all(restricted, conns.get, parallelism=settings.parallelism,
                                  timeout=settings.command_timeout)
    return [PartialPlan(plan_cluster(dc, observed[dc.name]), tuple(sorted(missing[dc.name])))
            for dc in restricted if dc.name in observed]
