"""A rollout waiting for its window is a persisted APScheduler job that another process (the daemon) finds."""

from __future__ import annotations

from pathlib import Path

from reconciler.engine.chain import Engine
from reconciler.engine.scheduler import PERSISTENT, make_scheduler
from reconciler.settings import load_settings


def test_a_scheduled_rollout_survives_the_process_and_can_be_unscheduled(tmp_path: Path) -> None:
    settings = load_settings(None, {"repo": str(tmp_path / "repo"), "state_dir": tmp_path / "state"})
    engine = Engine(settings)
    when = engine._schedule("abc123", "0 2 * * *")
    assert when.endswith("T02:00:00+00:00")

    # another process (a daemon started later) opens the same store and finds the job as it was
    sched = make_scheduler(settings)
    sched.start(paused=True)
    try:
        job = sched.get_job("rollout-abc123", jobstore=PERSISTENT)
        assert job is not None
        assert job.func_ref == "reconciler.engine.chain:run_scheduled_rollout"
        assert list(job.args) == ["abc123"]
        assert job.next_run_time.isoformat() == when
    finally:
        sched.shutdown(wait=False)

    engine._unschedule("abc123")
    sched = make_scheduler(settings)
    sched.start(paused=True)
    try:
        assert sched.get_job("rollout-abc123", jobstore=PERSISTENT) is None
    finally:
        sched.shutdown(wait=False)
