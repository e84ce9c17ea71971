"""Reading a stand-in server directory: `.zato-info`, `config/repo/server.conf` and the paths they imply.

Shared by the `zato` CLI (zato_cli.py) and the server process (zato_server.py) so both resolve paths the way
Zato does (zato-facts.md section 1): `pickup_dir` and `work_dir` relative to config/repo, `current_work_dir`
relative to `work_dir`, `~` expanded, absolute paths used as they are. Stdlib only: this file is copied into
every stand-in install and runs under /usr/bin/python3 as a user who cannot read the repository.
"""

from __future__ import annotations

import configparser
import json
import os
import re
from dataclasses import dataclass

ZATO_INFO = ".zato-info"
VERSIONS = ("2.0", "3.0", "3.2", "3.3", "4.1")
DEFAULT_LOG_MAX_BYTES = 1024 * 1024 * 1024  # Zato's own default: 1 GB
DEFAULT_LOG_BACKUP_COUNT = 5
DEFAULT_STOP_DELAY = 0.5
#: without a `[standin]` setting a server behaves like the real 3.2 one seen running (zato-facts.md section 8):
#: `zato start` prints OK after about 2.5 s, /zato/ping answers about 12 s after the start
DEFAULT_START_OK_WAIT = 2.5
DEFAULT_START_DELAY = 12.0
SERVER_SCRIPT = "zato_server.py"
#: server.conf keys can be overridden by the server process's environment (zato-facts.md section 9)
ENV_PREFIX = "Zato_Config_Server_server__conf_"
#: extra pickup folders, several paths joined by `:`
HOT_DEPLOY_DIR_VARS = ("Zato_Hot_Deploy_Dir", "ZATO_HOT_DEPLOY_DIR")


def read_zato_info(server_dir: str) -> dict:
    """The parsed `.zato-info` of a component directory (raises OSError / ValueError like Zato would)."""
    with open(os.path.join(server_dir, ZATO_INFO), encoding="utf-8") as f:
        return json.load(f)


def version_of(info: dict) -> str:
    """`3.2` out of `3.2`, `Zato 3.2.0` or `3.2.1+rev.abc`; unknown versions fall back to 3.2 (the default)."""
    found = re.search(r"(\d+)\.(\d+)", str(info.get("version", "")))
    version = f"{found.group(1)}.{found.group(2)}" if found else "3.2"
    return version if version in VERSIONS else "3.2"


def resolve(base: str, value: str) -> str:
    """A path from server.conf: `~` expanded, absolute as is, relative against `base`; normalised."""
    value = os.path.expanduser(value.strip())
    if not os.path.isabs(value):
        value = os.path.join(base, value)
    return os.path.normpath(value)


@dataclass
class ServerConf:
    """Everything the stand-in needs out of one server directory."""

    server_dir: str
    version: str
    bind: str  # as written in server.conf, e.g. `0.0.0.0:17010`
    host: str
    port: int
    work_dir: str
    pickup_dir: str
    current_work_dir: str
    backup_work_dir: str
    service_sources: str | None  # None on 4.1
    delete_after_pick_up: bool
    odb_path: str
    name: str
    cluster: str
    events_journal: str | None
    log_max_bytes: int
    log_backup_count: int
    stop_delay: float
    start_ok_wait: float = DEFAULT_START_OK_WAIT  # how long `zato start` waits for early stderr before `OK`
    start_delay: float = DEFAULT_START_DELAY  # from process start to answering /zato/ping
    colour: bool = True  # log levels wrapped in ANSI colour codes, as Zato 3.2 writes them
    #: folders watched besides pickup_dir, whose modules are imported in place (Zato_Hot_Deploy_Dir, pickup.conf)
    extra_pickup_dirs: tuple[str, ...] = ()

    @property
    def repo_dir(self) -> str:
        return os.path.join(self.server_dir, "config", "repo")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.server_dir, "pidfile")

    @property
    def log_path(self) -> str:
        return os.path.join(self.server_dir, "logs", "server.log")

    @property
    def faults_path(self) -> str:
        return os.path.join(self.server_dir, "standin-faults.json")

    @property
    def state_path(self) -> str:
        return os.path.join(self.server_dir, "standin-state.json")

    @property
    def ping_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "*") else self.host
        return f"http://{host}:{self.port}/zato/ping"


def _setting(section: object, name: str, key: str, default: str) -> str:
    """A server.conf value, unless the process environment overrides it
    (`Zato_Config_Server_server__conf_<section>_<key>`)."""
    env = os.environ.get(f"{ENV_PREFIX}{name}_{key}")
    if env is not None:
        return env
    return str(section.get(key, default))  # type: ignore[attr-defined]


def extra_pickup_dirs(server_dir: str, repo_dir: str) -> tuple[str, ...]:
    """`Zato_Hot_Deploy_Dir` / `ZATO_HOT_DEPLOY_DIR` (`:`-joined) and `[hot-deploy.user.*] pickup_from` of
    config/repo/pickup.conf: folders watched besides the pickup dir."""
    found: list[str] = []
    for var in HOT_DEPLOY_DIR_VARS:
        found += [resolve(server_dir, p) for p in os.environ.get(var, "").split(":") if p.strip()]
    pickup_conf = os.path.join(repo_dir, "pickup.conf")
    if os.path.exists(pickup_conf):
        parser = configparser.ConfigParser(interpolation=None)
        with open(pickup_conf, encoding="utf-8") as f:
            parser.read_file(f, pickup_conf)
        for section in parser.sections():
            if section.startswith("hot-deploy.user.") and parser[section].get("pickup_from"):
                found.append(resolve(repo_dir, parser[section]["pickup_from"]))
    return tuple(dict.fromkeys(found))


def load(server_dir: str) -> ServerConf:
    """Parse `<server_dir>/config/repo/server.conf` (raises on a missing file or key, as a real server would)."""
    server_dir = os.path.abspath(server_dir)
    version = version_of(read_zato_info(server_dir))
    repo_dir = os.path.join(server_dir, "config", "repo")
    parser = configparser.ConfigParser(interpolation=None)
    conf_path = os.path.join(repo_dir, "server.conf")
    with open(conf_path, encoding="utf-8") as f:
        parser.read_file(f, conf_path)

    main = parser["main"]
    bind_key = "bind" if version == "4.1" else "gunicorn_bind"
    bind = main.get(bind_key) or main.get("gunicorn_bind") or main.get("bind")
    if not bind:  # 4.1 as shipped may also say `host=` and `port=`
        bind = "{}:{}".format(main.get("host", "0.0.0.0"), main["port"])
    host, _, port = bind.rpartition(":")

    work_dir = resolve(repo_dir, _setting(main, "main", "work_dir", "../../work"))
    hot = parser["hot_deploy"] if parser.has_section("hot_deploy") else {}
    pickup_dir = resolve(repo_dir, _setting(hot, "hot_deploy", "pickup_dir", "../../pickup/incoming/services"))
    current_work_dir = resolve(work_dir, _setting(hot, "hot_deploy", "current_work_dir", "./hot-deploy/current"))
    backup_work_dir = resolve(work_dir, hot.get("backup_work_dir", "./hot-deploy/backup"))
    delete_after = str(hot.get("delete_after_pick_up", "False")).strip().lower() in ("true", "1", "yes")

    sources = None
    if version != "4.1":
        sources = resolve(repo_dir, _setting(main, "main", "service_sources", "./service-sources.txt"))

    odb = parser["odb"] if parser.has_section("odb") else {}
    odb_path = resolve(repo_dir, odb.get("db_name", os.path.join(server_dir, "odb.sqlite")))

    standin = parser["standin"] if parser.has_section("standin") else {}
    journal = (standin.get("events_journal") or "").strip()
    return ServerConf(
        server_dir=server_dir,
        version=version,
        bind=bind,
        host=host,
        port=int(port),
        work_dir=work_dir,
        pickup_dir=pickup_dir,
        current_work_dir=current_work_dir,
        backup_work_dir=backup_work_dir,
        service_sources=sources,
        delete_after_pick_up=delete_after,
        odb_path=odb_path,
        name=standin.get("name", "server1"),
        cluster=standin.get("cluster", "quickstart"),
        events_journal=resolve(repo_dir, journal) if journal else None,
        log_max_bytes=int(standin.get("log_max_bytes", DEFAULT_LOG_MAX_BYTES)),
        log_backup_count=int(standin.get("log_backup_count", DEFAULT_LOG_BACKUP_COUNT)),
        stop_delay=float(standin.get("stop_delay", DEFAULT_STOP_DELAY)),
        start_ok_wait=float(standin.get("start_ok_wait", DEFAULT_START_OK_WAIT)),
        start_delay=float(standin.get("start_delay", DEFAULT_START_DELAY)),
        colour=str(standin.get("colour", "true")).strip().lower() in ("true", "1", "yes"),
        extra_pickup_dirs=extra_pickup_dirs(server_dir, repo_dir),
    )


def pid_is_alive(pid: int) -> bool:
    """True if a process with this id exists (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def cmdline(pid: int) -> list[str]:
    """The argv of a process, empty if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def is_standin_server(pid: int, server_dir: str | None = None) -> bool:
    """True if `pid` is a live stand-in server process (of `server_dir`, when given)."""
    if not pid_is_alive(pid):
        return False
    argv = cmdline(pid)
    if not any(arg.endswith(SERVER_SCRIPT) for arg in argv):
        return False
    return server_dir is None or os.path.abspath(server_dir) in argv
