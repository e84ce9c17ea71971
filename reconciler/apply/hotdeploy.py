"""Hot-deploy: stage, verify, copy into the pickup dir, and wait for every server's log to confirm.

Why this order (docs/zato-facts.md section 2): Zato 3.2 watches the pickup dir for CLOSE_WRITE only, so a file
renamed into it is never deployed, and a half-written file would be deployed half. So the bytes first go to a
staging folder outside the pickup dir (`<work_dir>/zato-gitops/staging`), their sha256 is checked on the server,
and only then one local `cp` writes and closes the final name in the pickup dir. Every module of the server is
verified before any is copied, so a bad upload installs nothing. Confirmation follows each server's log from the
offset taken when it was observed, until every server named by the plan confirmed or refused each module, or the
timeout ends.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from reconciler.apply.logtail import read_log
from reconciler.core.plan import ClusterPlan
from reconciler.core.state import DesiredCluster, LogMark, ObservedCluster
from reconciler.errors import ReconcilerError
from reconciler.transport import Transport, script_argv
from reconciler.zato.logscan import ConfirmScanner

STAGING = "zato-gitops/staging"

INSTALL_SCRIPT = r"""
stage=$1; pickup=$2; shift 2
verify() {
  while [ $# -gt 0 ]; do
    got=$(sha256sum -- "$stage/$1" 2>/dev/null) || { echo "@@bad $3 missing"; return 1; }
    [ "${got%% *}" = "$2" ] || { echo "@@bad $3 ${got%% *}"; return 1; }
    shift 3
  done
}
install() {
  while [ $# -gt 0 ]; do
    cp -- "$stage/$1" "$pickup/$3" || { echo "@@failed $3"; return 1; }
    rm -f -- "$stage/$1"; echo "@@copied $3"; shift 3
  done
}
[ -d "$pickup" ] || { echo "@@nopickup"; exit 5; }
verify "$@" || exit 3
install "$@" || exit 4
"""

Outcome = Literal["confirmed", "failed", "timeout", "not-sent", "error"]


@dataclass
class ServerResult:
    """What happened on one server: per module, the verdict; and the lines that explain a failure."""

    server: str
    dropped: list[str] = field(default_factory=list)
    modules: dict[str, Outcome] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)  # module -> quoted log lines
    error: str = ""
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and all(v == "confirmed" for v in self.modules.values())


Progress = Callable[[str], None]


def _install(transport: Transport, work_dir: str, pickup_dir: str, items: Sequence[tuple[str, str, bytes]]) -> None:
    """Stage, verify and copy (name, sha256, data) items into one server's pickup dir."""
    stage = posixpath.join(work_dir, STAGING)
    mk = transport.run(["mkdir", "-p", "--", stage])
    if not mk.ok:
        raise ReconcilerError(f"{transport.label}: cannot create {stage}: {mk.err_text()}")
    args: list[str] = []
    for name, sha, data in items:
        staged = f"{sha[:16]}-{name}.part"
        transport.put(posixpath.join(stage, staged), data)
        args += [staged, sha, name]
    res = transport.run(script_argv(INSTALL_SCRIPT, stage, pickup_dir, *args))
    if not res.ok:
        detail = " ".join(line for line in res.text().splitlines() if line.startswith("@@")) or res.err_text()
        what = {3: "an uploaded file did not match its sha256", 5: f"pickup dir {pickup_dir} is missing"}.get(
            res.exit_code, "copying into the pickup dir failed"
        )
        raise ReconcilerError(f"{transport.label}: {what} ({detail.strip()})")


def hot_deploy(
    desired: DesiredCluster,
    observed: ObservedCluster,
    plan: ClusterPlan,
    transports: Mapping[str, Transport],
    *,
    timeout: float,
    poll: float,
    progress: Progress = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    parallelism: int = 16,
    on_copied: Callable[[str], None] = lambda _: None,
) -> dict[str, ServerResult]:
    """Carry out the cluster plan's hot-deploys; return a result per server that had to confirm something.

    `on_copied(server)` is called as soon as a server's files are in its pickup dir (the engine's journal notes
    it, so a run killed while waiting for confirmations is finished by the next one)."""
    results: dict[str, ServerResult] = {}
    drops: dict[str, list[str]] = {}
    confirms: dict[str, set[str]] = {}
    for h in plan.hot_deploys:
        for s in h.drop_on:
            drops.setdefault(s, []).append(h.module)
        for s in h.confirm_on:
            confirms.setdefault(s, set()).add(h.module)
    now = time.time()
    for s in confirms:
        results[s] = ServerResult(s, started=now)

    def install_on(server: str) -> None:
        obs = observed.server(server)
        items = [(m, desired.modules[m].sha256, desired.modules[m].data) for m in drops[server]]
        try:
            _install(transports[server], obs.paths.work_dir, obs.paths.pickup_dir, items)
            results[server].dropped = list(drops[server])
            on_copied(server)
            progress(f"{desired.name}/{server}: copied {', '.join(drops[server])} into {obs.paths.pickup_dir}")
        except ReconcilerError as e:
            results[server].error = e.message

    workers = max(1, min(parallelism, len(drops) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(install_on, list(drops)))

    # a module whose drop failed on every server that was to receive it will never be confirmed by anyone
    sent = {m for s, ms in drops.items() if not results[s].error for m in ms}
    for s, mods in confirms.items():
        for m in mods - sent:
            results[s].modules[m] = "not-sent"
    await_confirmations(desired, {s: mods & sent for s, mods in confirms.items()},
                        {s: observed.server(s).log for s in confirms}, transports, results, timeout=timeout,
                        poll=poll, progress=progress, clock=clock, sleep=sleep, parallelism=parallelism)
    return results


def await_confirmations(
    desired: DesiredCluster,
    confirms: Mapping[str, set[str]],
    marks: Mapping[str, LogMark],
    transports: Mapping[str, Transport],
    results: dict[str, ServerResult],
    *,
    timeout: float,
    poll: float,
    progress: Progress = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    parallelism: int = 16,
) -> None:
    """Follow each server's log from its mark until it confirmed or refused each of its modules, or `timeout`
    (0: read once); the verdicts go into `results` (one per server in `confirms`, created by the caller)."""
    prof = desired.profile
    marks = dict(marks)
    scanners = {s: ConfirmScanner(prof, set(mods)) for s, mods in confirms.items()}
    deadline = clock() + timeout
    waiting = {s for s, sc in scanners.items() if not sc.done}
    if waiting:
        progress(f"{desired.name}: waiting for {', '.join(sorted(waiting))} to confirm in logs/server.log")

    def read_one(server: str) -> None:
        try:
            chunk = read_log(transports[server], marks[server])
        except ReconcilerError as e:
            results[server].error = e.message
            return
        marks[server] = chunk.mark
        scanners[server].feed(chunk.lines)

    while waiting:
        with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(waiting)))) as pool:
            list(pool.map(read_one, sorted(waiting)))
        for s in list(waiting):
            sc = scanners[s]
            if sc.done or results[s].error:
                waiting.discard(s)
                if not results[s].error:
                    progress(f"{desired.name}/{s}: " + ", ".join(
                        f"{m} {v.status}" for m, v in sorted(sc.verdicts.items())))
        if not waiting or clock() >= deadline:
            break
        sleep(poll)

    end = time.time()
    for s, sc in scanners.items():
        r = results[s]
        r.finished = end
        for m, v in sc.verdicts.items():
            r.modules[m] = v.status
            if v.status != "confirmed":
                r.lines[m] = v.evidence
        for m in sc.pending:
            r.modules[m] = "error" if r.error else "timeout"
            r.lines[m] = sc.lines[-10:]

