"""The house has floors and no arrow points up (docs/architecture.md).

Read from each module's imports (every import, also those inside functions): a module may import only modules on
its own floor or below; the pure core (manifest, zato, state, desired, plan) imports no I/O library; paramiko
lives only in transport/ssh.py and git only in source.py and audit.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "reconciler"

FLOORS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("__init__", "__version__", "errors", "settings", "zato", "manifest", "transport", "source", "state", "locks",
         "scheduler", "logs")),
    (1, ("observe", "desired")),
    (2, ("plan",)),
    (3, ("apply", "audit", "store", "report", "render")),
    (4, ("engine",)),
    (5, ("daemon", "http", "status", "metrics", "notify")),
    (6, ("cli", "__main__")),
]
PURE = ("manifest", "zato", "state", "desired", "plan")
IO_LIBS = ("paramiko", "git", "apscheduler", "sqlalchemy", "socket", "subprocess")


def floor(module: str) -> int:
    top = module.split(".")[0]
    for n, names in FLOORS:
        if top in names:
            return n
    raise AssertionError(f"reconciler.{module} is on no floor: add it to FLOORS (and docs/architecture.md)")


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
            assert name in ("source", "audit"), f"reconciler.{name} imports git"
