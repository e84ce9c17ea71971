"""The no-op memo's two foundations (engine/noop.py): the key changes whenever the settings could, and the answer
it keeps for a server is the answer that server gives to the same question while nothing changes on it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.engine.noop import memo_key, state_dir_of
from reconciler.manifest.model import Cluster
from reconciler.observe import OBSERVE_SCRIPT, Answer, fingerprint, observe_server
from reconciler.transport import script_argv
from reconciler.transport.local import LocalTransport
from tests.unit.test_observe import deployed_server


def test_the_key_changes_with_every_input_of_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "zg.yaml"
    config.write_text("confirm_timeout: 30\n")
    opts = {"repo": "/r", "state_dir": tmp_path / "s", "branch": None}
    monkeypatch.chdir(tmp_path)
    key = memo_key(config, opts, ())
    assert key == memo_key(config, dict(opts), ())
    assert memo_key(config, opts | {"branch": "prod"}, ()) != key
    assert memo_key(config, opts, ("prod",)) != key
    assert memo_key(None, opts, ()) != key
    config.write_text("confirm_timeout: 31\n")
    assert memo_key(config, opts, ()) != key
    monkeypatch.setenv("HOME", str(tmp_path))
    changed_home = memo_key(config, opts, ())
    assert changed_home != memo_key(None, opts, ())
    monkeypatch.chdir("/")
    assert memo_key(config, opts, ()) != changed_home  # relative paths in the options would mean another place
    assert memo_key(tmp_path / "missing.yaml", opts, ()) is None


def test_the_key_changes_with_the_reconcilers_code(tmp_path: Path) -> None:
    """An upgrade never trusts an older memo: touching a module of the package changes the key."""
    import reconciler.engine.noop as noop

    before = memo_key(None, {}, ())
    src = Path(noop.__file__)
    st = src.stat()
    try:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        assert memo_key(None, {}, ()) != before
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_state_dir_is_found_where_the_settings_would_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.settings import load_settings

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = tmp_path / "zg.yaml"
    for text, opts in (("repo: /r\n", {}), ("state-dir: /var/zg\n", {}), ("state_dir: /var/zg\n", {}),
                       ("state_dir: /var/zg\n", {"state_dir": tmp_path / "flag"})):
        config.write_text(text)
        assert state_dir_of(config, opts) == load_settings(config, opts).state_dir, text
    assert state_dir_of(None, {}) == load_settings(None, {}).state_dir


def test_the_answer_kept_for_a_server_is_what_asking_again_gives(tmp_path: Path) -> None:
    """Whether the server listed its dirs in full (what we expected was wrong) or answered `@@same`, the kept
    Answer's arguments, sent again, give an answer with the kept fingerprint; a changed file gives another."""
    srv, current = deployed_server(tmp_path)
    servers = [{"name": "s1", "path": str(srv)}]
    cluster = Cluster.model_validate({"name": "prod", "zato_version": "3.2", "servers": servers})
    server = cluster.servers[0]
    answers: dict[tuple[str, str], Answer] = {}
    observe_server(LocalTransport("s1"), cluster, server, cache="ro", answers=answers)  # nothing expected: in full
    kept = answers[("prod", "s1")]
    assert kept.args[3] != "-"  # the next question expects what was listed

    def ask(args: tuple[str, ...]) -> str:
        return subprocess.run(script_argv(OBSERVE_SCRIPT, *args), capture_output=True, check=True).stdout.decode()

    again = ask(kept.args)
    assert "\n@@same\n" in again and fingerprint(again) == kept.fingerprint
    # asked with what was expected, it keeps the same answer
    observe_server(LocalTransport("s1"), cluster, server, cache="ro", answers=answers,
                   expected={"current": {f"m{i}.py": hashlib.sha256(f"x = {i}\n".encode()).hexdigest()
                                         for i in range(3)}, "pickup": {}})
    assert answers[("prod", "s1")] == kept
    # the log grows: the same fingerprint; a module changes: another
    with (srv / "logs" / "server.log").open("a") as f:
        f.write("more\n")
    assert fingerprint(ask(kept.args)) == kept.fingerprint
    (current / "m1.py").write_text("x = 'changed'\n")
    assert fingerprint(ask(kept.args)) != kept.fingerprint


def test_an_apply_that_finds_nothing_to_do_never_imports_the_manifest_model_to_check_its_memo() -> None:
    code = "import sys, reconciler.engine.noop, reconciler.observe; print(sorted(m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pydantic" not in out and "reconciler.manifest" not in out and "reconciler.core.state" not in out


def test_a_host_the_memos_check_could_not_reach_is_not_waited_for_a_second_time(tmp_path: Path) -> None:
    """The pool the check hands over reports a failed connect again at once; a fresh pool tries again."""
    import socket

    from reconciler.errors import Unreachable
    from reconciler.transport import SSHOptions
    from reconciler.transport.ssh import SSHPool

    (tmp_path / "known_hosts").write_text("")
    with socket.socket() as s:  # a port nobody listens on: every connect is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = SSHPool(SSHOptions(known_hosts=tmp_path / "known_hosts", connect_timeout=2))
    t = pool.transport("s1", "127.0.0.1", port, "zato")
    with pytest.raises(Unreachable):
        t.run(["true"])
    slot = next(iter(pool._slots.values()))
    tried = slot.attempts
    with pytest.raises(Unreachable):
        t.run(["true"])
    assert slot.attempts == tried + 1  # a pool that was not handed over tries again
    pool.hand_over()
    with pytest.raises(Unreachable) as e:
        pool.transport("s2", "127.0.0.1", port, "zato").run(["true"])
    assert slot.attempts == tried + 1 and "127.0.0.1" in e.value.message  # reported, not tried again
    pool.close()
