"""The stand-in behaves like zato-facts.md says a Zato server does: these tests pin that down.

They start real stand-in processes (as the current user, with `python3` on PATH) on free ports, and kill every
one of them on the way out, whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    SOURCES_STYLES,
    Cluster,
    Server,
    create_cluster,
    create_install,
    create_server,
    free_port,
    free_ports,
    kill_all_installs,
    max_down_at_once,
)

MY_MOD = """\
from zato.server.service import Service


class GetCustomer(Service):
    def handle(self):
        self.response.payload = {"id": 1}
"""

MY_MOD_V2 = MY_MOD + "\n# version 2\n"

BROKEN = """\
from zato.server.service import Service


class GetCustomer(Service):
    def handle(self)
        pass
"""

TWO_SERVICES = """\
from zato.server.service import Service


class CreateOrder(Service):
    pass


class Ping(Service):
    name = "custom.ping"
"""

NO_SERVICE = "VALUE = 1\n"


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    kill_all_installs()


def _cp(source: str, target: Path, tmp: Path) -> None:
    """A real `cp`: open the final name, write, close (one CLOSE_WRITE)."""
    staged = tmp / f"staged-{time.monotonic_ns()}-{target.name}"
    staged.write_text(source)
    subprocess.run(["cp", str(staged), str(target)], check=True)


def _mv(source: str, target: Path, tmp: Path) -> None:
    """Write elsewhere, then rename into the pickup dir (what rsync without --inplace does)."""
    staged = target.parent.parent / f".staged-{target.name}"
    staged.write_text(source)
    os.rename(staged, target)


def _deployed_line(server: Server, name: str, services: str = "['my-mod.get-customer']", count: int = 1) -> str:
    noun = "service" if count == 1 else "services"
    return f"Deployed {count} {noun} from `{server.current_dir / name}` -> {services}"


# ####################################################################################################################


def test_32_cluster_fan_out_failures_and_service_sources(tmp_path: Path) -> None:
    """3 servers of 3.2: one `cp` deploys everywhere; renames are never seen; a broken module keeps the old one."""
    static = tmp_path / "static"  # service-sources.txt entries, relative to each server dir
    cluster = create_cluster(
        tmp_path,
        3,
        version="3.2",
        stop_delay=0.2,
        service_sources=["../../static/services", "../../static/single.py", "mypkg.services", "./nothing.py"],
    )
    (static / "services").mkdir(parents=True)
    (static / "services" / "b_orders.py").write_text(
        "from zato.server.service import Service\nfrom common_x import VALUE\n\nclass ListOrders(Service):\n    pass\n"
    )
    (static / "services" / "common_x.py").write_text("VALUE = 1\n")  # must be imported first (common*)
    (static / "services" / "broken_static.py").write_text(BROKEN)
    (static / "services" / "sub").mkdir()
    (static / "services" / "sub" / "deep.py").write_text(TWO_SERVICES)  # not recursive: never loaded
    (static / "single.py").write_text("from zato.server.service import Service\n\nclass Single(Service):\n    pass\n")

    with cluster:
        cluster.start_all()
        s1, s2, s3 = cluster.servers
        for server in cluster:
            log = server.log_text()
            assert f"Deploying user-defined services ({server.name})" in log
            assert f"Deployed 2 user-defined services ({server.name})" in log
            assert f"Started `{server.name}@cluster1` (pid: {server.pid()})" in log
            # a dotted name is turned into an absolute path on 3.2, so it cannot import
            assert f"Could not import module `{server.path / 'mypkg.services'}` (internal:0)" in log
            assert f"Could not load source, file_name:`{static / 'services' / 'broken_static.py'}`" in log
            assert f"Could not load source, file_name:`{server.path / 'nothing.py'}`" in log
            assert set(server.services()) == {"b-orders.list-orders", "single.single"}
            assert "demo.demo" not in server.services()  # present at start: not hot-deployed on 3.2
            lines = [line for line in log.splitlines() if " - zato." in line]
            # Zato 3.2 wraps the level in ANSI colour codes (zato-facts.md section 8)
            levels = {"\x1b[1;37mINFO\x1b[0m", "\x1b[1;31mERROR\x1b[0m", "\x1b[1;33mWARNING\x1b[0m"}
            assert all(
                line.split(" - ")[1] in levels and line.split(" - ")[2].split(":")[0].isdigit() for line in lines
            )

        # one cp into server1's pickup dir deploys on all three, each from its own work/hot-deploy/current
        _cp(MY_MOD, s1.pickup_dir / "my_mod.py", tmp_path)
        for server in cluster:
            server.wait_for_log(_deployed_line(server, "my_mod.py"), timeout=5)
            assert (server.current_dir / "my_mod.py").read_text() == MY_MOD
        v1 = s3.services()["my-mod.get-customer"]
        assert (s1.pickup_dir / "my_mod.py").exists()  # delete_after_pick_up=False

        # a module moved (renamed) into the dir is never seen on 3.2
        _mv(TWO_SERVICES, s2.pickup_dir / "moved.py", tmp_path)

        # a broken version: the error twice, then `No services nor models ...`, and v1 stays deployed
        _cp(BROKEN, s2.pickup_dir / "my_mod.py", tmp_path)
        for server in cluster:
            path = server.current_dir / "my_mod.py"
            server.wait_for_log(f"Could not load source, file_name:`{path}`, e:`Traceback", count=2, timeout=5)
            server.wait_for_log("No services nor models were deployed from module `my_mod.py`", timeout=5)
            assert server.services()["my-mod.get-customer"] == v1

        # plural, a `name` attribute, and a module without services
        _cp(TWO_SERVICES, s3.pickup_dir / "orders.py", tmp_path)
        _cp(NO_SERVICE, s3.pickup_dir / "consts.py", tmp_path)
        for server in cluster:
            server.wait_for_log(_deployed_line(server, "orders.py", "['custom.ping', 'orders.create-order']", 2))
            server.wait_for_log("No services nor models were deployed from module `consts.py`")
            assert "consts.py`, e:" not in server.log_text()
        for server in cluster:  # by now the 3.2 watcher would long have seen moved.py, had it been seen
            assert "moved.py" not in server.log_text()
            assert "moved.py" not in json.dumps(server.state())
            assert not (server.current_dir / "moved.py").exists()

        # a server deaf to the cluster (the broken 3.2 fan-out loop) never hears of a package
        s3.set_faults(deaf_to_cluster=True)
        _cp(MY_MOD_V2, s1.pickup_dir / "late.py", tmp_path)
        for server in (s1, s2):
            server.wait_for_log(_deployed_line(server, "late.py", "['late.get-customer']"))
        time.sleep(0.5)
        assert "late.py" not in s3.log_text()
        assert set(cluster.services()["server3"]) == set(s1.services()) - {"late.get-customer"}

        # the events journal: everybody started and became ready; a stop of all shows three down at once
        cluster.stop_all()
        events = cluster.events()
        assert [e["event"] for e in events if e["server"] == "server1"] == ["starting", "ready", "stopping", "stopped"]
        assert max_down_at_once(events) == 3
        for server in cluster:
            assert not server.pidfile.exists()
            assert (
                server.log_text()
                .rstrip()
                .splitlines()[-1]
                .endswith(f"Stopped `{server.name}@cluster1` (pid: {server.state()['pid']})")
            )


def test_33_polls_and_sees_renames(tmp_path: Path) -> None:
    """3.3 polls every 1.1 s: a renamed file is picked up; files present at start are not; the log rotates."""
    with create_cluster(tmp_path, 1, version="3.3") as cluster:
        server = cluster[0]
        conf = server.path / "config" / "repo" / "server.conf"
        conf.write_text(conf.read_text() + "log_max_bytes=600\n")
        cluster.start_all()
        _mv(MY_MOD, server.pickup_dir / "my_mod.py", tmp_path)
        server.wait_for_log(_deployed_line(server, "my_mod.py"), timeout=5)
        assert set(server.services()) == {"my-mod.get-customer"}  # demo.py was there at start: not deployed
        assert (server.path / "logs" / "server.log.1").exists()


def test_41_no_fan_out_and_redeploy_at_start(tmp_path: Path) -> None:
    """4.1: no fan-out, import in place from the pickup dir, every .py under it re-deployed at start."""
    cluster = create_cluster(tmp_path, 2, version="4.1")
    s1, s2 = cluster.servers
    assert not (s1.path / "config" / "repo" / "service-sources.txt").exists()
    assert "bind=0.0.0.0:" in (s1.path / "config" / "repo" / "server.conf").read_text()
    (s1.pickup_dir / "nested").mkdir()
    (s1.pickup_dir / "nested" / "deep.py").write_text(TWO_SERVICES)
    with cluster:
        cluster.start_all()
        assert set(s1.ping() or {}) == {"is_ok", "cid"}
        s1.wait_for_log(f"Deployed 1 service from `{s1.pickup_dir / 'demo.py'}` -> ['demo.demo']")
        s1.wait_for_log("Deployed 3 user-defined services (server1)")
        assert set(s1.services()) == {"demo.demo", "custom.ping", "deep.create-order"}

        _cp(MY_MOD, s1.pickup_dir / "my_mod.py", tmp_path)
        s1.wait_for_log(f"Deployed 1 service from `{s1.pickup_dir / 'my_mod.py'}` -> ['my-mod.get-customer']")
        time.sleep(1.5)
        assert "my_mod" not in s2.log_text()
        assert "my-mod.get-customer" not in s2.services()
        assert not (s1.current_dir / "my_mod.py").exists()

        # a restart re-deploys the pickup dir, my_mod.py included
        pid = s1.pid()
        assert s1.stop().returncode == 0
        s1.wait_stopped(pid)
        assert s1.start().returncode == 0
        s1.wait_ready()
        s1.wait_for_log("Deployed 4 user-defined services (server1)")
        assert "my-mod.get-customer" in s1.services()

        # 4.1's refusal: the load error, a WARNING about connectors, then its longer `No services, ...` line
        _cp(BROKEN, s1.pickup_dir / "bad.py", tmp_path)
        _cp(NO_SERVICE, s1.pickup_dir / "consts.py", tmp_path)
        s1.wait_for_log(f"Could not load source, file_name:`{s1.pickup_dir / 'bad.py'}`", count=2)
        s1.wait_for_log("WARNING\x1b[0m - ")
        s1.wait_for_log("Could not import module `bad` to look for connectors")
        s1.wait_for_log("No services, models nor connector types were deployed from module `bad.py`")
        s1.wait_for_log("No services, models nor connector types were deployed from module `consts.py`")


def test_20_and_30_log_their_own_lines(tmp_path: Path) -> None:
    """2.0 and 3.0 confirm with `Uploaded package ...`; 2.0 refuses with a WARN; 3.0 like 3.2. Dotted names load."""
    install = create_install(tmp_path / "install")
    pkg = install.extlib / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "services.py").write_text("from zato.server.service import Service\n\nclass GetX(Service):\n    pass\n")
    c20 = create_cluster(tmp_path / "c20", 1, version="2.0", install=install, service_sources=["mypkg.services"])
    c30 = create_cluster(tmp_path / "c30", 1, version="3.0", install=install, service_sources=["mypkg.services"])
    both = Cluster(install, "both", "mixed", c20.odb, c20.events_path, [c20[0], c30[0]])
    with both:
        both.start_all()
        s20, s30 = both.servers
        for server in both:
            server.wait_for_log(f"Deployed 1 user-defined services ({server.name})")
            assert set(server.services()) == {"mypkg.services.get-x"}

        _cp(MY_MOD, s20.pickup_dir / "my_mod.py", tmp_path)
        _cp(MY_MOD, s30.pickup_dir / "my_mod.py", tmp_path)
        s20.wait_for_log("Uploaded package id:[1], payload_name:[my_mod.py]")
        s30.wait_for_log("Uploaded package id:`1`, payload_name:`my_mod.py`")

        _cp(BROKEN, s20.pickup_dir / "my_mod.py", tmp_path)
        _cp(BROKEN, s30.pickup_dir / "my_mod.py", tmp_path)
        s20.wait_for_log("WARNING\x1b[0m - ")
        s20.wait_for_log("Package id:[2], payload_name:[my_mod.py] has not been deployed")
        s30.wait_for_log(f"Could not load source, file_name:`{s30.current_dir / 'my_mod.py'}`", count=2)
        s30.wait_for_log("No services nor models were deployed from module `my_mod.py`")
        for server in both:
            assert "my-mod.get-customer" in server.services()

        # 2.0's CLI logged to stderr, 3.x's to stdout
        assert s20.stop().stderr.startswith(f"Server `{s20.path}` shutting down")
        assert s30.stop().stdout == f"Server `{s30.path}` shutting down\n"


def test_cli_messages_and_exit_codes(tmp_path: Path) -> None:
    """start/stop/info/wait print Zato's messages and exit with Zato's codes."""
    install = create_install(tmp_path / "install")
    port = free_port()
    odb = tmp_path / "odb.sqlite"
    path = create_server(install, tmp_path / "server1", version="3.2", http_port=port, odb=odb, stop_delay=0.3)
    server = Server(install, path, "server1", "3.2", port)
    pidfile = path / "pidfile"

    not_zato = install.run("start", str(tmp_path))
    assert not_zato.returncode == 3
    assert not_zato.stdout == (
        f"Directory {tmp_path} doesn't seem to belong to a Zato component. "
        "Expected one of the following to exist ['.zato-info']\n"
    )

    assert server.stop().returncode == 2
    assert server.stop().stdout == f"No pidfile found in `{pidfile}`\n"
    info = server.info()
    assert info["component_running"] is False and info["master_proc_pid"] is None
    timed_out = server.zato("wait", "--timeout", "0.3")
    assert timed_out.returncode == 28

    started = server.start()
    assert (started.returncode, started.stdout) == (0, "OK\n")
    assert server.zato("wait", "--timeout", "10").returncode == 0
    pid = int(pidfile.read_text())
    assert not pidfile.read_text().endswith("\n")
    info = server.info()
    assert info["component_running"] is True and info["master_proc_pid"] == pid
    assert "component_running" in server.zato("info").stdout
    # detached: own session, stdin/stdout on /dev/null
    assert os.getsid(pid) == pid
    assert os.readlink(f"/proc/{pid}/fd/0") == os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"

    again = server.start()
    assert (again.returncode, again.stdout) == (9, f"Cannot proceed, found pidfile `{pidfile}`\n")

    twin_path = create_server(install, tmp_path / "twin", version="3.2", http_port=port, odb=odb)
    twin = Server(install, twin_path, "twin", "3.2", port)
    busy = twin.start()
    assert busy.returncode == 16
    assert busy.stdout == (
        f"Exception: ('Server check failed. Address `0.0.0.0:{port}` already taken.',) "
        "(Hint: re-run with --verbose for full traceback)\n"
    )

    stopped = server.stop()
    assert (stopped.returncode, stopped.stdout) == (0, f"Server `{path}` shutting down\n")
    assert not pidfile.exists()  # deleted at once, while the process still runs its stop delay
    assert server.ping() is not None
    server.wait_stopped(pid)

    pidfile.write_text("")
    assert server.stop().returncode == 10
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    pidfile.write_text(gone)  # a dead (and reaped) pid: exit 16, pidfile kept
    dead = server.stop()
    assert dead.returncode == 16 and dead.stdout.startswith("ProcessLookupError: ")
    assert pidfile.exists()

    # a stale pidfile does not stop a start, and `zato start` does not wait for readiness
    server.set_faults(start_delay=4)
    slow = server.start()
    assert (slow.returncode, slow.stdout) == (0, "OK\n")
    assert server.ping(timeout=0.3) is None
    assert server.zato("wait", "--timeout", "10").returncode == 0
    pid = server.pid()
    assert server.stop().returncode == 0
    server.wait_stopped(pid)

    # fail_start makes `zato start` exit 18
    server.set_faults(fail_start="boom: cannot start")
    failed = server.start()
    assert failed.returncode == 18
    assert failed.stdout.startswith("Stderr received from program `Server` e:`boom: cannot start")

    # a missing service-sources.txt stops the start as well
    server.clear_faults()
    (path / "config" / "repo" / "service-sources.txt").unlink()
    other = server.start()
    assert other.returncode == 18 and "service-sources.txt" in other.stdout


# ####################################################################################################################
# What a real 3.2 server was seen doing (zato-facts.md section 8), one test per fact


def test_service_sources_ends_like_a_quickstart_and_every_style_loads(tmp_path: Path) -> None:
    """A quickstart's service-sources.txt has no newline after its last line; CRLF and trailing blanks load too."""
    install = create_install(tmp_path / "install")
    static = tmp_path / "static"
    static.mkdir()
    (static / "single.py").write_text("from zato.server.service import Service\n\nclass Single(Service):\n    pass\n")
    servers = []
    for style, port in zip(SOURCES_STYLES, free_ports(len(SOURCES_STYLES)), strict=True):
        path = create_server(install, tmp_path / style, name=style, http_port=port, odb=tmp_path / f"{style}.sqlite",
                             service_sources=["../static/single.py"], sources_style=style)
        servers.append(Server(install, path, style, "3.2", port))
    raw = {s.name: (s.path / "config" / "repo" / "service-sources.txt").read_bytes() for s in servers}
    assert raw["quickstart"].endswith(b"\n./work/hot-deploy/current")  # no trailing newline
    assert raw["quickstart"].startswith(b"# Visit https://zato.io/docs")
    assert raw["crlf"].endswith(b"./work/hot-deploy/current\r\n") and b"\n" not in raw["crlf"].replace(b"\r\n", b"")
    assert b"./work/hot-deploy/current  \t\n   \n" in raw["trailing-blanks"]
    assert raw["tidy"].endswith(b"./work/hot-deploy/current\n")
    with Cluster(install, "styles", "3.2", tmp_path / "odb", tmp_path / "events", servers) as cluster:
        cluster.start_all()
        for server in cluster:
            server.wait_for_log(f"Deployed 1 user-defined services ({server.name})")
            assert set(server.services()) == {"single.single"}


def test_log_levels_are_coloured_unless_told_not_to(tmp_path: Path) -> None:
    """`\\x1b[1;37mINFO\\x1b[0m`, `\\x1b[1;31mERROR\\x1b[0m` around the level; `colour=False` writes them plain."""
    install = create_install(tmp_path / "install")
    ports = free_ports(2)
    paths = [create_server(install, tmp_path / f"s{i}", name=f"s{i}", http_port=ports[i], odb=tmp_path / "odb",
                           colour=i == 0, service_sources=["./missing.py"]) for i in range(2)]
    servers = [Server(install, p, f"s{i}", "3.2", ports[i]) for i, p in enumerate(paths)]
    with Cluster(install, "c", "3.2", tmp_path / "odb", tmp_path / "events", servers) as cluster:
        cluster.start_all()
        coloured, plain = (s.log_text() for s in servers)
        assert " - \x1b[1;37mINFO\x1b[0m - " in coloured and " - \x1b[1;31mERROR\x1b[0m - " in coloured
        assert " - INFO - " not in coloured
        assert "\x1b" not in plain and " - INFO - " in plain and " - ERROR - " in plain


def test_a_load_error_is_a_multi_line_traceback_ending_in_a_backtick_line_logged_twice(tmp_path: Path) -> None:
    """Could not load source, file_name:`...`, e:`Traceback...` spans lines up to a line holding only a backtick;
    the record comes twice, then `No services nor models were deployed ...`."""
    with create_cluster(tmp_path, 1) as cluster:
        cluster.start_all()
        server = cluster[0]
        _cp(BROKEN, server.pickup_dir / "my_mod.py", tmp_path)
        server.wait_for_log("No services nor models were deployed from module `my_mod.py`")
        lines = server.log_text().splitlines()
        heads = [i for i, line in enumerate(lines) if "Could not load source, file_name:" in line]
        assert len(heads) == 2
        for head in heads:
            assert lines[head].endswith(f"file_name:`{server.current_dir / 'my_mod.py'}`, e:`Traceback (most recent "
                                        "call last):")
            end = next(i for i in range(head + 1, len(lines)) if lines[i] == "`")
            body = lines[head + 1 : end]
            assert len(body) >= 3 and body[-1].startswith("SyntaxError")
            assert not any(line[:4].isdigit() for line in body)  # no record starts inside the traceback
        assert lines[heads[0] + 1 : heads[1]] == lines[heads[1] + 1 : heads[1] + heads[1] - heads[0]]
        assert "No services nor models were deployed from module `my_mod.py`" in lines[heads[1] + heads[1] - heads[0]]


def test_a_start_takes_its_time_and_listens_before_it_answers(tmp_path: Path) -> None:
    """`zato start` prints OK before /zato/ping answers; the port listens at once, the answer comes at the end of
    start_delay; the log goes Starting, Listening at, Deploying, Deployed N, Started."""
    with create_cluster(tmp_path, 1, start_ok_wait=1.5, start_delay=4.0) as cluster:
        server = cluster[0]
        started = server.start()
        assert (started.returncode, started.stdout) == (0, "OK\n")
        assert server.ping(timeout=0.2) is None
        assert "Listening at: http://127.0.0.1:" in server.log_text()
        assert "Started `" not in server.log_text()
        assert server.zato("wait", "--timeout", "30").returncode == 0
        log = server.log_text()
        order = ["Starting Zato 3.2...", f"Listening at: http://127.0.0.1:{server.port} (",
                 "Deploying user-defined services (server1)", "Deployed 0 user-defined services (server1)",
                 "Started `server1@cluster1`"]
        assert [log.index(x) for x in order] == sorted(log.index(x) for x in order)
        stamps = [time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) for line in log.splitlines()
                  if "Starting Zato" in line or "Started `" in line]
        assert stamps[1] - stamps[0] >= 3  # at least start_delay (whole seconds in the log's stamps)
        pid = server.pid()
        assert server.stop().returncode == 0
        server.wait_stopped(pid)
        tail = server.log_text().split("Started `")[1]
        assert tail.index("Handling signal: term") < tail.index("Shutting down: Main")


def test_ok_then_die_leaves_a_stale_pidfile_that_stop_and_info_trip_over_and_start_clears(tmp_path: Path) -> None:
    """The server dies while importing after `zato start` printed OK: pidfile stale; `zato stop` exits 16
    (ProcessLookupError) and `zato info` exits 16 (NoSuchProcess), both keeping it; `zato start` deletes it."""
    with create_cluster(tmp_path, 1, start_delay=2.0) as cluster:
        server = cluster[0]
        server.set_faults(die_at_start_times=1)
        started = server.start()
        assert (started.returncode, started.stdout) == (0, "OK\n")
        stale = int(server.pidfile.read_text())
        server.wait_stopped(stale)
        server.wait_for_log("Could not start the server, e:`Traceback")
        assert "Started `" not in server.log_text()
        assert cluster.events()[-1]["reason"] == "died at start"
        assert server.pidfile.read_text() == str(stale)

        stop = server.stop()
        assert stop.returncode == 16 and stop.stdout.startswith("ProcessLookupError: (3, 'No such process')")
        info = server.zato("info")
        assert info.returncode == 16 and info.stdout.startswith("NoSuchProcess: ")
        assert server.pidfile.read_text() == str(stale)

        again = server.start()  # the countdown is spent: this start is a normal one
        assert (again.returncode, again.stdout) == (0, "OK\n")
        server.wait_ready()
        assert server.pid() != stale and server.info()["component_running"] is True


def test_a_module_removed_from_current_comes_back_from_the_odb_at_start(tmp_path: Path) -> None:
    """Services the cluster's ODB knows but this server's sources lack are deployed again at start."""
    with create_cluster(tmp_path, 2) as cluster:
        cluster.start_all()
        s1, s2 = cluster.servers
        _cp(MY_MOD, s1.pickup_dir / "my_mod.py", tmp_path)
        for server in cluster:
            server.wait_for_log(_deployed_line(server, "my_mod.py"))
        pid = s2.pid()
        assert s2.stop().returncode == 0
        s2.wait_stopped(pid)
        (s2.current_dir / "my_mod.py").unlink()
        assert s2.start().returncode == 0
        s2.wait_ready()
        restart = s2.log_text().split("Handling signal: term")[1]
        order = ["Deployed 0 user-defined services (server2)", "Found extra services to deploy: my-mod.get-customer",
                 _deployed_line(s2, "my_mod.py"), "Deployed extra services found: ['my-mod.get-customer']",
                 "Started `server2@cluster1`"]
        assert [restart.index(x) for x in order] == sorted(restart.index(x) for x in order)
        assert (s2.current_dir / "my_mod.py").read_text() == MY_MOD
        assert "my-mod.get-customer" in s2.services()

        # nothing is extra when current/ still holds the module: a plain restart logs no such line
        pid = s1.pid()
        assert s1.stop().returncode == 0
        s1.wait_stopped(pid)
        assert s1.start().returncode == 0
        s1.wait_ready()
        assert "Found extra services" not in s1.log_text()


def test_the_environment_overrides_the_pickup_dir_and_adds_user_pickup_folders(tmp_path: Path) -> None:
    """Zato_Config_Server_server__conf_hot_deploy_pickup_dir replaces server.conf's pickup_dir; Zato_Hot_Deploy_Dir
    and pickup.conf's [hot-deploy.user.*] folders are deployed at start and watched, imported in place."""
    real = tmp_path / "real-pickup"
    env_dir, conf_dir = tmp_path / "env-extra", tmp_path / "conf-extra"
    for d in (real, env_dir, conf_dir):
        d.mkdir()
    (env_dir / "from_env.py").write_text(MY_MOD)
    environ = {"Zato_Config_Server_server__conf_hot_deploy_pickup_dir": str(real), "Zato_Hot_Deploy_Dir": str(env_dir)}
    with create_cluster(tmp_path, 1, environ=environ) as cluster:
        server = cluster[0]
        (server.path / "config" / "repo" / "pickup.conf").write_text(
            f"[hot-deploy.user.mine]\npickup_from={conf_dir}\n")
        cluster.start_all()
        server.wait_for_log(f"Deployed 1 service from `{env_dir / 'from_env.py'}` -> ['from-env.get-customer']")
        _cp(TWO_SERVICES, conf_dir / "orders.py", tmp_path)
        server.wait_for_log(f"Deployed 2 services from `{conf_dir / 'orders.py'}`")
        _cp(MY_MOD, server.pickup_dir / "ignored.py", tmp_path)  # server.conf's dir: not watched any more
        _cp(MY_MOD, real / "my_mod.py", tmp_path)
        server.wait_for_log(_deployed_line(server, "my_mod.py"))
        assert "ignored.py" not in server.log_text()
        environ_of_pid = Path(f"/proc/{server.pid()}/environ").read_bytes().split(b"\0")
        assert f"Zato_Hot_Deploy_Dir={env_dir}".encode() in environ_of_pid
