"""LocalTransport keeps the SSH transport's semantics on this machine: no shell, EOF stdin, exact modes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler import errors
from reconciler.manifest.model import Cluster
from reconciler.transport import Transport, script_argv
from reconciler.transport.connect import Connections, server_label
from reconciler.transport.local import LocalTransport


@pytest.fixture()
def local() -> LocalTransport:
    return LocalTransport("server1 (local)")


def test_is_a_transport(local: LocalTransport) -> None:
    t: Transport = local
    assert t.label == "server1 (local)"


def test_argv_is_not_parsed_by_a_shell(local: LocalTransport, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    weird = ["two words", "it's", f"$(touch {pwned})", f"; touch {pwned}", f"a\ntouch {pwned}", "$HOME", "*", ""]
    result = local.run(["printf", "%s\\0", *weird])
    assert result.ok
    assert result.stdout.split(b"\0")[:-1] == [w.encode() for w in weird]
    assert not pwned.exists()


def test_script_argv_positional_parameters(local: LocalTransport) -> None:
    assert local.run(script_argv('printf "%s" "$1"', "$(id); x")).stdout == b"$(id); x"


def test_exit_code_and_streams(local: LocalTransport) -> None:
    result = local.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.text() == "out\n" and result.err_text() == "err"


def test_stdin_passes_through_and_defaults_to_eof(local: LocalTransport) -> None:
    data = bytes(range(256)) * 1000
    assert local.run(["cat"], stdin=data).stdout == data
    assert local.run(["cat"], timeout=5).stdout == b""


def test_big_output_on_both_streams(local: LocalTransport) -> None:
    result = local.run(script_argv('head -c "$1" /dev/zero; head -c "$1" /dev/zero >&2', "3000000"))
    assert len(result.stdout) == len(result.stderr) == 3_000_000


def test_missing_program_ends_like_a_shell_would(local: LocalTransport, tmp_path: Path) -> None:
    assert local.run(["no-such-program-zg"]).exit_code == 127
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert local.run([str(script)]).exit_code == 126


def test_timeout_is_unreachable(local: LocalTransport) -> None:
    started = time.monotonic()
    with pytest.raises(errors.Unreachable) as e:
        local.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 10
    assert "server1 (local)" in e.value.message and "sleep" in e.value.message


def test_empty_argv_is_a_bug(local: LocalTransport) -> None:
    with pytest.raises(ValueError):
        local.run([])


def test_put_writes_bytes_and_exact_mode(local: LocalTransport, tmp_path: Path) -> None:
    target = tmp_path / "m.py"
    old = os.umask(0o077)
    try:
        local.put(str(target), b"x" * 10_000, mode=0o644)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"x" * 10_000
    assert target.stat().st_mode & 0o7777 == 0o644
    local.put(str(target), b"short", mode=0o600)
    assert target.read_bytes() == b"short"
    assert target.stat().st_mode & 0o7777 == 0o600


def test_put_into_missing_folder_names_the_path(local: LocalTransport, tmp_path: Path) -> None:
    path = str(tmp_path / "nope" / "m.py")
    with pytest.raises(errors.Stalled) as e:
        local.put(path, b"x")
    assert path in e.value.message and "server1 (local)" in e.value.message
    assert e.value.hint


def test_connections_gives_local_transport_for_local_clusters() -> None:
    cluster = Cluster.model_validate(
        {"name": "c", "transport": "local", "servers": [{"name": "server1", "path": "/opt/zato/server1"}]}
    )
    with Connections() as conns:
        t = conns.get(cluster, cluster.servers[0])
    assert isinstance(t, LocalTransport)
    assert t.label == "server1 (local)"
    ssh = Cluster.model_validate(
        {"name": "c", "servers": [{"name": "server1", "host": "10.0.0.11", "path": "/opt/zato/server1"}]}
    )
    assert server_label(ssh, ssh.servers[0]) == "server1 (zato@10.0.0.11:22)"
