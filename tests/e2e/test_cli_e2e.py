"""Issue 10 cases that need a real sshd: a host without the SFTP subsystem is named at once, with what to do.

Static installs write files over SFTP. An sshd without `Subsystem sftp` used to make a rolling restart hang for
the whole I/O timeout (60 s) and end with "Channel closed."; now the first write says which host and what line
to add, within a few tries (a Stalled error: retrying cannot help until a person changes sshd_config).
"""

from __future__ import annotations

import uuid

import pytest
from sshbed import Host, SSHBed

from reconciler import errors
from reconciler.transport.ssh import SSHOptions, SSHPool

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
