"""The plan as a release reviewer reads it: which Zato services each changed module adds, changes and removes,
which servers each change reaches, which restarts a static change causes, and which modules left git.

Pure, like the planner it reads: the plan says "drop `crm.py` on server1, confirm on all three"; this view says
"`crm.py` adds `crm.get-customer` and changes `crm.update-customer`, on server1, server2, server3". Service names
come from `zato/naming.py` (parsed, never imported). The services a server runs today are read from the bytes of
its copy, which the caller looks up in git by the copy's sha256 (`old_sources`); a copy that is not in git (put
there by hand) is reported as such, with its services unknown.

Modules that left git are modules a server has deployed (in `work/hot-deploy/current`, or the 4.1 pickup dir) that
the commit no longer names. zato-gitops does not undeploy them: Zato has no undeploy through files (deleting from
the pickup dir does nothing), and on 3.2 a module deleted from `current/` comes back from the cluster's database at
the next start. So the plan and status name them, and the docs say how to remove a service for good.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from reconciler.core.plan import ClusterPlan, Plan, Restart
from reconciler.core.state import Desired, DesiredCluster, ObservedCluster
from reconciler.zato.naming import ServiceDef, display_name, services_in


@dataclass(frozen=True)
class ModuleRelease:
    """One module the plan deploys, in Zato's words."""

    module: str  # file name in the pickup dir
    repo_path: str
    change: Literal["added", "changed"]
    servers: tuple[str, ...]  # servers whose copy differs: where the change lands
    added: tuple[str, ...] = ()  # service names
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    #: servers whose current copy is not in git, so what they run now is not known
    unknown_before: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeftGit:
    """A module deployed on servers that the commit no longer has."""

    module: str
    servers: tuple[str, ...]
    services: tuple[str, ...] = ()  # when its bytes are known from git

    def describe(self) -> str:
        return f"{self.module} on {', '.join(self.servers)}: no longer in git; still deployed"


@dataclass(frozen=True)
class RestartRelease:
    server: str
    files: int  # files the restart installs on this server (its own and its host's extra paths)
    #: services of the service_sources modules this restart installs (Zato loads them at start)
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterRelease:
    cluster: str
    modules: tuple[ModuleRelease, ...]
    restarts: tuple[RestartRelease, ...]
    left_git: tuple[LeftGit, ...]
    blocked: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.modules and not self.restarts


@dataclass(frozen=True)
class Release:
    commit: str
    clusters: tuple[ClusterRelease, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def left_git(self) -> int:
        return sum(len(c.left_git) for c in self.clusters)


def _services(data: bytes | None, file_name: str) -> dict[str, ServiceDef] | None:
    if data is None:
        return None
    try:
        return {display_name(s, file_name): s for s in services_in(data, file_name)}
    except (SyntaxError, ValueError):
        return None


def _diff(before: Mapping[str, ServiceDef], after: Mapping[str, ServiceDef]
          ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, changed, removed, unchanged) service names; a service changed when its class's code differs."""
    both = sorted(n for n in after if n in before)
    return (tuple(sorted(n for n in after if n not in before)),
            tuple(n for n in both if before[n].fingerprint != after[n].fingerprint),
            tuple(sorted(n for n in before if n not in after)),
            tuple(n for n in both if before[n].fingerprint == after[n].fingerprint))


def restart_release(dc: DesiredCluster, restart: Restart, old_sources: Mapping[str, bytes]) -> RestartRelease:
    """A server's restart with the services of the service_sources modules it installs, added, changed, removed.

    Zato imports a service-sources file under its file name, as a hot-deployed one, so the names follow the
    same rules."""
    new_bytes = {f.repo_path: f.data for t in dc.sources for f in t.files.values()}
    added: set[str] = set()
    changed: set[str] = set()
    removed: set[str] = set()
    for ch in restart.changes:
        if ch.kind != "source" or not ch.path.endswith(".py"):
            continue
        name = ch.path.rsplit("/", 1)[-1]
        new = new_bytes.get(ch.repo_path or "") if ch.new_sha256 else None
        after = _services(new, name) or {}
        before = (_services(old_sources.get(ch.old_sha256), name) or {}) if ch.old_sha256 else {}
        a, c, r, _ = _diff(before, after)
        if ch.old_sha256 and ch.old_sha256 not in old_sources:  # the old copy is unknown: count what is there
            a, c = (), tuple(after)
        added.update(a)
        changed.update(c)
        removed.update(r)
    return RestartRelease(restart.server, len(restart.changes) + len(restart.shared), tuple(sorted(added)),
                          tuple(sorted(changed)), tuple(sorted(removed)))


def module_release(
    module: str, repo_path: str, new: bytes, diffs: list[tuple[str, str | None]],
    old_sources: Mapping[str, bytes],
) -> ModuleRelease:
    """`diffs`: (server, sha256 of its copy or None) for every server whose copy differs from `new`."""
    after = _services(new, module) or {}
    before: dict[str, ServiceDef] = {}
    unknown: list[str] = []
    for server, old_sha in diffs:
        if old_sha is None:
            continue
        found = _services(old_sources.get(old_sha), module)
        if found is None:
            unknown.append(server)
        else:
            before |= found
    change: Literal["added", "changed"] = "changed" if any(sha for _, sha in diffs) else "added"
    added, changed, removed, unchanged = _diff(before, after)
    if unknown and not before:  # nothing is known of the old copies: every service counts as changed or new
        added, changed, unchanged = (), tuple(sorted(after)), ()
    return ModuleRelease(module, repo_path, change, tuple(s for s, _ in diffs), added, changed, removed, unchanged,
                         tuple(unknown))


def left_git(desired_modules: Mapping[str, object], observed: ObservedCluster,
             old_sources: Mapping[str, bytes]) -> tuple[LeftGit, ...]:
    """Modules deployed on any server of the cluster that the commit does not name."""
    where: dict[str, list[str]] = {}
    shas: dict[str, str] = {}
    for s in observed.servers:
        for module, sha in s.deployed.items():
            if module not in desired_modules:
                where.setdefault(module, []).append(s.name)
                shas.setdefault(module, sha)
    out = []
    for module in sorted(where):
        found = _services(old_sources.get(shas[module]), module)
        out.append(LeftGit(module, tuple(where[module]), tuple(sorted(found or ()))))
    return tuple(out)


def cluster_release(
    cp: ClusterPlan, desired: Desired, observed: ObservedCluster, old_sources: Mapping[str, bytes]
) -> ClusterRelease:
    dc = desired.cluster(cp.cluster)
    modules = tuple(
        module_release(h.module, h.repo_path, dc.modules[h.module].data,
                       [(d.server, d.old_sha256) for d in h.diffs], old_sources)
        for h in cp.hot_deploys
    )
    restarts = tuple(restart_release(dc, r, old_sources) for r in cp.restarts)
    return ClusterRelease(cp.cluster, modules, restarts, left_git(dc.modules, observed, old_sources),
                          cp.blocked + cp.restart_blocked)


def release(plan: Plan, desired: Desired, observed: Mapping[str, ObservedCluster],
            old_sources: Mapping[str, bytes]) -> Release:
    return Release(plan.commit, tuple(
        cluster_release(cp, desired, observed[cp.cluster], old_sources) for cp in plan.clusters
        if cp.cluster in observed
    ))


def wanted_shas(plan: Plan, desired: Desired, observed: Mapping[str, ObservedCluster]) -> set[str]:
    """The sha256 of every server copy whose bytes the release view would like to read from git."""
    out = {d.old_sha256 for cp in plan.clusters for h in cp.hot_deploys for d in h.diffs if d.old_sha256}
    out |= {ch.old_sha256 for cp in plan.clusters for r in cp.restarts for ch in r.changes
            if ch.kind == "source" and ch.old_sha256}
    for c in desired.clusters:
        obs = observed.get(c.name)
        for s in obs.servers if obs else ():
            out |= {sha for m, sha in s.deployed.items() if m not in c.modules}
    return out
