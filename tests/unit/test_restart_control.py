"""ServerControl against what a real 3.2 `zato` does with a dead server (docs/zato-facts.md, seen on a real one):
a stale pidfile makes `zato stop` exit 16 with ProcessLookupError; a server can die after `zato start` said OK.

A small `zato` script stands in for the command (it behaves like Zato's on a stale pidfile), run through the real
local transport and the real sh, so the scripts ServerControl sends are exercised as they are on a server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.apply.restart import ServerControl
from reconciler.core.state import LogMark
from reconciler.errors import ReconcilerError
from reconciler.transport.local import LocalTransport

ZATO = """#!/bin/sh
# stop: like Zato's, exit 16 with ProcessLookupError when the pid is gone, the pidfile kept
cmd=$1; dir=$2
case $cmd in
  stop)
    [ -f "$dir/pidfile" ] || { echo "No pidfile found in \\`$dir/pidfile\\`"; exit 2; }
    p=$(cat "$dir/pidfile")
    if [ ! -d "/proc/$p" ]; then echo "ProcessLookupError: (3, 'No such process')"; exit 16; fi
    if [ -f "$dir/not-ours" ]; then echo "PermissionError: (1, 'Operation not permitted')"; exit 16; fi
    kill "$p"; rm -f "$dir/pidfile"; echo "Server \\`$dir\\` shutting down" ;;
  *) exit 0 ;;
esac
"""


def dead_pid() -> int:
    return int(subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout)


@pytest.fixture
def server(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "server.log").write_text("")
    zato = tmp_path / "zato"
    zato.write_text(ZATO)
    zato.chmod(0o755)
    return tmp_path


def control(server: Path) -> ServerControl:
    return ServerControl(LocalTransport("local"), str(server / "zato"), str(server), 1, sleep=lambda _: None)


def test_a_stale_pidfile_is_a_stopped_server_and_is_cleared(server: Path) -> None:
    (server / "pidfile").write_text(str(dead_pid()))
    control(server).stop(timeout=5)
    assert not (server / "pidfile").exists()


def test_exit_16_for_a_live_process_is_an_error_and_its_pidfile_stays(server: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        (server / "pidfile").write_text(str(proc.pid))
        (server / "not-ours").write_text("")
        with pytest.raises(ReconcilerError, match="exited 16: PermissionError"):
            control(server).stop(timeout=5)
        assert (server / "pidfile").read_text() == str(proc.pid)
        control(server).clear_stale_pidfile()  # a live pid is never cleared
        assert (server / "pidfile").exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_server_that_dies_after_ok_is_not_ready_and_its_last_lines_are_quoted(server: Path) -> None:
    """No Started line ever comes; the process named by the pidfile is gone: not ready, long before the timeout."""
    log = server / "logs" / "server.log"
    log.write_text(
        "2026-11-29 10:00:00,000 - \x1b[1;37mINFO\x1b[0m - 1:M - zato.server.main:0 - Starting Zato 3.2...\n"
    )
    (server / "pidfile").write_text(str(dead_pid()))
    now = [0.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    ctl = ServerControl(LocalTransport("local"), str(server / "zato"), str(server), 1, clock=clock,
                        sleep=lambda _: None)
    ready = ctl.wait_ready(LogMark(str(log), 0, log.stat().st_ino), timeout=3600)
    assert not ready.ok
    assert "died while starting" in ready.error
    assert now[0] < 10  # gave up at once, not at the timeout
    assert ready.lines == ["2026-11-29 10:00:00,000 - INFO - 1:M - zato.server.main:0 - Starting Zato 3.2..."]
