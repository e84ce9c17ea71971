"""`status` without a daemon: what the state dir knows, manual applies included, never a stale "Reconciling".

The daemon keeps each cluster's conditions in `<state_dir>/status.json`; a manual `apply` writes no status, only
deploy records (git notes in the state dir's clone). A person asking `status` after a manual apply, or after the
daemon stopped, must see the last outcome, not "no cluster reconciled yet" or a "Reconciling" the dead process
left behind. So when no daemon answers, the status is built from both: status.json for what only the daemon knows
(suspension, drift, failures and their backoff), the records for what happened after it (newest wins), and every
"Reconciling" condition turned off, since whatever was in progress ended with the process that did it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.cli.render import GOOD, NEUTRAL
from reconciler.errors import Transient
from reconciler.settings import Settings


def offline_status(settings: Settings) -> dict[str, Any]:
    """The /api/status document, from the state dir alone (no daemon runs)."""
    from reconciler.daemon.conditions import StatusStore

    store = StatusStore.for_settings(settings).load()
    if store.db_error:
        raise Transient(f"the state database cannot be used: {store.db_error}",
                        hint="check `state_db` in the config and that the database answers")
    data = store.to_dict()
    data["daemon"] = {}
    for cl in data.get("clusters") or []:
        _not_reconciling(cl)
    for name, derived in _from_records(settings).items():
        known = next((c for c in data["clusters"] if c["name"] == name), None)
        if known is None:
            data["clusters"].append(derived)
        elif derived["records_at"] > (_last_change(known) or ""):
            # a manual apply after the daemon's last word: its outcome is the news; suspension stays the daemon's
            known.update({k: v for k, v in derived.items() if k not in ("suspended", "drift", "failure")})
    data["clusters"].sort(key=lambda c: c["name"])
    return data


def _not_reconciling(cl: dict[str, Any]) -> None:
    for c in cl.get("conditions") or []:
        if c["type"] == "Reconciling" and c["status"] == "True":
            c.update(status="False", reason="DaemonStopped",
                     message="the daemon stopped while reconciling; the next apply or daemon start goes on")
    cl["reconciling"] = False


def _last_change(cl: dict[str, Any]) -> str | None:
    times = [str(c.get("last_transition_time") or "") for c in cl.get("conditions") or []]
    return max(times, default=None)


def _from_records(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per cluster, a status built from the newest deploy records in the state dir's clone (nothing fetched)."""
    if not settings.repo or not (Path(settings.state_dir) / "repo.git").is_dir():
        return {}
    from reconciler.gitrepo.notes import Audit
    from reconciler.gitrepo.source import Source

    source = Source(settings.repo, settings.branch, settings.state_dir, ssh_command=settings.git_ssh_command())
    try:
        entries = Audit(source).history(limit=2000)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    order: dict[str, list[str]] = {}
    for e in entries:  # newest first
        rec = dict(e.record) | {"commit": e.commit}
        cluster, run = str(rec.get("cluster") or ""), str(rec.get("run") or "")
        if not cluster or rec.get("action") == "drift":
            continue
        runs.setdefault(cluster, {}).setdefault(run, []).append(rec)
        if run not in order.setdefault(cluster, []):
            order[cluster].append(run)
    return {cluster: _cluster_from_runs(cluster, [runs[cluster][r] for r in order[cluster]])
            for cluster in runs}


def _cluster_from_runs(name: str, runs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """runs: newest first, each the records of one apply."""
    last = runs[0]
    outcomes = {str(r.get("outcome", "")) for r in last}
    ok = outcomes <= GOOD
    waiting = not ok and outcomes <= GOOD | NEUTRAL
    at = max(str(r.get("at", "")) for r in last)
    applied = next((rs for rs in runs if {str(r.get("outcome", "")) for r in rs} <= GOOD), None)
    failed = [r for r in last if str(r.get("outcome", "")) not in GOOD | NEUTRAL]
    message = ("; ".join(f"{r.get('server') or r.get('action')}: {str(r.get('detail') or r.get('outcome'))[:120]}"
                         for r in failed[:3]) if failed else f"applied by {last[0].get('by', '?')}")
    reason = "Succeeded" if ok else "Waiting" if waiting else "ApplyFailed"
    servers: dict[str, dict[str, Any]] = {}
    for rs in runs:
        for r in rs:
            s = r.get("server")
            if s and s not in servers:
                servers[str(s)] = {"state": "-", "message": str(r.get("detail") or "")[:200],
                                   "observed_at": None, "last_outcome": str(r.get("outcome", ""))}
    cond = [
        {"type": "Ready", "status": "True" if ok else "False", "reason": reason, "message": message,
         "last_transition_time": at},
        {"type": "Reconciling", "status": "False", "reason": "NoDaemon", "message": "", "last_transition_time": at},
        {"type": "Stalled", "status": "False", "reason": reason, "message": "", "last_transition_time": at},
    ]
    return {
        "name": name, "suspended": False, "last_attempted_revision": str(last[0]["commit"]),
        "last_applied_revision": str(applied[0]["commit"]) if applied else None,
        "last_applied_at": max(str(r.get("at", "")) for r in applied) if applied else None,
        "last_applied_ts": None, "reconciling": False, "conditions": cond, "failure": None, "drift": None,
        "servers": dict(sorted(servers.items())), "from_records": True, "records_at": at,
    }


def print_status(console: Console, data: dict[str, Any], *, running: bool, state_dir: Path) -> None:
    d = data.get("daemon") or {}
    src = data.get("source") or {}
    if running:
        two_nodes = d.get("role") and not str(d.get("role_reason", "")).startswith("single node")
        role = f"; {d['role']}: {d.get('role_reason', '')}" if two_nodes else ""
        console.print(f"daemon pid {d.get('pid')} at {d.get('url')}, started {d.get('started')}{role}")
    else:
        console.print(f"no daemon runs on {state_dir}; from its records:")
    if src.get("revision") or src.get("last_poll_at_iso"):
        head = (src.get("revision") or "-")[:12]
        console.print(f"branch head {head}, last poll {src.get('last_poll_at_iso') or '-'}")
    if src.get("error"):
        console.print(f"source problem ({src.get('error_kind')}): {src['error']}")
    clusters = data.get("clusters") or []
    if not clusters:
        console.print("nothing applied yet: no daemon status and no deploy records in the state dir")
        return
    # 80 columns: one short row per cluster; the long text (the Ready message) goes on its own line below
    table = Table(box=None, pad_edge=False, padding=(0, 2))
    for col in ("CLUSTER", "READY", "RECONCILING", "STALLED", "APPLIED", "SUSPENDED"):
        table.add_column(col, no_wrap=True)
    notes: list[Text] = []
    for cl in clusters:
        cond = {c["type"]: c for c in cl["conditions"]}
        ready = cond.get("Ready", {})
        style = "green" if ready.get("status") == "True" else "red"
        table.add_row(cl["name"], Text(f"{ready.get('status', 'Unknown')} {ready.get('reason', '')}".strip(),
                                       style=style),
                      cond.get("Reconciling", {}).get("status", "-"), cond.get("Stalled", {}).get("status", "-"),
                      (cl.get("last_applied_revision") or "-")[:12], "yes" if cl.get("suspended") else "no")
        attempted = cl.get("last_attempted_revision")
        if attempted and attempted != cl.get("last_applied_revision"):
            notes.append(Text(f"{cl['name']}: last attempted {attempted[:12]}", style="yellow"))
        if ready.get("message"):
            notes.append(Text(f"{cl['name']}: {ready['message'][:400]}"))
    console.print(table)
    for n in notes:
        console.print(n, soft_wrap=False)
    servers = Table(box=None, pad_edge=False, padding=(0, 2))
    for col in ("CLUSTER", "SERVER", "STATE", "LAST DEPLOY", "MESSAGE"):
        servers.add_column(col, no_wrap=col != "MESSAGE", overflow="fold")
    for cl in clusters:
        for name, st in (cl.get("servers") or {}).items():
            servers.add_row(cl["name"], name, st.get("state", "-"), st.get("last_outcome") or "-",
                            (st.get("message") or "")[:120])
    if servers.row_count:
        console.print()
        console.print(servers)
    for cl in clusters:
        for gone in cl.get("left_git") or []:
            console.print(f"{cl['name']}: {gone}", markup=False, highlight=False)
        if cl.get("drift"):
            dr = cl["drift"]
            console.print(f"{cl['name']}: drift {dr['action']} at {dr.get('found_at_iso')}: {'; '.join(dr['items'])}")
