"""Hot-deploy: stage, verify, copy into the pickup dir, and wait for every server's log to confirm.

Why this order (docs/zato-facts.md section 2): Zato 3.2 watches the pickup dir for CLOSE_WRITE only, so a file
renamed into it is never deployed, and a half-written file would be deployed half. So the bytes first go to a
staging folder outside the pickup dir (`<work_dir>/zato-gitops/staging`), their sha256 is checked on the server,
and only then one local `cp` writes and closes the final name in the pickup dir. Every module of the server is
verified before any is copied, so a bad upload installs nothing. All of a server's modules travel as one tar
over one channel's stdin, so a deploy of thousands of modules meets no argument-length limit and costs one round
trip. Before anything is written the server's free space is checked (staging, pickup and deployed copies, summed
per filesystem); a copy that still fails, or does not match in place, is removed at once, and the staging run
dir is removed on every exit. Confirmation follows each server's log from the
offset taken when it was observed, until every server named by the plan confirmed or refused each module, or the
timeout ends.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from reconciler.apply.logtail import read_log
from reconciler.core.plan import ClusterPlan
from reconciler.core.state import DesiredCluster, LogMark, ObservedCluster, ServerPaths
from reconciler.errors import ReconcilerError, Stalled
from reconciler.transport import Transport, script_argv
from reconciler.zato.logscan import ConfirmScanner

STAGING = "zato-gitops/staging"

#: what a file costs on disk at least: its size rounded up to this (ext4 and tmpfs blocks, pages)
BLOCK = 4096

# One round trip per server, the modules arriving as ONE tar on stdin (no argument or SFTP-per-file limits):
#   1. check that the staging, pickup and deployed filesystems have room for this deploy (each copy counted
#      once per filesystem it lands on, by device, so bind mounts of one filesystem add up), and refuse before
#      anything is written when one has not;
#   2. unpack into a fresh run dir under staging (outside the pickup dir), verify every sha256 as a whole;
#   3. one local `cp` per final name (xargs: no argument limits), so each name is written and closed once;
#   4. verify every copy in place; a copy that does not match (a failed or truncated write) is removed at once.
# The run dir goes on every exit, success or failure. Module names were checked by desired.py
# ([A-Za-z_][A-Za-z0-9_]*.py), so they never hold a space or a newline.
INSTALL_SCRIPT = r"""
stage=$1; pickup=$2; deployed=$3; need=$4
[ -d "$pickup" ] || { echo "@@nopickup"; exit 5; }
mkdir -p -- "$stage" 2>/dev/null || { echo "@@nostage cannot create $stage"; exit 7; }
for old in "$stage"/run.*; do
  [ -e "$old" ] && find "$stage" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +60 -exec rm -rf -- {} + 2>/dev/null
  break
done
set -f  # no globbing from here on: names below are split on blanks, never expanded
set -- "$stage" "$pickup"
[ "$deployed" = "$pickup" ] || [ ! -d "$deployed" ] || set -- "$@" "$deployed"
short=$({ stat -c %d -- "$@"; echo @@; df -Pk -- "$@"; echo @@; printf '%s\n' "$@"; } | awk -v need="$need" '
  $0 == "@@" { part++; i = 0; next }
  part == 0 { dev[++n] = $0; next }
  part == 1 { if (i++ > 0) avail[i - 1] = $4 * 1024; next }
  { dir[++k] = $0 }
  END {
    for (j = 1; j <= n; j++) { m = dev[j]; want[m] += need; if (!(m in first)) first[m] = j }
    for (j = 1; j <= n; j++) { m = dev[j]
      if (first[m] == j && want[m] > avail[j]) { printf "%.0f %.0f %s\n", avail[j], want[m], dir[j]; exit } } }')
[ -z "$short" ] || { echo "@@space $short"; exit 6; }
run=$(mktemp -d "$stage/run.XXXXXX") || { echo "@@nostage cannot create a run dir in $stage"; exit 7; }
trap 'rm -rf -- "$run"' EXIT
tar -x -f - -C "$run" 2>"$run/err" || { echo "@@nostage $(head -c 300 "$run/err")"; exit 7; }
cd "$run/files" || exit 7
failed() { printf '%s\n' "$1" | sed -n 's/: FAILED.*$//p'; }
out=$(sha256sum -c --quiet ../sums 2>/dev/null) || { echo "@@bad" $(failed "$out"); exit 3; }
awk '{ print $2 }' ../sums | xargs cp -t "$pickup" -- 2>"$run/err"; copied=$?
cd "$pickup" || exit 4
bad=""; verified=0
out=$(sha256sum -c --quiet "$run/sums" 2>/dev/null) || { verified=1; bad=$(failed "$out"); }
for b in $bad; do rm -f -- "$pickup/$b"; done
if [ "$verified" != 0 ] || [ "$copied" != 0 ]; then echo "@@failed" $bad "$(head -c 300 "$run/err")"; exit 4; fi
echo "@@copied"
"""


def on_disk(size: int) -> int:
    return -(-max(size, 1) // BLOCK) * BLOCK


def install_tar(items: Sequence[tuple[str, str, bytes]]) -> bytes:
    """One tar of `files/<name>` for every (name, sha256, data) item, and `sums` in `sha256sum -c` format."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))

        add("sums", "".join(f"{sha}  {name}\n" for name, sha, _ in items).encode())
        for name, _, data in items:
            add(f"files/{name}", data)
    return buf.getvalue()


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def some(names: Sequence[str], limit: int = 5) -> str:
    """Names for a progress line that fits a terminal: `a.py, b.py and 1998 more` (a first deploy names thousands)."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit - 1])} and {len(names) - limit + 1} more"


#: "interrupted": the run was asked to stop (Ctrl-C, SIGTERM, lost lead) before this server confirmed
Outcome = Literal["confirmed", "failed", "timeout", "not-sent", "error", "interrupted"]


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


def _install(
    transport: Transport, paths: ServerPaths, items: Sequence[tuple[str, str, bytes]], tar: bytes | None = None
) -> None:
    """Stage, verify and copy (name, sha256, data) items into one server's pickup dir, in one round trip."""
    stage = posixpath.join(paths.work_dir, STAGING)
    need = sum(on_disk(len(data)) for _, _, data in items)
    body = tar if tar is not None else install_tar(items)
    res = transport.run(
        script_argv(INSTALL_SCRIPT, stage, paths.pickup_dir, paths.deployed_dir, str(need)), stdin=body,
        timeout=max(60.0, len(body) / 1_000_000),
    )
    if res.ok:
        return
    detail = " ".join(line for line in res.text().splitlines() if line.startswith("@@")) or res.err_text()
    short = re.match(r"@@space (\d+) (\d+) (.+)", detail) if res.exit_code == 6 else None
    if short:
        free, want, mount = int(short[1]), int(short[2]), short[3]
        raise Stalled(
            f"{transport.label}: {_mb(free)} free on {mount}; this deploy needs {_mb(want)} "
            f"(staging, pickup dir and deployed copies of {len(items)} module{'s' if len(items) != 1 else ''})",
            hint=f"free space on {mount} (old logs, backups), or give the server more disk; nothing was copied",
        )
    what = {
        3: "an uploaded file did not match its sha256",
        5: f"pickup dir {paths.pickup_dir} is missing",
        7: f"staging in {stage} failed",
    }.get(res.exit_code, "copying into the pickup dir failed; what was not copied whole was removed")
    raise ReconcilerError(f"{transport.label}: {what} ({detail.strip()})")


#: seconds before the second read of the logs while waiting for confirmations (then doubled up to `poll`)
FIRST_POLL = 0.05


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
    stop: threading.Event | None = None,
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

    tars: dict[tuple[str, ...], bytes] = {}
    tar_lock = threading.Lock()

    def tar_of(names: tuple[str, ...]) -> tuple[list[tuple[str, str, bytes]], bytes]:
        """Servers that receive the same modules share one tar (4.1: usually every server)."""
        items = [(m, desired.modules[m].sha256, desired.modules[m].data) for m in names]
        with tar_lock:
            if names not in tars:
                tars[names] = install_tar(items)
            return items, tars[names]

    def install_on(server: str) -> None:
        obs = observed.server(server)
        try:
            items, tar = tar_of(tuple(drops[server]))
            _install(transports[server], obs.paths, items, tar)
            results[server].dropped = list(drops[server])
            on_copied(server)
            progress(f"{desired.name}/{server}: copied {some(drops[server])} into {obs.paths.pickup_dir}")
        except ReconcilerError as e:
            results[server].error = e.render()  # with its hint: what to do about a full disk

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
                        poll=poll, progress=progress, clock=clock, sleep=sleep, parallelism=parallelism, stop=stop)
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
    stop: threading.Event | None = None,
) -> None:
    """Follow each server's log from its mark until it confirmed or refused each of its modules, or `timeout`
    (0: read once), or `stop` is set (what is still pending is then `interrupted`); the verdicts go into
    `results` (one per server in `confirms`, created by the caller).

    The reads start 50 ms apart and back off to `poll`: a 3.2 cluster confirms one module within a few tenths of
    a second (its servers look at the ODB every so often), so a one-module change is not kept waiting a whole
    `poll` for a line already written, and a long first deploy still reads each log only every `poll`."""
    prof = desired.profile
    marks = dict(marks)
    scanners = {s: ConfirmScanner(prof, set(mods)) for s, mods in confirms.items()}
    deadline = clock() + timeout
    waiting = {s for s, sc in scanners.items() if not sc.done}
    if waiting:
        progress(f"{desired.name}: waiting for {some(sorted(waiting), 10)} to confirm in logs/server.log")

    def read_one(server: str) -> None:
        try:
            chunk = read_log(transports[server], marks[server])
        except ReconcilerError as e:
            results[server].error = e.message
            return
        marks[server] = chunk.mark
        scanners[server].feed(chunk.lines)

    interval = min(poll, FIRST_POLL)
    while waiting:
        with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(waiting)))) as pool:
            list(pool.map(read_one, sorted(waiting)))
        for s in list(waiting):
            sc = scanners[s]
            if sc.done or results[s].error:
                waiting.discard(s)
                if not results[s].error:
                    by_status: dict[str, list[str]] = {}
                    for m, v in sorted(sc.verdicts.items()):
                        by_status.setdefault(v.status, []).append(m)
                    progress(f"{desired.name}/{s}: " + "; ".join(
                        f"{some(ms)} {status}" for status, ms in sorted(by_status.items())))
        if not waiting or clock() >= deadline or (stop is not None and stop.is_set()):
            break
        sleep(interval)
        interval = min(poll, interval * 2)

    end = time.time()
    for s, sc in scanners.items():
        r = results[s]
        r.finished = end
        for m, v in sc.verdicts.items():
            r.modules[m] = v.status
            if v.status != "confirmed":
                r.lines[m] = v.evidence
        for m in sc.pending:
            r.modules[m] = "error" if r.error else "interrupted" if stop is not None and stop.is_set() else "timeout"
            r.lines[m] = sc.lines[-10:]
