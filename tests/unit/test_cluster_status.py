"""The one-line commit status of each cluster after an apply (what GitHub, GitLab or Gitea show on the commit)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from reconciler.engine.chain import cluster_status
from reconciler.engine.results import ApplyReport

SHA = "c0ffee" + "0" * 34


def report(**kw: Any) -> ApplyReport:
    plan_report = SimpleNamespace(commit=SHA, unreachable=kw.pop("unreachable", []))
    return ApplyReport(plan_report, **kw)  # type: ignore[arg-type]


def ok(*modules: str) -> Any:
    return SimpleNamespace(ok=True, modules=dict.fromkeys(modules, "confirmed"))


def test_success_and_each_kind_of_failure_in_one_line() -> None:
    assert cluster_status(report(results={"prod": {"s1": ok("a.py"), "s2": ok("a.py")}}), "prod") == (
        True, "every server runs c0ffee000000 (2 confirmed)")
    assert cluster_status(report(), "prod") == (True, "every server runs c0ffee000000")
    assert cluster_status(report(refused={"prod": ["s2 is not running", "other"]}), "prod") == (
        False, "s2 is not running")
    assert cluster_status(report(unreachable=[("prod", "s3", None), ("test", "t1", None)]), "prod") == (
        False, "cannot reach s3")
    bad = SimpleNamespace(ok=False, modules={"a.py": "failed"})
    assert cluster_status(report(results={"prod": {"s1": ok("a.py"), "s2": bad}}), "prod") == (
        False, "not confirmed on s2")
    halted = SimpleNamespace(id="r1", status="halted", message="server2 did not get ready")
    assert cluster_status(report(rollouts={"prod": (halted, [])}), "prod") == (
        False, "rolling restart r1 halted: server2 did not get ready")
    assert cluster_status(report(scheduled={"prod": ("r2", "2026-12-01T02:00:00+00:00")}), "prod") == (
        None, "hot-deploys done; rolling restart r2 waits for its window (2026-12-01T02:00:00+00:00)")
