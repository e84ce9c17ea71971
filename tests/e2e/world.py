"""A whole world for one end-to-end test: a services repository, a stand-in Zato cluster behind real sshd hosts,
and the reconciler run as a real process (`python -m reconciler`), as a user would run it.

The git origin is a bare repository; the test commits through a working clone and pushes, exactly like merging a
PR. The stand-in servers run as the SSH test user (started with their own `zato start`), each server reached
through its own sshd "host" on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sshbed import Host, SSHBed

from tests.standin.harness import Cluster, Server, create_cluster

ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def service_module(cls: str, name: str | None = None, body: str = "pass") -> str:
    attr = f"    name = {name!r}\n" if name else ""
    return (
        "from zato.server.service import Service\n\n\n"
        f"class {cls}(Service):\n{attr}\n    def handle(self):\n        {body}\n"
    )


@dataclass
class World:
    bed: SSHBed
    hosts: list[Host]
    root: Path
    cluster: Cluster
    origin: Path
    work: Path
    state_dir: Path
    cluster_name: str = "prod"
    extra_cluster: dict[str, Any] = field(default_factory=dict)

    # --- the stand-in -----------------------------------------------------------------------------------------
    @property
    def servers(self) -> list[Server]:
        return self.cluster.servers

    def zato(self, server: Server, *args: str) -> subprocess.CompletedProcess[bytes]:
        return self.bed.run_as_user([str(self.cluster.install.zato), *args, str(server.path)], check=False)

    def start_all(self) -> None:
        results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        def start(s: Server) -> None:
            results[s.name] = self.zato(s, "start")

        threads = [threading.Thread(target=start, args=(s,)) for s in self.servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = {k: v for k, v in results.items() if v.returncode != 0}
        assert not bad, f"zato start failed: {bad}"
        for s in self.servers:
            s.wait_ready()

    def log_sizes(self) -> dict[str, int]:
        return {s.name: s.log_path.stat().st_size for s in self.servers}

    # --- the repository -----------------------------------------------------------------------------------------
    def manifest(self, **cluster_overrides: Any) -> str:
        servers = [
            {"name": s.name, "host": "127.0.0.1", "port": h.port, "user": self.bed.user, "path": str(s.path)}
            for s, h in zip(self.servers, self.hosts, strict=False)
        ]
        cluster: dict[str, Any] = {
            "name": self.cluster_name,
            "zato_version": self.cluster.version,
            "zato_command": str(self.cluster.install.zato),
            "servers": servers,
            "hot_deploy": ["services/*.py"],
            "confirm_timeout": 20,
        }
        cluster.update(self.extra_cluster)
        cluster.update(cluster_overrides)
        return yaml.safe_dump({"version": 1, "clusters": [cluster]}, sort_keys=False)

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        """Write (or with None delete) files in the working clone, commit, push to the origin; return the sha."""
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    # --- the reconciler -------------------------------------------------------------------------------------------
    def cli(self, *args: str, known_hosts: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        common = [
            "--repo", str(self.origin),
            "--identity", str(self.bed.client_key),
            "--known-hosts", str(known_hosts or self.bed.known_hosts),
            "--state-dir", str(self.state_dir),
        ]
        env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
        return subprocess.run(
            [sys.executable, "-m", "reconciler", command, *common, *rest],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
        )

    def cli_json(self, *args: str) -> tuple[int, Any]:
        r = self.cli(*args, "--json")
        try:
            return r.returncode, json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"not JSON (exit {r.returncode}):\n{r.stdout}\n{r.stderr}") from e


def make_world(bed: SSHBed, hosts: list[Host], version: str = "3.2", n: int = 3, **cluster_kw: Any) -> World:
    root = bed.workdir / f"w-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    cluster = create_cluster(root, n, version=version, cluster="prod", **cluster_kw)
    bed.chown_to_user(root)
    origin = root.parent / f"{root.name}-origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = root.parent / f"{root.name}-work"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True, capture_output=True)
    git(work, "checkout", "-q", "-b", "main")
    world = World(bed, hosts, root, cluster, origin, work, root.parent / f"{root.name}-state")
    world.start_all()
    return world
