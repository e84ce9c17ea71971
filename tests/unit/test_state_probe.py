"""The probe that lets an apply with nothing to do skip SQLAlchemy must say what the journal and the store say.

Each case is made by the real journal and store on a real SQLite file, then asked of the probe (`db/probe.py`):
it may only say "quiet" when neither has anything for a run to take up, and says "cannot tell" (None) whenever it
is not sure, which sends the engine to the journal and the store.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import get_args

import pytest
from sqlalchemy import text, update

from reconciler.apply.rollouts import TAKEN_UP, Status
from reconciler.apply.store import RolloutStore
from reconciler.db.probe import quiet
from reconciler.db.schema import runs_t
from reconciler.engine.journal import Journal

A = "a" * 40


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.sqlite'}"


def test_an_open_run_is_never_quiet_whether_its_process_lives_or_not(url: str) -> None:
    assert quiet(url, TAKEN_UP) is None  # no database yet: the journal makes it
    journal = Journal(url)
    assert quiet(url, TAKEN_UP) is True and journal.unfinished() == []
    journal.open("r1", A, "ops@box")
    assert quiet(url, TAKEN_UP) is False  # alive (this process): the journal tells, and leaves it alone
    with journal.engine.begin() as c:  # what SIGKILL leaves behind
        c.execute(update(runs_t).where(runs_t.c.run_id == "r1").values(pid=2**31 - 1))
    assert quiet(url, TAKEN_UP) is False and journal.unfinished() == ["r1"]
    journal.close("r1")
    assert quiet(url, TAKEN_UP) is True and journal.unfinished() == []


@pytest.mark.parametrize("status", get_args(Status))
def test_a_rollout_is_quiet_exactly_when_the_store_would_not_take_it_up(url: str, status: Status) -> None:
    store = RolloutStore(url)
    rollout = store.create("prod", A, {"s1": {}, "s2": {}}, status="pending", window="sat 02:00-04:00")
    store.set_status(rollout.id, status)
    taken = [r.id for r in store.all(TAKEN_UP)]
    assert taken == ([rollout.id] if status in ("running", "interrupted") else [])
    assert quiet(url, TAKEN_UP) is (not taken)


def test_below_the_head_revision_it_cannot_tell(url: str) -> None:
    journal = Journal(url)
    with journal.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    assert quiet(url, TAKEN_UP) is None  # the journal migrates it first


def test_any_other_database_or_file_it_cannot_tell(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Journal(url)
    assert quiet(url, TAKEN_UP) is True
    for other in ("postgresql+psycopg://zg@db/zg", "sqlite:///:memory:", "sqlite://", f"{url}?timeout=5",
                  url.replace("sqlite:", "sqlite+pysqlite:")):
        assert quiet(other, TAKEN_UP) is None, other
    monkeypatch.chdir(tmp_path)
    assert quiet("sqlite:///state.sqlite", TAKEN_UP) is True  # relative to the working dir, as SQLAlchemy has it
    (tmp_path / "empty.sqlite").write_bytes(b"")
    sqlite3.connect(tmp_path / "tables.sqlite").execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database" * 100)
    for name in ("empty", "tables", "garbage", "missing"):
        assert quiet(f"sqlite:///{tmp_path / name}.sqlite", TAKEN_UP) is None, name


def test_it_only_reads(url: str, tmp_path: Path) -> None:
    Journal(url)
    path = tmp_path / "state.sqlite"
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    assert quiet(url, TAKEN_UP) is True
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(tmp_path))) == before
