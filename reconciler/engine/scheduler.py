"""The one APScheduler of a reconciler process, with its persistent job store.

Rollouts (static installs waiting for a window) and the daemon's periodic jobs run on the same
`BackgroundScheduler`. Jobs that must survive a restart (a rollout waiting for its window) live in a SQLAlchemy
job store: SQLite in the state dir by default, or any database URL from `job_store` in the config (e.g.
PostgreSQL for a store shared by a standby). APScheduler 3.x is pinned (`>=3.11,<4`): 4.0 is still alpha and
has another API.

Persisted jobs name their function by import path and carry only plain arguments (ids); the function finds the
process's engine through `register_runtime`, since an engine (open connections, settings with secrets) cannot
and must not be pickled into the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from reconciler.settings import Settings

#: the store for jobs that survive a restart; "default" is in memory (periodic jobs re-added at every start)
PERSISTENT = "persistent"

_runtime: dict[str, Any] = {}


def job_store_url(settings: Settings) -> str:
    """The job store is on the state database (`state_db`), beside the rollouts it runs."""
    return settings.state_db_url()


def persistent_store(settings: Settings) -> SQLAlchemyJobStore:
    # pre-ping: after the database restarted, a pooled connection is replaced instead of failing a job
    return SQLAlchemyJobStore(url=job_store_url(settings), engine_options={"pool_pre_ping": True})


def make_scheduler(settings: Settings, *, persistent: bool = True) -> BackgroundScheduler:
    """A scheduler with an in-memory default store and the persistent SQLAlchemy store; not started.

    `persistent=False` leaves the persistent store out: a daemon adds it once it leads (`add_jobstore`), so a
    standby, or a daemon whose database is down, never runs (or fails to load) the shared jobs."""
    stores: dict[str, Any] = {"default": MemoryJobStore()}
    if persistent:
        stores[PERSISTENT] = persistent_store(settings)
    return BackgroundScheduler(
        jobstores=stores,
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
    minute, hour, day, month, dow = expression.split()
    dow = re.sub(r"(?<![*/\d])\d(?![\d])", lambda m: _DOW[int(m.group())] if int(m.group()) <= 7 else m.group(), dow)
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone="UTC")


def register_runtime(name: str, value: Any) -> None:
    """Make a live object (the engine factory) reachable from persisted job functions in this process."""
    _runtime[name] = value


def runtime(name: str) -> Any:
    try:
        return _runtime[name]
    except KeyError as e:
        raise RuntimeError(f"no {name!r} registered in this process; is the scheduler started by zato-gitops?") from e


EngineFactory = Callable[[], Any]
