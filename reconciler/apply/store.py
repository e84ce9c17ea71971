"""Rollout progress that survives the reconciler: which servers of a rolling restart are done, which is in flight.

A reconciler killed mid-rollout must resume at the server where it stopped, never restart a finished server
again and never have two servers down at once (practice 10, after kustomize-controller's inventory). So every
step of every server is written here before and after it happens. SQLAlchemy Core on the state database
(`state_db`: SQLite in the state dir by default, PostgreSQL shared by a leader and its standby), whose schema the
migrations in `db/migrations/` keep; the APScheduler job store sits on the same database. What it hands out is
plain data (`apply/rollouts.py`), so the code that reads a rollout needs no SQLAlchemy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine as SAEngine

from reconciler.apply.rollouts import Rollout, ServerProgress, Status, now
from reconciler.db.migrate import migrate
from reconciler.db.schema import metadata
from reconciler.settings import Settings

#: `db/probe.py` also reads `status` here, with sqlite3 (tests/unit/test_state_probe.py holds the two together)
rollouts_t = Table(
    "zg_rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("cluster", String(200), nullable=False),
    Column("commit_sha", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("window", String(100)),
    Column("created", String(40), nullable=False),
    Column("updated", String(40), nullable=False),
    Column("message", Text, default=""),
)
servers_t = Table(
    "zg_rollout_servers",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("server", String(200), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("step", String(20), nullable=False),
    Column("log_size", Integer),
    Column("log_inode", Integer),
    Column("started", String(40)),
    Column("ready", String(40)),
    Column("detail", Text, default=""),
)
#: what each server of a rollout was planned with (`core.plan.Restart.to_dict()` as JSON): the operations its turn
#: carries out (Alembic revision 0003).
plans_t = Table(
    "zg_rollout_plans",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("server", String(200), primary_key=True),
    Column("plan", Text, nullable=False),
)


def store_url(settings: Settings) -> str:
    return settings.state_db_url()


class RolloutStore:
    def __init__(self, url: str) -> None:
        migrate(url)
        self.engine: SAEngine = create_engine(url, future=True, pool_pre_ping=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> RolloutStore:
        return cls(store_url(settings))

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def create(
        self, cluster: str, commit: str, plans: Mapping[str, dict[str, Any]], *, status: Status, window: str | None
    ) -> Rollout:
        """A new rollout of the servers in `plans` (in its order), each with the operations it was planned with."""
        rid = uuid.uuid4().hex[:10]
        ts = now()
        with self._tx() as c:
            c.execute(insert(rollouts_t).values(
                id=rid, cluster=cluster, commit_sha=commit, status=status, window=window, created=ts, updated=ts,
                message=""))
            for i, (s, p) in enumerate(plans.items()):
                c.execute(insert(servers_t).values(rollout_id=rid, server=s, position=i, step="pending", detail=""))
                c.execute(insert(plans_t).values(rollout_id=rid, server=s, plan=json.dumps(p, sort_keys=True)))
        return self.get(rid)

    def plan_of(self, rid: str, server: str) -> dict[str, Any] | None:
        """What `server` was planned with in rollout `rid` (None for a rollout made before plans were kept)."""
        with self._tx() as c:
            row = c.execute(select(plans_t.c.plan).where(plans_t.c.rollout_id == rid, plans_t.c.server == server)
                            ).first()
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        return data

    def get(self, rid: str) -> Rollout:
        with self._tx() as c:
            row = c.execute(select(rollouts_t).where(rollouts_t.c.id == rid)).mappings().first()
            if row is None:
                raise KeyError(rid)
            rows = c.execute(
                select(servers_t).where(servers_t.c.rollout_id == rid).order_by(servers_t.c.position)
            ).mappings().all()
        return _rollout(row, rows)

    def find(self, prefix: str) -> Rollout:
        """A rollout by its id or a unique prefix of it."""
        with self._tx() as c:
            ids = [r[0] for r in c.execute(select(rollouts_t.c.id).where(rollouts_t.c.id.startswith(prefix)))]
        if len(ids) != 1:
            raise KeyError(prefix)
        return self.get(ids[0])

    def all(self, statuses: tuple[str, ...] | None = None, cluster: str | None = None) -> list[Rollout]:
        q = select(rollouts_t.c.id).order_by(rollouts_t.c.created.desc())
        if statuses:
            q = q.where(rollouts_t.c.status.in_(statuses))
        if cluster:
            q = q.where(rollouts_t.c.cluster == cluster)
        with self._tx() as c:
            ids = [r[0] for r in c.execute(q)]
        return [self.get(i) for i in ids]

    def set_status(self, rid: str, status: Status, message: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "updated": now()}
        if message is not None:
            values["message"] = message
        with self._tx() as c:
            c.execute(update(rollouts_t).where(rollouts_t.c.id == rid).values(**values))

    def update_server(self, rid: str, server: str, **values: Any) -> None:
        with self._tx() as c:
            c.execute(update(servers_t).where(servers_t.c.rollout_id == rid, servers_t.c.server == server)
                      .values(**values))
            c.execute(update(rollouts_t).where(rollouts_t.c.id == rid).values(updated=now()))

    def close(self) -> None:
        self.engine.dispose()


def _rollout(row: Any, rows: Any) -> Rollout:
    return Rollout(
        id=row["id"], cluster=row["cluster"], commit=row["commit_sha"], status=row["status"], window=row["window"],
        created=row["created"], updated=row["updated"], message=row["message"] or "",
        servers=[
            ServerProgress(
                server=r["server"], position=r["position"], step=r["step"],
                log_size=r["log_size"], log_inode=r["log_inode"], started=r["started"], ready=r["ready"],
                detail=r["detail"] or "",
            )
            for r in rows
        ],
    )
