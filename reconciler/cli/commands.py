"""The `zato-gitops` command: options in, one engine call, rendering out.

Thin on purpose: every command builds `Settings` (config file, then flags), calls the engine and renders. Errors
the user is meant to read (`ReconcilerError`) become one message and a hint on stderr with exit code 1, never a
traceback. Exit codes follow Argo CD's and Terraform's `plan`: 0 nothing to do, 2 changes pending, 1 error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from reconciler import __version__
from reconciler.cli import base
from reconciler.cli.base import (
    EX_USAGE,
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    Cli,
    Reporter,
    common_options,
    daemon_logging,
    emit_json,
    handle_errors,
    make_settings,
    merged,
    output_options,
    print_error,
    progress,
    say,
    verbosity,
    with_elapsed,
    with_reporter,
)
from reconciler.errors import ManifestInvalid, Stalled

if TYPE_CHECKING:  # start-up cost: pydantic and the manifest loader load when a command needs them
    from reconciler.settings import Settings

__all__ = ["EXIT_CHANGES", "EXIT_ERROR", "EXIT_OK", "EX_USAGE", "common_options", "handle_errors", "main",
           "make_settings", "progress"]


def interrupt_on_sigterm() -> None:
    """SIGTERM ends a command the way a second Ctrl-C does, so the engine's record step runs (what was done so
    far is recorded, the rest as `interrupted`)."""
    import signal

    def raise_interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def known_clusters(source: Any, settings: Settings, commit: str, wanted: tuple[str, ...]) -> None:
    """Refuse a --cluster the manifest at `commit` does not name (a typo must not read as "No changes")."""
    if not wanted:
        return
    from reconciler.manifest.loader import load_manifest

    try:
        loaded = load_manifest(source.read(commit, settings.manifest), settings.manifest)
    except (ManifestInvalid, Stalled):
        return  # the command itself reports the manifest's problems
    names = [c.name for c in loaded.manifest.clusters]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise Stalled(
            f"no cluster named {', '.join(map(repr, unknown))} in {settings.manifest} at {commit[:12]}",
            hint=f"the manifest's clusters are: {', '.join(names) or '(none)'}",
        )


def known_clusters_offline(settings: Settings, wanted: tuple[str, ...]) -> None:
    """As `known_clusters`, against the branch head last fetched into the state dir (no network: suspend, resume
    and reconcile work while the git server is down); nothing is checked when nothing was fetched yet."""
    if not wanted or not settings.repo or not (Path(settings.state_dir) / "repo.git").is_dir():
        return
    from reconciler.gitrepo.source import Source

    source = Source(settings.repo, settings.branch, settings.state_dir, ssh_command=settings.git_ssh_command())
    head = source.git("rev-parse", "--verify", "--quiet", f"{source.tracking_ref}^{{commit}}")
    if head.status == 0 and head.out.strip():
        known_clusters(source, settings, head.out.strip(), wanted)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="zato-gitops")
@common_options
def main(**kw: Any) -> None:
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

    \b
    Run `zato-gitops COMMAND --help` for each command's options; `zato-gitops docs manifest` prints the manifest
    reference, `zato-gitops docs` lists the other pages (exit codes, JSON output, troubleshooting).
    Exit codes: 0 success, 1 error, 2 `plan` found changes, 64 usage error, 130 interrupted.
    """


@main.command()
@common_options
@click.option("--file", "file", metavar="MANIFEST", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Validate this manifest file only, without reading the repository.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout.")
@with_elapsed
def validate(file: Path | None, as_json: bool, reporter: Reporter, **kw: Any) -> None:
    """Check the manifest and compile every module at the branch head; touch no server.

    Exit 0 when valid, 1 when not (every problem is listed as FILE:LINE: key.path: message).
    """
    from reconciler.manifest.loader import load_manifest

    if file is not None:
        try:
            loaded = load_manifest(file.read_bytes(), str(file))
        except ManifestInvalid as e:
            _invalid(e, as_json, str(file), None)
        _valid(as_json, str(file), None, loaded.warnings, len(loaded.manifest.clusters), None,
               f"{file}: valid ({len(loaded.manifest.clusters)} clusters)")
        return
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(kw), reporter)
    commit = engine.fetch()
    try:
        desired = engine.desired(commit)
    except Stalled as e:
        _invalid(e, as_json, engine.settings.manifest, commit)
    n = sum(len(c.modules) for c in desired.clusters)
    _valid(as_json, engine.settings.manifest, commit, desired.warnings, len(desired.clusters), n,
           f"commit {commit[:12]}: valid ({len(desired.clusters)} clusters, {n} hot-deploy modules)")


def _invalid(e: Stalled, as_json: bool, file: str, commit: str | None) -> NoReturn:
    """validate's refusal: the error path, with the problems listed in the JSON verdict too."""
    if not as_json:
        raise e
    emit_json({"valid": False, "file": file, "commit": commit, "errors": list(getattr(e, "errors", [e.message])),
               "warnings": [], "error": e.message, "hint": e.hint or None})
    print_error(e.message, e.hint)
    sys.exit(EXIT_ERROR)


def _valid(as_json: bool, file: str, commit: str | None, warnings: Sequence[str], clusters: int,
           modules: int | None, text: str) -> None:
    _warn(warnings)
    if as_json:
        emit_json({"valid": True, "file": file, "commit": commit, "errors": [], "warnings": list(warnings),
                   "clusters": clusters, "modules": modules})
    else:
        base.out.print(text)


def _warn(warnings: Any) -> None:
    if not verbosity.quiet:
        for w in warnings:
            say("warning:", w)


REF_HELP = ("Plan this ref instead of the branch head, fetched from the origin: a branch, a commit SHA, "
            "refs/pull/N/head (GitHub, Gitea) or refs/merge-requests/N/head (GitLab).")


def _planned(engine: Any, ref: str | None, clusters: tuple[str, ...]) -> tuple[Any, Any, str, list[str]]:
    """(plan report, release view, commit, problems): a refused commit gives no report and its problems."""
    from reconciler.errors import ModulesInvalid

    commit = engine.fetch_ref(ref) if ref else engine.fetch()
    known_clusters(engine.source, engine.settings, commit, clusters)
    try:
        report = engine.plan(list(clusters) or None, commit=commit)
    except (ManifestInvalid, ModulesInvalid) as e:
        return None, None, commit, e.errors
    return report, engine.release(report), commit, []


def _markdown(report: Any, release: Any, commit: str, problems: list[str], ref: str) -> str:
    from reconciler.cli.markdown import render

    if report is None:
        return render(None, ref=ref, commit=commit, problems=problems)
    return render(
        release, ref=ref, commit=commit,
        zato_versions={c.cluster: c.zato_version for c in report.plan.clusters},
        unreachable=[(c, s, e.message) for c, s, e in report.unreachable], warnings=list(report.plan.warnings),
    )


@main.command()
@common_options
@click.option("--cluster", "clusters", multiple=True, metavar="NAME", help="Only this cluster (repeatable).")
@click.option("--ref", metavar="REF", help=REF_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              help="text for people, json for scripts, markdown for a pull request comment.  [default: text]")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout (short for --format json).")
@click.option("--diff", "show_diff", is_flag=True,
              help="Show a unified diff of each changed module against the version the servers run.")
@with_elapsed
def plan(clusters: tuple[str, ...], ref: str | None, fmt: str | None, as_json: bool, show_diff: bool,
         reporter: Reporter, **kw: Any) -> None:
    """Show what apply would change on each server, and why, down to Zato services; change nothing.

    For every changed module the plan names the Zato services it adds, changes and removes (read from the
    source, never imported), the servers it reaches and the restarts a static change causes, and it names
    modules still deployed on a server that the commit no longer has.

    Exit 0 when every server runs what the commit says, 2 when changes are pending, 1 on error (including a
    server that could not be observed: the others' changes are still shown, `changes_pending` is null; with
    --format markdown, also a commit that would be refused).
    """
    from reconciler.cli.render import plan_dict, print_plan, print_release
    from reconciler.engine.chain import Engine

    fmt = "json" if as_json else (fmt or "text")
    engine = Engine(make_settings(kw), reporter)
    if fmt == "markdown":
        report, release, commit, problems = _planned(engine, ref, clusters)
        click.echo(_markdown(report, release, commit, problems, ref or engine.settings.branch), nl=False)
        if report is None or not report.complete:
            sys.exit(EXIT_ERROR)
        sys.exit(EXIT_OK if report.plan.empty else EXIT_CHANGES)
    commit = engine.fetch_ref(ref) if ref else engine.fetch()
    known_clusters(engine.source, engine.settings, commit, clusters)
    report = engine.plan(list(clusters) or None, commit=commit)
    release = engine.release(report)
    from reconciler.cli.partial import partial_plans

    partial = partial_plans(engine, report)
    diffs = None
    if show_diff:
        from reconciler.cli.diff import module_diffs

        diffs = module_diffs(engine, report)
    if fmt == "json":
        data = plan_dict(report, partial) | {"ref": ref or engine.settings.branch, "release": release.to_dict()}
        if diffs is not None:
            data["diffs"] = diffs
        emit_json(data)
    else:
        if ref:
            base.out.print(f"{ref} is commit {commit[:12]}; planned against what the servers run now", markup=False)
        print_plan(base.out, report, partial)
        print_release(base.out, release)
        if diffs is not None:
            from reconciler.cli.diff import print_diffs

            print_diffs(base.out, diffs)
    if not report.complete:
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if report.plan.empty else EXIT_CHANGES)


@main.command()
@common_options
@click.option("--ref", metavar="REF", required=True, help=REF_HELP)
@click.option("--pr", "pr", type=int, required=True, metavar="N",
              help="The pull request (GitHub, Gitea) or merge request iid (GitLab) to comment on.")
@click.option("--cluster", "clusters", multiple=True, metavar="NAME", help="Only this cluster (repeatable).")
@with_elapsed
def comment(ref: str, pr: int, clusters: tuple[str, ...], reporter: Reporter, **kw: Any) -> None:
    """Post the plan of REF as a comment on pull request N, or update the one posted before.

    The git host comes from `git_host:` in the --config file (provider github, gitlab or gitea, api_url,
    repository, token_env); the token is read from the environment variable token_env names. zato-gitops keeps
    one comment per pull request, found again by a hidden marker, and edits it on every run.

    Exit 0 when the comment is posted and the plan is complete, 1 when the commit would be refused or a server
    could not be observed (the comment says so), or on error.
    """
    from reconciler.engine.chain import Engine
    from reconciler.githost.client import client_for

    settings = make_settings(kw)
    if settings.git_host is None:
        raise Stalled("no git host configured", hint="add `git_host:` (provider, api_url, repository, token_env) "
                                                    "to the --config file")
    client = client_for(settings.git_host)
    engine = Engine(settings, reporter)
    report, release, commit, problems = _planned(engine, ref, clusters)
    what, cid = client.upsert_comment(pr, _markdown(report, release, commit, problems, ref))
    base.out.print(f"plan of {ref} ({commit[:12]}): comment {cid} {what} on #{pr}", markup=False)
    sys.exit(EXIT_OK if report is not None and report.complete else EXIT_ERROR)


@main.command()
@common_options
@click.option("--cluster", "clusters", multiple=True, metavar="NAME", help="Only this cluster (repeatable).")
@click.option("--timeout", "confirm_timeout", type=float, metavar="SECONDS",
              help="How long every server has to confirm a hot-deploy in its log; wins over the manifest's "
                   "confirm_timeout.  [default: the manifest's, else 60]")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@with_reporter
def apply(clusters: tuple[str, ...], confirm_timeout: float | None, as_json: bool, reporter: Reporter,
          **kw: Any) -> None:
    """Make every server run what the branch head says, and record it as a git note.

    Hot-deploys each changed module through a pickup dir, waits until every server of the cluster logs that it
    deployed it, then writes the outcome to refs/notes/zato-gitops on the commit and pushes it. Exit 0 when every
    server confirmed (or nothing had to change), 1 otherwise.

    After an apply that found nothing to do, the next one with the same commit and settings asks every server the
    same question and, if every answer is the same, says so without planning again ("last found in sync").

    The first Ctrl-C lets the current server step finish (a server is never left stopped) and then stops; a
    second one aborts at once.
    """
    from reconciler.engine import noop

    # nothing to do, provably (engine/noop.py): the same report, without loading the model or planning again
    config, overrides = base.given_settings(kw)
    key = noop.memo_key(config, overrides, clusters)
    same = noop.attempt(key, config, overrides, reporter)
    if not isinstance(same, noop.Declined):
        if as_json:
            emit_json(same[0])
        else:
            base.out.print(same[1])
        sys.exit(EXIT_OK)

    from reconciler.cli.render import apply_dict, no_changes, print_apply
    from reconciler.engine.chain import Engine

    settings = make_settings(kw)
    engine = Engine(settings, reporter, stop=reporter.stop)
    engine.confirm_timeout_override = confirm_timeout
    engine.pool = same.pool
    interrupt_on_sigterm()
    noop.forget(settings.state_dir)
    try:
        commit = engine.fetch_to_apply(fetched=same.fetched)  # an untrusted head is refused here, and recorded
        known_clusters(engine.source, engine.settings, commit, clusters)
        result = engine.apply(list(clusters) or None, commit=commit)
    finally:
        engine.close()  # the commit statuses still queued go out (each a few tries at most)
    report = apply_dict(result)
    noop.remember(engine, settings, key, result, report, no_changes(result.report.commit), clusters)
    if as_json:
        emit_json(report)
    else:
        print_apply(base.out, result)
    sys.exit(EXIT_OK if result.ok else EXIT_ERROR)


@main.command()
@common_options
@click.option("--cluster", metavar="NAME", help="Only records of this cluster.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many records.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON on stdout.")
def history(cluster: str | None, limit: int, as_json: bool, **kw: Any) -> None:
    """The deploy history: what each server got, when and with what outcome, newest first.

    Read from the git notes (refs/notes/zato-gitops) that apply writes; `git log --notes=zato-gitops` shows the
    same records next to the commits. In any other clone, fetch them first:
    `git fetch origin refs/notes/zato-gitops:refs/notes/zato-gitops`.
    """
    from reconciler.cli.render import print_history
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(kw))
    head = engine.source.fetch()
    entries = engine.audit.history(limit=limit, cluster=cluster)
    if cluster and not entries:
        known_clusters(engine.source, engine.settings, head, (cluster,))
    if as_json:
        emit_json([dict(e.record) | {"commit_summary": e.summary} for e in entries])
    else:
        print_history(base.out, entries)


@main.command()
@common_options
@click.option("--to", "to", required=True, metavar="COMMIT", help="The commit whose tree the branch goes back to.")
@click.option("--message", "message", metavar="TEXT", help="First line of the rollback commit's message "
              "(default: Roll back to COMMIT).")
@click.option("--no-apply", "no_apply", is_flag=True,
              help="Only push the rollback commit; the daemon (or a later apply) installs it.")
@click.option("--json", "as_json", is_flag=True, help="Print the rollback (and the apply) as JSON on stdout.")
@with_reporter
def rollback(to: str, message: str | None, no_apply: bool, as_json: bool, reporter: Reporter, **kw: Any) -> None:
    """Roll the branch back to COMMIT through git, then apply it.

    Creates a new commit on the branch whose tree equals COMMIT's tree, with a message naming both commits and who
    ran it, and pushes it (refused, with nothing changed, when the branch moved meanwhile). Then applies it like
    any commit, unless --no-apply. History is never rewritten, so the daemon never undoes a rollback: it is the
    newest commit. Exit 0 when pushed (and applied everywhere), 1 otherwise.
    """
    from reconciler.cli.render import apply_dict, print_apply
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(kw), reporter, stop=reporter.stop)
    try:
        made = engine.rollback(to, message)
        data: dict[str, Any] = {"commit": made.commit, "to": made.to, "from": made.parent, "applied": None}
        if not as_json:
            base.out.print(f"rollback commit {made.commit[:12]}: the tree of {made.to[:12]}, on top of "
                           f"{made.parent[:12]}", markup=False)
        if no_apply:
            if as_json:
                emit_json(data)
            sys.exit(EXIT_OK)
        engine.check_trust(made.commit)  # signed with verify.signing_key when signatures are required
        result = engine.apply(commit=made.commit)
    finally:
        engine.close()
    if as_json:
        emit_json(data | {"applied": apply_dict(result)})
    else:
        print_apply(base.out, result)
    sys.exit(EXIT_OK if result.ok else EXIT_ERROR)


@main.command()
@common_options
@click.option("--listen", metavar="HOST:PORT",
              help="Address of /healthz, /readyz, /metrics, /api/status and the webhooks.  [default: 127.0.0.1:9180]")
@click.option("--interval", type=float, metavar="SECONDS",
              help="Seconds between two polls of the branch head (plus jitter).  [default: 60]")
@click.option("--log-format", "log_format", type=click.Choice(["text", "json"]),
              help="One line per event: text for people, json for log shippers.  [default: text]")
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
    state_db, failover_timeout) come from the --config file; `zato-gitops docs cli` lists them all.

    One daemon per state dir. SIGTERM finishes the current server step, never leaves a server stopped,
    writes the status and exits 0.
    """
    from reconciler.daemon import logsetup as logs
    from reconciler.daemon.client import running_daemon
    from reconciler.daemon.loop import Daemon

    settings = make_settings(kw, listen=listen, interval=interval, log_format=log_format)
    if running_daemon(settings.state_dir) is None:  # else the daemon's own "already running" says it better
        check_listen(settings.listen)
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    logs.setup(settings.log_format, secrets=[secret] if secret else [])
    daemon_logging()  # the daemon's log (journald, not a terminal) keeps every warning, paramiko's included
    sys.exit(Daemon(settings).run())


def check_listen(listen: str) -> None:
    """Refuse an address the daemon could not listen on, before it starts anything."""
    import contextlib
    import socket

    from reconciler.settings import parse_listen

    host, port = parse_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise Stalled(f"cannot listen on {listen}: {host!r} is not an address of this machine ({e.strerror or e})",
                      hint="give --listen an address of this machine, e.g. 127.0.0.1:9180 or 0.0.0.0:9180") from e
    family, kind, proto, _, address = infos[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon's server does
        probe.bind(address)
    except OSError as e:
        why = "the port is in use" if e.errno == 98 else (e.strerror or str(e))
        raise Stalled(f"cannot listen on {listen}: {why}",
                      hint="another daemon (or program) listens there: stop it, or give --listen another port"
                      if e.errno == 98 else "give --listen an address of this machine and a port you may use") from e
    finally:
        with contextlib.suppress(OSError):
            probe.close()


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (the daemon's /api/status).")
def status(as_json: bool, **kw: Any) -> None:
    """Each cluster's conditions (Ready, Reconciling, Stalled), revisions and servers.

    Asks the daemon running on the state dir. When none runs, builds the answer from the state dir: what the last
    daemon wrote (<state_dir>/status.json), and the deploy records of every apply, manual ones included (the git
    notes in the state dir's clone). Exit 0 when every cluster is Ready, 1 otherwise (or when nothing is known yet).
    """
    from reconciler.cli.status import offline_status, print_status
    from reconciler.daemon.client import call, running_daemon

    settings = make_settings(kw)
    info = running_daemon(settings.state_dir)
    data = call(info, "GET", "/api/status") if info else offline_status(settings)
    if as_json:
        emit_json(data)
    else:
        print_status(base.out, data, running=info is not None, state_dir=settings.state_dir)
    clusters = data.get("clusters") or []
    ready = bool(clusters) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in cl["conditions"]) for cl in clusters)
    sys.exit(EXIT_OK if ready else EXIT_ERROR)


def _set_suspended(clusters: tuple[str, ...], suspended: bool, kw: dict[str, Any]) -> None:
    from reconciler.daemon.client import call, edit_status, running_daemon
    from reconciler.daemon.conditions import StatusStore

    settings = make_settings(kw)
    known_clusters_offline(settings, clusters)
    info = running_daemon(settings.state_dir)
    verb = "suspended" if suspended else "resumed"
    if info is not None:
        call(info, "POST", "/api/suspend" if suspended else "/api/resume", {"clusters": list(clusters)})
        base.out.print(f"{', '.join(clusters)}: {verb} (daemon pid {info.pid})")
        return

    def edit(store: StatusStore) -> None:
        import time

        for c in clusters:
            store.cluster(c).set_suspended(suspended, time.time())

    edit_status(settings, edit)
    where = "the state database" if settings.shared_state() else f"{settings.state_dir}/status.json"
    base.out.print(f"{', '.join(clusters)}: {verb} (no daemon runs; recorded in {where})")


@main.command()
@common_options
@click.argument("clusters", nargs=-1, required=True, metavar="CLUSTER...")
def suspend(clusters: tuple[str, ...], **kw: Any) -> None:
    """Stop the daemon from touching CLUSTER: no deploys, no drift healing, until `resume`.

    For a change window or a hand investigation on the servers. Kept in <state_dir>/status.json, so it holds
    across daemon restarts; `apply` run by hand is not affected.
    """
    _set_suspended(clusters, True, kw)


@main.command()
@common_options
@click.argument("clusters", nargs=-1, required=True, metavar="CLUSTER...")
def resume(clusters: tuple[str, ...], **kw: Any) -> None:
    """Let the daemon reconcile CLUSTER again; a running daemon reconciles it at once."""
    _set_suspended(clusters, False, kw)


@main.command()
@common_options
@click.argument("clusters", nargs=-1, metavar="[CLUSTER]...")
def reconcile(clusters: tuple[str, ...], **kw: Any) -> None:
    """Ask the running daemon to reconcile now (every cluster, or the ones named).

    Unlike a poll, this applies the branch head even when it has not moved: servers are observed and put
    back, and a commit that stalled is tried again. Returns at once; follow it with `zato-gitops status`.
    Without a daemon, use `zato-gitops apply`.
    """
    from reconciler.daemon.client import call, running_daemon
    from reconciler.errors import Stalled

    settings = make_settings(kw)
    known_clusters_offline(settings, clusters)
    info = running_daemon(settings.state_dir)
    if info is None:
        raise Stalled(f"no zato-gitops daemon runs on the state dir {settings.state_dir}",
                      hint="start one with `zato-gitops run`, or apply once with `zato-gitops apply`")
    call(info, "POST", "/api/reconcile", {"clusters": list(clusters)} if clusters else {})
    base.out.print(f"reconcile of {', '.join(clusters) or 'every cluster'} requested from daemon pid {info.pid}")


@main.group(invoke_without_command=True)
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the rollouts as JSON on stdout.")
@click.pass_context
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
        emit_json([r.to_dict() for r in found])
    else:
        print_rollouts(base.out, found)


@rollouts.command("resume")
@click.argument("rollout_id")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.pass_context
@with_reporter
def rollouts_resume(ctx: click.Context, /, rollout_id: str, as_json: bool, reporter: Reporter, **kw: Any) -> None:
    """Run a pending, halted or interrupted rollout now (a pending one skips its window).

    Servers already done are not restarted again; a halted rollout retries the server that failed. Exit 0 when
    the rollout finished, 1 otherwise.
    """
    from reconciler.cli.render import print_rollout_outcome
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(merged(ctx.obj["kw"], kw)), reporter, stop=reporter.stop)
    rollout_exists(engine.settings, rollout_id)
    interrupt_on_sigterm()
    try:
        rollout, outcomes = engine.resume_rollout(rollout_id)
    finally:
        engine.close()
    if as_json:
        emit_json(rollout.to_dict() | {"outcomes": [o.__dict__ for o in outcomes]})
    else:
        print_rollout_outcome(base.out, rollout, outcomes)
    sys.exit(EXIT_OK if rollout.status == "finished" else EXIT_ERROR)


@rollouts.command("cancel")
@click.argument("rollout_id")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled rollout as JSON on stdout.")
@click.pass_context
def rollouts_cancel(ctx: click.Context, /, rollout_id: str, as_json: bool, **kw: Any) -> None:
    """Cancel a pending or halted rollout; its servers keep what they run now."""
    from reconciler.engine.chain import Engine

    engine = Engine(make_settings(merged(ctx.obj["kw"], kw)), progress)
    rollout_exists(engine.settings, rollout_id)
    rollout = engine.cancel_rollout(rollout_id)
    if as_json:
        emit_json(rollout.to_dict())
    else:
        base.out.print(f"rollout {rollout.id} of cluster {rollout.cluster}: {rollout.status}")


def rollout_exists(settings: Settings, rollout_id: str) -> None:
    """Refuse an id (or prefix) that names no rollout, or more than one, listing the known ones."""
    from reconciler.apply.store import RolloutStore

    ids = [r.id for r in RolloutStore.for_settings(settings).all()]
    matches = [i for i in ids if i.startswith(rollout_id)] if rollout_id else []
    if len(matches) == 1:
        return
    known = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "") if ids else "none yet"
    what = "names more than one rollout" if matches else "names no rollout"
    raise Stalled(f"{rollout_id!r} {what} in the state dir {settings.state_dir}",
                  hint=f"`zato-gitops rollouts` lists them (known ids: {known})")


def output_schema(name: str) -> str:
    from importlib.resources import files

    return files("reconciler.cli").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")


#: the --json outputs whose JSON Schema ships in reconciler/cli/schemas/ (rollback: the command h11 adds)
OUTPUTS = ("apply", "error", "history", "plan", "rollback", "rollouts", "rollouts-cancel", "rollouts-resume",
           "status", "validate")


@main.command()
@click.argument("output", required=False, type=click.Choice(OUTPUTS))
@output_options
def schema(output: str | None) -> None:
    """Print the manifest's JSON Schema (for editors and CI checks), or that of a command's --json OUTPUT.

    `zato-gitops schema plan` describes what `plan --json` prints; `schema error` what every --json command
    prints when it fails. The files ship in the package (reconciler/cli/schemas/).
    """
    if output is not None:
        click.echo(output_schema(output), nl=False)
        return
    from reconciler.manifest.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()


#: `zato-gitops docs PAGE`: the pages shipped in the package (reconciler/cli/pages/), with what each is for
PAGES = {
    "manifest": "the manifest reference: every key of zato-gitops.yaml, with examples",
    "cli": "commands, options, exit codes, JSON output and the deploy record format",
    "hosts": "preparing your Zato hosts: the SSH user, known_hosts, server names, transport: local",
    "troubleshooting": "every error message and what to do about it",
    "history": "reading the deploy history from any clone (the notes refspec to fetch)",
    "releases": "releasing by pull request: plan a ref in Zato services, the PR comment, commit statuses, signed "
                "history, rollback, modules that left git",
}


def page_text(name: str) -> str:
    from importlib.resources import files

    return files("reconciler.cli").joinpath("pages", f"{name}.md").read_text(encoding="utf-8")


@main.command()
@click.argument("page", required=False, type=click.Choice(sorted(PAGES)))
@output_options
def docs(page: str | None) -> None:
    """Print a documentation page shipped with zato-gitops (the manifest reference, exit codes, ...).

    Without PAGE, lists the pages. `zato-gitops docs manifest | less` reads the manifest reference.
    """
    if page is None:
        for name, what in PAGES.items():
            base.out.print(f"{name:16} {what}", highlight=False)
        return
    click.echo(page_text(page), nl=False)


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@output_options
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(zato-gitops completion bash)"        (e.g. in ~/.bashrc)
    zsh:   eval "$(zato-gitops completion zsh)"         (e.g. in ~/.zshrc)
    fish:  zato-gitops completion fish > ~/.config/fish/completions/zato-gitops.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above lists only shells click supports
    ctx = click.get_current_context()
    click.echo(cls(main, {}, "zato-gitops", "_ZATO_GITOPS_COMPLETE").source())
    ctx.exit(EXIT_OK)
