"""What the daemon knows about each cluster, as Flux-style conditions, persisted so it outlives the process.

Why conditions and not a log of attempts: an operator (or an alert) asks three questions, "is it running what git
says?", "is it working on it?" and "does it need me?". Flux answers them with the conditions `Ready`,
`Reconciling` and `Stalled` (type / status / reason / message / lastTransitionTime) plus `lastAttemptedRevision`
and `lastAppliedRevision`, and so do we, per cluster. The conditions are *derived* from a few plain facts (the
last applied revision, the current failure, the current drift) by `ClusterStatus.refresh`, so they can never
disagree with those facts.

Why the transitions live here: notifications go out on transitions only (deployed, failed, recovered, drift
found), never on every poll. Each mutating method returns the `Event`s its change caused, computed from the state
before and after, so "a transient failure of the same commit, again" returns nothing, and the daemon just sends
what it is given. Everything here is pure (time is passed in), which is what lets the unit tests walk through
failure, retry, recovery and drift without sleeping.

Why a file: `zato-gitops status` must work when no daemon runs, a restarted daemon must not retry a commit that
already failed for good, and it must know the last applied commit to check drift against. So the whole status
(suspend flags included) is written atomically to `<state_dir>/status.json` after every change. The daemon is its
only writer while it runs (it holds `<state_dir>/daemon.lock`); without a daemon, the CLI takes that lock to edit it.
With a shared `state_db` (PostgreSQL, two daemons), the same document is a row of that database instead, written
by the leader only, so the standby that takes over starts from what the leader last knew.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from reconciler.db import first_line
from reconciler.db.schema import scope_name
from reconciler.db.status import StatusRow
from reconciler.settings import Settings

#: stalled: waits for a new commit; transient: retried with backoff; waiting: not a failure, a rolling restart
#: waits for its `rollout.window`, and the cluster is reconciled again once the window has opened
FailureKind = Literal["stalled", "transient", "waiting"]
EventKind = Literal["deployed", "failed", "recovered", "drift"]
CondStatus = Literal["True", "False", "Unknown"]
DriftAction = Literal["healed", "reported", "heal-failed"]

STATUS_FILE = "status.json"
FORMAT_VERSION = 1


def iso(ts: float | None) -> str | None:
    """Epoch seconds as a fixed-width ISO-8601 UTC timestamp (the format of the deploy records)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based): base, 2*base, 4*base, ... never more than cap."""
    if attempt < 1:
        return 0.0
    return float(min(cap, base * 2 ** min(attempt - 1, 62)))


@dataclass
class Condition:
    type: str
    status: CondStatus
    reason: str
    message: str = ""
    last_transition_time: str | None = None


@dataclass
class Failure:
    """The newest commit that did not apply, and what to do about it."""

    commit: str
    kind: FailureKind
    reason: str  # CamelCase, like Flux's reasons: ManifestInvalid, ServersUnreachable, DeployFailed...
    message: str
    attempts: int = 1
    since: float = 0.0
    next_retry_at: float | None = None  # transient only


@dataclass
class Drift:
    """Servers that differ from the last applied commit, as found by the last drift check."""

    commit: str
    items: list[str]
    found_at: float
    action: DriftAction


@dataclass
class ServerState:
    state: str  # running, stopped, unreachable
    message: str = ""
    observed_at: float | None = None
    last_outcome: str = ""  # of the last deploy that touched it: confirmed, failed, timeout...


@dataclass(frozen=True)
class Event:
    """A transition worth telling someone about."""

    kind: EventKind
    cluster: str
    revision: str
    message: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "cluster": self.cluster, "revision": self.revision,
                "message": self.message, "at": iso(self.at)}


@dataclass
class ClusterStatus:
    name: str
    suspended: bool = False
    last_attempted_revision: str | None = None
    last_applied_revision: str | None = None
    last_applied_at: float | None = None
    reconciling: bool = False
    failure: Failure | None = None
    drift: Drift | None = None
    servers: dict[str, ServerState] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)
    #: modules deployed on the servers that the commit last seen no longer has ("billing_old.py on server1: ...")
    left_git: list[str] = field(default_factory=list)

    # --- decisions ---------------------------------------------------------------------------------------------
    def due(self, head: str, now: float, forced: bool = False) -> tuple[bool, str]:
        """Whether a poll that sees `head` should reconcile this cluster now, and why (or why not)."""
        if self.suspended:
            return False, "suspended"
        if forced:
            return True, "asked to reconcile"
        f = self.failure
        if f is not None and f.commit == head:
            if f.kind == "stalled":
                return False, f"commit {short(head)} failed ({f.reason}); waiting for a new commit"
            if f.next_retry_at is not None and now < f.next_retry_at:
                return False, f"retry of {short(head)} in {f.next_retry_at - now:.0f} s"
            return True, f"retry {f.attempts + 1} of {short(head)}"
        if self.last_attempted_revision != head:
            return True, f"new revision {short(head)}"
        return False, "up to date"

    def retry_at(self) -> float | None:
        f = self.failure
        return f.next_retry_at if f is not None and f.kind != "stalled" and not self.suspended else None

    # --- transitions -------------------------------------------------------------------------------------------
    def begin(self, commit: str, now: float) -> list[Event]:
        self.last_attempted_revision = commit
        self.reconciling = True
        self.refresh(now)
        return []

    def succeed(self, commit: str, now: float, detail: str = "") -> list[Event]:
        """`commit` is applied to every server of the cluster."""
        events: list[Event] = []
        was = self.failure if self.failure is not None and self.failure.kind != "waiting" else None
        if was is not None:
            events.append(Event("recovered", self.name, commit,
                                f"{self.name}: recovered, revision {short(commit)} applied"
                                + (f" ({detail})" if detail else "") + f"; it had failed with {was.reason}", now))
        elif commit != self.last_applied_revision:
            events.append(Event("deployed", self.name, commit,
                                f"{self.name}: revision {short(commit)} applied" + (f" ({detail})" if detail else ""),
                                now))
        self.last_attempted_revision = commit
        if commit != self.last_applied_revision:
            self.last_applied_at = now
            self.drift = None  # it was measured against the previous revision
        self.last_applied_revision = commit
        self.failure = None
        self.reconciling = False
        self.refresh(now)
        return events

    def fail(
        self, commit: str, kind: FailureKind, reason: str, message: str, now: float, *,
        retry_base: float, retry_max: float, retry_at: float | None = None,
    ) -> list[Event]:
        """`commit` did not apply. A transient failure is retried with backoff; a stalled one waits for a new commit.
        Only a new failure (another commit, or another kind or reason) is an event; the same one again is not."""
        old = self.failure
        same = old is not None and old.commit == commit
        attempts = old.attempts + 1 if same and old is not None else 1
        new = not same or (old is not None and (old.kind, old.reason) != (kind, reason))
        self.failure = Failure(
            commit, kind, reason, message, attempts,
            since=old.since if same and old is not None and not new else now,
            next_retry_at=now + backoff(attempts, retry_base, retry_max) if kind == "transient"
            else (retry_at if retry_at is not None else now + retry_max) if kind == "waiting" else None,
        )
        self.last_attempted_revision = commit
        self.reconciling = False
        self.refresh(now)
        if not new or kind == "waiting":
            return []
        what = "will retry" if kind == "transient" else "waiting for a new commit"
        return [Event("failed", self.name, commit, f"{self.name}: revision {short(commit)} failed ({reason}, "
                      f"{what}): {message}", now)]

    def found_drift(self, commit: str, items: list[str], action: DriftAction, now: float) -> list[Event]:
        """A drift check found servers that differ from `commit` (the last applied one); an event only when
        this drift is not the one already reported."""
        old = self.drift
        self.drift = Drift(commit, sorted(items), now, action)
        self.refresh(now)
        if old is not None and old.commit == commit and old.items == sorted(items) and old.action == action:
            return []
        verb = {"healed": "put back", "reported": "reported only (drift: report)",
                "heal-failed": "could not be put back"}[action]
        return [Event("drift", self.name, commit,
                      f"{self.name}: {len(items)} difference{'s' if len(items) != 1 else ''} from revision "
                      f"{short(commit)} {verb}: " + "; ".join(sorted(items)[:10]), now)]

    def no_drift(self, now: float) -> list[Event]:
        """A drift check found every server as the last applied commit says (a healed drift stays recorded until
        a check finds nothing, so status shows what was healed)."""
        if self.drift is not None:
            self.drift = None
            self.refresh(now)
        return []

    def set_suspended(self, suspended: bool, now: float) -> None:
        self.suspended = suspended
        self.refresh(now)

    # --- conditions --------------------------------------------------------------------------------------------
    def refresh(self, now: float) -> None:
        """Recompute the conditions from the facts; a condition's transition time moves only when its status
        or reason changes."""
        f = self.failure
        ready: tuple[CondStatus, str, str]
        if f is not None:
            ready = ("False", f.reason, f.message)
        elif self.drift is not None and self.drift.action != "healed":
            ready = ("False", "DriftDetected", f"{len(self.drift.items)} differences from revision "
                     f"{short(self.drift.commit)}: " + "; ".join(self.drift.items[:5]))
        elif self.last_applied_revision is None:
            ready = ("Unknown", "Progressing", "not applied yet")
        else:
            ready = ("True", "ReconciliationSucceeded", f"applied revision {short(self.last_applied_revision)}")
        if self.suspended:
            ready = (ready[0], ready[1], ready[2] + " (suspended)")
        reconciling: tuple[CondStatus, str, str]
        if self.reconciling:
            reconciling = ("True", "Progressing", f"applying revision {short(self.last_attempted_revision)}")
        elif f is not None and f.kind == "waiting":
            reconciling = ("True", "WaitingForWindow", f.message)
        elif f is not None and f.kind == "transient" and not self.suspended:
            reconciling = ("True", "ProgressingWithRetry",
                           f"attempt {f.attempts} failed; retry at {iso(f.next_retry_at)}")
        else:
            reconciling = ("False", "Succeeded" if f is None else "Failed", "")
        stalled: tuple[CondStatus, str, str]
        if f is not None and f.kind == "stalled":
            stalled = ("True", f.reason, f"{f.message} (revision {short(f.commit)}; waiting for a new commit)")
        else:
            stalled = ("False", "Succeeded" if f is None else f.reason, "")
        for type_, (status, reason, message) in (("Ready", ready), ("Reconciling", reconciling),
                                                 ("Stalled", stalled)):
            old = self.conditions.get(type_)
            moved = old is None or (old.status, old.reason) != (status, reason)
            when = iso(now) if moved or old is None else old.last_transition_time
            self.conditions[type_] = Condition(type_, status, reason, message, when)

    def ready(self) -> bool:
        c = self.conditions.get("Ready")
        return c is not None and c.status == "True"

    # --- (de)serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "suspended": self.suspended,
            "last_attempted_revision": self.last_attempted_revision,
            "last_applied_revision": self.last_applied_revision,
            "last_applied_at": iso(self.last_applied_at),
            "last_applied_ts": self.last_applied_at,
            "reconciling": self.reconciling,
            "conditions": [asdict(c) for c in self.conditions.values()],
            "failure": asdict(self.failure) | {"next_retry_at_iso": iso(self.failure.next_retry_at)}
            if self.failure else None,
            "drift": asdict(self.drift) | {"found_at_iso": iso(self.drift.found_at)} if self.drift else None,
            "servers": {k: asdict(v) for k, v in sorted(self.servers.items())},
            "left_git": list(self.left_git),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterStatus:
        f = d.get("failure")
        dr = d.get("drift")
        cs = cls(
            name=str(d["name"]),
            suspended=bool(d.get("suspended", False)),
            last_attempted_revision=d.get("last_attempted_revision"),
            last_applied_revision=d.get("last_applied_revision"),
            last_applied_at=d.get("last_applied_ts"),
            reconciling=False,  # whatever was in progress ended with the process that wrote this
            failure=Failure(**{k: v for k, v in f.items() if k in Failure.__dataclass_fields__}) if f else None,
            drift=Drift(**{k: v for k, v in dr.items() if k in Drift.__dataclass_fields__}) if dr else None,
            servers={k: ServerState(**{a: b for a, b in v.items() if a in ServerState.__dataclass_fields__})
                     for k, v in (d.get("servers") or {}).items()},
            conditions={c["type"]: Condition(**c) for c in d.get("conditions") or []},
            left_git=[str(x) for x in d.get("left_git") or []],
        )
        return cs


@dataclass
class SourceStatus:
    """The branch as the daemon last saw it: problems that are not one cluster's (the remote cannot be read,
    the manifest is invalid) are shown here."""

    revision: str | None = None  # the head whose every cluster was considered
    last_poll_at: float | None = None
    error: str = ""
    error_kind: FailureKind | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"last_poll_at_iso": iso(self.last_poll_at)}


class StatusStore:
    """Every cluster's status plus the source's, behind one lock, saved atomically to `status.json`, or, with a
    shared `state_db`, to that database (`db/status.py`), where a standby finds it when it takes over."""

    def __init__(self, state_dir: Path, row: StatusRow | None = None) -> None:
        self.path = Path(state_dir) / STATUS_FILE
        self.row = row
        #: why the last save to the database failed ("" when it worked); the daemon reports it as not ready
        self.db_error = ""
        #: whether this process may write the shared document now (a daemon: only while it leads)
        self.may_write: Callable[[], bool] = lambda: True
        self.lock = threading.RLock()
        self.clusters: dict[str, ClusterStatus] = {}
        self.source = SourceStatus()
        self.daemon: dict[str, Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> StatusStore:
        if not settings.shared_state():
            return cls(settings.state_dir)
        return cls(settings.state_dir, StatusRow(settings.state_db_url(), scope_name(settings.repo or "",
                                                                                    settings.branch)))

    def load(self) -> StatusStore:
        with self.lock:
            try:
                found = self.row.read() if self.row is not None else None
                self.db_error = ""
                # no document in the database yet: a node moving to a shared state_db brings its status.json
                # along (suspend flags, last applied revisions); the next save writes it to the database
                data = found if found is not None else json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return self
            except SQLAlchemyError as e:
                self.db_error = first_line(e)
                return self
            except (OSError, ValueError):
                # a corrupt file only loses history the daemon rebuilds at its first poll; never refuse to start
                return self
            self.clusters = {c["name"]: ClusterStatus.from_dict(c) for c in data.get("clusters", [])}
            src = data.get("source") or {}
            self.source = SourceStatus(**{k: v for k, v in src.items() if k in SourceStatus.__dataclass_fields__})
            return self

    def cluster(self, name: str) -> ClusterStatus:
        with self.lock:
            cs = self.clusters.get(name)
            if cs is None:
                cs = self.clusters[name] = ClusterStatus(name)
            return cs

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "version": FORMAT_VERSION,
                "daemon": dict(self.daemon),
                "source": self.source.to_dict(),
                "clusters": [c.to_dict() for _, c in sorted(self.clusters.items())],
            }

    def save(self) -> None:
        with self.lock:
            if self.row is not None:
                if not self.may_write():
                    return  # a daemon that lost the lead leaves the document to the new leader
                try:
                    self.row.write(self.to_dict())
                    self.db_error = ""
                except SQLAlchemyError as e:  # kept in memory; written by the next save that reaches the database
                    self.db_error = first_line(e)
                return
            text = json.dumps(self.to_dict(), indent=2)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".status.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

