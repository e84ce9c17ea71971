"""Trust in git, against real git: SSH-signed commits made here with ssh-keygen keys and gpg.format=ssh, an
unsigned commit, one signed by a key nobody allowed, a force-push; any-ref fetches; the rollback commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import Stalled
from reconciler.gitrepo import trust
from tests.unit.gitbed import GitBed, git

pytestmark = pytest.mark.usefixtures("hermetic_git")


def keypair(root: Path, name: str) -> Path:
    key = root / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def signed_commit(bed: GitBed, key: Path | None, files: dict[str, str], message: str) -> str:
    for path, content in files.items():
        (bed.work / path).parent.mkdir(parents=True, exist_ok=True)
        (bed.work / path).write_text(content)
        git("add", path, cwd=bed.work)
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key else []
    git(*sign, "commit", "--quiet", *(["-S"] if key else []), "-m", message, cwd=bed.work)
    git("push", "--quiet", "--force", "origin", "HEAD:refs/heads/main", cwd=bed.work)
    return git("rev-parse", "HEAD", cwd=bed.work)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    good, unknown = keypair(tmp_path, "ann"), keypair(tmp_path, "eve")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ann@example.com namespaces="git" {(tmp_path / "ann.pub").read_text()}')
    return good, unknown, allowed


def test_a_commit_signed_by_an_allowed_key_passes_and_names_its_signer(bed: GitBed, keys: tuple[Path, Path, Path]
                                                                       ) -> None:
    good, _, allowed = keys
    head = signed_commit(bed, good, {"a.py": "x = 1\n"}, "signed")
    with bed.source() as src:
        assert src.fetch() == head
        sig = trust.check_signed(src, head, "ssh", allowed)
        assert sig.status == "G" and sig.signer == "ann@example.com"
        assert sig.describe().startswith("signed by ann@example.com (key SHA256:")


def test_unsigned_and_unknown_signer_are_refused_naming_commit_and_signer(bed: GitBed,
                                                                          keys: tuple[Path, Path, Path]) -> None:
    good, unknown, allowed = keys
    unsigned = signed_commit(bed, None, {"a.py": "x = 1\n"}, "unsigned")
    with bed.source() as src:
        src.fetch()
        with pytest.raises(trust.Untrusted) as e:
            trust.check_signed(src, unsigned, "ssh", allowed)
        assert e.value.commit == unsigned
        assert f"commit {unsigned[:12]} is unsigned" in e.value.message
        stranger = signed_commit(bed, unknown, {"a.py": "x = 2\n"}, "by eve")
        src.fetch()
        with pytest.raises(trust.Untrusted) as e:
            trust.check_signed(src, stranger, "ssh", allowed)
        fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{unknown}.pub"], check=True, capture_output=True,
                                     text=True).stdout.split()[1]
        assert f"commit {stranger[:12]} is signed by an unknown signer (key {fingerprint})" in e.value.message
        assert "not an allowed signer" in e.value.message
        # the allowed key still passes after them
        ok = signed_commit(bed, good, {"a.py": "x = 3\n"}, "by ann")
        src.fetch()
        assert trust.check_signed(src, ok, "ssh", allowed).signer == "ann@example.com"


def test_a_missing_allowed_signers_file_is_a_config_error(bed: GitBed, tmp_path: Path) -> None:
    head = bed.commit({"a.py": "x\n"}, "one")
    with bed.source() as src, pytest.raises(Stalled, match="allowed_signers"):
        src.fetch()
        trust.check_signed(src, head, "ssh", tmp_path / "nope")


def test_a_force_push_is_refused_after_an_apply_unless_allowed(bed: GitBed) -> None:
    v1 = bed.commit({"a.py": "1\n"}, "v1")
    v2 = bed.commit({"a.py": "2\n"}, "v2")
    with bed.source() as src:
        assert src.fetch() == v2
        trust.check_descends(src, "main", v2)  # nothing applied yet: anything goes
        trust.mark_applied(src, "main", v2)
        git("reset", "--quiet", "--hard", v1, cwd=bed.work)
        rewritten = signed_commit(bed, None, {"a.py": "other\n"}, "rewritten")
        assert src.fetch() == rewritten
        with pytest.raises(trust.Untrusted, match=f"commit {rewritten[:12]} is not a descendant of {v2[:12]}"):
            trust.check_descends(src, "main", rewritten)
        v3 = bed.commit({"a.py": "3\n"}, "on top of the rewrite")
        src.fetch()
        with pytest.raises(trust.Untrusted):
            trust.check_descends(src, "main", v3)
        # a commit on top of the applied one is fine
        assert trust.is_ancestor(src, v2, v2)


def test_plan_any_ref_a_pull_request_head_or_a_sha(bed: GitBed) -> None:
    base = bed.commit({"a.py": "1\n"}, "base")
    git("checkout", "--quiet", "-b", "feature", cwd=bed.work)
    (bed.work / "a.py").write_text("pr\n")
    git("commit", "--quiet", "-am", "the PR", cwd=bed.work)
    pr_head = git("rev-parse", "HEAD", cwd=bed.work)
    git("push", "--quiet", "origin", "HEAD:refs/pull/7/head", cwd=bed.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/feature", cwd=bed.work)
    with bed.source() as src:
        assert trust.fetch_ref(src, "refs/pull/7/head") == pr_head
        assert src.read(pr_head, "a.py") == b"pr\n"
        assert trust.fetch_ref(src, "feature") == pr_head
        assert trust.fetch_ref(src, base) == base
        assert trust.fetch_ref(src, base[:10]) == base
        with pytest.raises(Stalled, match="refs/pull/8/head does not exist"):
            trust.fetch_ref(src, "refs/pull/8/head")


def test_rollback_commit_has_the_old_tree_and_is_refused_when_the_branch_moved(bed: GitBed) -> None:
    v1 = bed.commit({"a.py": "1\n"}, "v1")
    v2 = bed.commit({"a.py": "2\n", "b.py": "b\n"}, "v2")
    with bed.source() as src:
        made = trust.make_rollback(src, "main", v1, "ann@host", "v2 broke billing")
        assert made.parent == v2 and made.to == v1
        git("fetch", "--quiet", "origin", cwd=bed.work)
        assert git("rev-parse", "origin/main", cwd=bed.work) == made.commit
        assert git("rev-parse", f"{made.commit}^{{tree}}", cwd=bed.work) == git("rev-parse", f"{v1}^{{tree}}",
                                                                                  cwd=bed.work)
        message = git("log", "-1", "--format=%B", made.commit, cwd=bed.work)
        assert message.startswith("v2 broke billing")
        assert v1 in message and v2 in message and "ann@host" in message
        assert trust.rollback_target(message) == v1
        with pytest.raises(Stalled, match="already has the tree"):
            trust.make_rollback(src, "main", v1, "ann@host", None)
        # someone pushes between our fetch and our push: the lease refuses, nothing is overwritten
        stale = src.fetch()
        git("reset", "--quiet", "--hard", made.commit, cwd=bed.work)
        moved = bed.commit({"a.py": "someone else\n"}, "pushed meanwhile")
        src.fetch = lambda: stale  # type: ignore[method-assign]
        with pytest.raises(Stalled, match="moved while the rollback was made"):
            trust.make_rollback(src, "main", v2, "ann@host", None)
        assert git("ls-remote", str(bed.origin), "refs/heads/main").split()[0] == moved


def test_the_applied_mark_only_moves_forward(bed: GitBed) -> None:
    v1 = bed.commit({"a.py": "1\n"}, "v1")
    v2 = bed.commit({"a.py": "2\n"}, "v2")
    with bed.source() as src:
        src.fetch()
        trust.mark_applied(src, "main", v2)
        trust.mark_applied(src, "main", v1)  # a drift heal of an older revision
        assert trust.last_applied(src, "main") == v2


def gpg_home(root: Path, uid: str) -> Path:
    home = root / f"gnupg-{uid.split('@')[0]}"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
                    "sign", "never"], check=True, capture_output=True)
    return home


def test_gpg_signatures_are_checked_against_the_given_keyring_only(
        bed: GitBed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ann, eve = gpg_home(tmp_path, "ann@example.com"), gpg_home(tmp_path, "eve@example.com")
    keyring = tmp_path / "allowed.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--homedir", str(ann), "--batch", "--export", "ann@example.com"],
                                       check=True, capture_output=True).stdout)

    def commit_as(home: Path, uid: str, message: str) -> str:
        monkeypatch.setenv("GNUPGHOME", str(home))
        (bed.work / "a.py").write_text(message)
        git("add", "a.py", cwd=bed.work)
        git("-c", f"user.signingkey={uid}", "commit", "--quiet", "-S", "-m", message, cwd=bed.work)
        git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=bed.work)
        monkeypatch.delenv("GNUPGHOME")
        return git("rev-parse", "HEAD", cwd=bed.work)

    try:
        good = commit_as(ann, "ann@example.com", "by ann")
        with bed.source() as src:
            src.fetch()
            assert trust.check_signed(src, good, "gpg", keyring).signer.startswith("ann@example.com")
            bad = commit_as(eve, "eve@example.com", "by eve")
            src.fetch()
            with pytest.raises(trust.Untrusted, match=f"commit {bad[:12]} is signed by"):
                trust.check_signed(src, bad, "gpg", keyring)
            unsigned = bed.commit({"a.py": "plain\n"}, "unsigned")
            src.fetch()
            with pytest.raises(trust.Untrusted, match="is unsigned"):
                trust.check_signed(src, unsigned, "gpg", keyring)
    finally:
        for home in (ann, eve, bed.root / "state" / "gnupg"):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False,
                           capture_output=True)
