"""The SSH transport against real sshd: quoting, streams, SFTP, host keys, pooling, timeouts, faults.

These are the guarantees the rest of the reconciler builds on, so they are checked on the real thing (OpenSSH
with a login shell on the far side), never on a fake.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshbed import Host, SSHBed

from reconciler import errors
from reconciler.manifest.model import Cluster
from reconciler.transport import script_argv
from reconciler.transport.connect import Connections
from reconciler.transport.local import LocalTransport
from reconciler.transport.ssh import SSHOptions, SSHPool, SSHTransport

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def host(sshbed: SSHBed) -> Host:
    return sshbed.add_host("transport-main")


@pytest.fixture()
def options(sshbed: SSHBed) -> SSHOptions:
    return SSHOptions(identity=sshbed.client_key, known_hosts=sshbed.known_hosts, connect_timeout=5)


@pytest.fixture()
def pool(options: SSHOptions) -> Iterator[SSHPool]:
    with SSHPool(options) as p:
        yield p


@pytest.fixture()
def transport(pool: SSHPool, host: Host, sshbed: SSHBed) -> SSHTransport:
    return pool.transport("server1", host.host, host.port, sshbed.user)


@pytest.fixture()
def workdir(sshbed: SSHBed, request: pytest.FixtureRequest) -> Path:
    """A fresh folder owned by the SSH user."""
    d = sshbed.workdir / "transport" / request.node.name.replace("[", "-").replace("]", "")
    d.mkdir(parents=True, mode=0o755)
    (sshbed.workdir / "transport").chmod(0o755)
    sshbed.chown_to_user(sshbed.workdir / "transport")
    return d


def _server_side_peers(port: int) -> set[int]:
    """Client ports of the established TCP connections to 127.0.0.1:port (read on the sshd side)."""
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            peers.add(int(remote.split(":")[1], 16))
    return peers


# -- the command line arrives verbatim --------------------------------------------------------------------------


def test_argv_arrives_verbatim_and_nothing_is_executed(transport: SSHTransport, workdir: Path) -> None:
    pwned = workdir / "pwned"
    weird = [
        "two words",
        "it's",
        '"double"',
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        f"; touch {pwned}",
        f"&& touch {pwned}",
        f"| touch {pwned}",
        f"line1\ntouch {pwned}\nline3",
        "$HOME",
        "*",
        "",
        "back\\slash",
        "tab\there",
        "~",
        "ünïcödé",
    ]
    result = transport.run(["printf", "%s\\0", *weird])
    assert result.ok, result.err_text()
    assert result.stdout.split(b"\0")[:-1] == [w.encode() for w in weird]
    assert not pwned.exists()


def test_script_argv_passes_values_as_positional_parameters(transport: SSHTransport, workdir: Path) -> None:
    pwned = workdir / "pwned"
    value = f"'; touch {pwned}; echo '"
    result = transport.run(script_argv('printf "%s|%s" "$1" "$2"', value, "$(id)"))
    assert result.stdout == f"{value}|$(id)".encode()
    assert not pwned.exists()


def test_exit_code_stdout_and_stderr(transport: SSHTransport) -> None:
    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.ok
    missing = transport.run(["no-such-program-zg"])
    assert missing.exit_code == 127


# -- streams --------------------------------------------------------------------------------------------------


def test_stdin_passes_through(transport: SSHTransport) -> None:
    data = bytes(range(256)) * 17 + b"\n\x00end"
    assert transport.run(["cat"], stdin=data).stdout == data
    # Without stdin the remote side sees EOF at once instead of waiting forever.
    assert transport.run(["cat"], timeout=10).stdout == b""


def test_big_output_on_both_streams_does_not_deadlock(transport: SSHTransport) -> None:
    size = 6_000_000  # three times the SSH window on each stream
    result = transport.run(
        script_argv('head -c "$1" /dev/zero; head -c "$1" /dev/zero >&2; echo done', str(size)), timeout=60
    )
    assert result.ok
    assert len(result.stdout) == size + 5
    assert len(result.stderr) == size


def test_big_stdin_to_big_stdout_does_not_deadlock(transport: SSHTransport) -> None:
    data = os.urandom(8_000_000)  # cat echoes while we still send: needs stdin and stdout at once
    result = transport.run(["cat"], stdin=data, timeout=60)
    assert result.ok
    assert result.stdout == data


def test_command_that_ignores_big_stdin_is_fine(transport: SSHTransport) -> None:
    result = transport.run(["true"], stdin=b"x" * 5_000_000, timeout=30)
    assert result.ok


# -- put ------------------------------------------------------------------------------------------------------


def test_put_writes_bytes_and_mode(transport: SSHTransport, workdir: Path) -> None:
    target = workdir / "module.py"
    data = bytes(range(256)) * 100
    transport.put(str(target), data, mode=0o640)
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o7777 == 0o640
    # A shorter second write truncates, and the mode changes exactly (no umask).
    transport.put(str(target), b"short", mode=0o755)
    assert target.read_bytes() == b"short"
    assert target.stat().st_mode & 0o7777 == 0o755
    transport.put(str(workdir / "empty"), b"")
    assert (workdir / "empty").read_bytes() == b""
    assert (workdir / "empty").stat().st_mode & 0o7777 == 0o644


def test_put_into_a_missing_folder_names_the_path(transport: SSHTransport, workdir: Path) -> None:
    path = str(workdir / "no-such-dir" / "x.py")
    with pytest.raises(errors.Stalled) as e:
        transport.put(path, b"x")
    assert path in e.value.message and "server1" in e.value.message
    # The connection and its SFTP session stay usable.
    transport.put(str(workdir / "ok.py"), b"ok")
    assert (workdir / "ok.py").read_bytes() == b"ok"


def test_put_where_the_user_may_not_write(transport: SSHTransport, sshbed: SSHBed) -> None:
    if not sshbed.is_root:
        pytest.skip("needs a folder the test user cannot write, which only root can make here")
    locked = sshbed.dir / "root-only"
    locked.mkdir(mode=0o755, exist_ok=True)
    with pytest.raises(errors.Stalled) as e:
        transport.put(str(locked / "x.py"), b"x")
    assert str(locked / "x.py") in e.value.message
    assert "Permission denied" in e.value.message or "permission" in e.value.message.lower()


# -- host keys ------------------------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_a_hint(sshbed: SSHBed, options: SSHOptions) -> None:
    stranger = sshbed.add_host("transport-unknown", known=False)
    with SSHPool(options) as pool:
        t = pool.transport("server9", stranger.host, stranger.port, sshbed.user)
        with pytest.raises(errors.HostKeyError) as e:
            t.run(["true"])
    msg, hint = e.value.message, e.value.hint
    assert "server9" in msg and f"127.0.0.1:{stranger.port}" in msg
    assert "SHA256:" in msg
    assert f"ssh-keyscan -p {stranger.port} 127.0.0.1 >> {sshbed.known_hosts}" in hint
    assert "ssh-keygen -lf" in hint
    assert isinstance(e.value, errors.Stalled)
    assert stranger.host_key_line not in sshbed.known_hosts.read_text()  # never added automatically


def test_changed_host_key_is_refused(sshbed: SSHBed, host: Host, tmp_path: Path, options: SSHOptions) -> None:
    other = sshbed.add_host("transport-other")
    known = tmp_path / "known_hosts"
    # host's address with another host's key: what a man in the middle (or a reinstall) looks like.
    known.write_text(f"[{host.host}]:{host.port} {' '.join(other.public_key)}\n")
    opts = SSHOptions(identity=options.identity, known_hosts=known, connect_timeout=5)
    with SSHPool(opts) as pool, pytest.raises(errors.HostKeyError) as e:
        pool.transport("server1", host.host, host.port, sshbed.user).run(["true"])
    assert "CHANGED" in e.value.message and "man-in-the-middle" in e.value.message
    assert "server1" in e.value.message
    assert f"ssh-keygen -R '[127.0.0.1]:{host.port}' -f {known}" in e.value.hint


def test_missing_known_hosts_is_refused(sshbed: SSHBed, host: Host, tmp_path: Path, options: SSHOptions) -> None:
    opts = SSHOptions(identity=options.identity, known_hosts=tmp_path / "nope", connect_timeout=5)
    with SSHPool(opts) as pool, pytest.raises(errors.HostKeyError) as e:
        pool.transport("server1", host.host, host.port, sshbed.user).put("/tmp/x", b"")
    assert str(tmp_path / "nope") in e.value.message
    assert "ssh-keyscan" in e.value.hint


def test_unauthorised_key_is_stalled_not_unreachable(sshbed: SSHBed, host: Host, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    opts = SSHOptions(identity=key, known_hosts=sshbed.known_hosts)
    with SSHPool(opts) as pool, pytest.raises(errors.Stalled) as e:
        pool.transport("server1", host.host, host.port, sshbed.user).run(["true"])
    assert not isinstance(e.value, errors.HostKeyError)
    assert "authentication" in e.value.message and "authorized_keys" in e.value.hint


# -- pooling --------------------------------------------------------------------------------------------------


def test_transports_on_one_host_share_one_connection(pool: SSHPool, host: Host, sshbed: SSHBed) -> None:
    before = _server_side_peers(host.port)
    t1 = pool.transport("server1", host.host, host.port, sshbed.user)
    t2 = pool.transport("server2", host.host, host.port, sshbed.user)
    assert t1.run(["true"]).ok and t2.run(["true"]).ok
    t2.put(str(sshbed.workdir / "shared-probe"), b"x")
    t1.put(str(sshbed.workdir / "shared-probe"), b"y")
    assert t1.peer_socket() is t2.peer_socket()
    assert pool.connection_count() == 1
    # sshd saw exactly one new connection, ours (connections of earlier tests may still be closing).
    assert _server_side_peers(host.port) - before == {t1.peer_socket().getsockname()[1]}


def test_many_threads_share_one_connection(pool: SSHPool, host: Host, sshbed: SSHBed, workdir: Path) -> None:
    """More threads than OpenSSH's MaxSessions (10): the pool queues them on the one connection."""
    transports = [pool.transport(f"server{i}", host.host, host.port, sshbed.user) for i in range(24)]
    failures: list[BaseException] = []
    outputs: dict[int, bytes] = {}

    def work(i: int, t: SSHTransport) -> None:
        try:
            outputs[i] = t.run(["sh", "-c", 'sleep 0.05; echo "$1"', "sh", str(i)]).stdout
            t.put(str(workdir / f"f{i}"), str(i).encode())
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(transports)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not failures, failures
    assert outputs == {i: f"{i}\n".encode() for i in range(24)}
    assert all((workdir / f"f{i}").read_bytes() == str(i).encode() for i in range(24))
    assert pool.connection_count() == 1


def test_tcp_nodelay_is_set(transport: SSHTransport) -> None:
    sock = transport.peer_socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


# -- timeouts and faults --------------------------------------------------------------------------------------


def test_command_exceeding_its_timeout_is_unreachable(transport: SSHTransport) -> None:
    started = time.monotonic()
    with pytest.raises(errors.Unreachable) as e:
        transport.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 10  # the timeout was honoured, not sleep's 30 s
    assert "server1" in e.value.message and "sleep" in e.value.message
    assert transport.run(["true"]).ok  # the shared connection survives


def test_stopped_sshd_is_unreachable_and_recovers(sshbed: SSHBed, options: SSHOptions) -> None:
    flaky = sshbed.add_host("transport-flaky")
    with SSHPool(options) as pool:
        t = pool.transport("server1", flaky.host, flaky.port, sshbed.user)
        assert t.run(["true"]).ok
        flaky.stop()  # kills the live connection too, as if the machine went away
        with pytest.raises(errors.Unreachable) as e:
            t.run(["true"], timeout=10)
        assert "server1" in e.value.message
        flaky.start()
        assert t.run(["true"]).ok  # the pool reconnects on the next call
        assert pool.connection_count() == 1
    flaky.stop()
    with SSHPool(options) as pool:
        t = pool.transport("server1", flaky.host, flaky.port, sshbed.user)
        with pytest.raises(errors.Unreachable) as e:
            t.run(["true"])
        assert "refused" in e.value.message and f"127.0.0.1:{flaky.port}" in e.value.message
        with pytest.raises(errors.Unreachable):
            t.put("/tmp/x", b"")


def test_restarted_sshd_is_reconnected_transparently(sshbed: SSHBed, options: SSHOptions) -> None:
    """A pooled connection that died while idle is replaced before anything runs."""
    h = sshbed.add_host("transport-restart")
    with SSHPool(options) as pool:
        t = pool.transport("server1", h.host, h.port, sshbed.user)
        assert t.run(["true"]).ok
        h.stop()
        h.start()
        time.sleep(0.2)  # let paramiko notice the closed socket (the retry also covers it if not)
        assert t.run(["echo", "hi"]).stdout == b"hi\n"
        t.put(str(sshbed.workdir / "restart-probe"), b"x")
    h.stop()


# -- Connections ----------------------------------------------------------------------------------------------


def test_connections_picks_the_transport(sshbed: SSHBed, host: Host, options: SSHOptions) -> None:
    server = {"name": "server1", "host": host.host, "port": host.port, "user": sshbed.user, "path": "/x"}
    ssh_cluster = Cluster.model_validate({"name": "c1", "servers": [server]})
    local_cluster = Cluster.model_validate({"name": "c2", "transport": "local", "servers": [server]})
    with Connections(options) as conns:
        t = conns.get(ssh_cluster, ssh_cluster.servers[0])
        assert isinstance(t, SSHTransport)
        assert t.label == f"server1 ({sshbed.user}@127.0.0.1:{host.port})"
        assert t.run(["whoami"]).stdout.decode().strip() == sshbed.user
        local = conns.get(local_cluster, local_cluster.servers[0])
        assert isinstance(local, LocalTransport)
        assert local.run(["echo", "hi"]).stdout == b"hi\n"


# -- measurements (printed, never asserted) --------------------------------------------------------------------


def test_measure_exec_round_trip(sshbed: SSHBed, host: Host, options: SSHOptions) -> None:
    """Per-exec round trip of `true` with and without TCP_NODELAY, and the connect time; run with -s to see."""
    lines = []
    for nodelay in (True, False):
        opts = SSHOptions(
            identity=options.identity, known_hosts=options.known_hosts, tcp_nodelay=nodelay
        )
        with SSHPool(opts) as pool:
            t = pool.transport("bench", host.host, host.port, sshbed.user)
            started = time.perf_counter()
            t.run(["true"])
            connect = time.perf_counter() - started
            samples = []
            for _ in range(20):
                started = time.perf_counter()
                t.run(["true"])
                samples.append(time.perf_counter() - started)
        lines.append(
            f"TCP_NODELAY={'on ' if nodelay else 'off'}: connect+first exec {connect * 1000:.1f} ms, "
            f"exec median {statistics.median(samples) * 1000:.1f} ms"
        )
    print("\n" + "\n".join(lines))
