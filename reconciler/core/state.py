"""Desired and observed state as plain, frozen data.

The planner compares these two and nothing else, so it imports this module and the manifest model only: never
the code that reads git or talks to servers. `Desired` is built from one commit (manifest + module blobs);
`ObservedServer` from one observe round trip to one server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from reconciler.manifest.model import Cluster, Manifest, Server
from reconciler.zato.profiles import Profile, profile


@dataclass(frozen=True)
class Module:
    """A flat service module to hot-deploy, read from the commit."""

    name: str  # file name in the pickup dir, e.g. "crm.py" (the pickup dir is flat)
    repo_path: str  # path in the repository, e.g. "services/crm.py"
    sha256: str
    blob: str  # git blob id, recorded in the deploy notes
    #: the bytes, or how to read them: a no-op reconcile never reads a module it does not install
    content: bytes | Callable[[], bytes] = field(repr=False, compare=False)

    @property
    def data(self) -> bytes:
        c = self.content
        return c if isinstance(c, bytes) else c()


@dataclass(frozen=True)
class StaticFile:
    """One file of a static tree, read from the commit."""

    rel: str  # path inside the tree ("a.py", "pkg/__init__.py"); "" when the tree is a single file
    repo_path: str
    sha256: str
    data: bytes = field(repr=False, compare=False)


TreeMode = Literal["flat", "file", "tree"]


@dataclass(frozen=True)
class StaticTree:
    """Files the reconciler keeps equal on every server, installed only by a restart.

    `source`: a service_sources directory (its top-level *.py, the way Zato imports a directory) or .py file;
    `extra`: an extra_paths package (every file, recursively) or module, in the install's zato_extra_paths."""

    kind: Literal["source", "extra"]
    repo_path: str
    target: str  # relative to the server dir or absolute (source); absolute in extra_paths_dir (extra)
    mode: TreeMode  # flat: top-level *.py of a dir; file: one file; tree: every file below a dir
    files: Mapping[str, StaticFile]

    def path_on(self, server_dir: str) -> str:
        """The absolute path of this tree on a server."""
        return self.target if self.target.startswith("/") else f"{server_dir}/{self.target}"


@dataclass(frozen=True)
class DesiredCluster:
    spec: Cluster
    modules: Mapping[str, Module]  # by file name, in sorted order
    sources: tuple[StaticTree, ...] = ()  # service_sources with a path, in manifest order
    extras: tuple[StaticTree, ...] = ()  # extra_paths, in manifest order
    #: the lines of the reconciler's block in service-sources.txt, in manifest order
    source_lines: tuple[str, ...] = ()

    @property
    def has_static(self) -> bool:
        return bool(self.sources or self.extras or self.source_lines)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def profile(self) -> Profile:
        return profile(self.spec.zato_version)


@dataclass(frozen=True)
class Desired:
    commit: str
    manifest: Manifest
    clusters: tuple[DesiredCluster, ...]
    #: warnings found while building (e.g. `module:` entries on 3.2); shown by validate and plan
    warnings: tuple[str, ...] = ()

    def cluster(self, name: str) -> DesiredCluster:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class ServerPaths:
    """A server's folders, resolved from its server.conf as Zato resolves them."""

    server_dir: str
    pickup_dir: str
    work_dir: str
    deployed_dir: str  # work/hot-deploy/current (2.0 to 3.3) or the pickup dir (4.1)
    log: str  # logs/server.log
    service_sources: str  # config/repo/service-sources.txt (resolved from [main] service_sources)
    bind: str  # host:port of the server's HTTP endpoint


@dataclass(frozen=True)
class LogMark:
    """Where a server's log ended when observed: confirmations are read from here on."""

    path: str
    size: int
    inode: int


@dataclass(frozen=True)
class ObservedServer:
    cluster: str
    server: Server
    paths: ServerPaths
    deployed: Mapping[str, str]  # file name -> sha256 of what the server runs
    pickup: Mapping[str, str]  # file name -> sha256 of what sits in the pickup dir
    log: LogMark
    running: bool  # the pidfile names a live process
    zato_version: str  # from .zato-info
    pid: int | None = None
    #: absolute tree path -> {rel: sha256} for every static tree the manifest names (absent tree: {})
    static: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: service-sources.txt as it is on the server; None when the file is missing
    sources_text: str | None = None
    #: the running server's environment: `read`, `unreadable` (another user's process) or `none` (not running)
    environ: str = "none"
    #: server.conf keys (`hot_deploy.pickup_dir`, ...) the server's environment overrides
    overrides: tuple[str, ...] = ()
    #: folders the server watches besides its pickup dir (Zato_Hot_Deploy_Dir, pickup.conf user sections)
    extra_pickup: tuple[str, ...] = ()
    #: server.conf's ipc_port_start ("" when absent): servers of one host need their own
    ipc_port_start: str = ""

    @property
    def name(self) -> str:
        return self.server.name


@dataclass(frozen=True)
class ObservedCluster:
    name: str
    servers: tuple[ObservedServer, ...]

    def server(self, name: str) -> ObservedServer:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)
