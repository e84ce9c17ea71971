"""Issue 10 cases that need a real sshd: a host without the SFTP subsystem is named at once, with what to do.

Static installs write files over SFTP. An sshd without `Subsystem sftp` used to make a rolling restart hang for
the whole I/O timeout (60 s) and end with "Channel closed."; now the first write says which host and what line
to add, within a few tries (a Stalled error: retrying cannot help until a person changes sshd_config).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sshbed import Host, SSHBed

from reconciler import errors
from reconciler.transport.ssh import SSHOptions, SSHPool
from tests.standin.harness import running_cluster
from tests.unit.gitbed import HERMETIC_ENV, GitBed

pytestmark = pytest.mark.e2e


def test_a_host_without_the_sftp_subsystem_is_named_quickly(sshbed: SSHBed, monkeypatch: pytest.MonkeyPatch) -> None:
    write = Host._write_config

    def without_sftp(self: Host) -> None:
        write(self)
        self.config.write_text(self.config.read_text().replace("Subsystem sftp internal-sftp\n", ""))

    monkeypatch.setattr(Host, "_write_config", without_sftp)
    host = sshbed.add_host(f"nosftp-{uuid.uuid4().hex[:6]}")
    monkeypatch.setattr(Host, "_write_config", write)
    assert "Subsystem" not in host.config.read_text()
    options = SSHOptions(identity=sshbed.client_key, known_hosts=sshbed.known_hosts, connect_timeout=5)
    with SSHPool(options) as pool:
        transport = pool.transport("prod/server1", host.host, host.port, sshbed.user)
        assert transport.run(["true"]).exit_code == 0  # exec works: only the subsystem is missing
        # Stalled, not the Unreachable that ended the whole I/O timeout (60 s) of retries before
        with pytest.raises(errors.Stalled) as e:
            transport.put(f"{sshbed.workdir}/never-written", b"x")
    assert e.value.message.startswith("prod/server1: the host's sshd refused the SFTP subsystem")
    assert "Subsystem sftp internal-sftp" in e.value.hint


def test_the_first_ctrl_c_is_acknowledged_at_once_and_ends_the_wait_recorded_as_interrupted(tmp_path: Path) -> None:
    """A real `apply` waiting for a confirmation that never comes (the stand-in is told to stay silent).

    The first Ctrl-C is acknowledged at once and ends the confirmation wait (the step being finished is the wait
    itself): the run records what was not confirmed as interrupted and exits 1. The second Ctrl-C's abort is
    covered by test_cli.py's Reporter tests; here it could race with the run ending by itself.
    """
    with running_cluster(tmp_path / "zato", n=1, cluster="prod") as cluster:
        server = cluster[0]
        server.set_faults(mute_hot_deploy=True)
        bed = GitBed(tmp_path / "git")
        bed.commit({"zato-gitops.yaml": f"""version: 1
clusters:
  - name: prod
    transport: local
    zato_command: {cluster.install.zato}
    servers:
      - {{name: server1, path: {server.path}}}
    hot_deploy: [services/*.py]
""", "services/crm.py": "x = 1\n"}, "first")
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--timeout", "300", "--repo", str(bed.origin),
             "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **HERMETIC_ENV},
        )
        assert proc.stderr is not None
        seen: list[str] = []
        try:
            for line in proc.stderr:  # bounded by the process: it waits up to 300 s for a confirmation
                seen.append(line)
                if line.startswith("> prod: waiting for server1 to confirm"):  # the wait itself has begun
                    break
            proc.send_signal(signal.SIGINT)
            ack = proc.stderr.readline()
            while ack.startswith("> "):  # a progress line written before the signal arrived
                seen.append(ack)
                ack = proc.stderr.readline()
            assert ack.startswith("interrupt: finishing the current step (prod: waiting for server1"), [*seen, ack]
            assert "Ctrl-C again to abort at once" in ack
            rest = proc.stderr.read()  # bounded: the run ends by itself once the wait is cut short
            assert proc.wait(timeout=60) == 1, rest
            assert proc.stdout is not None
            shown = proc.stdout.read() + rest
            assert "interrupted" in shown and "Traceback" not in shown, shown
            assert "recording 1 record" in rest  # the record step ran
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
