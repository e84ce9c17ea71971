"""Build Desired/Observed from the compact JSON of a golden planner case (tests/unit/golden/*.json)."""

from __future__ import annotations

from typing import Any

from reconciler.core.state import (
    Desired,
    DesiredCluster,
    LogMark,
    Module,
    ObservedCluster,
    ObservedServer,
    ServerPaths,
    StaticFile,
    StaticTree,
)
from reconciler.manifest.model import Cluster


def _tree(kind: str, t: dict[str, Any]) -> StaticTree:
    """`{"repo": "libs/acme", "target": "/opt/x/acme", "mode": "tree", "files": {rel: sha256}}`"""
    files = {rel: StaticFile(rel, f"{t['repo']}/{rel}", sha, b"") for rel, sha in t["files"].items()}
    return StaticTree(kind, t["repo"], t["target"], t.get("mode", "tree"), files)  # type: ignore[arg-type]


def build(case: dict[str, Any]) -> tuple[Desired, dict[str, ObservedCluster]]:
    """Servers are names (all on host "h") or `{"name", "host"}`; optional `sources`, `source_lines` and `extras`
    (static trees) in a cluster, `static` and `sources_text` in a server's observed state."""
    clusters = []
    observed: dict[str, ObservedCluster] = {}
    for c in case["clusters"]:
        servers = [s if isinstance(s, dict) else {"name": s, "host": "h"} for s in c["servers"]]
        spec = Cluster.model_validate(
            {
                "name": c["name"],
                "zato_version": c.get("zato_version", "3.2"),
                "servers": [{"name": s["name"], "host": s["host"], "path": f"/srv/{s['name']}"} for s in servers],
            }
        )
        modules = {
            name: Module(name, f"services/{name}", sha, "blob-" + sha, b"")
            for name, sha in sorted(c.get("modules", {}).items())
        }
        clusters.append(DesiredCluster(
            spec, modules, tuple(_tree("source", t) for t in c.get("sources", ())),
            tuple(_tree("extra", t) for t in c.get("extras", ())), tuple(c.get("source_lines", ()))))
        obs = []
        for s in spec.servers:
            o = c["observed"][s.name]
            paths = ServerPaths(s.path, f"{s.path}/pickup", f"{s.path}/work", f"{s.path}/work/current",
                                f"{s.path}/logs/server.log", f"{s.path}/config/repo/service-sources.txt",
                                "0.0.0.0:17010")
            obs.append(ObservedServer(c["name"], s, paths, o.get("deployed", {}), o.get("pickup", {}),
                                      LogMark(paths.log, 0, 1), o.get("running", True),
                                      o.get("zato_version", c.get("zato_version", "3.2")),
                                      static=o.get("static", {}),
                                      sources_text=o.get("sources_text", "./work/hot-deploy/current\n"),
                                      environ=o.get("environ", "read"), overrides=tuple(o.get("overrides", ())),
                                      extra_pickup=tuple(o.get("extra_pickup", ())),
                                      ipc_port_start=o.get("ipc_port_start", "")))
        observed[c["name"]] = ObservedCluster(c["name"], tuple(obs))
    from reconciler.manifest.model import Manifest

    manifest = Manifest.model_validate({"version": 1, "clusters": [d.spec.model_dump() for d in clusters]})
    return Desired("c0ffee", manifest, tuple(clusters)), observed
