"""Turn plans, apply results and history into tables for people and JSON for scripts.

Kept apart from the CLI so the daemon's status page and the CLI print the same words, and so the JSON shapes
are defined once (docs/cli.md documents them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.engine import ApplyReport, PlanReport


def short(sha: str | None, n: int = 8) -> str:
    return sha[:n] if sha else "-"


def plan_dict(report: PlanReport) -> dict[str, Any]:
    data = report.plan.to_dict()
    data["unreachable"] = [{"cluster": c, "server": s, "error": e.message} for c, s, e in report.unreachable]
    data["changes_pending"] = not report.plan.empty
    return data


def print_plan(console: Console, report: PlanReport) -> None:
    p = report.plan
    console.print(Text(f"Plan for commit {p.commit[:12]}", style="bold"))
    for w in p.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    for c, s, e in report.unreachable:
        console.print(Text(f"{c}/{s}: not observed: {e.message}", style="red"))
    for cp in p.clusters:
        spec = report.desired.cluster(cp.cluster).spec
        head = f"cluster {cp.cluster} (Zato {cp.zato_version}, {len(spec.servers)} servers)"
        if cp.empty:
            console.print(f"{head}: up to date")
            continue
        table = Table(title=head, title_justify="left", show_lines=False)
        for col in ("module", "change", "differs on", "sha256 (server -> repo)", "dropped into", "confirmed by"):
            table.add_column(col)
        for h in cp.hot_deploys:
            olds = sorted({short(d.old_sha256) for d in h.diffs})
            table.add_row(
                h.repo_path,
                h.reason,
                ", ".join(d.server for d in h.diffs),
                f"{'/'.join(olds)} -> {short(h.sha256)}",
                ", ".join(h.drop_on),
                ", ".join(h.confirm_on),
            )
        console.print(table)
        for b in cp.blocked:
            console.print(Text(f"  blocked: {b}", style="red"))
    if p.empty and report.complete:
        console.print("No changes: every server runs what the commit says.")


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
        "note": None if result.note is None else {"pushed": result.note.pushed, "reason": result.note.reason},
    }


def print_apply(console: Console, result: ApplyReport) -> None:
    rep = result.report
    if rep.plan.empty and not rep.unreachable:
        console.print(f"Commit {rep.commit[:12]}: no changes, nothing was touched.")
        return
    table = Table(title=f"Outcome for commit {rep.commit[:12]}", title_justify="left")
    for col in ("cluster", "server", "modules", "outcome"):
        table.add_column(col)
    for c, servers in result.results.items():
        for s, r in servers.items():
            mods = ", ".join(f"{m} {v}" for m, v in sorted(r.modules.items()))
            style = "green" if r.ok else "red"
            table.add_row(c, s, mods, Text("confirmed" if r.ok else (r.error or "failed"), style=style))
    for c, reasons in result.refused.items():
        table.add_row(c, "-", "-", Text("refused: " + "; ".join(reasons), style="red"))
    for c, s, e in rep.unreachable:
        table.add_row(c, s, "-", Text(f"not observed: {e.message}", style="red"))
    console.print(table)
    for c, servers in result.results.items():
        for s, r in servers.items():
            for m, lines in r.lines.items():
                console.print(Text(f"{c}/{s}: {m} {r.modules.get(m)}; what it logged:", style="red"))
                for line in lines or ["(nothing since the deploy started)"]:
                    console.print(Text(f"    {line}"))
    if result.note is not None and not result.note.pushed:
        console.print(Text(f"note kept in the state dir, not pushed: {result.note.reason}", style="yellow"))


def print_history(console: Console, entries: Sequence[Any]) -> None:
    table = Table(title="Deploy history (newest first)", title_justify="left")
    for col in ("when", "commit", "cluster", "server", "action", "module", "outcome"):
        table.add_column(col)
    for e in entries:
        r = e.record
        outcome = str(r.get("outcome", ""))
        style = "green" if outcome in ("confirmed", "ok", "ready") else "red" if outcome else ""
        table.add_row(
            str(r.get("at", "")),
            f"{e.commit[:8]} {e.summary[:40]}",
            str(r.get("cluster", "-")),
            str(r.get("server", "-")),
            str(r.get("action", "")),
            str(r.get("module", "-")),
            Text(outcome, style=style),
        )
    console.print(table)
