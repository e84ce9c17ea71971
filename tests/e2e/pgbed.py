"""A private PostgreSQL server for the end-to-end tests: one throwaway instance per test session.

Debian's `postgresql` package (tests/run.sh installs it) provides the binaries; no system-wide cluster is used.
As root the instance runs as the `postgres` user (initdb refuses root); its data dir is owned by that user, mode
0700. It listens on 127.0.0.1 on a free port and on a socket in its own dir, with `trust` authentication, so
every test gets its own database (`create_db`). `stop`/`start` let a test take the server away and bring it back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg


class PGBedError(Exception):
    pass


def bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise PGBedError("no PostgreSQL server binaries in /usr/lib/postgresql: apt-get install -y postgresql "
                         "(tests/run.sh does it)")
    return found[-1].parent


class PGBed:
    def __init__(self) -> None:
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="zg-pg-"))
        self.data = self.dir / "data"
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=self.dir)
        if r.returncode != 0:
            raise PGBedError(f"{tool} failed ({r.returncode}): {r.stdout}{r.stderr}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{db}", autocommit=True)

    def create_db(self) -> str:
        name = "zg_" + uuid.uuid4().hex[:10]
        with self.connect() as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return name

    def close(self) -> None:
        with contextlib.suppress(PGBedError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
