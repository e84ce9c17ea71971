"""The command line's contract, in one place, so every command (today's and tomorrow's) keeps it for free.

Scripts and people both read zato-gitops' output, and both are misled by a command that fails differently from
its neighbours. So the failure path is not written per command: `Cli.main` wraps every command and subcommand.

* A `ReconcilerError` is one `error:` line (plus its detail lines) and a `hint:` line on stderr, exit 1.
* A usage mistake (unknown option, missing argument, bad value) exits 64 (EX_USAGE from sysexits.h), so it can
  never be mistaken for `plan`'s 2 ("changes pending").
* An `OSError` (a read-only --state-dir, a full disk) is named with its path, exit 1; so is a state database
  (`state_db`) that stops answering.
* Anything else is a bug in zato-gitops: one line saying so, the traceback only with `--debug`, exit 1.
* With `--json` anywhere on the line, stdout carries exactly one JSON document whatever happens: the command's,
  or `{"error": ..., "hint": ...}` (shapes in reconciler/cli/schemas/).
* Library loggers (paramiko's banner and channel tracebacks) never reach the terminal, except with `--debug`.

`Reporter` is the progress side: `> step` lines on stderr, a status line with the elapsed seconds while a step
waits (a confirmation, a server's restart), and the first Ctrl-C acknowledged at once.

rich draws the tables and colours for people, and loads (~15 ms) only when something is drawn: the consoles `out`
and `err` are made at first use, and a line to a stderr that shows no colours (a pipe, a log file) is written as
is, so a command whose output is JSON never imports it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from reconciler.db import db_errors, first_line
from reconciler.errors import ReconcilerError

if TYPE_CHECKING:  # start-up cost: settings (pydantic, the manifest loader) load when a command builds them
    from rich.console import Console
    from rich.status import Status

    from reconciler.settings import Settings

    #: stdout and stderr for people, made at their first use (`__getattr__`)
    out: Console
    err: Console

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
#: sysexits.h EX_USAGE: the command line itself was wrong
EX_USAGE = 64
#: 128 + SIGINT, as shells report a command stopped by Ctrl-C
EXIT_INTERRUPTED = 130

BUG_URL = "https://github.com/zatosource/zato-gitops/issues"


def _width(stream: Any) -> int:
    """$COLUMNS, else the terminal's width on a terminal, else a wide page (piped to a file or a program)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return shutil.get_terminal_size().columns if stream.isatty() else 160


def console(name: str) -> Console:
    """The console `out` (stdout) or `err` (stderr), made the first time it is asked for."""
    made: Console | None = globals().get(name)
    if made is None:
        from rich.console import Console

        made = globals()[name] = (Console(highlight=False, width=_width(sys.stdout)) if name == "out" else
                                  Console(stderr=True, highlight=False, soft_wrap=True))
    return made


def __getattr__(name: str) -> Console:
    if name in ("out", "err"):
        return console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain(stream: Any) -> bool:
    """Whether `stream` shows no colours for sure: no terminal, and no FORCE_COLOR or TTY_COMPATIBLE that would
    make rich write escape codes to it all the same (rich decides whenever one is set)."""
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return False


def say(label: str, text: str, style: str = "", to: Console | None = None) -> None:
    """One line for people on stderr, or on the console `to`: `label` (in `style` on a terminal), then `text` as
    written (brackets and all). Where stderr shows no colours, written as is, without rich."""
    line = f"{label} {text}" if label else text
    if to is None and _plain(sys.stderr):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        return
    from rich.markup import escape

    target = to or console("err")
    if label:
        target.print(f"[{style}]{escape(label)}[/] {escape(text)}", markup=True, highlight=False)
    else:
        target.print(text, markup=False, highlight=False)


@dataclass
class Verbosity:
    """-q / -v / --debug, from wherever they were given on the line."""

    quiet: bool = False
    verbose: bool = False
    debug: bool = False


verbosity = Verbosity()


def _set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            setattr(verbosity, name, True)
            _levels()
    return callback


def output_options(f: F) -> F:
    """-q, -v and --debug: accepted before or after the command's name."""
    f = click.option("--debug", is_flag=True, expose_value=False, callback=_set_flag("debug"),
                     help="On an unexpected error, print the traceback; show library logs.")(f)
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_flag("verbose"),
                     help="Also print the reconciler's log messages.")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_flag("quiet"),
                     help="Print only results and errors: no progress lines, no status line.")(f)
    return f


COMMON_KEYS = ("repo", "branch", "manifest", "identity", "known_hosts", "state_dir", "config")


def common_options(f: F) -> F:
    """The options every command takes; each may also come from --config (flags win)."""
    options = [
        click.option("--repo", metavar="URL_OR_PATH",
                     help="Services repository: a path, file://, ssh:// or https:// URL."),
        click.option("--branch", metavar="NAME", help="Branch to reconcile.  [default: main]"),
        click.option("--manifest", metavar="PATH",
                     help="Manifest path in the repository.  [default: zato-gitops.yaml]"),
        click.option("--identity", metavar="KEY_FILE", type=click.Path(path_type=Path),
                     help="SSH private key for the servers (else the ssh agent and default keys)."),
        click.option("--known-hosts", "known_hosts", metavar="FILE", type=click.Path(path_type=Path),
                     help="known_hosts file; host keys are checked strictly.  [default: ~/.ssh/known_hosts]"),
        click.option("--state-dir", "state_dir", metavar="DIR", type=click.Path(path_type=Path),
                     help="The reconciler's clone, lock and records.  [default: ~/.local/state/zato-gitops]"),
        click.option("--config", "config", metavar="FILE", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                     help="YAML file with the same settings (keys as the long options, '_' for '-'); flags win."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return output_options(f)


def given_settings(kw: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """(the --config file, the common options' values) wherever on the line they were given: the command's own
    win over a group's (`zato-gitops --repo X plan`, `rollouts resume ID --config F`)."""
    given = dict(kw)
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        for k in COMMON_KEYS:
            if given.get(k) is None and ctx.params.get(k) is not None:
                given[k] = ctx.params[k]
        ctx = ctx.parent
    keys = ("repo", "branch", "manifest", "identity", "known_hosts", "state_dir")
    return given.get("config"), {k: given.get(k) for k in keys}


def make_settings(kw: dict[str, Any], **extra: Any) -> Settings:
    """Settings from the --config file and the common options (`given_settings`)."""
    from reconciler.settings import load_settings

    config, overrides = given_settings(kw)
    return load_settings(config, overrides | extra)


def merged(parent: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A group's common options with a subcommand's own on top (`rollouts resume ID --config X`)."""
    return parent | {k: v for k, v in own.items() if v is not None}


def handle_errors(f: F) -> F:
    """Kept for commands written before `Cli.main` handled every error; the group does it now."""
    return f


def progress(msg: str) -> None:
    """A `> step` line on stderr (hidden by -q); long commands use a `Reporter` instead."""
    if not verbosity.quiet:
        say(">", msg, "dim")


def emit_json(data: Any) -> None:
    """The one JSON document of a --json command, on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


# --- the error path --------------------------------------------------------------------------------------------

def error_document(message: str, hint: str = "", **more: Any) -> dict[str, Any]:
    return {"error": message, "hint": hint or None, **more}


def print_error(message: str, hint: str = "") -> None:
    """`error: ...` (and its detail lines) and `hint: ...` on stderr."""
    first, _, rest = message.partition("\n")
    say("error:", first, "bold red")
    if rest:
        say("", rest)
    if hint:
        say("hint:", hint, "bold")


def _print_error(message: str, hint: str, as_json: bool, **more: Any) -> None:
    print_error(message, hint)
    if as_json:
        emit_json(error_document(message, hint, **more))


def _os_error(e: OSError) -> tuple[str, str]:
    where = f" {e.filename}" if e.filename else ""
    what = e.strerror or str(e) or type(e).__name__
    hint = "check that the path exists and that this user may write it (for the state dir: --state-dir)"
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:
        hint = "give zato-gitops a writable --state-dir (and check the permissions of the path)"
    return f"cannot use{where}: {what}", hint


class _ToStderr(logging.Handler):
    """Our own log records as `warning: ...` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            word = "warning" if record.levelno < logging.ERROR else "error"
            text = record.getMessage() if record.levelno >= logging.WARNING else f"  {record.getMessage()}"
            say("", f"{word}: {text}" if record.levelno >= logging.WARNING else text)
        except Exception:
            self.handleError(record)


_OURS = ("reconciler", "zato_gitops")
_handler = _ToStderr()


def _setup_logging(debug: bool) -> None:
    """Our warnings reach stderr as `warning:` lines; library records (paramiko's "Error reading SSH protocol
    banner" traceback) never do, except with --debug."""
    root = logging.getLogger()
    for name in _OURS:
        logger = logging.getLogger(name)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
        logger.propagate = debug
    paramiko = logging.getLogger("paramiko")
    if debug:
        paramiko.propagate = True
        if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        return
    if not root.handlers:
        root.addHandler(logging.NullHandler())  # no handler at all would send WARNING+ to stderr (lastResort)
    paramiko.propagate = False
    if not paramiko.handlers:
        paramiko.addHandler(logging.NullHandler())


@contextlib.contextmanager
def _cli_logging(debug: bool) -> Iterator[None]:
    """The command's logging set up for the terminal, and the loggers as they were afterwards (a CLI called in a
    test or from another program leaves no handler or level behind)."""
    names = ("", "paramiko", *_OURS)
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
             for n in names}
    try:
        _setup_logging(debug)
        yield
    finally:
        for n, (level, propagate, handlers) in saved.items():
            logger = logging.getLogger(n)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers[:] = handlers


def daemon_logging() -> None:
    """`run`: the daemon's log handler (daemon/logsetup) takes every record, ours and paramiko's warnings."""
    for name in _OURS:
        logger = logging.getLogger(name)
        logger.removeHandler(_handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    logging.getLogger("paramiko").propagate = True


def _levels() -> None:
    """-v shows our info messages too, -q only errors (the flags are known once the line is parsed)."""
    if verbosity.debug:
        return
    level = logging.INFO if verbosity.verbose else logging.ERROR if verbosity.quiet else logging.WARNING
    for name in _OURS:
        logging.getLogger(name).setLevel(level)


class Cli(click.Group):
    """The root group: runs the command, and turns every way it can fail into the contract above."""

    def main(
        self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        words = argv[: argv.index("--")] if "--" in argv else argv
        as_json = "--json" in words
        debug = "--debug" in words
        verbosity.quiet = verbosity.verbose = verbosity.debug = False
        if "out" in globals():  # made by an earlier command of this process: this one's stdout may be another
            console("out").width = _width(sys.stdout)
        with _cli_logging(debug):
            if not standalone_mode:  # a caller that handles exceptions itself
                return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = self._run(argv, prog_name, complete_var, as_json, debug, extra)
        sys.exit(code)

    def _run(self, argv: list[str], prog_name: str | None, complete_var: str | None, as_json: bool, debug: bool,
             extra: dict[str, Any]) -> int:
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            return rv if isinstance(rv, int) else EXIT_OK
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_ERROR)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:  # `zato-gitops` alone: the help
                click.echo(e.ctx.get_help(), err=as_json)
                if as_json:
                    emit_json(error_document("no command given", "`zato-gitops --help` lists the commands"))
                return EX_USAGE
            cmd = e.ctx.command_path if e.ctx is not None else "zato-gitops"
            _print_error(e.format_message(), f"`{cmd} --help` lists the options and arguments", as_json)
            return EX_USAGE
        except click.Abort:
            _print_error("interrupted", "", as_json)
            return EXIT_INTERRUPTED
        except click.ClickException as e:
            _print_error(e.format_message(), "", as_json)
            return EXIT_ERROR
        except ReconcilerError as e:
            _print_error(e.message, e.hint, as_json, kind=type(e).__name__)
            return EXIT_ERROR
        except KeyboardInterrupt:
            _print_error("interrupted", "", as_json)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `zato-gitops history | head`: the reader left; nothing to say to anyone
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_ERROR
        except OSError as e:
            message, hint = _os_error(e)
            _print_error(message, hint, as_json)
            return EXIT_ERROR
        except Exception as e:
            if isinstance(e, db_errors()):  # the state database (state_db) went away under a command
                _print_error(f"the state database cannot be used: {first_line(e)}",
                             "check `state_db` in the config and that the database answers", as_json,
                             kind="Transient")
                return EXIT_ERROR
            if debug:
                say("", traceback.format_exc().rstrip("\n"))
            where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
            _print_error(
                f"this is a bug in zato-gitops: {type(e).__name__}{at}: {str(e)[:300]}",
                "run the same command with --debug for the traceback, and report it at " + BUG_URL
                if not debug else "please report it, with the traceback above, at " + BUG_URL,
                as_json, kind="bug",
            )
            return EXIT_ERROR



# --- progress, elapsed time and Ctrl-C ---------------------------------------------------------------------------

class Reporter:
    """Progress for long commands: `> step` lines, elapsed seconds on waits, a polite first Ctrl-C.

    Every progress message starts a step. While a step lasts longer than `after` seconds, a status line shows it
    with its elapsed seconds (on a terminal, redrawn each second; otherwise one line every `every` seconds, so a
    log file shows that the command is alive). The first SIGINT sets `stop` (the engine finishes the current
    server step and stops) and says so at once; a second one aborts.
    """

    def __init__(self, *, after: float = 3.0, every: float = 10.0, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic, polite_interrupt: bool = True) -> None:
        #: None: stderr (`say`)
        self.console = console
        #: False for commands that change nothing (plan, validate): there Ctrl-C stops at once
        self.polite_interrupt = polite_interrupt
        self.after, self.every, self.clock = after, every, clock
        self.stop = threading.Event()
        self.step = ""
        self.started = clock()
        self._said = 0.0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: Status | None = None
        self._old_sigint: Any = None

    def __call__(self, msg: str) -> None:
        with self._lock:
            self.step, self.started, self._said = msg, self.clock(), 0.0
            if self._status is not None:
                self._status.stop()
                self._status = None
        if not verbosity.quiet:
            say(">", msg, "dim", self.console)

    def tick(self) -> None:
        """Show the elapsed time of the current step if it is long enough (called by the ticker thread)."""
        if verbosity.quiet:
            return
        with self._lock:
            if not self.step:
                return
            elapsed = self.clock() - self.started
            if elapsed < self.after:
                return
            if self._terminal():
                from rich.markup import escape

                text = f"{escape(self.step)} ({elapsed:.0f} s)"
                if self._status is None:
                    self._status = (self.console or console("err")).status(text)
                    self._status.start()
                else:
                    self._status.update(text)
            elif elapsed - self._said >= self.every:
                self._said = elapsed
                say(">", f"{self.step} (still waiting, {elapsed:.0f} s)", "dim", self.console)

    def _terminal(self) -> bool:
        if self.console is not None:
            return self.console.is_terminal
        return not _plain(sys.stderr) and console("err").is_terminal

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        step = f" ({self.step})" if self.step else ""
        say("interrupt:", f"finishing the current step{step}, then stopping; Ctrl-C again to abort at once", "yellow",
            self.console)

    def __enter__(self) -> Reporter:
        if self.polite_interrupt and threading.current_thread() is threading.main_thread():
            self._old_sigint = signal.signal(signal.SIGINT, self.on_sigint)
        self._thread = threading.Thread(target=self._loop, name="elapsed", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._done.wait(1.0 if self._terminal() else min(1.0, self.every / 2)):
            self.tick()

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            if self._status is not None:
                self._status.stop()
                self._status = None
        if self._old_sigint is not None:
            signal.signal(signal.SIGINT, self._old_sigint)


def with_reporter(f: F) -> F:
    """Run a command that changes servers with a `Reporter` (elapsed time, polite Ctrl-C) passed as `reporter=`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with Reporter() as reporter:
            return f(*args, reporter=reporter, **kwargs)

    return wrapper  # type: ignore[return-value]


def with_elapsed(f: F) -> F:
    """Run a read-only command with a `Reporter` for elapsed times; Ctrl-C stops it at once."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with Reporter(polite_interrupt=False) as reporter:
            return f(*args, reporter=reporter, **kwargs)

    return wrapper  # type: ignore[return-value]
