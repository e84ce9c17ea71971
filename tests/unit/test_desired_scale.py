"""The desired state costs what changed: one tree listing per commit, facts cached by blob id, bytes read only when
installed; and symlinks in the services repository are refused at build time (so at `validate`), with file and
reason. Costs are counted through the seams (git calls, reads, computed facts), never timed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.core.desired import Facts, MemoryFacts, build_desired, facts_of
from reconciler.engine.facts import FactFile
from reconciler.errors import ManifestInvalid, ModulesInvalid, Stalled
from reconciler.gitrepo.source import GitResult, Source, parse_ls_tree
from tests.unit.gitbed import GitBed, git
from tests.unit.test_logs_and_desired import MANIFEST as BOTH_GLOBS

pytestmark = pytest.mark.usefixtures("hermetic_git")

MANIFEST = BOTH_GLOBS.decode()
STATIC = MANIFEST + """    service_sources:
      - {path: lib, target: lib}
    extra_paths:
      - {path: extras/pkg}
"""


class CountingSource(Source):
    """A real Source that counts the git commands it runs and the blobs it reads."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.commands: list[str] = []
        self.reads: list[str] = []

    def git(self, *args: str, stdin: object = None) -> GitResult:
        self.commands.append(args[0])
        return super().git(*args, stdin=stdin)  # type: ignore[arg-type]

    def read(self, commit: str, path: str) -> bytes:
        self.reads.append(path)
        return super().read(commit, path)


class CountingFacts(MemoryFacts):
    def __init__(self) -> None:
        super().__init__()
        self.computed: list[str] = []

    def put(self, blob: str, facts: Facts) -> None:
        self.computed.append(blob)
        super().put(blob, facts)


def module(i: int) -> str:
    return f"def handle_{i}():\n    return {i}\n"


def counting(bed: GitBed) -> CountingSource:
    return CountingSource(str(bed.origin), "main", bed.root / "state")


def test_parse_ls_tree_sorts_files_symlinks_and_skips_submodules() -> None:
    out = "\x00".join(["100644 blob aaa\tservices/a.py", "100755 blob bbb\tbin/run", "120000 blob ccc\tservices/b.py",
                       "160000 commit ddd\tvendor/sub", ""])
    tree = parse_ls_tree("c" * 40, out)
    assert tree.files == {"services/a.py": "aaa", "bin/run": "bbb"}
    assert tree.symlinks == {"services/b.py": "ccc"}


def test_the_tree_is_listed_once_per_commit_however_many_files_are_read(bed: GitBed) -> None:
    head = bed.commit({"zato-gitops.yaml": MANIFEST, **{f"services/m{i}.py": module(i) for i in range(60)}}, "60")
    with counting(bed) as src:
        src.fetch()
        src.commands.clear()
        desired = build_desired(src, head, "zato-gitops.yaml")
        assert len(desired.cluster("prod").modules) == 60
        assert src.commands.count("ls-tree") == 1
        build_desired(src, head, "zato-gitops.yaml")
        assert src.commands.count("ls-tree") == 1  # the same commit again: the tree is kept
        assert src.blob_id(head, "services/m7.py") == git("rev-parse", "HEAD:services/m7.py", cwd=bed.work)


def test_a_changed_module_costs_one_modules_work(bed: GitBed) -> None:
    files = {"zato-gitops.yaml": MANIFEST, **{f"services/m{i}.py": module(i) for i in range(40)}}
    first = bed.commit(files, "40 modules")
    cache = CountingFacts()
    with counting(bed) as src:
        src.fetch()
        build_desired(src, first, "zato-gitops.yaml", cache)
        assert len(cache.computed) == 40

        # the same commit again: nothing computed, no module read (only the manifest)
        cache.computed.clear()
        src.reads.clear()
        build_desired(src, first, "zato-gitops.yaml", cache)
        assert cache.computed == []
        assert src.reads == ["zato-gitops.yaml"]

        # one module changed: one fact computed, one module read
        second = bed.commit({"services/m3.py": module(3) + "# edited\n"}, "one changed")
        src.fetch()
        cache.computed.clear()
        src.reads.clear()
        desired = build_desired(src, second, "zato-gitops.yaml", cache)
        assert cache.computed == [src.blob_id(second, "services/m3.py")]
        assert src.reads == ["zato-gitops.yaml", "services/m3.py"]

        # a module's bytes are read when something installs it, once, and match the cached sha256
        m = desired.cluster("prod").modules["m5.py"]
        assert m.data == module(5).encode() and m.data == module(5).encode()
        assert src.reads.count("services/m5.py") == 1
        assert facts_of(m.repo_path, m.data).sha256 == m.sha256


def test_a_cached_compile_failure_is_still_refused_with_its_path(bed: GitBed) -> None:
    head = bed.commit({"zato-gitops.yaml": MANIFEST, "services/bad.py": "def f(:\n"}, "bad")
    cache = CountingFacts()
    with counting(bed) as src:
        src.fetch()
        for _ in range(2):
            with pytest.raises(ModulesInvalid) as e:
                build_desired(src, head, "zato-gitops.yaml", cache)
            assert e.value.errors[0].startswith("services/bad.py:1: SyntaxError")
        assert len(cache.computed) == 1


def test_the_fact_file_survives_a_restart_and_ignores_another_python(tmp_path: Path) -> None:
    path = tmp_path / "state" / "facts.json"
    f = FactFile(path)
    assert f.get("b1") is None
    f.put("b1", Facts("s" * 64, (":1: SyntaxError: x",)))
    f.save()
    again = FactFile(path)
    assert again.get("b1") == Facts("s" * 64, (":1: SyntaxError: x",))
    assert again.computed == 0
    path.write_text(path.read_text().replace('"python":"', '"python":"other-'))
    assert FactFile(path).get("b1") is None
    path.write_text("{not json")
    assert FactFile(path).get("b1") is None  # a broken cache is only a cache


def symlink_commit(bed: GitBed, links: dict[str, str], files: dict[str, str]) -> str:
    for path, content in files.items():
        (bed.work / path).parent.mkdir(parents=True, exist_ok=True)
        (bed.work / path).write_text(content)
    for path, target in links.items():
        (bed.work / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, bed.work / path)
    git("add", "-A", cwd=bed.work)
    git("commit", "--quiet", "-m", "links", cwd=bed.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=bed.work)
    return git("rev-parse", "HEAD", cwd=bed.work)


@pytest.mark.parametrize(
    ("links", "manifest", "where", "link"),
    [
        ({"services/evil.py": "../secret.py"}, MANIFEST, "zato-gitops.yaml:7: clusters[0].hot_deploy[0]",
         "services/evil.py"),
        ({"services": "real"}, MANIFEST, "zato-gitops.yaml:7: clusters[0].hot_deploy[0]", "services"),
        ({"lib": "real"}, STATIC, "zato-gitops.yaml:10: clusters[0].service_sources[0].path", "lib"),
        ({"lib/x.py": "../real/a.py"}, STATIC, "zato-gitops.yaml:10: clusters[0].service_sources[0].path",
         "lib/x.py"),
        ({"extras/pkg/sub": "../../real"}, STATIC, "zato-gitops.yaml:12: clusters[0].extra_paths[0].path",
         "extras/pkg/sub"),
        ({"extras": "real"}, STATIC, "zato-gitops.yaml:12: clusters[0].extra_paths[0].path", "extras"),
    ],
)
def test_symlinks_are_refused_in_every_section_with_file_and_reason(
    bed: GitBed, links: dict[str, str], manifest: str, where: str, link: str
) -> None:
    files = {"zato-gitops.yaml": manifest, "real/a.py": "a = 1\n", "lib/ok.py": "ok = 1\n",
             "extras/pkg/__init__.py": "", "services/fine.py": "x = 1\n"}
    files = {p: c for p, c in files.items() if not any(p == k or p.startswith(k + "/") for k in links)}
    head = symlink_commit(bed, links, files)
    with counting(bed) as src:
        src.fetch()
        with pytest.raises(ManifestInvalid) as e:
            build_desired(src, head, "zato-gitops.yaml")
    [msg] = e.value.errors
    assert msg.startswith(f"{where}: {link} is a symlink (to ")
    assert "symlinks are refused" in msg


def test_a_symlinked_manifest_is_refused(bed: GitBed) -> None:
    head = symlink_commit(bed, {"zato-gitops.yaml": "real.yaml"}, {"real.yaml": MANIFEST})
    with counting(bed) as src:
        src.fetch()
        with pytest.raises(Stalled, match=r"the manifest zato-gitops.yaml is a symlink"):
            build_desired(src, head, "zato-gitops.yaml")


def test_a_symlink_nothing_installs_is_not_an_error(bed: GitBed) -> None:
    head = symlink_commit(bed, {"docs/latest": "v2"}, {"zato-gitops.yaml": MANIFEST, "services/a.py": "a = 1\n"})
    with counting(bed) as src:
        src.fetch()
        assert list(build_desired(src, head, "zato-gitops.yaml").cluster("prod").modules) == ["a.py"]
