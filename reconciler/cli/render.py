"""Turn plans, apply results and history into tables for people and JSON for scripts.

Kept apart from the CLI so the daemon's status page and the CLI print the same words, and so the JSON shapes
are defined once (docs/cli.md documents them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reconciler.apply.rollouts import Rollout
from reconciler.core.plan import ClusterPlan, Plan
from reconciler.core.release import Release
from reconciler.engine.results import ApplyReport, PlanReport
from reconciler.gitrepo.notes import HistoryEntry
from reconciler.gitrepo.records import GOOD_OUTCOMES

if TYPE_CHECKING:  # rich (~15 ms) loads in the functions that draw: the JSON output never needs it
    from rich.console import Console


def short(sha: str | None, n: int = 8) -> str:
    return sha[:n] if sha else "-"


def plan_dict(report: PlanReport, partial: Sequence[Any] = ()) -> dict[str, Any]:
    """The plan as JSON; `partial` (cli.partial.PartialPlan) adds what the reachable servers of a cluster with an
    unobserved server would get, marked `"partial": true` with the servers it lacks."""
    data = report.plan.to_dict()
    for pp in partial:
        entry = Plan(report.commit, (pp.plan,), ()).to_dict()["clusters"][0]
        data["clusters"].append(entry | {"partial": True, "unobserved": list(pp.unobserved)})
    data["unreachable"] = [
        {"cluster": c, "server": s, "error": e.message, "hint": e.hint} for c, s, e in report.unreachable
    ]
    # unknown while a server could not be observed: what it runs may differ too
    data["changes_pending"] = (not report.plan.empty) if report.complete else None
    data["complete"] = report.complete
    return data


def print_plan(console: Console, report: PlanReport, partial: Sequence[Any] = ()) -> None:
    from rich.text import Text

    p = report.plan
    console.print(Text(f"Plan for commit {p.commit[:12]}", style="bold"))
    for w in p.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    print_unreachable(console, report)
    for cp in p.clusters:
        spec = report.desired.cluster(cp.cluster).spec
        head = f"cluster {cp.cluster} (Zato {cp.zato_version}, {len(spec.servers)} servers)"
        for note in cp.notes:
            console.print(Text(f"warning: {cp.cluster}/{note}", style="yellow"))
        if cp.empty:
            console.print(f"{head}: up to date")
            continue
        if cp.hot_deploys:
            _print_hot(console, report, cp, head)
        if cp.restarts:
            _print_restarts(console, cp, head, spec.rollout.max_unavailable, spec.rollout.window)
    for pp in partial:
        cp = pp.plan
        spec = report.desired.cluster(cp.cluster).spec
        head = (f"cluster {cp.cluster} (Zato {cp.zato_version}), partial: {', '.join(pp.unobserved)} not observed, "
                "so apply leaves this cluster alone")
        if cp.empty:
            console.print(Text(f"{head}; the other servers are up to date", style="yellow"))
            continue
        if cp.hot_deploys:
            _print_hot(console, report, cp, head)
        if cp.restarts:
            _print_restarts(console, cp, head, spec.rollout.max_unavailable, spec.rollout.window)
    if p.empty and report.complete:
        console.print("No changes: every server runs what the commit says.")


def print_release(console: Console, release: Release) -> None:
    """The plan in Zato's words, after the file-level plan: services per changed module, modules that left git."""
    from rich.text import Text

    for c in release.clusters:
        for m in c.modules:
            parts = ([f"+{n}" for n in m.added] + [f"~{n}" for n in m.changed] + [f"-{n}" for n in m.removed])
            line = f"{c.cluster}: {m.repo_path} {m.change}: {', '.join(parts) or 'no services'}"
            if m.unknown_before:
                line += f" (what {', '.join(m.unknown_before)} run now is not in git)"
            console.print(Text(line))
        for r in c.restarts:
            parts = [f"+{n}" for n in r.added] + [f"~{n}" for n in r.changed] + [f"-{n}" for n in r.removed]
            if parts:
                console.print(Text(f"{c.cluster}: restart of {r.server} loads {', '.join(parts)}"))
        for g in c.left_git:
            console.print(Text(f"{c.cluster}: {g.describe()}", style="yellow"))


#: outcomes of a record that mean it went well, or that it is waiting (not a failure)
GOOD = GOOD_OUTCOMES
NEUTRAL = {"pending", "reported", "healing", "interrupted"}

_MARK = {"added": "+", "changed": "~", "removed": "-"}


def _print_restarts(console: Console, cp: ClusterPlan, head: str, at_once: int, window: str | None) -> None:
    from rich.text import Text

    names = ", ".join(r.server for r in cp.restarts)
    when = f", in the window '{window}'" if window else ""
    console.print(Text(f"{head}: restart required on {names} (rolling, {at_once} at a time{when})", style="bold"))
    for r in cp.restarts:
        console.print(f"  {r.server}: restart required ({'; '.join(r.why)})")
        for c in r.changes:
            console.print(f"    {_MARK[c.change]} {c.path}  {short(c.old_sha256)} -> {short(c.new_sha256)}")
        for c in r.shared:
            whose = "written here" if r.writes_shared else "written by another server of the host"
            console.print(f"    {_MARK[c.change]} {c.path}  {short(c.old_sha256)} -> {short(c.new_sha256)}"
                          f"  (extra path, shared by host {r.host}; {whose})")
    for b in cp.restart_blocked:
        console.print(Text(f"  blocked: {b}", style="red"))


def _print_hot(console: Console, report: PlanReport, cp: ClusterPlan, head: str) -> None:
    from rich.table import Table
    from rich.text import Text

    spec = report.desired.cluster(cp.cluster).spec
    n = len(cp.hot_deploys)
    console.print(Text(f"{head}: {n} module{'s' if n != 1 else ''} to hot-deploy", style="bold"))
    table = Table(box=None, padding=(0, 2), pad_edge=False, show_header=True)
    # 80 columns: a long module path folds onto more lines, it is never cut
    table.add_column("  module", overflow="fold", min_width=12)
    table.add_column("change", no_wrap=True)
    table.add_column("sha256 server -> repo", no_wrap=True)
    table.add_column("differs on", overflow="fold")
    for h in cp.hot_deploys:
        olds = sorted({short(d.old_sha256) for d in h.diffs})
        table.add_row(
            ("~ " if h.reason == "changed" else "+ ") + h.repo_path,
            h.reason,
            f"{'/'.join(olds)} -> {short(h.sha256)}",
            ", ".join(d.server for d in h.diffs),
        )
    console.print(table)
    drops = sorted({s for h in cp.hot_deploys for s in h.drop_on})
    confirm = [s.name for s in spec.servers if any(s.name in h.confirm_on for h in cp.hot_deploys)]
    how = "the cluster fans it out" if report.desired.cluster(cp.cluster).profile.fan_out else "no fan-out on 4.1"
    console.print(f"  copied into the pickup dir of {', '.join(drops)} ({how}); "
                  f"confirmed in logs/server.log by {', '.join(confirm)}")
    for b in cp.blocked:
        console.print(Text(f"  blocked: {b}", style="red"))


def print_unreachable(console: Console, report: PlanReport) -> None:
    from rich.text import Text

    for c, s, e in report.unreachable:
        console.print(Text(f"{c}/{s}: not observed: {e.render()}", style="red"))


def apply_dict(result: ApplyReport) -> dict[str, Any]:
    return {
        "commit": result.report.commit,
        "run": result.run_id,
        "ok": result.ok,
        "plan": plan_dict(result.report),
        "refused": result.refused,
        "servers": [
            {
                "cluster": c,
                "server": s,
                "ok": r.ok,
                "dropped": r.dropped,
                "modules": r.modules,
                "error": r.error,
                "lines": r.lines,
            }
            for c, servers in result.results.items()
            for s, r in servers.items()
        ],
        "rollouts": [
            r.to_dict() | {"outcomes": [o.__dict__ for o in outcomes]} for r, outcomes in result.rollouts.values()
        ],
        "scheduled": [{"cluster": c, "rollout": rid, "next_run": when} for c, (rid, when) in result.scheduled.items()],
        "note": None if result.note is None else {"pushed": result.note.pushed, "reason": result.note.reason},
    }


def no_changes(commit: str) -> str:
    """What apply prints when nothing was to be done (also kept in the no-op memo, engine/noop.py)."""
    return f"Commit {commit[:12]}: no changes, nothing was touched."


def print_apply(console: Console, result: ApplyReport) -> None:
    from rich.table import Table
    from rich.text import Text

    rep = result.report
    if rep.plan.empty and not rep.unreachable and not result.rollouts:
        console.print(no_changes(rep.commit))
        return
    table = Table(title=f"Hot-deploy outcome for commit {rep.commit[:12]}", title_justify="left")
    for col in ("cluster", "server", "modules", "outcome"):
        table.add_column(col, overflow="fold")  # a long name wraps, it is never cut to "..."
    for c, servers in result.results.items():
        for s, r in servers.items():
            mods = ", ".join(f"{m} {v}" for m, v in sorted(r.modules.items()))
            style = "green" if r.ok else "red"
            table.add_row(c, s, mods, Text("confirmed" if r.ok else (r.error or "failed"), style=style))
    for c, reasons in result.refused.items():
        table.add_row(c, "-", "-", Text("refused: " + "; ".join(reasons), style="red"))
    for c, s, _ in rep.unreachable:
        table.add_row(c, s, "-", Text("not observed; cluster not touched", style="red"))
    if table.row_count:
        console.print(table)
    print_unreachable(console, rep)
    for c, servers in result.results.items():
        for s, r in servers.items():
            for m, lines in r.lines.items():
                console.print(Text(f"{c}/{s}: {m} {r.modules.get(m)}; what it logged:", style="red"))
                for line in lines or ["(nothing since the deploy started)"]:
                    console.print(Text(f"    {line}"), soft_wrap=True)
    for rollout, outcomes in result.rollouts.values():
        print_rollout_outcome(console, rollout, outcomes)
    for c, (rid, when) in result.scheduled.items():
        console.print(f"cluster {c}: rolling restart {rid} is scheduled for its window, next {when} "
                      f"(`zato-gitops rollouts` lists it; `rollouts resume {rid}` runs it now)")
    if result.note is not None and not result.note.pushed:
        console.print(Text(f"note kept in the state dir, not pushed: {result.note.reason}", style="yellow"))


def print_history(console: Console, entries: Sequence[HistoryEntry]) -> None:
    """One row per run, cluster, action and module, with each server's outcome."""
    from rich.table import Table
    from rich.text import Text

    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for e in entries:
        r = e.typed
        module = r.module or (f"rollout {r.rollout}" if r.rollout else None) or (
            f"back to {str(r.extra['to'])[:8]} from {str(r.extra.get('from', ''))[:8]}" if r.extra.get("to") else "-")
        key = (r.run, r.cluster or "-", str(r.extra.get("action", r.action)), module)
        row = rows.setdefault(key, {"at": r.at, "commit": e.commit, "summary": e.summary,
                                    "servers": [], "outcomes": set()})
        row["outcomes"].add(r.outcome)
        if r.server:
            row["servers"].append(f"{r.server} {r.outcome}" if not r.ok else r.server)
    # 80 columns: the short columns never wrap (the commit is never dropped), module and servers fold; the
    # commit's summary gets its own column only on a wide page
    wide = console.width >= 120
    table = Table(title="Deploy history, newest first (git notes refs/notes/zato-gitops)", title_justify="left",
                  box=None, padding=(0, 1), pad_edge=False)
    cols = ["when (UTC)", "commit", *(["summary"] if wide else []), "cluster", "action", "module", "outcome",
            "servers"]
    for col in cols:
        table.add_column(col, no_wrap=col in ("when (UTC)", "commit", "outcome"),
                         overflow="fold", min_width=8 if col == "commit" else None)
    for (_, cluster, action, module), row in rows.items():
        outcomes = row["outcomes"]
        bad = outcomes - GOOD
        outcome = "ok" if not bad else next(iter(bad)) if len(bad) == 1 else "failed"
        table.add_row(
            row["at"][:16].replace("T", " "),
            row["commit"][:8],
            *([row["summary"][:40]] if wide else []),
            cluster,
            action,
            module,
            Text(outcome, style="green" if outcome == "ok" else "yellow" if outcome in NEUTRAL else "red"),
            ", ".join(sorted(row["servers"])) or "-",
        )
    console.print(table)


def print_rollout_outcome(console: Console, rollout: Rollout, outcomes: Sequence[Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    style = {"finished": "green", "halted": "red"}.get(rollout.status, "yellow")
    console.print(Text(f"Rolling restart {rollout.id} of cluster {rollout.cluster} at {rollout.commit[:12]}: "
                       f"{rollout.status}", style=style))
    table = Table()
    for col in ("server", "outcome", "took", "files"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        ok = o.outcome in ("ready", "unchanged")
        table.add_row(o.server, Text(o.outcome, style="green" if ok else "red"),
                      f"{o.duration:.1f} s" if o.duration else "-", str(len(o.files)))
    console.print(table)
    if rollout.message:
        console.print(Text(f"  {rollout.message}", style=style))
    for o in outcomes:
        if o.outcome not in ("ready", "unchanged", "interrupted"):
            console.print(Text(f"{rollout.cluster}/{o.server}: {o.error}", style="red"))
            for line in o.lines[-10:]:
                console.print(Text(f"    {line}"), soft_wrap=True)


def print_rollouts(console: Console, rollouts: Sequence[Rollout]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Rollouts (newest first)", title_justify="left", box=None, padding=(0, 1), pad_edge=False)
    for col in ("id", "cluster", "commit", "status", "progress", "window", "updated", "message"):
        table.add_column(col, no_wrap=col in ("id", "commit", "status"), overflow="fold")
    for r in rollouts:
        style = {"finished": "green", "halted": "red", "running": "yellow", "interrupted": "yellow",
                 "pending": "cyan"}.get(r.status, "")
        steps = ", ".join(f"{s.server}:{s.step}" for s in r.servers)
        table.add_row(r.id, r.cluster, r.commit[:8], Text(r.status, style=style),
                      f"{r.done_count}/{len(r.servers)} ({steps})", r.window or "-", r.updated[:16].replace("T", " "),
                      r.message)
    console.print(table)
