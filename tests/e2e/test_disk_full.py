"""Issue 8, item 5 end to end: nothing partial in a pickup dir, ever, on a server whose disk is nearly full.

A 1 MB tmpfs holds server1's pickup dir and its deployed copies (`work/hot-deploy/current`), bind-mounted from
one filesystem as on a real server where both live on one disk. Real sshd, real git, the stand-in running as the
SSH user. Needs root (mount); skipped where mounting is not permitted.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import string
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from world import World, service_module

pytestmark = pytest.mark.e2e


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


def big_module(kb: int) -> str:
    """A valid module of about `kb` KB that does not compress into nothing (tmpfs stores it as is anyway)."""
    rng = random.Random(kb)
    rows = "".join(f"    {''.join(rng.choices(string.ascii_letters, k=60))!r},\n" for _ in range(kb * 1024 // 68))
    return service_module("Big", name="big.get") + f"\nTABLE = (\n{rows})\n"


@pytest.fixture
def small_disk(world_factory: Callable[..., World], tmp_path: Path) -> Iterator[World]:
    """A one-server 3.2 cluster whose pickup and deployed dirs share a 1 MB tmpfs (mounted before the server
    starts, so its pickup watcher watches the tmpfs)."""
    world = world_factory(n=1)
    server = world.servers[0]
    assert world.zato(server, "stop").returncode == 0
    server.wait_stopped()
    disk = tmp_path / "disk"
    disk.mkdir()
    if mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)).returncode != 0:
        assert world.zato(server, "start").returncode == 0
        pytest.skip("mounting a tmpfs is not permitted here")
    mounted = [disk]
    try:
        for name, target in (("pickup", server.pickup_dir), ("current", server.current_dir)):
            (disk / name).mkdir()
            for f in target.iterdir():
                shutil.copy2(f, disk / name / f.name)
            assert mount("--bind", str(disk / name), str(target)).returncode == 0
            mounted.insert(0, target)
        world.bed.chown_to_user(disk)
        world.bed.chown_to_user(server.pickup_dir)
        world.bed.chown_to_user(server.current_dir)
        world.start_all()
        yield world
    finally:
        world.zato(server, "stop")
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], check=False)


def leftovers(world: World, name: str) -> dict[str, list[str]]:
    """What of `name` sits in the pickup and deployed dirs, and anything at all in staging."""
    s = world.servers[0]
    staging = s.path / "work" / "zato-gitops" / "staging"
    return {
        "pickup": [p.name for p in s.pickup_dir.glob(name)],
        "current": [p.name for p in s.current_dir.glob(name)],
        "staging": [p.name for p in staging.iterdir()] if staging.exists() else [],
    }


def test_a_deploy_the_disk_cannot_hold_is_refused_and_leaves_nothing_partial(small_disk: World) -> None:
    world = small_disk
    base = {"zato-gitops.yaml": world.manifest()}

    # 3 MB into 1 MB: refused before anything is copied, with the free space and the need in MB
    world.commit({**base, "services/big.py": big_module(3 * 1024)}, "a 3 MB module")
    code, report = world.cli_json("apply")
    assert code == 1, report
    [server] = report["servers"]
    assert server["server"] == "server1" and server["dropped"] == []
    error = server["error"]
    assert error.startswith("server1 (") and " MB free on " in error, error
    assert "this deploy needs 6.3 MB" in error  # the pickup and the deployed copy, on one filesystem
    assert "hint: free space on" in error
    assert leftovers(world, "big.py") == {"pickup": [], "current": [], "staging": []}

    # fits once (600 KB in 1 MB) but not twice (Zato copies it into current/ on the same disk): refused too
    world.commit({"services/big.py": big_module(600)}, "a 600 KB module")
    code, report = world.cli_json("apply")
    assert code == 1, report
    assert "this deploy needs 1.2 MB" in report["servers"][0]["error"]
    assert leftovers(world, "big.py") == {"pickup": [], "current": [], "staging": []}

    # one that fits twice is deployed and confirmed, its bytes intact in both places
    small = big_module(200)
    world.commit({"services/big.py": small}, "a 200 KB module")
    r = world.cli("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    s = world.servers[0]
    digest = hashlib.sha256(small.encode()).hexdigest()
    assert s.services()["big.get"] == digest
    for d in (s.pickup_dir, s.current_dir):
        assert hashlib.sha256((d / "big.py").read_bytes()).hexdigest() == digest
    assert leftovers(world, "big.py")["staging"] == []
    assert world.cli("plan").returncode == 0
