"""A real git bed for the unit tests of source and audit: a bare origin and a working clone that pushes to it,
with git made hermetic (no global or system config, a fixed identity)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reconciler.gitrepo.source import Source

HERMETIC_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ann Author",
    "GIT_AUTHOR_EMAIL": "ann@example.com",
    "GIT_COMMITTER_NAME": "Ann Author",
    "GIT_COMMITTER_EMAIL": "ann@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **HERMETIC_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


class GitBed:
    """A bare origin (`origin.git`, branch main) and a working clone (`work`) that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.origin = root / "origin.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.origin))
        git("init", "--quiet", "--initial-branch=main", str(self.work))
        git("remote", "add", "origin", str(self.origin), cwd=self.work)

    def commit(self, files: dict[str, str | None], message: str, branch: str = "main") -> str:
        """Write (or with None, delete) files, commit and push; returns the new commit's sha."""
        for path, content in files.items():
            target = self.work / path
            if content is None:
                git("rm", "--quiet", path, cwd=self.work)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            git("add", path, cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def source(self, name: str = "state", branch: str = "main", *, committer_name: str | None = None,
               committer_email: str | None = None) -> Source:
        return Source(str(self.origin), branch, self.root / name, committer_name=committer_name,
                      committer_email=committer_email)
