"""Issue 7 end to end: a cluster exactly as a fresh Zato 3.2 quickstart leaves it takes zato-gitops with no
preparation at all, over SSH and over `transport: local`.

The stand-in is left as a quickstart leaves a server: service-sources.txt without a newline after its last line,
log levels in ANSI colour codes, multi-line tracebacks closed by a lone backtick, both servers of the cluster on
one install and one host. Nothing on the servers is touched by the test before the first apply. Over SSH the
servers start as slowly as a real one does on the slow side (OK after 3 s, /zato/ping after 15 s), so the rolling
restart waits the way it must on a real cluster; over `local` they start fast. This is the test that would have
caught the observe script's `@@end` marker glued to `./work/hot-deploy/current`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
from world import World, git, service_module

from tests.standin.harness import FAST_START, SLOW_START

pytestmark = pytest.mark.e2e

CRM = service_module("GetCustomer")
CRM2 = service_module("GetCustomer", body="self.response.payload = 'v2'")
CRM3 = service_module("GetCustomer", body="self.response.payload = 'v3'")
BROKEN = "import a_module_nobody_installed\n" + CRM
INVOICE = service_module("CreateInvoice", name="billing.create-invoice")
STATIC = [{"path": "static/billing", "target": "./static/billing"}]
HOT_DEPLOY_LINE = "./work/hot-deploy/current"


def no_escape(where: str, text: str) -> None:
    """No escape character, raw or JSON-encoded, in text quoted to a person or a machine."""
    assert "\x1b" not in text and "\\u001b" not in text.lower(), f"an escape character in {where}:\n{text!r}"


def sources_bytes(world: World, i: int) -> bytes:
    return (world.servers[i].path / "config" / "repo" / "service-sources.txt").read_bytes()


@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_a_stock_quickstart_cluster_takes_every_kind_of_change_with_no_preparation(
    world_factory: Callable[..., World], transport: str
) -> None:
    timing = SLOW_START if transport == "ssh" else FAST_START
    world = world_factory(n=2, local=transport == "local", **timing)
    if transport == "ssh":
        world.host_of = [0, 0]  # both servers on one host, as a quickstart puts them
    shipped = [sources_bytes(world, i) for i in range(2)]
    for i, s in enumerate(world.servers):  # the quickstart's own ways, untouched
        assert shipped[i].endswith(HOT_DEPLOY_LINE.encode())
        assert "\x1b[1;37mINFO\x1b[0m" in s.log_text()

    # the first apply: observed, planned, hot-deployed and confirmed on both servers
    first = world.commit({"zato-gitops.yaml": world.manifest(), "services/crm.py": CRM}, "first release")
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    for s in world.servers:
        assert s.services()["crm.get-customer"]
    assert [sources_bytes(world, i) for i in range(2)] == shipped  # a hot-deploy leaves the file alone

    # re-apply: nothing to do; plan: exit 0
    sizes = world.log_sizes()
    r = world.cli("apply")
    assert r.returncode == 0 and "no changes" in r.stdout, r.stdout + r.stderr
    assert world.log_sizes() == sizes
    r = world.cli("plan")
    assert r.returncode == 0, r.stdout + r.stderr

    # a module Zato refuses to import: the apply fails and quotes the traceback whole, clean of colour codes
    world.commit({"services/crm.py": BROKEN}, "a module that cannot import")
    r = world.cli("apply", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    no_escape("apply --json", r.stdout + r.stderr)
    out = json.dumps(json.loads(r.stdout))
    assert "No module named 'a_module_nobody_installed'" in out
    assert "No services nor models were deployed from module `crm.py`" in out
    world.commit({"services/crm.py": BROKEN + "\n# again\n"}, "still broken")
    r = world.cli("apply")
    assert r.returncode == 1
    no_escape("apply output", r.stdout + r.stderr)
    for name in ("server1", "server2"):
        assert f"prod/{name}: crm.py failed" in r.stdout
    quoted = r.stdout.splitlines()
    head = next(i for i, line in enumerate(quoted) if "Could not load source, file_name:`" in line)
    assert any(line.strip() == "`" for line in quoted[head:])  # down to the closing backtick
    assert "ModuleNotFoundError: No module named 'a_module_nobody_installed'" in r.stdout
    assert sum("Could not load source, file_name:`" in line for line in quoted) == 2, r.stdout  # once per server
    for s in world.servers:
        assert s.services()["crm.get-customer"]  # the previous version keeps running

    # a static rollout (service-sources.txt gets its block) together with a fixed module
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC), "services/crm.py": CRM2,
                  "static/billing/invoice.py": INVOICE}, "static billing")
    r = world.cli("plan")
    assert r.returncode == 2 and "restart required" in r.stdout, r.stdout + r.stderr
    starts = world.events("starting")
    r = world.cli("apply", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    no_escape("apply output", r.stdout + r.stderr)
    assert {k: v - starts[k] for k, v in world.events("starting").items()} == {"server1": 1, "server2": 1}
    for i, s in enumerate(world.servers):
        services = s.services()
        assert "billing.create-invoice" in services and "crm.get-customer" in services
        text = sources_bytes(world, i).decode()
        assert text.endswith(HOT_DEPLOY_LINE)  # still without a final newline, as the server left it
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        assert entries == ["./static/billing", HOT_DEPLOY_LINE]  # nothing glued together
        assert "Could not import module" not in s.log_text().rsplit("Handling signal: term", 1)[1]
    assert world.cli("plan").returncode == 0
    r = world.cli("apply")
    assert r.returncode == 0 and "no changes" in r.stdout, r.stdout + r.stderr

    # the daemon picks up a push
    d = world.daemon(interval=1)
    pushed = world.commit({"services/crm.py": CRM3}, "crm v3")
    d.wait_applied(pushed, timeout=60)
    for s in world.servers:
        assert s.services()["crm.get-customer"] == hashlib.sha256(CRM3.encode()).hexdigest()
    d.stop()
    no_escape("the daemon's log", d.log())

    # nothing quoted in the history carries an escape either
    notes = git(world.origin, "log", "--notes=zato-gitops", "--format=%N")
    assert '"action":"hot-deploy"' in notes.replace(" ", "") and '"action":"restart"' in notes.replace(" ", "")
    no_escape("git notes", notes)
    code, history = world.cli_json("history", "--limit", "50")
    assert code == 0 and any(h["outcome"] == "failed" for h in history)
    no_escape("history --json", json.dumps(history))
    assert first in git(world.origin, "log", "--format=%H")


def test_a_start_that_dies_after_ok_is_never_reported_ready_and_its_stale_pidfile_is_cleared(
    world_factory: Callable[..., World],
) -> None:
    """`zato start` prints OK, then the server dies while importing and leaves its pidfile: the rollout fails that
    server as soon as the process is gone (not after ready_timeout), quotes its last log lines, puts the previous
    files back, clears the stale pidfile the way `zato start` does (`zato stop` would exit 16) and restarts it."""
    world = world_factory(n=2)
    world.commit({"zato-gitops.yaml": world.manifest(), "services/crm.py": CRM}, "first")
    assert world.cli("apply").returncode == 0
    s2 = world.servers[1]
    world.set_faults(s2, die_at_start_times=1)
    before = sources_bytes(world, 1)
    # a ready_timeout far beyond the CLI's own timeout: only noticing the death can end this apply in time
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC, rollout={"ready_timeout": 3600}),
                  "static/billing/invoice.py": INVOICE}, "static billing")
    r = world.cli("apply", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    no_escape("apply output", r.stdout + r.stderr)
    out = r.stdout + r.stderr
    assert "the server died while starting" in out
    assert "Could not start the server, e:`Traceback" in out
    assert "halted" in out and "server2" in out
    assert world.events("stopped").get("server2", 0) >= 1
    assert s2.pid() is not None and s2.ping() is not None  # running again, on its previous files
    assert sources_bytes(world, 1) == before
    assert "billing.create-invoice" not in s2.services()
    assert "billing.create-invoice" in world.servers[0].services()  # server1 went first and is done


def test_the_pickup_dir_the_server_really_watches_comes_from_its_environment(
    world_factory: Callable[..., World],
) -> None:
    """A server whose environment overrides server.conf's pickup_dir gets its modules there (a drop into the
    folder server.conf names would never be seen); plan says so, and names its extra user pickup folders."""
    environ = {"Zato_Config_Server_server__conf_hot_deploy_pickup_dir": "../../pickup/really-watched",
               "Zato_Hot_Deploy_Dir": "./shared-services"}
    world = world_factory(n=1, environ=environ)
    s1 = world.servers[0]
    world.commit({"zato-gitops.yaml": world.manifest(), "services/crm.py": CRM}, "first")
    r = world.cli("plan")
    assert r.returncode == 2, r.stdout + r.stderr
    flat = " ".join(r.stdout.split())
    assert f"modules go to {s1.path}/pickup/really-watched" in flat
    assert f"also imports modules in place from {s1.path}/shared-services" in flat
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (s1.path / "pickup" / "really-watched" / "crm.py").read_text() == CRM
    assert not (s1.pickup_dir / "crm.py").exists()
    assert s1.services()["crm.get-customer"] == hashlib.sha256(CRM.encode()).hexdigest()
