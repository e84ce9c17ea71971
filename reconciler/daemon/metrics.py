"""Prometheus metrics of the daemon, in a registry of its own.

Why its own `CollectorRegistry` and not the global one: the global registry also carries process and platform
collectors and is shared by everything imported into the process; a registry per daemon keeps `/metrics` to what
we define (plus the process collector, useful for memory and file descriptors) and lets unit tests create as many
daemons as they like without "Duplicated timeseries" errors.

The names follow Prometheus conventions (`_total` counters, `_seconds` units, one `_info` gauge for the revision
so that a revision change is a label change, as kube-state-metrics does for image tags). What each means is in
deploy/README.md, with example alerts.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "zato_gitops"

#: a reconcile is a git read, an observe round trip per server and, when something changed, the deploys and
#: their confirmations (seconds to minutes); buckets up to a rolling restart of a large cluster
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds", "Duration of one cluster's reconcile (deploy or drift heal).",
            ["cluster", "kind"], buckets=DURATION_BUCKETS, registry=r)
        self.reconciles = Counter(
            f"{PREFIX}_reconciles", "Cluster reconciles by kind (deploy, drift) and result "
            "(success, transient, stalled).", ["cluster", "kind", "result"], registry=r)
        self.deploys = Counter(
            f"{PREFIX}_deploys", "Per server and module deploys by result (confirmed, failed, timeout, error, "
            "not-sent...).", ["cluster", "result"], registry=r)
        self.restarts = Counter(
            f"{PREFIX}_restarts", "Server restarts of rolling restarts, by result.", ["cluster", "result"], registry=r)
        self.drift_found = Counter(
            f"{PREFIX}_drift_found", "Drift checks that found servers differing from the last applied revision.",
            ["cluster"], registry=r)
        self.polls = Counter(
            f"{PREFIX}_polls", "Polls of the branch head by result (unchanged, changed, error).", ["result"],
            registry=r)
        self.webhooks = Counter(
            f"{PREFIX}_webhooks", "Webhook deliveries by provider and result (accepted, ignored, unauthorized, "
            "too-large, bad-request).", ["provider", "result"], registry=r)
        self.notifications = Counter(
            f"{PREFIX}_notifications", "Notifications sent, by result (sent, failed).", ["result"], registry=r)
        self.commit_statuses = Counter(
            f"{PREFIX}_commit_statuses", "Commit statuses sent to the git host, by result (posted; retried: an "
            "attempt failed and is tried again; failed: given up, the deploy went on).", ["result"], registry=r)
        self.left_git = Gauge(
            f"{PREFIX}_modules_not_in_git", "Modules deployed on the cluster's servers that the applied commit no "
            "longer has (zato-gitops does not undeploy them).", ["cluster"], registry=r)
        self.last_applied_info = Gauge(
            f"{PREFIX}_last_applied_revision_info", "1 for the revision last applied to every server of the cluster.",
            ["cluster", "revision"], registry=r)
        self.last_applied_ts = Gauge(
            f"{PREFIX}_last_applied_timestamp_seconds", "When the last applied revision was applied (Unix time).",
            ["cluster"], registry=r)
        self.ready = Gauge(
            f"{PREFIX}_cluster_ready", "1 when the cluster's Ready condition is True.", ["cluster"], registry=r)
        self.stalled = Gauge(
            f"{PREFIX}_cluster_stalled", "1 when the cluster needs a person (its Stalled condition is True).",
            ["cluster"], registry=r)
        self.suspended = Gauge(
            f"{PREFIX}_cluster_suspended", "1 when the cluster is suspended.", ["cluster"], registry=r)
        self.servers = Gauge(
            f"{PREFIX}_servers", "Servers of the cluster in the manifest.", ["cluster"], registry=r)
        self.servers_reachable = Gauge(
            f"{PREFIX}_servers_reachable", "Servers that answered the last observation.", ["cluster"], registry=r)
        self.last_poll_ts = Gauge(
            f"{PREFIX}_last_poll_timestamp_seconds", "When the branch head was last polled (Unix time).", registry=r)
        self.leader = Gauge(
            f"{PREFIX}_leader", "1 while this daemon leads (polls and reconciles), 0 as a standby or while its state "
            "database is unreachable.", registry=r)
        self._revisions: dict[str, str] = {}

    def set_revision(self, cluster: str, revision: str | None, applied_at: float | None) -> None:
        old = self._revisions.get(cluster)
        if old == revision:
            return
        if old is not None:
            self.last_applied_info.remove(cluster, old)
            del self._revisions[cluster]
        if revision is not None:
            self.last_applied_info.labels(cluster, revision).set(1)
            self._revisions[cluster] = revision
        if applied_at is not None:
            self.last_applied_ts.labels(cluster).set(applied_at)

    def forget(self, cluster: str) -> None:
        """A cluster gone from the manifest leaves /metrics too."""
        for g in (self.ready, self.stalled, self.suspended, self.servers, self.servers_reachable,
                  self.last_applied_ts, self.left_git):
            with contextlib.suppress(KeyError):
                g.remove(cluster)
        self.set_revision(cluster, None, None)

    def render(self) -> bytes:
        return generate_latest(self.registry)
