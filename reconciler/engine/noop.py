"""An apply that finds nothing to do, answered without loading the manifest model or planning again (issue 9).

Why: most applies change nothing (CI applies every merge again, cron applies as a drift check), and at 1 server x
200 modules such an apply spent half of its 0.46 s importing and building what the servers' answers already say:
pydantic and the manifest model, the desired state, the plan. The floor (one paramiko connection, one command per
server) took 0.24 s.

Why it is safe: the plan is a pure function of the desired state and the observations; the desired state is a
pure function of the commit and the settings; each observation is a pure function of the server's answer to the
observe script (`observe.parse_observation`), of which only the log's size moves while nothing changes
(`observe.fingerprint` leaves it out). So after an apply that planned nothing and did nothing, with every server
answering `@@same`, `remember` keeps in `<state_dir>/noop.json`:
  - the commit, and a key of everything the settings are made from: the config file's bytes, the options, the
    working directory and the environment they default from, and the reconciler's own code (its files' sizes and
    times, so an upgrade never trusts an older memo);
  - per server, the observe script's arguments and the fingerprint of the answer;
  - the report that apply printed.
The next apply with the same key (`attempt`) fetches the branch. If the head is that commit, no killed run or
rollout waits in the state database (`db/probe.py`) and no note waits to be pushed, it asks every server the same
question, in parallel, one round trip each. If every answer has the same fingerprint, the plan would be the same
empty plan: the apply prints the same report (with a new run id) and ends. Anything else (another commit, another
answer, an unreachable server, any error at all) and the apply goes the full way, which finds it and reports it.
The full way deletes the memo as it starts and writes it only after a run that found nothing to do, so a memo
always describes a state that an apply has just verified.

What it does not do: it takes no cluster lease, because it changes nothing on the servers (as `plan`; the hash
cache it may refresh is written atomically and keyed by what it describes). It is not kept when commit statuses
(`git_host`) or signature checks (`verify.signatures`) are configured: a run posts statuses, and a keyring can
change without the settings changing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.locks import LockHeld, PidLock

if TYPE_CHECKING:
    from reconciler.engine.chain import Engine
    from reconciler.engine.results import ApplyReport
    from reconciler.settings import Settings
    from reconciler.transport.ssh import SSHPool

log = logging.getLogger(__name__)

FORMAT = 1
MEMO = "noop.json"

#: the environment the settings' defaults come from (~/.ssh/known_hosts, the default state dir)
_ENV = ("HOME", "XDG_STATE_HOME")


def _code_stamp() -> str:
    """The reconciler's own code, by the size and modification time of its files: an upgrade changes it."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def memo_key(config: Path | None, overrides: Mapping[str, Any], clusters: Sequence[str]) -> str | None:
    """The key of everything an apply's settings and scope are made from (None if the config file cannot be
    read: the full way says why)."""
    try:
        config_sha = None if config is None else hashlib.sha256(config.read_bytes()).hexdigest()
    except OSError:
        return None
    parts = {
        "format": FORMAT,
        "config": None if config is None else [str(config), config_sha],
        "options": {k: str(v) for k, v in sorted(overrides.items()) if v is not None},
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in _ENV},
        "clusters": sorted(clusters),
        "code": _code_stamp(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def state_dir_of(config: Path | None, overrides: Mapping[str, Any]) -> Path | None:
    """Where the settings will put the state dir, read without loading them (None when it cannot be told)."""
    given = overrides.get("state_dir")
    if given is not None:
        return Path(given)
    if config is not None:
        import yaml

        data = yaml.safe_load(config.read_bytes())
        if not isinstance(data, dict):
            return None
        value = data.get("state_dir", data.get("state-dir"))
        if value is not None:
            return Path(value) if isinstance(value, str) else None
    from reconciler.defaults import default_state_dir

    return default_state_dir()


def forget(state_dir: Path) -> None:
    """The full way starts: whatever the memo said may stop being true."""
    try:
        (Path(state_dir) / MEMO).unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot remove %s: %s", Path(state_dir) / MEMO, e)


def remember(
    engine: Engine, settings: Settings, key: str | None, result: ApplyReport, report: Mapping[str, Any],
    text: str, clusters: Sequence[str],
) -> bool:
    """Keep the memo after an apply that found nothing to do (`report` its JSON document, `text` what it printed
    for a person); say whether it was kept."""
    from reconciler.transport.connect import server_label

    rep = result.report
    if (key is None or not result.ok or not rep.plan.empty or rep.unreachable or result.results or result.refused
            or result.rollouts or result.scheduled or result.records or result.note is not None
            or settings.git_host is not None or settings.verify.signatures != "off"):
        return False
    servers: list[dict[str, Any]] = []
    for dc in rep.desired.clusters:
        if clusters and dc.name not in clusters:
            continue
        for s in dc.spec.servers:
            answer = engine.answers.get((dc.name, s.name))
            if answer is None:
                return False
            servers.append({
                "cluster": dc.name, "server": s.name, "transport": dc.spec.transport, "host": s.host,
                "port": s.port, "user": s.user, "label": server_label(dc.spec, s), "args": list(answer.args),
                "fingerprint": answer.fingerprint,
            })
    memo = {
        "format": FORMAT, "key": key, "commit": rep.commit,
        "repo": settings.repo, "branch": settings.branch, "ssh_command": settings.git_ssh_command(),
        "state_db": settings.state_db_url(),
        "identity": None if settings.identity is None else str(settings.identity),
        "known_hosts": str(settings.known_hosts), "connect_timeout": settings.connect_timeout,
        "command_timeout": settings.command_timeout, "parallelism": settings.parallelism,
        "servers": servers, "report": {k: v for k, v in report.items() if k != "run"}, "text": text,
    }
    from reconciler.engine.facts import write_json

    try:
        write_json(Path(settings.state_dir) / MEMO, memo)
    except OSError as e:
        log.warning("cannot keep %s: %s", Path(settings.state_dir) / MEMO, e)
        return False
    return True


Same = tuple[dict[str, Any], str]


@dataclass
class Declined:
    """What the memo's check leaves the full way: the branch head if it fetched it (not fetched again), and the
    SSH connections it made (a host that failed to connect is not waited for a second time)."""

    fetched: str | None = None
    pool: SSHPool | None = None


def attempt(
    key: str | None, config: Path | None, overrides: Mapping[str, Any], progress: Callable[[str], None]
) -> Same | Declined:
    """(the no-op's JSON document with a new run id, its text) when this apply provably has nothing to do; else
    what the full way can take over. `key`: `memo_key` of this apply."""
    left = Declined()
    try:
        return _attempt(key, config, overrides, progress, left)
    except Exception as e:  # any doubt at all: the full way decides, and reports what is wrong
        log.debug("no-op memo not used: %s", e)
        return left


class _Declined(Exception):
    """The memo does not apply to this apply (said why, for the debug log)."""


def _attempt(
    key: str | None, config: Path | None, overrides: Mapping[str, Any], progress: Callable[[str], None],
    left: Declined,
) -> Same:
    if key is None:
        raise _Declined("the config file cannot be read")
    state_dir = state_dir_of(config, overrides)
    if state_dir is None:
        raise _Declined("the state dir cannot be told without the settings")
    try:
        memo = json.loads((state_dir / MEMO).read_text())
    except FileNotFoundError:
        raise _Declined("no memo") from None
    if not isinstance(memo, dict) or memo.get("format") != FORMAT:
        raise _Declined("a memo of another format")
    if memo.get("key") != key:
        raise _Declined("the settings, the options or the code changed")
    lock = PidLock(state_dir / "lock")
    try:
        lock.acquire()
    except LockHeld:
        raise _Declined("another apply holds the state dir") from None
    try:
        return _verify(memo, state_dir, progress, left)
    finally:
        lock.release()


def _verify(memo: dict[str, Any], state_dir: Path, progress: Callable[[str], None], left: Declined) -> Same:
    from reconciler.apply.rollouts import TAKEN_UP
    from reconciler.db.probe import quiet
    from reconciler.gitrepo.notes import Audit
    from reconciler.gitrepo.source import Source

    source = Source(memo["repo"], memo["branch"], state_dir, ssh_command=memo["ssh_command"])
    try:
        progress(f"fetching {memo['branch']}")
        commit = left.fetched = source.fetch()
        progress(f"commit {commit[:12]}")
        if commit != memo["commit"]:
            raise _Declined("another commit")
        if Audit(source).pending():
            raise _Declined("notes wait to be pushed")
    finally:
        source.close()
    if quiet(memo["state_db"], TAKEN_UP) is not True:
        raise _Declined("a run or a rollout may be waiting")
    servers: list[dict[str, Any]] = memo["servers"]
    n = len(servers)
    progress(f"observing {n} server{'s' if n != 1 else ''}")
    if not _same_answers(memo, servers, left):
        raise _Declined("a server answered otherwise")
    progress(f"every server answered as when {commit[:12]} was last found in sync: nothing to do")
    report: dict[str, Any] = memo["report"]
    return report | {"run": uuid.uuid4().hex[:12]}, str(memo["text"])


def _same_answers(memo: dict[str, Any], servers: list[dict[str, Any]], left: Declined) -> bool:
    from reconciler.observe import fingerprint, run_observe
    from reconciler.transport import SSHOptions, Transport
    from reconciler.transport.local import LocalTransport

    pool = None
    if any(s["transport"] != "local" for s in servers):
        from reconciler.transport.ssh import SSHPool

        identity = memo["identity"]
        pool = SSHPool(SSHOptions(identity=None if identity is None else Path(identity),
                                  known_hosts=Path(memo["known_hosts"]),
                                  connect_timeout=float(memo["connect_timeout"])))

    def same(s: dict[str, Any]) -> bool:
        t: Transport
        if s["transport"] == "local" or pool is None:
            t = LocalTransport(s["label"])
        else:
            t = pool.transport(s["label"], s["host"], int(s["port"]), s["user"])
        text = run_observe(t, [str(a) for a in s["args"]], f"{s['cluster']}/{s['server']}",
                           float(memo["command_timeout"]))
        return fingerprint(text) == str(s["fingerprint"])

    with ThreadPoolExecutor(max_workers=max(1, min(int(memo["parallelism"]), len(servers)))) as ex:
        futures = [ex.submit(same, s) for s in servers]  # every server answers: none is left mid-command
    if all(not f.exception() and f.result() for f in futures):
        if pool is not None:
            pool.close()
        return True
    left.pool = None if pool is None else pool.hand_over()
    return False
