"""A real-sshd test bed: one OpenSSH daemon per simulated host on 127.0.0.1, a test user, a client key.

End-to-end tests must meet the SSH the reconciler meets in production (host key checks, sessions, SFTP,
quoting by a real login shell), so nothing here is faked: each `Host` is an `sshd -D` with its own host key
and port, logged in to as a dedicated unprivileged user (logging in as root costs 200-400 ms per command here,
see /work/shared/test-bed-notes.md). The bed writes its own known_hosts; the reconciler under test gets
exactly that file.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEST_USER = "zgtest"
_SSHD_PATHS = "/usr/sbin:/sbin:/usr/local/sbin"


class SSHBedError(RuntimeError):
    """The bed cannot be set up on this machine; the message says what to install or fix."""


def _sh(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(argv), capture_output=True, check=False, **kw)
    if proc.returncode != 0:
        raise SSHBedError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every process below pid (sshd's per-connection processes call setsid: a process group misses them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Host:
    """One simulated host: an sshd on 127.0.0.1:port with its own host key."""

    def __init__(self, bed: SSHBed, name: str) -> None:
        self.bed = bed
        self.name = name
        self.host = "127.0.0.1"
        self.port = 0
        self.dir = bed.dir / "hosts" / name
        self.dir.mkdir(parents=True)
        self.host_key = self.dir / "ssh_host_ed25519_key"
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"zgtest-{name}", "-f", str(self.host_key)])
        self.public_key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_line(self) -> str:
        """This host's known_hosts line, e.g. `[127.0.0.1]:40123 ssh-ed25519 AAAA...`."""
        return f"[{self.host}]:{self.port} {' '.join(self.public_key)}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    f"AuthorizedKeysFile .ssh/authorized_keys {self.bed.authorized_keys}",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.bed.user}",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 100:30:200",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel INFO",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, on the same port and key) this host's sshd and wait for its banner."""
        if self.proc is not None and self.proc.poll() is None:
            return
        restart = bool(self.port)  # a restart keeps its port, or the known_hosts line would be wrong
        for attempt in range(5):
            if not self.port or (attempt and not restart):
                self.port = _free_port()
            self._write_config()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.bed.sshd, "-D", "-e", "-f", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            if self._wait_banner(timeout):
                return
        raise SSHBedError(f"sshd for {self.name} did not start; its log:\n{self.log.read_text()[-3000:]}")

    def _wait_banner(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile; start() picks another
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.01)
        self.stop()
        return False

    def stop(self) -> None:
        """Take the host down: the listener AND every live connection (as if the machine went away)."""
        if self.proc is None:
            return
        victims = [*_descendants(self.proc.pid), self.proc.pid]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"


class SSHBed:
    """The whole bed; see the module docstring. Create it, then `close()` it (the pytest fixture does)."""

    def __init__(self) -> None:
        sshd = shutil.which("sshd", path=f"{os.environ.get('PATH', '')}:{_SSHD_PATHS}")
        if sshd is None or not shutil.which("ssh-keygen"):
            raise SSHBedError(
                "the e2e tests need a real OpenSSH server: install it with "
                "`apt-get install -y --no-install-recommends openssh-server openssh-client`"
            )
        self.sshd = os.path.abspath(sshd)  # sshd re-execs itself and insists on an absolute path
        self.is_root = os.geteuid() == 0
        self.user = TEST_USER if self.is_root else getpass.getuser()
        self.hosts: dict[str, Host] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._installed_key_line: str | None = None
        self._user_keys: Path | None = None
        if self.is_root:
            self._ensure_user()
        pw = pwd.getpwnam(self.user)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)

        # The bed's own files (host keys, configs, the client key): owned by the runner, traversable by all.
        self.dir = Path(tempfile.mkdtemp(prefix="zg-sshbed-", dir="/tmp"))
        self.dir.chmod(0o755)
        # Where tests put their Zato stand-ins: owned by the test user, 0755 on every component we create.
        self.workdir = Path(tempfile.mkdtemp(prefix="zg-e2e-", dir="/tmp"))
        self.workdir.chmod(0o755)
        self.chown_to_user(self.workdir)

        self.client_key = self.dir / "id_ed25519"
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zgtest", "-f", str(self.client_key)])
        self.client_key.chmod(0o600)
        pub = self.client_key.with_suffix(".pub").read_text().strip()
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(pub + "\n")
        self.authorized_keys.chmod(0o644)
        self._install_authorized_key(pub)

        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("")
        if self.is_root:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod("/run/sshd", 0o755)
        atexit.register(self.close)

    # -- setup ----------------------------------------------------------------------------------------------

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            _sh(["useradd", "-m", "-s", "/bin/bash", self.user])
        # useradd leaves the password locked, and with UsePAM no sshd then refuses even key logins.
        _sh(["usermod", "-p", "*", self.user])

    def _install_authorized_key(self, pub: str) -> None:
        """Also put the key in the user's own ~/.ssh/authorized_keys when we own that account (root)."""
        if not self.is_root:
            return  # never edit a real user's authorized_keys; sshd also reads the bed's file
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        with open(keys, "a") as f:
            f.write(pub + "\n")
        for p in (ssh_dir, keys):
            os.chown(p, self.uid, self.gid)
        keys.chmod(0o600)
        self._installed_key_line = pub
        self._user_keys = keys

    # -- API ------------------------------------------------------------------------------------------------

    def add_host(self, name: str, *, known: bool = True) -> Host:
        """Start a new simulated host; with `known` (the default) its key goes into the bed's known_hosts."""
        with self._lock:
            if name in self.hosts:
                raise ValueError(f"host {name!r} already exists")
            host = Host(self, name)
            self.hosts[name] = host
        host.start()
        if known:
            with self._lock, open(self.known_hosts, "a") as f:
                f.write(host.host_key_line + "\n")
        return host

    def run_as_user(
        self, argv: Sequence[str], *, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """Run argv locally as the test user (e.g. to prepare files the way the SSH user would)."""
        full = ["runuser", "-u", self.user, "--", *argv] if self.is_root else list(argv)
        kw.setdefault("capture_output", True)
        return subprocess.run(full, check=check, **kw)

    def chown_to_user(self, path: Path | str) -> None:
        """Give path (recursively) to the test user; nothing to do when the tests run as that user."""
        if not self.is_root:
            return
        p = Path(path)
        os.chown(p, self.uid, self.gid, follow_symlinks=False)
        if p.is_dir() and not p.is_symlink():
            for root, dirs, files in os.walk(p):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), self.uid, self.gid, follow_symlinks=False)

    def close(self) -> None:
        """Stop every sshd, remove the key installed for the user and the bed's files."""
        if self._closed:
            return
        self._closed = True
        for host in list(self.hosts.values()):
            host.stop()
        if self._user_keys is not None and self._installed_key_line is not None:
            with contextlib.suppress(OSError):
                lines = self._user_keys.read_text().splitlines()
                keep = [line for line in lines if line.strip() != self._installed_key_line]
                self._user_keys.write_text("".join(line + "\n" for line in keep))
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
