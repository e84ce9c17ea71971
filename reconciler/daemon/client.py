"""The CLI's side of a running daemon, and the lock that makes it one daemon per state dir.

Why apart from the loop: `zato-gitops status`, `suspend`, `resume` and `reconcile` must find out whether a daemon
runs on a state dir and, if one does, talk to it over its HTTP API (with the token it wrote to `daemon.json`); when
none runs they edit the status themselves, holding the daemon's lock meanwhile so none starts half-way. None of that
needs the loop, the scheduler or the engine, so the commands import this small module only. The daemon takes the
same `DaemonLock` (`<state_dir>/daemon.lock`, an flock the kernel releases if the process dies) for its whole life.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from reconciler.daemon.conditions import StatusStore
from reconciler.db import first_line
from reconciler.db.leader import LeaderElsewhere, no_leader
from reconciler.db.schema import scope_name
from reconciler.errors import Stalled, Transient
from reconciler.locks import LockHeld, PidLock
from reconciler.settings import Settings

LOCK_FILE = "daemon.lock"
INFO_FILE = "daemon.json"


# --- one daemon per state dir ----------------------------------------------------------------------------------


class DaemonLock(PidLock):
    """`<state_dir>/daemon.lock`, held by a daemon for its whole life: one daemon per state dir."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(Path(state_dir) / LOCK_FILE)
        self.what = "daemon"

    def acquire(self) -> None:
        try:
            super().acquire()
        except LockHeld as e:
            raise Stalled(
                f"a zato-gitops daemon (pid {e.holder}) is already running on the state dir {self.path.parent}",
                hint="one daemon per state dir: stop it first, or give this one its own --state-dir"
                if self.what == "daemon" else "talk to it (the command does so when it can read daemon.json)",
            ) from e

    @contextlib.contextmanager
    def held_for(self, what: str) -> Iterator[None]:
        self.what = what
        with self.held():
            yield


# --- talking to a running daemon (the CLI's side) ---------------------------------------------------------------


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    url: str
    token: str
    started: str


def running_daemon(state_dir: Path) -> DaemonInfo | None:
    """The daemon that runs on `state_dir`, or None when none does."""
    if not DaemonLock(state_dir).is_held():
        return None
    try:
        data = json.loads((Path(state_dir) / INFO_FILE).read_text(encoding="utf-8"))
        return DaemonInfo(int(data["pid"]), str(data["url"]), str(data["token"]), str(data.get("started", "")))
    except (OSError, ValueError, KeyError) as e:
        raise Stalled(f"a daemon runs on {state_dir} but its {INFO_FILE} cannot be read: {e}",
                      hint="run the command as the daemon's user") from e


def call(info: DaemonInfo, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 10.0) -> dict[str, Any]:
    """One JSON request to the daemon's API with its token; errors become `Transient` with the daemon's words."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(info.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {info.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", "")
        except ValueError:
            msg = ""
        raise Transient(f"the daemon at {info.url} answered HTTP {e.code}: {msg or e.reason}") from e
    except (OSError, ValueError) as e:
        raise Transient(f"cannot reach the daemon (pid {info.pid}) at {info.url}: {e}") from e


def edit_status(settings: Settings, edit: Callable[[StatusStore], None]) -> None:
    """Change the status when no daemon runs, holding the daemon lock meanwhile so none starts half-way; with a
    shared `state_db`, also the leader lock, so no daemon on another node leads meanwhile (and none does now)."""
    with DaemonLock(settings.state_dir).held_for("edit"), _no_leader(settings):
        store = StatusStore.for_settings(settings).load()
        edit(store)
        store.save()
        if store.db_error:
            raise Transient(f"cannot write the status to the state database: {store.db_error}")


@contextlib.contextmanager
def _no_leader(settings: Settings) -> Iterator[None]:
    if not settings.shared_state():
        yield
        return
    try:
        with no_leader(settings.state_db_url(), scope_name(settings.repo or "", settings.branch)):
            yield
    except LeaderElsewhere as e:
        raise Stalled(f"a zato-gitops daemon on another node leads {e.args[0]}",
                      hint="run the command on the node where a daemon runs (a standby forwards it to the leader)"
                      ) from e
    except psycopg.Error as e:
        raise Transient(f"cannot reach the state database: {first_line(e)}") from e
