"""The one SQLAlchemy `MetaData` of the state database, and the tables no other module owns.

Why one `MetaData`: the migrations (Alembic, `db/migrations/`) must describe every table the code uses, and a unit
test compares the migration head with this metadata (`tests/unit/test_migrations.py`). Modules that own a table
(the rollout store) declare it on this metadata; the daemon's status document and the run journal are declared
here, since their owners (`daemon/conditions.py`, `engine/journal.py`) sit on floors above and the schema must be
importable from the bottom.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Column, Integer, MetaData, String, Table, Text

metadata = MetaData()

#: APScheduler creates and owns its own table on the same database; the migrations leave it alone
FOREIGN_TABLES = ("apscheduler_jobs",)

#: the daemon's status (conditions, last applied revisions, suspend flags), one JSON document per repository and
#: branch (`scope`), so a standby that takes over knows what the leader knew
status_t = Table(
    "zg_status",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("updated", String(40), nullable=False),
)

#: the run journal (`engine/journal.py`): one row per run of the engine that wrote anything, open until its note is
#: written (`db/probe.py` also reads `state`, with sqlite3)...
runs_t = Table(
    "zg_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("commit_sha", String(64), nullable=False),
    Column("by", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_start", String(32), nullable=False),  # the process's start (pids are reused)
    Column("started", String(40), nullable=False),
    Column("updated", String(40), nullable=False),
    Column("state", String(10), nullable=False),  # open | closed
)
#: ...and what it was about to do and did, in order (kind: hot-deploy | copied | rollout | records; data: JSON)
journal_t = Table(
    "zg_journal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    Column("data", Text, nullable=False),
    Column("at", String(40), nullable=False),
)


def scope_name(repo: str, branch: str) -> str:
    """What two reconcilers that must share one leader and one status have in common: the repository and branch
    they follow (credentials in a URL left out, so none is written to the database)."""
    parts = urlsplit(repo)
    if parts.scheme and "@" in parts.netloc:
        repo = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return f"{repo}#{branch}"


def scope_key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()
