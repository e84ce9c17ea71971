"""The record step that always runs (issue 8): an exception, SIGTERM (turned into an interrupt as the CLI does)
and a SIGKILLed run all end in a git note, with `interrupted` for what the run did not see to the end.

Real git (the unit git bed) and the real SQLite journal; the servers are out of reach on purpose, so what the
finaliser cannot read from a log is recorded as interrupted rather than guessed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from reconciler.apply.store import RolloutStore
from reconciler.core.state import LogMark
from reconciler.engine.chain import Engine
from reconciler.engine.journal import HotDeployStep, Journal, hot_deploy_records, rollout_records, runs_t
from reconciler.gitrepo.records import Action, Reason, Record
from reconciler.settings import Settings
from tests.unit.gitbed import GitBed

pytestmark = pytest.mark.usefixtures("hermetic_git")

MODULES = {"crm.py": ("services/crm.py", "b" * 40, "c" * 64)}
MARKS = {s: LogMark(f"/srv/{s}/logs/server.log", 100, 7) for s in ("s1", "s2")}


@pytest.fixture
def engine(bed: GitBed, tmp_path: Path) -> Engine:
    return Engine(Settings(repo=str(bed.origin), state_dir=tmp_path / "state", confirm_timeout=1))


def journal_drop(journal: Journal, run_id: str, commit: str) -> int:
    op = journal.hot_deploy(run_id, "prod", commit, MODULES, {"s1": ["crm.py"]}, {"s1": ["crm.py"], "s2": ["crm.py"]},
                            MARKS)
    journal.copied(run_id, op, "s1")
    return op


def kill(journal: Journal, run_id: str) -> None:
    """Make the run look like one whose process is gone (what SIGKILL leaves behind)."""
    with journal.engine.begin() as c:
        c.execute(update(runs_t).where(runs_t.c.run_id == run_id).values(pid=2**31 - 1))


def test_an_exception_in_a_run_records_what_was_done_as_interrupted(bed: GitBed, engine: Engine) -> None:
    commit = bed.commit({"README": "x"}, "first")
    engine.fetch()
    with engine.connections() as conns, pytest.raises(RuntimeError), engine._run(commit, conns) as run:
        journal_drop(run.journal, run.id, commit)
        raise RuntimeError("lost the network")
    records = engine.audit.records_for(commit)
    assert [(r["server"], r["outcome"], r["dropped"], r["reason"]) for r in records] == [
        ("s1", "interrupted", True, "Interrupted"), ("s2", "interrupted", False, "Interrupted")]
    assert run.note is not None and run.note.pushed
    assert engine.journal.unfinished() == []


def run_state(engine: Engine, run_id: str) -> str | None:
    with engine.journal.engine.begin() as c:
        return c.execute(select(runs_t.c.state).where(runs_t.c.run_id == run_id)).scalar_one_or_none()


def test_a_run_enters_the_journal_at_its_first_write_not_before(bed: GitBed, engine: Engine) -> None:
    commit = bed.commit({"README": "x"}, "first")
    engine.fetch()
    with engine.connections() as conns:
        with engine._run(commit, conns) as idle:
            idle.add([])  # a step that did nothing writes nothing
        # nothing to do: nothing read or written, not even a state database made
        assert not (engine.settings.state_dir / "jobs.sqlite").exists()
        assert idle.note is None
        with engine._run(commit, conns) as run:
            op = journal_drop(run.journal, run.id, commit)  # the step is announced before its side effect...
            assert run_state(engine, run.id) == "open"  # ...with the run's row already there
            assert [h.op for h in engine.journal.read(run.id).pending_hot_deploys] == [op]
            run.add([run.record(Action.HOT_DEPLOY, "confirmed", cluster="prod", server=s, module="services/crm.py")
                     for s in ("s1", "s2")], op=op)
    assert run_state(engine, run.id) == "closed" and run_state(engine, idle.id) is None
    assert {(r["run"], r["server"]) for r in engine.audit.records_for(commit)} == {(run.id, "s1"), (run.id, "s2")}


def note_kept_locally(bed: GitBed, engine: Engine) -> str:
    """A commit whose note could not be pushed (the origin refused it), with the origin writable again."""
    commit = bed.commit({"README": "x"}, "first")
    engine.fetch()
    hook = bed.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho read-only >&2\nexit 1\n")
    hook.chmod(0o755)
    base = Record(at="", run="r1", by="me", commit=commit, action=Action.HOT_DEPLOY, outcome="confirmed")
    assert not engine.audit.record(commit, [base.but(server="s1")]).pushed
    assert engine.audit.pending()
    hook.unlink()
    return commit


def test_a_run_with_nothing_to_do_still_pushes_the_notes_kept_locally(bed: GitBed, engine: Engine) -> None:
    commit = note_kept_locally(bed, engine)
    with engine.connections() as conns, engine._run(commit, conns) as run:
        pass
    assert run.note is not None and run.note.pushed and not engine.audit.pending()
    assert not (engine.settings.state_dir / "jobs.sqlite").exists()


def test_sigterm_ends_a_run_like_ctrl_c_and_it_is_recorded(bed: GitBed, engine: Engine) -> None:
    from reconciler.cli.commands import interrupt_on_sigterm

    commit = bed.commit({"README": "x"}, "first")
    engine.fetch()
    before = signal.getsignal(signal.SIGTERM)
    try:
        interrupt_on_sigterm()
        with engine.connections() as conns, pytest.raises(KeyboardInterrupt), engine._run(commit, conns) as run:
            run.add([run.record(Action.OBSERVE, "failed", cluster="prod", server="s9", detail="unreachable")])
            journal_drop(run.journal, run.id, commit)
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    outcomes = sorted((r["action"], r.get("server"), r["outcome"]) for r in engine.audit.records_for(commit))
    assert outcomes == [("hot-deploy", "s1", "interrupted"), ("hot-deploy", "s2", "interrupted"),
                        ("observe", "s9", "failed")]


def test_the_next_run_finishes_a_killed_runs_record_first(bed: GitBed, engine: Engine) -> None:
    commit = bed.commit({"README": "x"}, "first")
    engine.fetch()
    store = RolloutStore.for_settings(engine.settings)
    rollout = store.create("prod", commit, {s: {} for s in ["s1", "s2", "s3"]}, status="running", window=None)
    engine.journal.open("killed1", commit, "ops@box")
    journal_drop(engine.journal, "killed1", commit)
    engine.journal.rollout("killed1", rollout)
    store.update_server(rollout.id, "s1", step="done", started="t0", ready="t1")
    store.update_server(rollout.id, "s2", step="starting", started="t2")
    assert engine.journal.unfinished() == []  # its process (this one) is alive: not ours to finish
    kill(engine.journal, "killed1")
    assert engine.journal.unfinished() == ["killed1"]

    with engine.connections() as conns:
        engine._recover(conns)
    records = [Record.from_dict(r) for r in engine.audit.records_for(commit)]
    assert {r.run for r in records} == {"killed1"}
    assert sorted((r.action, r.server, r.outcome) for r in records) == [
        (Action.HOT_DEPLOY, "s1", "interrupted"), (Action.HOT_DEPLOY, "s2", "interrupted"),
        (Action.RESTART, "s1", "ready"), (Action.RESTART, "s2", "interrupted")]
    assert store.get(rollout.id).status == "interrupted"
    assert engine.journal.unfinished() == []


def test_a_pid_reused_by_a_later_process_does_not_keep_a_killed_run_open(engine: Engine, bed: GitBed) -> None:
    """A container restarted after SIGKILL runs its reconciler under the same pid again."""
    engine.journal.open("before-restart", "a" * 40, "ops@box")
    assert engine.journal.unfinished() == []
    with engine.journal.engine.begin() as c:
        c.execute(update(runs_t).where(runs_t.c.run_id == "before-restart").values(pid_start="1"))
    assert engine.journal.unfinished() == ["before-restart"]


def test_a_killed_run_that_saw_nothing_leaves_a_note_only_when_it_did_something(
        bed: GitBed, engine: Engine) -> None:
    commit = bed.commit({"README": "x"}, "first")
    engine.fetch()
    engine.journal.open("idle", commit, "ops@box")
    kill(engine.journal, "idle")
    with engine.connections() as conns:
        engine._recover(conns)
    assert engine.audit.records_for(commit) == []
    assert engine.journal.unfinished() == []


def test_journalled_verdicts_win_over_interrupted() -> None:
    step = HotDeployStep(1, "prod", "a" * 40, "t0", MODULES, {"s1": ("crm.py",)}, {"s1": ("crm.py",),
                         "s2": ("crm.py",)}, MARKS, frozenset({"s1"}))
    base = Record(at="t", run="r", by="me", commit="a" * 40, action=Action.HOT_DEPLOY, outcome="interrupted")
    recs = hot_deploy_records(step, {"s1": {"crm.py": ("confirmed", "")}, "s2": {"crm.py": ("failed", "boom")}},
                              base, "t9")
    assert [(r.server, r.outcome, r.reason, r.dropped) for r in recs] == [
        ("s1", "confirmed", None, True), ("s2", "failed", Reason.DEPLOY_FAILED, False)]


def test_rollout_records_skip_what_an_earlier_run_or_this_one_recorded(tmp_path: Path) -> None:
    from reconciler.engine.journal import RolloutStep

    store = RolloutStore(f"sqlite:///{tmp_path / 'j.sqlite'}")
    r = store.create("prod", "a" * 40, {s: {} for s in ["s1", "s2", "s3", "s4"]}, status="running",
                     window=None)
    for s in ("s1", "s2"):
        store.update_server(r.id, s, step="done", ready="t")
    store.update_server(r.id, "s3", step="rolled-back", detail="did not start")
    base = Record(at="t", run="r", by="me", commit="a" * 40, action=Action.RESTART, outcome="interrupted")
    recs = rollout_records(RolloutStep(1, r.id, "a" * 40, frozenset({"s1"})), store.get(r.id), set(), base)
    assert [(x.server, x.outcome, x.reason) for x in recs] == [
        ("s2", "ready", None), ("s3", "rolled-back", Reason.ROLLED_BACK)]
    assert rollout_records(RolloutStep(1, r.id, "a" * 40, frozenset()), store.get(r.id), {(r.id, "s1")},
                           base)[0].server == "s2"


def test_a_record_round_trips_through_its_note_line() -> None:
    rec = Record(at="2024-05-01T12:00:00.000000Z", run="r1", by="me", commit="a" * 40, action=Action.RESTART,
                 outcome="ready", server="s1", files=("a.py",), duration=1.5, reason=None)
    assert Record.from_dict(rec.to_dict()) == rec
    old = Record.from_dict({"at": "x", "action": "made-up", "outcome": "ok", "note": "hand-written"})
    assert old.to_dict()["action"] == "made-up" and old.to_dict()["note"] == "hand-written"


def test_recover_pushes_notes_an_earlier_push_left_behind(bed: GitBed, engine: Engine) -> None:
    note_kept_locally(bed, engine)
    result = engine.recover()  # what the daemon's poll calls
    assert result is not None and result.pushed and not engine.audit.pending()
    assert engine.recover() is None  # nothing left to do


def test_history_shows_what_did_not_go_well_in_a_run() -> None:
    from rich.console import Console

    from reconciler.cli.render import print_history
    from reconciler.gitrepo.notes import HistoryEntry

    def entry(server: str, outcome: str) -> HistoryEntry:
        return HistoryEntry("a" * 40, "release", {"at": "2024-05-01T12:00:00.000000Z", "run": "r1", "by": "me",
                                                  "cluster": "prod", "server": server, "action": "hot-deploy",
                                                  "module": "services/crm.py", "outcome": outcome})

    console = Console(record=True, width=200)
    print_history(console, [entry("s1", "confirmed"), entry("s2", "interrupted")])
    text = console.export_text()
    assert "interrupted" in text and "s2 interrupted" in text and "failed" not in text
