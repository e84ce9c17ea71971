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
)
from reconciler.manifest.model import Cluster


def build(case: dict[str, Any]) -> tuple[Desired, dict[str, ObservedCluster]]:
    clusters = []
    observed: dict[str, ObservedCluster] = {}
    for c in case["clusters"]:
        spec = Cluster.model_validate(
            {
                "name": c["name"],
                "zato_version": c.get("zato_version", "3.2"),
                "servers": [{"name": s, "host": "h", "path": f"/srv/{s}"} for s in c["servers"]],
            }
        )
        modules = {
            name: Module(name, f"services/{name}", sha, "blob-" + sha, b"")
            for name, sha in sorted(c["modules"].items())
        }
        clusters.append(DesiredCluster(spec, modules))
        obs = []
        for s in spec.servers:
            o = c["observed"][s.name]
            paths = ServerPaths(s.path, f"{s.path}/pickup", f"{s.path}/work", f"{s.path}/work/current",
                                f"{s.path}/logs/server.log", f"{s.path}/config/repo/service-sources.txt",
                                "0.0.0.0:17010")
            obs.append(ObservedServer(c["name"], s, paths, o.get("deployed", {}), o.get("pickup", {}),
                                      LogMark(paths.log, 0, 1), o.get("running", True),
                                      o.get("zato_version", c.get("zato_version", "3.2"))))
        observed[c["name"]] = ObservedCluster(c["name"], tuple(obs))
    from reconciler.manifest.model import Manifest

    manifest = Manifest.model_validate({"version": 1, "clusters": [d.spec.model_dump() for d in clusters]})
    return Desired("c0ffee", manifest, tuple(clusters)), observed
