"""Settings: every option of the command line, readable from a YAML config file too (flags win).

Intervals, timeouts and backoffs live here, not in the code that uses them (practice 9: time is injected), so a
test or an operator changes them in one place. Secrets (webhook secrets) are loaded here and never printed: the
model's `safe_dump` masks them.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from reconciler.defaults import default_state_dir
from reconciler.errors import ConfigInvalid, Stalled
from reconciler.manifest.loader import MAX_BYTES, YamlInvalid, capped, explain_validation, parse_yaml
from reconciler.manifest.model import KeyPath


class GitHost(BaseModel):
    """Where pull request comments and commit statuses go (`git_host:`); the token comes from the environment."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["github", "gitlab", "gitea"]
    api_url: str = Field(description="The provider's REST API root, e.g. https://api.github.com, "
                         "https://gitlab.example.com/api/v4, https://gitea.example.com/api/v1.")
    repository: str = Field(description="owner/name (GitLab: the project path or numeric id).")
    token_env: str = Field("ZATO_GITOPS_TOKEN", description="Environment variable that holds the API token.")
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0, description="Further attempts of a status that could not be posted.")
    retry_delay: float = Field(2.0, ge=0, description="Seconds before the first retry (doubling).")

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


class Verify(BaseModel):
    """Which commits the reconciler trusts (`verify:`); lives in the reconciler's config, never the repository."""

    model_config = ConfigDict(extra="forbid")

    signatures: Literal["off", "ssh", "gpg"] = "off"
    allowed_signers: Path | None = Field(None, description="ssh: git's allowed signers file; gpg: a keyring.")
    allow_history_rewrite: bool = False
    signing_key: str | None = Field(None, description="Key that signs rollback commits (ssh: a private key file; "
                                    "gpg: a key id), so a rollback passes verification.")


class Settings(BaseModel):
    """What one reconciler needs to know. Same keys in the config file as the long flags, with `_` for `-`."""

    model_config = ConfigDict(extra="forbid")

    repo: str | None = Field(None, description="Services repository: a path, file://, ssh:// or https:// URL.")
    branch: str = "main"
    manifest: str = "zato-gitops.yaml"
    identity: Path | None = Field(None, description="SSH private key (else the agent and default keys).")
    known_hosts: Path = Field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    state_dir: Path = Field(default_factory=default_state_dir)
    # hot-deploy confirmation
    confirm_timeout: float = Field(60.0, gt=0, description="Seconds for every server to confirm a hot-deploy.")
    confirm_poll: float = Field(0.25, gt=0, description="Seconds between two reads of the servers' logs.")
    connect_timeout: float = Field(10.0, gt=0)
    command_timeout: float = Field(60.0, gt=0)
    parallelism: int = Field(16, ge=1, description="Servers observed and confirmed at once.")
    # the cluster lease (docs/rollouts.md): kept on a server of each cluster while a reconciler changes it
    lease_ttl: float = Field(60.0, ge=3, description="Seconds a cluster lease lasts unless renewed (every third).")
    lease_wait: float = Field(0.0, ge=0, description="Seconds to wait for another reconciler's lease, then refuse.")
    # the daemon
    interval: float = Field(60.0, gt=0, description="Seconds between two polls of the branch head.")
    jitter: float = Field(0.1, ge=0, le=1, description="Fraction of the interval added at random.")
    drift_interval: float = Field(300.0, gt=0)
    retry_backoff: float = Field(10.0, gt=0, description="First retry delay after a transient failure.")
    retry_backoff_max: float = Field(600.0, gt=0)
    listen: str = Field("127.0.0.1:9180", description="Address of the status, metrics and webhook endpoint.")
    webhook_secret: SecretStr | None = None
    notify_urls: list[str] = Field(default_factory=list)
    notify_format: Literal["json", "slack"] = "json"
    job_store: str | None = Field(None, description="Older name of state_db; state_db wins when both are given.")
    state_db: str | None = Field(
        None, description="SQLAlchemy URL of the state two reconcilers share (rollouts, status, jobs), e.g. "
        "postgresql+psycopg://zg@db/zato_gitops; default: SQLite in the state dir, a single node.")
    failover_timeout: float = Field(
        15.0, gt=0, description="Seconds within which a standby takes over after the leader's database session ends.")
    log_format: Literal["text", "json"] = "text"
    external_url: str | None = Field(None, description="The daemon's URL as people reach it; commit statuses "
                                     "link to it.")
    # release by pull request
    git_host: GitHost | None = None
    verify: Verify = Field(default_factory=lambda: Verify(allowed_signers=None, signing_key=None))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    def state_db_url(self) -> str:
        """Where the shared state lives: `state_db`, else `job_store`, else SQLite in the state dir."""
        url = self.state_db or self.job_store
        if url:
            return url
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(self.state_dir).resolve() / 'jobs.sqlite'}"

    def shared_state(self) -> bool:
        """Whether the state is in a server database two reconcilers can share (anything but SQLite)."""
        return not self.state_db_url().startswith("sqlite")

    def git_ssh_command(self) -> str:
        """GIT_SSH_COMMAND for ssh:// repositories: the same key and strict known_hosts as the servers."""
        parts = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                 "-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            parts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return shlex.join(parts)


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (every address) -> (host, port); ValueError saying what is wrong.

    Checked where the setting is read, so `run --listen foo` or `--listen 127.0.0.1:99999` is refused at once.
    Port 0 asks the system for a free port (tests use it)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9180 or [::1]:9180")
    if int(port) > 65535:
        raise ValueError(f"the port must be at most 65535, got {port}")
    if host.startswith("[") != host.endswith("]") or any(c.isspace() or c in "/@" for c in host):
        raise ValueError("the host must be an address or a name, e.g. 127.0.0.1, 0.0.0.0 or [::1]")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from the config file (if any) with the given flag values on top (None means not given).

    The file may hold any bytes: what is not UTF-8, not YAML or not valid settings becomes `ConfigInvalid`
    with `FILE:LINE: key: message` lines, never a traceback."""
    data: dict[str, Any] = {}
    doc = None
    name = str(config) if config is not None else "options"
    if config is not None:
        try:
            raw = _read(config)
            doc = parse_yaml(raw, name)
        except YamlInvalid as e:
            raise ConfigInvalid(e.errors) from None
        if doc.errors:
            raise ConfigInvalid(*capped([f"{name}:{line}: {'.'.join(map(str, p))}: {m}" for line, p, m in doc.errors]))
        if doc.data is not None and not isinstance(doc.data, dict):
            raise ConfigInvalid([f"{name}:{doc.root_line}: expected a mapping of settings at the top level"])
        data.update({str(k).replace("-", "_"): v for k, v in (doc.data or {}).items()})
        doc = dataclasses.replace(doc, lines=_underscored(doc.lines), key_lines=_underscored(doc.key_lines))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        given = {k for k, v in overrides.items() if v is not None}
        lines, from_file = [], False
        for path, line, msg in explain_validation(e, doc, Settings):
            if path and path[0] in given:
                lines.append(f"--{str(path[0]).replace('_', '-')}: {msg}")
            else:
                from_file = True
                lines.append(f"{name}:{line}: {'.'.join(map(str, path))}: {msg}")
        hint = "" if from_file else "correct the option's value; `zato-gitops COMMAND --help` describes each"
        raise ConfigInvalid(*capped(lines), hint=hint) from e


def _underscored(lines: Mapping[KeyPath, int]) -> dict[KeyPath, int]:
    """`confirm-timeout` is read as `confirm_timeout`: its line is found under that name too."""
    return {(str(p[0]).replace("-", "_"), *p[1:]) if p else p: n for p, n in lines.items()}


def _read(config: Path) -> bytes:
    try:
        with config.open("rb") as f:
            return f.read(MAX_BYTES + 1)  # parse_yaml refuses a file this large
    except OSError as e:
        raise Stalled(f"cannot read the config file {config}: {e.strerror or e}",
                      hint="check the path and that the reconciler's user may read it") from e

