"""Install without argument limits: thousands of modules in one tar over stdin, through the real local transport
(real sh, tar, sha256sum, cp, df); verified as a whole, staging cleaned, nothing partial left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reconciler.apply.hotdeploy import STAGING, _install, install_tar
from reconciler.core.state import ServerPaths
from reconciler.errors import ReconcilerError, Stalled
from reconciler.transport import RunResult
from reconciler.transport.local import LocalTransport


def paths(tmp_path: Path) -> ServerPaths:
    pickup = tmp_path / "pickup"
    current = tmp_path / "work" / "hot-deploy" / "current"
    pickup.mkdir()
    current.mkdir(parents=True)
    return ServerPaths(server_dir=str(tmp_path), pickup_dir=str(pickup), work_dir=str(tmp_path / "work"),
                       deployed_dir=str(current), log=str(tmp_path / "server.log"),
                       service_sources=str(tmp_path / "ss.txt"), bind="127.0.0.1:1")


def items(n: int) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(n):
        data = f"def handle_{i}():\n    return {i}\n".encode()
        out.append((f"svc_{i:05d}_{'x' * 60}.py", hashlib.sha256(data).hexdigest(), data))
    return out


def staging_left(p: ServerPaths) -> list[Path]:
    return list((Path(p.work_dir) / STAGING).iterdir())


def test_five_thousand_modules_in_one_round_trip(tmp_path: Path) -> None:
    p = paths(tmp_path)
    many = items(5000)  # 5,000 names of 70+ characters: far beyond one argv as arguments
    calls: list[int] = []

    class Counting(LocalTransport):
        def run(self, argv, *, stdin=None, timeout=60.0):  # type: ignore[no-untyped-def]
            calls.append(len(stdin or b""))
            return super().run(argv, stdin=stdin, timeout=timeout)

    _install(Counting("server1 (local)"), p, many)
    assert len(calls) == 1
    pickup = Path(p.pickup_dir)
    assert len(list(pickup.iterdir())) == 5000
    for name, sha, _ in many[::499]:
        assert hashlib.sha256((pickup / name).read_bytes()).hexdigest() == sha
    assert staging_left(p) == []


class Corrupting(LocalTransport):
    """Flips one byte of the tar's payload on the way, as a broken link would."""

    def run(self, argv, *, stdin=None, timeout=60.0):  # type: ignore[no-untyped-def]
        if stdin:
            at = stdin.rindex(b"return 1")
            stdin = stdin[:at] + b"RETURN 1" + stdin[at + 8 :]
        return super().run(argv, stdin=stdin, timeout=timeout)


def test_a_corrupted_upload_installs_nothing_and_leaves_no_staging(tmp_path: Path) -> None:
    p = paths(tmp_path)
    with pytest.raises(ReconcilerError, match=r"did not match its sha256 \(@@bad svc_00001_"):
        _install(Corrupting("server1 (local)"), p, items(3))
    assert list(Path(p.pickup_dir).iterdir()) == []
    assert staging_left(p) == []


def test_no_room_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    p = paths(tmp_path)

    class Huge(LocalTransport):
        def run(self, argv, *, stdin=None, timeout=60.0):  # type: ignore[no-untyped-def]
            argv = [*argv[:-1], str(10**15)]  # the need argument: more than any disk has
            return super().run(argv, stdin=stdin, timeout=timeout)

    with pytest.raises(Stalled) as e:
        _install(Huge("server1 (local)"), p, items(2))
    assert e.value.message.startswith("server1 (local): ")
    assert " MB free on /" in e.value.message
    assert "this deploy needs 3000000000.0 MB" in e.value.message  # staging, pickup, current: one filesystem
    assert "nothing was copied" in e.value.hint
    assert list(Path(p.pickup_dir).iterdir()) == []
    assert staging_left(p) == []


def test_the_tar_holds_the_sums_and_every_file() -> None:
    import io
    import tarfile

    got = install_tar(items(2))
    with tarfile.open(fileobj=io.BytesIO(got)) as tar:
        names = tar.getnames()
        sums = tar.extractfile("sums").read().decode()  # type: ignore[union-attr]
    assert names[0] == "sums" and len(names) == 3
    assert sums.splitlines()[0].endswith("  svc_00000_" + "x" * 60 + ".py")


def test_the_failure_message_quotes_the_script(tmp_path: Path) -> None:
    class Missing(LocalTransport):
        def run(self, argv, *, stdin=None, timeout=60.0):  # type: ignore[no-untyped-def]
            return RunResult(5, b"@@nopickup\n", b"")

    with pytest.raises(ReconcilerError, match=r"pickup dir .* is missing"):
        _install(Missing("s"), paths(tmp_path), items(1))


def test_a_copy_that_still_fails_leaves_no_partial_file(tmp_path: Path) -> None:
    """The free-space check passed (here: told the deploy needs nothing) yet the disk fills during the copy:
    the truncated copy is removed at once and staging is cleaned. Needs a tmpfs (root)."""
    import subprocess

    p = paths(tmp_path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", p.pickup_dir],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        class Optimist(LocalTransport):
            def run(self, argv, *, stdin=None, timeout=60.0):  # type: ignore[no-untyped-def]
                return super().run([*argv[:-1], "0"], stdin=stdin, timeout=timeout)

        data = b"x = 1\n" + b"#" * 100_000
        with pytest.raises(ReconcilerError, match=r"copying into the pickup dir failed.*@@failed big\.py"):
            _install(Optimist("server1 (local)"), p, [("big.py", hashlib.sha256(data).hexdigest(), data)])
        assert list(Path(p.pickup_dir).iterdir()) == []
        assert staging_left(p) == []
    finally:
        subprocess.run(["umount", "-l", p.pickup_dir], check=False)


class Recording:
    """A fake server machine (our Transport seam): installs succeed, the log confirms every module dropped;
    it records how many commands run at once across all servers."""

    active = 0
    peak = 0
    lock = __import__("threading").Lock()

    def __init__(self, label: str) -> None:
        self.label = label
        self.dropped: list[str] = []
        self.installs = 0

    def run(self, argv, *, stdin=None, timeout=60.0):  # type: ignore[no-untyped-def]
        import io
        import tarfile
        import time

        with Recording.lock:
            Recording.active += 1
            Recording.peak = max(Recording.peak, Recording.active)
        try:
            time.sleep(0.002)  # long enough for the commands of other threads to overlap, if they may
            if stdin:  # the install: one tar with every module of this server
                self.installs += 1
                with tarfile.open(fileobj=io.BytesIO(stdin)) as tar:
                    self.dropped += [n[len("files/"):] for n in tar.getnames() if n.startswith("files/")]
                return RunResult(0, b"@@copied\n", b"")
            lines = "".join(f"Deployed 1 service from `/srv/{self.label}/pickup/{m}` -> ['x']\n" for m in self.dropped)
            return RunResult(0, f"@@stat 1 {len(lines)}\n@@new\n{lines}".encode(), b"")
        finally:
            with Recording.lock:
                Recording.active -= 1

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        raise AssertionError("hot-deploy sends no file by SFTP")

    def close(self) -> None:
        pass


def test_sixty_servers_two_hundred_modules_run_within_the_parallelism_cap() -> None:
    from reconciler.apply.hotdeploy import hot_deploy
    from reconciler.core.plan import plan
    from tests.unit.golden_support import build

    servers = [f"s{i}" for i in range(60)]
    modules = {f"m{i:03d}.py": f"{i:064x}" for i in range(200)}
    desired, observed = build({"clusters": [{"name": "prod", "zato_version": "4.1", "servers": servers,
                                             "modules": modules, "observed": {s: {} for s in servers}}]})
    [cluster_plan] = plan(desired, observed).clusters
    transports = {s: Recording(s) for s in servers}
    Recording.peak = 0
    results = hot_deploy(desired.clusters[0], observed["prod"], cluster_plan, transports,  # type: ignore[arg-type]
                         timeout=10, poll=0.01, parallelism=4)
    assert all(r.ok for r in results.values()), [r.error for r in results.values() if not r.ok][:3]
    assert all(t.installs == 1 and len(t.dropped) == 200 for t in transports.values())  # one stream per server
    assert 1 <= Recording.peak <= 4  # never more commands at once than the cap, never a thread per module


def test_progress_names_a_few_modules_and_counts_the_rest() -> None:
    from reconciler.apply.hotdeploy import some

    assert some(["a.py"]) == "a.py"
    assert some([f"m{i}.py" for i in range(5)]) == "m0.py, m1.py, m2.py, m3.py, m4.py"
    assert some([f"m{i}.py" for i in range(2000)]) == "m0.py, m1.py, m2.py, m3.py and 1996 more"
