"""The scale matrix (issue 9): servers x modules x scenarios, zato-gitops next to the floor, rsync and the peers.

For each server count (1, 10, 50 by default) one stand-in Zato 3.2 cluster runs behind three real sshd hosts on
127.0.0.1 (server i is reached through host i mod 3); for each module count (200, 2,000, 5,000) a fresh services
repository. Per cell, three scenarios, the tools measured side by side in the same minute:

  first    every module goes out. zato-gitops: `apply` into a clean cluster, converged when it exits 0 and a
           `plan` right after has nothing to do; rsync: a real `rsync -a --checksum` of services/ to every server
           (into a mirror dir, in parallel, 16 at once); Zato's own confirmation wait, read from the servers'
           log timestamps (first to last `Deployed` line). Only cells up to --first-cap server x modules get a
           timed first deploy (the stand-ins import every module on every server); the others are seeded
           untimed by writing the modules into every server's deployed dir, as a deploy leaves them.
  nothing  nothing changed. zato-gitops `apply` (warm state dir); the floor (bench/floor.py: one paramiko
           connection per host, one sha256sum per server over the same files observe hashes); rsync
           `--checksum --dry-run`.
  one      one module changed and committed. zato-gitops `apply` (drop, confirmation by every server, note);
           the floor plus one SFTP put; rsync `--checksum` for real.

ansible-core (builtin.copy; ansible.posix.synchronize from the `ansible` package) and pyinfra (files.sync) run the
same scenarios into their own mirror dirs, on the cells of --peer-cells only (minutes per scenario otherwise).

Every command is a process of its own; the figures are its wall time and its peak RSS (ru_maxrss from wait4, the
top process only: rsync's ssh and ansible's workers are not counted). Writes bench/scale-results.json,
bench/RESULTS-scale part of bench/RESULTS.md (between markers) and bench/scale.png (through the bench-only
virtualenv's matplotlib). Run as root through bench/run.sh --scale. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT), str(ROOT / "tests" / "e2e")]

from sshbed import Host, SSHBed  # noqa: E402

import bench as base  # noqa: E402
from tests.standin import Cluster, create_cluster  # noqa: E402

VENVS = base.VENVS
N_HOSTS = 3
#: a no-op apply with no memo (engine/noop.py): what the first no-op after a change costs
FULL_WAY = "zato-gitops apply, the full way"
SCENARIOS = ("first", "nothing", "one")
START = "<!-- scale matrix: written by bench/scale.py -->"
END = "<!-- end of scale matrix -->"


def log(msg: str) -> None:
    base.log(msg)


@dataclass
class Sample:
    tool: str
    servers: int
    modules: int
    scenario: str
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    note: str = ""
    #: CPU seconds (user + system) of the measured process and the local processes it waited for (git), not
    #: the servers' side: what the tool itself costs, which the 2-core test bed mixes into the wall time
    cpu: list[float] = field(default_factory=list)


#: the CPU seconds of the last `timed` command (user + system, with the children it waited for), per thread
_cpu = threading.local()


def last_cpu() -> float:
    return float(getattr(_cpu, "seconds", 0.0))


def timed(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
          ok: tuple[int, ...] = (0,)) -> tuple[float, float, str]:
    """Run argv; (wall seconds, peak RSS in MB of the process itself, output); its CPU seconds in `last_cpu()`.
    Raises on an unexpected exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    _cpu.seconds = usage.ru_utime + usage.ru_stime
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = b"".join(out_chunks).decode(errors="replace")
    if proc.returncode not in ok:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}:\n{out[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, out


# ####################################################################################################################
# The world of one server count


class Fleet:
    """N stand-in 3.2 servers behind the bed's hosts, started once and reused for every module count."""

    def __init__(self, bed: SSHBed, hosts: list[Host], n: int, workdir: Path) -> None:
        self.bed, self.hosts, self.n = bed, hosts, n
        self.dir = workdir / f"fleet-{n}"
        self.dir.mkdir()
        self.cluster: Cluster = create_cluster(self.dir / "zato", n, version="3.2", cluster="bench",
                                               python="/usr/bin/python3")
        bed.chown_to_user(self.dir)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda s: bed.run_as_user([str(self.cluster.install.zato), "start", str(s.path)]),
                          self.cluster.servers))
        for s in self.cluster.servers:
            s.wait_ready(timeout=120)

    def host_of(self, i: int) -> Host:
        return self.hosts[i % len(self.hosts)]

    def manifest(self) -> str:
        servers = "".join(
            f"      - {{name: {s.name}, host: {self.host_of(i).host}, port: {self.host_of(i).port}, "
            f"user: {self.bed.user}, path: {s.path}}}\n"
            for i, s in enumerate(self.cluster.servers)
        )
        return (
            "version: 1\nclusters:\n  - name: bench\n    zato_version: \"3.2\"\n"
            f"    zato_command: {self.cluster.install.zato}\n    confirm_timeout: 900\n"
            f"    servers:\n{servers}    hot_deploy:\n      - services/*.py\n"
        )

    def mirror(self, server_index: int, tool: str) -> Path:
        return self.cluster.servers[server_index].path / f"mirror-{tool}"

    def reset(self) -> None:
        """Empty every deployed dir, pickup dir (but Zato's demo.py) and mirror, between module counts."""
        for s in self.cluster.servers:
            for d in (s.pickup_dir, s.current_dir):
                for f in d.glob("*.py"):
                    if f.name != "demo.py":
                        f.unlink()
            for m in s.path.glob("mirror-*"):
                shutil.rmtree(m)
            staging = s.path / "work" / "zato-gitops"
            shutil.rmtree(staging, ignore_errors=True)

    def seed(self, services: Path) -> None:
        """Untimed: every module in every server's deployed dir, as a finished deploy leaves it."""
        for s in self.cluster.servers:
            for f in services.glob("*.py"):
                shutil.copyfile(f, s.current_dir / f.name)
            self.bed.chown_to_user(s.current_dir)

    def deployed_lines(self) -> list[tuple[float, str]]:
        """(timestamp, server) of every `Deployed` line in every server's log."""
        out = []
        pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*Deployed \d+ service")
        for s in self.cluster.servers:
            if not s.log_path.exists():
                continue
            for line in s.log_path.read_text(errors="replace").splitlines():
                m = pattern.match(line)
                if m:
                    ts = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(m[2]) / 1000
                    out.append((ts, s.name))
        return out

    def floor_spec(self, path: Path) -> Path:
        spec = {
            "user": self.bed.user, "key": str(self.bed.client_key), "known_hosts": str(self.bed.known_hosts),
            "servers": [
                {"host": self.host_of(i).host, "port": self.host_of(i).port,
                 "dirs": [str(s.current_dir), str(s.pickup_dir)], "pickup": str(s.pickup_dir)}
                for i, s in enumerate(self.cluster.servers)
            ],
        }
        path.write_text(json.dumps(spec))
        return path

    def close(self) -> None:
        self.cluster.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


class Repo:
    """A services repository of `m` modules of 1-5 KB (bench.module_source) and the fleet's manifest."""

    def __init__(self, m: int, manifest: str) -> None:
        import random

        self.path = Path(tempfile.mkdtemp(prefix=f"zgs-repo-{m}-", dir="/tmp"))
        self.services = self.path / "services"
        self.services.mkdir()
        rng = random.Random(m)
        for i in range(m):
            (self.services / f"bench_svc_{i:05d}.py").write_text(base.module_source(i, rng.randint(1024, 5 * 1024)))
        (self.path / "zato-gitops.yaml").write_text(manifest)
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"{m} modules")
        self.edits = 0

    def git(self, *args: str) -> None:
        base.run(["git", "-C", str(self.path), *args], env=os.environ | base.GIT_ENV)

    def change_one(self) -> Path:
        self.edits += 1
        target = self.services / "bench_svc_00042.py"
        target.write_text(target.read_text() + f"\n# edit {self.edits}\n")
        self.git("commit", "-q", "-am", f"edit {self.edits}")
        return target

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# ####################################################################################################################
# The tools


class Cell:
    """One (servers, modules) cell: runs each tool's command for a scenario and records the figures."""

    def __init__(self, fleet: Fleet, repo: Repo, scratch: Path, results: dict[tuple[str, int, int, str], Sample],
                 profile_dir: Path | None) -> None:
        self.fleet, self.repo, self.scratch, self.results = fleet, repo, scratch, results
        self.state = scratch / "state"
        self.profile_dir = profile_dir
        self.floor_json = fleet.floor_spec(scratch / "floor.json")

    def record(self, tool: str, scenario: str, seconds: float, rss: float, note: str = "",
               cpu: float | None = None) -> None:
        key = (tool, self.fleet.n, len(list(self.repo.services.glob("*.py"))), scenario)
        s = self.results.setdefault(key, Sample(*key))
        s.seconds.append(seconds)
        s.rss_mb.append(rss)
        if cpu is not None:
            s.cpu.append(cpu)
        if note:
            s.note = note
        log(f"  {tool:28} {self.fleet.n:>3} x {key[2]:>5} {scenario:8} {seconds:7.2f} s  {rss:6.1f} MB {note}")

    def zato(self, command: str = "apply", ok: tuple[int, ...] = (0,), profile: str = "") -> tuple[float, float]:
        bed = self.fleet.bed
        argv = [sys.executable, "-m", "reconciler", command, "--repo", str(self.repo.path),
                "--identity", str(bed.client_key), "--known-hosts", str(bed.known_hosts),
                "--state-dir", str(self.state), "--json"]
        if profile and self.profile_dir is not None:
            out = self.profile_dir / f"{profile}.txt"
            argv = [str(VENVS / "tools" / "bin" / "py-spy"), "record", "--format", "raw", "--rate", "250", "--idle",
                    "--threads", "-o", str(out), "--", *argv]
        seconds, rss, _ = timed(argv, env=os.environ | base.GIT_ENV, cwd=ROOT, ok=ok)
        return seconds, rss

    def floor(self, put: Path | None = None) -> tuple[float, float]:
        argv = [sys.executable, str(BENCH / "floor.py"), str(self.floor_json)]
        if put is not None:
            argv += ["--put", str(put)]
        seconds, rss, _ = timed(argv)
        return seconds, rss

    def rsync(self, *, dry_run: bool) -> tuple[float, float]:
        """rsync --checksum of services/ into every server's mirror dir, 16 at once (each over its own ssh)."""
        bed = self.fleet.bed
        peak = [0.0]
        lock = threading.Lock()

        def one(i: int) -> None:
            host = self.fleet.host_of(i)
            ssh = (f"ssh -i {bed.client_key} -o UserKnownHostsFile={bed.known_hosts} -o StrictHostKeyChecking=yes "
                   f"-o BatchMode=yes -p {host.port}")
            argv = ["rsync", "-a", "--checksum", *(["--dry-run"] if dry_run else []), "-e", ssh,
                    f"{self.repo.services}/", f"{bed.user}@{host.host}:{self.fleet.mirror(i, 'rsync')}/"]
            _, rss, _ = timed(argv)
            with lock:
                peak[0] = max(peak[0], rss)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(one, range(self.fleet.n)))
        return time.perf_counter() - t0, peak[0]

    # -- scenarios ---------------------------------------------------------------------------------------------

    def first(self, timed_first: bool) -> None:
        fleet = self.fleet
        for i in range(fleet.n):  # rsync's mirrors: created empty, so its first run copies everything
            fleet.mirror(i, "rsync").mkdir()
        fleet.bed.chown_to_user(fleet.dir)
        if not timed_first:
            fleet.seed(self.repo.services)
            self.rsync(dry_run=False)  # seeds the mirrors, untimed
            self.zato()  # warms the state dir (clone, fact cache), untimed: a no-op
            return
        started = time.time() - 0.001  # the logs' timestamps have millisecond resolution
        seconds, rss = self.zato(profile=f"first-{fleet.n}x{self.modules}")
        converged = self._plan_is_empty()
        lines = [line for line in fleet.deployed_lines() if line[0] >= started]
        self.record("zato-gitops apply", "first", seconds, rss, "" if converged else "did not converge in one apply")
        if lines:
            stamps = sorted(t for t, _ in lines)
            self.record("Zato's confirmation wait", "first", stamps[-1] - stamps[0], 0.0,
                        f"{len(lines)} Deployed lines, first to last")
        self.record("rsync --checksum", "first", *self.rsync(dry_run=False))

    def _plan_is_empty(self) -> bool:
        bed = self.fleet.bed
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "--repo", str(self.repo.path), "--identity",
             str(bed.client_key), "--known-hosts", str(bed.known_hosts), "--state-dir", str(self.state)],
            cwd=ROOT, env=os.environ | base.GIT_ENV, capture_output=True, check=False,
        )
        return proc.returncode == 0

    @property
    def modules(self) -> int:
        return len(list(self.repo.services.glob("*.py")))

    def nothing(self, rounds: int) -> None:
        # untimed: the first apply after a deploy hashes the files it has not seen settle (their ctime less than 2 s
        # old) and writes each server's hash cache; every later reconcile starts from it, as these rounds do. It
        # finds nothing to do, so it keeps the no-op memo the timed `zato-gitops apply` rounds answer from
        self.zato()
        for r in range(rounds):  # interleaved, so each ratio is measured in the same minute
            self.record("zato-gitops apply", "nothing", *self.zato(
                profile=f"nothing-{self.fleet.n}x{self.modules}" if r == 0 else ""), cpu=last_cpu() if r else None)
            self.record("floor: paramiko + sha256sum", "nothing", *self.floor(), cpu=last_cpu())
            self.record("rsync --checksum", "nothing", *self.rsync(dry_run=True))
            # the first no-op after a change has no memo (engine/noop.py) and goes the full way; it keeps the memo
            (self.state / "noop.json").unlink(missing_ok=True)
            self.record(FULL_WAY, "nothing", *self.zato(), cpu=last_cpu())
            seconds, rss, _ = timed([sys.executable, "-c", "import reconciler.cli.commands, reconciler.engine.chain"],
                                    cwd=ROOT)
            self.record("zato-gitops start-up only", "nothing", seconds, rss, "python + imports, no work")

    def one(self, rounds: int) -> None:
        for r in range(rounds):
            changed = self.repo.change_one()
            self.record("zato-gitops apply", "one", *self.zato(
                profile=f"one-{self.fleet.n}x{self.modules}" if r == 0 else ""))
            self.record("floor: paramiko + sha256sum", "one", *self.floor(put=changed))
            self.record("rsync --checksum", "one", *self.rsync(dry_run=False))


# ####################################################################################################################
# The peers, on small cells only


class Peer:
    name = ""

    def __init__(self, cell: Cell, scratch: Path) -> None:
        self.cell, self.scratch = cell, scratch
        fleet = cell.fleet
        for i in range(fleet.n):
            fleet.mirror(i, self.slug).mkdir(exist_ok=True)
        fleet.bed.chown_to_user(fleet.dir)
        self.prepare()

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z]+", "-", self.name.lower()).strip("-")

    def prepare(self) -> None: ...

    def argv(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def run(self) -> tuple[float, float]:
        argv, env = self.argv()
        seconds, rss, _ = timed(argv, env=os.environ | env, cwd=self.scratch)
        return seconds, rss


class AnsiblePeer(Peer):
    venv = "ansible"
    task = ""

    def prepare(self) -> None:
        fleet, bed = self.cell.fleet, self.cell.fleet.bed
        lines = ["[zato]"]
        for i, s in enumerate(fleet.cluster.servers):
            h = fleet.host_of(i)
            lines.append(f"{s.name} ansible_host={h.host} ansible_port={h.port} dest_dir={fleet.mirror(i, self.slug)}")
        ssh_args = f"-o UserKnownHostsFile={bed.known_hosts} -o StrictHostKeyChecking=yes"
        lines += ["[zato:vars]", f"ansible_user={bed.user}", f"ansible_ssh_private_key_file={bed.client_key}",
                  f"ansible_ssh_common_args='{ssh_args}'", "ansible_python_interpreter=/usr/bin/python3"]
        (self.scratch / "hosts.ini").write_text("\n".join(lines) + "\n")
        (self.scratch / "deploy.yml").write_text(self.task.replace("SRC", str(self.cell.repo.services)))
        (self.scratch / "ansible.cfg").write_text(
            "[defaults]\nforks = 16\nhost_key_checking = True\nretry_files_enabled = False\n"
            f"[ssh_connection]\npipelining = True\nssh_args = -C -o ControlMaster=auto -o ControlPersist=60s "
            f"{ssh_args}\n")
        (self.scratch / "cp").mkdir(exist_ok=True)

    def argv(self) -> tuple[list[str], dict[str, str]]:
        env = {"ANSIBLE_CONFIG": str(self.scratch / "ansible.cfg"), "ANSIBLE_HOME": str(self.scratch / "home"),
               "ANSIBLE_LOCAL_TEMP": str(self.scratch / "tmp"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.scratch / "cp")}
        return [str(VENVS / self.venv / "bin" / "ansible-playbook"), "-i", "hosts.ini", "deploy.yml"], env


class AnsibleCopy(AnsiblePeer):
    name = "ansible-core: builtin.copy"
    task = textwrap.dedent("""\
        - hosts: zato
          gather_facts: false
          tasks:
            - ansible.builtin.copy: {src: "SRC/", dest: "{{ dest_dir }}/", mode: "0644"}
        """)


class AnsibleSynchronize(AnsiblePeer):
    name = "ansible: posix.synchronize"
    venv = "ansible-full"
    task = textwrap.dedent("""\
        - hosts: zato
          gather_facts: false
          tasks:
            - ansible.posix.synchronize: {src: "SRC/", dest: "{{ dest_dir }}/", checksum: true, use_ssh_args: true}
        """)


class PyinfraSync(Peer):
    name = "pyinfra: files.sync"

    def prepare(self) -> None:
        fleet, bed = self.cell.fleet, self.cell.fleet.bed
        hosts = []
        for i, s in enumerate(fleet.cluster.servers):
            h = fleet.host_of(i)
            hosts.append((f"{s.name}@{h.host}", {
                "ssh_hostname": h.host, "ssh_port": h.port, "ssh_user": bed.user, "ssh_key": str(bed.client_key),
                "ssh_known_hosts_file": str(bed.known_hosts), "ssh_strict_host_key_checking": "yes",
                "dest_dir": str(fleet.mirror(i, self.slug)), "src_dir": str(self.cell.repo.services)}))
        (self.scratch / "inventory.py").write_text(f"zato = {hosts!r}\n")
        (self.scratch / "deploy.py").write_text(
            "from pyinfra import host\nfrom pyinfra.operations import files\n\n"
            "files.sync(name='sync', src=host.data.src_dir, dest=host.data.dest_dir)\n")

    def argv(self) -> tuple[list[str], dict[str, str]]:
        return [str(VENVS / "pyinfra" / "bin" / "pyinfra"), "-y", "--parallel", "16", "inventory.py",
                "deploy.py"], {}


PEERS: dict[str, Callable[[Cell, Path], Peer]] = {
    "ansible-copy": AnsibleCopy, "ansible-synchronize": AnsibleSynchronize, "pyinfra-sync": PyinfraSync,
}


#: ansible's builtin.copy takes minutes per scenario even for one server: it runs on the first peer cell only
SLOW_PEERS = ("ansible-copy",)


def run_peers(cell: Cell, names: list[str], first_cell: bool) -> None:
    for name in names:
        if name in SLOW_PEERS and not first_cell:
            continue
        scratch = cell.scratch / f"peer-{name}"
        scratch.mkdir()
        try:
            peer = PEERS[name](cell, scratch)
            for scenario in SCENARIOS:
                if scenario == "one":
                    cell.repo.change_one()
                cell.record(peer.name, scenario, *peer.run())
        except (RuntimeError, OSError) as e:
            log(f"  {name} failed: {str(e)[:500]}")
            cell.results.setdefault((PEERS[name].name, cell.fleet.n, cell.modules, "first"),  # type: ignore[attr-defined]
                                    Sample(PEERS[name].name, cell.fleet.n, cell.modules, "first",  # type: ignore[attr-defined]
                                           note=f"failed: {str(e).splitlines()[0][:200]}"))


# ####################################################################################################################
# Report


def median(s: Sample | None) -> float | None:
    return statistics.median(s.seconds) if s and s.seconds else None


def ratio_line(title: str, limit: float, cells: list[tuple[int, int, float | None, float | None]]) -> list[str]:
    """`- **title**: met/NOT met; worst ratio, and every cell's ratio (a / b), for the cells measured."""
    pairs = [(n, m, a, b) for n, m, a, b in cells if a and b]
    if not pairs:
        return []
    n, m, a, b = max(pairs, key=lambda r: r[2] / r[3])
    met = all(x / y <= limit for _, _, x, y in pairs)
    return [f"- **{title}**: {'met' if met else 'NOT met'}; worst {a / b:.2f}x at {n} x {m} ({a:.2f} s vs "
            f"{b:.2f} s). Per cell: " + ", ".join(f"{n}x{m} {x / y:.2f}x" for n, m, x, y in pairs) + "."]


def targets(results: dict[tuple[str, int, int, str], Sample], cells: list[tuple[int, int]]) -> list[str]:
    def get(tool: str, n: int, m: int, sc: str) -> float | None:
        return median(results.get((tool, n, m, sc)))

    out = []
    z, f = "zato-gitops apply", "floor: paramiko + sha256sum"
    out += ratio_line("No-op within 1.5x the floor at every size", 1.5,
                      [(n, m, get(z, n, m, "nothing"), get(f, n, m, "nothing")) for n, m in cells])
    net = []
    for n, m in cells:
        noop, start = get(z, n, m, "nothing"), get("zato-gitops start-up only", n, m, "nothing")
        net.append((n, m, noop - start if noop and start and noop > start else None, get(f, n, m, "nothing")))
    out += [line.replace("- **", "- (not a target) **", 1) for line in ratio_line(
        "No-op less zato-gitops's fixed start-up (Python, imports), against the floor", 1.5, net)]
    for n in sorted({n for n, _ in cells}):
        lo, hi = get(z, n, 200, "nothing"), get(z, n, 5000, "nothing")
        if lo and hi:
            out.append(f"- **No-op flat in modules** ({n} server{'s' if n > 1 else ''}): 5,000 modules "
                       f"{hi:.2f} s vs 200 modules {lo:.2f} s = {hi / lo:.2f}x; target 1.3x "
                       f"{'met' if hi / lo <= 1.3 else 'NOT met'}.")
    for n in sorted({n for n, _ in cells}):
        lo_s, hi_s = results.get((z, n, 200, "nothing")), results.get((z, n, 5000, "nothing"))
        fl_lo, fl_hi = results.get((f, n, 200, "nothing")), results.get((f, n, 5000, "nothing"))
        if lo_s and hi_s and lo_s.cpu and hi_s.cpu:
            lo, hi = statistics.median(lo_s.cpu), statistics.median(hi_s.cpu)
            floor_txt = ""
            if fl_lo and fl_hi and fl_lo.cpu and fl_hi.cpu:
                a, b = statistics.median(fl_lo.cpu), statistics.median(fl_hi.cpu)
                floor_txt = f" (the floor's own: {b:.2f} s vs {a:.2f} s = {b / a:.2f}x)"
            out.append(f"- (not a target) **No-op flat in modules, by the tool's own CPU** ({n} server"
                       f"{'s' if n > 1 else ''}; the servers' side left out): 5,000 modules {hi:.2f} s vs 200 "
                       f"modules {lo:.2f} s = {hi / lo:.2f}x{floor_txt}.")
    first = results.get((z, 10, 2000, "first"))
    rs, wait = get("rsync --checksum", 10, 2000, "first"), get("Zato's confirmation wait", 10, 2000, "first")
    if first and rs is not None and wait is not None:
        bound = 2 * rs + wait
        conv = "converged in one apply" if not first.note else first.note
        out.append(f"- **First deploy, 10 x 2,000**: {median(first):.2f} s, {conv}; parallel rsync {rs:.2f} s, "
                   f"Zato's confirmation wait {wait:.2f} s; target 2 x rsync + wait = {bound:.2f} s "
                   f"{'met' if median(first) <= bound else 'NOT met'}.")  # type: ignore[operator]
    out += [line.replace("- **", "- (not a target) **", 1) for line in ratio_line(
        "No-op the full way (no memo: the first no-op after a change) within 1.5x the floor", 1.5,
        [(n, m, get(FULL_WAY, n, m, "nothing"), get(f, n, m, "nothing")) for n, m in cells])]
    out += ratio_line("One changed module within 1.5x the no-op", 1.5,
                      [(n, m, get(z, n, m, "one"), get(z, n, m, "nothing")) for n, m in cells])
    out += [line.replace("- **", "- (not a target) **", 1) for line in ratio_line(
        "One changed module within 1.5x the full-way no-op", 1.5,
        [(n, m, get(z, n, m, "one"), get(FULL_WAY, n, m, "nothing")) for n, m in cells])]
    rss = [(s.servers, s.modules, s.scenario, max(s.rss_mb)) for s in results.values() if s.tool == z and s.rss_mb]
    big = [r for r in rss if (r[0], r[1]) == max(cells)]
    if big:
        peak = max(r[3] for r in big)
        out.append(f"- **Peak RSS at {max(cells)[0]} x {max(cells)[1]}**: {peak:.0f} MB; target < 150 MB "
                   f"{'met' if peak < 150 else 'NOT met'}.")
    return out


def write(results: dict[tuple[str, int, int, str], Sample], cells: list[tuple[int, int]], info: dict[str, str],
          notes: list[str], out: Path, plot: str) -> None:
    lines = [START, "", "## Scale matrix (issue 9)", "",
             f"Written by `bench/scale.py` on {info['date']}. Stand-in Zato 3.2 clusters of 1 to 50 servers behind "
             "three real sshd hosts on 127.0.0.1; repositories of 200 to 5,000 flat modules of 1-5 KB. The sshd "
             "hosts, the stand-in servers (each polling its ODB) and the tools share the machine's "
             f"{info['cores']} cores: absolute figures are noisy, which is why every ratio below is from commands "
             "run side by side in the same cell, interleaved round by round. Wall time is the median of the rounds; "
             "RSS is the peak of the measured process itself; *no-op CPU* its user and system seconds (with the "
             "local processes it ran, git), the servers' side left out.", "", "### Targets", "",
             *targets(results, cells), ""]
    if notes:
        lines += ["### Caps, and how the run went", "", *[f"- {n}" for n in notes], ""]
    lines += [f"![cost against module count]({plot})", "", "### Table", "",
              "| tool | servers | modules | first deploy | nothing changed | one changed | no-op CPU | peak RSS | n "
              "| note |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    tools = sorted({k[0] for k in results}, key=lambda t: (not t.startswith("zato"), t))
    for n, m in cells:
        for tool in tools:
            row = [results.get((tool, n, m, sc)) for sc in SCENARIOS]
            if not any(row):
                continue
            cells_txt = [f"{median(s):.2f} s" if median(s) is not None else "-" for s in row]
            rss = max((max(s.rss_mb) for s in row if s and s.rss_mb), default=0.0)
            runs = "/".join(str(len(s.seconds)) if s else "-" for s in row)
            note = "; ".join(s.note for s in row if s and s.note)
            nothing = results.get((tool, n, m, "nothing"))
            cpu = f"{statistics.median(nothing.cpu):.2f} s" if nothing and nothing.cpu else "-"
            lines.append(f"| {tool} | {n} | {m} | " + " | ".join(cells_txt)
                         + f" | {cpu} | {f'{rss:.0f} MB' if rss else '-'} | {runs} | {note} |")
    lines += ["", END]
    text = out.read_text() if out.exists() else "# Benchmark results\n"
    if START in text and END in text:
        text = text[: text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    out.write_text(text)


def make_plot(raw: Path, png: Path) -> None:
    python = VENVS / "tools" / "bin" / "python"
    if not python.exists():
        log(f"no {python}: run bench/run.sh --scale, which creates it with matplotlib; no plot")
        return
    subprocess.run([str(python), str(BENCH / "plot_scale.py"), str(raw), str(png)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="1,10,50")
    parser.add_argument("--modules", default="200,2000,5000")
    parser.add_argument("--first-cap", type=int, default=20_000,
                        help="time a first deploy only where servers x modules <= this (the stand-ins import "
                             "every module on every server); seed the others untimed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the no-op scenario")
    parser.add_argument("--one-rounds", type=int, default=2, help="rounds of the one-changed scenario")
    parser.add_argument("--peers", default="pyinfra-sync,ansible-copy,ansible-synchronize")
    parser.add_argument("--peer-cells", default="1x200,10x200,10x2000",
                        help="cells where the peers run (ansible's builtin.copy: the smallest only)")
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of zato-gitops into bench/profiles")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--raw", type=Path, default=BENCH / "scale-results.json")
    parser.add_argument("--png", type=Path, default=BENCH / "scale.png")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: write RESULTS.md and the plot again from --raw")
    parser.add_argument("--keep", action="store_true",
                        help="keep the samples of --raw for cells this run does not measure (finish a broken run)")
    args = parser.parse_args()
    if args.report_only:
        raw = json.loads(args.raw.read_text())
        samples = {(x["tool"], x["servers"], x["modules"], x["scenario"]): Sample(**x) for x in raw["samples"]}
        write(samples, [tuple(c) for c in raw["cells"]], raw["machine"], raw["notes"], args.out,  # type: ignore[misc]
              args.png.name)
        make_plot(args.raw, args.png)
        return 0
    if os.geteuid() != 0:
        parser.error("run as root: the SSH bed creates a dedicated test user (see tests/e2e/sshbed.py)")
    servers = [int(x) for x in args.servers.split(",")]
    modules = [int(x) for x in args.modules.split(",")]
    cells = [(n, m) for n in servers for m in modules]
    peer_cells = {tuple(int(v) for v in c.split("x")) for c in args.peer_cells.split(",") if c}
    peers = [p for p in args.peers.split(",") if p]
    profile_dir = BENCH / "profiles" if args.profile else None
    if profile_dir:
        profile_dir.mkdir(exist_ok=True)
    results: dict[tuple[str, int, int, str], Sample] = {}
    info = base.machine()
    if args.keep and args.raw.exists():
        kept = json.loads(args.raw.read_text())
        for raw in kept["samples"]:
            if (raw["servers"], raw["modules"]) not in cells:
                sample = Sample(**raw)
                results[(sample.tool, sample.servers, sample.modules, sample.scenario)] = sample
        cells = sorted({*cells, *(tuple(c) for c in kept["cells"])})  # type: ignore[misc]
        info["date"] = f"{kept['machine']['date']} to {info['date']}"
    notes = [f"first deploy timed where servers x modules <= {args.first_cap:,}; larger cells were seeded untimed "
             "(the modules written into every server's deployed dir) and measured for the no-op and one change",
             f"{', '.join(peers) or 'no peer'} ran on {', '.join(sorted(f'{a}x{b}' for a, b in peer_cells))} only"
             + (f", and ansible's builtin.copy on {'x'.join(map(str, min(peer_cells)))} only"
                if "ansible-copy" in peers else "") + ": they take minutes per scenario beyond that"]
    if "ansible-copy" not in peers:
        notes.append("ansible's builtin.copy was not run: 111-167 s per scenario at 1 x 200 (the run of 2026-11-29 "
                     "20:08 UTC), and on Zato 3.2 it deploys nothing (the 3-server tables above)")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    notes += [f"zato-gitops ran from {head.stdout.strip() or 'this checkout'} with its bytecode compiled; one untimed "
              "no-op before the timed rounds writes the servers' hash caches and the no-op memo",
              "peak RSS is read when the bench reaps each command, and counts the command from its fork: a figure at "
              "the bench's own size (45-70 MB here) says the command stayed below it"]

    def save() -> None:
        args.raw.write_text(json.dumps({"machine": info, "cells": cells, "notes": notes,
                                        "samples": [s.__dict__ for s in results.values()]}, indent=1))
        write(results, cells, info, notes, args.out, args.png.name)

    # an installed zato-gitops has its bytecode (pip compiles it); a checkout run with PYTHONDONTWRITEBYTECODE set
    # (as on the machine of the 2026-11-29 runs) would compile every module from source on every command instead
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler")], check=True,
                   stdout=subprocess.DEVNULL)
    bed = SSHBed()
    try:
        hosts = [bed.add_host(f"scale{i + 1}") for i in range(N_HOSTS)]
        for n in servers:
            log(f"fleet of {n} servers")
            fleet = Fleet(bed, hosts, n, bed.workdir)
            try:
                for m in modules:
                    fleet.reset()
                    repo = Repo(m, fleet.manifest())
                    scratch = Path(tempfile.mkdtemp(prefix="zgs-scratch-", dir="/tmp"))
                    try:
                        cell = Cell(fleet, repo, scratch, results, profile_dir)
                        log(f"cell {n} x {m}")
                        cell.first(timed_first=n * m <= args.first_cap)
                        cell.nothing(args.rounds)
                        cell.one(args.one_rounds)
                        if (n, m) in peer_cells:
                            run_peers(cell, peers, first_cell=(n, m) == min(peer_cells))
                    except RuntimeError as e:  # one tool failing must not lose the cells measured so far
                        log(f"cell {n} x {m} stopped: {str(e)[:2000]}")
                        notes.append(f"cell {n} x {m} stopped early: {str(e).splitlines()[0][:200]}")
                    finally:
                        repo.close()
                        shutil.rmtree(scratch, ignore_errors=True)
                    save()
            finally:
                fleet.close()
    finally:
        bed.close()
    save()
    make_plot(args.raw, args.png)
    log(f"wrote {args.out}, {args.raw}, {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
