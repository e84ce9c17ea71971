"""The command as a real process: what reaches the terminal when a server's `port:` is not SSH.

paramiko logs its own traceback ("Error reading SSH protocol banner") from its transport thread; only a real
process shows whether that reaches the user's stderr, so this runs `python -m reconciler` against a loopback port
that answers like an HTTP server (no sshd needed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.gitbed import HERMETIC_ENV, GitBed


@pytest.fixture
def http_port() -> Iterator[int]:
    """A loopback port that answers every connection like a web server would, then closes it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    done = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join(2)
    server.close()


def test_a_port_that_is_not_ssh_is_one_clean_error(tmp_path: Path, bed: GitBed, http_port: int) -> None:
    bed.commit({"zato-gitops.yaml": f"""version: 1
clusters:
  - name: prod
    servers:
      - {{name: server1, host: 127.0.0.1, port: {http_port}, user: zato, path: /opt/zato/env/prod/server1}}
    hot_deploy: [services/*.py]
""", "services/crm.py": "x = 1\n"}, "first")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", "--json", "--repo", str(bed.origin), "--state-dir",
         str(tmp_path / "state"), "--known-hosts", str(known_hosts)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **HERMETIC_ENV},
    )
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["changes_pending"] is None
    (problem,) = data["unreachable"]
    assert problem["server"] == "server1"
    assert problem["error"].endswith(f"127.0.0.1:{http_port} is not an SSH server (it answered, but not with an SSH "
                                     "banner)")
    assert "port:" in problem["hint"]
    for noise in ("Traceback", "paramiko", "Exception (client)", "SSHException"):
        assert noise not in result.stderr, result.stderr
