"""The PR comment's Markdown against golden files (tests/unit/golden/markdown/); regenerate with
ZG_UPDATE_GOLDEN=1 after a deliberate change, and read the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.cli.markdown import render
from reconciler.core.release import ClusterRelease, LeftGit, ModuleRelease, Release, RestartRelease, module_release

GOLDEN = Path(__file__).parent / "golden" / "markdown"
SHA = "0123456789abcdef0123456789abcdef01234567"


def check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.md"
    if os.environ.get("ZG_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


RELEASE = Release(SHA, (
    ClusterRelease(
        "prod",
        modules=(
            ModuleRelease("crm.py", "services/crm.py", "changed", ("server1", "server2"),
                          added=("crm.get-customer",), changed=("crm.update-customer",), removed=("crm.delete",),
                          unchanged=("crm.list",)),
            ModuleRelease("billing.py", "services/billing.py", "added", ("server1", "server2"),
                          added=("billing.invoice|pdf",)),
            ModuleRelease("hand.py", "services/hand.py", "changed", ("server2",), changed=("hand.x",),
                          unknown_before=("server2",)),
        ),
        restarts=(RestartRelease("server1", 2, added=("static-billing.run",)), RestartRelease("server2", 1)),
        left_git=(LeftGit("billing_old.py", ("server1", "server2"), ("billing-old.pay",)),),
    ),
    ClusterRelease("staging", (), (), (), ("server9 is not running, so it cannot confirm a hot-deploy",)),
))


def test_markdown_of_a_plan_with_every_kind_of_change() -> None:
    check("full", render(RELEASE, ref="refs/pull/7/head", commit=SHA, zato_versions={"prod": "3.2"},
                         unreachable=[("staging", "server9", "connection refused")],
                         warnings=["`module:` entries are not loaded by Zato 3.2"]))


def test_markdown_of_an_empty_plan() -> None:
    check("empty", render(Release(SHA, (ClusterRelease("prod", (), (), ()),)), ref="main", commit=SHA))


def test_markdown_of_a_refused_commit_names_file_and_line() -> None:
    check("refused", render(None, ref="refs/pull/8/head", commit=SHA,
                            problems=["services/crm.py:3: SyntaxError: invalid syntax"]))


@pytest.mark.parametrize(("old", "new", "expect"), [
    ("class A(Service):\n    pass\n", "class A(Service):\n    x = 1\n", ((), ("m.a",), (), ())),
    ("class A(Service):\n    pass\n", "class A(Service):\n    pass\nclass B(Service):\n    pass\n",
     (("m.b",), (), (), ("m.a",))),
    ("class A(Service):\n    pass\n", "class B(Service):\n    pass\n", (("m.b",), (), ("m.a",), ())),
])
def test_services_added_changed_removed_from_the_servers_copy(
        old: str, new: str, expect: tuple[tuple[str, ...], ...]) -> None:
    head = "from zato.server.service import Service\n"
    m = module_release("m.py", "s/m.py", (head + new).encode(), [("s1", "old")], {"old": (head + old).encode()})
    assert (m.added, m.changed, m.removed, m.unchanged) == expect
    assert m.change == "changed" and m.servers == ("s1",)


def test_a_copy_not_in_git_makes_every_service_count_as_changed() -> None:
    m = module_release("m.py", "s/m.py", b"from zato.server.service import Service\nclass A(Service): pass\n",
                       [("s1", "unknown"), ("s2", None)], {})
    assert m.unknown_before == ("s1",) and m.changed == ("m.a",) and m.added == ()


def test_a_restart_names_the_services_of_the_static_modules_it_installs() -> None:
    from types import SimpleNamespace

    from reconciler.core.plan import FileChange, Restart
    from reconciler.core.release import restart_release
    from reconciler.core.state import StaticFile, StaticTree

    head = "from zato.server.service import Service\n"
    new, old = head + "class Run(Service): pass\nclass Stop(Service): pass\n", head + "class Run(Service): x = 1\n"
    gone = head + "class Old(Service): pass\n"
    tree = StaticTree("source", "static/billing", "./static/billing", "flat",
                      {"billing_jobs.py": StaticFile("billing_jobs.py", "static/billing/billing_jobs.py", "n",
                                                     new.encode())})
    restart = Restart("server1", "h:22", (
        FileChange("source", "/srv/s1/static/billing/billing_jobs.py", "changed", "o", "n",
                   "static/billing/billing_jobs.py"),
        FileChange("source", "/srv/s1/static/billing/legacy.py", "removed", "g", None),
        FileChange("service-sources", "/srv/s1/config/repo/service-sources.txt", "changed", "x", "y"),
    ), ())
    r = restart_release(SimpleNamespace(sources=(tree,)), restart,  # type: ignore[arg-type]
                        {"o": old.encode(), "g": gone.encode()})
    assert (r.added, r.changed, r.removed, r.files) == (("billing-jobs.stop",), ("billing-jobs.run",),
                                                        ("legacy.old",), 3)
