"""`python -m tests.standin up|down ROOT`: a stand-in Zato cluster for the local demo, left running until `down`.

Why it exists: the demo needs servers that outlive one Python process, so `up` prints where everything is (JSON)
and leaves the servers running, and `down` kills every stand-in server of `<ROOT>/install` afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.standin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create and start a cluster in ROOT")
    up.add_argument("root", type=Path)
    up.add_argument("-n", "--servers", type=int, default=3)
    up.add_argument("--version", choices=harness.VERSIONS, default="3.2")
    up.add_argument("--cluster", default="cluster1")
    up.add_argument("--python", default="python3")
    down = sub.add_parser("down", help="kill every stand-in server of ROOT/install")
    down.add_argument("root", type=Path)
    args = parser.parse_args(argv)

    if args.command == "down":
        install = harness.Install(args.root.resolve() / "install")
        print(json.dumps({"killed": install.kill_all()}))
        return 0

    cluster = harness.create_cluster(
        args.root, args.servers, version=args.version, cluster=args.cluster, python=args.python
    )
    try:
        cluster.start_all()
    except BaseException:
        cluster.cleanup()
        raise
    harness._installs.remove(cluster.install)  # keep the servers running after we exit
    print(
        json.dumps(
            {
                "zato": str(cluster.install.zato),
                "odb": str(cluster.odb),
                "events": str(cluster.events_path),
                "servers": [
                    {"name": s.name, "path": str(s.path), "port": s.port, "pickup_dir": str(s.pickup_dir)}
                    for s in cluster
                ],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
