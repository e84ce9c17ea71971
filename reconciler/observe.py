"""Observe a server in one round trip: a fixed POSIX sh script plus a pure parser (pyinfra's fact pattern).

The script runs with the server directory as its only argument (passed as a positional parameter, never pasted
into the script). It reads server.conf, resolves the pickup and work dirs the way Zato does (relative to
config/repo, `~` expanded, absolute paths as given), and prints sections: the .zato-info file, the resolved paths,
the sha256 of each `*.py` in the deployed dir and the pickup dir, the log's size and inode, and whether the pidfile
names a live process. Only sh, awk, stat and sha256sum are needed on the server. `parse_observation` turns the
output into an `ObservedServer` and is unit-tested on captured output.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from reconciler.core.state import DesiredCluster, LogMark, ObservedCluster, ObservedServer, ServerPaths
from reconciler.errors import ReconcilerError, Stalled, Unreachable
from reconciler.manifest.model import Cluster, Server
from reconciler.transport import Transport, script_argv
from reconciler.zato.profiles import profile

OBSERVE_SCRIPT = r"""
d=$1
if ! cd "$d" 2>/dev/null; then echo "@@fatal no-dir"; exit 0; fi
if [ ! -f .zato-info ]; then echo "@@fatal not-zato"; exit 0; fi
if [ ! -f config/repo/server.conf ]; then echo "@@fatal no-conf"; exit 0; fi
ini() {
  awk -v s="[$1]" -v k="$2" '
    /^[ \t]*\[/ { x = $0; gsub(/[ \t\r]/, "", x); sec = x; next }
    sec == s {
      i = index($0, "="); if (i == 0) next
      key = substr($0, 1, i - 1); gsub(/^[ \t]+|[ \t\r]+$/, "", key)
      if (key == k) { v = substr($0, i + 1); gsub(/^[ \t]+|[ \t\r]+$/, "", v); print v; exit }
    }' config/repo/server.conf
}
res() {
  case $1 in
    "~") printf '%s\n' "$HOME" ;;
    "~/"*) printf '%s/%s\n' "$HOME" "${1#??}" ;;
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$2" "$1" ;;
  esac
}
repo=$(pwd -P)/config/repo
# the running server's process: its environment can override server.conf (Zato_Config_Server_...)
p=; state=none; envr=none
if [ -s pidfile ]; then
  p=$(cat pidfile)
  if [ -d "/proc/$p" ]; then state="running $p"; else state="dead $p"; fi
fi
case $state in running*) if [ -r "/proc/$p/environ" ]; then envr=read; else envr=unreadable; fi ;; esac
envv() {
  [ "$envr" = read ] || return 0
  tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null |
    awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }'
}
setting() {
  v=$(envv "Zato_Config_Server_server__conf_$1_$2")
  if [ -n "$v" ]; then printf '%s\n' "$v"; else ini "$1" "$2"; fi
}
work=$(res "$(setting main work_dir)" "$repo")
pickup=$(res "$(setting hot_deploy pickup_dir)" "$repo")
cwd=$(setting hot_deploy current_work_dir); [ -n "$cwd" ] || cwd=./hot-deploy/current
current=$(res "$cwd" "$work")
ss=$(setting main service_sources); [ -n "$ss" ] || ss=./service-sources.txt
echo "@@info"; cat .zato-info; echo
echo "@@paths"
echo "server_dir=$(pwd -P)"
echo "work_dir=$work"
echo "pickup_dir=$pickup"
echo "current_dir=$current"
echo "service_sources=$(res "$ss" "$repo")"
echo "gunicorn_bind=$(ini main gunicorn_bind)"
echo "bind=$(ini main bind)"
echo "environ=$envr"
# whichever section holds it: a quickstart gives every server of the host the same one
ipc=$(awk -F= '$1 ~ /^[ \t]*ipc_port_start[ \t]*$/ { v = $2; gsub(/^[ \t]+|[ \t\r]+$/, "", v); print v; exit }' \
  config/repo/server.conf)
echo "ipc_port_start=$ipc"
echo "@@overrides"
for k in main.work_dir hot_deploy.pickup_dir hot_deploy.current_work_dir main.service_sources; do
  [ -n "$(envv "Zato_Config_Server_server__conf_${k%%.*}_${k#*.}")" ] && echo "$k"
done
echo "@@extra"
for k in Zato_Hot_Deploy_Dir ZATO_HOT_DEPLOY_DIR Zato_Project_Root; do
  v=$(envv "$k"); [ -n "$v" ] && printf 'env %s %s\n' "$k" "$v"
done
if [ -f config/repo/pickup.conf ]; then
  awk '
    /^[ \t]*\[/ { x = $0; gsub(/[ \t\r\[\]]/, "", x); sec = x; next }
    sec ~ /^hot-deploy\.user\./ {
      i = index($0, "="); if (i == 0) next
      key = substr($0, 1, i - 1); gsub(/^[ \t]+|[ \t\r]+$/, "", key)
      if (key == "pickup_from") { v = substr($0, i + 1); gsub(/^[ \t]+|[ \t\r]+$/, "", v); print "conf " sec " " v }
    }' config/repo/pickup.conf
fi
hashes() {
  [ -d "$1" ] || return 0
  find "$1" -maxdepth 1 -name '*.py' ! -name '.*' -type f -exec sha256sum -- {} + 2>/dev/null
  return 0
}
echo "@@current"; hashes "$current"
echo "@@pickup"; hashes "$pickup"
echo "@@log"; stat -c '%s %i' logs/server.log 2>/dev/null || echo "0 0"
echo "@@pid"; echo "$state"
sources=$(res "$ss" "$repo")
if [ -f "$sources" ]; then
  # awk ends every line it prints, so a file without a final newline (a fresh quickstart's) cannot glue our
  # next marker to its last entry; whether the file had one is said on the header
  if [ -s "$sources" ] && [ -n "$(tail -c 1 -- "$sources")" ]; then echo "@@sources present no-eol"
  else echo "@@sources present"; fi
  awk '{ print "|" $0 }' "$sources"
else echo "@@sources missing"; fi
shift
for spec in "$@"; do
  mode=${spec%%:*}; p=${spec#*:}
  echo "@@static $spec"
  case $mode in
    file) [ -f "$p" ] && sha256sum -- "$p" ;;
    flat) hashes "$p" ;;
    tree) [ -d "$p" ] && (cd "$p" &&
            find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -exec sha256sum -- {} +) ;;
  esac
done
echo "@@end"
"""


def _sections(text: str) -> dict[str, list[str]]:
    """Output -> {header: lines}. Most headers are one word; `fatal`, `sources` and `static` carry an argument,
    kept as the first line of their section (static sections are keyed by their whole header)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.split("\n"):  # not splitlines(): a CRLF file's `\r` belongs to its lines
        if line.startswith("@@"):
            header = line[2:].strip()
            name, _, arg = header.partition(" ")
            key = header if name == "static" else name
            current = out.setdefault(key, [])
            if arg and name != "static":
                current.append(arg)
            continue
        if current is not None:
            current.append(line)
    return out


def _hashes(lines: list[str], rel: Callable[[str], str] = posixpath.basename) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in lines:
        # sha256sum prints "HASH  PATH"; a leading backslash marks an escaped (odd) file name: not ours, skip it
        if not line or line.startswith("\\") or "  " not in line:
            continue
        digest, path = line.split("  ", 1)
        result[rel(path)] = digest
    return dict(sorted(result.items()))


_REL: dict[str, Callable[[str], str]] = {
    "file": lambda _: "",
    "flat": posixpath.basename,
    "tree": lambda p: p[2:] if p.startswith("./") else p,
}


def static_specs(desired: DesiredCluster | None, server_dir: str) -> list[str]:
    """`mode:absolute-path` of every static tree the observe script must hash on one server."""
    if desired is None:
        return []
    return [f"{t.mode}:{t.path_on(server_dir)}" for t in (*desired.sources, *desired.extras)]


_FATAL = {
    "no-dir": "the server directory {path} does not exist or cannot be entered by {user}",
    "not-zato": "{path} doesn't seem to belong to a Zato component (no .zato-info there)",
    "no-conf": "{path}/config/repo/server.conf is missing",
}


def _sources_text(section: list[str]) -> str | None:
    """service-sources.txt byte for byte (CRLF and a missing final newline kept): the plan compares it whole."""
    head = section[0].split()
    if head[:1] != ["present"]:
        return None
    text = "".join(line[1:] + "\n" for line in section[1:] if line.startswith("|"))
    return text[:-1] if "no-eol" in head[1:] and text.endswith("\n") else text


def _extra_pickup(lines: list[str], server_dir: str) -> tuple[str, ...]:
    """Folders the server watches besides its pickup dir: `Zato_Hot_Deploy_Dir` / `ZATO_HOT_DEPLOY_DIR`
    (`:`-joined), `Zato_Project_Root`, and pickup.conf's `[hot-deploy.user.*] pickup_from`."""
    found: list[str] = []
    for line in lines:
        origin, _, rest = line.partition(" ")
        _name, _, value = rest.partition(" ")
        base = posixpath.join(server_dir, "config", "repo") if origin == "conf" else server_dir
        found += [posixpath.normpath(posixpath.join(base, v.strip())) for v in value.split(":") if v.strip()]
    return tuple(dict.fromkeys(found))


def parse_observation(cluster: Cluster, server: Server, text: str) -> ObservedServer:
    """The pure half of observe: script output -> ObservedServer. Raises Stalled for a server dir that is wrong."""
    sec = _sections(text)
    if "fatal" in sec:
        reason = sec["fatal"][0] if sec["fatal"] else "unknown"
        msg = _FATAL.get(reason, reason).format(path=server.path, user=server.user)
        raise Stalled(f"{cluster.name}/{server.name}: {msg}", hint="check `path` of this server in the manifest")
    if "end" not in sec:
        raise Unreachable(f"{cluster.name}/{server.name}: the observe script's output was cut off")
    kv = dict(line.split("=", 1) for line in sec.get("paths", []) if "=" in line)
    prof = profile(cluster.zato_version)
    try:
        info = json.loads("\n".join(sec.get("info", [])) or "{}")
    except json.JSONDecodeError:
        info = {}
    norm = posixpath.normpath
    pickup_dir = norm(kv.get("pickup_dir", ""))
    current_dir = norm(kv.get("current_dir", ""))
    bind = kv.get(prof.bind_key) or kv.get("gunicorn_bind") or kv.get("bind") or "0.0.0.0:17010"
    server_dir = norm(kv.get("server_dir", server.path))
    paths = ServerPaths(
        server_dir=server_dir,
        pickup_dir=pickup_dir,
        work_dir=norm(kv.get("work_dir", "")),
        deployed_dir=current_dir if prof.deployed_in == "work" else pickup_dir,
        log=posixpath.join(server_dir, "logs", "server.log"),
        service_sources=norm(kv.get("service_sources", "")),
        bind=bind,
    )
    size, inode = (sec.get("log") or ["0 0"])[0].split()[:2]
    pid = (sec.get("pid") or ["none"])[0]
    static: dict[str, dict[str, str]] = {}
    for key, lines in sec.items():
        if key.startswith("static "):
            mode, _, path = key[len("static ") :].partition(":")
            static[path] = _hashes(lines, _REL.get(mode, posixpath.basename))
    sources_text = _sources_text(sec.get("sources") or ["missing"])
    current = _hashes(sec.get("current", []))
    pickup = _hashes(sec.get("pickup", []))
    return ObservedServer(
        cluster=cluster.name,
        server=server,
        paths=paths,
        deployed=current if prof.deployed_in == "work" else pickup,
        pickup=pickup,
        log=LogMark(path=paths.log, size=int(size), inode=int(inode)),
        running=pid.startswith("running"),
        zato_version=str(info.get("version", "")),
        pid=int(pid.split()[1]) if pid.split()[1:] and pid.split()[1].isdigit() else None,
        static=static,
        sources_text=sources_text,
        environ=kv.get("environ", "none"),
        ipc_port_start=kv.get("ipc_port_start", ""),
        overrides=tuple(line for line in sec.get("overrides", []) if line),
        extra_pickup=_extra_pickup([line for line in sec.get("extra", []) if line], server_dir),
    )


def observe_server(
    transport: Transport, cluster: Cluster, server: Server, timeout: float = 60.0, desired: DesiredCluster | None = None
) -> ObservedServer:
    """One round trip: the observe script with the server dir and the static trees to hash."""
    specs = static_specs(desired, server.path)
    result = transport.run(script_argv(OBSERVE_SCRIPT, server.path, *specs), timeout=timeout)
    if not result.ok:
        raise Unreachable(
            f"{cluster.name}/{server.name}: observing failed (exit {result.exit_code}): {result.err_text()[:300]}"
        )
    return parse_observation(cluster, server, result.text())


ObserveError = tuple[str, str, ReconcilerError]


def observe_all(
    clusters: Sequence[DesiredCluster],
    connect: Callable[[Cluster, Server], Transport],
    *,
    parallelism: int = 16,
    timeout: float = 60.0,
) -> tuple[dict[str, ObservedCluster], list[ObserveError]]:
    """Observe every server of every cluster in parallel, one round trip each.

    Returns the observed clusters (only those whose every server answered) and, per failed server,
    (cluster, server, error)."""
    jobs = [(d, s) for d in clusters for s in d.spec.servers]
    results: dict[tuple[str, str], ObservedServer] = {}
    failures: list[ObserveError] = []

    def one(job: tuple[DesiredCluster, Server]) -> None:
        d, s = job
        c = d.spec
        try:
            results[(c.name, s.name)] = observe_server(connect(c, s), c, s, timeout, d)
        except ReconcilerError as e:
            failures.append((c.name, s.name, e))

    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(jobs)))) as pool:
        list(pool.map(one, jobs))
    failed = {c for c, _, _ in failures}
    observed = {
        d.name: ObservedCluster(d.name, tuple(results[(d.name, s.name)] for s in d.spec.servers))
        for d in clusters
        if d.name not in failed
    }
    return observed, failures
