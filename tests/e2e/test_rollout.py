"""Issue 3 end to end: static installs (service_sources, service-sources.txt, extra_paths) released by
health-gated rolling restarts, on real sshd, real git and the Zato stand-in (whose events journal records every
stop and start, so "never two servers down at once" is checked from the servers' side)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from world import ROOT, World, git, service_module

from tests.standin.harness import free_ports

pytestmark = pytest.mark.e2e

INVOICE = service_module("CreateInvoice", name="billing.create-invoice")
REFUND = service_module("Refund", name="billing.refund")
STATIC = [{"path": "static/billing", "target": "./static/billing"}]


def sources_file(world: World, i: int = 0) -> str:
    return (world.servers[i].path / "config" / "repo" / "service-sources.txt").read_text()


def test_a_static_directory_restarts_each_server_once_never_two_down(world: World) -> None:
    ss = world.servers[0].path / "config" / "repo" / "service-sources.txt"
    operator_line = "# an operator's own comment\n./operator-services\n"
    for s in world.servers:
        p = s.path / "config" / "repo" / "service-sources.txt"
        p.write_text(operator_line + p.read_text())
    before = ss.read_text()
    starts = world.events("starting")
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC),
                  "static/billing/invoice.py": INVOICE, "static/billing/refund.py": REFUND,
                  "static/billing/README.md": "not a module"})

    r = world.cli("plan")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "restart required" in r.stdout
    assert "static/billing/invoice.py" in r.stdout

    t0 = time.time()
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    after_starts = world.events("starting")
    assert {k: after_starts[k] - starts[k] for k in starts} == {"server1": 1, "server2": 1, "server3": 1}
    assert world.max_down_since(t0) == 1
    for i, s in enumerate(world.servers):
        services = s.services()
        assert "billing.create-invoice" in services and "billing.refund" in services
        text = sources_file(world, i)
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines[-1] == "./work/hot-deploy/current"
        assert "./static/billing" in lines
        # every line that was there before is still there, in order
        kept = [line for line in before.splitlines() if line.strip()]
        assert [line for line in lines if line in kept] == kept
        assert sorted(p.name for p in (s.path / "static" / "billing").iterdir()) == ["invoice.py", "refund.py"]

    # the second apply restarts nothing
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.events("starting") == after_starts
    assert world.cli("plan").returncode == 0

    # a removed file is removed from every server, with one more restart each
    world.commit({"static/billing/refund.py": None})
    assert world.cli("apply").returncode == 0
    for s in world.servers:
        assert not (s.path / "static" / "billing" / "refund.py").exists()
        assert "billing.refund" not in s.services()
    notes = git(world.origin, "log", "--notes=zato-gitops", "--format=%N")
    assert '"action":"restart"' in notes.replace(" ", "")


def test_a_server_whose_start_fails_is_rolled_back_and_the_rollout_halts(world: World) -> None:
    world.set_faults(world.servers[1], fail_start_times=1)
    starts = world.events("starting")
    t0 = time.time()
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC), "static/billing/invoice.py": INVOICE})
    r = world.cli("apply")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "server2" in r.stdout and "halted" in r.stdout
    assert "zato start` exited 18" in r.stdout
    s1, s2, s3 = world.servers
    assert "billing.create-invoice" in s1.services()  # before it: done
    assert s2.ping() is not None, r.stdout + r.stderr  # it: running again, on its previous files
    assert "billing.create-invoice" not in s2.services()
    assert not (s2.path / "static" / "billing" / "invoice.py").exists()
    assert "./static/billing" not in sources_file(world, 1)
    assert world.events("starting")["server3"] == starts["server3"]  # after it: untouched
    assert not (s3.path / "static").exists()
    code, rollouts = world.cli_json("rollouts")
    assert code == 0
    assert rollouts[0]["status"] == "halted"
    assert world.max_down_since(t0) == 1


def test_a_module_that_fails_to_import_at_start_is_caught_from_the_log(world: World) -> None:
    broken = "import a_module_that_does_not_exist\n" + INVOICE
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC), "static/billing/invoice.py": broken})
    starts = world.events("starting")
    r = world.cli("apply")
    assert r.returncode == 1, r.stdout
    assert "Could not load source" in r.stdout
    assert "server1" in r.stdout
    s1 = world.servers[0]
    assert s1.ping() is not None
    assert not (s1.path / "static" / "billing" / "invoice.py").exists()  # previous files back
    after = world.events("starting")
    assert after["server1"] - starts["server1"] == 2  # the restart, and the one on the previous files
    assert after["server2"] == starts["server2"] and after["server3"] == starts["server3"]


def test_extra_paths_shared_by_two_servers_of_one_host_are_written_once(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(n=2)
    world.host_of = [0, 0]  # both servers behind one sshd: one host, one install
    extra_dir = str(world.cluster.install.extra_paths)
    uses = "from acme import RATE\n" + service_module("Price", name="acme.price", body="return RATE")
    starts = world.events("starting")
    world.commit({
        "zato-gitops.yaml": world.manifest(service_sources=STATIC, extra_paths=[{"path": "libs/acme"}],
                                           extra_paths_dir=extra_dir),
        "libs/acme/__init__.py": "RATE = 7\n", "libs/acme/data/rates.txt": "7\n",
        "static/billing/price.py": uses,
    })
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (world.cluster.install.extlib / "acme" / "__init__.py").read_text() == "RATE = 7\n"
    assert (world.cluster.install.extlib / "acme" / "data" / "rates.txt").exists()
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1}
    for s in world.servers:
        assert "acme.price" in s.services()
    records = [json.loads(line) for line in git(world.origin, "notes", "--ref", "zato-gitops", "show", "HEAD")
               .splitlines()]
    restarts = {r["server"]: r for r in records if r["action"] == "restart"}
    extra_files = {s: [f for f in r["files"] if f.startswith(extra_dir)] for s, r in restarts.items()}
    assert len(extra_files["server1"]) == 2 and extra_files["server2"] == []  # written once, by the first


def test_a_window_defers_the_restart_while_the_hot_deploy_goes_out_at_once(world: World) -> None:
    starts = world.events("starting")
    world.commit({
        "zato-gitops.yaml": world.manifest(service_sources=STATIC, rollout={"window": "0 2 * * *"}),
        "static/billing/invoice.py": INVOICE, "services/crm.py": service_module("GetCustomer"),
    })
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scheduled" in r.stdout
    for s in world.servers:
        assert "crm.get-customer" in s.services()  # the hot-deploy went out
        assert "billing.create-invoice" not in s.services()
    assert world.events("starting") == starts  # nobody restarted
    _code, rollouts = world.cli_json("rollouts")
    [pending] = [x for x in rollouts if x["status"] == "pending"]
    assert pending["window"] == "0 2 * * *"

    # two more commits before the window coalesce into one pending rollout of the newest commit
    world.commit({"static/billing/refund.py": REFUND})
    newest = world.commit({"static/billing/refund.py": REFUND.replace("pass", "return 1")})
    assert world.cli("apply").returncode == 0
    _, rollouts = world.cli_json("rollouts")
    open_ = [x for x in rollouts if x["status"] == "pending"]
    assert [x["commit"] for x in open_] == [newest]
    assert world.events("starting") == starts

    # an operator runs it now instead of waiting
    r = world.cli("rollouts", "resume", open_[0]["id"])
    assert r.returncode == 0, r.stdout + r.stderr
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1, "server3": 1}
    for s in world.servers:
        assert "billing.refund" in s.services()


def test_a_reconciler_killed_mid_rollout_finishes_it_without_restarting_a_server_twice(world: World) -> None:
    for s in world.servers:
        world.set_faults(s, start_delay=1.0)
    commit = world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC),
                           "static/billing/invoice.py": INVOICE})
    starts = world.events("starting")
    t0 = time.time()
    cmd = [sys.executable, "-m", "reconciler", "apply", "--repo", str(world.origin), "--identity",
           str(world.bed.client_key), "--known-hosts", str(world.bed.known_hosts), "--state-dir", str(world.state_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while world.events("stopping")["server2"] == 0:
            assert proc.poll() is None, "apply ended before the rollout reached server2"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _code, rollouts = world.cli_json("rollouts")
    assert rollouts[0]["status"] == "interrupted"  # killed mid-way: no run works on it any more

    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1, "server3": 1}
    assert world.max_down_since(t0) == 1
    for s in world.servers:
        assert "billing.create-invoice" in s.services()
    _, rollouts = world.cli_json("rollouts")
    assert rollouts[0]["status"] == "finished"
    # the history has no gap: server1's restart by the killed run was recorded by the next one, server2's
    # interrupted step and its finish, and server3
    note = git(world.origin, "notes", "--ref=zato-gitops", "show", commit)
    restarts = [json.loads(line) for line in note.splitlines() if '"restart"' in line]
    assert {r["server"] for r in restarts if r["outcome"] == "ready"} == {"server1", "server2", "server3"}
    assert [r["outcome"] for r in restarts if r["server"] == "server2"] == ["interrupted", "ready"]


# --- HAProxy drain, against a real HAProxy ---------------------------------------------------------------------
def haproxy_cmd(sock: Path, cmd: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def statuses(sock: Path) -> dict[str, str]:
    rows = haproxy_cmd(sock, "show stat").splitlines()
    header = rows[0].lstrip("# ").split(",")
    out = {}
    for row in rows[1:]:
        cols = dict(zip(header, row.split(","), strict=False))
        if cols.get("pxname") == "zato" and cols.get("svname", "").startswith("server"):
            out[cols["svname"]] = cols["status"]
    return out


@pytest.fixture
def haproxy(world: World) -> Iterator[Path]:
    exe = "/usr/sbin/haproxy"
    if not Path(exe).exists():
        pytest.fail("the drain test needs HAProxy: apt-get install -y haproxy", pytrace=False)
    d = world.root / "haproxy"
    d.mkdir()
    sock = d / "admin.sock"
    [front] = free_ports(1)
    servers = "\n".join(f"  server {s.name} 127.0.0.1:{s.port} check inter 100ms rise 1 fall 1"
                        for s in world.servers)
    cfg = d / "haproxy.cfg"
    cfg.write_text(f"""global
  stats socket {sock} mode 666 level admin
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend f
  bind 127.0.0.1:{front}
  default_backend zato
backend zato
  option httpchk GET /zato/ping
{servers}
""")
    proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (sock.exists() and set(statuses(sock).values()) == {"UP"}):
            assert time.monotonic() < deadline, "HAProxy did not come up"
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(5)


def test_haproxy_drains_each_server_around_its_restart(world: World, haproxy: Path) -> None:
    import threading

    seen: dict[str, set[str]] = {s.name: set() for s in world.servers}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for name, status in statuses(haproxy).items():
                seen[name].add(status)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        world.commit({"zato-gitops.yaml": world.manifest(
            service_sources=STATIC, rollout={"haproxy": {"socket": str(haproxy), "backend": "zato"}}),
            "static/billing/invoice.py": INVOICE})
        r = world.cli("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "HAProxy zato/server2: drain" in r.stderr
    finally:
        done.set()
        sampler.join()
    for name, states in seen.items():
        assert "DRAIN" in states, (name, states)
    deadline = time.monotonic() + 5
    while set(statuses(haproxy).values()) != {"UP"}:
        assert time.monotonic() < deadline, statuses(haproxy)
        time.sleep(0.05)
