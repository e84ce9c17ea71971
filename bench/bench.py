"""Benchmark zato-gitops against ansible-core, pyinfra and a bare paramiko floor on one workload.

The workload (see bench/README.md): three real sshd hosts from the e2e test bed, one stand-in Zato server per
host, the three servers in one cluster; a git repository with 200 flat service modules of 1-5 KB and a
zato-gitops.yaml manifest. Every tool runs three scenarios in a row on a freshly started cluster:

  first     the pickup dirs hold only Zato's demo.py: everything is deployed
  nothing   the same again: nothing changed
  one       one module changed (and committed)

A round is one fresh cluster plus the three scenarios; a tool gets `--rounds` rounds and the table shows the
median per scenario. Between scenarios (untimed) the bench waits for the servers to go quiet and checks, through
the stand-in's HTTP API, how many of the 200 modules every server really deployed: ansible and pyinfra only copy
files, so that column says whether the copy led to a deploy.

Run it through bench/run.sh, which builds the tools' virtualenvs first. Must run as root (the bed creates a test
user); it is too slow for CI.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

from sshbed import SSHBed  # noqa: E402

from tests.standin import Cluster, create_cluster  # noqa: E402

VENVS = BENCH / ".venvs"
N_MODULES = 200
N_HOSTS = 3
SCENARIOS = ("first", "nothing", "one")
SCENARIO_TITLES = {"first": "first deploy", "nothing": "nothing changed", "one": "one file changed"}

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "zato-gitops bench",
    "GIT_AUTHOR_EMAIL": "bench@zato-gitops.invalid",
    "GIT_COMMITTER_NAME": "zato-gitops bench",
    "GIT_COMMITTER_EMAIL": "bench@zato-gitops.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(argv: list[str], *, ok: tuple[int, ...] = (0,), **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, and fail loudly (with its output) on an unexpected exit code."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode not in ok:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# ####################################################################################################################
# The services repository


def module_source(index: int, size: int) -> str:
    """A valid Zato service module of about `size` bytes (a docstring'd class plus a table of constants)."""
    head = textwrap.dedent(
        f'''\
        """Bench service {index:03d}: answers with a row of its table."""

        from zato.server.service import Service

        TABLE = (
        '''
    )
    tail = textwrap.dedent(
        f'''\
        )


        class BenchService{index:03d}(Service):
            """Returns one row of TABLE."""

            def handle(self):
                self.response.payload = TABLE[{index} % len(TABLE)]
        '''
    )
    rows = []
    row = 0
    while len(head) + len(tail) + sum(map(len, rows)) < size:
        rows.append(f'    "service {index:03d} row {row:04d}: {"x" * 40}",\n')
        row += 1
    return head + "".join(rows) + tail


class ServicesRepo:
    """A git repository with services/*.py and zato-gitops.yaml; `path / "services"` is what the other tools copy."""

    def __init__(self, path: Path, manifest: str, seed: int = 20260) -> None:
        self.path = path
        self.services = path / "services"
        self.services.mkdir(parents=True)
        rng = random.Random(seed)
        for i in range(N_MODULES):
            (self.services / f"bench_svc_{i:03d}.py").write_text(module_source(i, rng.randint(1024, 5 * 1024)))
        (path / "zato-gitops.yaml").write_text(manifest)
        self.git("init", "-q", "-b", "main")
        self.commit("200 bench services")
        self.edits = 0

    def git(self, *args: str) -> None:
        run(["git", "-C", str(self.path), *args], env=os.environ | GIT_ENV)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def change_one(self) -> None:
        self.edits += 1
        target = self.services / "bench_svc_042.py"
        target.write_text(target.read_text() + f"\n# edit {self.edits}\n")
        self.commit(f"change bench_svc_042 ({self.edits})")

    def expected(self) -> set[str]:
        """sha256 of every module at the working tree (= the branch head)."""
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in self.services.glob("*.py")}


def manifest_yaml(cluster: Cluster, version: str, hosts: list, user: str) -> str:
    servers = "".join(
        f"      - name: {server.name}\n"
        f"        host: {host.host}\n"
        f"        port: {host.port}\n"
        f"        user: {user}\n"
        f"        path: {server.path}\n"
        for server, host in zip(cluster.servers, hosts, strict=True)
    )
    return (
        "version: 1\nclusters:\n  - name: bench\n"
        f'    zato_version: "{version}"\n'
        f"    zato_command: {cluster.install.zato}\n"
        f"    servers:\n{servers}"
        "    hot_deploy:\n      - services/*.py\n"
    )


# ####################################################################################################################
# One round: a fresh cluster on the bed's hosts, a fresh repository


@dataclass
class Round:
    bed: SSHBed
    version: str
    dir: Path
    cluster: Cluster
    repo: ServicesRepo
    hosts: list

    @property
    def pickup_dirs(self) -> list[str]:
        return [str(s.pickup_dir) for s in self.cluster.servers]

    def settle(self, quiet: float = 1.0, limit: float = 120.0) -> None:
        """Wait (untimed) until no server's log has grown for `quiet` seconds: the servers finished deploying."""
        deadline = time.monotonic() + limit
        last: list[int] = []
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            sizes = [s.log_path.stat().st_size if s.log_path.exists() else 0 for s in self.cluster.servers]
            if sizes != last:
                last, still_since = sizes, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                return
            time.sleep(0.1)

    def deployed(self) -> int:
        """How many of the head's modules EVERY server runs (the stand-in reports each service's module sha256)."""
        expected = self.repo.expected()
        counts = [len(expected & set(s.services().values())) for s in self.cluster.servers]
        return min(counts)

    def close(self) -> None:
        self.cluster.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def new_round(bed: SSHBed, hosts: list, version: str, label: str) -> Round:
    base = bed.workdir / label
    base.mkdir()
    cluster = create_cluster(base / "zato", N_HOSTS, version=version, cluster="bench", python="/usr/bin/python3")
    bed.chown_to_user(base)
    # The servers run as the SSH user, like a real Zato install runs as `zato`.
    for server in cluster.servers:
        bed.run_as_user([str(cluster.install.zato), "start", str(server.path)])
    for server in cluster.servers:
        server.wait_ready()
    repo_dir = Path(tempfile.mkdtemp(prefix="zgb-repo-", dir="/tmp"))
    shutil.rmtree(repo_dir)
    repo = ServicesRepo(repo_dir, manifest_yaml(cluster, version, hosts, bed.user))
    return Round(bed, version, base, cluster, repo, hosts)


# ####################################################################################################################
# The tools. Each is a callable on a Round, prepared once per round (`prepare`) and timed per scenario (`run`).


class Tool:
    name = ""
    #: cluster versions this tool is measured on (the generic tools copy the same bytes whatever the version, so
    #: they run on the 3.2 cluster only; zato-gitops and the cheap floor run on both)
    versions: tuple[str, ...] = ("3.2",)

    def prepare(self, rnd: Round, scratch: Path) -> None:
        """Untimed set-up for a round (inventory files, state dirs)."""

    def before(self, rnd: Round) -> dict[str, float]:
        """Other timed commands to run before `run` in each scenario: {row name: seconds}."""
        return {}

    def run(self, rnd: Round) -> None:
        raise NotImplementedError


class ZatoGitops(Tool):
    """`python -m reconciler apply` (fetch, observe, plan, upload, wait for every server's log); `plan` timed too."""

    name = "zato-gitops apply"
    versions = ("3.2", "4.1")

    def prepare(self, rnd: Round, scratch: Path) -> None:
        self.state = scratch / "state-apply"
        self.plan_state = scratch / "state-plan"
        bed = rnd.bed
        self.common = ["--repo", str(rnd.repo.path), "--identity", str(bed.client_key),
                       "--known-hosts", str(bed.known_hosts)]

    def cli(self, command: str, state: Path, ok: tuple[int, ...]) -> None:
        argv = [sys.executable, "-m", "reconciler", command, *self.common, "--state-dir", str(state), "--json"]
        run(argv, ok=ok, cwd=ROOT, env=os.environ | GIT_ENV)

    def before(self, rnd: Round) -> dict[str, float]:
        # plan with its own state dir (its own clone), so apply's first deploy still pays for its own clone
        t0 = time.perf_counter()
        self.cli("plan", self.plan_state, ok=(0, 2))
        return {"zato-gitops plan": time.perf_counter() - t0}

    def run(self, rnd: Round) -> None:
        self.cli("apply", self.state, ok=(0,))


class Floor(Tool):
    """Not a product: per host one paramiko connection (TCP_NODELAY), one sha256sum exec, SFTP puts of what differs."""

    name = "floor: paramiko + sha256sum + SFTP"
    versions = ("3.2", "4.1")

    def run(self, rnd: Round) -> None:
        local = {p.name: p.read_bytes() for p in rnd.repo.services.glob("*.py")}
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in local.items()}
        errors: list[BaseException] = []

        def one(host: object, pickup: str) -> None:
            try:
                sock = socket.create_connection((host.host, host.port), timeout=10)  # type: ignore[attr-defined]
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client = paramiko.SSHClient()
                client.load_host_keys(str(rnd.bed.known_hosts))
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
                client.connect(host.host, host.port, rnd.bed.user, key_filename=str(rnd.bed.client_key),  # type: ignore[attr-defined]
                               sock=sock, look_for_keys=False, allow_agent=False)
                try:
                    _, out, _ = client.exec_command(f"cd {pickup} && sha256sum -- *.py")
                    remote = dict(reversed(line.split("  ", 1)) for line in out.read().decode().splitlines())
                    sftp = client.open_sftp()
                    for name, data in local.items():
                        if remote.get(name) != digests[name]:
                            with sftp.open(f"{pickup}/{name}", "wb") as f:
                                f.write(data)
                    sftp.close()
                finally:
                    client.close()
            except BaseException as e:  # re-raised in the main thread
                errors.append(e)

        threads = [threading.Thread(target=one, args=hp) for hp in zip(rnd.hosts, rnd.pickup_dirs, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


class AnsibleCopy(Tool):
    """ansible-playbook: one ansible.builtin.copy of the services directory into each server's pickup dir."""

    name = "ansible-core: builtin.copy"
    venv = "ansible"

    def prepare(self, rnd: Round, scratch: Path) -> None:
        bed = rnd.bed
        lines = ["[zato]"]
        for i, (host, pickup) in enumerate(zip(rnd.hosts, rnd.pickup_dirs, strict=True)):
            lines.append(f"host{i + 1} ansible_host={host.host} ansible_port={host.port} pickup_dir={pickup}")
        lines += [
            "[zato:vars]",
            f"ansible_user={bed.user}",
            f"ansible_ssh_private_key_file={bed.client_key}",
            f"ansible_ssh_common_args='-o UserKnownHostsFile={bed.known_hosts} -o StrictHostKeyChecking=yes'",
            "ansible_python_interpreter=/usr/bin/python3",
        ]
        self.inventory = scratch / "hosts.ini"
        self.inventory.write_text("\n".join(lines) + "\n")
        self.playbook = scratch / "deploy.yml"
        self.playbook.write_text(self.tasks())
        cfg = scratch / "ansible.cfg"
        # pipelining on and forks >= hosts: ansible's own advice for speed; ssh ControlPersist is on by default.
        cfg.write_text("[defaults]\nforks = 10\nhost_key_checking = True\nretry_files_enabled = False\n"
                       "[ssh_connection]\npipelining = True\n")
        cp_dir = scratch / "cp"  # kept short: unix socket paths are limited to 107 bytes
        cp_dir.mkdir()
        self.env = os.environ | {
            "ANSIBLE_CONFIG": str(cfg),
            "ANSIBLE_HOME": str(scratch / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(scratch / "ansible-tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp_dir),
        }
        self.src = rnd.repo.services

    def tasks(self) -> str:
        return textwrap.dedent(
            """\
            - hosts: zato
              gather_facts: false
              tasks:
                - name: copy the services into the pickup dir
                  ansible.builtin.copy:
                    src: "{{ src_dir }}/"
                    dest: "{{ pickup_dir }}/"
                    mode: "0644"
            """
        )

    def run(self, rnd: Round) -> None:
        run([str(VENVS / self.venv / "bin" / "ansible-playbook"), "-i", str(self.inventory),
             "-e", f"src_dir={self.src}", str(self.playbook)], env=self.env, cwd=self.inventory.parent)


class PyinfraTool(Tool):
    """pyinfra CLI with an inventory of the three hosts and a deploy file (see subclasses)."""

    deploy = ""

    def prepare(self, rnd: Round, scratch: Path) -> None:
        bed = rnd.bed
        hosts = []
        for i, (host, pickup) in enumerate(zip(rnd.hosts, rnd.pickup_dirs, strict=True)):
            data = {
                "ssh_hostname": host.host, "ssh_port": host.port, "ssh_user": bed.user,
                "ssh_key": str(bed.client_key), "ssh_known_hosts_file": str(bed.known_hosts),
                "ssh_strict_host_key_checking": "yes", "pickup_dir": pickup, "src_dir": str(rnd.repo.services),
            }
            hosts.append((f"host{i + 1}", data))
        self.inventory = scratch / "inventory.py"
        self.inventory.write_text(f"zato = {hosts!r}\n")
        self.deploy_file = scratch / "deploy.py"
        self.deploy_file.write_text(self.deploy)

    def run(self, rnd: Round) -> None:
        run([str(VENVS / "pyinfra" / "bin" / "pyinfra"), "-y", str(self.inventory), str(self.deploy_file)],
            cwd=self.inventory.parent)


class PyinfraSync(PyinfraTool):
    name = "pyinfra: files.sync"
    deploy = textwrap.dedent(
        """\
        from pyinfra import host
        from pyinfra.operations import files

        files.sync(name="sync the services", src=host.data.src_dir, dest=host.data.pickup_dir)
        """
    )


class PyinfraPut(PyinfraTool):
    name = "pyinfra: files.put per file"
    deploy = textwrap.dedent(
        """\
        import os

        from pyinfra import host
        from pyinfra.operations import files

        for name in sorted(os.listdir(host.data.src_dir)):
            files.put(name=f"put {name}", src=os.path.join(host.data.src_dir, name),
                      dest=f"{host.data.pickup_dir}/{name}")
        """
    )


TOOLS: dict[str, Callable[[], Tool]] = {
    "ansible-copy": AnsibleCopy,
    "zato-gitops": ZatoGitops,
    "floor": Floor,
    "pyinfra-sync": PyinfraSync,
    "pyinfra-put": PyinfraPut,
}


# ####################################################################################################################
# Measuring


@dataclass
class Measurement:
    tool: str
    version: str
    scenario: str
    seconds: list[float] = field(default_factory=list)
    deployed: list[int] = field(default_factory=list)  # modules every server runs after the scenario


def measure_round(tool: Tool, rnd: Round, scratch: Path, results: dict[tuple[str, str, str], Measurement]) -> None:
    tool.prepare(rnd, scratch)
    for scenario in SCENARIOS:
        if scenario == "one":
            rnd.repo.change_one()
        for name, seconds in tool.before(rnd).items():
            results.setdefault((name, rnd.version, scenario), Measurement(name, rnd.version, scenario)).seconds.append(
                seconds
            )
            log(f"  {name} {rnd.version} {scenario}: {seconds:.2f} s")
        t0 = time.perf_counter()
        tool.run(rnd)
        seconds = time.perf_counter() - t0
        rnd.settle()
        deployed = rnd.deployed()
        m = results.setdefault((tool.name, rnd.version, scenario), Measurement(tool.name, rnd.version, scenario))
        m.seconds.append(seconds)
        m.deployed.append(deployed)
        log(f"  {tool.name} {rnd.version} {scenario}: {seconds:.2f} s, {deployed}/{N_MODULES} deployed everywhere")


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()

    def venv_version(venv: str, package: str) -> str:
        pip = VENVS / venv / "bin" / "pip"
        if not pip.exists():
            return "not installed"
        out = subprocess.run([str(pip), "show", package], capture_output=True, text=True, check=False).stdout
        return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version")), "?")

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "openssh": ssh,
        "paramiko (zato-gitops, floor)": paramiko.__version__,
        "ansible-core": venv_version("ansible", "ansible-core"),
        "pyinfra": venv_version("pyinfra", "pyinfra"),
        "paramiko (pyinfra)": venv_version("pyinfra", "paramiko"),
    }


ROW_ORDER = ["zato-gitops apply", "zato-gitops plan", "floor: paramiko + sha256sum + SFTP",
             "pyinfra: files.sync", "pyinfra: files.put per file", "ansible-core: builtin.copy"]


def write_results(results: dict[tuple[str, str, str], Measurement], info: dict[str, str], path: Path) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/bench.py` on {info['date']}. How to read this: bench/README.md.",
        "",
        "Wall clock in seconds, median of the runs (n = runs; each run is a freshly started cluster). "
        "*deployed* is how many of the 200 modules every one of the three servers was running once the "
        "servers had gone quiet after the scenario (the stand-in reports each service's module sha256).",
        "",
    ]
    versions = sorted({m.version for m in results.values()})
    for version in versions:
        fan = ("one drop fans out to the cluster through the ODB" if version != "4.1"
               else "no fan-out: every server needs its own copy")
        titles = " | ".join(SCENARIO_TITLES[s] for s in SCENARIOS)
        lines += [f"## Zato {version} cluster, 3 servers on 3 sshd hosts ({fan})", "",
                  f"| tool | {titles} | n | deployed (first / nothing / one) |",
                  "| --- | " + " | ".join("---:" for _ in SCENARIOS) + " | ---: | --- |"]
        names = [n for n in ROW_ORDER if any(k[0] == n and k[1] == version for k in results)]
        for name in names:
            cells, runs, deployed = [], set(), []
            for scenario in SCENARIOS:
                m = results.get((name, version, scenario))
                if m is None:
                    cells.append("-")
                    deployed.append("-")
                    continue
                cells.append(f"{statistics.median(m.seconds):.2f} s")
                runs.add(len(m.seconds))
                deployed.append("-" if not m.deployed else f"{min(m.deployed)}")
            n = "/".join(str(r) for r in sorted(runs))
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {n} | {' / '.join(deployed)} |")
        lines.append("")
    lines += ["## Raw runs (seconds)", "", "| tool | version | scenario | runs |", "| --- | --- | --- | --- |"]
    for (name, version, scenario), m in sorted(results.items(), key=lambda kv: (kv[0][1], ROW_ORDER.index(kv[0][0]))):
        lines.append(f"| {name} | {version} | {scenario} | {', '.join(f'{s:.2f}' for s in m.seconds)} |")
    lines += ["", "## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {', '.join(TOOLS)}")
    parser.add_argument("--versions", default="3.2,4.1", help="Zato versions of the cluster (3.2, 4.1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (fresh clusters) per tool and version")
    parser.add_argument("--slow-rounds", type=int, default=1,
                        help="rounds for ansible-copy, which takes minutes per scenario")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--raw", type=Path, default=BENCH / "results.json", help="raw timings as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the SSH bed creates a dedicated test user (see tests/e2e/sshbed.py)")

    tools = [TOOLS[name.strip()]() for name in args.tools.split(",") if name.strip()]
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    results: dict[tuple[str, str, str], Measurement] = {}
    info = machine()
    bed = SSHBed()
    try:
        hosts = [bed.add_host(f"bench{i + 1}") for i in range(N_HOSTS)]
        log(f"bed: {', '.join(h.address for h in hosts)} as {bed.user}")
        for tool in tools:
            rounds = args.slow_rounds if isinstance(tool, AnsibleCopy) else args.rounds
            for version in versions:
                if version not in tool.versions:
                    continue
                for r in range(rounds):
                    label = f"{tool.name.split(':')[0].replace(' ', '-')}-{version}-{r}"
                    log(f"{tool.name}, Zato {version}, round {r + 1}/{rounds}")
                    rnd = new_round(bed, hosts, version, label)
                    scratch = Path(tempfile.mkdtemp(prefix="zgb-scratch-", dir="/tmp"))
                    try:
                        measure_round(tool, rnd, scratch, results)
                    finally:
                        rnd.close()
                        shutil.rmtree(rnd.repo.path, ignore_errors=True)
                        shutil.rmtree(scratch, ignore_errors=True)
                    write_results(results, info, args.out)  # after every round, so a long run can be watched
    finally:
        bed.close()
    args.raw.write_text(json.dumps({"machine": info, "runs": [m.__dict__ for m in results.values()]}, indent=2))
    write_results(results, info, args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
