"""The state database seam: which URL, the status document in a database, and what a dead database does to it.

The leader election itself needs a real PostgreSQL and is tried end to end (tests/e2e/test_ha.py).
"""

from __future__ import annotations

from pathlib import Path

from reconciler.daemon.conditions import StatusStore
from reconciler.db.leader import SingleNode, conninfo
from reconciler.db.schema import scope_name
from reconciler.db.status import StatusRow
from reconciler.settings import Settings

A = "a" * 40


def test_sqlite_in_the_state_dir_by_default_state_db_wins_over_job_store(tmp_path: Path) -> None:
    s = Settings(repo="x", state_dir=tmp_path)
    assert s.state_db_url() == f"sqlite:///{tmp_path.resolve() / 'jobs.sqlite'}" and not s.shared_state()
    s = Settings(repo="x", state_dir=tmp_path, job_store="postgresql+psycopg://old@db/x")
    assert s.state_db_url() == "postgresql+psycopg://old@db/x" and s.shared_state()
    s = Settings(repo="x", state_dir=tmp_path, job_store="sqlite:///j", state_db="postgresql+psycopg://zg@db/zg")
    assert s.state_db_url() == "postgresql+psycopg://zg@db/zg"


def test_the_scope_leaves_credentials_out() -> None:
    assert scope_name("https://bot:tok3n@git.example/acme/svc.git", "main") == "https://git.example/acme/svc.git#main"
    assert scope_name("git@github.com:acme/svc.git", "prod") == "git@github.com:acme/svc.git#prod"


def test_libpq_gets_the_url_without_the_driver_name() -> None:
    assert conninfo("postgresql+psycopg://zg:pw@db:5433/zg?sslmode=require") == \
        "postgresql://zg:pw@db:5433/zg?sslmode=require"


def test_the_status_document_round_trips_through_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    store = StatusStore(tmp_path, StatusRow(url, "repo#main"))
    cs = store.cluster("prod")
    cs.succeed(A, 100.0, "1 module hot-deployed")
    cs.set_suspended(True, 101.0)
    store.save()
    assert store.db_error == "" and not (tmp_path / "status.json").exists()
    again = StatusStore(tmp_path / "other-node", StatusRow(url, "repo#main")).load()
    assert again.clusters["prod"].last_applied_revision == A and again.clusters["prod"].suspended
    assert StatusStore(tmp_path, StatusRow(url, "repo#other")).load().clusters == {}  # another branch's


def test_a_database_that_cannot_be_reached_keeps_the_status_in_memory_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = StatusStore(tmp_path, StatusRow(f"sqlite:///{tmp_path / 'file' / 'no.sqlite'}", "repo#main"))
    store.load()
    assert "unable to open database file" in store.db_error
    store.cluster("prod").succeed(A, 100.0)
    store.save()  # does not raise
    assert store.db_error and store.clusters["prod"].last_applied_revision == A


def test_a_single_node_always_leads() -> None:
    node = SingleNode()
    seen: list[bool] = []
    node.start(seen.append, lambda _r: None)
    assert node.is_leader and seen == [True] and node.forward({}) != ""


def test_a_node_moving_to_a_shared_database_brings_its_status_json_along(tmp_path: Path) -> None:
    single = StatusStore(tmp_path)
    single.cluster("prod").succeed(A, 100.0)
    single.cluster("prod").set_suspended(True, 101.0)
    single.save()
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    moved = StatusStore(tmp_path, StatusRow(url, "repo#main")).load()
    assert moved.clusters["prod"].suspended and moved.clusters["prod"].last_applied_revision == A
    moved.cluster("prod").set_suspended(False, 102.0)
    moved.save()
    # from then on the database's document is the status, the file is not read again
    assert not StatusStore(tmp_path, StatusRow(url, "repo#main")).load().clusters["prod"].suspended
