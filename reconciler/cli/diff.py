"""`plan --diff`: what exactly changes in each module, against the version the servers run.

A server tells us only the sha256 of the module it runs. git knows the bytes: the deploy records name the commit
and path of every module deployed with its sha256, and failing that the module's recent history at the same path
holds it. So the old side of the diff comes from git, never from the servers (no extra round trip, no reading of
files a server may not let us read). A version found nowhere (deployed by hand, or older than the history looked
at) is said plainly instead of diffing against a guess.
"""

from __future__ import annotations

import difflib
import hashlib
from typing import Any

from rich.console import Console
from rich.text import Text

from reconciler.engine.results import PlanReport

#: how many commits back along a module's path to look for the version a server runs
HISTORY_DEPTH = 200
#: a diff longer than this many lines is cut (the JSON says so)
MAX_LINES = 2000


def module_diffs(engine: Any, report: PlanReport) -> list[dict[str, Any]]:
    """One entry per (cluster, module, version the servers run) of the plan's hot-deploys."""
    source = engine.source
    known = _known_versions(engine)
    found: list[dict[str, Any]] = []
    for cp in report.plan.clusters:
        for h in cp.hot_deploys:
            new = source.read(report.commit, h.repo_path)
            olds: dict[str | None, list[str]] = {}
            for d in h.diffs:
                olds.setdefault(d.old_sha256, []).append(d.server)
            for old_sha, servers in olds.items():
                old = None if old_sha is None else _find(source, report.commit, h.repo_path, old_sha, known)
                entry: dict[str, Any] = {
                    "cluster": cp.cluster, "module": h.module, "repo_path": h.repo_path, "servers": servers,
                    "old_sha256": old_sha, "new_sha256": h.sha256, "found": old_sha is None or old is not None,
                    "diff": None, "truncated": False,
                }
                if old_sha is None or old is not None:
                    text, cut = _unified(old or b"", new, h.repo_path, old_sha)
                    entry.update(diff=text, truncated=cut)
                found.append(entry)
    return found


def _known_versions(engine: Any) -> dict[str, tuple[str, str]]:
    """sha256 -> (commit, repository path) from the deploy records (newest wins)."""
    versions: dict[str, tuple[str, str]] = {}
    try:
        entries = engine.audit.history(limit=5000)
    except Exception:  # the records are a shortcut only; the module's history below is the fallback
        return versions
    for e in reversed(entries):
        rec = e.record
        if rec.get("sha256") and rec.get("module"):
            versions[str(rec["sha256"])] = (e.commit, str(rec["module"]))
    return versions


def _find(source: Any, head: str, path: str, sha: str, known: dict[str, tuple[str, str]]) -> bytes | None:
    candidates: list[tuple[str, str]] = []
    if sha in known:
        candidates.append(known[sha])
    log = source.git("log", "--format=%H", f"-n{HISTORY_DEPTH}", head, "--", path)
    if getattr(log, "status", 1) == 0:
        candidates += [(c, path) for c in log.out.split()]
    for commit, p in candidates:
        try:
            data: bytes = source.read(commit, p)
        except Exception:
            continue
        if hashlib.sha256(data).hexdigest() == sha:
            return data
    return None


def _unified(old: bytes, new: bytes, path: str, old_sha: str | None) -> tuple[str, bool]:
    a = old.decode("utf-8", "replace").splitlines(keepends=True)
    b = new.decode("utf-8", "replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(a, b, fromfile="/dev/null" if old_sha is None else f"servers/{path}",
                                      tofile=f"repo/{path}"))
    lines = [line if line.endswith("\n") else line + "\n" for line in lines]
    cut = len(lines) > MAX_LINES
    return "".join(lines[:MAX_LINES]), cut


def print_diffs(console: Console, diffs: list[dict[str, Any]]) -> None:
    for d in diffs:
        servers = ", ".join(d["servers"])
        console.print(Text(f"{d['cluster']}: {d['repo_path']} on {servers}", style="bold"))
        if not d["found"]:
            console.print(Text(f"  the version these servers run ({d['old_sha256'][:12]}) is not in the deploy "
                               f"records nor in the last {HISTORY_DEPTH} commits of {d['repo_path']}; "
                               "it may have been copied by hand", style="yellow"))
            continue
        for line in d["diff"].splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else \
                "cyan" if line.startswith("@@") else ""
            console.print(Text(line, style=style), soft_wrap=True)
        if d["truncated"]:
            console.print(Text(f"  ... cut at {MAX_LINES} lines", style="yellow"))
