"""The CI examples in deploy/ci/ are valid YAML, run `zato-gitops comment` on every PR/MR with the right ref, and
write a `git_host` config that our settings model accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.settings import GitHost

CI = Path(__file__).resolve().parents[2] / "deploy" / "ci"


def scripts(doc: Any) -> str:
    if isinstance(doc, dict):
        return "\n".join(scripts(v) for v in doc.values())
    if isinstance(doc, list):
        return "\n".join(scripts(v) for v in doc)
    return str(doc)


@pytest.mark.parametrize(("name", "provider", "ref"), [
    ("github-actions.yml", "github", "refs/pull/$PR/head"),
    ("gitea-actions.yml", "gitea", "refs/pull/$PR/head"),
    ("gitlab-ci.yml", "gitlab", "refs/merge-requests/${CI_MERGE_REQUEST_IID}/head"),
])
def test_ci_example(name: str, provider: str, ref: str) -> None:
    doc = yaml.safe_load((CI / name).read_text())
    text = scripts(doc)
    assert "zato-gitops comment" in text and f'--ref "{ref}"' in text and "--pr " in text
    block = re.search(r"<<CONFIG\n(.*?)\n\s*CONFIG", text, re.DOTALL)
    assert block is not None
    config = yaml.safe_load(re.sub(r"\$\{\{[^}]*\}\}|\$\{[^}]*\}", "x", block.group(1)).replace('"x"', "x"))
    host = GitHost.model_validate(config["git_host"])
    assert host.provider == provider and host.token_env == "ZATO_GITOPS_TOKEN"
    if provider != "gitlab":
        assert doc[True]["pull_request"]["types"] == ["opened", "synchronize", "reopened"]  # `on:` is YAML true
    else:
        assert doc["zato-gitops-plan"]["rules"][0]["if"] == '$CI_PIPELINE_SOURCE == "merge_request_event"'
