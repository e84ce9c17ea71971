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
from sqlalchemy.exc import SQLAlchemyError

from reconciler import __version__
from reconciler.db import first_line
from reconciler.errors import ManifestInvalid, ReconcilerError, Transient
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
        except SQLAlchemyError as e:
            why = Transient(f"the state database cannot be used: {first_line(e)}",
                            hint="check `state_db` in the config and that the database answers")
            err.print(f"[bold red]error:[/] {why.render()}", markup=True, highlight=False)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def interrupt_on_sigterm() -> None:
    """SIGTERM ends a command the way Ctrl-C does, so the engine's record step runs (records `interrupted`)."""
    import signal

    def raise_interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def progress(msg: str) -> None:
    err.print(f"[dim]>[/] {msg}", markup=True, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="zato-gitops")
def main() -> None:
    """Release Zato services by merging to git.

    A git repository holds the service modules and a manifest (zato-gitops.yaml) saying which Zato servers run
    them. zato-gitops compares it with every server (over SSH, or locally), hot-deploys what differs through the
    servers' pickup dirs, waits until every server confirms in logs/server.log, installs static changes
    (service-sources.txt, its directories, zato_extra_paths) with a health-gated rolling restart, and records
    everything as a git note on the commit.

    \b
    Typical use:
      zato-gitops validate --repo git@github.com:acme/services.git
      zato-gitops plan     --repo ... --identity ~/.ssh/deploy_key
      zato-gitops apply    --repo ... --identity ~/.ssh/deploy_key
      zato-gitops history  --repo ...
      zato-gitops run      --config /etc/zato-gitops/config.yaml   # the daemon: merging is enough

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
    from reconciler.engine.chain import Engine

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
    from reconciler.cli.render import plan_dict, print_plan
    from reconciler.engine.chain import Engine

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
              help="How long every server has to confirm a hot-deploy in its log; wins over the manifest's "
                   "confirm_timeout.  [default: the manifest's, else 60]")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@handle_errors
def apply(clusters: tuple[str, ...], confirm_timeout: float | None, as_json: bool, **kw: Any) -> None:
    """Make every server run what the branch head says, and record it as a git note.

    Hot-deploys each changed module through a pickup dir, waits until every server of the cluster logs that it
    deployed it, then writes the outcome to refs/notes/zato-gitops on the commit and pushes it. Exit 0 when every
    server confirmed (or nothing had to change), 1 otherwise.
    """
    from reconciler.cli.render import apply_dict, print_apply
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(kw), progress)
    engine.confirm_timeout_override = confirm_timeout
    interrupt_on_sigterm()
    result = engine.apply(list(clusters) or None)
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
    from reconciler.cli.render import print_history
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(kw))
    engine.source.fetch()
    entries = engine.audit.history(limit=limit, cluster=cluster)
    if as_json:
        click.echo(json.dumps([dict(e.record) | {"commit_summary": e.summary} for e in entries], indent=2))
    else:
        print_history(out, entries)


@main.command()
@common_options
@click.option("--listen", metavar="HOST:PORT",
              help="Address of /healthz, /readyz, /metrics, /api/status and the webhooks.  [default: 127.0.0.1:9180]")
@click.option("--interval", type=float, metavar="SECONDS",
              help="Seconds between two polls of the branch head (plus jitter).  [default: 60]")
@click.option("--log-format", "log_format", type=click.Choice(["text", "json"]),
              help="One line per event: text for people, json for log shippers.  [default: text]")
@handle_errors
def run(listen: str | None, interval: float | None, log_format: str | None, **kw: Any) -> None:
    """Run the reconciler as a daemon: merging is enough, and what drifts is put back.

    \b
    Every INTERVAL it asks the remote for the branch head (no fetch while it has not moved); when it moved, it
    fetches and reconciles each cluster on its own, as `apply` does. Newest commit wins:
      - a commit that cannot succeed (invalid manifest, a module that does not compile, a module Zato
        refused, an unknown host key) is recorded and waits for a new commit (Stalled in `status`);
      - one that failed for a passing reason (a server unreachable, a confirmation timeout) is retried with
        exponential backoff (retry_backoff doubling up to retry_backoff_max).
    Every drift_interval the servers are compared with the last applied commit: drift is put back
    (`drift: heal`, the default, per cluster in the manifest) or only reported (`drift: report`).

    \b
    Endpoints on --listen: GET /healthz /readyz /metrics /api/status; POST /hooks/github, /hooks/gitlab,
    /hooks/gitea, /hooks/generic (signed with webhook_secret from the --config file). Other settings
    (drift_interval, jitter, retry_backoff, retry_backoff_max, webhook_secret, notify_urls, notify_format,
    job_store) come from the --config file; see deploy/config.example.yaml.

    One daemon per state dir. SIGTERM finishes the current server step, never leaves a server stopped,
    writes the status and exits 0.
    """
    from reconciler.daemon import logsetup as logs
    from reconciler.daemon.loop import Daemon

    settings = make_settings(kw, listen=listen, interval=interval, log_format=log_format)
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    logs.setup(settings.log_format, secrets=[secret] if secret else [])
    sys.exit(Daemon(settings).run())


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (the daemon's /api/status).")
@handle_errors
def status(as_json: bool, **kw: Any) -> None:
    """Each cluster's conditions (Ready, Reconciling, Stalled), revisions and servers.

    Asks the daemon running on the state dir; when none runs, reads what the last one wrote to
    <state_dir>/status.json. Exit 0 when every cluster is Ready, 1 otherwise (or when nothing is known yet).
    """
    from reconciler.daemon.client import call, running_daemon

    settings = make_settings(kw)
    info = running_daemon(settings.state_dir)
    data = call(info, "GET", "/api/status") if info else _stored_status(settings)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_status(data, running=info is not None, state_dir=settings.state_dir)
    clusters = data.get("clusters") or []
    ready = bool(clusters) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in cl["conditions"]) for cl in clusters)
    sys.exit(EXIT_OK if ready else EXIT_ERROR)


def print_status(data: dict[str, Any], *, running: bool, state_dir: Path) -> None:
    from rich.table import Table

    d = data.get("daemon") or {}
    src = data.get("source") or {}
    if running:
        two_nodes = d.get("role") and not str(d.get("role_reason", "")).startswith("single node")
        role = f"; {d['role']}: {d.get('role_reason', '')}" if two_nodes else ""
        out.print(f"daemon pid {d.get('pid')} at {d.get('url')}, started {d.get('started')}{role}")
    else:
        out.print(f"no daemon runs on {state_dir}; as last recorded:")
    out.print(f"branch head {(src.get('revision') or '-')[:12]}, last poll {src.get('last_poll_at_iso') or '-'}")
    if src.get("error"):
        out.print(f"source problem ({src.get('error_kind')}): {src['error']}")
    clusters = data.get("clusters") or []
    if not clusters:
        out.print("no cluster reconciled yet")
        return
    table = Table(show_lines=False, pad_edge=False, box=None)
    for col in ("CLUSTER", "READY", "RECONCILING", "STALLED", "REASON", "APPLIED", "ATTEMPTED", "SUSPENDED",
                "MESSAGE"):
        table.add_column(col)
    for cl in clusters:
        cond = {c["type"]: c for c in cl["conditions"]}
        ready = cond.get("Ready", {})
        table.add_row(
            cl["name"], ready.get("status", "Unknown"), cond.get("Reconciling", {}).get("status", "-"),
            cond.get("Stalled", {}).get("status", "-"), ready.get("reason", "-"),
            (cl.get("last_applied_revision") or "-")[:12], (cl.get("last_attempted_revision") or "-")[:12],
            "yes" if cl.get("suspended") else "no", (ready.get("message") or "")[:200],
        )
    out.print(table)
    servers = Table(box=None, pad_edge=False)
    for col in ("CLUSTER", "SERVER", "STATE", "LAST DEPLOY", "MESSAGE"):
        servers.add_column(col)
    for cl in clusters:
        for name, st in (cl.get("servers") or {}).items():
            servers.add_row(cl["name"], name, st.get("state", "-"), st.get("last_outcome") or "-",
                            (st.get("message") or "")[:120])
    if servers.row_count:
        out.print()
        out.print(servers)
    for cl in clusters:
        if cl.get("drift"):
            dr = cl["drift"]
            out.print(f"{cl['name']}: drift {dr['action']} at {dr.get('found_at_iso')}: {'; '.join(dr['items'])}")


def _stored_status(settings: Settings) -> dict[str, Any]:
    from reconciler.daemon.conditions import StatusStore

    store = StatusStore.for_settings(settings).load()
    if store.db_error:
        raise Transient(f"the state database cannot be used: {store.db_error}",
                        hint="check `state_db` in the config and that the database answers")
    return store.to_dict()


def _set_suspended(clusters: tuple[str, ...], suspended: bool, kw: dict[str, Any]) -> None:
    from reconciler.daemon.client import call, edit_status, running_daemon
    from reconciler.daemon.conditions import StatusStore

    settings = make_settings(kw)
    info = running_daemon(settings.state_dir)
    verb = "suspended" if suspended else "resumed"
    if info is not None:
        call(info, "POST", "/api/suspend" if suspended else "/api/resume", {"clusters": list(clusters)})
        out.print(f"{', '.join(clusters)}: {verb} (daemon pid {info.pid})")
        return

    def edit(store: StatusStore) -> None:
        import time

        for c in clusters:
            store.cluster(c).set_suspended(suspended, time.time())

    edit_status(settings, edit)
    where = "the state database" if settings.shared_state() else f"{settings.state_dir}/status.json"
    out.print(f"{', '.join(clusters)}: {verb} (no daemon runs; recorded in {where})")


@main.command()
@common_options
@click.argument("clusters", nargs=-1, required=True, metavar="CLUSTER...")
@handle_errors
def suspend(clusters: tuple[str, ...], **kw: Any) -> None:
    """Stop the daemon from touching CLUSTER: no deploys, no drift healing, until `resume`.

    For a change window or a hand investigation on the servers. Kept in <state_dir>/status.json, so it holds
    across daemon restarts; `apply` run by hand is not affected.
    """
    _set_suspended(clusters, True, kw)


@main.command()
@common_options
@click.argument("clusters", nargs=-1, required=True, metavar="CLUSTER...")
@handle_errors
def resume(clusters: tuple[str, ...], **kw: Any) -> None:
    """Let the daemon reconcile CLUSTER again; a running daemon reconciles it at once."""
    _set_suspended(clusters, False, kw)


@main.command()
@common_options
@click.argument("clusters", nargs=-1, metavar="[CLUSTER]...")
@handle_errors
def reconcile(clusters: tuple[str, ...], **kw: Any) -> None:
    """Ask the running daemon to reconcile now (every cluster, or the ones named).

    Unlike a poll, this applies the branch head even when it has not moved: servers are observed and put
    back, and a commit that stalled is tried again. Returns at once; follow it with `zato-gitops status`.
    Without a daemon, use `zato-gitops apply`.
    """
    from reconciler.daemon.client import call, running_daemon
    from reconciler.errors import Stalled

    settings = make_settings(kw)
    info = running_daemon(settings.state_dir)
    if info is None:
        raise Stalled(f"no zato-gitops daemon runs on the state dir {settings.state_dir}",
                      hint="start one with `zato-gitops run`, or apply once with `zato-gitops apply`")
    call(info, "POST", "/api/reconcile", {"clusters": list(clusters)} if clusters else {})
    out.print(f"reconcile of {', '.join(clusters) or 'every cluster'} requested from daemon pid {info.pid}")


@main.group(invoke_without_command=True)
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the rollouts as JSON on stdout.")
@click.pass_context
@handle_errors
def rollouts(ctx: click.Context, /, as_json: bool, **kw: Any) -> None:
    """Rolling restarts: list them (pending, running, halted, finished), or resume / cancel one.

    A rolling restart installs static changes (service_sources, extra_paths, service-sources.txt) one server at a
    time. Its progress is kept in the state dir, so one interrupted by a crash resumes where it stopped at the next
    `apply` (or `rollouts resume ID`); one waiting for its `rollout.window` runs in the `zato-gitops run` daemon.
    """
    ctx.ensure_object(dict)
    ctx.obj["kw"] = kw
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    from reconciler.apply.store import RolloutStore
    from reconciler.cli.render import print_rollouts
    from reconciler.engine.chain import StateLock

    settings = make_settings(kw)
    found = RolloutStore.for_settings(settings).all()
    if not StateLock(settings.state_dir).is_held():
        # no run works on the state dir: a rollout still "running" belongs to a run that was killed
        found = [dataclasses.replace(r, status="interrupted", message=r.message or "the run working on it was "
                                     "killed; the next apply resumes it") if r.status == "running" else r
                 for r in found]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
    else:
        print_rollouts(out, found)


@rollouts.command("resume")
@click.argument("rollout_id")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.pass_context
@handle_errors
def rollouts_resume(ctx: click.Context, /, rollout_id: str, as_json: bool) -> None:
    """Run a pending, halted or interrupted rollout now (a pending one skips its window).

    Servers already done are not restarted again; a halted rollout retries the server that failed. Exit 0 when
    the rollout finished, 1 otherwise.
    """
    from reconciler.cli.render import print_rollout_outcome
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(ctx.obj["kw"]), progress)
    interrupt_on_sigterm()
    rollout, outcomes = engine.resume_rollout(rollout_id)
    if as_json:
        click.echo(json.dumps(rollout.to_dict() | {"outcomes": [o.__dict__ for o in outcomes]}, indent=2))
    else:
        print_rollout_outcome(out, rollout, outcomes)
    sys.exit(EXIT_OK if rollout.status == "finished" else EXIT_ERROR)


@rollouts.command("cancel")
@click.argument("rollout_id")
@click.pass_context
@handle_errors
def rollouts_cancel(ctx: click.Context, /, rollout_id: str) -> None:
    """Cancel a pending or halted rollout; its servers keep what they run now."""
    from reconciler.engine.chain import Engine

    rollout = Engine(make_settings(ctx.obj["kw"]), progress).cancel_rollout(rollout_id)
    out.print(f"rollout {rollout.id} of cluster {rollout.cluster}: {rollout.status}")


@main.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editors and CI checks)."""
    from reconciler.manifest.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
