"""The plan as Markdown for a pull request comment: a summary line, a table per cluster, what cannot go out.

GitHub, GitLab and Gitea all render the same subset (tables, code spans, `<br>` in cells, HTML comments hidden),
so one renderer serves the three. It takes plain data (the release view, who could not be observed, the problems
of a refused commit), so it is tested against golden output without a server or a repository.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from reconciler.core.release import ClusterRelease, Release
from reconciler.githost.client import MARKER


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text.replace('`', '')}`"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def summary(release: Release) -> str:
    modules = [m for c in release.clusters for m in c.modules]
    if not modules and not any(c.restarts for c in release.clusters):
        return "No changes: every server runs what this commit says."
    services = {(c.cluster, n) for c in release.clusters for m in c.modules for n in (*m.added, *m.changed,
                                                                                       *m.removed)}
    servers = {(c.cluster, s) for c in release.clusters for m in c.modules for s in m.servers}
    restarts = sum(len(c.restarts) for c in release.clusters)
    touched = sum(1 for c in release.clusters if not c.empty)
    verb = "changes" if len(modules) == 1 else "change"
    parts = [f"{_plural(len(modules), 'module')} {verb} {_plural(len(services), 'service')} on "
             f"{_plural(len(servers), 'server')}" if modules else ""]
    if restarts:
        parts.append(f"{_plural(restarts, 'server')} restart{'s' if restarts == 1 else ''} for static changes")
    return "; ".join(p for p in parts if p) + f" ({_plural(touched, 'cluster')})."


def _services(added: Sequence[str], changed: Sequence[str], removed: Sequence[str]) -> str:
    lines = [f"+ {_code(n)}" for n in added] + [f"~ {_code(n)}" for n in changed] + [f"− {_code(n)}" for n in removed]
    return "<br>".join(lines) or "no services"  # a module of helpers, or one that does not compile


def _cluster(c: ClusterRelease, zato_version: str | None) -> list[str]:
    head = f"#### Cluster {_code(c.cluster)}" + (f" (Zato {zato_version})" if zato_version else "")
    out = [head, ""]
    if c.empty:
        out.append("Up to date.")
    if c.modules:
        out += ["| module | change | services | servers |", "| --- | --- | --- | --- |"]
        for m in c.modules:
            services = _services(m.added, m.changed, m.removed)
            if m.unknown_before:
                services += f"<br>(what {', '.join(m.unknown_before)} run now is not in git)"
            out.append(f"| {_code(m.repo_path)} | {m.change} | {_cell(services)} | {_cell(', '.join(m.servers))} |")
    if c.restarts:
        out += ["", "Rolling restart for static changes, one server at a time:", "",
                "| server | files installed | services loaded at start |", "| --- | ---: | --- |"]
        out += [f"| {_cell(r.server)} | {r.files} | {_cell(_services(r.added, r.changed, r.removed))} |"
                for r in c.restarts]
    for b in c.blocked:
        out += ["", f"> **Blocked:** {_cell(b)}"]
    if c.left_git:
        out += ["", "Modules deployed on servers that this commit no longer has (zato-gitops does not undeploy "
                "them):", ""]
        for g in c.left_git:
            services = f" ({', '.join(_code(s) for s in g.services)})" if g.services else ""
            out.append(f"- {_code(g.module)} on {', '.join(g.servers)}: no longer in git; still deployed{services}")
    return [*out, ""]


def render(
    release: Release | None, *, ref: str, commit: str, zato_versions: Mapping[str, str] | None = None,
    unreachable: Sequence[tuple[str, str, str]] = (), problems: Sequence[str] = (), warnings: Sequence[str] = (),
) -> str:
    """The comment body. `release` is None when the commit is refused (`problems` then says why, file:line)."""
    out = [MARKER, f"### zato-gitops plan for {_code(ref)} (commit {_code(commit[:12])})", ""]
    if release is None:
        out += ["**This commit would be refused: no server would be touched.**", ""]
        out += [f"- {_code(p)}" for p in problems] + [""]
        return "\n".join(out)
    line = summary(release)
    if unreachable:
        line += f" {_plural(len(unreachable), 'server')} could not be observed: the plan is incomplete."
    out += [f"**{line}**", ""]
    for w in warnings:
        out += [f"> warning: {_cell(w)}", ""]
    for cluster, server, message in unreachable:
        out += [f"> **Not observed:** {_code(cluster + '/' + server)}: {_cell(message)}", ""]
    for c in release.clusters:
        out += _cluster(c, (zato_versions or {}).get(c.cluster))
    return "\n".join(out).rstrip("\n") + "\n"
