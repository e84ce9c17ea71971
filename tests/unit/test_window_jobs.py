"""A rollout waiting for its window is a pending row in the rollout store that another process (the daemon) finds
and runs once the window has started; the engine schedules no job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.engine.chain import Engine
from reconciler.engine.scheduler import window_due
from reconciler.settings import load_settings


def test_a_pending_rollout_is_found_by_another_process_once_its_window_started(tmp_path: Path) -> None:
    settings = load_settings(None, {"repo": str(tmp_path / "repo"), "state_dir": tmp_path / "state"})
    created = Engine(settings).store.create("prod", "a" * 40, {s: {} for s in ["s1", "s2"]}, status="pending",
                                            window="0 2 * * *")
    at = datetime.strptime(created.created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    start = at.replace(hour=2, minute=0, second=0, microsecond=0) + timedelta(days=1)

    later = Engine(settings)  # a daemon started afterwards opens the same store
    assert later.due_rollouts(start - timedelta(seconds=1)) == []
    assert [r.id for r in later.due_rollouts(start + timedelta(seconds=20))] == [created.id]
    later.store.set_status(created.id, "cancelled")
    assert later.due_rollouts(start + timedelta(seconds=20)) == []


def test_a_window_is_due_from_its_start_and_a_start_missed_long_ago_waits_for_the_next() -> None:
    since = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert not window_due("0 2 * * *", since, datetime(2026, 11, 24, 1, 59, 59, tzinfo=UTC))
    assert window_due("0 2 * * *", since, datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    assert window_due("0 2 * * *", since, datetime(2026, 11, 24, 2, 50, tzinfo=UTC))  # the daemon was busy
    assert not window_due("0 2 * * *", since, datetime(2026, 11, 24, 5, 0, tzinfo=UTC))  # down through it
    assert window_due("0 2 * * *", since, datetime(2026, 11, 25, 2, 0, 5, tzinfo=UTC))  # the next night
    assert not window_due("0 2 * * *", datetime(2026, 11, 24, 2, 0, 30, tzinfo=UTC),
                          datetime(2026, 11, 24, 2, 0, 40, tzinfo=UTC))  # created after this start
