"""What a rolling restart is, as plain data: the `Rollout` and its servers' progress, and the status words.

Why apart from the store (`apply/store.py`): the renderers, the engine's results and the rollout runner read
rollouts but never open the state database, and the store needs SQLAlchemy (~0.1 s to import). Kept here, a
command that finds nothing to restart (a no-op `apply`, `--json` output) never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["pending", "running", "interrupted", "halted", "finished", "cancelled", "superseded"]
#: a rollout in one of these still has work to do ("interrupted": the run working on it was stopped or killed)
OPEN: tuple[Status, ...] = ("pending", "running", "interrupted", "halted")
#: the rollouts the next apply takes up before anything else (a run was working on them)
TAKEN_UP: tuple[Status, ...] = ("running", "interrupted")

#: a server in one of these steps may be down because of us: it is brought back before any other is stopped
DOWN: tuple[str, ...] = ("stopping", "starting", "waiting", "verifying")
#: the steps of one server, in order; "done" and "rolled-back" are final
Step = Literal["pending", "writing", "stopping", "starting", "waiting", "verifying", "done", "failed", "rolled-back"]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ServerProgress:
    server: str
    position: int
    step: str
    log_size: int | None = None
    log_inode: int | None = None
    started: str | None = None
    ready: str | None = None
    detail: str = ""


@dataclass
class Rollout:
    id: str
    cluster: str
    commit: str
    status: str
    window: str | None
    created: str
    updated: str
    message: str = ""
    servers: list[ServerProgress] = field(default_factory=list)

    @property
    def done_count(self) -> int:
        return sum(1 for s in self.servers if s.step == "done")

    def server(self, name: str) -> ServerProgress:
        return next(s for s in self.servers if s.server == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "cluster": self.cluster, "commit": self.commit, "status": self.status,
            "window": self.window, "created": self.created, "updated": self.updated, "message": self.message,
            "servers": [s.__dict__ for s in self.servers],
        }
