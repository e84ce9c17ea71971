"""Whether the state database holds anything for a run to take up, asked without SQLAlchemy.

Why: most applies find nothing to change (the daemon polls, CI applies again), and such an apply only reads the
state database, twice: is a run left open in the journal (`engine/journal.py`: a reconciler was killed, its
record is to be finished), and is a rolling restart running or interrupted (`apply/store.py`: it is to be
resumed)? Importing SQLAlchemy to ask costs more (~0.1 s) than the rest of such an apply. So for the default
database, SQLite in the state dir, the stdlib `sqlite3` asks the same two questions, read-only. Whatever it cannot
answer for certain (another database, no file yet, a schema below the head, any error), and any open run or
rollout it finds, is left to the journal and the store: they migrate, tell a dead run from a live one, and take it
up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from reconciler.db.migrate import VERSION_SQL, head_revision

#: how SQLAlchemy names a SQLite file (`Settings.state_db_url`); a driver or options in the URL are not ours to read
SQLITE = "sqlite:///"


def quiet(url: str, taken_up: Sequence[str]) -> bool | None:
    """True when the SQLite database at `url` is at the head revision, has no run open in the journal
    (`Journal.unfinished` reads the same rows) and no rollout whose status is in `taken_up` (`RolloutStore.all`);
    False when it has one; None when it cannot tell."""
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            if [row[0] for row in db.execute(VERSION_SQL)] != [head_revision()]:
                return None
            runs = "SELECT 1 FROM zg_runs WHERE state = 'open'"
            rollouts = f"SELECT 1 FROM zg_rollouts WHERE status IN ({', '.join('?' * len(taken_up))})"
            return db.execute(f"{runs} UNION ALL {rollouts} LIMIT 1", tuple(taken_up)).fetchone() is None
    except sqlite3.Error:
        return None


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL (absolute, as SQLAlchemy opens it), else None."""
    if not url.startswith(SQLITE) or "?" in url:
        return None
    name = url[len(SQLITE):]
    return Path(name).resolve() if name and name != ":memory:" else None
