"""Start-up cost: heavy libraries load where a command uses them, not when the CLI is imported.

The scale benchmark (bench/RESULTS.md) found a no-op `apply` dominated by Python start-up and imports, and peak
RSS mostly imports. These tests keep the result without timing anything: each runs a fresh interpreter and looks
at `sys.modules`, which says what was imported, whatever the machine's speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = {"alembic", "apscheduler", "psycopg", "prometheus_client", "jsonschema", "hypothesis", "paramiko",
         "sqlalchemy", "pydantic", "git", "yaml", "rich"}


def imported(code: str) -> set[str]:
    """The top-level packages of HEAVY that `code`, run in a fresh interpreter, leaves imported."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1])) & HEAVY


def test_importing_the_cli_imports_no_heavy_library() -> None:
    assert imported("import reconciler.cli.commands") == set()


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys\nfrom reconciler.cli import commands\nsys.argv = ['zato-gitops', '--help']\n"
            "try:\n    commands.main()\nexcept SystemExit:\n    pass")
    assert imported(code) == set()


def test_the_apply_path_imports_no_database_migration_ssh_daemon_drawing_or_test_library() -> None:
    """The engine (what apply, plan and history run) loads git, but not SQLAlchemy (the journal and the rollout
    store load it when a run writes or a rollout waits; an apply with nothing to do asks sqlite3), Alembic,
    paramiko (only an SSH server needs it), psycopg (only a postgresql:// state_db), APScheduler (the daemon, a
    window's cron), prometheus_client, rich (only what is drawn for people, never --json) or the test libraries."""
    loaded = imported("import reconciler.engine.chain, reconciler.cli.render")
    assert loaded & {"sqlalchemy", "rich", "alembic", "apscheduler", "paramiko", "psycopg", "prometheus_client",
                     "jsonschema", "hypothesis"} == set()


def test_a_database_at_the_head_is_opened_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    code = "from reconciler.db.migrate import migrate\nmigrate({url!r})"
    assert "alembic" in imported(code.format(url=url))  # an empty database: Alembic creates the tables
    assert "alembic" not in imported(code.format(url=url))  # at the head: one SELECT, no Alembic


def test_the_ssh_transport_spares_paramikos_invoke_import() -> None:
    """paramiko imports invoke (and asyncio) only for ssh_config `Match exec`, which we never read."""
    probe = ("import sys\nimport reconciler.transport.ssh\n"
             "print(sys.modules.get('invoke') is None, 'asyncio' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]
