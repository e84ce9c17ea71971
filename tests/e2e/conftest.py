"""Fixtures for the end-to-end tests: the real-sshd bed and a hermetic git environment.

The tests import `reconciler` from this checkout (the repository root is put on sys.path) and `sshbed` from
this folder (pytest's default "prepend" import mode puts it there; there is no __init__.py on purpose).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pgbed import PGBed, PGBedError  # noqa: E402
from sshbed import Host, SSHBed, SSHBedError  # noqa: E402
from world import World, make_world  # noqa: E402

_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "zato-gitops tests",
    "GIT_AUTHOR_EMAIL": "tests@zato-gitops.invalid",
    "GIT_COMMITTER_NAME": "zato-gitops tests",
    "GIT_COMMITTER_EMAIL": "tests@zato-gitops.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}


@pytest.fixture(scope="session", autouse=True)
def hermetic_git() -> Iterator[None]:
    """No ~/.gitconfig or /etc/gitconfig, and a fixed identity, for every git run by the e2e session."""
    saved = {k: os.environ.get(k) for k in _GIT_ENV}
    os.environ.update(_GIT_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Bed(Protocol):
    def close(self) -> None: ...


B = TypeVar("B", bound=_Bed)


@contextmanager
def _session_bed(make: Callable[[], B], errors: type[Exception], what: str) -> Iterator[B]:
    """A test bed for the session: made once (a clear failure when it cannot be), always closed."""
    try:
        bed = make()
    except errors as e:
        pytest.fail(f"cannot {what}: {e}", pytrace=False)
    try:
        yield bed
    finally:
        bed.close()


@pytest.fixture(scope="session")
def sshbed() -> Iterator[SSHBed]:
    """Real sshd hosts on 127.0.0.1 (`sshbed.add_host(name)`), a test user, a client key and a known_hosts."""
    with _session_bed(SSHBed, SSHBedError, "set up the SSH test bed") as bed:
        yield bed


@pytest.fixture(scope="session")
def postgres() -> Iterator[PGBed]:
    """A private PostgreSQL server for the session (`postgres.create_db()` gives each test its own database)."""
    with _session_bed(PGBed, PGBedError, "start the test PostgreSQL") as bed:
        yield bed


@pytest.fixture(scope="session")
def hosts(sshbed: SSHBed) -> list[Host]:
    """Three simulated hosts (one sshd each) shared by the session; each test puts its own servers behind them."""
    return [sshbed.add_host(f"host{i}") for i in (1, 2, 3)]


@pytest.fixture
def world_factory(sshbed: SSHBed, hosts: list[Host]) -> Iterator[Callable[..., World]]:
    """`world_factory(version="3.2", n=3)`: a fresh services repository and a running stand-in cluster."""
    made: list[World] = []

    def make(version: str = "3.2", n: int = 3, **kw: Any) -> World:
        w = make_world(sshbed, hosts, version, n, **kw)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.stop_daemons()  # before the servers: a daemon is never left running, nor mid-deploy on a dead server
            w.cluster.cleanup()


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    """A 3-server Zato 3.2 cluster and its repository."""
    return world_factory()
