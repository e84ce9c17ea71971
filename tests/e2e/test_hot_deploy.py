"""Issue 2 end to end: release services by merging to git, hot-deployed over real SSH, confirmed in every log.

Real sshd per host, real git (a bare origin the test pushes to), the Zato stand-in servers running as the SSH
user, and the reconciler run as a process. Nothing here is faked.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from world import World, git, service_module

pytestmark = pytest.mark.e2e

CRM = service_module("GetCustomer")
BILLING = service_module("Invoice", name="billing.invoice")
HELPERS = "RATE = 3\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def release(world: World, modules: dict[str, str], **manifest: object) -> str:
    files: dict[str, str | None] = {"zato-gitops.yaml": world.manifest(**manifest)}
    files.update({f"services/{k}": v for k, v in modules.items()})
    return world.commit(files, "release")


def test_first_deploy_is_confirmed_by_every_server_and_a_second_apply_touches_nothing(world: World) -> None:
    commit = release(world, {"crm.py": CRM, "billing.py": BILLING, "helpers.py": HELPERS})

    code, plan = world.cli_json("plan")
    assert code == 2, plan
    [cluster] = plan["clusters"]
    assert sorted(h["module"] for h in cluster["hot_deploys"]) == ["billing.py", "crm.py", "helpers.py"]
    assert all(h["confirm_on"] == ["server1", "server2", "server3"] for h in cluster["hot_deploys"])
    assert all(len(h["drop_on"]) == 1 for h in cluster["hot_deploys"])  # 3.2 fans out: one drop per module

    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("server1", "server2", "server3"):
        assert name in r.stdout
    for s in world.servers:
        services = s.services()
        assert services["crm.get-customer"] == sha(CRM)
        assert services["billing.invoice"] == sha(BILLING)
        assert s.count("Deployed 1 service from `") >= 2
        assert (s.current_dir / "helpers.py").read_text() == HELPERS
    assert not list((world.servers[0].path / "work" / "zato-gitops" / "staging").iterdir())  # staging cleaned

    # the second apply: no upload, no new log line, exit 0
    sizes = world.log_sizes()
    pickup_mtimes = {s.name: (s.pickup_dir / "crm.py").stat().st_mtime_ns for s in world.servers
                     if (s.pickup_dir / "crm.py").exists()}
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no changes" in r.stdout
    assert world.log_sizes() == sizes
    assert {n: (world.cluster.servers[int(n[-1]) - 1].pickup_dir / "crm.py").stat().st_mtime_ns
            for n in pickup_mtimes} == pickup_mtimes
    assert world.cli("plan").returncode == 0

    # the record is on the origin, next to the commit, and history shows it
    log = git(world.origin, "log", "--notes=zato-gitops", "-1", "--format=%H%n%N")
    assert log.startswith(commit)
    assert '"action":"hot-deploy"' in log.replace(" ", "")
    code, history = world.cli_json("history")
    assert code == 0
    deployed = {(h["server"], h["module"], h["outcome"]) for h in history}
    assert ("server3", "services/crm.py", "confirmed") in deployed
    assert len([h for h in history if h["action"] == "hot-deploy"]) == 9  # 3 modules x 3 servers


def test_only_the_changed_module_is_redeployed(world: World) -> None:
    release(world, {"crm.py": CRM, "billing.py": BILLING})
    assert world.cli("apply").returncode == 0
    before = {s.name: s.count("billing.py") for s in world.servers}
    crm2 = service_module("GetCustomer", body="self.response.payload = 'v2'")
    world.commit({"services/crm.py": crm2}, "crm v2")

    code, plan = world.cli_json("plan")
    assert code == 2
    [hd] = plan["clusters"][0]["hot_deploys"]
    assert hd["module"] == "crm.py" and hd["reason"] == "changed"
    assert {d["old_sha256"] for d in hd["diffs"]} == {sha(CRM)}

    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    for s in world.servers:
        assert s.services()["crm.get-customer"] == sha(crm2)
        assert s.count("billing.py") == before[s.name]  # billing untouched


def test_a_commit_that_does_not_compile_is_refused_and_no_server_is_touched(world: World) -> None:
    release(world, {"crm.py": CRM})
    assert world.cli("apply").returncode == 0
    sizes = world.log_sizes()
    bad = "from zato.server.service import Service\n\nclass Broken(Service:\n    pass\n"
    world.commit({"services/broken.py": bad, "services/crm.py": service_module("GetCustomer", body="x = 2")})

    r = world.cli("apply")
    assert r.returncode == 1
    assert "services/broken.py:3: SyntaxError" in r.stderr
    assert "no server was touched" in r.stderr
    assert "Traceback" not in r.stderr
    assert world.log_sizes() == sizes
    for s in world.servers:
        assert not (s.pickup_dir / "broken.py").exists()
        assert s.services()["crm.get-customer"] == sha(CRM)
    # the refusal is recorded on the commit
    assert '"action":"refused"' in git(world.origin, "notes", "--ref", "zato-gitops", "show", "HEAD").replace(" ", "")


def test_a_bad_manifest_lists_every_error_with_its_line(world: World) -> None:
    manifest = """version: 1
clusters:
  - name: prod
    zato_version: "9.9"
    servers:
      - name: server1
        host: 127.0.0.1
        prot: 22
        path: /srv/one
      - name: server2
        host: 127.0.0.1
    hot_deploy:
      - services/*.py
"""
    world.commit({"zato-gitops.yaml": manifest, "services/crm.py": CRM})
    r = world.cli("validate")
    assert r.returncode == 1
    assert "zato-gitops.yaml:4: clusters[0].zato_version:" in r.stderr
    assert "zato-gitops.yaml:8: clusters[0].servers[0].prot: unknown key" in r.stderr
    assert "zato-gitops.yaml:10: clusters[0].servers[1].path: field required" in r.stderr
    assert "Traceback" not in r.stderr
    assert world.cli("apply").returncode == 1


def test_an_unknown_host_key_is_refused_with_how_to_add_it(world: World, tmp_path: Path) -> None:
    release(world, {"crm.py": CRM})
    known = tmp_path / "known_hosts"
    lines = world.bed.known_hosts.read_text().splitlines()
    port = world.hosts[1].port
    known.write_text("".join(line + "\n" for line in lines if f"]:{port} " not in line))
    sizes = world.log_sizes()
    r = world.cli("apply", known_hosts=known)
    assert r.returncode == 1
    assert "server2" in r.stdout + r.stderr
    assert "ssh-keyscan" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert world.log_sizes() == sizes  # the cluster with an unobserved server is not touched


def test_a_server_that_never_confirms_fails_the_apply_and_is_named(world: World) -> None:
    world.set_faults(world.servers[2], mute_hot_deploy=True)
    world.zato(world.servers[2], "stop")
    world.servers[2].wait_stopped()
    assert world.zato(world.servers[2], "start").returncode == 0
    world.servers[2].wait_ready()
    release(world, {"crm.py": CRM}, confirm_timeout=3)
    r = world.cli("apply")
    assert r.returncode == 1, r.stdout
    assert "server3" in r.stdout
    assert "timeout" in r.stdout
    for s in world.servers[:2]:
        assert "crm.get-customer" in s.services()


@pytest.mark.parametrize("version", ["2.0", "4.1"])
def test_other_profiles_end_to_end(world_factory: Callable[..., World], version: str) -> None:
    world = world_factory(version=version, n=2)
    release(world, {"crm.py": CRM, "billing.py": BILLING})
    code, plan = world.cli_json("plan")
    assert code == 2
    drops = {h["module"]: h["drop_on"] for h in plan["clusters"][0]["hot_deploys"]}
    if version == "4.1":
        assert drops == {"billing.py": ["server1", "server2"], "crm.py": ["server1", "server2"]}  # no fan-out
    else:
        assert all(len(v) == 1 for v in drops.values())
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    for s in world.servers:
        assert s.services()["billing.invoice"] == sha(BILLING)
    if version == "2.0":
        assert world.servers[1].count("Uploaded package id:[") >= 2
    assert world.cli("plan").returncode == 0


def test_note_push_to_a_read_only_origin_keeps_the_record(world: World) -> None:
    release(world, {"crm.py": CRM})
    hook = world.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho read-only mirror >&2\nexit 1\n")
    hook.chmod(0o755)
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not pushed" in r.stdout
    hook.unlink()
    subprocess.run(["true"], check=True)
    world.commit({"services/billing.py": BILLING})
    assert world.cli("apply").returncode == 0
    notes = git(world.origin, "log", "--notes=zato-gitops", "--format=%N")
    assert "services/crm.py" in notes and "services/billing.py" in notes


def test_the_repository_over_ssh_with_strict_host_keys(world: World, tmp_path: Path) -> None:
    """`--repo ssh://...`: git reaches the origin with the same key and known_hosts as the servers, notes included."""
    release(world, {"crm.py": CRM})
    world.bed.chown_to_user(world.origin)  # the SSH user serves it (git refuses repositories of other owners)
    host = world.hosts[0]
    url = f"ssh://{world.bed.user}@127.0.0.1:{host.port}{world.origin}"
    r = world.cli("apply", "--repo", url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "crm.get-customer" in world.servers[2].services()
    assert "services/crm.py" in git(world.origin, "log", "--notes=zato-gitops", "-1", "--format=%N")

    # the same URL with a known_hosts that lacks the host: refused, nothing fetched, no prompt
    known = tmp_path / "known_hosts"
    known.write_text("")
    r = world.cli("plan", "--repo", url, "--state-dir", str(tmp_path / "other-state"), known_hosts=known)
    assert r.returncode == 1
    assert "Host key verification failed" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreachable_server_is_named_and_its_cluster_is_not_touched(world: World) -> None:
    release(world, {"crm.py": CRM})
    sizes = world.log_sizes()
    world.hosts[2].stop()
    try:
        r = world.cli("apply")
    finally:
        world.hosts[2].start()
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "prod/server3: not observed" in out and f"127.0.0.1:{world.hosts[2].port}" in out
    assert "Traceback" not in out
    assert world.log_sizes() == sizes  # no server of the cluster got anything
    assert world.cli("apply").returncode == 0  # once it is back, the same commit goes out
    assert "crm.get-customer" in world.servers[2].services()


def test_a_module_zato_refuses_to_import_fails_the_apply_with_its_log_lines(world: World) -> None:
    release(world, {"crm.py": CRM})
    assert world.cli("apply").returncode == 0
    world.commit({"services/crm.py": "import a_module_nobody_installed\n" + CRM})
    r = world.cli("apply")
    assert r.returncode == 1
    for name in ("server1", "server2", "server3"):
        assert f"prod/{name}: crm.py failed" in r.stdout
    assert "Could not load source, file_name:`" in r.stdout
    assert "No module named 'a_module_nobody_installed'" in r.stdout
    assert "No services nor models were deployed from module `crm.py`" in r.stdout
    for s in world.servers:
        assert s.services()["crm.get-customer"] == sha(CRM)  # the previous version keeps running
    code, history = world.cli_json("history", "--limit", "3")
    assert code == 0 and {h["outcome"] for h in history} == {"failed"}
