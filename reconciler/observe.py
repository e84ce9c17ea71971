"""Observe a server in one round trip: a fixed POSIX sh script plus a pure parser (pyinfra's fact pattern).

The script runs with the server directory as its only argument (passed as a positional parameter, never pasted
into the script). It reads server.conf, resolves the pickup and work dirs the way Zato does (relative to
config/repo, `~` expanded, absolute paths as given), and prints sections: the .zato-info file, the resolved paths,
the sha256 of each `*.py` in the deployed dir and the pickup dir, the log's size and inode, and whether the pidfile
names a live process. Only sh, awk (mawk or gawk), GNU find, sort and sha256sum are needed on the server.
`parse_observation` turns the output into an `ObservedServer` and is unit-tested on captured output.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from reconciler.errors import ReconcilerError, Stalled, Unreachable
from reconciler.transport import Transport, script_argv
from reconciler.zato.profiles import profile

if TYPE_CHECKING:  # the state types load pydantic (the manifest model): an apply that finds nothing to do never
    # needs them, only the script and `fingerprint` (engine/noop.py), so they are imported where they are made
    from reconciler.core.state import DesiredCluster, ObservedCluster, ObservedServer
    from reconciler.manifest.model import Cluster, Server

#: the first awk of the observe script: reads .zato-info, server.conf, the server process's environment
#: (NUL-separated `K=V`, read with RS set to NUL) and pickup.conf, in that order; prints the resolved pickup dir
#: and deployed dir (one a line, for the script), then the @@info, @@paths, @@overrides, @@extra and @@sources
#: sections (and @@no-eol when service-sources.txt does not end in a newline). Every rule is Zato's: a setting
#: from the environment wins over server.conf's, relative paths resolve against config/repo (the work dir's own
#: children against the work dir), `~` is $HOME.
SETTINGS_AWK = r"""
function trim(s) { gsub(/^[ \t]+|[ \t\r]+$/, "", s); return s }
function res(v, base) {
  if (v == "~") return home
  if (substr(v, 1, 2) == "~/") return home "/" substr(v, 3)
  if (substr(v, 1, 1) == "/") return v
  return base "/" v
}
function ini(sec, key) { return ((sec, key) in conf) ? conf[sec, key] : "" }
function setting(sec, key,   v) {
  v = env["Zato_Config_Server_server__conf_" sec "_" key]
  return v != "" ? v : ini("[" sec "]", key)
}
BEGIN { home = ENVIRON["HOME"]; dir = ENVIRON["ZG_DIR"]; repo = dir "/config/repo"; ipc = ""; nx = 0 }
FILENAME == ".zato-info" { info = info $0 "\n"; next }
FILENAME == "config/repo/server.conf" {
  if (!ipcset) {
    # whichever section holds it: a quickstart gives every server of the host the same one
    split($0, f, "=")
    if (f[1] ~ /^[ \t]*ipc_port_start[ \t]*$/) { ipc = trim(f[2]); ipcset = 1 }
  }
  if ($0 ~ /^[ \t]*\[/) { x = $0; gsub(/[ \t\r]/, "", x); sec = x; next }
  i = index($0, "="); if (i == 0) next
  key = trim(substr($0, 1, i - 1))
  if (!((sec, key) in conf)) conf[sec, key] = trim(substr($0, i + 1))
  next
}
FILENAME == "config/repo/pickup.conf" {
  if ($0 ~ /^[ \t]*\[/) { x = $0; gsub(/[ \t\r\[\]]/, "", x); psec = x; next }
  if (psec !~ /^hot-deploy\.user\./) next
  i = index($0, "="); if (i == 0) next
  if (trim(substr($0, 1, i - 1)) == "pickup_from") extra[++nx] = "conf " psec " " trim(substr($0, i + 1))
  next
}
{ i = index($0, "="); if (i > 1 && !(substr($0, 1, i - 1) in env)) env[substr($0, 1, i - 1)] = substr($0, i + 1) }
END {
  work = res(setting("main", "work_dir"), repo)
  pickup = res(setting("hot_deploy", "pickup_dir"), repo)
  cwd = setting("hot_deploy", "current_work_dir"); if (cwd == "") cwd = "./hot-deploy/current"
  current = res(cwd, work)
  ss = setting("main", "service_sources"); if (ss == "") ss = "./service-sources.txt"
  sources = res(ss, repo)
  print pickup; print current
  printf "@@info\n%s\n", info
  print "@@paths"
  print "server_dir=" dir; print "work_dir=" work; print "pickup_dir=" pickup; print "current_dir=" current
  print "service_sources=" sources
  print "gunicorn_bind=" ini("[main]", "gunicorn_bind"); print "bind=" ini("[main]", "bind")
  print "environ=" ENVIRON["ZG_ENVR"]; print "ipc_port_start=" ipc
  print "@@overrides"
  n = split("main.work_dir hot_deploy.pickup_dir hot_deploy.current_work_dir main.service_sources", ks, " ")
  for (k = 1; k <= n; k++) {
    j = index(ks[k], ".")
    if (env["Zato_Config_Server_server__conf_" substr(ks[k], 1, j - 1) "_" substr(ks[k], j + 1)] != "") print ks[k]
  }
  print "@@extra"
  n = split("Zato_Hot_Deploy_Dir ZATO_HOT_DEPLOY_DIR Zato_Project_Root", ks, " ")
  for (k = 1; k <= n; k++) if (env[ks[k]] != "") print "env " ks[k] " " env[ks[k]]
  for (k = 1; k <= nx; k++) print extra[k]
  # awk ends every line it prints, so a file without a final newline (as a fresh quickstart leaves it) cannot
  # glue our next marker to its last entry; the file is read whole (RS: a byte no text file holds) to tell
  # whether it had one (@@no-eol)
  RS = "\001"; all = ""; n = 0
  while ((r = (getline part < sources)) > 0) all = all (n++ ? "\001" : "") part
  if (r < 0 && n == 0) { print "@@sources missing"; exit }
  print "@@sources present"
  m = split(all, ls, "\n")
  for (k = 1; k <= m; k++) if (k < m || ls[k] != "") print "|" ls[k]
  if (all != "" && substr(all, length(all)) != "\n") print "@@no-eol"
}
"""

#: the second awk: joins the listing of every file to hash with the server's hash cache. The listing comes in
#: groups: a line `G<TAB>kind<TAB>root<TAB>section` (kind: current, pickup, file, flat or tree), then one line per
#: file, `inode size mtime ctime<TAB>path under root` (`find -printf`). A file whose inode, size, mtime and ctime
#: all match its cached entry is not read again. When some file is not vouched for, its path goes to stderr, nothing
#: to stdout, and awk exits 3; run again with their `sha256sum` lines after `@@hashed`, it goes on. It prints the
#: @@static sections and @@log on stdout, in sha256sum's format, and the pickup and deployed dirs' listing on stderr
#: as `kind sha256  name` lines (the script answers that one with `@@same` when it is the listing the reconciler
#: expects). With ZG_MODE=rw it writes the cache anew (exit 4 if that failed). Only files whose ctime is more than
#: 2 s older than the listing are cached: a second write within the same clock tick as the one we hashed could
#: otherwise leave every stat field as it was, and nobody can set a file's ctime back. ZG_NOW (seconds) stands in
#: for the server's clock in tests.
JOIN_AWK = r"""
BEGIN {
  FS = "\t"; cf = ENVIRON["ZG_CACHE"]; tmp = ENVIRON["ZG_TMP"]
  srand(); now = ENVIRON["ZG_NOW"] != "" ? ENVIRON["ZG_NOW"] + 0 : srand(); ok = 0; root = ""
  while ((r = (getline line < cf)) > 0) {
    if (line == "@@end") { ok = 1; break }
    if (substr(line, 1, 6) == "@@dir ") { root = substr(line, 7); continue }
    if (split(line, f, "\t") == 3 && length(f[2]) == 64 && f[2] !~ /[^0-9a-f]/) {
      cst[root, f[3]] = f[1]; csha[root, f[3]] = f[2]
    }
  }
  if (r >= 0) close(cf)
  if (!ok) { split("", cst); split("", csha) }
}
hashed {
  # the lines of sha256sum; a leading backslash marks an escaped odd file name: not ours, never reported
  if (substr($0, 1, 1) != "\\" && index($0, "  ") == 65) sha[substr($0, 67)] = substr($0, 1, 64)
  next
}
$0 == "@@hashed" { hashed = 1; next }
$1 == "G" && NF == 4 { g++; kind[g] = $2; groot[g] = $3; head[g] = $4; first[g] = e + 1; next }
$1 == "L" && NF == 2 { logline = $2; next }
NF == 2 && g { e++; grp[e] = g; st[e] = $1; rel[e] = $2 }
END {
  miss = 0
  for (i = 1; i <= e; i++) {
    p = groot[grp[i]] rel[i]
    if (p in sha) { h[i] = sha[p]; continue }
    k = groot[grp[i]] SUBSEP rel[i]
    if ((k in cst) && cst[k] == st[i]) h[i] = csha[k]
    else if (!hashed) { print p > "/dev/stderr"; miss = 1 }
  }
  if (miss) exit 3
  for (j = 1; j <= g; j++) {
    listed = kind[j] == "current" || kind[j] == "pickup"
    if (!listed) print "@@" head[j]
    last = j < g ? first[j + 1] - 1 : e
    for (i = first[j]; i <= last; i++) {
      if (!(i in h) || index(rel[i], "\\")) continue
      if (listed) { print kind[j] " " h[i] "  " rel[i] > "/dev/stderr"; continue }
      print h[i] "  " (kind[j] == "tree" ? "./" rel[i] : kind[j] == "file" ? groot[j] : rel[i])
    }
  }
  print "@@log"; print (logline == "" ? "0 0" : logline)
  if (!hashed || ENVIRON["ZG_MODE"] != "rw") exit
  for (j = 1; j <= g; j++) {
    print "@@dir " groot[j] > tmp
    last = j < g ? first[j + 1] - 1 : e
    for (i = first[j]; i <= last; i++) {
      split(st[i], s, " ")
      if ((i in h) && s[4] + 2 < now) print st[i] "\t" h[i] "\t" rel[i] > tmp
    }
  }
  print "@@end" > tmp
  if (close(tmp) != 0) exit 4
}
"""

#: the server's hash cache, in its server dir (next to the cluster lease): `@@dir ROOT`, then
#: `inode size mtime ctime<TAB>sha256<TAB>path under ROOT` a line, and `@@end` last (a cut-off file is ignored whole)
HASH_CACHE = "zato-gitops.hashes"

_OBSERVE_BODY = r"""
d=$1; cache=$2; lists=$3; want=$4; shift 4
cd -P -- "$d" 2>/dev/null || { echo "@@fatal no-dir"; exit 0; }
[ -f .zato-info ] || { echo "@@fatal not-zato"; exit 0; }
[ -f config/repo/server.conf ] || { echo "@@fatal no-conf"; exit 0; }
nl='
'
# the running server's process: its environment can override server.conf (Zato_Config_Server_...)
p=; state=none; envr=none; ev=/dev/null
if [ -s pidfile ]; then
  IFS= read -r p < pidfile || :
  case $p in
    ''|*[!0-9]*) state="dead $p" ;;
    *) if [ -d "/proc/$p" ]; then state="running $p"; else state="dead $p"; fi ;;
  esac
fi
case $state in
  running*) if [ -r "/proc/$p/environ" ]; then envr=read; ev=/proc/$p/environ; else envr=unreadable; fi ;;
esac
pc=/dev/null; [ -f config/repo/pickup.conf ] && pc=config/repo/pickup.conf
settings() {
  ZG_DIR=$PWD ZG_ENVR=$1 LC_ALL=C awk "$ZG_SETTINGS" .zato-info config/repo/server.conf RS='\0' "$2" RS='\n' "$pc"
}
# a server that stopped since the check above takes its environ with it: read the rest without it
out=$(settings "$envr" "$ev" 2>/dev/null) || [ "$ev" = /dev/null ] || out=$(settings unreadable /dev/null 2>/dev/null)
pickup=${out%%"$nl"*}; out=${out#*"$nl"}
current=${out%%"$nl"*}; out=${out#*"$nl"}
printf '%s\n' "$out"
echo "@@pid"; echo "$state"
list() {
  st='%i %s %T@ %C@\t'
  for spec in "$@"; do
    mode=${spec%%:*}; sp=${spec#*:}
    case $mode in
      file) printf 'G\tfile\t%s\tstatic %s\n' "$sp" "$spec"
            find -L "$sp" -maxdepth 0 -type f -printf "$st\n" ;;
      flat) printf 'G\tflat\t%s/\tstatic %s\n' "$sp" "$spec"
            find "$sp/" -maxdepth 1 -name '*.py' ! -name '.*' -type f -printf "$st%P\n" ;;
      tree) printf 'G\ttree\t%s/\tstatic %s\n' "$sp" "$spec"
            find "$sp/" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -printf "$st%P\n" ;;
    esac
  done
  # the log's size and inode come with the last dir's listing (one find fewer)
  k=pickup; last=$pickup
  if [ "$lists" = both ]; then
    printf 'G\tpickup\t%s/\tpickup\n' "$pickup"
    find "$pickup/" -maxdepth 1 -name '*.py' ! -name '.*' -type f -printf "$st%P\n"
    k=current; last=$current
  fi
  printf 'G\t%s\t%s/\t%s\n' "$k" "$last" "$k"
  find logs/server.log "$last/" -maxdepth 1 \( -path logs/server.log -printf 'L\t%s %i\n' \) -o \
    \( -name '*.py' ! -name '.*' -type f -printf "$st%P\n" \)
}
listing=$(list "$@" 2>/dev/null)
c=$PWD/zato-gitops.hashes
[ "$cache" = rw ] && [ ! -w . ] && cache=ro
[ "$cache" = off ] && c=/dev/null
export ZG_CACHE="$c" ZG_MODE="$cache" ZG_TMP="$c.$$"
# the sections go straight to stdout; the pickup and deployed dirs' listing (or what the cache cannot vouch for,
# to be hashed: exit 3) comes back on stderr
exec 3>&1
lst=$(printf '%s\n' "$listing" | LC_ALL=C awk "$ZG_JOIN" 2>&1 >&3); rc=$?
if [ "$rc" = 3 ]; then
  hashed=$(printf '%s\n' "$lst" | tr '\n' '\0' | xargs -0 sha256sum -- 2>/dev/null)
  lst=$(printf '%s\n@@hashed\n%s\n' "$listing" "$hashed" | LC_ALL=C awk "$ZG_JOIN" 2>&1 >&3); rc=$?
  if [ "$cache" = rw ]; then
    # a cache written by a run killed mid-way is left as `zato-gitops.hashes.PID`: the next writer removes it
    for f in "$c".*; do [ -f "$f" ] && [ "$f" != "$c.$$" ] && rm -f -- "$f"; done
    if [ "$rc" = 0 ]; then mv -f -- "$c.$$" "$c" 2>/dev/null || rm -f -- "$c.$$"; else rm -f -- "$c.$$"; fi
  fi
  [ "$rc" = 4 ] && rc=0
fi
[ "$rc" = 0 ] || { echo "@@fatal hashing"; exit 0; }
# the reconciler sent the digest of the listing it expects (its `kind sha256  name` lines sorted bytewise):
# `@@same` if this is it, else the listing in full
if [ "$want" != - ] && [ "$(printf '%s\n' "$lst" | LC_ALL=C sort | sha256sum)" = "$want  -" ]; then echo "@@same"
else echo "@@listing"; printf '%s\n' "$lst"; fi
echo "@@end"
"""

assert "'" not in SETTINGS_AWK + JOIN_AWK  # each travels inside a single-quoted sh string
assert f"c=$PWD/{HASH_CACHE}\n" in _OBSERVE_BODY
OBSERVE_SCRIPT = f"ZG_SETTINGS='{SETTINGS_AWK}'\nZG_JOIN='{JOIN_AWK}'\n{_OBSERVE_BODY}"


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
        # interned: 50 servers running the same 5,000 modules hold one copy of each name and digest, not 50
        result[sys.intern(rel(path))] = sys.intern(digest)
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
    "hashing": "the files under {path} could not be hashed (awk failed on the server)",
}


#: the listings observe may be told to expect, by section: what the deployed dir (`current`) and the pickup dir
#: (`pickup`) held, file name -> sha256
Expected = Mapping[str, Mapping[str, str]]
LISTINGS = ("current", "pickup")


def listed(deployed_in: str) -> tuple[str, ...]:
    """The listings observe returns: the pickup dir always; the deployed dir where it is its own
    (`work/hot-deploy/current`, 3.2 and 3.3; on 4.1 the pickup dir is the deployed dir)."""
    return LISTINGS if deployed_in == "work" else ("pickup",)


def listing_digest(listing: Expected) -> str:
    """What the observe script compares its listing with: the sha256 of its `kind sha256  name` lines sorted
    bytewise (`LC_ALL=C sort`; for UTF-8 names Python's code point order is the same), newline-terminated."""
    lines = sorted(f"{kind} {digest}  {name}" for kind, files in listing.items() for name, digest in files.items())
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def _listing(lines: list[str]) -> dict[str, list[str]]:
    """`kind sha256  name` lines -> {kind: sha256sum-style lines}."""
    out: dict[str, list[str]] = {}
    for line in lines:
        kind, _, rest = line.partition(" ")
        out.setdefault(kind, []).append(rest)
    return out


def _sources_text(section: list[str], no_eol: bool) -> str | None:
    """service-sources.txt byte for byte (CRLF and a missing final newline kept): the plan compares it whole."""
    if section[:1] != ["present"]:
        return None
    text = "".join(line[1:] + "\n" for line in section[1:] if line.startswith("|"))
    return text[:-1] if no_eol and text.endswith("\n") else text


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


def parse_observation(cluster: Cluster, server: Server, text: str, expected: Expected | None = None) -> ObservedServer:
    """The pure half of observe: script output -> ObservedServer. Raises Stalled for a server dir that is wrong.
    A listing the script answered with `@@same` is the one in `expected` (the script checked its digest)."""
    from reconciler.core.state import LogMark, ObservedServer, ServerPaths

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
    sources_text = _sources_text(sec.get("sources") or ["missing"], "no-eol" in sec)
    if "same" in sec and expected:
        current, pickup = dict(expected.get("current", {})), dict(expected.get("pickup", {}))
    else:
        listing = _listing(sec.get("listing", []))
        current, pickup = _hashes(listing.get("current", [])), _hashes(listing.get("pickup", []))
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


#: how observe uses the server's hash cache: `rw` (apply: read it, and write it when something was hashed),
#: `ro` (plan, status: read it, change nothing on the server), `off` (hash every file)
CacheMode = Literal["rw", "ro", "off"]


def fingerprint(text: str) -> str:
    """What a server answered, less what moves while nothing changes (the log's size): two answers with the same
    fingerprint observe the same server state, so they give the same plan (engine/noop.py relies on it)."""
    lines = text.split("\n")
    if "@@log" in lines:
        i = lines.index("@@log")
        del lines[i : i + 2]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """What asking one server again would take and give while nothing changes on it: the observe script's
    arguments (expecting the listings just seen) and the fingerprint of its answer (`@@same` for them)."""

    args: tuple[str, ...]
    fingerprint: str


def _answer(args: tuple[str, ...], text: str, seen: Expected) -> Answer:
    """The Answer for a round trip that sent `args` and got `text`, whose listings were `seen`."""
    if "\n@@listing\n" in text:  # sent in full: the same question next time expects what it listed
        start, end = text.rindex("\n@@listing\n"), text.rindex("\n@@end")
        text = text[:start] + "\n@@same" + text[end:]
        args = (*args[:3], listing_digest(seen), *args[4:])
    return Answer(args, fingerprint(text))


def observe_args(
    server_path: str, zato_version: str, cache: CacheMode, expected: Expected | None, specs: Sequence[str]
) -> tuple[str, ...]:
    """The observe script's arguments: the server dir, the cache mode, the listings it returns, the digest of what
    we expect them to hold (answered `@@same` when right) and the static trees to hash."""
    kinds = listed(profile(zato_version).deployed_in)
    want = "-"
    if expected and all(k in expected for k in kinds):
        want = listing_digest({k: expected[k] for k in kinds})
    return (server_path, cache, "both" if len(kinds) == 2 else "pickup", want, *specs)


def run_observe(transport: Transport, args: Sequence[str], what: str, timeout: float) -> str:
    """One round trip: the observe script with `args`; its output, or Unreachable naming `what` (cluster/server)."""
    result = transport.run(script_argv(OBSERVE_SCRIPT, *args), timeout=timeout)
    if not result.ok:
        raise Unreachable(f"{what}: observing failed (exit {result.exit_code}): {result.err_text()[:300]}")
    return result.text()


def observe_server(
    transport: Transport,
    cluster: Cluster,
    server: Server,
    timeout: float = 60.0,
    desired: DesiredCluster | None = None,
    cache: CacheMode = "ro",
    expected: Expected | None = None,
    answers: dict[tuple[str, str], Answer] | None = None,
) -> ObservedServer:
    """Observe one server in one round trip; `answers` (when given) keeps what was asked and answered."""
    args = observe_args(server.path, cluster.zato_version, cache, expected, static_specs(desired, server.path))
    text = run_observe(transport, args, f"{cluster.name}/{server.name}", timeout)
    observed = parse_observation(cluster, server, text, expected)
    if answers is not None:
        kinds = listed(profile(cluster.zato_version).deployed_in)
        seen = {k: observed.deployed if k == "current" else observed.pickup for k in kinds}
        answers[(cluster.name, server.name)] = _answer(args, text, seen)
    return observed


ObserveError = tuple[str, str, ReconcilerError]


def observe_all(
    clusters: Sequence[DesiredCluster],
    connect: Callable[[Cluster, Server], Transport],
    *,
    parallelism: int = 16,
    timeout: float = 60.0,
    cache: CacheMode = "ro",
    expect: Callable[[DesiredCluster, Server], Expected | None] = lambda _d, _s: None,
    answers: dict[tuple[str, str], Answer] | None = None,
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
            results[(c.name, s.name)] = observe_server(connect(c, s), c, s, timeout, d, cache, expect(d, s), answers)
        except ReconcilerError as e:
            failures.append((c.name, s.name, e))

    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(jobs)))) as pool:
        list(pool.map(one, jobs))
    from reconciler.core.state import ObservedCluster

    failed = {c for c, _, _ in failures}
    observed = {
        d.name: ObservedCluster(d.name, tuple(results[(d.name, s.name)] for s in d.spec.servers))
        for d in clusters
        if d.name not in failed
    }
    return observed, failures
