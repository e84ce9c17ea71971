"""Which transport reaches a server: the one place that turns a manifest's (cluster, server) into a Transport.

The engine opens one `Connections` per run and hands `get` to the observe and apply steps. SSH connections are
pooled for the whole run, one per (host, port, user), so every server on a host shares one connection; closing
`Connections` closes them all. The SSH pool (and paramiko with it) is made at the first SSH server, so a run
that reaches only `transport: local` servers, and every command that opens no connection, never imports it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from reconciler.manifest.model import Cluster, Server
from reconciler.transport import SSHOptions, Transport
from reconciler.transport.local import LocalTransport

if TYPE_CHECKING:
    from reconciler.transport.ssh import SSHPool

__all__ = ["Connections", "server_label"]


def server_label(cluster: Cluster, server: Server) -> str:
    """How messages name a server: `server1 (zato@10.0.0.11:22)`, or `server1 (local)`."""
    if cluster.transport == "local":
        return f"{server.name} (local)"
    return f"{server.name} ({server.user}@{server.host}:{server.port})"


class Connections:
    """Transports for one run; use as a context manager so every connection is closed at the end."""

    def __init__(self, options: SSHOptions | None = None, pool: SSHPool | None = None) -> None:
        self.options = options or SSHOptions()
        #: made at the first SSH server, or handed over (`SSHPool.hand_over`) by the no-op memo's check
        self._pool: SSHPool | None = pool
        self._made = threading.Lock()  # observe asks from many threads at once: one pool

    def get(self, cluster: Cluster, server: Server) -> Transport:
        label = server_label(cluster, server)
        if cluster.transport == "local":
            return LocalTransport(label)
        with self._made:
            if self._pool is None:
                from reconciler.transport.ssh import SSHPool

                self._pool = SSHPool(self.options)
            pool = self._pool
        return pool.transport(label, server.host, server.port, server.user)

    def close(self) -> None:
        with self._made:
            pool = self._pool
        if pool is not None:
            pool.close()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
