"""The plan: what apply would do, computed from desired and observed state with no I/O at all.

Like kopf's change detection and pyinfra's prepare step, `plan()` is a pure function: the same inputs give the
same `Plan`, which `plan` prints and `apply` executes, so what a user reviewed is what runs. Golden tests in
tests/unit/golden/ pin its behaviour, including the no-change case that must give an empty plan.

Static rules (what Zato reads only at start: service_sources trees, service-sources.txt, extra_paths):
- each server's trees are compared file by file (added, changed, removed), and its service-sources.txt is
  compared with what it would be with the reconciler's block set; any difference means "restart required";
- extra_paths live in the install, shared by every server of one host: each of those servers is restarted, and
  the plan names the one server per host that writes the files (the first of that host in manifest order); the
  others restart because of them without writing them;
- a rolling restart needs every server of the cluster running, or it would have two down at once.

Each `Restart` is the whole of what apply does to that server (prepare, then execute, as pyinfra splits them):
the files it writes with their old and new sha256, the new service-sources.txt, the shared files it writes or only
restarts for, why it restarts, and the paths apply needs to stop and start it. `apply` persists these objects in
the rollout store and carries them out at each server's turn; it never plans again there.

Hot-deploy rules (facts in docs/zato-facts.md):
- a module is deployed when its sha256 differs from what any server of the cluster runs (added or changed);
- on 2.0 to 3.3 one drop into one running server's pickup dir fans out to the cluster, so the module is dropped
  once and every server must confirm it; on 4.1 each differing server gets its own copy and confirms it;
- a cluster with a server that is not running cannot confirm a hot-deploy: the plan says so and apply refuses it.

Notes (said, never acted on) keep the plan truthful about what the servers will do on their own:
- on 2.0 to 3.3 the cluster's ODB remembers every hot-deployed module: one missing from a server's
  work/hot-deploy/current comes back at that server's next start, so deleting it there undeploys nothing;
- the server process's environment may override server.conf's pickup dir (observe reads /proc/<pid>/environ
  and deploys to the folder the server really watches), and extra user pickup folders import code in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from reconciler.core.state import Desired, DesiredCluster, ObservedCluster, ObservedServer, StaticTree
from reconciler.zato import sources as service_sources

Reason = Literal["added", "changed"]
Change = Literal["added", "changed", "removed"]


@dataclass(frozen=True)
class FileChange:
    """One file a restart installs: in a service_sources tree, an extra_paths tree, or service-sources.txt."""

    kind: Literal["source", "extra", "service-sources"]
    path: str  # absolute, on the server
    change: Change
    old_sha256: str | None
    new_sha256: str | None
    repo_path: str | None = None


@dataclass(frozen=True)
class Restart:
    """A server that must be restarted to install static changes: the operations apply carries out for it."""

    server: str
    host: str  # servers with the same host share the install's zato_extra_paths
    changes: tuple[FileChange, ...]  # the server's own: service_sources trees and service-sources.txt
    shared: tuple[FileChange, ...]  # extra_paths of its host's install: a reason to restart, written once per host
    sources_text: str | None = None  # the new service-sources.txt, when it changes
    #: whether this server writes its host's shared files (the first server of the host with shared changes)
    writes_shared: bool = True
    #: why the server restarts, one sentence per reason (what `plan` prints and the rollout store keeps)
    why: tuple[str, ...] = ()
    #: where apply finds the server (resolved from its server.conf when planned)
    server_dir: str = ""
    work_dir: str = ""
    log: str = ""
    port: int = 17010

    @property
    def writes(self) -> tuple[FileChange, ...]:
        """Every file this server's turn writes, in order: its own, then the shared ones it is the writer of."""
        return (*self.changes, *(self.shared if self.writes_shared else ()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-native: the same shape `plan --json` prints for it."""
        data: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Restart:
        """The inverse of `to_dict` (the rollout store keeps restarts as JSON)."""
        values = dict(data)
        for key in ("changes", "shared"):
            values[key] = tuple(FileChange(**c) for c in values.get(key, ()))
        values["why"] = tuple(values.get("why", ()))
        return cls(**values)


@dataclass(frozen=True)
class ServerDiff:
    server: str
    reason: Reason
    old_sha256: str | None


@dataclass(frozen=True)
class HotDeploy:
    """One module to drop into pickup dirs, and the servers that must confirm it."""

    module: str
    repo_path: str
    sha256: str
    blob: str
    diffs: tuple[ServerDiff, ...]  # servers whose copy differs, and why
    drop_on: tuple[str, ...]  # servers whose pickup dir receives the file
    confirm_on: tuple[str, ...]  # servers whose log must confirm it

    @property
    def reason(self) -> Reason:
        return "changed" if any(d.reason == "changed" for d in self.diffs) else "added"


@dataclass(frozen=True)
class ClusterPlan:
    cluster: str
    zato_version: str
    hot_deploys: tuple[HotDeploy, ...] = ()
    #: reasons the cluster cannot be applied as planned (apply refuses the cluster and says these)
    blocked: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    restarts: tuple[Restart, ...] = ()
    #: reasons the rolling restart cannot start (the hot-deploys may still go out)
    restart_blocked: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.hot_deploys and not self.restarts

    def servers_touched(self) -> set[str]:
        return {s for h in self.hot_deploys for s in h.drop_on}


@dataclass(frozen=True)
class Plan:
    commit: str
    clusters: tuple[ClusterPlan, ...]
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return all(c.empty for c in self.clusters)

    def cluster(self, name: str) -> ClusterPlan:
        for c in self.clusters:
            if c.cluster == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["changes_pending"] = not self.empty
        for c, cp in zip(data["clusters"], self.clusters, strict=True):
            for h, hp in zip(c["hot_deploys"], cp.hot_deploys, strict=True):
                h["reason"] = hp.reason
        # JSON-native (tuples become lists), so --json output and golden files compare directly
        result: dict[str, Any] = json.loads(json.dumps(data))
        return result


def plan_cluster(desired: DesiredCluster, observed: ObservedCluster) -> ClusterPlan:
    prof = desired.profile
    servers = [observed.server(s.name) for s in desired.spec.servers]
    running = [s.name for s in servers if s.running]
    hot: list[HotDeploy] = []
    for module in desired.modules.values():
        diffs = tuple(
            ServerDiff(s.name, "changed" if s.deployed.get(module.name) else "added", s.deployed.get(module.name))
            for s in servers
            if s.deployed.get(module.name) != module.sha256
        )
        # where the deployed copy lives apart from the pickup dir (work/hot-deploy/current), a truncated or
        # foreign copy of the module left in the pickup dir is drift too: it is what Zato reads next time
        wrong_pickup = tuple(
            s.name for s in servers
            if s.paths.deployed_dir != s.paths.pickup_dir and s.pickup.get(module.name, module.sha256) != module.sha256
        )
        diffs += tuple(
            ServerDiff(n, "changed", observed.server(n).pickup[module.name])
            for n in wrong_pickup if n not in {d.server for d in diffs}
        )
        if not diffs:
            continue
        if prof.fan_out:
            # one drop fans out to every server of the cluster, and every server redeploys it: all confirm
            differing = {d.server for d in diffs}
            first = next((n for n in running if n in differing), running[0] if running else servers[0].name)
            drop_on: tuple[str, ...] = (first, *(n for n in wrong_pickup if n != first))
            confirm_on = tuple(s.name for s in servers)
        else:
            drop_on = tuple(d.server for d in diffs)
            confirm_on = drop_on
        hot.append(HotDeploy(module.name, module.repo_path, module.sha256, module.blob, diffs, drop_on, confirm_on))
    blocked: list[str] = []
    if hot:
        needed = {s for h in hot for s in h.confirm_on}
        for s in servers:
            if s.name in needed and not s.running:
                blocked.append(
                    f"{s.name} is not running, so it cannot confirm a hot-deploy; start it "
                    f"(zato start {s.paths.server_dir}) and run again"
                )
    restarts = shared_writers(tuple(r for s in servers if (r := restart_for(desired, s)) is not None))
    restart_blocked = tuple(
        f"{s.name} is not running; a rolling restart now would have it and another server down at once. "
        f"Start it (zato start {s.paths.server_dir}) and run again"
        for s in servers
        if restarts and not s.running
    )
    notes = tuple(
        f"{s.name}: its .zato-info says Zato {s.zato_version}, the manifest says {desired.spec.zato_version}; "
        "the manifest's profile is used (log lines, fan-out), so correct zato_version if the server is right"
        for s in servers
        if s.zato_version and profile_of(s.zato_version) not in (None, desired.spec.zato_version)
    ) + _server_notes(desired, servers)
    return ClusterPlan(
        desired.name, desired.spec.zato_version, tuple(hot), tuple(blocked), notes, restarts, restart_blocked
    )


def _server_notes(desired: DesiredCluster, servers: list[ObservedServer]) -> tuple[str, ...]:
    """What the servers do on their own that the plan cannot change: ODB resurrection, environment overrides,
    user pickup folders."""
    notes: list[str] = []
    for s in servers:
        if "hot_deploy.pickup_dir" in s.overrides:
            notes.append(
                f"{s.name}: the server's environment overrides server.conf's pickup_dir "
                f"(Zato_Config_Server_server__conf_hot_deploy_pickup_dir); modules go to {s.paths.pickup_dir}, "
                "the folder it really watches"
            )
        elif s.overrides:
            notes.append(f"{s.name}: the server's environment overrides server.conf's {', '.join(s.overrides)}")
        if s.extra_pickup:
            notes.append(
                f"{s.name}: also imports modules in place from {', '.join(s.extra_pickup)} (Zato_Hot_Deploy_Dir or "
                "pickup.conf); zato-gitops deploys to the pickup dir only, so a module of the same name there wins "
                "or loses by whichever the server reads last"
            )
        if s.running and s.environ == "unreadable":
            notes.append(
                f"{s.name}: its process's environment cannot be read (another user's), so a Zato_Config_Server_... "
                "override of the pickup dir would not be seen: server.conf's is used"
            )
    shared: dict[tuple[str, str], list[str]] = {}
    for s in servers:
        if s.ipc_port_start:
            shared.setdefault((host_key(desired, s.name), s.ipc_port_start), []).append(s.name)
    for (_, port), names in shared.items():
        if len(names) > 1:
            notes.append(
                f"{', '.join(names)}: one host, one ipc_port_start ({port}) in server.conf, as a quickstart leaves "
                "them; a module dropped into the server that started second fails there with `Credentials error` "
                "and is never confirmed. Give each server its own ipc_port_start"
            )
    if desired.profile.fan_out:
        everywhere = {m for s in servers for m in s.deployed}
        for s in servers:
            gone = sorted(m for m in everywhere - set(s.deployed) if m not in desired.modules)
            if gone:
                notes.append(
                    f"{s.name}: {', '.join(gone)} deployed on other servers but missing from its "
                    f"{s.paths.deployed_dir}; if hot-deployed, the cluster's ODB deploys it there again at its next "
                    "start (deleting a module from current/ undeploys nothing)"
                )
    return tuple(notes)


def profile_of(version: str) -> str | None:
    """The profile a version string from .zato-info belongs to (3.1 behaves as 3.0, every 4.x as 4.1)."""
    major, _, rest = version.partition(".")
    minor = rest.split(".")[0]
    return {("2", "0"): "2.0", ("3", "0"): "3.0", ("3", "1"): "3.0", ("3", "2"): "3.2", ("3", "3"): "3.3"}.get(
        (major, minor), "4.1" if major == "4" else None
    )


def host_key(desired: DesiredCluster, server: str) -> str:
    """Servers whose files live on the same machine: same SSH host and port (every server, for `local`)."""
    if desired.spec.transport == "local":
        return "local"
    s = next(x for x in desired.spec.servers if x.name == server)
    return f"{s.host}:{s.port}"


def tree_changes(tree: StaticTree, server_dir: str, observed: dict[str, str] | None) -> list[FileChange]:
    base = tree.path_on(server_dir)
    have = observed or {}
    out: list[FileChange] = []
    for rel, f in tree.files.items():
        path = f"{base}/{rel}" if rel else base
        old = have.get(rel)
        if old != f.sha256:
            out.append(FileChange(tree.kind, path, "changed" if old else "added", old, f.sha256, f.repo_path))
    for rel, old in have.items():
        if rel not in tree.files:
            out.append(FileChange(tree.kind, f"{base}/{rel}" if rel else base, "removed", old, None))
    return out


def restart_for(desired: DesiredCluster, obs: ObservedServer) -> Restart | None:
    """The static changes one server needs, or None (as if it were the only server of its host: `plan_cluster`
    then names one writer of the shared files per host)."""
    server_dir = obs.paths.server_dir
    own: list[FileChange] = []
    for tree in desired.sources:
        own += tree_changes(tree, server_dir, dict(obs.static.get(tree.path_on(server_dir), {})))
    new_text: str | None = None
    if desired.profile.service_sources and (
        desired.source_lines or service_sources.block_lines(obs.sources_text)
    ):
        rendered = service_sources.render(obs.sources_text, desired.source_lines)
        if rendered != obs.sources_text:
            new_text = rendered
            own.append(FileChange(
                "service-sources", obs.paths.service_sources, "changed" if obs.sources_text is not None else "added",
                _sha(obs.sources_text), _sha(rendered)))
    shared: list[FileChange] = []
    for tree in desired.extras:
        shared += tree_changes(tree, server_dir, dict(obs.static.get(tree.path_on(server_dir), {})))
    if not own and not shared:
        return None
    host = host_key(desired, obs.name)
    return Restart(obs.name, host, tuple(own), tuple(shared), new_text, True, _why(own, shared, host),
                   server_dir, obs.paths.work_dir, obs.paths.log, port_of(obs.paths.bind))


def port_of(bind: str) -> int:
    """The port of a server.conf `bind` (host:port); Zato's default 17010 when it cannot be read."""
    try:
        return int(bind.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 17010


def shared_writers(restarts: tuple[Restart, ...]) -> tuple[Restart, ...]:
    """Name one writer of each host's shared files (the first server of the host, in manifest order); the other
    servers of that host still restart, since their install changes under them, but write nothing shared."""
    seen: dict[str, str] = {}
    out: list[Restart] = []
    for r in restarts:
        if not r.shared:
            out.append(r)
            continue
        writer = seen.setdefault(r.host, r.server)
        mine = writer == r.server
        why = r.why if mine else (*r.why[:-1], f"extra_paths of its host ({r.host}) change: "
                                               f"{len(r.shared)} file{'s' if len(r.shared) != 1 else ''}, "
                                               f"written by {writer}")
        out.append(replace(r, writes_shared=mine, why=why))
    return tuple(out)


def _why(own: list[FileChange], shared: list[FileChange], host: str) -> tuple[str, ...]:
    out: list[str] = []
    sources = [c for c in own if c.kind == "source"]
    if sources:
        out.append(f"service_sources change: {len(sources)} file{'s' if len(sources) != 1 else ''}")
    if any(c.kind == "service-sources" for c in own):
        out.append("service-sources.txt changes")
    if shared:
        out.append(f"extra_paths of its host ({host}) change: {len(shared)} file{'s' if len(shared) != 1 else ''}")
    return tuple(out)


def _sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def plan(desired: Desired, observed: dict[str, ObservedCluster]) -> Plan:
    """The plan for every cluster that was observed (clusters that could not be observed are left out)."""
    clusters = tuple(plan_cluster(c, observed[c.name]) for c in desired.clusters if c.name in observed)
    return Plan(desired.commit, clusters, desired.warnings)
