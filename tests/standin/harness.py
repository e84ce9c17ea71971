"""Python side of the Zato stand-in: build installs, server directories and clusters; start, stop, observe, clean up.

Why it exists: the end-to-end tests and the local demo need real Zato-like servers on this machine. The runtime
(the `zato` CLI and the server process, in ./runtime) is stdlib only and is COPIED into each install, because
in CI the servers run as a user who cannot read the repository. This module is what tests import; it never
runs inside a server. Every process it helps start is found again by its command line and killed by
`Install.kill_all()` / `Cluster.cleanup()` / an atexit hook, so a test never leaves a server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
VERSIONS = ("2.0", "3.0", "3.2", "3.3", "4.1")
SERVER_SCRIPT = "zato_server.py"

DEMO_SERVICE = '''\
"""The demo service every Zato server ships in its pickup dir."""

from zato.server.service import Service


class Demo(Service):
    """Answers with a greeting."""

    def handle(self):
        self.response.payload = "Hello from the Zato stand-in"
'''

SERVICE_SOURCES_HEADER = """\
# Visit https://zato.io/docs for more information.

# All paths are relative to server root so that, for instance,
# ./my-services will resolve to /opt/zato/server1/my-services if a server has been
# installed into /opt/zato/server1

# List your service sources below, each on a separate line.

# Recommended to be always the very last line so all services that have been
# hot-deployed are picked up last.
"""

#: how service-sources.txt ends: as a fresh quickstart writes it (no newline after the last line, zato-facts.md
#: section 8), or edited on Windows (CRLF), or with blanks after entries and blank lines at the end, or tidy
SOURCES_STYLES = ("quickstart", "crlf", "trailing-blanks", "tidy")

#: start timings: FAST for tests that are not about time; SLOW on the slow side of what a real 3.2 start takes
#: (`zato start` prints OK after 2.5-3.2 s, /zato/ping answers 9-16 s after the start)
FAST_START = {"start_ok_wait": 1.2, "start_delay": 0.3}
SLOW_START = {"start_ok_wait": 3.0, "start_delay": 15.0}

_installs: list[Install] = []


# ####################################################################################################################
# Installs


@dataclass
class Install:
    """A stand-in Zato install: `<root>/bin/zato`, `<root>/standin/` (runtime), `<root>/extlib`,
    `<root>/zato_extra_paths -> extlib`."""

    root: Path
    python: str = "python3"

    @property
    def zato(self) -> Path:
        return self.root / "bin" / "zato"

    @property
    def standin_dir(self) -> Path:
        return self.root / "standin"

    @property
    def extlib(self) -> Path:
        return self.root / "extlib"

    @property
    def extra_paths(self) -> Path:
        return self.root / "zato_extra_paths"

    @property
    def server_script(self) -> Path:
        return self.standin_dir / SERVER_SCRIPT

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `<root>/bin/zato ARGS`, capturing stdout and stderr (text); never raises on a non-zero exit."""
        return subprocess.run(
            [str(self.zato), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def server_pids(self) -> list[int]:
        """Every live stand-in server process running from this install (found through /proc)."""
        script = str(self.server_script)
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if script.encode() in argv and _alive(int(entry)):
                found.append(int(entry))
        return found

    def kill_all(self, timeout: float = 5.0) -> list[int]:
        """SIGKILL every stand-in server of this install and wait until they are gone. Returns their pids."""
        pids = self.server_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.02)
        return pids


def create_install(root: Path, python: str = "python3") -> Install:
    """Create a stand-in install in `root` (created if needed) and register it for the atexit clean-up.

    `python` is the interpreter `bin/zato` execs (a name looked up on PATH, or an absolute path).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    standin = root / "standin"
    if standin.exists():
        shutil.rmtree(standin)
    shutil.copytree(RUNTIME_DIR, standin, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "bin").mkdir(exist_ok=True)
    zato = root / "bin" / "zato"
    zato.write_text(f'#!/bin/sh\nexec {_sh_quote(python)} {_sh_quote(str(standin / "zato_cli.py"))} "$@"\n')
    zato.chmod(0o755)
    (root / "extlib").mkdir(exist_ok=True)
    link = root / "zato_extra_paths"
    if not link.is_symlink():
        link.symlink_to("extlib")
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    install = Install(root, python)
    _installs.append(install)
    return install


# ####################################################################################################################
# Server directories


def create_server(
    install: Install,
    server_dir: Path,
    *,
    name: str = "server1",
    cluster: str = "cluster1",
    version: str = "3.2",
    http_port: int = 17010,
    odb: Path,
    events_journal: Path | None = None,
    log_max_bytes: int | None = None,
    stop_delay: float | None = None,
    service_sources: list[str] | None = None,
    sources_style: str = "quickstart",
    start_ok_wait: float | None = FAST_START["start_ok_wait"],
    start_delay: float | None = FAST_START["start_delay"],
    colour: bool = True,
    environ: dict[str, str] | None = None,
) -> Path:
    """Create a server directory laid out like Zato's (zato-facts.md section 1) and return its path.

    `service_sources`: extra entries written into service-sources.txt before `./work/hot-deploy/current`
    (ignored on 4.1, which has no such file), ending as `sources_style` says (see SOURCES_STYLES).
    `events_journal`, `log_max_bytes`, `stop_delay`, `start_ok_wait`, `start_delay` and `colour` go to the
    stand-in-only `[standin]` section of server.conf (None: the runtime's realistic default). `environ`: variables
    the server process gets (`<server>/standin-environ.json`, read by `zato start`).
    """
    if sources_style not in SOURCES_STYLES:
        raise ValueError(f"unknown sources_style {sources_style!r}; expected one of {SOURCES_STYLES}")
    if version not in VERSIONS:
        raise ValueError(f"unknown Zato version {version!r}; expected one of {VERSIONS}")
    server_dir = Path(server_dir).resolve()
    repo = server_dir / "config" / "repo"
    for sub in (
        repo,
        server_dir / "logs",
        server_dir / "pickup" / "incoming" / "services",
        server_dir / "work" / "hot-deploy" / "current",
        server_dir / "work" / "hot-deploy" / "backup",
    ):
        sub.mkdir(parents=True, exist_ok=True)

    info = {
        "version": version,
        "component": "SERVER",
        "created_user_host": f"{getpass.getuser()}@{socket.gethostname()}",
        "created_ts": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    (server_dir / ".zato-info").write_text(json.dumps(info))

    bind_key = "bind" if version == "4.1" else "gunicorn_bind"
    main_lines = [f"{bind_key}=0.0.0.0:{http_port}", "gunicorn_workers=1", "work_dir=../../work"]
    if version != "4.1":
        main_lines.append("service_sources=./service-sources.txt")
    standin_lines = [f"name={name}", f"cluster={cluster}"]
    if events_journal is not None:
        standin_lines.append(f"events_journal={Path(events_journal).resolve()}")
    if log_max_bytes is not None:
        standin_lines.append(f"log_max_bytes={int(log_max_bytes)}")
    if stop_delay is not None:
        standin_lines.append(f"stop_delay={float(stop_delay)}")
    if start_ok_wait is not None:
        standin_lines.append(f"start_ok_wait={float(start_ok_wait)}")
    if start_delay is not None:
        standin_lines.append(f"start_delay={float(start_delay)}")
    if not colour:
        standin_lines.append("colour=false")
    conf = "\n".join(
        [
            "[main]",
            *main_lines,
            "",
            "[hot_deploy]",
            "pickup_dir=../../pickup/incoming/services",
            "backup_history=100",
            "backup_format=bztar",
            "delete_after_pick_up=False",
            "max_batch_size=1000",
            "current_work_dir=./hot-deploy/current",
            "backup_work_dir=./hot-deploy/backup",
            "",
            "[odb]",
            "engine=sqlite",
            f"db_name={Path(odb).resolve()}",
            "",
            "[standin]",
            *standin_lines,
            "",
        ]
    )
    (repo / "server.conf").write_text(conf)
    if version != "4.1":
        entries = [*(service_sources or []), "./work/hot-deploy/current"]
        (repo / "service-sources.txt").write_bytes(sources_file(entries, sources_style).encode())
    (server_dir / "pickup" / "incoming" / "services" / "demo.py").write_text(DEMO_SERVICE)
    if environ:
        (server_dir / "standin-environ.json").write_text(json.dumps(environ))
    return server_dir


def sources_file(entries: list[str], style: str = "quickstart") -> str:
    """service-sources.txt holding `entries` after the shipped comments, ending the way `style` says."""
    lines = [*SERVICE_SOURCES_HEADER.splitlines(), *entries]
    if style == "quickstart":
        return "\n".join(lines)
    if style == "crlf":
        return "\r\n".join(lines) + "\r\n"
    if style == "trailing-blanks":
        return "\n".join([*lines[:-len(entries)], *(f"{e}  \t" for e in entries), "   ", "", ""]) + "\n"
    return "\n".join(lines) + "\n"


# ####################################################################################################################
# One server


@dataclass
class Server:
    """A handle on one stand-in server directory, with the operations tests need."""

    install: Install
    path: Path
    name: str
    version: str
    port: int

    @property
    def pickup_dir(self) -> Path:
        return self.path / "pickup" / "incoming" / "services"

    @property
    def current_dir(self) -> Path:
        return self.path / "work" / "hot-deploy" / "current"

    @property
    def log_path(self) -> Path:
        return self.path / "logs" / "server.log"

    @property
    def pidfile(self) -> Path:
        return self.path / "pidfile"

    @property
    def faults_path(self) -> Path:
        return self.path / "standin-faults.json"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the zato command --

    def zato(self, command: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`zato COMMAND PATH ARGS` (`wait` gets `--path PATH`)."""
        if command == "wait":
            return self.install.run("wait", "--path", str(self.path), *args, timeout=timeout)
        return self.install.run(command, str(self.path), *args, timeout=timeout)

    def start(self) -> subprocess.CompletedProcess[str]:
        return self.zato("start")

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.zato("stop")

    def info(self) -> dict:
        return json.loads(self.zato("info", "--format", "json").stdout)

    # -- observing --

    def pid(self) -> int | None:
        """The pid of the running server process (pidfile first, then standin-state.json), if it is alive."""
        candidates = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(self.pidfile.read_text().strip()))
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            candidates.append(int(json.loads((self.path / "standin-state.json").read_text())["pid"]))
        for pid in candidates:
            if _alive(pid) and str(self.install.server_script).encode() in _cmdline(pid):
                return pid
        return None

    def ping(self, timeout: float = 1.0) -> dict | None:
        """The JSON of `GET /zato/ping`, or None when nothing answers."""
        return _get_json(f"{self.base_url}/zato/ping", timeout)

    def services(self, timeout: float = 2.0) -> dict[str, str]:
        """Deployed services: {service name: sha256 of the module file it came from} (`GET /standin/services`)."""
        found = _get_json(f"{self.base_url}/standin/services", timeout)
        if found is None:
            raise ConnectionError(f"{self.name} does not answer on port {self.port}")
        return found

    def state(self) -> dict:
        """`<server>/standin-state.json`: pid, ready, services with their path and sha256 (readable when stopped)."""
        return json.loads((self.path / "standin-state.json").read_text())

    def log_text(self) -> str:
        """server.log with its rotated predecessors, oldest first."""
        parts = []
        rotated = sorted(
            self.path.joinpath("logs").glob("server.log.*"),
            key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
            reverse=True,
        )
        for path in [*rotated, self.log_path]:
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def count(self, needle: str | re.Pattern[str]) -> int:
        text = self.log_text()
        if isinstance(needle, str):
            return text.count(needle)
        return len(needle.findall(text))

    def wait_for_log(self, needle: str | re.Pattern[str], count: int = 1, timeout: float = 10.0) -> None:
        """Wait until `needle` (text or regex) occurs at least `count` times in the log; AssertionError if not."""
        deadline = time.monotonic() + timeout
        while self.count(needle) < count:
            if time.monotonic() > deadline:
                tail = self.log_text()[-3000:]
                raise AssertionError(f"{self.name}: {needle!r} x{count} not in the log after {timeout} s:\n{tail}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until /zato/ping answers."""
        deadline = time.monotonic() + timeout
        while self.ping(timeout=0.5) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not answering on port {self.port} after {timeout} s")
            time.sleep(0.05)

    def wait_stopped(self, pid: int | None = None, timeout: float = 15.0) -> None:
        """Wait until the server process is gone and its port is free."""
        pid = pid if pid is not None else self.pid()
        deadline = time.monotonic() + timeout
        while (pid is not None and _alive(pid)) or _listening(self.port):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} (pid {pid}) still running after {timeout} s")
            time.sleep(0.05)

    # -- fault injection --

    def set_faults(self, **faults: object) -> None:
        """Write `standin-faults.json` (see zato_server.Faults for every knob); replaces earlier faults."""
        self.faults_path.write_text(json.dumps(faults))

    def clear_faults(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.faults_path.unlink()

    # -- dropping modules --

    def drop(self, name: str, source: str) -> Path:
        """Write a module into the pickup dir the way `cp` does: open the final name, write, close."""
        target = self.pickup_dir / name
        target.write_text(source)
        return target


# ####################################################################################################################
# Clusters


@dataclass
class Cluster:
    """N servers of one version sharing one sqlite ODB and one events journal."""

    install: Install
    name: str
    version: str
    odb: Path
    events_path: Path
    servers: list[Server] = field(default_factory=list)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)

    def __getitem__(self, index: int) -> Server:
        return self.servers[index]

    def start_all(self, timeout: float = 30.0) -> None:
        """`zato start` on every server at once, then wait until each answers /zato/ping."""
        results: dict[str, subprocess.CompletedProcess[str]] = {}

        def start(server: Server) -> None:
            results[server.name] = server.start()

        threads = [threading.Thread(target=start, args=(s,)) for s in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        failed = {name: r for name, r in results.items() if r.returncode != 0}
        if failed:
            raise AssertionError(f"zato start failed: {failed}")
        for server in self.servers:
            server.wait_ready(timeout)

    def stop_all(self, timeout: float = 15.0) -> None:
        """`zato stop` on every running server, then wait until each process is gone and its port free."""
        pids = {}
        for server in self.servers:
            pids[server.name] = server.pid()
            if server.pidfile.exists():
                server.stop()
        for server in self.servers:
            server.wait_stopped(pids[server.name], timeout)

    def events(self) -> list[dict]:
        return read_events(self.events_path)

    def services(self) -> dict[str, dict[str, str]]:
        """{server name: {service name: sha256}} of every server (each must be running)."""
        return {server.name: server.services() for server in self.servers}

    def cleanup(self) -> list[int]:
        """Kill every stand-in process of this cluster's install (SIGKILL) and wait for them to go."""
        return self.install.kill_all()


def create_cluster(
    root: Path,
    n: int = 3,
    *,
    version: str = "3.2",
    cluster: str = "cluster1",
    install: Install | None = None,
    python: str = "python3",
    ports: list[int] | None = None,
    stop_delay: float | None = None,
    service_sources: list[str] | None = None,
    **server_kw: object,
) -> Cluster:
    """An install (unless given) plus `n` servers `server1..n` in `<root>/<cluster>/serverN` on free ports.

    `server_kw` goes to every `create_server` (sources_style, start_ok_wait, start_delay, colour, environ)."""
    root = Path(root).resolve()
    install = install or create_install(root / "install", python)
    base = root / cluster
    base.mkdir(parents=True, exist_ok=True)
    odb = base / "odb.sqlite"
    events = base / "events.jsonl"
    ports = ports or free_ports(n)
    result = Cluster(install, cluster, version, odb, events)
    for index in range(n):
        name = f"server{index + 1}"
        path = create_server(
            install,
            base / name,
            name=name,
            cluster=cluster,
            version=version,
            http_port=ports[index],
            odb=odb,
            events_journal=events,
            stop_delay=stop_delay,
            service_sources=service_sources,
            **server_kw,  # type: ignore[arg-type]
        )
        result.servers.append(Server(install, path, name, version, ports[index]))
    return result


@contextlib.contextmanager
def running_cluster(root: Path, n: int = 3, **kwargs: object) -> Iterator[Cluster]:
    """`create_cluster` + `start_all`; kills every process of the cluster on the way out, whatever happened."""
    cluster = create_cluster(root, n, **kwargs)  # type: ignore[arg-type]
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.cleanup()


# ####################################################################################################################
# Journal and misc helpers


def read_events(path: Path) -> list[dict]:
    """The events journal: `{"ts", "server", "event", "pid", ...}` records in the order they were written."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def max_down_at_once(events: list[dict], servers: list[str] | None = None) -> int:
    """How many servers were down at the same time, replaying the journal. A server is down from `stopping` (or
    `stopped`) until its next `ready`; servers are up before their first event, unless they start with `starting`.
    """
    names = servers or sorted({e["server"] for e in events})
    down = {name: False for name in names}
    first_seen: set[str] = set()
    worst = 0
    for event in sorted(events, key=lambda e: e["ts"]):
        name = event["server"]
        if name not in down:
            continue
        kind = event["event"]
        if kind in ("stopping", "stopped") or (kind == "starting" and name not in first_seen):
            down[name] = True
        elif kind == "ready":
            down[name] = False
        first_seen.add(name)
        worst = max(worst, sum(down.values()))
    return worst


def deployed_services(server: Server) -> dict[str, str]:
    """{service name: sha256 of its module file} of a running server."""
    return server.services()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports (all sockets held open until the end, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def kill_all_installs() -> list[int]:
    """Kill every stand-in server of every install this process created (the atexit safety net)."""
    killed = []
    for install in _installs:
        killed.extend(install.kill_all())
    return killed


atexit.register(kill_all_installs)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get_json(url: str, timeout: float) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}")
    except (OSError, ValueError):
        return None


def _sh_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
