"""The run journal: what a run is about to do and what it did, written before each side effect.

The promise is that git, the servers and the history agree. A run ends by recording what it did as a git note
(Flux's `defer`-style finaliser), but a run can end without reaching its end: SIGKILL, a power cut, the OOM
killer. So before each side effect the engine writes here what it is about to do (drop these modules on these
servers, whose logs are at these offsets; run this rollout), and after it what came of it (the records). A run
is entered here with its first write (`_Run.journal` in `engine/chain.py`), so one with nothing to do never is. A run
that ends normally, or through an exception or a signal, turns its journal into the note and closes it. A run
that was killed leaves it open; the next run finds it and finishes it first: it re-reads the servers' logs from
the journalled offsets for the confirmations the killed run never saw, takes the rollout's own progress from the
rollout store, writes the note and marks the rollout interrupted.

SQLAlchemy Core, in the same database as the rollout store (the state database: SQLite in the state dir, or the
shared `state_db`), so a standby reconciler on a shared database can finish a run its peer did not. Two tables,
declared in `db/schema.py` and created by migration 0004: `zg_runs` (one row per run: commit, who, host and pid,
open or closed) and `zg_journal` (its entries in order, deleted once the run's note is written).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, create_engine, delete, insert, select, update
from sqlalchemy.engine import Engine as SAEngine

from reconciler.apply.rollouts import Rollout
from reconciler.apply.store import RolloutStore, store_url
from reconciler.core.state import LogMark
from reconciler.db.migrate import migrate
from reconciler.db.schema import journal_t as entries_t
from reconciler.db.schema import runs_t
from reconciler.gitrepo.records import INTERRUPTED, Action, Reason, Record
from reconciler.locks import process_alive, process_start
from reconciler.settings import Settings

#: a run of another host whose journal did not move for this long is taken to be dead
STALE_AFTER = timedelta(minutes=30)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class HotDeployStep:
    """A hot-deploy about to happen on one cluster: what goes where, who must confirm, from which log offsets."""

    op: int
    cluster: str
    commit: str
    started: str
    #: module file name -> (repository path, blob, sha256)
    modules: Mapping[str, tuple[str, str, str]]
    drops: Mapping[str, tuple[str, ...]]
    confirms: Mapping[str, tuple[str, ...]]
    marks: Mapping[str, LogMark]
    copied: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RolloutStep:
    op: int
    rollout: str
    commit: str
    #: servers already done when this run took the rollout up (recorded by an earlier run)
    done_before: frozenset[str]


@dataclass
class RunJournal:
    """Everything one run journalled, read back."""

    run_id: str
    commit: str
    by: str
    host: str
    pid: int
    updated: str
    hot_deploys: list[HotDeployStep] = field(default_factory=list)
    rollouts: list[RolloutStep] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    resolved: set[int] = field(default_factory=set)

    @property
    def pending_hot_deploys(self) -> list[HotDeployStep]:
        return [h for h in self.hot_deploys if h.op not in self.resolved]

    @property
    def pending_rollouts(self) -> list[RolloutStep]:
        return [r for r in self.rollouts if r.op not in self.resolved]


class Journal:
    def __init__(self, url: str) -> None:
        migrate(url)
        self.engine: SAEngine = create_engine(url, future=True, pool_pre_ping=True)
        self.host = socket.gethostname()

    @classmethod
    def for_settings(cls, settings: Settings) -> Journal:
        return cls(store_url(settings))

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- writing ---------------------------------------------------------------------------------------------
    def open(self, run_id: str, commit: str, by: str) -> None:
        ts = _now()
        with self._tx() as c:
            c.execute(insert(runs_t).values(run_id=run_id, commit_sha=commit, by=by, host=self.host,
                                            pid=os.getpid(), pid_start=process_start(os.getpid()), started=ts,
                                            updated=ts, state="open"))

    def _add(self, run_id: str, kind: str, data: Mapping[str, Any]) -> int:
        ts = _now()
        with self._tx() as c:
            res = c.execute(insert(entries_t).values(run_id=run_id, kind=kind, data=json.dumps(data), at=ts))
            c.execute(update(runs_t).where(runs_t.c.run_id == run_id).values(updated=ts))
            key = res.inserted_primary_key
            return int(key[0]) if key else 0

    def hot_deploy(self, run_id: str, cluster: str, commit: str, modules: Mapping[str, tuple[str, str, str]],
                   drops: Mapping[str, Sequence[str]], confirms: Mapping[str, Sequence[str]],
                   marks: Mapping[str, LogMark]) -> int:
        """Before any file is copied: returns the step's id, to resolve it with `records(..., op=)`."""
        return self._add(run_id, "hot-deploy", {
            "cluster": cluster, "commit": commit, "started": _now(),
            "modules": {m: list(v) for m, v in modules.items()},
            "drops": {s: sorted(ms) for s, ms in drops.items()},
            "confirms": {s: sorted(ms) for s, ms in confirms.items()},
            "marks": {s: [m.path, m.size, m.inode] for s, m in marks.items()},
        })

    def copied(self, run_id: str, op: int, server: str) -> None:
        self._add(run_id, "copied", {"op": op, "server": server})

    def rollout(self, run_id: str, rollout: Rollout) -> int:
        """Before a rollout is started or resumed."""
        return self._add(run_id, "rollout", {
            "rollout": rollout.id, "commit": rollout.commit,
            "done_before": sorted(s.server for s in rollout.servers if s.step == "done")})

    def records(self, run_id: str, records: Sequence[Record], op: int | None = None) -> None:
        """What a step did; `op` marks the journalled step it resolves."""
        self._add(run_id, "records", {"op": op, "records": [r.to_dict() for r in records]})

    def close(self, run_id: str) -> None:
        """The run's note is written: its entries have served (the note is the record), the run row stays."""
        with self._tx() as c:
            c.execute(update(runs_t).where(runs_t.c.run_id == run_id).values(state="closed", updated=_now()))
            c.execute(delete(entries_t).where(entries_t.c.run_id == run_id))

    # --- reading ---------------------------------------------------------------------------------------------
    def read(self, run_id: str) -> RunJournal:
        with self._tx() as c:
            row = c.execute(select(runs_t).where(runs_t.c.run_id == run_id)).mappings().one()
            rows = c.execute(select(entries_t).where(entries_t.c.run_id == run_id)
                             .order_by(entries_t.c.id)).mappings().all()
        run = RunJournal(row["run_id"], row["commit_sha"], row["by"], row["host"], row["pid"], row["updated"])
        copied: dict[int, set[str]] = {}
        for e in rows:
            data = json.loads(e["data"])
            kind = e["kind"]
            if kind == "hot-deploy":
                run.hot_deploys.append(HotDeployStep(
                    op=e["id"], cluster=data["cluster"], commit=data["commit"], started=data["started"],
                    modules={m: (v[0], v[1], v[2]) for m, v in data["modules"].items()},
                    drops={s: tuple(ms) for s, ms in data["drops"].items()},
                    confirms={s: tuple(ms) for s, ms in data["confirms"].items()},
                    marks={s: LogMark(v[0], int(v[1]), int(v[2])) for s, v in data["marks"].items()}))
            elif kind == "copied":
                copied.setdefault(int(data["op"]), set()).add(data["server"])
            elif kind == "rollout":
                run.rollouts.append(RolloutStep(e["id"], data["rollout"], data["commit"],
                                                frozenset(data["done_before"])))
            elif kind == "records":
                run.records += [Record.from_dict(r) for r in data["records"]]
                if data.get("op") is not None:
                    run.resolved.add(int(data["op"]))
        run.hot_deploys = [HotDeployStep(**{**h.__dict__, "copied": frozenset(copied.get(h.op, ()))})
                           for h in run.hot_deploys]
        return run

    def unfinished(self, exclude: str = "") -> list[str]:
        """Runs left open by a reconciler that is gone (killed): on this host its process is gone (its pid is dead,
        or now names a process that started later); on another host its journal has not moved for
        `STALE_AFTER`. Oldest first."""
        with self._tx() as c:
            rows = c.execute(select(runs_t).where(runs_t.c.state == "open").order_by(runs_t.c.started)).mappings().all()
        stale = (datetime.now(UTC) - STALE_AFTER).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out = []
        for r in rows:
            if r["run_id"] == exclude:
                continue
            mine = r["host"] == self.host
            if (not process_alive(r["pid"], r["pid_start"])) if mine else r["updated"] < stale:
                out.append(r["run_id"])
        return out

    def dispose(self) -> None:
        self.engine.dispose()


# --- turning a journal into records (pure, given the servers' verdicts) ----------------------------------------

Verdicts = Mapping[str, Mapping[str, tuple[str, str]]]  # server -> module -> (outcome, detail)


def hot_deploy_records(step: HotDeployStep, verdicts: Verdicts, base: Record, finished: str) -> list[Record]:
    """The records of a hot-deploy its run did not see to the end. A verdict read from the log since the
    journalled offset wins; a module with none is `interrupted` (the next apply observes and deploys again)."""
    out = []
    for server in sorted(step.confirms):
        for module in sorted(step.confirms[server]):
            repo_path, blob, sha = step.modules[module]
            outcome, detail = verdicts.get(server, {}).get(module, (INTERRUPTED, ""))
            dropped = module in step.drops.get(server, ()) and server in step.copied
            if outcome == INTERRUPTED:
                detail = detail or ("the run was stopped before this server confirmed the module"
                                    + ("" if dropped else "; it may not have been copied"))
            reason = {INTERRUPTED: Reason.INTERRUPTED, "failed": Reason.DEPLOY_FAILED,
                      "timeout": Reason.CONFIRM_TIMEOUT}.get(outcome)
            out.append(base.but(
                commit=step.commit, cluster=step.cluster, server=server, action=Action.HOT_DEPLOY, module=repo_path,
                blob=blob, sha256=sha, dropped=dropped, outcome=outcome, started=step.started, finished=finished,
                reason=reason if outcome != "confirmed" else None, detail=detail))
    return out


def rollout_records(step: RolloutStep, rollout: Rollout, recorded: set[tuple[str, str]], base: Record) -> list[Record]:
    """Restart records for what a rollout did in a run that did not see it to the end, from the rollout store's
    per-server progress: done servers as `ready`, a server in flight as `interrupted` (its rollout resumes it)."""
    out = []
    for p in rollout.servers:
        if p.server in step.done_before or (rollout.id, p.server) in recorded or p.step == "pending":
            continue
        common = base.but(commit=rollout.commit, cluster=rollout.cluster, server=p.server, action=Action.RESTART,
                          rollout=rollout.id, started=p.started or "")
        if p.step == "done":
            out.append(common.but(outcome="ready", ready=p.ready or ""))
        elif p.step in ("failed", "rolled-back"):
            out.append(common.but(outcome=p.step, ready=p.ready or "", detail=p.detail,
                                  reason=Reason.RESTART_FAILED if p.step == "failed" else Reason.ROLLED_BACK))
        else:
            out.append(common.but(outcome=INTERRUPTED, reason=Reason.INTERRUPTED,
                                  detail=f"the run was stopped at step '{p.step}'; the rollout resumes here"))
    return out


def interrupt_rollout(store: RolloutStore, rollout: Rollout) -> None:
    if rollout.status == "running":
        store.set_status(rollout.id, "interrupted", "the run working on it was stopped; the next apply resumes it")
