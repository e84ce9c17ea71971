"""Desired state at one commit: the manifest plus the bytes of every module it names.

Everything the reconciler will install is read from the same commit, checked here, and refused as a whole before
any server is touched: an invalid manifest, a glob that names two modules with the same file name in one cluster
(the pickup dir is flat), a module that is not UTF-8 or does not compile. The check reads git only through the
small `CommitReader` protocol, so it runs the same on a commit and in tests.

Cost grows with what changed, not with the repository: the reader lists the commit's tree once, and what the
bytes of a blob say (its sha256, its compile verdict) is looked up by git blob id in a `FactCache` before any byte
is read. The cache's storage (a file in the state dir) lives outside this pure module, behind that protocol. A
module's bytes are read only when something needs them (an install), so a commit that changes one module reads
and compiles one module.

Symlinks are refused wherever the manifest could pick one up (a hot-deploy glob, a service-sources or extra path,
a folder on the way to one, the manifest itself): git stores a link as its target's text, which is not what
anyone means to install.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

from reconciler.core.state import Desired, DesiredCluster, Module, StaticFile, StaticTree, TreeMode
from reconciler.errors import ManifestInvalid, ModulesInvalid, Stalled
from reconciler.manifest.loader import LoadedManifest, load_manifest
from reconciler.manifest.model import Cluster


class CommitReader(Protocol):
    def files(self, commit: str) -> list[str]: ...
    def symlinks(self, commit: str) -> list[str]: ...
    def read(self, commit: str, path: str) -> bytes: ...
    def blob_id(self, commit: str, path: str) -> str: ...


@dataclass(frozen=True)
class Facts:
    """What a blob's bytes say, whatever path they sit at: the sha256, and the compile verdict as the
    `compile_errors` lines without their leading path (`:3: SyntaxError: ...`); empty when it compiles."""

    sha256: str
    problems: tuple[str, ...] = ()

    def errors(self, path: str) -> list[str]:
        return [path + p for p in self.problems]


class FactCache(Protocol):
    """Facts by git blob id. The one kept in the state dir is `engine/facts.py`; `MemoryFacts` lives a run."""

    def get(self, blob: str) -> Facts | None: ...
    def put(self, blob: str, facts: Facts) -> None: ...


class MemoryFacts:
    """A FactCache in memory: facts computed once per blob, even when two clusters name the same module."""

    def __init__(self) -> None:
        self.facts: dict[str, Facts] = {}

    def get(self, blob: str) -> Facts | None:
        return self.facts.get(blob)

    def put(self, blob: str, facts: Facts) -> None:
        self.facts[blob] = facts


def facts_of(path: str, data: bytes) -> Facts:
    return Facts(hashlib.sha256(data).hexdigest(), tuple(e[len(path):] for e in compile_errors(path, data)))


class _Blobs:
    """Facts and bytes of the commit's files: facts from the cache when it has them, else read and computed
    once; bytes read at most once, when first asked for (a Module gets a loader, not the bytes)."""

    def __init__(self, reader: CommitReader, commit: str, cache: FactCache) -> None:
        self.reader, self.commit, self.cache = reader, commit, cache
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def data(self, path: str) -> bytes:
        with self._lock:
            got = self._data.get(path)
            if got is None:
                got = self._data[path] = self.reader.read(self.commit, path)
            return got

    def loader(self, path: str) -> Callable[[], bytes]:
        return lambda: self.data(path)

    def facts(self, path: str) -> tuple[str, Facts]:
        blob = self.reader.blob_id(self.commit, path)
        found = self.cache.get(blob)
        if found is None:
            found = facts_of(path, self.data(path))
            self.cache.put(blob, found)
        return blob, found


def glob_match(pattern: str, path: str) -> bool:
    """Shell-style match on '/'-separated paths: `*` and `?` stay within one segment, `**` spans any number."""
    pat = pattern.strip("/").split("/")
    parts = path.split("/")

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and fnmatchcase(parts[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)


def compile_errors(path: str, data: bytes) -> list[str]:
    """`path:line: SyntaxError: message` for a module that will not import, else []."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return [f"{path}:{line}: not UTF-8: {e.reason}"]
    try:
        compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        return [f"{path}:{e.lineno or 0}: {type(e).__name__}: {e.msg}"]
    except ValueError as e:  # e.g. null bytes
        return [f"{path}:1: {e}"]
    return []


def build_desired(
    reader: CommitReader, commit: str, manifest_path: str, cache: FactCache | None = None
) -> Desired:
    """Read and check the manifest and modules at `commit`; raise a `Stalled` error naming every problem."""
    files = reader.files(commit)
    if manifest_path in reader.symlinks(commit) or _linked_dir(manifest_path, reader.symlinks(commit)):
        raise Stalled(
            f"the manifest {manifest_path} is a symlink in commit {commit[:12]}; symlinks in the services "
            "repository are refused",
            hint="commit the manifest file itself, not a link to it",
        )
    if manifest_path not in files:
        raise Stalled(
            f"no manifest at {manifest_path} in commit {commit[:12]}",
            hint="add it to the repository root, or pass --manifest with its path in the repository",
        )
    loaded = load_manifest(reader.read(commit, manifest_path), manifest_path)  # bytes: non-UTF-8 is named
    return desired_from_manifest(reader, commit, loaded, manifest_path, files, cache)


def _linked_dir(path: str, links: Iterable[str]) -> str | None:
    """The symlink among `path`'s parent folders, if any (git lists what is under a linked folder nowhere)."""
    parts = path.strip("/").split("/")
    found = set(links)
    for k in range(1, len(parts)):
        head = "/".join(parts[:k])
        if head in found:
            return head
    return None


def _symlink_error(reader: CommitReader, commit: str, where: str, key: str, link: str, why: str) -> str:
    try:
        target = reader.read(commit, link).decode("utf-8", "replace")
    except Stalled:
        target = "?"
    return (
        f"{where}: {key}: {link} is a symlink (to {target!r}) in the repository{why}; symlinks are refused "
        "because git stores a link as its target's text: commit the file or folder itself"
    )


def desired_from_manifest(
    reader: CommitReader,
    commit: str,
    loaded: LoadedManifest,
    manifest_path: str,
    files: Iterable[str],
    cache: FactCache | None = None,
) -> Desired:
    files = sorted(files)
    links = sorted(reader.symlinks(commit))
    blobs = _Blobs(reader, commit, cache if cache is not None else MemoryFacts())
    manifest = loaded.manifest
    errors: list[str] = []
    warnings: list[str] = list(loaded.warnings)
    clusters: list[DesiredCluster] = []
    compile_failures: dict[str, list[str]] = {}
    unchecked: set[str] = set()
    for ci, spec in enumerate(manifest.clusters):
        by_name: dict[str, Module] = {}
        for gi, pattern in enumerate(spec.hot_deploy):
            where = f"{manifest_path}:{loaded.line_of(('clusters', ci, 'hot_deploy', gi))}"
            key = f"clusters[{ci}].hot_deploy[{gi}]"
            matched = [f for f in files if glob_match(pattern, f)]
            modules = [f for f in matched if f.endswith(".py")]
            for link in links:
                if glob_match(pattern, link):
                    errors.append(_symlink_error(reader, commit, where, key, link, f", matched by {pattern!r}"))
                elif _glob_enters(pattern, link):
                    errors.append(_symlink_error(
                        reader, commit, where, key, link, f", a folder {pattern!r} would look into"))
            if not modules:
                warnings.append(f"{where}: {key}: {pattern!r} matches no .py file at {commit[:12]}")
            for path in modules:
                name = posixpath.basename(path)
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.py", name):
                    errors.append(f"{where}: {key}: {path}: {name!r} is not an importable module name")
                    continue
                other = by_name.get(name)
                if other is not None and other.repo_path != path:
                    errors.append(
                        f"{where}: {key}: {path} and {other.repo_path} have the same file name {name!r}; "
                        f"cluster {spec.name!r} hot-deploys into one flat pickup dir, so rename one"
                    )
                    continue
                if other is not None:
                    continue
                blob, facts = blobs.facts(path)
                if spec.zato_version == "2.0":
                    # Zato 2.0 runs Python 2.7: a Python 3 compile would refuse valid modules (print "x")
                    unchecked.add(path)
                elif path not in compile_failures:
                    compile_failures[path] = facts.errors(path)
                by_name[name] = Module(
                    name=name, repo_path=path, sha256=facts.sha256, blob=blob, content=blobs.loader(path)
                )
        sources, extras, lines = _static(
            blobs, files, links, spec, ci, loaded, manifest_path, errors, compile_failures
        )
        clusters.append(
            DesiredCluster(
                spec=spec, modules=dict(sorted(by_name.items())), sources=sources, extras=extras, source_lines=lines
            )
        )
    if errors:
        raise ManifestInvalid(errors)
    bad = [line for lines in compile_failures.values() for line in lines]
    if bad:
        raise ModulesInvalid(bad)
    unchecked -= set(compile_failures)  # also deployed to a Python 3 cluster, so it was checked after all
    if unchecked:
        warnings.append(
            f"not compile-checked (Zato 2.0 runs Python 2.7, the reconciler checks with Python 3): "
            f"{', '.join(sorted(unchecked))}"
        )
    return Desired(commit=commit, manifest=manifest, clusters=tuple(clusters), warnings=tuple(warnings))


def source_line(target: str) -> str:
    """The service-sources.txt line of a target: relative ones written `./x` as Zato's own file does."""
    return target if target.startswith("/") else f"./{target}"


def _glob_enters(pattern: str, link: str) -> bool:
    """Whether a glob would look inside `link` taken as a folder (`services/*.py` enters a link `services`)."""
    segments = pattern.strip("/").split("/")
    return any(glob_match("/".join(segments[:k]), link) for k in range(1, len(segments))) or (
        "**" in segments and glob_match(pattern, f"{link}/x.py")
    )


def _installed(rel: str, *, recursive: bool) -> bool:
    """Whether a file at `rel` inside a static folder is installed: Zato imports a service-sources folder's
    *.py files, non-recursively; an extra path is copied whole, without byte code."""
    if recursive:
        return "__pycache__/" not in f"/{rel}" and not rel.endswith(".pyc")
    return "/" not in rel and rel.endswith(".py")


def _tree(
    blobs: _Blobs, files: list[str], repo_path: str, *, recursive: bool
) -> tuple[TreeMode, dict[str, StaticFile]] | None:
    """The files of a repository path: one file, or a directory's top-level *.py (recursive: every file)."""
    if repo_path in files:
        data = blobs.data(repo_path)
        return "file", {"": StaticFile("", repo_path, blobs.facts(repo_path)[1].sha256, data)}
    prefix = repo_path.rstrip("/") + "/"
    found: dict[str, StaticFile] = {}
    for f in files:
        if not f.startswith(prefix):
            continue
        rel = f[len(prefix) :]
        if not _installed(rel, recursive=recursive):
            continue
        found[rel] = StaticFile(rel, f, blobs.facts(f)[1].sha256, blobs.data(f))
    if not found and not any(f.startswith(prefix) for f in files):
        return None
    return ("tree" if recursive else "flat"), dict(sorted(found.items()))


def _static_links(repo_path: str, links: list[str], *, recursive: bool) -> list[str]:
    """The symlinks a static path would pick up: the path itself, a folder on the way, or one inside it."""
    path = repo_path.strip("/")
    hits = [link for link in links if link == path]
    if (up := _linked_dir(path, links)) is not None:
        hits.append(up)
    prefix = path + "/"
    hits += [link for link in links if link.startswith(prefix) and _installed(link[len(prefix):], recursive=recursive)]
    return hits


def _static(
    blobs: _Blobs,
    files: list[str],
    links: list[str],
    spec: Cluster,
    ci: int,
    loaded: LoadedManifest,
    manifest_path: str,
    errors: list[str],
    compile_failures: dict[str, list[str]],
) -> tuple[tuple[StaticTree, ...], tuple[StaticTree, ...], tuple[str, ...]]:
    sources: list[StaticTree] = []
    extras: list[StaticTree] = []
    lines: list[str] = []

    commit = blobs.commit

    def check(tree: dict[str, StaticFile]) -> None:
        for f in tree.values():
            if f.repo_path.endswith(".py") and f.repo_path not in compile_failures:
                compile_failures[f.repo_path] = blobs.facts(f.repo_path)[1].errors(f.repo_path)

    def read(key: str, index: int, repo_path: str, *, recursive: bool) -> tuple[TreeMode, dict[str, StaticFile]] | None:
        where = f"{manifest_path}:{loaded.line_of(('clusters', ci, key, index, 'path'))}"
        bad = _static_links(repo_path, links, recursive=recursive)
        for link in bad:
            errors.append(_symlink_error(blobs.reader, commit, where, f"clusters[{ci}].{key}[{index}].path", link, ""))
        if bad:
            return None
        got = _tree(blobs, files, repo_path, recursive=recursive)
        if got is None:
            errors.append(
                f"{where}: clusters[{ci}].{key}[{index}].path: {repo_path!r} is not in the repository at {commit[:12]}"
            )
            return None
        check(got[1])
        return got

    for j, src in enumerate(spec.service_sources):
        if src.module is not None:
            lines.append(src.module)
        elif src.path is not None and src.target is not None and (got := read("service_sources", j, src.path,
                                                                              recursive=False)):
            sources.append(StaticTree("source", src.path, src.target, got[0], got[1]))
            lines.append(source_line(src.target))
    for k, extra in enumerate(spec.extra_paths):
        if got := read("extra_paths", k, extra.path, recursive=True):
            target = posixpath.join(spec.extra_paths_dir, extra.name)
            extras.append(StaticTree("extra", extra.path, target, got[0], got[1]))
    return tuple(sources), tuple(extras), tuple(lines)
