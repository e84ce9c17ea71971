"""Settings: every option of the command line, readable from a YAML config file too (flags win).

Intervals, timeouts and backoffs live here, not in the code that uses them (practice 9: time is injected), so a
test or an operator changes them in one place. Secrets (webhook secrets) are loaded here and never printed: the
model's `safe_dump` masks them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from reconciler.errors import Stalled


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "zato-gitops"


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


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from the config file (if any) with the given flag values on top (None means not given)."""
    data: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise Stalled(f"cannot read the config file {config}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise Stalled(f"{config}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise Stalled(f"{config}: expected a mapping of settings at the top level")
        data.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        where = str(config) if config else "options"
        lines = [f"{where}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise Stalled("invalid settings:\n  " + "\n  ".join(lines)) from e
