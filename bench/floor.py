"""The raw floor, as a command of its own: one paramiko connection per sshd host, one `sha256sum` exec per server.

Not a product: no git, no manifest, no plan, no staging, no confirmation, no record. It hashes exactly the files
zato-gitops's observe hashes (the deployed dir, and on 3.2 the pickup dir too), so the ratio of the two is what
zato-gitops adds around the work that cannot be avoided. With `--put FILE`, it then writes that one file into the
first server's pickup dir over SFTP (the least a one-module change needs). Run by bench/scale.py with a JSON spec:

    {"user": ..., "key": ..., "known_hosts": ..., "servers": [{"host": ..., "port": ..., "dirs": [...],
     "pickup": ...}, ...]}
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec", type=Path)
    parser.add_argument("--put", type=Path, help="a file to write into the first server's pickup dir")
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    clients: dict[tuple[str, int], paramiko.SSHClient] = {}
    lock = threading.Lock()

    def client(host: str, port: int) -> paramiko.SSHClient:
        with lock:
            if (host, port) not in clients:
                sock = socket.create_connection((host, port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c = paramiko.SSHClient()
                c.load_host_keys(spec["known_hosts"])
                c.set_missing_host_key_policy(paramiko.RejectPolicy())
                c.connect(host, port, spec["user"], key_filename=spec["key"], sock=sock, look_for_keys=False,
                          allow_agent=False)
                clients[(host, port)] = c
            return clients[(host, port)]

    def one(server: dict[str, object]) -> int:
        c = client(str(server["host"]), int(server["port"]))  # type: ignore[call-overload]
        globs = " ".join(f"{shlex.quote(str(d))}/*.py" for d in server["dirs"])  # type: ignore[attr-defined]
        _, out, _ = c.exec_command(f"sha256sum -- {globs} 2>/dev/null")
        return len(out.read().splitlines())

    # at most 8 commands at once per connection (sshd's MaxSessions is 10), as zato-gitops does
    workers = max(1, min(len(spec["servers"]), 8 * len({(s["host"], s["port"]) for s in spec["servers"]})))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = sum(pool.map(one, spec["servers"]))
    if args.put:
        first = spec["servers"][0]
        sftp = client(first["host"], first["port"]).open_sftp()
        with sftp.open(f"{first['pickup']}/{args.put.name}", "wb") as f:
            f.write(args.put.read_bytes())
        sftp.close()
    for c in clients.values():
        c.close()
    print(hashed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
