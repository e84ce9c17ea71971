"""Issue 8 end to end: every run is recorded, whatever happens to it.

An apply SIGKILLed after staging, or after copying but before the confirmations, leaves a journal in the state
dir; the next apply finishes its record first (reading the servers' logs since the journalled offsets) and
converges. Ctrl-C while waiting for confirmations records `interrupted`. A note that could not be pushed goes out
with the next apply, even one with nothing to do. An apply with nothing to do (issue 9) leaves the state database
as it was and loads neither SQLAlchemy nor rich; one that finds a killed run still finishes its record. Real sshd,
real git, the stand-in; the CLI as a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from world import ROOT, World, git, service_module

pytestmark = pytest.mark.e2e

MODULES = {f"services/m{i}.py": service_module(f"M{i}", name=f"acme.m{i}") for i in range(4)}


def note(world: World, commit: str) -> list[dict[str, Any]]:
    text = git(world.origin, "notes", "--ref=zato-gitops", "show", commit)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def start_apply(world: World) -> subprocess.Popen[str]:
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "reconciler", "apply", *world.common_args()], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def wait_until(proc: subprocess.Popen[str], what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"apply ended before {what}: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.005)


def wait_for_line(proc: subprocess.Popen[str], needle: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if needle in line:
            return
    raise AssertionError(f"apply ended (exit {proc.wait()}) without printing {needle!r}")


#: runs the CLI (arguments after the first, a file to write to) and writes there what it imported, whatever it exits
WITH_MODULES = """import json, sys
from reconciler.cli import main
where = sys.argv.pop(1)
try:
    main()
finally:
    with open(where, "w") as f:
        json.dump(sorted({m.split(".")[0] for m in sys.modules}), f)
"""


def apply_json(world: World) -> tuple[int, dict[str, Any], set[str]]:
    """`apply --json` in a fresh interpreter: its exit code, its document and the top-level packages it imported."""
    where = world.root.parent / f"{world.root.name}-modules.json"
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-c", WITH_MODULES, str(where), "apply", *world.common_args(), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    try:
        return r.returncode, json.loads(r.stdout), set(json.loads(where.read_text()))
    except ValueError as e:
        raise AssertionError(f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}") from e


def assert_nothing_changed(code: int, data: dict[str, Any]) -> None:
    assert code == 0 and data["ok"], data
    assert data["plan"]["changes_pending"] is False and data["plan"]["complete"], data
    assert data["servers"] == [] and data["rollouts"] == [] and data["scheduled"] == [] and not data["refused"]


def staged(world: World) -> bool:
    return any(any(s.path.joinpath("work", "zato-gitops", "staging").glob("run.*")) for s in world.servers)


def converged(world: World, commit: str) -> list[dict[str, Any]]:
    """The next apply succeeds, every server runs every module, a second one has nothing to do; the note."""
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    for s in world.servers:
        assert {f"acme.m{i}" for i in range(4)} <= set(s.services())
    assert world.cli("plan").returncode == 0
    records = note(world, commit)
    for s in world.servers:
        for path in MODULES:
            mine = [x for x in records if x["server"] == s.name and x["module"] == path]
            assert mine and mine[-1]["outcome"] == "confirmed", (s.name, path, records)
    return records


@pytest.mark.parametrize("phase", ["after staging", "after copy, before confirmation"])
def test_an_apply_killed_at_each_phase_is_recorded_and_converges(world: World, phase: str) -> None:
    if phase != "after staging":
        for s in world.servers:
            world.set_faults(s, deploy_delay=1.5)
    commit = world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    proc = start_apply(world)
    try:
        if phase == "after staging":
            wait_until(proc, "staged", lambda: staged(world))
        else:
            wait_for_line(proc, "to confirm in logs/server.log")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    journal = world.state_dir / "jobs.sqlite"
    assert journal.exists()
    records = converged(world, commit)
    if phase == "after staging":
        # the remote install may or may not have finished after the kill: the killed run's record says what its
        # servers' logs showed (confirmed) or interrupted, and then the next apply deployed and confirmed
        assert {x["outcome"] for x in records} <= {"interrupted", "confirmed"}
    else:
        # the confirmations the killed run never saw were read from the logs by the next run, under the killed
        # run's id; nothing was deployed twice
        assert len(records) == 12 and len({x["run"] for x in records}) == 1


def test_ctrl_c_while_waiting_for_confirmations_records_interrupted(world: World) -> None:
    """The first Ctrl-C ends the wait for confirmations; what was not confirmed by then is `interrupted`."""
    for s in world.servers:
        world.set_faults(s, deploy_delay=2)
    commit = world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    proc = start_apply(world)
    wait_for_line(proc, "to confirm in logs/server.log")
    proc.send_signal(signal.SIGINT)  # the first Ctrl-C: stop waiting, record, start nothing new
    assert proc.wait(30) == 1
    records = note(world, commit)
    assert len(records) == 12 and {x["outcome"] for x in records} == {"interrupted"}
    assert all(x["reason"] == "Interrupted" for x in records) and any(x["dropped"] for x in records)
    r = world.cli("history", "--json")
    assert {x["outcome"] for x in json.loads(r.stdout)} == {"interrupted"}
    assert "interrupted" in world.cli("history").stdout
    # the files were copied, so the servers deploy them after all; the next apply finds them in place
    deadline = time.monotonic() + 60
    while not all({f"acme.m{i}" for i in range(4)} <= set(s.services()) for s in world.servers):
        assert time.monotonic() < deadline, "the copied modules were never deployed"
        time.sleep(0.1)
    r = world.cli("apply")
    assert r.returncode == 0 and "nothing was touched" in r.stdout, r.stdout + r.stderr


def test_a_note_kept_locally_is_pushed_by_a_later_apply_with_nothing_to_do(world: World) -> None:
    commit = world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    hook = world.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho read-only mirror >&2\nexit 1\n")
    hook.chmod(0o755)
    r = world.cli("apply")
    assert r.returncode == 0 and "not pushed" in r.stdout, r.stdout + r.stderr
    with pytest.raises(subprocess.CalledProcessError):
        note(world, commit)
    Path(hook).unlink()
    r = world.cli("apply")
    assert r.returncode == 0 and "nothing was touched" in r.stdout, r.stdout + r.stderr
    assert len(note(world, commit)) == 12


def killed_before_confirmation(world: World, deploy_delay: float) -> str:
    """An apply of MODULES SIGKILLed once it copied them and waits for the servers (each slowed by `deploy_delay`
    seconds) to confirm; the commit."""
    for s in world.servers:
        world.set_faults(s, deploy_delay=deploy_delay)
    commit = world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    proc = start_apply(world)
    try:
        wait_for_line(proc, "to confirm in logs/server.log")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return commit


def test_the_daemons_first_poll_finishes_the_record_of_a_killed_apply(world: World) -> None:
    commit = killed_before_confirmation(world, deploy_delay=1.0)
    d = world.daemon()
    d.wait_applied(commit)
    records = note(world, commit)
    # the killed run's confirmations, read from the logs; nothing deployed twice
    assert len(records) == 12 and {x["outcome"] for x in records} == {"confirmed"}
    assert len({x["run"] for x in records}) == 1


def test_an_apply_with_nothing_to_do_loads_no_database_library_and_leaves_the_state_as_it_was(world: World) -> None:
    commit = world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    state = world.state_dir / "jobs.sqlite"
    before = (state.read_bytes(), state.stat().st_mtime_ns, note(world, commit))
    code, data, modules = apply_json(world)
    assert_nothing_changed(code, data)
    assert data["commit"] == commit
    assert {"sqlalchemy", "rich", "alembic"} & modules == set(), sorted(modules)
    assert "reconciler" in modules  # the list is the CLI's own
    assert (state.read_bytes(), state.stat().st_mtime_ns, note(world, commit)) == before


def test_a_second_apply_with_nothing_to_do_answers_from_the_memo_until_a_server_drifts(world: World) -> None:
    """engine/noop.py: after an apply that found nothing to do, the next one asks the servers the same question and,
    every answer the same, prints the same report without loading the manifest model; a server that drifted
    (a deployed module deleted by hand) sends the apply the full way, which puts the module back."""
    commit = world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    assert world.cli("apply").returncode == 0
    code, full, modules = apply_json(world)  # the full way: it finds nothing to do and keeps the memo
    assert_nothing_changed(code, full)
    assert "pydantic" in modules and (world.state_dir / "noop.json").is_file()
    code, fast, modules = apply_json(world)
    assert_nothing_changed(code, fast)
    assert {"pydantic", "sqlalchemy", "rich", "alembic"} & modules == set(), sorted(modules)
    assert fast["run"] != full["run"] and {**fast, "run": ""} == {**full, "run": ""}
    r = world.cli("apply")
    assert r.returncode == 0 and "nothing was touched" in r.stdout and "last found in sync" in r.stderr, r.stderr
    # a module removed from one server's deployed dir behind the reconciler's back
    gone = world.servers[1].path / "work" / "hot-deploy" / "current" / "m2.py"
    gone.unlink()
    code, data, modules = apply_json(world)
    assert code == 0 and data["ok"] and "pydantic" in modules, data
    assert data["plan"]["changes_pending"] is True and data["servers"], data
    deadline = time.monotonic() + 30
    while not gone.exists():  # 3.2: the cluster deploys it again on every server
        assert time.monotonic() < deadline, "the drifted module was never deployed again"
        time.sleep(0.1)
    assert not (world.state_dir / "noop.json").exists()  # the full way found work: no memo until a clean no-op
    records = note(world, commit)
    assert any(x["module"] == "services/m2.py" and x["outcome"] == "confirmed" for x in records[12:]), records


def test_a_new_commit_or_other_settings_go_the_full_way(world: World) -> None:
    world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    assert world.cli("apply").returncode == 0
    assert world.cli("apply").returncode == 0  # keeps the memo
    code, data, modules = apply_json(world)
    assert_nothing_changed(code, data)
    assert "pydantic" not in modules
    # another scope (--cluster) is another key: the full way, which keeps a memo of its own
    r = world.cli("apply", "--cluster", "prod")
    assert r.returncode == 0 and "last found in sync" not in r.stderr, r.stderr
    # a new commit: the full way deploys it (the head was fetched once, not twice)
    commit = world.commit({"services/m9.py": service_module("M9", name="acme.m9")})
    r = world.cli("apply")
    assert r.returncode == 0 and "last found in sync" not in r.stderr, r.stderr
    assert r.stderr.count("> fetching main") == 1, r.stderr
    assert any(x["module"] == "services/m9.py" for x in note(world, commit))


def test_a_host_down_after_a_clean_no_op_is_reported_by_the_full_way(world: World) -> None:
    """The memo's check cannot reach a server: the apply goes the full way, with the connections the check made,
    and reports that server as not observed (exit 1), its cluster left alone."""
    world.commit({"zato-gitops.yaml": world.manifest(), **MODULES})
    assert world.cli("apply").returncode == 0
    assert world.cli("apply").returncode == 0  # keeps the memo
    world.hosts[-1].stop()
    try:
        code, data, modules = apply_json(world)
        assert code == 1 and not data["ok"] and data["plan"]["unreachable"], data
        assert "pydantic" in modules  # the full way
    finally:
        world.hosts[-1].start()
    code, data, _ = apply_json(world)
    assert_nothing_changed(code, data)


def test_an_apply_that_finds_a_killed_run_finishes_its_record_through_the_journal(world: World) -> None:
    commit = killed_before_confirmation(world, deploy_delay=1.5)
    code, data, modules = apply_json(world)
    assert "sqlalchemy" in modules  # the open run sent it to the journal
    assert_nothing_changed(code, data)  # the killed run had copied everything, and it was confirmed
    records = note(world, commit)
    assert len(records) == 12 and {x["outcome"] for x in records} == {"confirmed"}
    assert len({x["run"] for x in records}) == 1 and records[0]["run"] != data["run"]  # under the killed run's id
    code, data, modules = apply_json(world)
    assert_nothing_changed(code, data)
    assert {"sqlalchemy", "rich"} & modules == set()  # its journal is closed: nothing is left to take up
