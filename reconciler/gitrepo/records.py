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
        # a first deploy of thousands of modules writes, journals and reads back one record per module and server:
        # the fields are read from __dict__ (set in field order by __init__), not through dataclasses.fields()
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if value is None or value == "" or name == "extra":
                continue
            if isinstance(value, StrEnum):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        # an action this version does not know was read into `extra`: write it back as it was
        if not self.extra:
            return out
        return out | {k: v for k, v in self.extra.items() if k not in out or k == "action"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        known = _KNOWN
        kw: dict[str, Any] = {k: v for k, v in data.items() if k in known and v is not None}  # in field order
        for k in _TEXT:
            v = kw.get(k, "")
            kw[k] = v if type(v) is str else str(v)
        action = str(kw.get("action", ""))
        kw["action"] = _ACTIONS.get(action, Action.REFUSED)
        kw["reason"] = _REASONS.get(str(kw.get("reason", "")))
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
        if action and action not in _ACTIONS:
            extra["action"] = action
        return cls(**kw, extra=extra)


#: what `Record.from_dict` reads: the fields it knows, those that are text, and the enums by value
_KNOWN = frozenset(f.name for f in fields(Record)) - {"extra"}
_TEXT = ("at", "run", "by", "commit", "outcome", "cluster", "server", "module", "blob", "sha256", "rollout", "started",
         "finished", "ready", "detail")
_ACTIONS: dict[str, Action] = {str(a): a for a in Action}
_REASONS: dict[str, Reason] = {str(r): r for r in Reason}
