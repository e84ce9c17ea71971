"""Desired and observed state as plain, frozen data.

The planner compares these two and nothing else, so it imports this module and the manifest model only: never
the code that reads git or talks to servers. `Desired` is built from one commit (manifest + module blobs);
`ObservedServer` from one observe round trip to one server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.manifest.model import Cluster, Manifest, Server
from reconciler.zato.profiles import Profile, profile


@dataclass(frozen=True)
class Module:
    """A flat service module to hot-deploy, read from the commit."""

    name: str  # file name in the pickup dir, e.g. "crm.py" (the pickup dir is flat)
    repo_path: str  # path in the repository, e.g. "services/crm.py"
    sha256: str
    blob: str  # git blob id, recorded in the deploy notes
    data: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class DesiredCluster:
    spec: Cluster
    modules: Mapping[str, Module]  # by file name, in sorted order

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
