"""The observe script run by the real sh on a real server directory layout, and its parser."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.core.state import ObservedServer
from reconciler.errors import Stalled
from reconciler.manifest.model import Cluster
from reconciler.observe import OBSERVE_SCRIPT, parse_observation
from reconciler.transport import script_argv

CONF = """[main]
gunicorn_bind=0.0.0.0:17011
work_dir = {work}
service_sources=./service-sources.txt

[hot_deploy]
pickup_dir={pickup}
backup_history=100
delete_after_pick_up=False
current_work_dir=./hot-deploy/current
"""


def make_server(root: Path, work: str = "../../work", pickup: str = "../../pickup/incoming/services") -> Path:
    (root / "config" / "repo").mkdir(parents=True)
    (root / ".zato-info").write_text(json.dumps({"version": "3.2", "component": "SERVER"}))
    (root / "config" / "repo" / "server.conf").write_text(CONF.format(work=work, pickup=pickup))
    (root / "logs").mkdir()
    (root / "logs" / "server.log").write_text("x" * 1234)
    (root / "pidfile").write_text(str(os.getpid()))
    return root


def observe(root: Path, version: str = "3.2") -> ObservedServer:
    cluster = Cluster.model_validate(
        {"name": "prod", "zato_version": version, "servers": [{"name": "s1", "path": str(root)}]}
    )
    out = subprocess.run(script_argv(OBSERVE_SCRIPT, str(root)), capture_output=True, check=True).stdout
    return parse_observation(cluster, cluster.servers[0], out.decode())


def test_default_layout_resolves_relative_to_config_repo(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "server1")
    current = srv / "work" / "hot-deploy" / "current"
    current.mkdir(parents=True)
    (current / "a.py").write_bytes(b"a = 1\n")
    (current / "notes.txt").write_text("ignored")
    pickup = srv / "pickup" / "incoming" / "services"
    pickup.mkdir(parents=True)
    (pickup / "demo.py").write_bytes(b"d\n")
    obs = observe(srv)
    assert obs.paths.pickup_dir == str(pickup)
    assert obs.paths.work_dir == str(srv / "work")
    assert obs.deployed == {"a.py": hashlib.sha256(b"a = 1\n").hexdigest()}
    assert obs.pickup == {"demo.py": hashlib.sha256(b"d\n").hexdigest()}
    assert obs.log.size == 1234
    assert obs.running is True
    assert obs.paths.bind == "0.0.0.0:17011"
    assert obs.zato_version == "3.2"


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    srv = make_server(tmp_path / "s", work=str(tmp_path / "elsewhere" / "work"), pickup="~/pickup")
    obs = observe(srv)
    assert obs.paths.work_dir == str(tmp_path / "elsewhere" / "work")
    assert obs.paths.pickup_dir == str(tmp_path / "home" / "pickup")
    assert obs.deployed == {}


def test_41_runs_what_is_in_the_pickup_dir(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "s")
    pickup = srv / "pickup" / "incoming" / "services"
    pickup.mkdir(parents=True)
    (pickup / "m.py").write_bytes(b"m\n")
    obs = observe(srv, "4.1")
    assert obs.deployed == {"m.py": hashlib.sha256(b"m\n").hexdigest()}


def test_not_a_zato_dir_and_missing_dir_are_stalled_with_server_name(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(Stalled, match=r"prod/s1: .* doesn't seem to belong to a Zato component"):
        observe(tmp_path / "plain")
    with pytest.raises(Stalled, match=r"prod/s1: the server directory .* does not exist"):
        observe(tmp_path / "nope")


def test_dead_pid_is_not_running(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "s")
    (srv / "pidfile").write_text("999999999")
    assert observe(srv).running is False


QUICKSTART_SOURCES = "# List your service sources below, each on a separate line.\n\n./work/hot-deploy/current"


@pytest.mark.parametrize(
    "text",
    [
        QUICKSTART_SOURCES,  # a fresh quickstart: no newline after the last line
        QUICKSTART_SOURCES.replace("\n", "\r\n") + "\r\n",  # CRLF
        QUICKSTART_SOURCES + "  \t\n   \n\n",  # trailing blanks and blank lines
        QUICKSTART_SOURCES + "\n",
    ],
    ids=["no-final-newline", "crlf", "trailing-blanks", "tidy"],
)
def test_service_sources_is_read_byte_for_byte_however_it_ends(tmp_path: Path, text: str) -> None:
    """The marker after the file is never glued to its last entry, and the text comes back exactly as it is."""
    srv = make_server(tmp_path / "server1")
    (srv / "config" / "repo" / "service-sources.txt").write_bytes(text.encode())
    obs = observe(srv)
    assert obs.sources_text == text
    assert obs.log.size == 1234  # the sections after it were read


def test_the_running_servers_environment_and_pickup_conf_name_the_folders_it_really_watches(tmp_path: Path) -> None:
    """Zato_Config_Server_... overrides server.conf's pickup dir; Zato_Hot_Deploy_Dir (several, `:`-joined) and
    pickup.conf's user sections are extra folders. Other variables of the process are never read out."""
    srv = make_server(tmp_path / "server1")
    (srv / "config" / "repo" / "pickup.conf").write_text(
        "[json]\npickup_from=./ignored\n\n[hot-deploy.user.mine]\npickup_from = ./mine\r\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "Zato_Config_Server_server__conf_hot_deploy_pickup_dir": "/srv/real-pickup",
        "Zato_Hot_Deploy_Dir": "/srv/a:relative/b",
        "Zato_Secret_Password": "hunter2",
    }
    proc = subprocess.Popen(["sleep", "30"], env=env)
    try:
        (srv / "pidfile").write_text(str(proc.pid))
        cluster = Cluster.model_validate({"name": "prod", "servers": [{"name": "s1", "path": str(srv)}]})
        out = subprocess.run(script_argv(OBSERVE_SCRIPT, str(srv)), capture_output=True, check=True).stdout.decode()
        obs = parse_observation(cluster, cluster.servers[0], out)
    finally:
        proc.kill()
        proc.wait()
    assert "hunter2" not in out
    assert obs.environ == "read" and obs.running
    assert obs.paths.pickup_dir == "/srv/real-pickup"
    assert obs.overrides == ("hot_deploy.pickup_dir",)
    assert obs.extra_pickup == ("/srv/a", f"{srv}/relative/b", f"{srv}/config/repo/mine")


def test_a_stopped_server_has_no_environment_to_read(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "server1")
    (srv / "pidfile").unlink()
    obs = observe(srv)
    assert (obs.environ, obs.overrides, obs.extra_pickup, obs.ipc_port_start) == ("none", (), (), "")


def test_ipc_port_start_is_read_from_whichever_section_holds_it(tmp_path: Path) -> None:
    srv = make_server(tmp_path / "server1")
    conf = srv / "config" / "repo" / "server.conf"
    conf.write_text(conf.read_text() + "\n[misc]\nipc_port_start = 17050\r\n")
    assert observe(srv).ipc_port_start == "17050"
