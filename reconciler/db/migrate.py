"""Bring the state database to the schema this code needs, once, safely when several processes start at once.

Why Alembic and not `create_all`: a shared database outlives any one version of the reconciler; a table that
gains a column (the per-server plan, the run journal) must be altered in place, in order, the same way on every
node. The revisions ship as package data (`db/migrations/versions/`) and run on start, from whichever process
opens the database first: the daemon, `apply`, `rollouts`.

Two daemons starting at once on an empty database must migrate it once: on PostgreSQL the upgrade runs under a
session-level advisory lock (`pg_advisory_lock`, waits), so the second process finds the head already there and
does nothing. On SQLite (a file in one node's state dir) an `flock` on a file beside the database does the same for
the daemon and a manual `apply` starting together. A database made by an older version without Alembic (the
rollout tables only) is stamped at the first revision before upgrading, so no table is created twice.

Alembic itself (~0.1 s and several MB to import) loads only when a database is not at the head: the usual start
reads `alembic_version` with one SELECT and compares it with the newest revision file's number. SQLAlchemy loads in
the functions that open a database, so the head can be asked without it (`db/probe.py`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

log = logging.getLogger("zato_gitops.db")
#: Alembic says "Context impl ..." and "Running upgrade ..." at every start; ours is one line when it migrated
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the revision that created the tables older versions made with `create_all`
BASELINE = "0001"

_done: set[str] = set()
_guard = threading.Lock()


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock`, from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


MIGRATE_KEY = advisory_key("zato-gitops:migrate")


def head_revision() -> str:
    """The newest revision's id, read from the file names without importing Alembic: revisions are numbered in
    order, one after the other (`new_revision` writes them so; a unit test checks it against Alembic's head)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


#: what tells a database at the head (its one row is `head_revision()`) from one to upgrade
VERSION_SQL = "SELECT version_num FROM alembic_version"


def _at_head(conn: Connection, names: set[str]) -> bool:
    from sqlalchemy import text

    if "alembic_version" not in names:
        return False
    return list(conn.execute(text(VERSION_SQL)).scalars()) == [head_revision()]


def alembic_config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the head revision (once per process and URL)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    with _guard:
        if url in _done:
            return
        engine = create_engine(url, poolclass=NullPool)
        try:
            with _serialized(url, engine.connect()) as conn:
                names = set(inspect(conn).get_table_names())
                if not _at_head(conn, names):
                    _upgrade(conn, names)
        finally:
            engine.dispose()
        _done.add(url)


def _upgrade(conn: Connection, names: set[str]) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    if "zg_rollouts" in names and "alembic_version" not in names:
        command.stamp(alembic_config(conn), BASELINE)
        conn.commit()
    before = MigrationContext.configure(conn).get_current_revision()
    command.upgrade(alembic_config(conn), "head")
    conn.commit()
    after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info("state database migrated from %s to %s", before or "empty", after, extra={"event": "migrated"})


@contextmanager
def _serialized(url: str, conn: Connection) -> Iterator[Connection]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    with conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_KEY})
                conn.commit()
        elif conn.dialect.name == "sqlite" and make_url(url).database not in (None, "", ":memory:"):
            path = Path(str(make_url(url).database)).with_suffix(".migrate.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield conn
            finally:
                os.close(fd)
        else:
            yield conn


def new_revision(message: str) -> Path:
    """Write the next revision (`0003_...`), autogenerated from what the code's tables differ by from the head."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    rev_id = f"{int(head or '0') + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/head.sqlite"
        migrate(url)
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            command.revision(alembic_config(conn), message, autogenerate=True, rev_id=rev_id)
    return next(MIGRATIONS.glob(f"versions/{rev_id}_*.py"))


if __name__ == "__main__":  # python -m reconciler.db.migrate "what changed": a developer adds a revision
    import sys

    if len(sys.argv) != 2:
        sys.exit('usage: python -m reconciler.db.migrate "what changed in the tables"')
    print(new_revision(sys.argv[1]))
