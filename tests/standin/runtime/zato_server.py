"""The stand-in Zato server process: `python3 zato_server.py SERVER_DIR` (spawned by `zato start`).

Why it exists: the reconciler's end-to-end tests and the local demo need something that installs services the way
a Zato server does (zato-facts.md), without installing Zato. Everything the reconciler can observe is reproduced:
the pidfile, logs/server.log and its exact lines, service-sources.txt at start, the hot-deploy pickup dir and its
per-version watcher (inotify CLOSE_WRITE or 1.1 s snapshots), the cluster fan-out through the shared ODB (a sqlite
file), work/hot-deploy/current, `GET /zato/ping`, SIGTERM handling. What it adds for tests: an events journal
(starting/ready/stopping/stopped), `GET /standin/services`, `<server>/standin-state.json`, and fault injection
through `<server>/standin-faults.json` (see `Faults`).

Stdlib only, run by /usr/bin/python3: this file is copied into every stand-in install.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fnmatch
import hashlib
import http.server
import json
import logging
import logging.handlers
import os
import re
import select
import signal
import sqlite3
import struct
import sys
import threading
import time
import traceback
import types
import uuid

_HERE = os.path.dirname(os.path.abspath(__file__))
_INSTALL_ROOT = os.path.dirname(_HERE)
# zato_extra_paths stands in for the line in site-packages/easy-install.pth of a real install (facts section 5)
sys.path.insert(1, os.path.join(_INSTALL_ROOT, "zato_extra_paths"))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import standin_conf  # noqa: E402
from zato.server.service import Service  # noqa: E402

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(process)d:%(threadName)s - %(name)s:%(lineno)d - %(message)s"
POLL_INTERVAL = 1.1  # 3.3 and 4.1 watchers: directory snapshots every 1.1 s
ODB_POLL_INTERVAL = 0.15  # how often each server looks for new packages in the cluster's ODB

#: how Zato 3.2 writes log levels into server.log (zato-facts.md section 8: `\x1b[1;37mINFO\x1b[0m`)
LEVEL_COLOURS = {"INFO": "\x1b[1;37m", "ERROR": "\x1b[1;31m", "WARNING": "\x1b[1;33m", "DEBUG": "\x1b[1;34m"}
RESET = "\x1b[0m"


class ColourFormatter(logging.Formatter):
    """The levelname between ANSI colour codes, the rest of the line plain."""

    def format(self, record: logging.LogRecord) -> str:
        plain = record.levelname
        colour = LEVEL_COLOURS.get(plain)
        if colour is None:
            return super().format(record)
        record.levelname = f"{colour}{plain}{RESET}"
        try:
            return super().format(record)
        finally:
            record.levelname = plain


log_store = logging.getLogger("zato.server.service.store")
log_parallel = logging.getLogger("zato.server.base.parallel")
log_hot_deploy = logging.getLogger("zato.hot-deploy.create")
log_main = logging.getLogger("zato.server.main")
log_standin = logging.getLogger("zato.standin")

_uncamelify_re = re.compile(r"((?<=[a-z])[A-Z]|(?<!\A)[A-Z](?=[a-z]))")


# ################################################################################################################
# Service names, exactly as Zato derives them


def uncamelify(s: str, separator: str = "-") -> str:
    """`GetCustomer` -> `get-customer` (Zato's own rule, so acronyms split the same way)."""
    return separator.join(elem.lower() for elem in _uncamelify_re.sub(r" \1", s).split())


def service_name(cls: type) -> str:
    """A `name` class attribute, else `<module>.<ClassName uncamelified>` with `_` -> `-` in the module path."""
    name = getattr(cls, "name", None)
    if name:
        return str(name)
    split = uncamelify(f"{cls.__module__}.{cls.__name__}").split(".")
    path, class_name = split[:-1], split[-1]
    path = [elem.replace("_", "-") for elem in path]
    class_name = class_name[1:] if class_name.startswith("-") else class_name
    class_name = class_name.replace(".-", ".").replace("_-", "_")
    return "{}.{}".format(".".join(path), class_name)


# ################################################################################################################
# Fault injection and the events journal


class Faults:
    """Knobs read from `<server>/standin-faults.json` (a JSON object; a missing or broken file means no faults).

    The file is re-read at every use, so hot-deploy knobs can be flipped on a running server; start knobs are
    read at start and `stop_delay`/`ignore_sigterm` when SIGTERM arrives.

    - `fail_start` (true or a message): write the message to stderr and exit 1 before binding, so `zato start`
      exits 18 with `Stderr received from program ...`.
    - `fail_start_times` (int): like `fail_start` for that many starts (counted down in the file), then normal.
    - `start_delay` (seconds): added to `[standin] start_delay` (the time from process start to answering
      /zato/ping; the port listens at once, requests wait in the backlog until then).
    - `die_at_start` (true or a message) / `die_at_start_times` (int, counted down): after `zato start` has
      printed OK, log an ERROR and die while importing, the pidfile left behind (a stale pidfile).
    - `stop_delay` (seconds): overrides `[standin] stop_delay`, the pause between SIGTERM and releasing the port.
    - `ignore_sigterm` (bool): SIGTERM is logged and ignored (only SIGKILL ends the process).
    - `crash_after` (seconds): after `ready`, die with exit code 1 without any clean-up (stale pidfile, no
      `stopping` event; the journal gets `stopped` with `"reason": "crash"`).
    - `mute_hot_deploy` (bool): the server neither picks files up nor applies packages: nothing is ever confirmed.
    - `ignore_pickup` (bool): the watcher ignores the pickup dir, but packages of other servers are still applied.
    - `deaf_to_cluster` (bool): packages published by other servers are ignored (the broken 3.2 fan-out loop).
    - `deploy_delay` (seconds): pause before applying each package (or each 4.1 pick-up): slow confirmations.
    - `stderr_at_start` (string): written to stderr at start while the server still starts normally (so
      `zato start` exits 18 although the server comes up).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str, default: object = None) -> object:
        return self.read().get(key, default)

    def number(self, key: str, default: float = 0.0) -> float:
        try:
            return float(self.get(key, default))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return default


class Journal:
    """Appends `{"ts", "server", "event", ...}` JSON lines to the cluster-shared events file, one write per line."""

    def __init__(self, path: str | None, server: str) -> None:
        self.path = path
        self.server = server

    def append(self, event: str, **extra: object) -> None:
        if not self.path:
            return
        record = {"ts": time.time(), "server": self.server, "event": event, "pid": os.getpid(), **extra}
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


# ################################################################################################################
# The service store: importing modules, keeping what is deployed


class ServiceStore:
    """What this server has deployed: service name -> the module file and its sha256."""

    def __init__(self, on_change: object) -> None:
        self.lock = threading.RLock()
        self.services: dict[str, dict[str, str]] = {}
        self._on_change = on_change

    def import_file(self, path: str) -> tuple[list[str], str | None]:
        """Import a module file in a fresh module. Returns (service names, None) or ([], traceback).

        A failed import changes nothing: the services of the previous version stay deployed.
        """
        mod_name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path, "rb") as f:
                source = f.read()
            code = compile(source, path, "exec")
        except BaseException:
            return [], traceback.format_exc()
        module = types.ModuleType(mod_name)
        module.__file__ = path
        with self.lock:
            previous = sys.modules.get(mod_name)
            sys.modules[mod_name] = module  # so dataclasses and friends can look their module up while it runs
            try:
                exec(code, module.__dict__)
            except BaseException:
                if previous is None:
                    sys.modules.pop(mod_name, None)
                else:
                    sys.modules[mod_name] = previous
                return [], traceback.format_exc()
            return self._register(module, path, hashlib.sha256(source).hexdigest()), None

    def import_dotted(self, mod_name: str) -> tuple[list[str], str | None]:
        """Import a dotted module name through sys.path (2.0 and 3.0 service-sources entries)."""
        import importlib

        with self.lock:
            try:
                module = importlib.import_module(mod_name)
            except BaseException:
                return [], traceback.format_exc()
            path = getattr(module, "__file__", None) or mod_name
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                digest = ""
            return self._register(module, path, digest), None

    def _register(self, module: types.ModuleType, path: str, digest: str) -> list[str]:
        names = []
        for obj in list(vars(module).values()):
            if (
                isinstance(obj, type)
                and issubclass(obj, Service)
                and obj is not Service
                and obj.__module__ == module.__name__
            ):
                name = service_name(obj)
                self.services[name] = {"sha256": digest, "path": path, "module": module.__name__}
                names.append(name)
        if names:
            self._on_change()  # type: ignore[operator]
        return sorted(set(names))

    def snapshot(self) -> dict[str, dict[str, str]]:
        with self.lock:
            return {name: dict(info) for name, info in self.services.items()}


# ################################################################################################################
# The cluster's ODB: a sqlite file every server of the cluster shares


class Odb:
    """The table of hot-deployed packages. The picker inserts, every server (the picker too) polls for new ids."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS deployment_package (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " name TEXT NOT NULL, payload BLOB NOT NULL, server TEXT NOT NULL, ts REAL NOT NULL)"
            )
            # every service the cluster knows, and the package (module file name) it came from
            conn.execute("CREATE TABLE IF NOT EXISTS service (name TEXT PRIMARY KEY, package TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def max_id(self) -> int:
        conn = self._connect()
        try:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deployment_package").fetchone()
            return int(row[0])
        finally:
            conn.close()

    def insert(self, name: str, payload: bytes, server: str) -> int:
        conn = self._connect()
        try:
            with conn:
                cur = conn.execute(
                    "INSERT INTO deployment_package (name, payload, server, ts) VALUES (?, ?, ?, ?)",
                    (name, payload, server, time.time()),
                )
                return int(cur.lastrowid or 0)
        finally:
            conn.close()

    def add_services(self, package: str, names: list[str]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO service (name, package) VALUES (?, ?)", [(n, package) for n in names]
                )
        finally:
            conn.close()

    def extra_services(self, deployed: set[str], current_dir: str) -> dict[str, tuple[list[str], bytes]]:
        """Services the cluster knows that are not in `deployed` and whose module is gone from `current_dir`:
        {package: (service names, its latest payload)}."""
        conn = self._connect()
        try:
            found: dict[str, tuple[list[str], bytes]] = {}
            for name, package in conn.execute("SELECT name, package FROM service ORDER BY name").fetchall():
                if name in deployed or os.path.exists(os.path.join(current_dir, package)):
                    continue
                row = conn.execute(
                    "SELECT payload FROM deployment_package WHERE name = ? ORDER BY id DESC LIMIT 1", (package,)
                ).fetchone()
                if row is not None:
                    found.setdefault(str(package), ([], bytes(row[0])))[0].append(str(name))
            return found
        finally:
            conn.close()

    def after(self, last_id: int) -> list[tuple[int, str, bytes, str]]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, name, payload, server FROM deployment_package WHERE id > ? ORDER BY id", (last_id,)
            ).fetchall()
            return [(int(r[0]), str(r[1]), bytes(r[2]), str(r[3])) for r in rows]
        finally:
            conn.close()


# ################################################################################################################
# Pickup dir watchers


IN_CLOSE_WRITE = 0x00000008
_EVENT = struct.Struct("iIII")


class InotifyWatcher(threading.Thread):
    """2.0, 3.0 and 3.2: inotify on the pickup dir for IN_CLOSE_WRITE only, non-recursive, `*.py` names.

    A file renamed or moved into the dir raises no CLOSE_WRITE, so it is never seen, exactly like Zato 3.2.
    """

    def __init__(self, directory: str, on_file: object, stop: threading.Event) -> None:
        super().__init__(name="HotDeployWatcher", daemon=True)
        self.directory = directory
        self.on_file = on_file
        self.stop_event = stop
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CLOSE_WRITE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {directory}")

    def run(self) -> None:
        while not self.stop_event.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = os.fsdecode(raw.rstrip(b"\0"))
                if mask & IN_CLOSE_WRITE and name and fnmatch.fnmatch(name, "*.py"):
                    self.on_file(os.path.join(self.directory, name))  # type: ignore[operator]


def _snapshot(directory: str, recursive: bool) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every `*.py` file in the dir (and below it, when recursive)."""
    found: dict[str, tuple[int, int]] = {}
    if recursive:
        walker = ((root, files) for root, _dirs, files in os.walk(directory))
    else:
        try:
            walker = iter([(directory, os.listdir(directory))])
        except OSError:
            return found
    for root, files in walker:
        for name in files:
            if not fnmatch.fnmatch(name, "*.py"):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if os.path.isfile(path):
                found[path] = (st.st_size, st.st_mtime_ns)
    return found


class PollingWatcher(threading.Thread):
    """3.3 and 4.1: directory snapshots every 1.1 s; a new path or a changed size/mtime is a pick-up.

    Renames are seen here. The first snapshot is taken when the watcher starts, so files already present are not
    picked up (4.1 re-deploys them itself at start, before the watcher starts).
    """

    def __init__(self, directory: str, on_file: object, stop: threading.Event, recursive: bool) -> None:
        super().__init__(name="HotDeployWatcher", daemon=True)
        self.directory = directory
        self.on_file = on_file
        self.stop_event = stop
        self.recursive = recursive
        self.previous = _snapshot(directory, recursive)

    def run(self) -> None:
        while not self.stop_event.wait(POLL_INTERVAL):
            current = _snapshot(self.directory, self.recursive)
            for path in sorted(current):
                if self.previous.get(path) != current[path]:
                    self.on_file(path)  # type: ignore[operator]
            self.previous = current


# ################################################################################################################
# The HTTP side: /zato/ping and the stand-in's own endpoints


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "Zato"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        app: ZatoServer = self.server.app  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/zato/ping":
            cid = uuid.uuid4().hex[:24]
            if app.conf.version == "4.1":
                self._send(200, {"is_ok": True, "cid": cid})
            else:
                self._send(200, {"pong": "zato", "zato_env": {"result": "ZATO_OK", "cid": cid, "details": ""}})
        elif path == "/standin/services":
            self._send(200, {name: info["sha256"] for name, info in app.store.snapshot().items()})
        elif path == "/standin/state":
            self._send(200, app.state())
        else:
            self._send(404, {"detail": "Not found"})

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Silence BaseHTTPRequestHandler's access log: it writes to stderr."""


class HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client gone before its answer (a TCP health check queued while the server was starting) is not an
        error worth stderr: socketserver would print a traceback there, and `zato start` would take it for a
        failed start."""
        log_standin.debug("Client %s went away", client_address)


# ################################################################################################################
# The server


class StartError(Exception):
    """A start that must fail like Zato's: message on stderr, exit code 1, `zato start` then exits 18."""


class ZatoServer:
    def __init__(self, server_dir: str) -> None:
        self.conf = standin_conf.load(server_dir)
        self.version = self.conf.version
        self.faults = Faults(self.conf.faults_path)
        self.journal = Journal(self.conf.events_journal, self.conf.name)
        self.stop_event = threading.Event()
        self.store = ServiceStore(self._services_changed)
        self.ready = False
        self.http: HTTPServer | None = None
        self.serving = False  # serve_forever runs (shutdown() would wait forever for one that never started)
        self.odb: Odb | None = None
        self.odb_cursor = 0
        self.deploy_lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------------------------

    def setup_logging(self) -> None:
        os.makedirs(os.path.dirname(self.conf.log_path), exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            self.conf.log_path,
            maxBytes=self.conf.log_max_bytes,
            backupCount=self.conf.log_backup_count,
            encoding="utf-8",
        )
        handler.setFormatter(ColourFormatter(LOG_FORMAT) if self.conf.colour else logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    def _services_changed(self) -> None:
        if self.ready:
            self.write_state()

    def write_state(self) -> None:
        """`<server>/standin-state.json`, atomically: what tests read when HTTP is not at hand."""
        tmp = f"{self.conf.state_path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.state(), f, indent=1, sort_keys=True)
            os.replace(tmp, self.conf.state_path)
        except OSError:
            log_standin.exception("Could not write %s", self.conf.state_path)

    def state(self) -> dict:
        return {
            "name": self.conf.name,
            "cluster": self.conf.cluster,
            "version": self.version,
            "pid": os.getpid(),
            "ready": self.ready,
            "services": self.store.snapshot(),
        }

    def fail(self, message: str) -> None:
        raise StartError(message)

    # -- start ----------------------------------------------------------------------------------------------

    def write_pidfile(self) -> None:
        with open(self.conf.pidfile, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))  # no trailing newline, like Zato's

    def remove_pidfile_if_ours(self) -> None:
        try:
            with open(self.conf.pidfile, encoding="utf-8") as f:
                if f.read().strip() == str(os.getpid()):
                    os.remove(self.conf.pidfile)
        except OSError:
            pass

    def read_service_sources(self) -> list[str]:
        """The entries of service-sources.txt: stripped, no blank lines, no lines starting with `#`."""
        assert self.conf.service_sources is not None
        with open(self.conf.service_sources, encoding="utf-8") as f:
            lines = f.read().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]

    @staticmethod
    def _directory_files(directory: str) -> list[str]:
        """`*.py` of a directory, non-recursively, `common*`, `util*` and `model*` first."""
        names = sorted(n for n in os.listdir(directory) if n.endswith(".py"))
        names = [n for n in names if os.path.isfile(os.path.join(directory, n))]
        first = [n for n in names if n.startswith(("common", "util", "model"))]
        rest = [n for n in names if n not in first]
        return [os.path.join(directory, n) for n in first + rest]

    def deploy_service_sources(self, entries: list[str]) -> set[str]:
        """Import every entry of service-sources.txt (2.0 to 3.3). A bad entry is logged, never fatal."""
        deployed: set[str] = set()
        for entry in entries:
            path = entry if os.path.isabs(entry) else os.path.normpath(os.path.join(self.conf.server_dir, entry))
            if os.path.isdir(path):
                files = self._directory_files(path)
            elif entry.endswith(".py"):
                files = [path]
            else:
                if self.version in ("3.2", "3.3"):
                    # 3.2 and 3.3 turn relative entries into absolute paths first: a dotted name cannot import
                    mod_name = path
                    names, error = [], "not a module name"
                else:
                    mod_name = entry
                    names, error = self.store.import_dotted(entry)
                if error:
                    log_store.info("Could not import module `%s` (internal:0)", mod_name)
                deployed.update(names)
                continue
            for file_path in files:
                names, error = self.store.import_file(file_path)
                if error:
                    log_store.error("Could not load source, file_name:`%s`, e:`%s`", file_path, error)
                deployed.update(names)
        return deployed

    def redeploy_pickup(self) -> set[str]:
        """4.1: every `.py` under the pickup dir, recursively, is deployed again at each start."""
        deployed: set[str] = set()
        for path in sorted(_snapshot(self.conf.pickup_dir, recursive=True)):
            deployed.update(self.deploy_in_place(path))
        return deployed

    def _countdown(self, key: str) -> bool:
        """True while `<key>` in the faults file is a positive count, which this call decrements."""
        times = int(self.faults.number(key))
        if times <= 0:
            return False
        data = self.faults.read()
        data[key] = times - 1
        with open(self.faults.path, "w", encoding="utf-8") as f:
            json.dump(data, f)
        return True

    def die_at_start(self, started: float) -> None:
        """The `die_at_start` fault: once `zato start` has printed OK, die while importing, pidfile left behind."""
        message = self.faults.get("die_at_start")
        if not message and not self._countdown("die_at_start_times"):
            return
        self.stop_event.wait(max(0.0, self.conf.start_ok_wait + 0.5 - (time.monotonic() - started)))
        reason = message if isinstance(message, str) else "ImportError: stand-in fault `die_at_start`"
        log_main.error(
            "Could not start the server, e:`Traceback (most recent call last):\n"
            '  File "/opt/zato/current/code/zato-server/src/zato/server/main.py", line 1, in run\n%s\n`',
            reason,
        )
        self.journal.append("stopped", reason="died at start")
        logging.shutdown()
        os._exit(1)

    def start(self) -> None:
        conf = self.conf
        started = time.monotonic()
        self.write_pidfile()
        self.journal.append("starting")
        message = self.faults.get("fail_start")
        if self._countdown("fail_start_times"):  # fail this many starts, then start normally (for rollbacks)
            message = f"Stand-in fault `fail_start_times` in {conf.faults_path}"
        if message:
            self.fail(message if isinstance(message, str) else f"Stand-in fault `fail_start` in {conf.faults_path}")
        extra_stderr = self.faults.get("stderr_at_start")
        if extra_stderr:
            sys.stderr.write(f"{extra_stderr}\n")
            sys.stderr.flush()

        log_main.info("Starting Zato %s...", self.version)
        for directory in (conf.pickup_dir, conf.current_work_dir, conf.backup_work_dir):
            os.makedirs(directory, exist_ok=True)

        # gunicorn's arbiter listens at once; requests wait in the backlog until the worker is ready
        try:
            self.http = HTTPServer((conf.host, conf.port), Handler)
        except OSError as e:
            self.fail(f"Could not bind `{conf.bind}`: {e!r}")
        assert self.http is not None
        self.http.app = self  # type: ignore[attr-defined]
        host = "127.0.0.1" if conf.host in ("0.0.0.0", "", "*") else conf.host
        log_main.info("Listening at: http://%s:%d (%d)", host, conf.port, os.getpid())

        entries: list[str] = []
        if conf.service_sources is not None:
            try:
                entries = self.read_service_sources()
            except OSError as e:
                self.fail(f"Could not read service sources from `{conf.service_sources}`: {e!r}")
            self.odb = Odb(conf.odb_path)
            self.odb_cursor = self.odb.max_id()

        # importing Zato and the services is what takes a real start 9-16 s
        self.die_at_start(started)
        total = conf.start_delay + self.faults.number("start_delay")
        if self.stop_event.wait(max(0.0, total - (time.monotonic() - started))):
            return

        log_parallel.info("Deploying user-defined services (%s)", conf.name)
        deployed = self.deploy_service_sources(entries) if conf.service_sources is not None else self.redeploy_pickup()
        log_parallel.info("Deployed %d user-defined services (%s)", len(deployed), conf.name)
        if self.odb is not None and self.version in ("3.2", "3.3"):
            self.deploy_extra_services(set(self.store.snapshot()))
        for directory in conf.extra_pickup_dirs:  # user pickup folders: deployed at start, in place
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                log_hot_deploy.warning("Could not create pickup folder `%s`: %s", directory, e)
            for path in sorted(_snapshot(directory, recursive=False)):
                self.deploy_in_place(path)

        threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, name="HTTPServer", daemon=True
        ).start()
        self.serving = True

        for directory in (conf.pickup_dir, *(d for d in conf.extra_pickup_dirs if os.path.isdir(d))):
            on_file = self.on_pickup if directory == conf.pickup_dir else self.on_user_pickup
            watcher: threading.Thread
            if self.version in ("2.0", "3.0", "3.2"):
                watcher = InotifyWatcher(directory, on_file, self.stop_event)
            else:
                watcher = PollingWatcher(directory, on_file, self.stop_event, self.version == "4.1")
            watcher.start()
        if self.odb is not None:
            threading.Thread(target=self.poll_odb, name="BrokerClient", daemon=True).start()

        log_parallel.info("Started `%s@%s` (pid: %d)", conf.name, conf.cluster, os.getpid())
        self.ready = True
        self.journal.append("ready")
        self.write_state()

    def deploy_extra_services(self, deployed: set[str]) -> None:
        """3.2: services the cluster's ODB knows but this server's sources lack come back at start."""
        assert self.odb is not None
        extra = self.odb.extra_services(deployed, self.conf.current_work_dir)
        if not extra:
            return
        names = sorted(name for found, _ in extra.values() for name in found)
        log_parallel.info("Found extra services to deploy: %s", ", ".join(names))
        for package, (_, payload) in sorted(extra.items()):
            self.deploy_package(0, package, payload)
        log_parallel.info("Deployed extra services found: %s", names)

    # -- hot-deploy -----------------------------------------------------------------------------------------

    def on_pickup(self, path: str) -> None:
        """A file was picked up: 2.0 to 3.3 publish it to the cluster's ODB, 4.1 deploys it in place."""
        faults = self.faults.read()
        if faults.get("mute_hot_deploy") or faults.get("ignore_pickup") or self.stop_event.is_set():
            return
        if self.version == "4.1":
            delay = float(faults.get("deploy_delay") or 0)
            if delay:
                time.sleep(delay)
            self.deploy_in_place(path)
            return
        try:
            with open(path, "rb") as f:
                payload = f.read()
        except OSError:
            log_hot_deploy.exception("Could not read `%s`", path)
            return
        assert self.odb is not None
        self.odb.insert(os.path.basename(path), payload, self.conf.name)
        if self.conf.delete_after_pick_up:
            with contextlib.suppress(OSError):
                os.remove(path)

    def on_user_pickup(self, path: str) -> None:
        """A user pickup folder (Zato_Hot_Deploy_Dir, pickup.conf): imported in place, on this server only."""
        faults = self.faults.read()
        if faults.get("mute_hot_deploy") or self.stop_event.is_set():
            return
        self.deploy_in_place(path)

    def poll_odb(self) -> None:
        """Every server of the cluster notices new packages in the ODB and deploys them (the fan-out)."""
        assert self.odb is not None
        while not self.stop_event.wait(ODB_POLL_INTERVAL):
            try:
                rows = self.odb.after(self.odb_cursor)
            except sqlite3.Error:
                log_standin.exception("Could not read the ODB")
                continue
            for package_id, name, payload, picker in rows:
                if self.stop_event.is_set():
                    return
                self.odb_cursor = package_id
                faults = self.faults.read()
                if faults.get("mute_hot_deploy"):
                    continue
                if faults.get("deaf_to_cluster") and picker != self.conf.name:
                    continue
                delay = float(faults.get("deploy_delay") or 0)
                if delay:
                    time.sleep(delay)
                self.deploy_package(package_id, name, payload)

    def deploy_package(self, package_id: int, name: str, payload: bytes) -> None:
        """2.0 to 3.3: write the package to work/hot-deploy/current/<name>, import it from there, log per version."""
        with self.deploy_lock:
            path = os.path.join(self.conf.current_work_dir, name)
            with open(path, "wb") as f:
                f.write(payload)
            names, error = self.store.import_file(path)
            if names and self.odb is not None:
                self.odb.add_services(name, names)
            if self.version == "2.0":
                if error:
                    log_hot_deploy.warning("Package id:[%s], payload_name:[%s] has not been deployed", package_id, name)
                elif names:
                    log_hot_deploy.info("Uploaded package id:[%s], payload_name:[%s]", package_id, name)
                else:
                    log_hot_deploy.info("No services nor models were deployed from module `%s`", name)
                return
            if error:
                self._log_load_error(path, name, error)
            elif not names:
                self._log_nothing_deployed(name)
            elif self.version == "3.0":
                log_hot_deploy.info("Uploaded package id:`%s`, payload_name:`%s`", package_id, name)
            else:
                self._log_deployed(path, names)

    def deploy_in_place(self, path: str) -> list[str]:
        """4.1: import the file from the pickup dir itself; no ODB, no fan-out, no copy in work/."""
        with self.deploy_lock:
            name = os.path.basename(path)
            names, error = self.store.import_file(path)
            if error:
                self._log_load_error(path, name, error)
            elif not names:
                self._log_nothing_deployed(name)
            else:
                self._log_deployed(path, names)
            return names

    def _log_nothing_deployed(self, name: str) -> None:
        """`No services nor models ...`; 4.1 also counts connector types (zato-facts.md section 9)."""
        if self.version == "4.1":
            log_hot_deploy.info("No services, models nor connector types were deployed from module `%s`", name)
        else:
            log_hot_deploy.info("No services nor models were deployed from module `%s`", name)

    @staticmethod
    def _log_deployed(path: str, names: list[str]) -> None:
        suffix = "" if len(names) == 1 else "s"
        log_hot_deploy.info("Deployed %d service%s from `%s` -> %s", len(names), suffix, path, names)

    def _log_load_error(self, path: str, name: str, error: str) -> None:
        # Zato logs the same error twice: once in the service store, once again on its way out of hot-deploy
        for _ in range(2):
            log_store.error("Could not load source, file_name:`%s`, e:`%s`", path, error)
        if self.version == "4.1":  # 4.1 then looks for connectors in the module, and says it could not import it
            log_hot_deploy.warning("Could not import module `%s` to look for connectors", os.path.splitext(name)[0])
        self._log_nothing_deployed(name)

    # -- stop -----------------------------------------------------------------------------------------------

    def on_sigterm(self, signum: int, _frame: object) -> None:
        if self.faults.get("ignore_sigterm"):
            log_standin.info("Ignoring signal %d (stand-in fault `ignore_sigterm`)", signum)
            return
        self.stop_event.set()

    def shutdown(self) -> None:
        conf = self.conf
        self.journal.append("stopping")
        log_main.info("Handling signal: term")
        log_parallel.info("Stopping server process (%s:%d)", conf.name, os.getpid())
        time.sleep(max(0.0, self.faults.number("stop_delay", conf.stop_delay)))
        if self.http is not None:
            if self.serving:
                self.http.shutdown()
            self.http.server_close()
        self.remove_pidfile_if_ours()
        self.ready = False
        self.write_state()
        log_main.info("Shutting down: Main")
        log_parallel.info("Stopped `%s@%s` (pid: %d)", conf.name, conf.cluster, os.getpid())
        self.journal.append("stopped")

    def redirect_stderr(self) -> None:
        """Once started, stderr goes to logs/standin-stderr.log: `zato start` has read (and removed) its temp file."""
        path = os.path.join(self.conf.server_dir, "logs", "standin-stderr.log")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        self.setup_logging()
        try:
            self.start()
        except StartError as e:
            log_parallel.error("Could not start `%s@%s`: %s", self.conf.name, self.conf.cluster, e)
            sys.stderr.write(f"{e}\n")
            sys.stderr.flush()
            self.remove_pidfile_if_ours()
            self.journal.append("stopped", reason="failed to start")
            return 1
        if self.ready:
            self.redirect_stderr()
        crash_after = self.faults.number("crash_after")
        deadline = time.monotonic() + crash_after if crash_after > 0 else None
        while not self.stop_event.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                log_parallel.error("Stand-in fault `crash_after`: dying now")
                self.journal.append("stopped", reason="crash")
                logging.shutdown()
                os._exit(1)
        self.shutdown()
        logging.shutdown()
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("Usage: zato_server.py SERVER_DIR\n")
        return 2
    try:
        server = ZatoServer(argv[1])
    except Exception:
        traceback.print_exc()
        return 1
    return server.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
