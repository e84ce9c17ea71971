"""The `zato-gitops` command: options in, one engine call, rendering out.

Thin on purpose: every command builds `Settings` (config file, then flags), calls the engine and renders. Errors
the user is meant to read (`ReconcilerError`) become one message and a hint on stderr with exit code 1, never a
traceback. Exit codes follow Argo CD's and Terraform's `plan`: 0 nothing to do, 2 changes pending, 1 error.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from reconciler import __version__
from reconciler.errors import ManifestInvalid, ReconcilerError
from reconciler.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

def _width(stream: Any) -> int | None:
    """Terminal width on a terminal; a wide page when piped to a file or another program (or $COLUMNS)."""
    return None if stream.isatty() else int(os.environ.get("COLUMNS") or 160)


out = Console(highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


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
    return f


def make_settings(kw: dict[str, Any], **extra: Any) -> Settings:
    keys = ("repo", "branch", "manifest", "identity", "known_hosts", "state_dir")
    return load_settings(kw.get("config"), {k: kw.get(k) for k in keys} | extra)


def handle_errors(f: F) -> F:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ReconcilerError as e:
            err.print(f"[bold red]error:[/] {e.render()}", markup=True, highlight=False)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def progress(msg: str) -> None:
    err.print(f"[dim]>[/] {msg}", markup=True, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="zato-gitops")
def main() -> None:
    """Release Zato services by merging to git.

    A git repository holds the service modules and a manifest (zato-gitops.yaml) saying which Zato servers run
    them. zato-gitops compares it with every server (over SSH, or locally), hot-deploys what differs through the
    servers' pickup dirs, waits until every server confirms in logs/server.log, and records each deploy as a git
    note on the commit.

    \b
    Typical use:
      zato-gitops validate --repo git@github.com:acme/services.git
      zato-gitops plan     --repo ... --identity ~/.ssh/deploy_key
      zato-gitops apply    --repo ... --identity ~/.ssh/deploy_key
      zato-gitops history  --repo ...

    Run `zato-gitops COMMAND --help` for each command's options; the manifest reference is in manifests/README.md.
    """


@main.command()
@common_options
@click.option("--file", "file", metavar="MANIFEST", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Validate this manifest file only, without reading the repository.")
@handle_errors
def validate(file: Path | None, **kw: Any) -> None:
    """Check the manifest and compile every module at the branch head; touch no server.

    Exit 0 when valid, 1 when not (every problem is listed as FILE:LINE: key.path: message).
    """
    from reconciler.manifest.loader import load_manifest

    if file is not None:
        try:
            loaded = load_manifest(file.read_text(encoding="utf-8"), str(file))
        except ManifestInvalid as e:
            err.print(e.render(), highlight=False)
            sys.exit(EXIT_ERROR)
        for w in loaded.warnings:
            err.print(f"warning: {w}", highlight=False)
        out.print(f"{file}: valid ({len(loaded.manifest.clusters)} clusters)")
        return
    from reconciler.engine import Engine

    engine = Engine(make_settings(kw), progress)
    commit = engine.fetch()
    desired = engine.desired(commit)
    for w in desired.warnings:
        err.print(f"warning: {w}", highlight=False)
    n = sum(len(c.modules) for c in desired.clusters)
    out.print(f"commit {commit[:12]}: valid ({len(desired.clusters)} clusters, {n} hot-deploy modules)")


@main.command()
@common_options
@click.option("--cluster", "clusters", multiple=True, metavar="NAME", help="Only this cluster (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout.")
@handle_errors
def plan(clusters: tuple[str, ...], as_json: bool, **kw: Any) -> None:
    """Show what apply would change on each server, and why; change nothing.

    Exit 0 when every server runs what the commit says, 2 when changes are pending, 1 on error (including a
    server that could not be observed).
    """
    from reconciler.engine import Engine
    from reconciler.render import plan_dict, print_plan

    report = Engine(make_settings(kw), progress).plan(list(clusters) or None)
    if as_json:
        click.echo(json.dumps(plan_dict(report), indent=2))
    else:
        print_plan(out, report)
    if not report.complete:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if report.plan.empty else EXIT_CHANGES)


@main.command()
@common_options
@click.option("--cluster", "clusters", multiple=True, metavar="NAME", help="Only this cluster (repeatable).")
@click.option("--timeout", "confirm_timeout", type=float, metavar="SECONDS",
              help="How long every server has to confirm a hot-deploy in its log.  [default: 60]")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@handle_errors
def apply(clusters: tuple[str, ...], confirm_timeout: float | None, as_json: bool, **kw: Any) -> None:
    """Make every server run what the branch head says, and record it as a git note.

    Hot-deploys each changed module through a pickup dir, waits until every server of the cluster logs that it
    deployed it, then writes the outcome to refs/notes/zato-gitops on the commit and pushes it. Exit 0 when every
    server confirmed (or nothing had to change), 1 otherwise.
    """
    from reconciler.engine import Engine
    from reconciler.render import apply_dict, print_apply

    result = Engine(make_settings(kw, confirm_timeout=confirm_timeout), progress).apply(list(clusters) or None)
    if as_json:
        click.echo(json.dumps(apply_dict(result), indent=2))
    else:
        print_apply(out, result)
    sys.exit(EXIT_OK if result.ok else EXIT_ERROR)


@main.command()
@common_options
@click.option("--cluster", metavar="NAME", help="Only records of this cluster.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many records.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON on stdout.")
@handle_errors
def history(cluster: str | None, limit: int, as_json: bool, **kw: Any) -> None:
    """The deploy history: what each server got, when and with what outcome, newest first.

    Read from the git notes (refs/notes/zato-gitops) that apply writes; `git log --notes=zato-gitops` shows the
    same records next to the commits.
    """
    from reconciler.engine import Engine
    from reconciler.render import print_history

    engine = Engine(make_settings(kw))
    engine.source.fetch()
    entries = engine.audit.history(limit=limit, cluster=cluster)
    if as_json:
        click.echo(json.dumps([dict(e.record) | {"commit_summary": e.summary} for e in entries], indent=2))
    else:
        print_history(out, entries)


@main.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editors and CI checks)."""
    from reconciler.manifest.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
