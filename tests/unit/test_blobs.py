"""Finding what a server runs in git by its sha256 (real git)."""

from __future__ import annotations

import hashlib

import pytest

from reconciler.gitrepo.blobs import by_sha256, read_blob
from tests.unit.gitbed import GitBed, git

pytestmark = pytest.mark.usefixtures("hermetic_git")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_bytes_are_found_by_blob_id_first_then_in_the_given_commits(bed: GitBed) -> None:
    v1 = bed.commit({"s/a.py": "A1\n", "s/b.py": "B1\n", "README": "r\n"}, "v1")
    blob = git("rev-parse", "HEAD:s/a.py", cwd=bed.work)
    v2 = bed.commit({"s/a.py": "A2\n"}, "v2")
    with bed.source() as src:
        src.fetch()
        assert read_blob(src, blob) == b"A1\n"
        assert read_blob(src, "0" * 40) is None
        wanted = {sha("A1\n"), sha("B1\n"), sha("A2\n"), sha("nowhere\n"), sha("r\n")}
        found = by_sha256(src, wanted, [blob], [v2, "f" * 40, None])
        assert found == {sha("A1\n"): b"A1\n", sha("A2\n"): b"A2\n", sha("B1\n"): b"B1\n"}
        assert v1  # README is not a module: not searched


def test_a_blob_whose_sha256_is_known_and_not_wanted_is_not_read(bed: GitBed, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    v1 = bed.commit({"a.py": "A\n", "b.py": "B\n"}, "v1")
    blob_b = git("rev-parse", "HEAD:b.py", cwd=bed.work)
    with bed.source() as src:
        src.fetch()
        read: list[str] = []
        import reconciler.gitrepo.blobs as blobs

        real = blobs.read_blob
        monkeypatch.setattr(blobs, "read_blob", lambda s, b: read.append(b) or real(s, b))
        found = by_sha256(src, {sha("A\n")}, [], [v1], known=lambda b: sha("B\n") if b == blob_b else None)
        assert found == {sha("A\n"): b"A\n"} and blob_b not in read
