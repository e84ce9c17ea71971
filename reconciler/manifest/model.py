"""The manifest as typed data: what the services repository says every Zato server should run.

pydantic models with `extra="forbid"` so a misspelt key is an error, not a silent default. The loader
(`loader.py`) maps every validation error back to a file:line; this module only says what is valid. It imports
no I/O library, so the planner may depend on it.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.zato.profiles import DEFAULT_VERSION, VersionName

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Server(_Strict):
    """One Zato server: where it lives and how to reach its machine."""

    name: str = Field(pattern=_NAME, description="Unique within the cluster; used in plans, records and errors.")
    host: str = Field("localhost", min_length=1, description="SSH host (ignored by the local transport).")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field("zato", min_length=1, description="SSH user; owns the server directory.")
    path: str = Field(description="Absolute path of the server directory (the one holding .zato-info).")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path, got {v!r}")
        return posixpath.normpath(v)


class ServiceSource(_Strict):
    """A service-sources.txt entry: a repository folder (or .py file) copied to `target`, or a dotted `module`."""

    path: str | None = Field(None, description="A directory or .py file in the repository.")
    target: str | None = Field(
        None, description="Where `path` goes on every server: relative to the server dir, or absolute."
    )
    module: str | None = Field(None, description="Written into service-sources.txt as is.")

    @model_validator(mode="after")
    def _one_kind(self) -> ServiceSource:
        if self.module is not None:
            if self.path is not None or self.target is not None:
                raise ValueError("give either `module`, or `path` with `target`, not both")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", self.module):
                raise ValueError(f"`module` must be a dotted Python name, got {self.module!r}")
        elif self.path is None or self.target is None:
            raise ValueError("give `path` and `target` (a repository folder and where it goes), or `module`")
        return self


class ExtraPath(_Strict):
    """A package directory or .py file from the repository, put into the install's zato_extra_paths."""

    path: str = Field(description="A package directory or .py file in the repository.")


class HAProxy(_Strict):
    """Drain a server in HAProxy (runtime API on a stats socket with `level admin`) around its restart."""

    socket: str = Field(description="Path of HAProxy's stats socket on the server's host.")
    backend: str = Field(description="The HAProxy backend holding the Zato servers.")


class Rollout(_Strict):
    """How static changes are released: a rolling restart, one server at a time by default."""

    max_unavailable: int = Field(1, ge=1, description="Servers of one cluster down at the same time.")
    ready_timeout: float = Field(
        120, gt=0, description="Seconds for a restarted server to answer /zato/ping and log Started."
    )
    window: str | None = Field(
        None, description="Cron expression (5 fields); static rollouts wait for it, hot-deploys never wait."
    )
    haproxy: HAProxy | None = None

    @field_validator("window")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        fields = v.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"must be a 5-field cron expression like '0 2 * * *', got {v!r}")
        return v


class Cluster(_Strict):
    """A Zato cluster: servers that share one configuration database and, on 2.0 to 3.3, hot-deploy fan-out."""

    name: str = Field(pattern=_NAME)
    zato_version: VersionName = Field(DEFAULT_VERSION, description="Profile: 2.0, 3.0, 3.2, 3.3 or 4.1.")
    zato_command: str = Field("/opt/zato/current/bin/zato", description="The `zato` CLI on the servers' hosts.")
    transport: Literal["ssh", "local"] = Field(
        "ssh", description="ssh (default), or local for a reconciler on the same host as its servers."
    )
    servers: list[Server] = Field(min_length=1)
    hot_deploy: list[str] = Field(
        default_factory=list, description="Globs relative to the repository root naming flat modules."
    )
    service_sources: list[ServiceSource] = Field(default_factory=list)
    extra_paths: list[ExtraPath] = Field(default_factory=list)
    extra_paths_dir: str = Field("/opt/zato/current/zato_extra_paths")
    rollout: Rollout = Field(default_factory=Rollout)  # type: ignore[arg-type]
    drift: Literal["heal", "report"] = Field("heal", description="What the daemon does with drift.")
    confirm_timeout: float | None = Field(
        None, gt=0, description="Seconds to wait for every server to confirm a hot-deploy (default from settings)."
    )

    @field_validator("zato_version", mode="before")
    @classmethod
    def _version_from_number(cls, v: Any) -> Any:
        # `zato_version: 3.2` unquoted is a YAML float; take it as the string the user meant.
        if isinstance(v, float):
            return f"{v:.1f}"
        return v

    @field_validator("extra_paths_dir")
    @classmethod
    def _abs_dir(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path, got {v!r}")
        return posixpath.normpath(v)

    @model_validator(mode="after")
    def _cross(self) -> Cluster:
        seen: set[str] = set()
        for s in self.servers:
            if s.name in seen:
                raise ValueError(f"server name {s.name!r} is used twice in cluster {self.name!r}")
            seen.add(s.name)
        if self.zato_version == "4.1" and self.service_sources:
            raise ValueError(
                "service_sources is not supported by zato_version 4.1 (4.1 has no service-sources.txt); "
                "use hot_deploy, or extra_paths for code that is not a service"
            )
        return self


class Manifest(_Strict):
    """The root of zato-gitops.yaml."""

    version: Literal[1] = Field(description="Manifest format version; 1.")
    clusters: list[Cluster] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_clusters(self) -> Manifest:
        seen: set[str] = set()
        for c in self.clusters:
            if c.name in seen:
                raise ValueError(f"cluster name {c.name!r} is used twice")
            seen.add(c.name)
        return self

    def cluster(self, name: str) -> Cluster:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)
