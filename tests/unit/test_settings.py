"""Settings: the config file gives defaults, flags win, mistakes are named, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import Stalled
from reconciler.settings import load_settings


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("repo: /srv/services.git\nbranch: release\nconfirm-timeout: 30\nwebhook_secret: s3cr3t\n")
    s = load_settings(cfg, {"branch": "main", "repo": None})
    assert s.repo == "/srv/services.git"  # not given as a flag: from the file
    assert s.branch == "main"  # given as a flag: wins
    assert s.confirm_timeout == 30
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.model_dump())
    assert s.webhook_secret is not None and s.webhook_secret.get_secret_value() == "s3cr3t"


def test_unknown_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("repo: x\nintervall: 5\nparallelism: 0\n")
    with pytest.raises(Stalled) as e:
        load_settings(cfg, {})
    assert f"{cfg}:2: intervall: unknown key; allowed: repo," in e.value.message
    assert f"{cfg}:3: parallelism: must be at least 1, got the number 0" in e.value.message


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("repo: [unclosed\n")
    with pytest.raises(Stalled, match=r"config.yaml:2: expected ',' or '\]'"):
        load_settings(cfg, {})
    cfg.write_text("- a list\n")
    with pytest.raises(Stalled, match="expected a mapping"):
        load_settings(cfg, {})


def test_git_ssh_command_uses_the_same_key_and_strict_known_hosts(tmp_path: Path) -> None:
    s = load_settings(None, {"identity": tmp_path / "key", "known_hosts": tmp_path / "kh"})
    cmd = s.git_ssh_command()
    assert "StrictHostKeyChecking=yes" in cmd and f"UserKnownHostsFile={tmp_path / 'kh'}" in cmd
    assert f"-i {tmp_path / 'key'}" in cmd and "BatchMode=yes" in cmd
