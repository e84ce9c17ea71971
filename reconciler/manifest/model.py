"""The manifest as typed data: what the services repository says every Zato server should run.

pydantic models with `extra="forbid"` so a misspelt key is an error, not a silent default. The loader
(`loader.py`) maps every validation error back to a file:line; this module only says what is valid. It imports
no I/O library, so the planner may depend on it.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.zato.profiles import DEFAULT_VERSION, VersionName

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")

#: folders of a server directory that Zato owns; a service_sources target inside one would be overwritten by
#: Zato (work/, pickup/), or mix our files with its configuration (config/) or logs, so it is refused
ZATO_OWNED_DIRS = ("config", "logs", "pickup", "work")

KeyPath = tuple[str | int, ...]


class Problems(ValueError):
    """One or more problems found by a cross-field validator, each at a key path relative to the model.

    A plain ValueError from a model validator can only point at the whole mapping and carry one message; this
    one lets the loader put every problem on its own line (`clusters[0].servers[2].name`). `str()` of it is
    still a readable sentence for code that validates without the loader.
    """

    def __init__(self, problems: list[tuple[KeyPath, str]]) -> None:
        self.problems: tuple[tuple[KeyPath, str], ...] = tuple(problems)
        super().__init__("; ".join(f"{format_key_path(at)}: {msg}" if at else msg for at, msg in self.problems))


def format_key_path(path: KeyPath) -> str:
    """`("clusters", 0, "servers", 1, "path")` -> `clusters[0].servers[1].path`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _repo_relative(v: str, what: str = "path") -> str:
    """A path inside the services repository: relative, no `..` part; returned normalised (`./a/` -> `a`)."""
    if not v.strip():
        raise ValueError(f"must not be empty; give a {what} relative to the repository root")
    if v.startswith("/"):
        raise ValueError(f"must be relative to the repository root, not absolute, got {v!r}")
    if ".." in v.split("/"):
        raise ValueError(f"must stay inside the repository: no '..' components, got {v!r}")
    return posixpath.normpath(v)


def _hot_deploy_glob(given: str) -> str:
    v = _repo_relative(given, "glob")
    if not (v.endswith(".py") or v.endswith("*")):
        raise ValueError(f"must name .py modules: end the glob in '.py' or '*' (e.g. 'services/*.py'), got {given!r}")
    return v


HotDeployGlob = Annotated[str, AfterValidator(_hot_deploy_glob)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Server(_Strict):
    """One Zato server: where it lives and how to reach its machine."""

    name: str = Field(pattern=_NAME, description="Unique within the cluster; used in plans, records and errors.")
    host: str = Field("localhost", min_length=1, description="SSH host (ignored by the local transport).")
    port: int = Field(22, ge=1, le=65535, strict=True, description="SSH port.")
    user: str = Field("zato", min_length=1, description="SSH user; owns the server directory.")
    path: str = Field(description="Absolute path of the server directory (the one holding .zato-info).")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path, got {v!r}")
        return posixpath.normpath(v)


class ServiceSource(_Strict):
    """A service-sources.txt entry: a repository folder or .py file copied to `target`, or a `module` name."""

    path: str | None = Field(None, description="A directory or .py file in the repository.")
    target: str | None = Field(
        None, description="Where `path` goes on every server: relative to the server dir, or absolute."
    )
    module: str | None = Field(None, description="Written into service-sources.txt as is.")

    @field_validator("path")
    @classmethod
    def _path_in_repo(cls, v: str | None) -> str | None:
        return None if v is None else _repo_relative(v)

    @field_validator("target")
    @classmethod
    def _target_in_server(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # the target is written into service-sources.txt as one line: Zato strips it and skips `#` lines
        if not v.strip() or v != v.strip() or "\n" in v or "\r" in v:
            raise ValueError(
                f"must be a non-empty path with no surrounding whitespace or line break "
                f"(it becomes one line of service-sources.txt), got {v!r}"
            )
        if v.startswith("#"):
            raise ValueError(f"must not start with '#': service-sources.txt would skip it as a comment, got {v!r}")
        if v.startswith("/"):
            norm = posixpath.normpath(v)
            if norm == "/":
                raise ValueError("must not be '/'")
            return norm
        return check_server_relative_target(posixpath.normpath(v), v)

    @model_validator(mode="after")
    def _one_kind(self) -> ServiceSource:
        if self.module is not None:
            if self.path is not None or self.target is not None:
                raise ValueError("give either `module`, or `path` with `target`, not both")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", self.module):
                raise ValueError(f"`module` must be a dotted Python name, got {self.module!r}")
        elif self.path is None or self.target is None:
            raise ValueError("give `path` and `target` (a repository folder and where it goes), or `module`")
        else:
            # Zato imports an entry ending in .py as a file, a directory as its *.py files, anything else as a
            # dotted module name: the target's ending must match what `path` is
            if self.path.endswith(".py") and not self.target.endswith(".py"):
                raise Problems(
                    [
                        (
                            ("target",),
                            "must end in '.py' when `path` is a .py file: Zato imports an entry as a file "
                            f"only when it ends in '.py', got {self.target!r}",
                        )
                    ]
                )
            if not self.path.endswith(".py") and self.target.endswith(".py"):
                raise Problems(
                    [
                        (
                            ("target",),
                            "must not end in '.py' when `path` is a directory: Zato would import the entry "
                            f"as a single file, got {self.target!r}",
                        )
                    ]
                )
        return self

    @property
    def entry(self) -> str:
        """The line this source puts into service-sources.txt."""
        return self.module if self.module is not None else self.target  # type: ignore[return-value]


def check_server_relative_target(norm: str, given: str) -> str:
    """A normalised target relative to the server directory: inside it, and not one of Zato's own folders."""
    if norm == ".":
        raise ValueError(
            f"must not be the server directory itself ({given!r}): its *.py files would be imported and the "
            "reconciler would manage Zato's own files; name a folder such as 'my-services'"
        )
    if norm == ".." or norm.startswith("../"):
        raise ValueError(
            f"must stay inside the server directory, got {given!r}; use an absolute path for a folder outside it"
        )
    top = norm.split("/", 1)[0]
    if top in ZATO_OWNED_DIRS:
        raise ValueError(
            f"must not be inside the server's {top}/ folder ({given!r}): {top}/ belongs to Zato "
            + {
                "config": "(its configuration, including service-sources.txt itself)",
                "logs": "(its logs)",
                "pickup": "(the hot-deploy pickup dir: whatever lands there is hot-deployed)",
                "work": "(work/hot-deploy/current is rewritten by every hot-deploy)",
            }[top]
        )
    return norm


class ExtraPath(_Strict):
    """A package directory or .py file from the repository, put into the install's zato_extra_paths."""

    path: str = Field(description="A package directory or .py file in the repository.")

    @field_validator("path")
    @classmethod
    def _path_in_repo(cls, v: str) -> str:
        v = _repo_relative(v)
        if v == ".":
            raise ValueError("must name a package directory or .py file, not the repository root")
        return v

    @property
    def name(self) -> str:
        """The name it gets inside extra_paths_dir (its last path component)."""
        return posixpath.basename(self.path)


class HAProxy(_Strict):
    """Drain a server in HAProxy (runtime API on a stats socket with `level admin`) around its restart."""

    socket: str = Field(description="Path of HAProxy's stats socket on the server's host.")
    backend: str = Field(description="The HAProxy backend holding the Zato servers.")


class Rollout(_Strict):
    """How static changes are released: a rolling restart, one server at a time by default."""

    max_unavailable: int = Field(1, ge=1, strict=True, description="Servers of one cluster down at the same time.")
    ready_timeout: float = Field(
        120,
        gt=0,
        strict=True,
        description="Seconds for a restarted server to answer /zato/ping and log Started.",
    )
    window: str | None = Field(
        None, description="Cron expression (5 fields); static rollouts wait for it, hot-deploys never wait."
    )
    haproxy: HAProxy | None = Field(None, description="Drain each server in HAProxy around its restart.")

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
    """A Zato cluster: servers sharing one configuration database and, on 2.0 to 3.3, hot-deploy fan-out."""

    name: str = Field(pattern=_NAME, description="Unique within the manifest; used in plans, records and errors.")
    zato_version: VersionName = Field(DEFAULT_VERSION, description="Profile: 2.0, 3.0, 3.2, 3.3 or 4.1.")
    zato_command: str = Field("/opt/zato/current/bin/zato", description="The `zato` CLI on the servers' hosts.")
    transport: Literal["ssh", "local"] = Field(
        "ssh", description="ssh (default), or local for a reconciler on the same host as its servers."
    )
    servers: list[Server] = Field(min_length=1, description="The cluster's servers; at least one.")
    hot_deploy: list[HotDeployGlob] = Field(
        default_factory=list, description="Globs relative to the repository root naming flat modules."
    )
    service_sources: list[ServiceSource] = Field(
        default_factory=list, description="Static installs through service-sources.txt (2.0 to 3.3); restart."
    )
    extra_paths: list[ExtraPath] = Field(
        default_factory=list, description="Packages or modules installed into extra_paths_dir; restart."
    )
    extra_paths_dir: str = Field(
        "/opt/zato/current/zato_extra_paths",
        description="The install's zato_extra_paths folder (on sys.path of every server of that install).",
    )
    rollout: Rollout = Field(default_factory=Rollout, description="How static changes are rolled out.")  # type: ignore[arg-type]
    drift: Literal["heal", "report"] = Field("heal", description="What the daemon does with drift.")
    confirm_timeout: float | None = Field(
        None,
        gt=0,
        strict=True,
        description="Seconds to wait for every server to confirm a hot-deploy (default from settings).",
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
        problems: list[tuple[KeyPath, str]] = []
        seen: dict[str, int] = {}
        places: dict[tuple[str, ...], int] = {}
        for i, s in enumerate(self.servers):
            if s.name in seen:
                problems.append(
                    (("servers", i, "name"), f"server name {s.name!r} is used twice in cluster {self.name!r}")
                )
            seen.setdefault(s.name, i)
            # the local transport ignores host and port: one path is one server directory
            place = (s.path,) if self.transport == "local" else (s.host, str(s.port), s.path)
            if place in places:
                where = "path" if self.transport == "local" else "host, port and path"
                problems.append(
                    (
                        ("servers", i),
                        f"same {where} as servers[{places[place]}]: both entries are one server directory",
                    )
                )
            places.setdefault(place, i)
        if self.zato_version == "4.1" and self.service_sources:
            problems.append(
                (
                    ("service_sources",),
                    "service_sources is not supported by zato_version 4.1 (4.1 has no service-sources.txt); "
                    "use hot_deploy, or extra_paths for code that is not a service",
                )
            )
        entries: dict[str, int] = {}
        for j, src in enumerate(self.service_sources):
            key = "module" if src.module is not None else "target"
            if src.entry in entries:
                problems.append(
                    (
                        ("service_sources", j, key),
                        f"{src.entry!r} is already the {key} of service_sources[{entries[src.entry]}]; "
                        "each entry must be unique",
                    )
                )
            entries.setdefault(src.entry, j)
            if src.target is not None and src.target.startswith("/"):
                for s in self.servers:
                    rel = posixpath.relpath(src.target, s.path)
                    if rel == "." or not rel.startswith(".."):
                        try:
                            check_server_relative_target(rel, src.target)
                        except ValueError as e:
                            problems.append((("service_sources", j, "target"), f"{e} (inside server {s.name!r})"))
                            break
        names: dict[str, int] = {}
        for k, extra in enumerate(self.extra_paths):
            if extra.name in names:
                problems.append(
                    (
                        ("extra_paths", k, "path"),
                        f"{extra.path!r} would be installed as "
                        f"{posixpath.join(self.extra_paths_dir, extra.name)}, "
                        f"like extra_paths[{names[extra.name]}]; give them different names",
                    )
                )
            names.setdefault(extra.name, k)
        if problems:
            raise Problems(problems)
        return self


class Manifest(_Strict):
    """The root of zato-gitops.yaml."""

    version: Literal[1] = Field(description="Manifest format version; 1.")
    clusters: list[Cluster] = Field(min_length=1, description="The Zato clusters this repository feeds.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_int(cls, v: Any) -> Any:
        # Literal[1] alone would take `true` and `1.0` (both == 1)
        if type(v) is not int:
            shown = str(v).lower() if isinstance(v, bool) else repr(v)
            raise ValueError(f"must be 1 (the manifest format version), got {shown}")
        return v

    @model_validator(mode="after")
    def _unique_clusters(self) -> Manifest:
        problems: list[tuple[KeyPath, str]] = []
        seen: set[str] = set()
        for i, c in enumerate(self.clusters):
            if c.name in seen:
                problems.append((("clusters", i, "name"), f"cluster name {c.name!r} is used twice"))
            seen.add(c.name)
        if problems:
            raise Problems(problems)
        return self

    def cluster(self, name: str) -> Cluster:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)
