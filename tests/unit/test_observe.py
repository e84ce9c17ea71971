"""The observe script run by the real sh on a real server directory layout, and its parser."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.core.state import ObservedServer
from reconciler.errors import Stalled
from reconciler.manifest.model import Cluster, Server
from reconciler.observe import HASH_CACHE, OBSERVE_SCRIPT, listing_digest, parse_observation
from reconciler.transport import script_argv

#: the awks a Zato host may have: Debian and Ubuntu ship mawk, RHEL and its kin gawk (busybox's cannot split on NUL
#: and is not supported: docs/hosts.md)
AWKS = ("mawk", "gawk")


@pytest.fixture(autouse=True, params=AWKS)
def awk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test of the script runs once under each awk, put first on PATH as `awk`."""
    import shutil

    found = shutil.which(request.param)
    if found is None:
        pytest.fail(f"{request.param} is not installed (tests/run.sh installs it)")
    shim = tmp_path_factory.mktemp(f"awk-{request.param}")
    (shim / "awk").symlink_to(found)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    return str(request.param)

CONF = """[main]
gunicorn_bind=0.0.0.0:17011
work_dir = {work}
service_sources=./service-sources.txt

[hot_deploy]
pickup_dir={pickup}
backup_history=100
delete_after_pick_up=False
current_work_dir=./hot-deploy/current
"""


def make_server(root: Path, work: str = "../../work", pickup: str = "../../pickup/incoming/services") -> Path:
    (root / "config" / "repo").mkdir(parents=True)
    (root / ".zato-info").write_text(json.dumps({"version": "3.2", "component": "SERVER"}))
    (root / "config" / "repo" / "server.conf").write_text(CONF.format(work=work, pickup=pickup))
    (root / "logs").mkdir()
    (root / "logs" / "server.log").write_text("x" * 1234)
    (root / "pidfile").write_text(str(os.getpid()))
    return root


def observe(root: Path, version: str = "3.2") -> ObservedServer:
    cluster = Cluster.model_validate(
        {"name": "prod", "zato_version": version, "servers": [{"name": "s1", "path": str(root)}]}
    )
    lists = "both" if version != "4.1" else "pickup"
    argv = script_argv(OBSERVE_SCRIPT, str(root), "ro", lists, "-")
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    return parse_observation(cluster, cluster.servers[0], out.decode())


def test_default_layout_resolves_relative_to_config_repo(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "server1")
    current = srv / "work" / "hot-deploy" / "current"
    current.mkdir(parents=True)
    (current / "a.py").write_bytes(b"a = 1\n")
    (current / "notes.txt").write_text("ignored")
    pickup = srv / "pickup" / "incoming" / "services"
    pickup.mkdir(parents=True)
    (pickup / "demo.py").write_bytes(b"d\n")
    obs = observe(srv)
    assert obs.paths.pickup_dir == str(pickup)
    assert obs.paths.work_dir == str(srv / "work")
    assert obs.deployed == {"a.py": hashlib.sha256(b"a = 1\n").hexdigest()}
    assert obs.pickup == {"demo.py": hashlib.sha256(b"d\n").hexdigest()}
    assert obs.log.size == 1234
    assert obs.running is True
    assert obs.paths.bind == "0.0.0.0:17011"
    assert obs.zato_version == "3.2"


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    srv = make_server(tmp_path / "s", work=str(tmp_path / "elsewhere" / "work"), pickup="~/pickup")
    obs = observe(srv)
    assert obs.paths.work_dir == str(tmp_path / "elsewhere" / "work")
    assert obs.paths.pickup_dir == str(tmp_path / "home" / "pickup")
    assert obs.deployed == {}


def test_41_runs_what_is_in_the_pickup_dir(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "s")
    pickup = srv / "pickup" / "incoming" / "services"
    pickup.mkdir(parents=True)
    (pickup / "m.py").write_bytes(b"m\n")
    obs = observe(srv, "4.1")
    assert obs.deployed == {"m.py": hashlib.sha256(b"m\n").hexdigest()}


def test_not_a_zato_dir_and_missing_dir_are_stalled_with_server_name(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(Stalled, match=r"prod/s1: .* doesn't seem to belong to a Zato component"):
        observe(tmp_path / "plain")
    with pytest.raises(Stalled, match=r"prod/s1: the server directory .* does not exist"):
        observe(tmp_path / "nope")


def test_dead_pid_is_not_running(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "s")
    (srv / "pidfile").write_text("999999999")
    assert observe(srv).running is False


QUICKSTART_SOURCES = "# List your service sources below, each on a separate line.\n\n./work/hot-deploy/current"


@pytest.mark.parametrize(
    "text",
    [
        QUICKSTART_SOURCES,  # a fresh quickstart: no newline after the last line
        QUICKSTART_SOURCES.replace("\n", "\r\n") + "\r\n",  # CRLF
        QUICKSTART_SOURCES + "  \t\n   \n\n",  # trailing blanks and blank lines
        QUICKSTART_SOURCES + "\n",
    ],
    ids=["no-final-newline", "crlf", "trailing-blanks", "tidy"],
)
def test_service_sources_is_read_byte_for_byte_however_it_ends(tmp_path: Path, text: str) -> None:
    """The marker after the file is never glued to its last entry, and the text comes back exactly as it is."""
    srv = make_server(tmp_path / "server1")
    (srv / "config" / "repo" / "service-sources.txt").write_bytes(text.encode())
    obs = observe(srv)
    assert obs.sources_text == text
    assert obs.log.size == 1234  # the sections after it were read


def test_the_running_servers_environment_and_pickup_conf_name_the_folders_it_really_watches(tmp_path: Path) -> None:
    """Zato_Config_Server_... overrides server.conf's pickup dir; Zato_Hot_Deploy_Dir (several, `:`-joined) and
    pickup.conf's user sections are extra folders. Other variables of the process are never read out."""
    srv = make_server(tmp_path / "server1")
    (srv / "config" / "repo" / "pickup.conf").write_text(
        "[json]\npickup_from=./ignored\n\n[hot-deploy.user.mine]\npickup_from = ./mine\r\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "Zato_Config_Server_server__conf_hot_deploy_pickup_dir": "/srv/real-pickup",
        "Zato_Hot_Deploy_Dir": "/srv/a:relative/b",
        "Zato_Secret_Password": "hunter2",
    }
    proc = subprocess.Popen(["sleep", "30"], env=env)
    try:
        (srv / "pidfile").write_text(str(proc.pid))
        cluster = Cluster.model_validate({"name": "prod", "servers": [{"name": "s1", "path": str(srv)}]})
        argv = script_argv(OBSERVE_SCRIPT, str(srv), "ro", "both", "-")
        out = subprocess.run(argv, capture_output=True, check=True).stdout.decode()
        obs = parse_observation(cluster, cluster.servers[0], out)
    finally:
        proc.kill()
        proc.wait()
    assert "hunter2" not in out
    assert obs.environ == "read" and obs.running
    assert obs.paths.pickup_dir == "/srv/real-pickup"
    assert obs.overrides == ("hot_deploy.pickup_dir",)
    assert obs.extra_pickup == ("/srv/a", f"{srv}/relative/b", f"{srv}/config/repo/mine")


def test_a_stopped_server_has_no_environment_to_read(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "server1")
    (srv / "pidfile").unlink()
    obs = observe(srv)
    assert (obs.environ, obs.overrides, obs.extra_pickup, obs.ipc_port_start) == ("none", (), (), "")


def test_ipc_port_start_is_read_from_whichever_section_holds_it(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "server1")
    conf = srv / "config" / "repo" / "server.conf"
    conf.write_text(conf.read_text() + "\n[misc]\nipc_port_start = 17050\r\n")
    assert observe(srv).ipc_port_start == "17050"


# --- the server's hash cache ---------------------------------------------------------------------------------------


def run_script(
    srv: Path, cache: str, now: float | None = None, *specs: str, want: str = "-", lists: str = "both"
) -> str:
    env = dict(os.environ)
    if now is not None:
        env["ZG_NOW"] = str(now)
    return subprocess.run(script_argv(OBSERVE_SCRIPT, str(srv), cache, lists, want, *specs), capture_output=True,
                          check=True, env=env).stdout.decode()


def observed(text: str, srv: Path) -> ObservedServer:
    servers = [{"name": "s1", "path": str(srv)}]
    cluster = Cluster.model_validate({"name": "prod", "zato_version": "3.2", "servers": servers})
    return parse_observation(cluster, cluster.servers[0], text)


def deployed_server(tmp_path: Path) -> tuple[Path, Path]:
    srv = make_server(tmp_path / "s1")
    current = srv / "work" / "hot-deploy" / "current"
    current.mkdir(parents=True)
    for i in range(3):
        (current / f"m{i}.py").write_text(f"x = {i}\n")
    return srv, current


def later() -> float:
    """The server's clock a minute on: every file written by the test is old enough to be cached."""
    import time

    return time.time() + 60


def test_apply_caches_hashes_and_a_file_whose_stat_is_unchanged_is_not_read_again(tmp_path: Path) -> None:
    srv, current = deployed_server(tmp_path)
    run_script(srv, "rw", later())
    cache = srv / HASH_CACHE
    assert cache.read_text().endswith("@@end\n")
    real = hashlib.sha256(b"x = 1\n").hexdigest()
    assert real in cache.read_text()
    # a different digest for m1.py in the cache, its stat unchanged: the cache is believed, so no file was read
    cache.write_text(cache.read_text().replace(real, "f" * 64))
    assert observed(run_script(srv, "ro"), srv).deployed["m1.py"] == "f" * 64
    # rewritten with the same bytes and size: its ctime moved, so it is hashed again
    (current / "m1.py").write_text("x = 1\n")
    assert observed(run_script(srv, "ro"), srv).deployed["m1.py"] == real
    # `off` never looks at the cache
    (current / "m1.py").touch()
    cache.write_text(cache.read_text())
    assert observed(run_script(srv, "off"), srv).deployed["m1.py"] == real


def test_a_file_changed_in_the_last_two_seconds_is_hashed_but_not_cached(tmp_path: Path) -> None:
    srv, _ = deployed_server(tmp_path)
    obs = observed(run_script(srv, "rw"), srv)  # the server's own clock: the files are brand new
    assert obs.deployed["m0.py"] == hashlib.sha256(b"x = 0\n").hexdigest()
    cached = (srv / HASH_CACHE).read_text().splitlines()
    assert cached[-1] == "@@end"
    assert [line for line in cached if not line.startswith("@@")] == []


def test_plan_reads_the_cache_but_never_writes_it(tmp_path: Path) -> None:
    srv, _ = deployed_server(tmp_path)
    before = sorted(str(p.relative_to(srv)) for p in srv.rglob("*"))
    run_script(srv, "ro", later())
    assert sorted(str(p.relative_to(srv)) for p in srv.rglob("*")) == before


def test_a_cut_off_cache_is_ignored_whole(tmp_path: Path) -> None:
    srv, _ = deployed_server(tmp_path)
    run_script(srv, "rw", later())
    cache = srv / HASH_CACHE
    text = cache.read_text().replace(hashlib.sha256(b"x = 2\n").hexdigest(), "e" * 64)
    cache.write_text(text.removesuffix("@@end\n"))  # e.g. a full disk stopped the write
    assert observed(run_script(srv, "ro"), srv).deployed["m2.py"] == hashlib.sha256(b"x = 2\n").hexdigest()


def test_a_server_dir_we_cannot_write_is_observed_without_writing_a_cache() -> None:
    """As root (CI) every directory is writable, so the script runs as nobody (setpriv) on a world-readable copy."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        top.chmod(0o755)
        srv, _ = deployed_server(top)
        srv.chmod(0o555)
        argv = script_argv(OBSERVE_SCRIPT, str(srv), "rw", "both", "-")
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        text = subprocess.run(argv, capture_output=True, check=True, env=dict(os.environ, ZG_NOW=str(later())),
                              cwd="/").stdout.decode()
        obs = observed(text, srv)
        assert obs.deployed["m0.py"] == hashlib.sha256(b"x = 0\n").hexdigest()
        assert not (srv / HASH_CACHE).exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_static_trees_files_and_flat_dirs_are_hashed_through_the_cache_too(tmp_path: Path) -> None:
    srv, _ = deployed_server(tmp_path)
    tree = tmp_path / "tree"
    (tree / "pkg" / "__pycache__").mkdir(parents=True)
    (tree / "pkg" / "a.py").write_text("a\n")
    (tree / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tree / "pkg" / "b.pyc").write_bytes(b"\0")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "f.py").write_text("f\n")
    (flat / ".hidden.py").write_text("h\n")
    one = tmp_path / "one.py"
    one.write_text("o\n")
    specs = (f"tree:{tree}", f"flat:{flat}", f"file:{one}")
    for mode in ("rw", "ro", "off"):  # a cold cache, then a warm one, then none: the same answer
        obs = observed(run_script(srv, mode, later(), *specs), srv)
        assert obs.static == {
            str(tree): {"pkg/a.py": hashlib.sha256(b"a\n").hexdigest()},
            str(flat): {"f.py": hashlib.sha256(b"f\n").hexdigest()},
            str(one): {"": hashlib.sha256(b"o\n").hexdigest()},
        }, mode


def test_a_listing_that_is_what_we_expect_comes_back_as_same_and_any_other_in_full(tmp_path: Path) -> None:
    srv, current = deployed_server(tmp_path)
    right = {f"m{i}.py": hashlib.sha256(f"x = {i}\n".encode()).hexdigest() for i in range(3)}
    pickup: dict[str, str] = {}
    text = run_script(srv, "ro", want=listing_digest({"current": right, "pickup": pickup}))
    assert "@@same" in text and "m1.py" not in text
    obs = parse_observation(*cluster_and_server(srv), text, {"current": right, "pickup": pickup})
    assert obs.deployed == right and obs.pickup == {}
    # one module differs from what we expect: the whole listing comes back, and it is what is on the server
    wrong = dict(right, **{"m1.py": "0" * 64})
    text = run_script(srv, "ro", want=listing_digest({"current": wrong, "pickup": pickup}))
    assert "@@same" not in text
    assert parse_observation(*cluster_and_server(srv), text, {"current": wrong, "pickup": pickup}).deployed == right
    # the same files expected in the other dir is not the same listing
    text = run_script(srv, "ro", want=listing_digest({"current": pickup, "pickup": right}))
    assert "@@same" not in text
    # a file we do not expect at all (demo.py) also makes it differ
    (current / "demo.py").write_text("d\n")
    text = run_script(srv, "ro", want=listing_digest({"current": right, "pickup": pickup}))
    assert parse_observation(*cluster_and_server(srv), text, {"current": right, "pickup": pickup}).deployed["demo.py"]


def test_a_cache_left_by_a_killed_writer_is_removed_by_the_next_one(tmp_path: Path) -> None:
    srv, _ = deployed_server(tmp_path)
    stale = srv / f"{HASH_CACHE}.999999"
    stale.write_text("@@dir /x/\n")  # a write cut off by SIGKILL: no @@end, never renamed
    run_script(srv, "ro", later())
    assert stale.exists()  # plan writes nothing, and removes nothing either
    run_script(srv, "rw", later())
    assert not stale.exists() and (srv / HASH_CACHE).read_text().endswith("@@end\n")


def test_an_empty_server_is_the_empty_listing_we_expect(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "s1")
    text = run_script(srv, "ro", want=listing_digest({"current": {}, "pickup": {}}))
    assert "@@same" in text


def test_on_4_1_only_the_pickup_dir_is_listed(tmp_path: Path) -> None:
    srv, _ = deployed_server(tmp_path)
    (srv / "pickup" / "incoming" / "services").mkdir(parents=True, exist_ok=True)
    (srv / "pickup" / "incoming" / "services" / "p.py").write_text("p\n")
    text = run_script(srv, "ro", lists="pickup")
    assert "pickup " in text and "current " not in text and "m1.py" not in text
    want = listing_digest({"pickup": {"p.py": hashlib.sha256(b"p\n").hexdigest()}})
    assert "@@same" in run_script(srv, "ro", want=want, lists="pickup")


def cluster_and_server(srv: Path) -> tuple[Cluster, Server]:
    servers = [{"name": "s1", "path": str(srv)}]
    cluster = Cluster.model_validate({"name": "prod", "zato_version": "3.2", "servers": servers})
    return cluster, cluster.servers[0]


def test_listings_remember_a_server_as_a_difference_from_the_desired_modules(tmp_path: Path) -> None:
    """What is kept per server is a few names whatever the number of modules, and gives back the listing seen."""
    from reconciler.core.state import DesiredCluster, Module
    from reconciler.engine.listings import Listings

    cluster, _ = cluster_and_server(tmp_path)
    modules = {f"m{i}.py": Module(f"m{i}.py", f"services/m{i}.py", f"{i:064x}", f"b{i}", b"") for i in range(100)}
    dc = DesiredCluster(cluster, modules)
    seen = {n: m.sha256 for n, m in modules.items() if n != "m7.py"} | {"m3.py": "f" * 64, "demo.py": "d" * 64}
    srv, _ = deployed_server(tmp_path)
    observed = observed_with(srv, deployed=seen, pickup={"demo.py": "d" * 64})
    memo = Listings(tmp_path / "state" / "listings.json")
    memo.remember(dc, observed)
    memo.save()
    again = Listings(tmp_path / "state" / "listings.json")  # read back from the file
    assert again.expected(dc, "s1") == {"current": seen, "pickup": {"demo.py": "d" * 64}}
    kept = (tmp_path / "state" / "listings.json").read_text()
    assert len(kept) < 500  # absent: m3.py, m7.py; extra: m3.py, demo.py -- not the 100 names
    # a module changed in git: what we expect follows the desired state (the server then answers in full)
    changed = DesiredCluster(cluster, dict(modules, **{"m1.py": Module("m1.py", "services/m1.py", "e" * 64, "x", b"")}))
    assert again.expected(changed, "s1")["current"]["m1.py"] == "e" * 64  # type: ignore[index]
    assert again.expected(dc, "unknown") is None


def observed_with(srv: Path, deployed: dict[str, str], pickup: dict[str, str]) -> ObservedServer:
    import dataclasses

    return dataclasses.replace(observed(run_script(srv, "ro"), srv), deployed=deployed, pickup=pickup)
