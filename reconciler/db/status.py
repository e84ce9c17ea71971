"""The daemon's status document in the state database, for a leader and its standby to share.

Why a document and not tables per condition: the status is small (a few clusters), always read and written whole
by one writer (the leader), and its shape belongs to `daemon/conditions.py`; a JSON column keeps that shape in one
place while the database gives what a file in one node's state dir cannot: the standby that takes over reads what
the leader last wrote (last applied revisions, failures and their backoff, suspend flags, drift).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.engine import Engine

from reconciler.db.migrate import migrate
from reconciler.db.schema import scope_key, status_t


class StatusRow:
    """One scope's status document; every call is one short transaction (errors are SQLAlchemy's, raised)."""

    def __init__(self, url: str, scope: str) -> None:
        self.url = url
        self.scope = scope
        self.key = scope_key(scope)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            migrate(self.url)
            self._engine = create_engine(self.url, pool_pre_ping=True, pool_size=2, max_overflow=2) \
                if not self.url.startswith("sqlite") else create_engine(self.url)
        return self._engine

    def read(self) -> dict[str, Any] | None:
        with self.engine.begin() as c:
            row = c.execute(select(status_t.c.data).where(status_t.c.scope == self.key)).first()
        return None if row is None else dict(json.loads(row[0]))

    def write(self, data: dict[str, Any]) -> None:
        text = json.dumps(data)
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.engine.begin() as c:
            done = c.execute(update(status_t).where(status_t.c.scope == self.key).values(data=text, updated=ts))
            if done.rowcount == 0:
                c.execute(insert(status_t).values(scope=self.key, name=self.scope, data=text, updated=ts))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
