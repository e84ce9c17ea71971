"""Desired state at one commit: the manifest plus the bytes of every module it names.

Everything the reconciler will install is read from the same commit, checked here, and refused as a whole before
any server is touched: an invalid manifest, a glob that names two modules with the same file name in one cluster
(the pickup dir is flat), a module that is not UTF-8 or does not compile. The check reads git only through the
small `CommitReader` protocol, so it runs the same on a commit and in tests.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Protocol

from reconciler.core.state import Desired, DesiredCluster, Module, StaticFile, StaticTree, TreeMode
from reconciler.errors import ManifestInvalid, ModulesInvalid, Stalled
from reconciler.manifest.loader import LoadedManifest, load_manifest
from reconciler.manifest.model import Cluster


class CommitReader(Protocol):
    def files(self, commit: str) -> list[str]: ...
    def read(self, commit: str, path: str) -> bytes: ...
    def blob_id(self, commit: str, path: str) -> str: ...


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


def build_desired(reader: CommitReader, commit: str, manifest_path: str) -> Desired:
    """Read and check the manifest and modules at `commit`; raise a `Stalled` error naming every problem."""
    files = reader.files(commit)
    if manifest_path not in files:
        raise Stalled(
            f"no manifest at {manifest_path} in commit {commit[:12]}",
            hint="add it to the repository root, or pass --manifest with its path in the repository",
        )
    loaded = load_manifest(reader.read(commit, manifest_path), manifest_path)  # bytes: non-UTF-8 is named
    return desired_from_manifest(reader, commit, loaded, manifest_path, files)


def desired_from_manifest(
    reader: CommitReader, commit: str, loaded: LoadedManifest, manifest_path: str, files: Iterable[str]
) -> Desired:
    files = sorted(files)
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
                data = reader.read(commit, path)
                if spec.zato_version == "2.0":
                    # Zato 2.0 runs Python 2.7: a Python 3 compile would refuse valid modules (print "x")
                    unchecked.add(path)
                elif path not in compile_failures:
                    compile_failures[path] = compile_errors(path, data)
                by_name[name] = Module(
                    name=name,
                    repo_path=path,
                    sha256=hashlib.sha256(data).hexdigest(),
                    blob=reader.blob_id(commit, path),
                    data=data,
                )
        sources, extras, lines = _static(
            reader, commit, files, spec, ci, loaded, manifest_path, errors, compile_failures
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


def _tree(
    reader: CommitReader, commit: str, files: list[str], repo_path: str, *, recursive: bool
) -> tuple[TreeMode, dict[str, StaticFile]] | None:
    """The files of a repository path: one file, or a directory's top-level *.py (recursive: every file)."""
    if repo_path in files:
        data = reader.read(commit, repo_path)
        return "file", {"": StaticFile("", repo_path, hashlib.sha256(data).hexdigest(), data)}
    prefix = repo_path.rstrip("/") + "/"
    found: dict[str, StaticFile] = {}
    for f in files:
        if not f.startswith(prefix):
            continue
        rel = f[len(prefix) :]
        if recursive:
            if "__pycache__/" in f"/{rel}" or rel.endswith(".pyc"):
                continue
        elif "/" in rel or not rel.endswith(".py"):
            continue  # Zato imports a directory's *.py files, non-recursively
        data = reader.read(commit, f)
        found[rel] = StaticFile(rel, f, hashlib.sha256(data).hexdigest(), data)
    if not found and not any(f.startswith(prefix) for f in files):
        return None
    return ("tree" if recursive else "flat"), dict(sorted(found.items()))


def _static(
    reader: CommitReader,
    commit: str,
    files: list[str],
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

    def check(tree: dict[str, StaticFile]) -> None:
        for f in tree.values():
            if f.repo_path.endswith(".py") and f.repo_path not in compile_failures:
                compile_failures[f.repo_path] = compile_errors(f.repo_path, f.data)

    def read(key: str, index: int, repo_path: str, *, recursive: bool) -> tuple[TreeMode, dict[str, StaticFile]] | None:
        got = _tree(reader, commit, files, repo_path, recursive=recursive)
        if got is None:
            where = f"{manifest_path}:{loaded.line_of(('clusters', ci, key, index, 'path'))}"
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
