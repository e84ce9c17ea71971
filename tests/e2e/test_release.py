"""Issue 11 end to end: release by pull request. Plan a PR ref in Zato's words and comment it, commit statuses per
cluster, only signed history, rollback through git.

Real sshd, real git (a bare origin with a refs/pull/N/head ref, commits signed here with ssh-keygen keys and
gpg.format=ssh), the Zato stand-in, the reconciler as a process; the git host is a small recording HTTP server
that accepts only the provider's documented API (tests/unit/hostbed.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from world import World, git, service_module

from tests.unit.hostbed import TOKEN, HostBed

pytestmark = pytest.mark.e2e

HEAD = "from zato.server.service import Service\n\n\n"
CRM_V1 = HEAD + ("class GetCustomer(Service):\n    def handle(self):\n        pass\n\n\n"
                 "class DeleteCustomer(Service):\n    def handle(self):\n        pass\n")
CRM_PR = HEAD + ("class GetCustomer(Service):\n    def handle(self):\n        self.response.payload = 'v2'\n\n\n"
                 "class UpdateCustomer(Service):\n    def handle(self):\n        pass\n")


def valid(name: str, data: Any) -> None:
    """`data` matches the JSON Schema the package ships for that command's --json (references resolved)."""
    import jsonschema
    from referencing import Registry, Resource

    schemas = Path(__file__).resolve().parents[2] / "reconciler" / "cli" / "schemas"
    loaded = {p.name: json.loads(p.read_text()) for p in schemas.glob("*.schema.json")}
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in loaded.values())
    jsonschema.Draft202012Validator(loaded[f"{name}.schema.json"], registry=registry).validate(data)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config(world: World, name: str, data: dict[str, Any]) -> Path:
    path = world.root.parent / f"{world.root.name}-{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def host_config(bed: HostBed) -> dict[str, Any]:
    return {"git_host": {"provider": bed.provider, "api_url": bed.url, "repository": "acme/zato-services",
                         "token_env": "ZG_E2E_TOKEN", "retry_delay": 0.05},
            "external_url": "https://gitops.example.com"}


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Any:
    bed = HostBed("github")
    monkeypatch.setenv("ZG_E2E_TOKEN", TOKEN)  # the CLI process inherits it
    yield bed
    bed.close()


def test_plan_and_comment_a_pull_request_in_zato_services(world: World, github: HostBed) -> None:
    manifest = world.manifest()
    world.commit({"zato-gitops.yaml": manifest, "services/crm.py": CRM_V1,
                  "services/billing_old.py": service_module("Pay")}, "v1")
    assert world.cli("apply").returncode == 0
    main = world.commit({"services/billing_old.py": None}, "billing_old leaves git")
    assert world.cli("apply").returncode == 0
    # a pull request: its head lives only at refs/pull/7/head on the origin, as GitHub keeps it
    git(world.work, "checkout", "-q", "-b", "feature")
    (world.work / "services" / "crm.py").write_text(CRM_PR)
    git(world.work, "commit", "-q", "-am", "crm: update instead of delete")
    git(world.work, "push", "-q", "origin", "HEAD:refs/pull/7/head")
    pr = git(world.work, "rev-parse", "HEAD")

    r = world.cli("plan", "--ref", "refs/pull/7/head", "--format", "markdown")
    assert r.returncode == 2, r.stdout + r.stderr
    md = r.stdout
    assert f"plan for `refs/pull/7/head` (commit `{pr[:12]}`)" in md
    assert "**1 module changes 3 services on 3 servers (1 cluster).**" in md
    assert ("| `services/crm.py` | changed | + `crm.update-customer`<br>~ `crm.get-customer`<br>− "
            "`crm.delete-customer` | server1, server2, server3 |") in md
    assert "`billing_old.py` on server1, server2, server3: no longer in git; still deployed (`billing-old.pay`)" in md

    code, data = world.cli_json("plan", "--ref", "refs/pull/7/head")
    assert code == 2 and data["ref"] == "refs/pull/7/head" and data["commit"] == pr
    valid("plan", data)
    [cluster] = data["release"]["clusters"]
    [crm] = cluster["modules"]
    assert (crm["added"], crm["changed"], crm["removed"]) == (
        ["crm.update-customer"], ["crm.get-customer"], ["crm.delete-customer"])
    assert [g["module"] for g in cluster["left_git"]] == ["billing_old.py"]
    # the branch head itself is what the servers run: nothing to do, but the module that left git is named
    r = world.cli("plan")
    assert r.returncode == 0 and "billing_old.py on server1, server2, server3: no longer in git" in r.stdout
    assert main == git(world.origin, "rev-parse", "main")

    # a pull request with a module that does not compile: the markdown says the merge would be refused, file:line
    git(world.work, "checkout", "-q", "-b", "broken", main)
    (world.work / "services" / "crm.py").write_text("class (:\n")
    git(world.work, "commit", "-q", "-am", "oops")
    git(world.work, "push", "-q", "origin", "HEAD:refs/pull/8/head")
    git(world.work, "checkout", "-q", "feature")
    r = world.cli("plan", "--ref", "refs/pull/8/head", "--format", "markdown")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "**This commit would be refused: no server would be touched.**" in r.stdout
    assert "- `services/crm.py:1: SyntaxError: invalid syntax`" in r.stdout

    cfg = config(world, "host", host_config(github))
    r = world.cli("comment", "--ref", "refs/pull/7/head", "--pr", "7", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "created on #7" in r.stdout
    (world.work / "services" / "crm.py").write_text(CRM_PR + "\n\nclass Extra(Service):\n    pass\n")
    git(world.work, "commit", "-q", "-am", "crm: one more")
    git(world.work, "push", "-q", "-f", "origin", "HEAD:refs/pull/7/head")
    r = world.cli("comment", "--ref", "refs/pull/7/head", "--pr", "7", "--config", str(cfg))
    assert r.returncode == 0 and "updated on #7" in r.stdout, r.stdout + r.stderr
    [comment] = github.comments.values()
    assert "+ `crm.extra`" in comment["body"] and comment["body"].startswith("<!-- zato-gitops:plan -->")
    assert [(q.method, q.path.split("?")[0]) for q in github.requests] == [
        ("GET", "/repos/acme/zato-services/issues/7/comments"), ("POST", "/repos/acme/zato-services/issues/7/comments"),
        ("GET", "/repos/acme/zato-services/issues/7/comments"),
        ("PATCH", f"/repos/acme/zato-services/issues/comments/{next(iter(github.comments))}")]
    assert TOKEN not in r.stdout + r.stderr

    # the daemon: it sets the statuses of what it applies, names the module that left git, counts both
    before = len(github.statuses)
    d = world.daemon(**host_config(github))
    d.wait_applied(main)
    d.wait_for("statuses", lambda: [(s["sha"], s["state"]) for s in github.statuses[before:]] == [
        (main, "pending"), (main, "success")])
    assert d.cluster()["left_git"] == ["billing_old.py on server1, server2, server3: no longer in git; still deployed"]
    _, metrics = d.request("GET", "/metrics")
    assert 'zato_gitops_modules_not_in_git{cluster="prod"} 1.0' in metrics.decode()
    assert 'zato_gitops_commit_statuses_total{result="posted"} 2.0' in metrics.decode()
    r = world.cli("status")
    assert "prod: billing_old.py on server1, server2, server3: no longer in git; still deployed" in r.stdout
    d.stop()


def test_apply_sets_a_status_per_cluster_and_a_git_host_failure_never_fails_the_deploy(
        world: World, github: HostBed) -> None:
    cfg = config(world, "host", host_config(github))
    github.fail_statuses = 1  # the host has a bad moment: the pending status is retried
    good = world.commit({"zato-gitops.yaml": world.manifest(), "services/crm.py": CRM_V1}, "v1")
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert [(s["sha"], s["state"], s["context"]) for s in github.statuses] == [
        (good, "pending", "zato-gitops/prod"), (good, "success", "zato-gitops/prod")]
    assert all(s["target_url"] == "https://gitops.example.com" for s in github.statuses)
    assert "every server runs" in github.statuses[1]["description"]

    bad = world.commit({"services/broken.py": "import no_such_package_anywhere\n"}, "needs a package")
    r = world.cli("apply", "--config", str(cfg), "--timeout", "5")
    assert r.returncode == 1
    assert [(s["sha"], s["state"]) for s in github.statuses[2:]] == [(bad, "pending"), (bad, "failure")]
    assert "server" in github.statuses[-1]["description"]

    github.fail_statuses = 100  # down for good: apply still succeeds, the failure is only logged
    world.commit({"services/broken.py": None}, "drop it")
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr


def keypair(root: Path, name: str) -> Path:
    key = root / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def commit_signed(world: World, key: Path | None, files: dict[str, str], message: str, *,
                  force: bool = False) -> str:
    for path, text in files.items():
        (world.work / path).parent.mkdir(parents=True, exist_ok=True)
        (world.work / path).write_text(text)
    git(world.work, "add", "-A")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-S"] if key else ["commit"]
    git(world.work, *sign, "-q", "-m", message)
    git(world.work, "push", "-q", *(["-f"] if force else []), "origin", "HEAD:main")
    return git(world.work, "rev-parse", "HEAD")


def test_only_signed_history_is_applied(world: World, tmp_path: Path) -> None:
    ann, eve = keypair(tmp_path, "ann"), keypair(tmp_path, "eve")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ann@example.com namespaces="git" {(tmp_path / "ann.pub").read_text()}')
    verify = {"signatures": "ssh", "allowed_signers": str(allowed), "signing_key": str(ann)}
    cfg = config(world, "verify", {"verify": verify})

    v1 = commit_signed(world, ann, {"zato-gitops.yaml": world.manifest(), "services/crm.py": CRM_V1}, "v1")
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "signed by ann@example.com" in r.stderr

    sizes = world.log_sizes()
    unsigned = commit_signed(world, None, {"services/crm.py": CRM_PR}, "unsigned")
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 1
    assert f"error: commit {unsigned[:12]} is unsigned" in r.stderr and "observing" not in r.stderr
    assert world.log_sizes() == sizes  # nothing observed, nothing touched
    assert all(s.services()["crm.get-customer"] == sha(CRM_V1) for s in world.servers)

    by_eve = commit_signed(world, eve, {"services/crm.py": CRM_PR + "\n"}, "by eve")
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 1 and f"commit {by_eve[:12]} is signed by an unknown signer (key SHA256:" in r.stderr
    _, hist = world.cli_json("history", "--config", str(cfg))
    refused = {h["commit"]: h["detail"] for h in hist if h["action"] == "refused"}
    assert "unsigned" in refused[unsigned] and "unknown signer" in refused[by_eve]

    # a signed commit on top is applied; then a force-push rewrites history under it: refused though signed
    v2 = commit_signed(world, ann, {"services/crm.py": CRM_PR}, "v2, signed")
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    git(world.work, "reset", "-q", "--hard", v1)
    forced = commit_signed(world, ann, {"services/other.py": "X = 1\n"}, "rewritten", force=True)
    r = world.cli("apply", "--config", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"commit {forced[:12]} is not a descendant of {v2[:12]}" in r.stderr
    assert all(s.services()["crm.get-customer"] == sha(CRM_PR) for s in world.servers)
    cfg_allow = config(world, "allow", {"verify": verify | {"allow_history_rewrite": True}})
    r = world.cli("apply", "--config", str(cfg_allow))
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(s.services()["crm.get-customer"] == sha(CRM_V1) for s in world.servers)

    # with signatures required, the rollback commit is signed with verify.signing_key and passes
    r = world.cli("rollback", "--to", v1, "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    rolled = git(world.origin, "rev-parse", "main")
    assert git(world.origin, "-c", f"gpg.ssh.allowedSignersFile={allowed}", "log", "-1", "--format=%G?%GS",
               rolled) == "Gann@example.com"
    git(world.work, "fetch", "-q", "origin")
    git(world.work, "reset", "-q", "--hard", "origin/main")

    # the daemon stalls on an unsigned head and records it
    unsigned2 = commit_signed(world, None, {"services/crm.py": CRM_PR}, "unsigned again")
    d = world.daemon(verify=verify)
    d.wait_for("Stalled", lambda: d.condition("Stalled").get("status") == "True")
    assert "unsigned" in d.condition("Stalled")["message"]
    d.stop()
    note = git(world.origin, "notes", "--ref", "zato-gitops", "show", unsigned2)
    assert '"action": "refused"' in note or '"action":"refused"' in note


def test_rollback_through_git(world: World) -> None:
    v1 = world.commit({"zato-gitops.yaml": world.manifest(), "services/crm.py": CRM_V1}, "v1")
    assert world.cli("apply").returncode == 0
    v2 = world.commit({"services/crm.py": CRM_PR}, "v2")
    assert world.cli("apply").returncode == 0
    assert all(s.services()["crm.get-customer"] == sha(CRM_PR) for s in world.servers)

    r = world.cli("rollback", "--to", v1[:10], "--message", "v2 breaks the CRM", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    valid("rollback", json.loads(r.stdout))
    assert json.loads(r.stdout)["applied"]["ok"] is True
    head = git(world.origin, "rev-parse", "main")
    assert head not in (v1, v2)
    assert git(world.origin, "rev-parse", f"{head}^") == v2
    assert git(world.origin, "rev-parse", f"{head}^{{tree}}") == git(world.origin, "rev-parse", f"{v1}^{{tree}}")
    message = git(world.origin, "log", "-1", "--format=%B", head)
    assert message.startswith("v2 breaks the CRM") and v1 in message and v2 in message
    for s in world.servers:
        assert (s.current_dir / "crm.py").read_text() == CRM_V1
        assert s.services()["crm.get-customer"] == sha(CRM_V1)

    _, hist = world.cli_json("history")
    [rb] = [h for h in hist if h["action"] == "rollback"]
    assert rb["commit"] == head and rb["to"] == v1 and rb["from"] == v2
    r = world.cli("history")
    assert f"back to {v1[:8]} from {v2[:8]}" in r.stdout

    # the branch moved since: rolling back to the same tree again is refused, nothing pushed
    r = world.cli("rollback", "--to", v1)
    assert r.returncode == 1 and "already has the tree" in r.stderr
    assert git(world.origin, "rev-parse", "main") == head
    r = world.cli("rollback", "--to", v2, "--no-apply", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["to"] == v2
    valid("rollback", json.loads(r.stdout))
    assert all(s.services()["crm.get-customer"] == sha(CRM_V1) for s in world.servers)  # not applied
