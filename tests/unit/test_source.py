"""Source against real git repositories in a temporary directory: a bare origin, a working clone that commits
and pushes to it, and the reconciler's own bare clone in a state dir. Git is made hermetic (no global or
system config, a fixed identity) so the tests mean the same on every machine."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.errors import SourceError, Stalled
from reconciler.gitrepo.source import Source, normalise_url, redact
from tests.unit.gitbed import GitBed, git

pytestmark = pytest.mark.usefixtures("hermetic_git")

MANIFEST = "clusters:\n  - name: c1\n"


def test_fetch_returns_head_and_reads_the_commit(bed: GitBed) -> None:
    head = bed.commit(
        {"zato-gitops.yaml": MANIFEST, "services/crm.py": "# crm\n", "services/billing.py": "# billing\n"},
        "first services",
    )
    with bed.source() as src:
        assert src.fetch() == head
        assert (bed.root / "state" / "repo.git" / "HEAD").exists()
        assert src.files(head) == ["services/billing.py", "services/crm.py", "zato-gitops.yaml"]
        assert src.read(head, "services/crm.py") == b"# crm\n"
        assert src.blob_id(head, "services/crm.py") == git("rev-parse", "HEAD:services/crm.py", cwd=bed.work)
        assert src.exists(head, "zato-gitops.yaml")
        assert not src.exists(head, "services/nope.py")
        assert not src.exists(head, "services")  # a folder is not a file
        info = src.commit_info(head)
        assert info.sha == head
        assert head.startswith(info.short) and len(info.short) >= 7
        assert info.author == "Ann Author <ann@example.com>"
        assert info.summary == "first services"
        assert info.date[:4].isdigit() and "T" in info.date


def test_reads_an_old_commit_after_a_newer_one_is_fetched(bed: GitBed) -> None:
    old = bed.commit({"services/crm.py": "v1\n", "services/gone.py": "bye\n"}, "v1")
    src = bed.source()
    assert src.fetch() == old
    assert src.read(old, "services/crm.py") == b"v1\n"  # starts GitPython's persistent reader
    new = bed.commit({"services/crm.py": "v2\n", "services/gone.py": None}, "v2")
    assert src.fetch() == new
    # the same instance (its reader started before the fetch) and a fresh one both see both commits
    for reader in (src, bed.source()):
        assert reader.read(old, "services/crm.py") == b"v1\n"
        assert reader.read(new, "services/crm.py") == b"v2\n"
        assert reader.files(old) == ["services/crm.py", "services/gone.py"]
        assert reader.files(new) == ["services/crm.py"]
        assert reader.blob_id(old, "services/crm.py") != reader.blob_id(new, "services/crm.py")
        with pytest.raises(Stalled, match=r"services/gone.py is not in commit"):
            reader.read(new, "services/gone.py")
        reader.close()


def test_missing_branch_is_stalled_and_names_branch_and_url(bed: GitBed) -> None:
    bed.commit({"a.py": "a\n"}, "a")
    src = bed.source(branch="release")
    with pytest.raises(Stalled) as e:
        src.fetch()
    assert not isinstance(e.value, SourceError)
    assert "'release'" in e.value.message and str(bed.origin) in e.value.message
    assert src.remote_head() is None
    src.close()


def test_empty_repository_has_no_branch(bed: GitBed) -> None:
    with bed.source() as src, pytest.raises(Stalled, match="'main' does not exist"):
        src.fetch()


def test_unknown_commit_is_stalled(bed: GitBed) -> None:
    bed.commit({"a.py": "a\n"}, "a")
    with bed.source() as src:
        src.fetch()
        with pytest.raises(Stalled, match="not in the clone"):
            src.read("0" * 40, "a.py")


def test_remote_head_does_not_fetch(bed: GitBed) -> None:
    first = bed.commit({"a.py": "a\n"}, "a")
    with bed.source() as src:
        assert src.remote_head() == first
        assert src.ref_sha("refs/remotes/origin/main") is None  # nothing fetched
        second = bed.commit({"a.py": "b\n"}, "b")
        assert src.remote_head() == second


def test_unreachable_remote_is_source_error(tmp_path: Path) -> None:
    with Source(str(tmp_path / "missing.git"), "main", tmp_path / "state") as src:
        with pytest.raises(SourceError, match="cannot fetch 'main'"):
            src.fetch()
        with pytest.raises(SourceError):
            src.remote_head()


def test_error_messages_never_carry_credentials(tmp_path: Path) -> None:
    # port 1 on localhost refuses at once: a network failure, reported without the token
    url = "https://deploy:s3cr3t-token@127.0.0.1:1/team/services.git"
    with Source(url, "main", tmp_path / "state", timeout=20) as src:
        assert src.safe_url == "https://***@127.0.0.1:1/team/services.git"
        with pytest.raises(SourceError) as e:
            src.fetch()
        assert "s3cr3t" not in e.value.message and "deploy:" not in e.value.message
        assert "https://***@127.0.0.1:1/team/services.git" in e.value.message
        with pytest.raises(SourceError) as e2:
            src.remote_head()
        assert "s3cr3t" not in e2.value.message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok@host/x", "https://***@host/x"),
        ("https://ghp_abc123@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("http://u:p@host:8080/r", "http://***@host:8080/r"),
        ("https://host/x", "https://host/x"),
        ("ssh://git@host/x.git", "ssh://git@host/x.git"),
        ("ssh://git:pw@host/x.git", "ssh://***@host/x.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/services.git", "/srv/git/services.git"),
        (
            "fatal: unable to access 'https://u:tok@h/r/': Failed to connect",
            "fatal: unable to access 'https://***@h/r/': Failed to connect",
        ),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_local_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_url("origin.git") == str(tmp_path / "origin.git")
    assert normalise_url("git@host:o/r.git") == "git@host:o/r.git"
    assert normalise_url("file:///srv/r.git") == "file:///srv/r.git"
    bed = GitBed(tmp_path)
    head = bed.commit({"a.py": "a\n"}, "a")
    with Source("origin.git", "main", "state") as src:
        assert src.fetch() == head


def test_changed_url_repoints_the_clone(tmp_path: Path) -> None:
    one, two = GitBed(tmp_path / "one"), GitBed(tmp_path / "two")
    one.commit({"a.py": "one\n"}, "one")
    head_two = two.commit({"a.py": "two\n"}, "two")
    state = tmp_path / "state"
    with Source(str(one.origin), "main", state) as src:
        src.fetch()
    with Source(str(two.origin), "main", state) as src:
        assert src.fetch() == head_two
        assert git("--git-dir", str(state / "repo.git"), "config", "remote.origin.url") == str(two.origin)
        assert src.read(head_two, "a.py") == b"two\n"


def test_committer_identity_is_set_in_the_clone(bed: GitBed, tmp_path: Path) -> None:
    bed.commit({"a.py": "a\n"}, "a")
    with bed.source() as src:
        src.fetch()
    repo = str(tmp_path / "state" / "repo.git")
    assert git("--git-dir", repo, "config", "--local", "user.name") == "zato-gitops"
    assert git("--git-dir", repo, "config", "--local", "user.email").startswith("zato-gitops@")
    with bed.source(committer_name="Ops", committer_email="ops@example.com") as src:
        src.fetch()
    assert git("--git-dir", repo, "config", "--local", "user.name") == "Ops"
    assert git("--git-dir", repo, "config", "--local", "user.email") == "ops@example.com"


def test_ssh_command_is_used_for_ssh_remotes(tmp_path: Path) -> None:
    marker = tmp_path / "ssh-args"
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text(f'#!/bin/sh\necho "$@" > {marker}\necho "Permission denied (publickey)." >&2\nexit 255\n')
    fake_ssh.chmod(fake_ssh.stat().st_mode | stat.S_IXUSR)
    src = Source("ssh://git@git.example.invalid/team/services.git", "main", tmp_path / "state",
                 ssh_command=f"{fake_ssh} -o StrictHostKeyChecking=yes")
    with src, pytest.raises(SourceError, match="Permission denied"):
        src.fetch()
    args = marker.read_text()
    assert "StrictHostKeyChecking=yes" in args and "git.example.invalid" in args


def test_state_dir_is_required(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Source(str(tmp_path))
