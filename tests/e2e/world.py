"""A whole world for one end-to-end test: a services repository, a stand-in Zato cluster behind real sshd hosts,
and the reconciler run as a real process (`python -m reconciler`), as a user would run it.

The git origin is a bare repository; the test commits through a working clone and pushes, exactly like merging a
PR. The stand-in servers run as the SSH test user (started with their own `zato start`), each server reached
through its own sshd "host" on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sshbed import Host, SSHBed

from tests.standin.harness import Cluster, Server, create_cluster

ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    # safe.directory: some tests hand the origin to the SSH user, and git refuses repositories of other owners
    argv = ["git", "-c", "safe.directory=*", *args]
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


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
    #: which of `hosts` each server is reached through (default: server i through host i)
    host_of: list[int] | None = None
    daemons: list[DaemonProc] = field(default_factory=list)

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
            s.wait_ready(timeout=60)

    def events(self, kind: str) -> dict[str, int]:
        """How many times each server journalled `kind` (starting, ready, stopping, stopped)."""
        counts = {s.name: 0 for s in self.servers}
        for e in self.cluster.events():
            if e["event"] == kind:
                counts[e["server"]] = counts.get(e["server"], 0) + 1
        return counts

    def max_down_since(self, ts: float) -> int:
        """The most servers down at the same time since `ts` (from the stand-in's events journal)."""
        from tests.standin.harness import max_down_at_once

        return max_down_at_once([e for e in self.cluster.events() if e["ts"] >= ts])

    def set_faults(self, server: Server, **faults: object) -> None:
        """Stand-in fault knobs, in a file the server (running as the SSH user) can read and rewrite."""
        server.set_faults(**faults)
        self.bed.chown_to_user(server.faults_path)

    def log_sizes(self) -> dict[str, int]:
        return {s.name: s.log_path.stat().st_size for s in self.servers}

    # --- the repository -----------------------------------------------------------------------------------------
    def manifest(self, **cluster_overrides: Any) -> str:
        hosts = [self.hosts[i] for i in self.host_of] if self.host_of else self.hosts
        servers = [
            {"name": s.name, "host": "127.0.0.1", "port": h.port, "user": self.bed.user, "path": str(s.path)}
            for s, h in zip(self.servers, hosts, strict=False)
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
    def cli(
        self, *args: str, known_hosts: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
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

    def common_args(self, state_dir: Path | None = None) -> list[str]:
        return [
            "--repo", str(self.origin),
            "--identity", str(self.bed.client_key),
            "--known-hosts", str(self.bed.known_hosts),
            "--state-dir", str(state_dir or self.state_dir),
        ]

    def daemon(self, wait_ready: bool = True, state_dir: Path | None = None, **settings: Any) -> DaemonProc:
        """Start `zato-gitops run` as a real process with a config file of fast intervals (overridable), its
        output in a log file. `World.stop_daemons()` (called by the world fixture) always ends it. `state_dir`
        stands for another node (its own state dir); default the world's."""
        config: dict[str, Any] = {
            "interval": 1, "jitter": 0, "drift_interval": 3600, "retry_backoff": 1, "retry_backoff_max": 4,
            "listen": "127.0.0.1:0", "webhook_secret": "s3cret-for-tests", "confirm_poll": 0.1,
        }
        config.update(settings)
        n = len(self.daemons) + 1
        cfg = self.root.parent / f"{self.root.name}-daemon{n}.yaml"
        cfg.write_text(yaml.safe_dump(config))
        log = self.root.parent / f"{self.root.name}-daemon{n}.log"
        env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", *self.common_args(state_dir), "--config", str(cfg)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        d = DaemonProc(self, proc, log, cfg, str(config.get("webhook_secret") or ""), state_dir=state_dir)
        self.daemons.append(d)
        if wait_ready:
            d.wait_started()
        return d

    def stop_daemons(self) -> None:
        for d in self.daemons:
            d.stop(check=False)

    def cli_json(self, *args: str) -> tuple[int, Any]:
        r = self.cli(*args, "--json")
        try:
            return r.returncode, json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"not JSON (exit {r.returncode}):\n{r.stdout}\n{r.stderr}") from e


@dataclass
class DaemonProc:
    """A `zato-gitops run` process and the ways a test talks to it: its HTTP endpoint, its log, signals."""

    world: World
    proc: subprocess.Popen[bytes]
    log_path: Path
    config: Path
    secret: str
    url: str = ""
    state_dir: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 20.0) -> None:
        info = (self.state_dir or self.world.state_dir) / "daemon.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                data = json.loads(info.read_text())
                if data.get("pid") == self.proc.pid:
                    self.url = data["url"]
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not start in {timeout} s:\n{self.log()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self) -> dict[str, Any]:
        code, body = self.request("GET", "/api/status")
        assert code == 200, body
        data: dict[str, Any] = json.loads(body)
        return data

    def cluster(self, name: str = "prod") -> dict[str, Any]:
        for c in self.status()["clusters"]:
            if c["name"] == name:
                return dict(c)
        return {}

    def condition(self, type_: str, name: str = "prod") -> dict[str, Any]:
        for c in self.cluster(name).get("conditions", []):
            if c["type"] == type_:
                return dict(c)
        return {}

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode} while waiting for {what}:\n"
                                     f"{self.log()[-5000:]}")
            last = check()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"{what}: not after {timeout} s (last: {last!r})\n{self.log()[-5000:]}")

    def wait_applied(self, commit: str, name: str = "prod", timeout: float = 30.0) -> dict[str, Any]:
        def applied() -> dict[str, Any] | None:
            c = self.cluster(name)
            ready = {x["type"]: x for x in c.get("conditions", [])}.get("Ready", {})
            return c if c.get("last_applied_revision") == commit and ready.get("status") == "True" else None

        result: dict[str, Any] = self.wait_for(f"{name} applied at {commit[:12]}", applied, timeout)
        return result

    def hook(self, provider: str, payload: Any, *, secret: str | None = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, bytes]:
        """POST a webhook signed as `provider` signs it (with `secret`, default the daemon's)."""
        body = raw if raw is not None else json.dumps(payload).encode()
        key = (self.secret if secret is None else secret).encode()
        digest = hmac.new(key, body, hashlib.sha256).hexdigest()
        signed = {
            "github": {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"},
            "gitea": {"X-Gitea-Event": "push", "X-Gitea-Signature": digest},
            "gitlab": {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": key.decode()},
            "generic": {"X-Signature-256": f"sha256={digest}"},
        }[provider]
        return self.request("POST", f"/hooks/{provider}", body,
                            {"Content-Type": "application/json", **signed, **(headers or {})})

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0, check: bool = True) -> int:
        """SIGTERM and wait; SIGKILL if it does not end in time (and fail when `check`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                if check:
                    raise AssertionError(f"the daemon did not stop in {timeout} s:\n{self.log()[-5000:]}") from None
        return self.proc.returncode


def make_world(
    bed: SSHBed, hosts: list[Host], version: str = "3.2", n: int = 3, local: bool = False, **cluster_kw: Any
) -> World:
    """`local`: the servers belong to (and are started by) the user running the tests, for `transport: local`."""
    root = bed.workdir / f"w-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    cluster = create_cluster(root, n, version=version, cluster="prod", **cluster_kw)
    if not local:
        bed.chown_to_user(root)
    origin = root.parent / f"{root.name}-origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = root.parent / f"{root.name}-work"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True, capture_output=True)
    git(work, "checkout", "-q", "-b", "main")
    world = World(bed, hosts, root, cluster, origin, work, root.parent / f"{root.name}-state")
    if local:
        world.extra_cluster["transport"] = "local"
        cluster.start_all(timeout=60)
    else:
        world.start_all()
    return world
