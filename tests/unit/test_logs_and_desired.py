"""Pure helpers: log read parsing (incl. rotation), glob matching, compile checks, desired-state building."""

from __future__ import annotations

import hashlib

import pytest

from reconciler.apply.logtail import parse_read
from reconciler.core.desired import build_desired, compile_errors, glob_match
from reconciler.core.state import LogMark
from reconciler.errors import ManifestInvalid, ModulesInvalid, Stalled


def test_parse_read_consumes_whole_lines_only() -> None:
    mark = LogMark("/s/logs/server.log", 100, 7)
    chunk = parse_read(b"@@stat 7 130\n@@new\nline one\nline two\npartial", mark)
    assert chunk.lines == ["line one", "line two"]
    assert chunk.mark == LogMark("/s/logs/server.log", 100 + len(b"line one\nline two\n"), 7)


def test_parse_read_after_rotation_reads_old_rest_then_new_file() -> None:
    mark = LogMark("/s/logs/server.log", 100, 7)
    out = b"@@stat 9 12\n@@old\ntail of old\n\n@@end-old\n@@rotated\nfirst new\n"
    chunk = parse_read(out, mark)
    assert chunk.lines == ["tail of old", "first new"]
    assert chunk.mark == LogMark("/s/logs/server.log", len(b"first new\n"), 9)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("services/*.py", "services/a.py", True),
        ("services/*.py", "services/sub/a.py", False),
        ("services/**/*.py", "services/sub/deep/a.py", True),
        ("services/**/*.py", "services/a.py", True),
        ("*.py", "services/a.py", False),
        ("services/a?.py", "services/ab.py", True),
    ],
)
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def test_compile_errors_name_file_and_line() -> None:
    assert compile_errors("services/x.py", b"x = 1\n") == []
    [msg] = compile_errors("services/x.py", b"x = 1\n\ndef f(:\n    pass\n")
    assert msg.startswith("services/x.py:3: SyntaxError: ")
    [msg] = compile_errors("services/y.py", b"a = 1\nb = '\xff'\n")
    assert msg.startswith("services/y.py:2: not UTF-8")


class Reader:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.data = files

    def files(self, commit: str) -> list[str]:
        return sorted(self.data)

    def symlinks(self, commit: str) -> list[str]:
        return []

    def read(self, commit: str, path: str) -> bytes:
        return self.data[path]

    def blob_id(self, commit: str, path: str) -> str:
        return "blob:" + path


MANIFEST = b"""version: 1
clusters:
  - name: prod
    servers:
      - {name: s1, host: h, path: /srv/s1}
    hot_deploy:
      - services/*.py
      - more/*.py
"""


def test_build_desired_reads_modules_with_hashes() -> None:
    reader = Reader({"zato-gitops.yaml": MANIFEST, "services/a.py": b"a = 1\n", "services/README.md": b"x",
                     "more/b.py": b"b = 2\n"})
    desired = build_desired(reader, "c" * 40, "zato-gitops.yaml")
    mods = desired.cluster("prod").modules
    assert list(mods) == ["a.py", "b.py"]
    assert mods["a.py"].sha256 == hashlib.sha256(b"a = 1\n").hexdigest()
    assert mods["b.py"].blob == "blob:more/b.py"


def test_same_file_name_twice_in_a_cluster_is_an_error_with_manifest_line() -> None:
    reader = Reader({"zato-gitops.yaml": MANIFEST, "services/a.py": b"", "more/a.py": b""})
    with pytest.raises(ManifestInvalid) as e:
        build_desired(reader, "c" * 40, "zato-gitops.yaml")
    [msg] = e.value.errors
    assert msg.startswith("zato-gitops.yaml:8: clusters[0].hot_deploy[1]: more/a.py and services/a.py")


def test_every_module_that_does_not_compile_is_listed() -> None:
    reader = Reader({"zato-gitops.yaml": MANIFEST, "services/a.py": b"def (:\n", "more/b.py": b"\n\nx = )\n"})
    with pytest.raises(ModulesInvalid) as e:
        build_desired(reader, "c" * 40, "zato-gitops.yaml")
    assert [m.split(":")[:2] for m in e.value.errors] == [["services/a.py", "1"], ["more/b.py", "3"]]


def test_missing_manifest_is_stalled_with_hint() -> None:
    with pytest.raises(Stalled) as e:
        build_desired(Reader({"x.py": b""}), "c" * 40, "zato-gitops.yaml")
    assert "no manifest at zato-gitops.yaml" in e.value.message


def test_zato_20_modules_are_python_2_and_not_compile_checked_with_python_3() -> None:
    manifest = MANIFEST.replace(b"  - name: prod\n", b"  - name: prod\n    zato_version: '2.0'\n")
    reader = Reader({"zato-gitops.yaml": manifest, "services/old.py": b'print "hello from Python 2.7"\n'})
    desired = build_desired(reader, "c" * 40, "zato-gitops.yaml")
    assert list(desired.cluster("prod").modules) == ["old.py"]
    assert any("not compile-checked" in w and "services/old.py" in w for w in desired.warnings)
