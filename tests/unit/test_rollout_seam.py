"""The rollout, the cluster lease and hot_deploy against the recording fake transport (tests/unit/fakes.py).

What these pin (issue 8): the rollout carries out the persisted plan (a server whose host's shared extra_paths were
written by another server is still restarted); a reconciler killed after any call resumes and converges with
every server started once and never two down; a server lost right after its stop is retried, or left for the
next run, which brings it back before any other server is stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.apply.hotdeploy import hot_deploy
from reconciler.apply.lease import Lease, LeaseHeld, LeaseSite
from reconciler.apply.rollout import RolloutRunner
from reconciler.apply.rollouts import DOWN
from reconciler.apply.store import RolloutStore
from reconciler.core.plan import plan_cluster
from reconciler.core.state import (
    DesiredCluster,
    LogMark,
    Module,
    ObservedCluster,
    ObservedServer,
    ServerPaths,
    StaticFile,
    StaticTree,
)
from reconciler.errors import Interrupted, ReconcilerError
from reconciler.manifest.model import Cluster
from reconciler.transport import RunResult
from tests.unit.fakes import FakeServer, FakeTransport, sha

EXTLIB = "/opt/zato/extlib"


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the call that raises it runs."""


def tree(kind: str, repo: str, target: str, mode: str, content: dict[str, bytes]) -> StaticTree:
    return StaticTree(kind, repo, target, mode,  # type: ignore[arg-type]
                      {k: StaticFile(k, f"{repo}/{k}", sha(v), v) for k, v in content.items()})


class Bed:
    """n servers of cluster prod (servers on one `host` share one filesystem), a store, desired files."""

    def __init__(self, tmp: Path, n: int = 3, *, hosts: Sequence[int] | None = None, version: str = "3.2",
                 sources: dict[str, bytes] | None = None, extras: dict[str, bytes] | None = None) -> None:
        hosts = list(hosts or range(n))
        self.spec = Cluster.model_validate({
            "name": "prod", "zato_version": version, "zato_command": "/opt/zato/bin/zato",
            "servers": [{"name": f"server{i + 1}", "host": f"h{h}", "path": f"/srv/server{i + 1}"}
                        for i, h in enumerate(hosts)],
            "rollout": {"ready_timeout": 5}})
        fs: dict[int, dict[str, bytes]] = {}
        journal: list[tuple[str, str]] = []
        self.servers = [
            FakeServer(s.name, s.path, files=fs.setdefault(h, {}), journal=journal, pid=100 * (i + 1))
            for i, (s, h) in enumerate(zip(self.spec.servers, hosts, strict=True))]
        for srv in self.servers:
            srv.files[f"{srv.server_dir}/config/repo/service-sources.txt"] = b"./work/hot-deploy/current\n"
            srv.say(f"Started `{srv.name}@prod` (pid: {srv.pid})")
        self.journal = journal
        self.transports = {s.name: FakeTransport(s) for s in self.servers}
        srcs = (tree("source", "static/billing", "static/billing", "flat", sources),) if sources else ()
        exts = (tree("extra", "libs/acme", f"{EXTLIB}/acme", "tree", extras),) if extras else ()
        self.desired = DesiredCluster(self.spec, {}, srcs, exts, ("./static/billing",) if sources else ())
        tmp.mkdir(parents=True, exist_ok=True)
        self.store = RolloutStore(f"sqlite:///{tmp / 'store.sqlite'}")

    def observe(self) -> ObservedCluster:
        out = []
        for s, srv in zip(self.spec.servers, self.servers, strict=True):
            d = srv.server_dir
            paths = ServerPaths(d, f"{d}/pickup", f"{d}/work", f"{d}/work/hot-deploy/current",
                                f"{d}/logs/server.log", f"{d}/config/repo/service-sources.txt", "0.0.0.0:17010")
            static = {}
            for t in (*self.desired.sources, *self.desired.extras):
                base = t.path_on(d)
                static[base] = {p[len(base) + 1 :]: sha(b) for p, b in srv.files.items() if p.startswith(base + "/")}
            text = srv.files.get(paths.service_sources)
            deployed = {p.rsplit("/", 1)[1]: sha(b) for p, b in srv.files.items() if p.startswith(f"{d}/pickup/")}
            out.append(ObservedServer("prod", s, paths, deployed, {}, LogMark(paths.log, len(srv.log), srv.inode),
                                      srv.running, self.spec.zato_version, srv.pid, static,
                                      text.decode() if text is not None else None))
        return ObservedCluster("prod", tuple(out))

    def rollout(self) -> str:
        cp = plan_cluster(self.desired, self.observe())
        r = self.store.create("prod", "c0ffee", {x.server: x.to_dict() for x in cp.restarts}, status="running",
                              window=None)
        return r.id

    def runner(self, **kw: Any) -> RolloutRunner:
        kw.setdefault("sleep", lambda _s: None)
        return RolloutRunner(self.store, self.desired, self.transports, poll=0.0, **kw)

    def timeless_runner(self) -> RolloutRunner:
        """A runner whose backoff sleeps only move its own clock: ready_timeout passes at once."""
        now = [0.0]

        def sleep(s: float) -> None:
            now[0] += s

        return self.runner(sleep=sleep, clock=lambda: now[0])

    def max_down(self) -> int:
        down: set[str] = set()
        worst = 0
        for event, server in self.journal:
            (down.add if event == "stopped" else down.discard)(server)
            worst = max(worst, len(down))
        return worst

    def starts(self) -> dict[str, int]:
        return {s.name: sum(1 for e, n in self.journal if e == "started" and n == s.name) for s in self.servers}


BILLING = {"invoice.py": b"class Invoice: pass\n"}
ACME = {"__init__.py": b"RATE = 7\n", "data/rates.txt": b"7\n"}


def test_shared_extra_paths_restart_both_servers_of_a_host_and_are_written_once(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 2, hosts=[0, 0], extras=ACME)
    cp = plan_cluster(bed.desired, bed.observe())
    assert [(r.server, r.writes_shared) for r in cp.restarts] == [("server1", True), ("server2", False)]
    assert "written by server1" in cp.restarts[1].why[-1]
    rid = bed.rollout()
    outcomes = bed.runner().run(bed.store.get(rid))
    assert [(o.server, o.outcome) for o in outcomes] == [("server1", "ready"), ("server2", "ready")]
    assert bed.starts() == {"server1": 1, "server2": 1}
    for srv in bed.servers:  # both loaded the new shared files at their start
        assert srv.loaded[f"{EXTLIB}/acme/__init__.py"] == sha(ACME["__init__.py"])
    t1, t2 = bed.transports["server1"], bed.transports["server2"]
    assert sum(c.startswith("put ") and "/new/" in c for c in t1.calls) == 2
    assert not any(c.startswith("put ") for c in t2.calls)  # the second server writes nothing shared
    assert outcomes[1].files == []
    assert bed.store.get(rid).status == "finished"
    assert bed.max_down() == 1


def test_a_file_changed_since_the_plan_stops_the_rollout_before_that_server_is_touched(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 2, sources=BILLING)
    rid = bed.rollout()
    bed.servers[1].files["/srv/server2/static/billing/invoice.py"] = b"someone's hand edit\n"
    outcomes = bed.runner().run(bed.store.get(rid))
    assert [(o.server, o.outcome) for o in outcomes] == [("server1", "ready"), ("server2", "failed")]
    assert "changed since the plan" in outcomes[1].error
    assert bed.starts() == {"server1": 1, "server2": 0}
    assert bed.servers[1].files["/srv/server2/static/billing/invoice.py"] == b"someone's hand edit\n"
    assert bed.store.get(rid).status == "halted"



def test_a_failure_before_the_stop_puts_the_files_back_without_restarting_the_server(tmp_path: Path) -> None:
    """Writing the new files fails: the process never read them, so the old files go back and it is not restarted
    (a restart on the previous files would only cost an outage)."""
    bed = Bed(tmp_path, 2, sources=BILLING)
    rid = bed.rollout()
    t1 = bed.transports["server1"]
    real_run = t1.run

    def failing_apply(argv: Any, **kw: Any) -> RunResult:
        if t1._name(argv) == "txn-apply":
            t1.calls.append("txn-apply (fails)")
            return RunResult(1, b"", b"cp: error writing: No space left on device")
        return real_run(argv, **kw)

    t1.run = failing_apply  # type: ignore[method-assign]
    pid = bed.servers[0].pid
    outcomes = bed.runner().run(bed.store.get(rid))
    assert [(o.server, o.outcome) for o in outcomes] == [("server1", "rolled-back")]
    assert not any(c.startswith("zato ") for c in t1.calls), t1.calls  # never stopped, never started
    assert bed.servers[0].running and bed.servers[0].pid == pid
    assert bed.starts() == {"server1": 0, "server2": 0} and bed.max_down() == 0
    assert "/srv/server1/static/billing/invoice.py" not in bed.servers[0].files
    assert bed.store.get(rid).status == "halted"


LAYOUTS: dict[str, dict[str, Any]] = {
    "own-hosts": {"hosts": [0, 1, 2], "sources": BILLING},
    "shared-extras": {"hosts": [0, 0, 1], "sources": BILLING, "extras": ACME},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_resume_after_a_kill_at_every_call_converges_once_never_two_down(tmp_path: Path, layout: str) -> None:
    """SIGKILL after each call a clean run makes (so from every persisted step), then resume: every server
    started exactly once, runs the planned files (the shared extra_paths too), never two down."""
    clean = Bed(tmp_path / "clean", 3, **LAYOUTS[layout])
    clean.runner().run(clean.store.get(clean.rollout()))
    total = sum(len(t.calls) for t in clean.transports.values())
    assert total > 20
    for k in range(1, total + 1):
        bed = Bed(tmp_path / f"k{k}", 3, **LAYOUTS[layout])
        rid = bed.rollout()
        count = [0]

        def kill_at(_srv: FakeServer, _argv: Sequence[str], k: int = k, count: list[int] = count) -> None:
            count[0] += 1
            if count[0] == k:
                raise Killed()

        for srv in bed.servers:
            srv.on_call = kill_at
        with contextlib.suppress(Killed):
            bed.runner().run(bed.store.get(rid))
        for srv in bed.servers:
            srv.on_call = None
        steps = {s.server: s.step for s in bed.store.get(rid).servers}
        bed.runner().run(bed.store.get(rid))
        final = bed.store.get(rid)
        assert final.status == "finished", (k, steps, final.message)
        assert bed.starts() == {"server1": 1, "server2": 1, "server3": 1}, (k, steps)
        assert bed.max_down() == 1, (k, steps)
        for srv in bed.servers:
            assert srv.running, (k, steps)
            assert srv.loaded[f"{srv.server_dir}/static/billing/invoice.py"] == sha(BILLING["invoice.py"]), (k, steps)
            if "extras" in LAYOUTS[layout]:
                assert srv.loaded[f"{EXTLIB}/acme/__init__.py"] == sha(ACME["__init__.py"]), (k, steps)


def drop_after_stop(server: str, bed: Bed) -> None:
    """The server's network goes away right after its first `zato stop` (sshd killed, a switch reboots)."""
    def hook(srv: FakeServer, argv: Sequence[str]) -> None:
        if len(argv) > 1 and argv[1] == "stop" and srv.on_call is hook:
            srv.reachable = False
            srv.on_call = None
    next(s for s in bed.servers if s.name == server).on_call = hook


def test_a_server_lost_right_after_its_stop_is_retried_and_brought_back(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 3, sources=BILLING)
    rid = bed.rollout()
    drop_after_stop("server2", bed)
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 3:
            bed.servers[1].reachable = True

    outcomes = bed.runner(sleep=sleep).run(bed.store.get(rid))
    assert [o.outcome for o in outcomes] == ["ready", "ready", "ready"]
    assert sleeps == [0.5, 1.0, 2.0]  # backoff
    assert bed.starts() == {"server1": 1, "server2": 1, "server3": 1}
    assert bed.max_down() == 1


def test_a_server_lost_for_longer_than_ready_timeout_is_brought_back_first_by_the_next_run(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 3, sources=BILLING)
    rid = bed.rollout()
    drop_after_stop("server2", bed)
    outcomes = bed.timeless_runner().run(bed.store.get(rid))
    assert [(o.server, o.outcome) for o in outcomes] == [("server1", "ready"), ("server2", "unreachable")]
    r = bed.store.get(rid)
    assert r.status == "running" and "server2 cannot be reached" in r.message
    assert r.server("server2").step in DOWN and not bed.servers[1].running
    assert bed.starts()["server3"] == 0 and bed.servers[2].running  # nobody else was stopped
    assert not bed.transports["server3"].calls

    # the network is back: the next run starts server2 before anything happens to server3
    bed.servers[1].reachable = True
    mark = len(bed.journal)
    bed.runner().run(bed.store.get(rid))
    assert bed.journal[mark:] == [("started", "server2"), ("stopped", "server3"), ("started", "server3")]
    assert bed.store.get(rid).status == "finished"
    assert bed.max_down() == 1


def test_no_other_rollout_of_the_cluster_runs_while_one_left_a_server_down(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 3, sources=BILLING)
    first = bed.rollout()
    drop_after_stop("server1", bed)
    bed.timeless_runner().run(bed.store.get(first))
    assert bed.store.get(first).server("server1").step in DOWN
    bed.servers[0].reachable = True
    second = bed.rollout()
    with pytest.raises(ReconcilerError) as e:
        bed.runner().run(bed.store.get(second))
    assert f"rollouts resume {first}" in e.value.hint
    assert bed.starts() == {"server1": 0, "server2": 0, "server3": 0}
    assert bed.servers[1].running and bed.servers[2].running


def test_a_lost_lease_stops_the_rollout_before_the_next_server(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 3, sources=BILLING)
    rid = bed.rollout()
    turns = [0]

    def guard() -> None:
        turns[0] += 1
        if turns[0] == 2:
            raise Interrupted("the lease of cluster prod was taken over by ops@elsewhere (pid 9)")

    outcomes = bed.runner(guard=guard).run(bed.store.get(rid))
    assert [(o.server, o.outcome) for o in outcomes] == [("server1", "ready"), ("server2", "interrupted")]
    assert bed.starts() == {"server1": 1, "server2": 0, "server3": 0}
    r = bed.store.get(rid)
    assert r.status == "running" and r.server("server2").step == "pending"


# --- the lease ---------------------------------------------------------------------------------------------------
def lease(bed: Bed, owner: str, pid: int, *, state: str = "/state/a", **kw: Any) -> Lease:
    sites = [LeaseSite(s.name, s.server_dir, bed.transports[s.name]) for s in bed.servers]
    kw.setdefault("sleep", lambda _s: None)
    return Lease("prod", sites, owner=owner, state_dir=state, pid=pid, hostname="here", ttl=30, **kw)


def test_a_second_reconciler_is_refused_with_who_holds_the_cluster(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 2)
    first = lease(bed, "ops@there", 41)
    first.acquire()
    second = lease(bed, "me@here", 42, state="/state/b", alive=lambda _p: True)
    with pytest.raises(LeaseHeld) as e:
        second.acquire()
    assert e.value.message.startswith("cluster prod is being reconciled by ops@there (pid 41) since 1970-01-12T")
    assert "lease_wait" in e.value.hint
    first.release()
    second.acquire()
    assert second.site is not None and second.site.server == "server1"


def test_the_lease_lives_on_the_first_reachable_server(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 2)
    bed.servers[0].reachable = False
    mine = lease(bed, "me@here", 42)
    mine.acquire()
    assert mine.site is not None and mine.site.server == "server2"
    assert any(p.endswith("/server2/zato-gitops.lease") for p in bed.servers[1].files)


def test_a_lease_off_the_first_server_only_finishes_the_server_in_flight(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 3, sources=BILLING)
    rid = bed.rollout()
    drop_after_stop("server2", bed)
    bed.timeless_runner().run(bed.store.get(rid))  # server2 stopped and lost
    bed.servers[1].reachable = True
    bed.servers[0].reachable = False  # now the first server does not answer
    partial = lease(bed, "me@here", 42)
    partial.acquire()
    assert partial.site is not None and partial.site.server == "server2" and not partial.full
    outcomes = bed.runner(guard=partial.check).run(bed.store.get(rid))
    assert [(o.server, o.outcome) for o in outcomes] == [("server2", "ready"), ("server3", "interrupted")]
    assert bed.servers[1].running and bed.starts()["server3"] == 0 and bed.servers[2].running
    assert "server1 did not answer" in outcomes[1].error


def test_an_expired_lease_or_a_dead_owner_on_this_host_is_taken_over(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 1)
    old = lease(bed, "ops@there", 41)
    old.acquire()
    bed.servers[0].clock[0] += 31  # past its expiry, on the server's clock
    mine = lease(bed, "me@here", 42)
    mine.acquire()
    with pytest.raises(Interrupted):  # the old holder notices at its next renewal and stops
        old.renew()
        old.check()
    dead = lease(bed, "me@here", 43, state="/state/b", alive=lambda pid: pid != 42)
    dead.acquire()  # the holder (pid 42 on this host) is gone: no wait for the expiry


def test_a_held_lease_is_renewed_in_the_background_and_released_at_the_end(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 1)
    srv = bed.servers[0]
    path = f"{srv.server_dir}/zato-gitops.lease"
    mine = Lease("prod", [LeaseSite("server1", srv.server_dir, bed.transports["server1"])], owner="me@here",
                 state_dir="/s", ttl=3)  # renewed every second
    with mine.held():
        first = int(srv.files[path].split(b"\t")[1])
        srv.clock[0] += 100  # the server's clock moves on; only a renewal moves the expiry with it
        deadline = time.monotonic() + 10
        while int(srv.files[path].split(b"\t")[1]) == first:
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.05)
        assert int(srv.files[path].split(b"\t")[1]) == srv.clock[0] + 3
        mine.check()
    assert path not in srv.files
    assert bed.transports["server1"].calls[-1] == "lease"


def test_a_bounded_wait_takes_the_lease_once_the_holder_is_done(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 1)
    first = lease(bed, "ops@there", 41)
    first.acquire()
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s
        if now[0] >= 2:
            first.release()

    waiting = lease(bed, "me@here", 42, wait=10, sleep=sleep, clock=lambda: now[0])
    waiting.acquire()
    assert 2 <= now[0] < 10


# --- hot-deploy --------------------------------------------------------------------------------------------------
def test_hot_deploy_stages_verifies_copies_and_waits_for_each_server_to_confirm(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 2, version="4.1")
    data = b"from zato.server.service import Service\n"
    desired = DesiredCluster(bed.spec, {"crm.py": Module("crm.py", "services/crm.py", sha(data), "b1", data)})
    observed = ObservedCluster("prod", bed.observe().servers)
    cp = plan_cluster(desired, observed)
    results = hot_deploy(desired, observed, cp, bed.transports, timeout=5, poll=0, sleep=lambda _s: None)
    assert {s: r.modules for s, r in results.items()} == {"server1": {"crm.py": "confirmed"},
                                                          "server2": {"crm.py": "confirmed"}}
    for srv in bed.servers:
        assert srv.files[f"{srv.server_dir}/pickup/crm.py"] == data
        assert bed.transports[srv.name].calls == ["install", "read-log"]  # one round trip to install, one to confirm


def test_confirmation_reads_start_50_ms_apart_and_back_off_to_the_poll(tmp_path: Path) -> None:
    """A one-module change must not wait a whole `poll` for a line already in the log; a long wait still reads
    each log only every `poll`."""
    bed = Bed(tmp_path, 1, version="4.1")
    srv = bed.servers[0]
    data = b"x = 1\n"
    desired = DesiredCluster(bed.spec, {"crm.py": Module("crm.py", "services/crm.py", sha(data), "b1", data)})
    observed = ObservedCluster("prod", bed.observe().servers)
    srv.running = False  # the copy is not picked up at once: it is confirmed at the sixth read of the log
    reads = [0]

    def confirm_late(s: FakeServer, argv: Sequence[str]) -> None:
        if argv[0] == "sh" and "@@stat" in argv[2]:
            reads[0] += 1
            if reads[0] == 5:
                s.say(f"Deployed 1 service from `{s.server_dir}/pickup/crm.py` -> ['x']")

    srv.on_call = confirm_late
    sleeps: list[float] = []
    results = hot_deploy(desired, observed, plan_cluster(desired, observed), bed.transports, timeout=60, poll=0.25,
                         sleep=sleeps.append)
    assert results["server1"].modules == {"crm.py": "confirmed"}
    assert sleeps == [0.05, 0.1, 0.2, 0.25, 0.25]


def test_hot_deploy_reports_a_server_lost_while_confirming(tmp_path: Path) -> None:
    bed = Bed(tmp_path, 2, version="4.1")
    data = b"x = 1\n"
    desired = DesiredCluster(bed.spec, {"crm.py": Module("crm.py", "services/crm.py", sha(data), "b1", data)})
    observed = ObservedCluster("prod", bed.observe().servers)

    def lose(srv: FakeServer, argv: Sequence[str]) -> None:
        if argv[0] == "sh" and "@@copied" in argv[2] and srv.name == "server2":  # right after its install
            srv.reachable = False

    bed.servers[1].on_call = lose
    results = hot_deploy(desired, observed, plan_cluster(desired, observed), bed.transports, timeout=5, poll=0,
                         sleep=lambda _s: None)
    assert results["server1"].ok
    assert not results["server2"].ok and "connection refused" in results["server2"].error
