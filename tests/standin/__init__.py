"""A faithful stand-in of a Zato server for the end-to-end tests and the local demo.

The runtime (./runtime: the `zato` CLI, the server process, a stub `zato.server.service`) is stdlib only and is
copied into each install by `create_install`; ./harness.py is the Python API tests use. See README.md.
"""

from .harness import (
    FAST_START,
    RUNTIME_DIR,
    SLOW_START,
    SOURCES_STYLES,
    VERSIONS,
    Cluster,
    Install,
    Server,
    create_cluster,
    create_install,
    create_server,
    deployed_services,
    free_port,
    free_ports,
    kill_all_installs,
    max_down_at_once,
    read_events,
    running_cluster,
    sources_file,
)

__all__ = [
    "FAST_START",
    "RUNTIME_DIR",
    "SLOW_START",
    "SOURCES_STYLES",
    "VERSIONS",
    "Cluster",
    "Install",
    "Server",
    "create_cluster",
    "create_install",
    "create_server",
    "deployed_services",
    "free_port",
    "free_ports",
    "kill_all_installs",
    "max_down_at_once",
    "read_events",
    "running_cluster",
    "sources_file",
]
