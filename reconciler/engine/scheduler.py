"""Rollout windows (cron expressions) and the daemon's APScheduler.

A rolling restart with a `rollout.window` waits as a **pending** row in the rollout store (apply/store.py), not
as a scheduler job: any process that opens the store finds it, and the daemon's poll runs each pending rollout
whose window has started (`window_due`). The engine uses APScheduler only as a crontab parser (`cron_trigger`);
it schedules nothing. The daemon's own periodic jobs (poll, drift check, retries) run on the in-memory
`BackgroundScheduler` made here. APScheduler 3.x is pinned (`>=3.11,<4`): 4.0 is still alpha and has another API.

The rollout store and the run journal live on the state database (`Settings.state_db_url`): SQLite in the state
dir by default, or PostgreSQL shared by a leader and its standby, where only the leader's poll runs them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # start-up cost: APScheduler loads in the daemon, or where a window's cron is read
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    from reconciler.settings import Settings

#: a window start missed by more than this (the daemon was down then) waits for the next start
MISSED_GRACE = timedelta(hours=1)


def make_scheduler(settings: Settings) -> BackgroundScheduler:
    """The daemon's scheduler for its periodic jobs, in memory (they are added again at every start); not
    started. `settings` is kept for the signature's sake: jobs that must survive a restart live in the store."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    del settings
    return BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone="UTC",
    )


_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_trigger(expression: str) -> CronTrigger:
    """A 5-field crontab expression as a trigger, in UTC, with crontab's day-of-week numbers.

    APScheduler 3 numbers weekdays from Monday = 0, crontab from Sunday = 0 (and 7); so `0 2 * * 1` would run on
    Tuesdays. Numbers in the day-of-week field are turned into names (mon, tue, ...), which mean the same in both.
    """
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, dow = expression.split()
    dow = re.sub(r"(?<![*/\d])\d(?![\d])", lambda m: _DOW[int(m.group())] if int(m.group()) <= 7 else m.group(), dow)
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone="UTC")


def window_open(window: str, now: datetime) -> bool:
    """Whether `now` falls in a minute the window's cron expression matches (UTC)."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    nxt = cron_trigger(window).get_next_fire_time(None, minute)
    return nxt is not None and nxt == minute


def next_window(window: str, after: datetime) -> datetime | None:
    """The window's next start at or after `after`."""
    nxt: datetime | None = cron_trigger(window).get_next_fire_time(None, after.astimezone(UTC))
    return nxt


def window_due(window: str, since: datetime, now: datetime, grace: timedelta = MISSED_GRACE) -> bool:
    """Whether a rollout pending since `since` is due at `now`: its window started after `since`, and not more
    than `grace` ago."""
    start = next_window(window, max(since, now - grace))
    return start is not None and start <= now
