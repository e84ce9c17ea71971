"""Issue 8 end to end: the rollout carries out its plan, a second reconciler (its own state dir) is kept off the
cluster by the lease on the servers, and a server lost right after its stop is brought back first.

Real sshd, real git, the stand-in Zato; "never two down" is read from the stand-in's events journal, what each
server runs from its own `/standin/services`, and history from the git notes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from world import ROOT, World, git, service_module

pytestmark = pytest.mark.e2e

STATIC = [{"path": "static/billing", "target": "./static/billing"}]
INVOICE = service_module("CreateInvoice", name="billing.create-invoice")
#: a static service whose name says which RATE (an extra_paths package) the server imported at its start
PRICE = ("from zato.server.service import Service\nfrom acme import RATE\n\n\n"
         "class Price(Service):\n    name = 'acme.price-%s' % RATE\n\n    def handle(self):\n        pass\n")


def records(world: World, commit: str = "HEAD") -> list[dict[str, object]]:
    out = git(world.origin, "notes", "--ref", "zato-gitops", "show", commit)
    return [json.loads(line) for line in out.splitlines()]


def apply_proc(world: World, state_dir: Path) -> subprocess.Popen[str]:
    args = world.common_args()
    args[args.index("--state-dir") + 1] = str(state_dir)
    return subprocess.Popen([sys.executable, "-m", "reconciler", "apply", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=os.environ | {"COLUMNS": "200", "NO_COLOR": "1"})


def wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen[str] | None = None,
               timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{what}: the apply ended first (exit {proc.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


def test_only_shared_extra_paths_change_both_servers_of_the_host_restart(world_factory: Callable[..., World]) -> None:
    world = world_factory(n=2)
    world.host_of = [0, 0]  # both servers behind one sshd: one host, one install, one zato_extra_paths
    extra_dir = str(world.cluster.install.extra_paths)
    manifest = world.manifest(service_sources=STATIC, extra_paths=[{"path": "libs/acme"}], extra_paths_dir=extra_dir)
    world.commit({"zato-gitops.yaml": manifest, "libs/acme/__init__.py": "RATE = 7\n",
                  "static/billing/price.py": PRICE})
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    for s in world.servers:
        assert "acme.price-7" in s.services()

    starts = world.events("starting")
    t0 = time.time()
    commit = world.commit({"libs/acme/__init__.py": "RATE = 8\n"})  # nothing else changes
    r = world.cli("plan")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "restart required on server1, server2" in r.stdout
    assert "written by server1" in r.stdout
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1}
    assert world.max_down_since(t0) == 1
    for s in world.servers:  # both run the new shared code, not only the one that wrote it
        services = s.services()
        assert "acme.price-8" in services and "acme.price-7" not in services, (s.name, services)
    restarts = {x["server"]: x for x in records(world, commit) if x["action"] == "restart"}
    assert {k: v["outcome"] for k, v in restarts.items()} == {"server1": "ready", "server2": "ready"}
    assert [f for f in restarts["server1"]["files"] if str(f).startswith(extra_dir)]  # type: ignore[attr-defined]
    assert restarts["server2"]["files"] == []  # restarted for the shared files, without writing them again
    assert world.cli("plan").returncode == 0


def test_two_reconcilers_with_their_own_state_dirs_never_work_on_one_cluster_at_once(world: World) -> None:
    for s in world.servers:
        world.set_faults(s, start_delay=0.5)
    commit = world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC),
                           "static/billing/invoice.py": INVOICE})
    starts = world.events("starting")
    t0 = time.time()
    first = apply_proc(world, world.state_dir)
    wait_until("the first reconciler stops server1", lambda: world.events("stopping")["server1"] > 0, first)
    second = apply_proc(world, world.root.parent / f"{world.root.name}-state-b")
    out2, err2 = second.communicate(timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 1, out2 + err2
    assert "error: cluster prod is being reconciled by " in err2 and f"(pid {first.pid})" in err2, err2
    assert "hint:" in err2
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1, "server3": 1}
    assert world.max_down_since(t0) == 1
    for s in world.servers:
        assert "billing.create-invoice" in s.services()
        assert (s.path / "static" / "billing" / "invoice.py").read_text() == INVOICE
    # the second reconciler, once the first is done, finds the commit applied and changes nothing
    again = apply_proc(world, world.root.parent / f"{world.root.name}-state-b")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert world.events("starting") == after
    assert {x["server"] for x in records(world, commit) if x["action"] == "restart"} == {
        "server1", "server2", "server3"}


@pytest.mark.parametrize("how", ["apply", "rollouts resume"])
def test_sshd_killed_right_after_a_stop_brings_that_server_back_first(world: World, how: str) -> None:
    for s in world.servers:
        world.set_faults(s, start_delay=0.3)
    commit = world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC,
                                                              rollout={"ready_timeout": 3.0}),
                           "static/billing/invoice.py": INVOICE})
    starts = world.events("starting")
    t0 = time.time()
    proc = apply_proc(world, world.state_dir)
    host2 = world.hosts[1]
    try:
        wait_until("server2 stopped", lambda: world.events("stopped")["server2"] > 0, proc)
        host2.stop()  # server2's machine drops off the network right after its stop
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err
        assert "server2" in err and "trying again" in err, err
        assert world.servers[1].ping() is None  # left stopped: we could not reach it
        assert world.events("stopping")["server3"] == 0  # and nobody else was stopped
        _, rollouts = world.cli_json("rollouts")
        # no run works on it any more: shown as interrupted, with why
        assert rollouts[0]["status"] == "interrupted" and "server2 cannot be reached" in rollouts[0]["message"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        host2.start()

    mark = time.time()
    r = world.cli(*how.split(), *([rollouts[0]["id"]] if how != "apply" else []))
    assert r.returncode == 0, r.stdout + r.stderr
    later = sorted((e for e in world.cluster.events() if e["ts"] >= mark), key=lambda e: e["ts"])
    order = [(e["server"], e["event"]) for e in later if e["event"] in ("ready", "stopping")]
    assert order[:2] == [("server2", "ready"), ("server3", "stopping")], order  # server2 first, then server3
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1, "server3": 1}
    assert world.max_down_since(t0) == 1
    for s in world.servers:
        assert "billing.create-invoice" in s.services()
    _, rollouts = world.cli_json("rollouts")
    assert rollouts[0]["status"] == "finished"
    restarts = {x["server"]: x["outcome"] for x in records(world, commit) if x["action"] == "restart"}
    assert restarts == {"server1": "ready", "server2": "ready", "server3": "ready"}
