"""Drift: the servers compared with the last applied commit, every `drift_interval`, healed or reported.

Why a job of its own: a deploy compares git's head with the servers; drift compares the servers with the commit
each cluster *last applied* (kept in the status, so it survives a restart), not with the head, which may be a
commit that failed. A non-empty plan is drift. With `drift: heal` (the default) it is applied through the same
`Engine.apply` as a deploy (so static drift goes through a rolling restart like any static change), with
`drift: report` it is only reported; either way it is recorded on the commit as a git note and told through the
`Ledger` like any other outcome. A cluster that is suspended, never applied, or failing for a reason that passes
(its retry, or a rollout waiting for its window, reconciles it anyway) is skipped: healing it back to the last
applied commit meanwhile would undo the change under way. The loop runs this under its one work lock, so a heal
never runs beside a deploy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from reconciler.core.plan import ClusterPlan
from reconciler.core.state import Desired
from reconciler.daemon.conditions import iso, short
from reconciler.daemon.outcome import Ledger, expected
from reconciler.engine.chain import Engine
from reconciler.engine.results import ApplyReport, error_outcome
from reconciler.errors import ReconcilerError
from reconciler.gitrepo.records import Action, Record

log = logging.getLogger("zato_gitops.daemon")


def drift_items(cluster_plan: ClusterPlan) -> list[str]:
    """What a non-empty plan against the last applied commit says differs, one line per server and thing."""
    items = [f"{d.server}: {h.module} {'modified' if d.reason == 'changed' else 'missing'}"
             for h in cluster_plan.hot_deploys for d in h.diffs]
    words = {"added": "missing", "changed": "modified", "removed": "not in the commit"}
    for r in cluster_plan.restarts:
        for c in (*r.changes, *r.shared):
            what = "service-sources.txt block changed" if c.kind == "service-sources" else f"{c.path} {words[c.change]}"
            items.append(f"{r.server}: {what}")
    if not items and not cluster_plan.empty:
        # parts of a plan this function does not itemise (static installs): say that there is something
        items = ["servers differ from the commit (see `zato-gitops plan`)"]
    return items



class DriftCheck:
    """One pass over the clusters; the loop calls `run` with its engine, holding its work lock."""

    def __init__(self, ledger: Ledger, stop: threading.Event, clock: Callable[[], float]) -> None:
        self.ledger = ledger
        self.status = ledger.status
        self.metrics = ledger.metrics
        self.stop = stop
        self.clock = clock

    def run(self, engine: Engine) -> None:
        desireds: dict[str, Desired] = {}  # each revision's desired state, built once in this pass
        for name in sorted(self.status.clusters):
            if self.stop.is_set():
                return
            cs = self.status.clusters.get(name)
            if cs is None or cs.suspended or cs.last_applied_revision is None:
                continue
            if cs.failure is not None and cs.failure.kind != "stalled":
                # its retry (or the rollout waiting for its window) reconciles it anyway; healing it
                # back to the last applied commit meanwhile would undo the change under way
                continue
            self.one(engine, name, cs.last_applied_revision, desireds)

    def one(self, engine: Engine, name: str, revision: str, desireds: dict[str, Desired]) -> None:
        try:
            if revision not in desireds:
                desireds[revision] = engine.desired(revision)
            desired = desireds[revision]
            report = engine.plan(only=[name], desired=desired)
        except ReconcilerError as e:
            log.warning("%s: drift check against %s failed: %s", name, short(revision), e.message,
                        extra={"cluster": name})
            return
        self.ledger.account(name, revision, report)
        if any(c == name for c, _, _ in report.unreachable):
            log.info("%s: drift check incomplete, a server could not be observed", name, extra={"cluster": name})
            return
        try:
            cp = report.plan.cluster(name)
        except KeyError:
            return
        cs = self.status.cluster(name)
        now = self.clock()
        if cp.empty:
            with self.status.lock:
                cs.no_drift(now)
                self.ledger.gauges(cs)
            return
        items = drift_items(cp)
        policy = report.desired.cluster(name).spec.drift
        self.metrics.drift_found.labels(name).inc()
        log.warning("%s: drift from revision %s: %s", name, short(revision), "; ".join(items),
                    extra={"cluster": name, "revision": revision, "event": "drift"})
        if policy == "report":
            with self.status.lock:
                events = cs.found_drift(revision, items, "reported", now)
                self.ledger.gauges(cs)
            if events:
                self._record(engine, revision, name, items, "reported")
            self.ledger.emit(events)
            return
        self._record(engine, revision, name, items, "healing")
        started = time.monotonic()
        result: ApplyReport | None = None
        try:
            result = engine.apply(only=[name], commit=revision, desired=desired)
            outcome = result.cluster(name)
        except Exception as e:
            if not expected(e):
                log.exception("%s: unexpected error while healing drift", name)
            outcome = error_outcome(e)
        self.metrics.reconcile_duration.labels(name, "drift").observe(time.monotonic() - started)
        self.metrics.reconciles.labels(name, "drift", "success" if outcome.ok else str(outcome.kind)).inc()
        self.ledger.account(name, revision, result)
        with self.status.lock:
            events = cs.found_drift(revision, items, "healed" if outcome.ok else "heal-failed", self.clock())
            self.ledger.gauges(cs)
        if outcome.ok:
            log.info("%s: drift healed, servers run revision %s again", name, short(revision),
                     extra={"cluster": name, "revision": revision, "event": "drift-healed"})
        else:
            log.error("%s: drift could not be healed (%s): %s", name, outcome.reason, outcome.message,
                      extra={"cluster": name, "revision": revision, "event": "drift-heal-failed"})
        self.ledger.emit(events)

    def _record(self, engine: Engine, revision: str, name: str, items: list[str], outcome: str) -> None:
        try:
            engine.audit.record(revision, [Record(
                at=iso(self.clock()) or "", run=uuid.uuid4().hex[:12], by=engine.by, commit=revision,
                cluster=name, action=Action.DRIFT, outcome=outcome, detail="; ".join(items))])
        except ReconcilerError as e:
            log.warning("%s: cannot record the drift: %s", name, e.message)

