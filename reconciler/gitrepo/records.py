"""The one record type: what a run did to one server (or cluster), as it goes into a commit's git note.

Records used to be dicts built in eight places, each with its own spelling of the same facts; the daemon then
re-derived an outcome by reading their strings. One frozen dataclass, with the action and the failure reason as
enums (Flux keeps its reasons as named constants the same way), is what the engine builds, the journal keeps,
the notes store, the CLI renders and the daemon reads. `to_dict` writes the JSON shape documented in
docs/cli.md (empty fields left out); `from_dict` reads any note line, including ones written before this type
existed, so `history` still shows old notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    HOT_DEPLOY = "hot-deploy"
    RESTART = "restart"
    ROLLOUT_SCHEDULED = "rollout-scheduled"
    REFUSED = "refused"
    OBSERVE = "observe"
    DRIFT = "drift"
    ROLLBACK = "rollback"


class Reason(StrEnum):
    """Why a record (or a cluster's apply) did not end well; the names are what `status` and metrics show."""

    COMMIT_INVALID = "CommitInvalid"  # manifest or module errors: the whole commit is refused
    UNTRUSTED = "Untrusted"  # unsigned, an unknown signer, or a rewrite of the applied history
    SERVERS_NOT_READY = "ServersNotReady"  # the plan blocked the cluster (a server stopped, a rollout halted)
    SERVERS_UNREACHABLE = "ServersUnreachable"
    HOST_KEY_UNKNOWN = "HostKeyError"
    DEPLOY_FAILED = "DeployFailed"  # Zato refused a module
    CONFIRM_TIMEOUT = "ConfirmTimeout"
    DEPLOY_ERROR = "DeployError"  # staging or copying failed, or the log could not be read
    NOT_SENT = "NotSent"  # the file never reached any server that had to confirm it
    RESTART_FAILED = "RestartFailed"
    ROLLED_BACK = "RolledBack"
    ROLLOUT_HALTED = "RolloutHalted"
    INTERRUPTED = "Interrupted"  # the run was stopped (exception, SIGINT, SIGTERM, SIGKILL) before it knew
    WAITING_FOR_WINDOW = "WaitingForWindow"
    # an apply that raised before it had a report, by the kind of error
    STATE_DIR_BUSY = "StateDirBusy"
    CLUSTER_LEASED = "ClusterLeased"
    STATE_DB_UNREACHABLE = "StateDatabaseUnreachable"
    MANIFEST_INVALID = "ManifestInvalid"
    MODULES_INVALID = "ModulesInvalid"
    UNREACHABLE = "Unreachable"
    SOURCE_ERROR = "SourceError"
    STALLED = "Stalled"
    APPLY_ERROR = "ApplyError"
    INTERNAL_ERROR = "InternalError"


#: outcomes that mean the thing went as it should (or had nothing to do)
GOOD_OUTCOMES = frozenset({"confirmed", "ready", "unchanged", "healed", "ok"})
INTERRUPTED = "interrupted"


@dataclass(frozen=True, kw_only=True)
class Record:
    at: str
    run: str
    by: str
    commit: str
    action: Action
    outcome: str
    cluster: str = ""
    server: str = ""
    module: str = ""
    blob: str = ""
    sha256: str = ""
    dropped: bool | None = None
    rollout: str = ""
    started: str = ""
    finished: str = ""
    ready: str = ""
    duration: float | None = None
    files: tuple[str, ...] | None = None
    reason: Reason | None = None
    detail: str = ""
    #: fields of a note line this version does not know (kept so a round trip loses nothing)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in GOOD_OUTCOMES

    def but(self, **changes: Any) -> Record:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            if isinstance(value, StrEnum):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        # an action this version does not know was read into `extra`: write it back as it was
        return out | {k: v for k, v in self.extra.items() if k not in out or k == "action"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        known = {f.name for f in fields(cls)} - {"extra"}
        kw: dict[str, Any] = {}
        for k in known:
            if k in data and data[k] is not None:
                kw[k] = data[k]
        for k in ("at", "run", "by", "commit", "outcome", "cluster", "server", "module", "blob", "sha256", "rollout",
                  "started", "finished", "ready", "detail"):
            kw[k] = str(kw.get(k, ""))
        action = str(kw.get("action", ""))
        kw["action"] = Action(action) if action in Action._value2member_map_ else Action.REFUSED
        reason = str(kw.get("reason", ""))
        kw["reason"] = Reason(reason) if reason in Reason._value2member_map_ else None
        if "files" in kw:
            kw["files"] = tuple(str(f) for f in kw["files"])
        if "dropped" in kw:
            kw["dropped"] = bool(kw["dropped"])
        if "duration" in kw:
            try:
                kw["duration"] = float(kw["duration"])
            except (TypeError, ValueError):
                del kw["duration"]
        extra = {k: v for k, v in data.items() if k not in known}
        if action and action not in Action._value2member_map_:
            extra["action"] = action
        return cls(**kw, extra=extra)
