"""Who leads: a PostgreSQL advisory lock held by one daemon's session, and a standby waiting for it.

Why an advisory lock and not a home-made lease: PostgreSQL already knows when a session ends. A session-level
`pg_try_advisory_lock(key)` taken on a dedicated connection is held exactly as long as that session lives; when
the leader's process dies (SIGKILL, a crashed host) or its connection breaks, the server ends the session and the
lock is free for the next `pg_try_advisory_lock` of a standby. No clock, no expiry to tune, no split brain inside
the database.

The key is derived from the repository and branch a daemon follows (`schema.scope_name`), not per cluster: the
leader does one poll (one `git fetch`), one notes writer and one work lock for all clusters of that branch, and a
manifest may add or remove clusters at any commit; per-cluster leaders would fetch and push notes side by side and
need one lock per name that appears and disappears. Two daemons following different branches lead independently.

Timing (`failover_timeout`, T, 15 s by default): a standby tries the lock every T/3. A leader whose process dies
loses the lock at once (its socket closes); a host that vanishes without closing its socket is detected by the
server's TCP keepalives, set on the session to idle T/3, interval T/6, two probes (about 2T/3). So a standby takes
over within T. The leader checks its own session every T/3 (`SELECT 1`, bounded by `tcp_user_timeout`), and steps
down when it cannot: its caller stops acting (the server step under way is finished; a rollout stops at the next
server). After an outage that ended both sessions (the database restarted), a daemon that was standby waits two
ticks before trying the lock, so the last leader, if alive, leads again and finishes what it was doing, instead of
the standby repeating that step beside it. The leader LISTENs on a channel of its scope; a standby forwards the
webhooks and reconcile requests it receives with `NOTIFY`, so nothing a git host sends is lost to the standby.

With SQLite (one node's state dir) there is nobody to share with: `SingleNode` is always the leader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import psycopg
from sqlalchemy.engine import make_url

from reconciler.db import first_line
from reconciler.db.migrate import advisory_key, migrate
from reconciler.db.schema import scope_key

log = logging.getLogger("zato_gitops.leader")

Role = Literal["leader", "standby", "unavailable"]
OnChange = Callable[[bool], None]
OnRequest = Callable[[dict[str, Any]], None]


class SingleNode:
    """SQLite: one daemon per state dir, so always the leader."""

    role: Role = "leader"
    reason = "single node (SQLite state)"
    shared = False

    @property
    def is_leader(self) -> bool:
        return True

    def start(self, on_change: OnChange, on_request: OnRequest) -> None:
        on_change(True)

    def forward(self, request: dict[str, Any]) -> str:
        return "a single node is always the leader; nothing to forward"

    def stop(self) -> None:
        pass


def leader_key(scope: str) -> int:
    return advisory_key("zato-gitops:leader:" + scope)


def conninfo(url: str) -> str:
    """libpq's connection string for a SQLAlchemy `postgresql+psycopg://` URL."""
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


class LeaderElsewhere(Exception):
    """`no_leader` found the leader lock held: a daemon leads this scope somewhere."""


@contextlib.contextmanager
def no_leader(url: str, scope: str) -> Iterator[None]:
    """Hold the scope's leader lock for a moment (no daemon can lead meanwhile), or raise `LeaderElsewhere`.

    For a command that edits the shared status while no daemon runs on its own node: without this, a leader on
    another node would write its own copy over the edit at its next save."""
    with psycopg.connect(conninfo(url), autocommit=True, connect_timeout=10) as conn:
        key = leader_key(scope)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
        if not (row and row[0]):
            raise LeaderElsewhere(scope)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])


class Election:
    """Leader election on PostgreSQL for one scope; `start` runs it on a thread of its own."""

    shared = True

    def __init__(self, url: str, scope: str, timeout: float) -> None:
        self.url = url
        self.scope = scope
        self.key = leader_key(scope)
        self.channel = "zato_gitops_" + scope_key(scope)[:24]
        self.tick = max(0.2, timeout / 3)
        self.timeout = timeout
        self.role: Role = "unavailable"
        self.reason = "not connected to the state database yet"
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._send = threading.Lock()
        #: a standby that lost its session lets the last leader try the lock first when the database is back
        self._yield_once = False

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    def _connect(self) -> psycopg.Connection[Any]:
        t = self.timeout
        opts = (f"-c tcp_keepalives_idle={max(1, int(t / 3))} -c tcp_keepalives_interval={max(1, int(t / 6))} "
                f"-c tcp_keepalives_count=2 -c tcp_user_timeout={max(1000, int(t * 1000 / 3))}")
        return psycopg.connect(
            conninfo(self.url), autocommit=True, connect_timeout=max(2, int(t / 3)), options=opts,
            keepalives=1, keepalives_idle=max(1, int(t / 3)), keepalives_interval=max(1, int(t / 6)),
            keepalives_count=2, tcp_user_timeout=max(1000, int(t * 1000 / 3)),
        )

    def start(self, on_change: OnChange, on_request: OnRequest) -> None:
        self._thread = threading.Thread(target=self._run, args=(on_change, on_request), name="leader-election",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick + 5)
        self._drop()  # ends the session: the lock is free for a standby at once

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                conn.close()

    def forward(self, request: dict[str, Any]) -> str:
        """A standby's request for the leader (a webhook, a reconcile): NOTIFY on the scope's channel.
        Returns "" when sent, else why not (the leader's next poll sees a push anyway)."""
        try:
            with self._send, psycopg.connect(conninfo(self.url), autocommit=True,
                                             connect_timeout=max(2, int(self.timeout / 3))) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", [self.channel, json.dumps(request)])
            return ""
        except psycopg.Error as e:
            return first_line(e)

    def _set(self, role: Role, reason: str) -> None:
        if (role, reason) != (self.role, self.reason):
            level = logging.WARNING if role == "unavailable" else logging.INFO
            log.log(level, "role: %s (%s)", role, reason, extra={"event": f"role-{role}"})
        self.role, self.reason = role, reason

    def _run(self, on_change: OnChange, on_request: OnRequest) -> None:
        while not self._stop.is_set():
            was_leader = self.is_leader
            try:
                self._step(on_request)
            except (psycopg.Error, OSError) as e:
                self._drop()
                if self.role == "standby":
                    self._yield_once = True
                self._set("unavailable", f"the state database is unreachable: {first_line(e)}")
            except Exception as e:  # the election thread must outlive anything; it is what recovers
                log.exception("leader election failed unexpectedly")
                self._set("unavailable", f"leader election failed: {e}")
            if was_leader != self.is_leader:
                try:
                    on_change(self.is_leader)
                except Exception:
                    log.exception("the daemon failed to change role")
            if self.role != "leader":
                self._stop.wait(self.tick)

    def _step(self, on_request: OnRequest) -> None:
        if self._conn is None:
            self._conn = self._connect()
            migrate(self.url)
            if self._yield_once:
                # the database is back after an outage that took both sessions: the daemon that led before gets
                # the first try (it may be in the middle of a server step it should finish, not see repeated)
                self._yield_once = False
                self._set("standby", "the state database is back; the last leader may lead again first")
                self._stop.wait(2 * self.tick)
        conn = self._conn
        if self.role != "leader":
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
            if not (row and row[0]):
                self._set("standby", "another daemon leads; this one takes over when its session ends")
                return
            conn.execute(f'LISTEN "{self.channel}"')
            self._set("leader", "holds the leader lock of " + self.scope)
            return
        conn.execute("SELECT 1")
        for n in conn.notifies(timeout=self.tick):
            try:
                request = json.loads(n.payload)
            except ValueError:
                continue
            if isinstance(request, dict):
                on_request(request)
