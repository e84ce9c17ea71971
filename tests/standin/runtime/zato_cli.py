"""The stand-in `zato` command: `start`, `stop`, `info` and `wait`, with Zato's messages and exit codes.

Why it exists: the reconciler drives servers only through `zato start|stop|info|wait` over SSH, and reads what
they print and how they exit (zato-facts.md section 6). This reproduces those four commands against a stand-in
server directory. `<install>/bin/zato` execs this file; stdlib only, run by /usr/bin/python3.

Output goes to stdout like Zato 3.x's CLI logger (2.0's went to stderr, and so does ours for a 2.0 server).
Exit codes: 2 file missing, 3 not a Zato component, 9 already running, 10 no pid, 16 exception,
18 failed to start, 28 timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import standin_conf  # noqa: E402

FILE_MISSING = 2
NOT_A_ZATO_COMPONENT = 3
COMPONENT_ALREADY_RUNNING = 9
NO_PID_FOUND = 10
EXCEPTION_CAUGHT = 16
FAILED_TO_START = 18
SERVER_TIMEOUT = 28

#: environment variables the server process gets on top of the caller's (how a site sets Zato_Config_Server_...)
ENVIRON_FILE = "standin-environ.json"


class NoSuchProcess(Exception):
    """psutil's exception, which `zato info` lets out when the pidfile names a process that is gone."""


class Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Cli:
    def __init__(self) -> None:
        self.out = sys.stdout

    def say(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()

    # -- shared checks ----------------------------------------------------------------------------------------

    def component_dir(self, path: str) -> str:
        """Zato's ManageCommand.execute: the directory must hold `.zato-info`, else exit 3."""
        component_dir = os.path.abspath(os.path.expandvars(os.path.expanduser(path)))
        listing = set(os.listdir(component_dir))  # a missing dir raises: exit 16 like Zato
        if standin_conf.ZATO_INFO not in listing:
            self.say(
                f"Directory {component_dir} doesn't seem to belong to a Zato component. "
                f"Expected one of the following to exist {[standin_conf.ZATO_INFO]}"
            )
            raise Exit(NOT_A_ZATO_COMPONENT)
        try:
            if standin_conf.version_of(standin_conf.read_zato_info(component_dir)) == "2.0":
                self.out = sys.stderr
        except (OSError, ValueError):
            pass
        return component_dir

    @staticmethod
    def read_pid(pidfile: str) -> int | None:
        try:
            with open(pidfile, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            return None
        try:
            return int(text)
        except ValueError:
            return None

    # -- start ------------------------------------------------------------------------------------------------

    def start(self, args: argparse.Namespace) -> int:
        server_dir = self.component_dir(args.path)
        conf = standin_conf.load(server_dir)

        # A live pidfile stops us; a stale one (no such process, or not a stand-in server) is removed
        if os.path.exists(conf.pidfile):
            pid = self.read_pid(conf.pidfile)
            if pid is not None and standin_conf.is_standin_server(pid, server_dir):
                self.say(f"Cannot proceed, found pidfile `{conf.pidfile}`")
                return COMPONENT_ALREADY_RUNNING
            with contextlib.suppress(OSError):
                os.remove(conf.pidfile)

        if not port_is_free(conf.host, conf.port):
            raise Exception(f"Server check failed. Address `{conf.bind}` already taken.")

        server_script = os.path.join(_HERE, standin_conf.SERVER_SCRIPT)
        command = [sys.executable, server_script, server_dir]
        env = dict(os.environ)
        try:
            with open(os.path.join(server_dir, ENVIRON_FILE), encoding="utf-8") as f:
                env.update({str(k): str(v) for k, v in json.load(f).items()})
        except (OSError, ValueError, AttributeError):
            pass
        if args.fg:
            os.chdir(server_dir)
            os.execve(sys.executable, command, env)

        fd, stderr_path = tempfile.mkstemp(prefix="zato-start-stderr-", suffix=".txt")
        try:
            with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
                subprocess.Popen(
                    command,
                    cwd=server_dir,
                    env=env,
                    stdin=devnull_in,
                    stdout=devnull_out,
                    stderr=fd,
                    start_new_session=True,  # setsid: out of the caller's session, off its SSH channel
                    close_fds=True,
                )
            os.close(fd)
            time.sleep(conf.start_ok_wait)
            with open(stderr_path, encoding="utf-8", errors="replace") as f:
                stderr = f.read()
        finally:
            with contextlib.suppress(OSError):
                os.remove(stderr_path)
        if stderr:
            kw = {"stderr_path": stderr_path, "stdin_data": None}
            self.say(f"Stderr received from program `Server` e:`{stderr}`, kw:`{kw}`")
            return FAILED_TO_START
        self.say("OK")
        return 0

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self, args: argparse.Namespace) -> int:
        server_dir = self.component_dir(args.path)
        pidfile = os.path.join(server_dir, "pidfile")
        if not os.path.exists(pidfile):
            self.say(f"No pidfile found in `{pidfile}`")
            return FILE_MISSING
        with open(pidfile, encoding="utf-8") as f:
            text = f.read().strip()
        if not text:
            self.say(f"Empty pidfile `{pidfile}`, did not attempt to stop `{server_dir}`")
            return NO_PID_FOUND
        pid = int(text)
        if not standin_conf.pid_is_alive(pid):  # a zombie nobody reaps (no init in a container) is gone as well
            raise ProcessLookupError(3, "No such process")
        os.kill(pid, signal.SIGTERM)  # a dead pid raises ProcessLookupError: exit 16, pidfile kept
        os.remove(pidfile)
        self.say(f"Server `{server_dir}` shutting down")
        return 0

    # -- info -------------------------------------------------------------------------------------------------

    def info(self, args: argparse.Namespace) -> int:
        server_dir = self.component_dir(args.path)
        pidfile = os.path.join(server_dir, "pidfile")
        details = standin_conf.read_zato_info(server_dir)
        now = datetime.datetime.now()
        out: dict[str, object] = {
            "component_details": json.dumps(details),
            "component_full_path": server_dir,
            "component_host": socket.gethostname(),
            "component_running": False,
            "current_time": now.isoformat(),
            "current_time_utc": datetime.datetime.now(datetime.UTC).replace(tzinfo=None).isoformat(),
            "master_proc_connections": None,
            "master_proc_create_time": None,
            "master_proc_create_time_utc": None,
            "master_proc_name": None,
            "master_proc_pid": None,
            "master_proc_username": None,
            "master_proc_workers_no": None,
            "master_proc_workers_pids": None,
        }
        pid = self.read_pid(pidfile) if os.path.exists(pidfile) else None
        if pid is not None and not standin_conf.pid_is_alive(pid):
            raise NoSuchProcess(f"process no longer exists (pid={pid})")  # a stale pidfile: exit 16
        if pid is not None:
            out["component_running"] = True
            out["master_proc_pid"] = pid
            out["master_proc_name"] = os.path.basename(sys.executable)
            out["master_proc_workers_no"] = 0
            out["master_proc_workers_pids"] = []
            try:
                st = os.stat(f"/proc/{pid}")
                out["master_proc_username"] = pwd.getpwuid(st.st_uid).pw_name
                created = process_start_time(pid)
                if created is not None:
                    out["master_proc_create_time"] = datetime.datetime.fromtimestamp(created).isoformat()
                    out["master_proc_create_time_utc"] = (
                        datetime.datetime.fromtimestamp(created, datetime.UTC).replace(tzinfo=None).isoformat()
                    )
            except (OSError, KeyError):
                pass
        if args.format == "json":
            self.say(json.dumps(out))
        else:
            width = max(len(key) for key in out)
            for key in sorted(out):
                self.say(f"{key.ljust(width)}  {out[key]}")
        return 0

    # -- wait -------------------------------------------------------------------------------------------------

    def wait(self, args: argparse.Namespace) -> int:
        server_dir = self.component_dir(args.path)
        conf = standin_conf.load(server_dir)
        url = conf.ping_url
        deadline = time.monotonic() + float(args.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                with urllib.request.urlopen(url, timeout=max(0.1, min(2.0, remaining))) as response:
                    response.read()
                return 0
            except urllib.error.HTTPError:
                return 0  # any HTTP answer means the server is up
            except (OSError, ValueError):
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        self.say(f"Timeout after {args.timeout:g} s waiting for `{url}`")
        return SERVER_TIMEOUT


def port_is_free(host: str, port: int) -> bool:
    """False if something listens on the port (TIME_WAIT leftovers do not count, as with Zato's psutil check)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or "0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def process_start_time(pid: int) -> float | None:
    """Start time of a process in seconds since the epoch, out of /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])
        with open("/proc/stat", encoding="utf-8") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zato", description="Stand-in of the Zato command line (start/stop/info/wait)")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="Start a server in the background")
    start.add_argument("path")
    start.add_argument("--fg", action="store_true", help="Run in the foreground")
    stop = sub.add_parser("stop", help="Send SIGTERM to a server")
    stop.add_argument("path")
    info = sub.add_parser("info", help="Show information about a server")
    info.add_argument("path")
    info.add_argument("--format", choices=("text", "json"), default="text")
    wait = sub.add_parser("wait", help="Wait until a server answers /zato/ping")
    wait.add_argument("--path", required=True)
    wait.add_argument("--timeout", type=float, default=60)
    for command in (start, stop, info, wait):
        command.add_argument("--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cli = Cli()
    try:
        return getattr(cli, args.command)(args)
    except Exit as e:
        return e.code
    except Exception as e:
        if args.verbose:
            import traceback

            cli.say(traceback.format_exc())
        else:
            cli.say(f"{e.__class__.__name__}: {e.args} (Hint: re-run with --verbose for full traceback)")
        return EXCEPTION_CAUGHT


if __name__ == "__main__":
    sys.exit(main())
