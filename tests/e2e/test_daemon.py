"""Issue 4 end to end: `zato-gitops run` as a real process keeps real servers at the branch head with no command run.

Real sshd per host, a bare git origin the test pushes to, the Zato stand-in servers, and the daemon started as
`python -m reconciler run` with a config file of short intervals. Each test waits with a bound and the world
fixture always ends the daemon (SIGTERM, then SIGKILL) before the servers.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from world import ROOT, World, git, service_module

pytestmark = pytest.mark.e2e

CRM = service_module("GetCustomer")
CRM2 = service_module("GetCustomer", body="self.response.payload = 'v2'")
CRM3 = service_module("GetCustomer", body="self.response.payload = 'v3'")
BROKEN = "from zato.server.service import Service\n\nclass Broken(Service:\n    pass\n"
INVOICE = service_module("CreateInvoice", name="billing.create-invoice")
STATIC = [{"path": "static/billing", "target": "./static/billing"}]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def release(world: World, modules: dict[str, str | None], message: str = "release", **manifest: object) -> str:
    files: dict[str, str | None] = {"zato-gitops.yaml": world.manifest(**manifest)}
    files.update({f"services/{k}": v for k, v in modules.items()})
    return world.commit(files, message)


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by Prometheus's own text parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in m.items() if n == name and all((k, x) in ls for k, x in labels.items()))


class Receiver:
    """A notification endpoint: records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def events(self) -> list[str]:
        return [b["event"] for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_push_is_deployed_within_one_interval_with_no_command_run(world: World) -> None:
    c1 = release(world, {"crm.py": CRM})
    d = world.daemon(interval=2)
    d.wait_applied(c1, timeout=30)
    for s in world.servers:
        assert s.services()["crm.get-customer"] == sha(CRM)
    code, _ = d.request("GET", "/readyz")
    assert code == 200
    before = metrics(d.request("GET", "/metrics")[1].decode())

    # merging is enough: push, and the daemon deploys it within one interval (2 s) plus the deploy itself
    c2 = world.commit({"services/crm.py": CRM2}, "crm v2")
    pushed = time.monotonic()
    d.wait_applied(c2, timeout=20)
    took = time.monotonic() - pushed
    assert took < 2 + 8, f"deployed {took:.1f} s after the push"
    for s in world.servers:
        assert s.services()["crm.get-customer"] == sha(CRM2)
    print(f"push -> deployed on 3 servers in {took:.2f} s (interval 2 s)")

    # /metrics parses with Prometheus's parser, and its counters moved
    code, body = d.request("GET", "/metrics")
    assert code == 200
    after = metrics(body.decode())
    assert sample(after, "zato_gitops_reconciles_total", cluster="prod", result="success") > sample(
        before, "zato_gitops_reconciles_total", cluster="prod", result="success")
    assert sample(after, "zato_gitops_deploys_total", cluster="prod", result="confirmed") >= 6  # 2 commits x 3
    assert sample(after, "zato_gitops_last_applied_revision_info", cluster="prod", revision=c2) == 1
    assert sample(after, "zato_gitops_last_applied_revision_info", cluster="prod", revision=c1) == 0
    assert sample(after, "zato_gitops_servers_reachable", cluster="prod") == 3
    assert sample(after, "zato_gitops_cluster_ready", cluster="prod") == 1
    assert sample(after, "zato_gitops_reconcile_duration_seconds_count", cluster="prod") >= 2
    assert sample(after, "zato_gitops_polls_total", result="changed") >= 2

    # the deploy is recorded as a note on the commit, like a manual apply
    assert '"action":"hot-deploy"' in git(world.origin, "notes", "--ref", "zato-gitops", "show", c2).replace(" ", "")

    # `status` asks the running daemon; a second daemon on the same state dir refuses with a clear message
    r = world.cli("status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "prod" in r.stdout and c2[:12] in r.stdout and f"daemon pid {d.proc.pid}" in r.stdout
    r = world.cli("run", timeout=30)
    assert r.returncode == 1
    assert f"already running on the state dir {world.state_dir}" in r.stderr.replace("\n", " ")
    assert f"pid {d.proc.pid}" in r.stderr
    assert d.proc.poll() is None  # the first one is unharmed

    # SIGTERM: exit 0, status written; `status` then reads the state dir
    assert d.stop() == 0
    r = world.cli("status", "--json")
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data["clusters"][0]["last_applied_revision"] == c2
    assert "s3cret" not in d.log()


def test_a_signed_webhook_deploys_at_once_and_a_bad_one_changes_nothing(world: World) -> None:
    c1 = release(world, {"crm.py": CRM})
    d = world.daemon(interval=600)  # no poll after the first: only a webhook can deploy
    d.wait_applied(c1)
    c2 = world.commit({"services/crm.py": CRM2}, "crm v2")
    push = {"ref": "refs/heads/main", "after": c2}

    # refused: bad signature, missing signature, wrong GitLab token, too big; ignored: another branch
    assert d.hook("github", push, secret="wrong")[0] == 401
    assert d.request("POST", "/hooks/github", json.dumps(push).encode(), {"X-GitHub-Event": "push"})[0] == 401
    assert d.hook("gitlab", push, secret="wrong")[0] == 401
    assert d.hook("generic", None, raw=b"x" * (1024 * 1024 + 1))[0] == 413
    code, body = d.hook("github", {"ref": "refs/heads/other"})
    assert code == 200 and json.loads(body)["accepted"] is False
    time.sleep(1.5)
    assert d.cluster()["last_attempted_revision"] == c1
    for s in world.servers:
        assert s.services()["crm.get-customer"] == sha(CRM)

    # a good signature deploys at once
    sent = time.monotonic()
    code, body = d.hook("github", push)
    assert code == 202, body
    d.wait_applied(c2, timeout=15)
    print(f"webhook -> deployed in {time.monotonic() - sent:.2f} s")
    for s in world.servers:
        assert s.services()["crm.get-customer"] == sha(CRM2)

    # the other providers' signatures are accepted too
    c3 = world.commit({"services/crm.py": CRM3}, "crm v3")
    code, _ = d.hook("gitlab", {"object_kind": "push", "ref": "refs/heads/main"})
    assert code == 202
    d.wait_applied(c3, timeout=15)
    assert d.hook("gitea", push)[0] == 202
    assert d.hook("generic", {"branch": "main"})[0] == 202
    m = metrics(d.request("GET", "/metrics")[1].decode())
    assert sample(m, "zato_gitops_webhooks_total", provider="github", result="unauthorized") == 2
    assert sample(m, "zato_gitops_webhooks_total", provider="github", result="accepted") == 1
    assert "s3cret" not in d.log()


def test_a_failing_commit_is_recorded_once_and_a_fixed_one_ends_deployed(world: World) -> None:
    receiver = Receiver()
    try:
        c1 = release(world, {"crm.py": CRM})
        d = world.daemon(notify_urls=[receiver.url])
        d.wait_applied(c1)
        bad = world.commit({"services/broken.py": BROKEN, "services/crm.py": CRM2}, "broken")
        stalled = d.wait_for("Stalled on the broken commit", lambda: (
            d.condition("Stalled").get("status") == "True" and d.cluster()["last_attempted_revision"] == bad))
        assert stalled
        assert d.condition("Stalled")["reason"] == "ModulesInvalid"
        assert d.condition("Ready")["status"] == "False"
        assert "services/broken.py:3" in d.condition("Stalled")["message"]
        time.sleep(3)  # three more polls: the same commit is not tried again
        note = git(world.origin, "notes", "--ref", "zato-gitops", "show", bad)
        assert note.count('"action":"refused"') == 1, note
        for s in world.servers:
            assert s.services()["crm.get-customer"] == sha(CRM)
        assert d.cluster()["last_applied_revision"] == c1
        r = world.cli("status")
        assert r.returncode == 1 and "ModulesInvalid" in r.stdout

        fixed = world.commit({"services/broken.py": None}, "fix")
        d.wait_applied(fixed)
        for s in world.servers:
            assert s.services()["crm.get-customer"] == sha(CRM2)
        assert d.condition("Stalled")["status"] == "False"
        d.wait_for("three notifications", lambda: len(receiver.bodies) >= 3, timeout=10)
        time.sleep(1.5)
        # transitions only: deployed c1, failed bad, recovered at fixed; nothing for the polls in between
        assert receiver.events() == ["deployed", "failed", "recovered"], receiver.bodies
        assert [b["revision"] for b in receiver.bodies] == [c1, bad, fixed]
    finally:
        receiver.close()


def test_a_module_edited_by_hand_is_healed_and_only_reported_under_drift_report(world: World) -> None:
    c1 = release(world, {"crm.py": CRM})
    d = world.daemon(drift_interval=1)
    d.wait_applied(c1)
    edited = world.servers[1].current_dir / "crm.py"
    edited.write_text(CRM + "\n# hot fix by hand\n")
    d.wait_for("the edit put back", lambda: all((s.current_dir / "crm.py").read_text() == CRM
                                                for s in world.servers), timeout=20)
    drift = d.wait_for("drift in the status", lambda: d.cluster().get("drift"), timeout=10)
    assert drift["action"] == "healed" and drift["items"] == ["server2: crm.py modified"]
    assert '"action":"drift"' in git(world.origin, "notes", "--ref", "zato-gitops", "show", c1).replace(" ", "")
    m = metrics(d.request("GET", "/metrics")[1].decode())
    assert sample(m, "zato_gitops_drift_found_total", cluster="prod") >= 1

    # drift: report only reports, and Ready says so
    c2 = release(world, {"crm.py": CRM}, "report drift only", drift="report")
    d.wait_applied(c2)
    (world.servers[0].current_dir / "crm.py").unlink()
    d.wait_for("drift reported", lambda: d.condition("Ready").get("reason") == "DriftDetected", timeout=15)
    assert d.cluster()["drift"]["items"] == ["server1: crm.py missing"]
    assert d.cluster()["drift"]["action"] == "reported"
    time.sleep(2.5)
    assert not (world.servers[0].current_dir / "crm.py").exists()


def test_sigterm_during_a_rollout_leaves_every_server_running(world: World) -> None:
    """A static change (service_sources) is a rolling restart; SIGTERM lands while a server restarts. The daemon
    finishes that server's step, exits 0, no server is left stopped, and the next daemon finishes the rollout."""
    c1 = release(world, {"crm.py": CRM})
    d = world.daemon()
    d.wait_applied(c1)
    for s in world.servers:
        world.set_faults(s, start_delay=1.0)  # each restart takes a while: SIGTERM lands in the middle of one
    t0 = time.time()
    c2 = world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC),
                       "static/billing/invoice.py": INVOICE}, "static billing")
    d.wait_for("a server restarting", lambda: sum(world.events("stopping").values()) >= 1, timeout=20, every=0.05)
    sent = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0, d.log()[-3000:]
    print(f"SIGTERM -> exit 0 in {time.monotonic() - sent:.2f} s, "
          f"{sum(world.events('starting').values()) - 3} server(s) restarted before stopping")
    for s in world.servers:
        s.wait_ready(timeout=10)
        assert s.pid() is not None, f"{s.name} is not running"
    assert world.max_down_since(t0) <= 1
    status = json.loads((world.state_dir / "status.json").read_text())
    [cluster] = status["clusters"]
    assert cluster["reconciling"] is False
    assert cluster["last_attempted_revision"] == c2
    assert "stopping: finishing the current step" in d.log()
    assert not (world.state_dir / "daemon.json").exists()

    # the next daemon resumes the rollout where it stopped and ends at c2, every server restarted once
    d2 = world.daemon()
    d2.wait_applied(c2, timeout=40)
    assert world.events("starting") == {"server1": 2, "server2": 2, "server3": 2}
    assert world.max_down_since(t0) <= 1
    for s in world.servers:
        assert "billing.create-invoice" in s.services()


def test_suspend_and_resume_without_a_daemon_and_reconcile_needs_one(world: World) -> None:
    c1 = release(world, {"crm.py": CRM})
    r = world.cli("suspend", "prod")
    assert r.returncode == 0, r.stderr
    d = world.daemon()
    time.sleep(2)
    assert d.cluster().get("suspended") is True
    assert d.cluster().get("last_attempted_revision") is None
    r = world.cli("resume", "prod")
    assert r.returncode == 0 and f"daemon pid {d.proc.pid}" in r.stdout, r.stdout + r.stderr
    d.wait_applied(c1)
    assert world.cli("reconcile").returncode == 0
    assert d.stop() == 0
    r = world.cli("reconcile")
    assert r.returncode == 1 and "no zato-gitops daemon runs" in r.stderr
    r = subprocess.run([sys.executable, "-m", "reconciler", "run", "--help"], cwd=ROOT, capture_output=True,
                       text=True)
    assert "SIGTERM" in r.stdout


def test_static_drift_is_healed_by_restarting_only_the_server_that_drifted(world: World) -> None:
    c1 = world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC),
                       "static/billing/invoice.py": INVOICE}, "static billing")
    d = world.daemon(drift_interval=1)
    d.wait_applied(c1, timeout=60)
    sources = world.servers[1].path / "config" / "repo" / "service-sources.txt"
    good = sources.read_text()
    starts = world.events("starting")
    sources.write_text(good.replace("./static/billing\n", ""))  # someone "tidies" the file by hand
    d.wait_for("the block put back", lambda: sources.read_text() == good, timeout=30)
    d.wait_for("server2 restarted", lambda: world.events("ready")["server2"] > starts["server2"], timeout=30)
    drift = d.wait_for("drift in the status", lambda: d.cluster().get("drift"), timeout=10)
    assert drift["items"] == ["server2: service-sources.txt block changed"]
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 0, "server2": 1, "server3": 0}
    assert "billing.create-invoice" in world.servers[1].services()


def test_the_daemon_runs_a_rollout_when_its_window_opens(world: World) -> None:
    """The hot-deploy goes out at once; the restart is a persisted job that the daemon runs at the window."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    # the next minute (or the one after, when this one is nearly over): closed now, open soon
    opens = (now + timedelta(minutes=1 if now.second < 45 else 2)).replace(second=0, microsecond=0)
    window = f"{opens.minute} {opens.hour} * * *"
    starts = world.events("starting")
    c1 = world.commit({
        "zato-gitops.yaml": world.manifest(service_sources=STATIC, rollout={"window": window}),
        "static/billing/invoice.py": INVOICE, "services/crm.py": CRM,
    }, "billing, in the window")
    d = world.daemon()
    d.wait_for("the hot-deploy", lambda: all("crm.get-customer" in s.services() for s in world.servers), timeout=30)
    assert world.events("starting") == starts  # the restart waits for the window
    _, rollouts = world.cli_json("rollouts")
    assert [r["status"] for r in rollouts] == ["pending"] and rollouts[0]["commit"] == c1
    wait = (opens - datetime.now(UTC)).total_seconds() + 45
    d.wait_for("the rollout in its window",
               lambda: world.cli_json("rollouts")[1][0]["status"] == "finished", timeout=wait, every=1.0)
    after = world.events("starting")
    assert {k: after[k] - starts[k] for k in after} == {"server1": 1, "server2": 1, "server3": 1}
    for s in world.servers:
        assert "billing.create-invoice" in s.services()
    first_restart = min(e["ts"] for e in world.cluster.events() if e["event"] == "stopping")
    assert first_restart >= opens.timestamp()  # not before the window opened
