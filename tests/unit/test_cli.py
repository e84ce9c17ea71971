"""The command line's contract (issue 10): one error path, exit codes scripts can trust, one JSON document.

Each case of the issue's "Why" list that needs no SSH server is here, run through click's CliRunner against a
real git repository and stand-in Zato server directories reached with `transport: local` (nothing is faked but
the terminal). Cases that need a real sshd (a port that does not speak SSH) are in tests/e2e/test_cli_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import main
from reconciler.cli.base import EX_USAGE, Reporter
from reconciler.cli.commands import PAGES, page_text
from tests.standin.harness import create_install, create_server
from tests.unit.gitbed import GitBed

SCHEMAS = Path(__file__).resolve().parents[2] / "reconciler" / "cli" / "schemas"

MANIFEST = """version: 1
clusters:
  - name: prod
    zato_version: "3.2"
    transport: local
    zato_command: {zato}
    servers:
      - {{name: server1, path: {s1}}}
    hot_deploy: [services/*.py]
  - name: edge
    zato_version: "3.2"
    transport: local
    zato_command: {zato}
    servers:
      - {{name: gone, path: {gone}}}
    hot_deploy: [services/*.py]
"""


class World:
    def __init__(self, root: Path, bed: GitBed) -> None:
        install = create_install(root / "install")
        s1 = create_server(install, root / "prod" / "server1", name="server1", cluster="prod", odb=root / "odb")
        self.server1 = s1
        self.alive = create_server(install, root / "edge" / "alive", name="alive", cluster="edge", odb=root / "odb2")
        self.bed = bed
        self.state = root / "state"
        self.manifest = MANIFEST.format(zato=install.zato, s1=s1, gone=root / "nowhere" / "gone")
        self.commit = bed.commit({"zato-gitops.yaml": self.manifest, "services/crm.py": "x = 1\n"}, "first")

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, [*args, "--repo", str(self.bed.origin), "--state-dir", str(self.state)],
                                  input=input, catch_exceptions=False)


@pytest.fixture
def world(tmp_path: Path, bed: GitBed) -> World:
    return World(tmp_path, bed)


def doc(result: Result) -> Any:
    """The one JSON document on stdout (json.loads fails on anything else)."""
    return json.loads(result.stdout)


def valid(name: str, data: Any) -> None:
    """Validate against the shipped schema, resolving their references to each other (error.schema.json)."""
    from referencing import Registry, Resource

    loaded = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in loaded.values())
    validator = jsonschema.Draft202012Validator(loaded[f"{name}.schema.json"], registry=registry)
    validator.validate(data)


# --- exit codes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["plan", "--nosuch"], ["nosuch"], ["plan", "--limit", "x"], ["rollouts", "resume"],
                                  ["history", "--limit", "notanumber"], ["completion", "tcsh"]])
def test_usage_errors_exit_64_never_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EX_USAGE
    assert result.stderr.startswith("error: ") and "hint: " in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_with_json_prints_one_document() -> None:
    result = CliRunner().invoke(main, ["plan", "--json", "--nosuch"])
    assert result.exit_code == EX_USAGE
    valid("error", doc(result))
    assert doc(result)["error"].startswith("No such option")


def test_plan_exit_2_and_unreachable_makes_changes_pending_null(world: World) -> None:
    result = world.run("plan", "--json")
    assert result.exit_code == 1, result.stderr  # `edge/gone` could not be observed
    data = doc(result)
    valid("plan", data)
    assert data["changes_pending"] is None and data["complete"] is False
    assert [u["server"] for u in data["unreachable"]] == ["gone"]
    prod = next(c for c in data["clusters"] if c["cluster"] == "prod")
    assert [h["module"] for h in prod["hot_deploys"]] == ["crm.py"]  # the reachable server's change is listed
    only = world.run("plan", "--json", "--cluster", "prod")
    assert only.exit_code == 2 and doc(only)["changes_pending"] is True


def test_a_cluster_with_one_server_down_still_shows_the_others_changes(world: World) -> None:
    world.bed.commit({"zato-gitops.yaml": world.manifest.replace(
        "      - {name: gone,", f"      - {{name: alive, path: {world.alive}}}\n      - {{name: gone,")}, "two in edge")
    result = world.run("plan", "--json", "--cluster", "edge")
    assert result.exit_code == 1
    data = doc(result)
    valid("plan", data)
    assert data["changes_pending"] is None
    (edge,) = data["clusters"]
    assert edge["partial"] is True and edge["unobserved"] == ["gone"]
    assert edge["hot_deploys"][0]["module"] == "crm.py" and edge["hot_deploys"][0]["diffs"][0]["server"] == "alive"
    text = world.run("plan", "--cluster", "edge")
    assert "partial: gone not observed, so apply leaves this cluster alone" in text.stdout
    assert "edge/gone: not observed" in text.stdout


def test_unknown_cluster_lists_the_known_ones(world: World) -> None:
    result = world.run("plan", "--cluster", "prdo")
    assert result.exit_code == 1
    assert "error: no cluster named 'prdo' in zato-gitops.yaml" in result.stderr
    assert "hint: the manifest's clusters are: prod, edge" in result.stderr
    as_json = world.run("apply", "--cluster", "prdo", "--json")
    assert as_json.exit_code == 1 and "prdo" in doc(as_json)["error"]
    valid("error", doc(as_json))


def test_suspend_and_reconcile_check_cluster_names_without_the_network(world: World) -> None:
    nothing_fetched = world.run("suspend", "prdo")  # no clone yet: nothing to check against, recorded as asked
    assert nothing_fetched.exit_code == 0
    world.run("validate")  # fetches the branch into the state dir
    typo = world.run("suspend", "prdo")
    assert typo.exit_code == 1
    assert "error: no cluster named 'prdo'" in typo.stderr and "prod, edge" in typo.stderr
    assert world.run("suspend", "prod").exit_code == 0
    assert "no cluster named 'nosuch'" in world.run("reconcile", "nosuch").stderr


# --- one error path -----------------------------------------------------------------------------------------------

def test_validate_file_binary_and_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--file", "/bin/ls"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the manifest is invalid (1 error):\n  /bin/ls:1: not UTF-8 text")
    as_json = CliRunner().invoke(main, ["validate", "--file", "/bin/ls", "--json"])
    data = doc(as_json)
    valid("validate", data)
    assert data["valid"] is False and data["errors"][0].startswith("/bin/ls:1: not UTF-8")
    good = tmp_path / "m.yaml"
    good.write_text("version: 1\nclusters:\n  - name: a\n    servers: [{name: s, host: h, user: u, path: /p}]\n"
                    "    hot_deploy: [a.py]\n")
    ok = CliRunner().invoke(main, ["validate", "--file", str(good), "--json"])
    assert ok.exit_code == 0 and doc(ok)["valid"] is True
    valid("validate", doc(ok))


def test_validate_the_repository_refuses_a_bad_window_with_its_line(world: World) -> None:
    world.bed.commit({"zato-gitops.yaml": world.manifest.replace(
        "    hot_deploy: [services/*.py]\n  - name: edge",
        "    hot_deploy: [services/*.py]\n    rollout: {window: '61 2 * * *'}\n  - name: edge")}, "bad window")
    result = world.run("validate", "--json")
    assert result.exit_code == 1
    data = doc(result)
    valid("validate", data)
    assert data["errors"] == ["zato-gitops.yaml:10: clusters[0].rollout.window: cron minute field '61': 61 is out "
                              "of range (allowed 0-59)"]


def test_binary_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(b"\x7fELF\x00\xff\xfe")
    result = CliRunner().invoke(main, ["plan", "--config", str(cfg), "--json"])
    assert result.exit_code == 1
    assert f"{cfg}:1: not UTF-8 text" in doc(result)["error"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("listen", "error"), [
    ("foo", "--listen: must be HOST:PORT"),
    ("127.0.0.1:99999", "--listen: the port must be at most 65535, got 99999"),
])
def test_run_listen_garbage(tmp_path: Path, listen: str, error: str) -> None:
    result = CliRunner().invoke(main, ["run", "--listen", listen, "--repo", "x", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and error in result.stderr


def test_run_listen_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["run", "--listen", f"127.0.0.1:{port}", "--repo", "x",
                                           "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "hint: another daemon" in result.stderr


def test_read_only_state_dir(world: World) -> None:
    world.state.mkdir()
    world.state.chmod(0o500)
    state = world.state
    if os.access(world.state, os.W_OK):  # root writes anywhere: sysfs refuses even root a new directory
        state = Path("/sys/zato-gitops-test-state")
    try:
        result = CliRunner().invoke(main, ["apply", "--json", "--repo", str(world.bed.origin), "--state-dir",
                                           str(state)])
    finally:
        world.state.chmod(0o700)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    data = doc(result)
    valid("error", data)
    assert str(state) in data["error"] and data["hint"]
    assert "\nerror: cannot " in result.stderr


def test_rollouts_resume_and_cancel_of_an_unknown_id(tmp_path: Path) -> None:
    for sub in ("resume", "cancel"):
        # common options after the subcommand's own argument
        result = CliRunner().invoke(main, ["rollouts", sub, "nosuch", "--repo", "x", "--state-dir", str(tmp_path),
                                           "--json"])
        assert result.exit_code == 1
        assert doc(result)["error"] == f"'nosuch' names no rollout in the state dir {tmp_path}"
        assert "zato-gitops rollouts" in doc(result)["hint"]


def test_a_bug_is_one_line_and_the_traceback_only_with_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    import reconciler.manifest.schema as schema_module

    def broken() -> dict[str, Any]:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(schema_module, "json_schema", broken)
    plain = CliRunner().invoke(main, ["schema"])
    assert plain.exit_code == 1
    assert plain.stderr.startswith("error: this is a bug in zato-gitops: ZeroDivisionError at ")
    assert "Traceback" not in plain.stderr and "--debug" in plain.stderr
    debug = CliRunner().invoke(main, ["schema", "--debug"])
    assert "Traceback (most recent call last)" in debug.stderr and debug.exit_code == 1


# --- things people expect -----------------------------------------------------------------------------------------

def test_common_options_anywhere_and_quiet(world: World) -> None:
    before = CliRunner().invoke(main, ["-q", "--repo", str(world.bed.origin), "plan", "--state-dir", str(world.state),
                                       "--cluster", "prod"])
    assert before.exit_code == 2 and "> " not in before.stderr
    after = CliRunner().invoke(main, ["plan", "--cluster", "prod", "--repo", str(world.bed.origin), "--state-dir",
                                      str(world.state), "-q"])
    assert after.exit_code == 2 and "> " not in after.stderr
    loud = world.run("plan", "--cluster", "prod")
    assert "> fetching main" in loud.stderr


def test_plan_diff_against_the_version_the_servers_run(world: World) -> None:
    """server1 runs the first commit's crm.py (as deployed); the diff's old side comes from git, found by sha256."""
    (world.server1 / "work" / "hot-deploy" / "current" / "crm.py").write_text("x = 1\n")
    world.bed.commit({"services/crm.py": "x = 2\n", "services/new.py": "y = 1\n"}, "second")
    result = world.run("plan", "--cluster", "prod", "--diff", "--json")
    data = doc(result)
    valid("plan", data)
    by_module = {d["module"]: d for d in data["diffs"]}
    crm, new = by_module["crm.py"], by_module["new.py"]
    assert crm["found"] and crm["old_sha256"] and crm["servers"] == ["server1"]
    assert "--- servers/services/crm.py\n+++ repo/services/crm.py\n" in crm["diff"]
    assert "-x = 1\n+x = 2\n" in crm["diff"]
    assert new["old_sha256"] is None and new["diff"].startswith("--- /dev/null")
    (world.server1 / "work" / "hot-deploy" / "current" / "crm.py").write_text("copied by hand\n")
    unknown = doc(world.run("plan", "--cluster", "prod", "--diff", "--json"))
    assert next(d for d in unknown["diffs"] if d["module"] == "crm.py")["found"] is False
    text = world.run("plan", "--cluster", "prod", "--diff")
    assert "may have been copied by hand" in text.stdout


def test_apply_history_and_rollouts_json_match_their_schemas(world: World) -> None:
    applied = world.run("apply", "--cluster", "prod", "--json", "--timeout", "0.5")
    assert applied.exit_code == 1  # the stand-in server is stopped: the cluster is refused, and recorded
    valid("apply", doc(applied))
    assert doc(applied)["refused"]["prod"]
    history = world.run("history", "--json")
    valid("history", doc(history))
    assert doc(history)[0]["action"] == "refused" and doc(history)[0]["commit"] == world.commit
    rollouts = world.run("rollouts", "--json")
    assert rollouts.exit_code == 0 and doc(rollouts) == []
    valid("rollouts", doc(rollouts))


def test_status_without_a_daemon_uses_the_records(world: World) -> None:
    nothing = world.run("status", "--json")
    assert nothing.exit_code == 1 and doc(nothing)["clusters"] == []
    valid("status", doc(nothing))
    world.run("apply", "--cluster", "prod", "--timeout", "0.5")
    result = world.run("status", "--json")
    data = doc(result)
    valid("status", data)
    assert [c["name"] for c in data["clusters"]] == ["prod"]
    assert data["clusters"][0]["last_attempted_revision"] == world.commit
    text = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["status", "--repo", str(world.bed.origin), "--state-dir",
                                                          str(world.state)])
    assert "prod" in text.stdout and "nothing applied yet" not in text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines()), text.stdout


def test_status_clears_a_stale_reconciling(world: World) -> None:
    world.state.mkdir()
    (world.state / "status.json").write_text(json.dumps({"version": 1, "clusters": [{
        "name": "prod", "conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "",
             "last_transition_time": "2024-01-01T00:00:00Z"},
            {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "applying",
             "last_transition_time": "2024-01-01T00:00:00Z"}]}]}))
    data = doc(world.run("status", "--json"))
    cond = {c["type"]: c for c in data["clusters"][0]["conditions"]}
    assert cond["Reconciling"]["status"] == "False" and cond["Reconciling"]["reason"] == "DaemonStopped"


def test_tables_fit_80_columns_and_keep_the_commit(world: World) -> None:
    world.run("apply", "--cluster", "prod", "--timeout", "0.5")
    env = {"COLUMNS": "80"}
    result = CliRunner(env=env).invoke(main, ["history", "--repo", str(world.bed.origin), "--state-dir",
                                              str(world.state)])
    assert result.exit_code == 0
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    assert world.commit[:8] in result.stdout
    long = "services/" + "customer_relationship_management_" * 3 + "api.py"
    world.bed.commit({long: "x = 1\n"}, "a long path")
    plan = CliRunner(env=env).invoke(main, ["plan", "--cluster", "prod", "--repo", str(world.bed.origin),
                                            "--state-dir", str(world.state)])
    assert plan.exit_code == 2
    assert all(len(line) <= 80 for line in plan.stdout.splitlines()), plan.stdout
    assert long in plan.stdout.replace("\n", "").replace(" ", "")  # folded, not cut


def test_completion_scripts() -> None:
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        result = CliRunner().invoke(main, ["completion", shell])
        assert result.exit_code == 0 and marker in result.stdout and "_ZATO_GITOPS_COMPLETE" in result.stdout


def test_docs_pages_ship_in_the_package() -> None:
    listing = CliRunner().invoke(main, ["docs"])
    assert all(name in listing.stdout for name in PAGES)
    assert "hot_deploy" in page_text("manifest")
    assert "git fetch origin refs/notes/zato-gitops:refs/notes/zato-gitops" in page_text("history")
    assert "Subsystem sftp internal-sftp" in page_text("hosts") and "[10.0.0.12]:2222" in page_text("hosts")
    for name in PAGES:
        assert page_text(name).startswith("# ")
    assert "zato-gitops docs manifest" in CliRunner().invoke(main, ["--help"]).stdout


def test_reporter_shows_elapsed_time_and_acknowledges_the_first_ctrl_c() -> None:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    now = [100.0]
    rep = Reporter(after=3, every=10, console=Console(file=buf, width=200), clock=lambda: now[0])
    rep("prod/server2: waiting for /zato/ping")
    now[0] += 12
    rep.tick()
    assert "prod/server2: waiting for /zato/ping (still waiting, 12 s)" in buf.getvalue()
    rep.on_sigint(signal.SIGINT, None)
    assert rep.stop.is_set()
    assert "finishing the current step (prod/server2: waiting for /zato/ping)" in buf.getvalue()
    assert "Ctrl-C again to abort" in buf.getvalue()
    with pytest.raises(KeyboardInterrupt):
        rep.on_sigint(signal.SIGINT, None)


def test_reporter_installs_and_restores_its_sigint_handler() -> None:
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT)
    with Reporter() as rep:
        assert signal.getsignal(signal.SIGINT) == rep.on_sigint
    assert signal.getsignal(signal.SIGINT) == before
    with Reporter(polite_interrupt=False):  # plan, validate: they change nothing, Ctrl-C stops them at once
        assert signal.getsignal(signal.SIGINT) == before


def test_every_json_command_has_a_schema_and_docs_name_them() -> None:
    from reconciler.cli.commands import main as group

    def walk(cmd: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [path] if any(p.name == "as_json" for p in cmd.params) else []
        for name, sub in getattr(cmd, "commands", {}).items():
            found += walk(sub, (*path, name))
        return found

    with_json = walk(group, ())
    assert with_json
    cli_md = page_text("cli")
    for path in with_json:
        name = "-".join(path)
        assert (SCHEMAS / f"{name}.schema.json").is_file(), f"no schema for `{' '.join(path)} --json`"
        assert f"`{' '.join(path)}" in cli_md


def test_docs_cli_names_every_command_and_option() -> None:
    """docs/cli.md matches click's command tree: every command, every long option, the exit codes."""
    from reconciler.cli.commands import main as group

    cli_md = page_text("cli")

    def walk(cmd: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        found = [(path, cmd)]
        for name, sub in getattr(cmd, "commands", {}).items():
            found += walk(sub, (*path, name))
        return found

    for path, cmd in walk(group, ()):
        if path:
            assert f"`{' '.join(path)}" in cli_md, f"docs/cli.md does not name `{' '.join(path)}`"
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in ("--help", "--version"):
                    assert opt in cli_md, f"docs/cli.md does not mention {opt} of `{' '.join(path)}`"
    for code in ("**1**", "**64**", "**130**", "2 changes pending"):
        assert code in cli_md
    from reconciler.settings import Settings

    for key in Settings.model_fields:
        assert f"`{key}`" in cli_md or f"`--{key.replace('_', '-')} " in cli_md, f"docs/cli.md lacks the setting {key}"


def test_no_command_prints_the_help_and_exits_64() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == EX_USAGE and result.stdout.startswith("Usage: ")
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert CliRunner().invoke(main, ["plan", "--help"]).exit_code == 0


def test_messages_with_brackets_are_printed_as_written(tmp_path: Path) -> None:
    """Rich markup never eats part of a message: `[bold]` in a path stays, as known_hosts' `[host]:port` does."""
    result = CliRunner().invoke(main, ["rollouts", "cancel", "[bold]x", "--repo", "x", "--state-dir", str(tmp_path)])
    assert result.stderr.startswith("error: '[bold]x' names no rollout")


def test_lines_to_a_pipe_skip_rich_and_read_as_rich_writes_them(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli import base

    def lines() -> str:
        base.progress("step [x]")
        base.print_error("boom [bold]\ndetail", "do [this]")
        return capsys.readouterr().err

    plain = lines()
    assert plain == "> step [x]\nerror: boom [bold]\ndetail\nhint: do [this]\n"
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # rich decides (and finds no terminal)
    assert lines() == plain


def test_a_state_database_that_does_not_answer_is_one_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text('repo: x\nstate_db: "postgresql+psycopg://nobody@127.0.0.1:1/x"\n')
    result = CliRunner().invoke(main, ["rollouts", "--config", str(cfg), "--state-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    data = doc(result)
    valid("error", data)
    assert data["error"].startswith("the state database cannot be used: ") and data["kind"] == "Transient"


def test_reporter_on_a_terminal_draws_a_status_line_with_the_elapsed_seconds() -> None:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    now = [0.0]
    console = Console(file=buf, force_terminal=True, width=100)
    rep = Reporter(after=3, console=console, clock=lambda: now[0])
    rep("prod: waiting for server1, server2 to confirm in logs/server.log")
    now[0] = 7
    rep.tick()
    assert rep._status is not None
    now[0] = 9
    rep.tick()
    rep("prod/server1: confirmed crm.py")  # a new step ends the status line
    assert rep._status is None
    assert "(9 s)" in buf.getvalue() or "(7 s)" in buf.getvalue()


@pytest.mark.parametrize(("flags", "shown"), [
    ([], {"warning: the fact cache is stale"}),
    (["-q"], set()),
    (["-v"], {"warning: the fact cache is stale", "re-pointing the clone"}),
])
def test_our_warnings_are_shown_library_logs_never(monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                   shown: set[str]) -> None:
    import logging

    import reconciler.manifest.schema as schema_module

    def logging_schema() -> dict[str, Any]:
        logging.getLogger("reconciler.engine.facts").warning("the fact cache is stale")
        logging.getLogger("reconciler.gitrepo.source").info("re-pointing the clone")
        logging.getLogger("paramiko.transport").error("Exception (client): Error reading SSH protocol banner")
        return {}

    monkeypatch.setattr(schema_module, "json_schema", logging_schema)
    result = CliRunner().invoke(main, ["schema", *flags])
    assert result.exit_code == 0
    for text in ("warning: the fact cache is stale", "re-pointing the clone"):
        assert (text in result.stderr) == (text in shown), result.stderr
    assert "SSH protocol banner" not in result.stderr


def test_every_shipped_schema_is_valid_and_printable() -> None:
    from reconciler.cli.commands import OUTPUTS

    for name in OUTPUTS:
        result = CliRunner().invoke(main, ["schema", name])
        assert result.exit_code == 0
        jsonschema.Draft202012Validator.check_schema(json.loads(result.stdout))
    assert sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")) == sorted(OUTPUTS)
