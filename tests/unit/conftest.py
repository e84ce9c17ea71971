"""Fixtures shared by the unit tests that use real git (source, audit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.gitbed import HERMETIC_ENV, GitBed


@pytest.fixture
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.gitconfig or /etc/gitconfig and a fixed identity for the git this test runs."""
    for key, value in HERMETIC_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def bed(tmp_path: Path, hermetic_git: None) -> GitBed:
    """A bare origin (branch main) and a working clone that pushes to it."""
    return GitBed(tmp_path)
