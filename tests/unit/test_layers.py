"""The house has floors and no arrow points up (docs/architecture.md).

Read from each module's imports (every import, also those inside functions): a module may import only modules on
its own floor or below; the pure core (manifest, zato, core) imports no I/O library; paramiko
lives only in transport/ssh.py and git only in gitrepo/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "reconciler"

FLOORS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("__init__", "__version__", "errors", "defaults", "settings", "zato", "manifest", "transport", "locks", "core",
         "core.state", "gitrepo", "gitrepo.source", "gitrepo.records", "gitrepo.trust", "gitrepo.blobs", "githost",
         "engine.scheduler", "daemon.logsetup", "db")),
    (1, ("observe", "core.desired", "engine.facts")),
    (2, ("core.plan", "core.release")),
    (3, ("apply", "gitrepo.notes", "engine.results", "engine.journal", "cli.render", "cli.markdown",
         "db.migrations")),
    (4, ("engine", "engine.chain")),
    (5, ("daemon",)),
    (6, ("cli", "__main__")),
]
PURE = ("manifest", "zato", "core")
IO_LIBS = ("paramiko", "git", "apscheduler", "sqlalchemy", "socket", "subprocess")


def floor(module: str) -> int:
    """The floor of the longest listed prefix of `module` (`core.plan` before `core`, `cli.render` before `cli`)."""
    best: tuple[int, int] | None = None
    for n, names in FLOORS:
        for name in names:
            if module == name or module.startswith(name + "."):
                depth = name.count(".") + 1
                if best is None or depth > best[0]:
                    best = (depth, n)
    if best is None:
        raise AssertionError(f"reconciler.{module} is on no floor: add it to FLOORS (and docs/architecture.md)")
    return best[1]


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
        out.append((".".join(parts), path))
    return out


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if node.module == "reconciler")
    return found


@pytest.mark.parametrize(("name", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_import_points_up(name: str, path: Path) -> None:
    mine = floor(name)
    for imp in imports(path):
        if not imp.startswith("reconciler."):
            continue
        target = imp[len("reconciler.") :]
        assert floor(target) <= mine, f"reconciler.{name} (floor {mine}) imports {imp} (floor {floor(target)})"


@pytest.mark.parametrize(("name", "path"), [m for m in modules() if m[0].split(".")[0] in PURE])
def test_the_pure_core_imports_no_io_library(name: str, path: Path) -> None:
    bad = {i for i in imports(path) if i.split(".")[0] in IO_LIBS}
    assert not bad, f"reconciler.{name} is pure but imports {sorted(bad)}"


def test_paramiko_and_git_stay_behind_their_seams() -> None:
    for name, path in modules():
        tops = {i.split(".")[0] for i in imports(path)}
        if "paramiko" in tops:
            assert name == "transport.ssh", f"reconciler.{name} imports paramiko"
        if "git" in tops:
            assert name.startswith("gitrepo."), f"reconciler.{name} imports git"
