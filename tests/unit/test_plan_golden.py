"""Golden planner cases: {clusters (desired + observed), expected} in tests/unit/golden/*.json.

`expected` is compared as a subset of `Plan.to_dict()`: every key it names must match exactly (lists
element by element), keys it leaves out are free. Always keep a no-change case expecting an empty plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.plan import plan
from tests.unit.golden_support import build

CASES = sorted((Path(__file__).parent / "golden").glob("*.json"))


def assert_subset(expected: Any, actual: Any, where: str = "plan") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{where}: missing key {k!r}"
            assert_subset(v, actual[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path) -> None:
    case = json.loads(path.read_text())
    desired, observed = build(case)
    assert_subset(case["expected"], plan(desired, observed).to_dict())


def test_there_is_a_no_change_case() -> None:
    assert any(p.stem == "no-change" for p in CASES)


def test_plan_is_pure_and_repeatable() -> None:
    case = json.loads((Path(__file__).parent / "golden" / "first-deploy-fan-out.json").read_text())
    desired, observed = build(case)
    assert plan(desired, observed) == plan(desired, observed)
