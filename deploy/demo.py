"""The README's first command: a whole reconcile on one machine, against a stand-in Zato cluster.

It shows what a user sees: the plan for a fresh commit, apply with its per-server outcome, an empty second
plan, a changed module redeployed alone, and the deploy history read back from the git notes. The servers are the
test suite's stand-in (tests/standin), reached through the reconciler's real `local` transport.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.zato.logscan import clean_line  # noqa: E402
from tests.standin.harness import create_cluster  # noqa: E402

CRM = '''from zato.server.service import Service


class GetCustomer(Service):
    """Returns a customer by id."""

    def handle(self):
        self.response.payload = {"id": self.request.input.get("id"), "name": "Alice"}
'''

BILLING = '''from zato.server.service import Service


class CreateInvoice(Service):
    name = "billing.create-invoice"

    def handle(self):
        self.response.payload = {"status": "created"}
'''


REPORTS = '''from zato.server.service import Service


class DailyReport(Service):
    name = "reports.daily"

    def handle(self):
        self.response.payload = {"orders": 42}
'''


def banner(text: str) -> None:
    print(f"\n\033[1m$ {text}\033[0m", flush=True)


def run(cmd: list[str], cwd: Path | None = None, show: str | None = None) -> int:
    banner(show or " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, check=False).returncode


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def main() -> int:
    keep = "--keep" in sys.argv
    base = Path(tempfile.mkdtemp(prefix="zato-gitops-demo-"))
    os.environ.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Demo Dev",
                      GIT_AUTHOR_EMAIL="dev@example.com", GIT_COMMITTER_NAME="Demo Dev",
                      GIT_COMMITTER_EMAIL="dev@example.com")
    cluster = create_cluster(base / "zato", 3, version="3.2", cluster="prod")
    try:
        print(f"Starting three stand-in Zato 3.2 servers under {base / 'zato'} ...", flush=True)
        cluster.start_all()
        repo = base / "services-repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "services").mkdir()
        (repo / "services" / "crm.py").write_text(CRM)
        (repo / "services" / "billing.py").write_text(BILLING)
        servers = "\n".join(
            f"      - name: {s.name}\n        path: {s.path}" for s in cluster.servers
        )
        (repo / "zato-gitops.yaml").write_text(
            "version: 1\nclusters:\n  - name: prod\n    zato_version: \"3.2\"\n"
            f"    zato_command: {cluster.install.zato}\n    transport: local\n    servers:\n{servers}\n"
            "    hot_deploy:\n      - services/*.py\n"
        )
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "Add CRM and billing services")
        zg = [str(Path(sys.executable).with_name("zato-gitops"))]
        opts = ["--repo", str(repo), "--state-dir", str(base / "state")]
        short = "zato-gitops {} --repo services-repo"
        print(f"\nThe services repository ({repo}):")
        print((repo / "zato-gitops.yaml").read_text())
        run([*zg, "validate", *opts], show=short.format("validate"))
        run([*zg, "plan", *opts], show=short.format("plan"))
        rc = run([*zg, "apply", *opts], show=short.format("apply"))
        run([*zg, "plan", *opts], show=short.format("plan") + "   # again: nothing to do")
        (repo / "services" / "crm.py").write_text(CRM.replace('"Alice"', '"Alice Smith"'))
        git(repo, "commit", "-q", "-am", "CRM: full customer name")
        banner("git commit -am 'CRM: full customer name'")
        run([*zg, "apply", *opts], show=short.format("apply") + "   # only crm.py is redeployed")
        git(repo, "config", "receive.denyCurrentBranch", "updateInstead")  # the demo pushes into its checkout
        first = subprocess.run(["git", "rev-parse", "--short", "HEAD~1"], cwd=repo, check=True, capture_output=True,
                               text=True).stdout.strip()
        run([*zg, "rollback", "--to", first, "--message", "Back to the short name", *opts],
            show=short.format(f"rollback --to {first}") + "   # a new commit with the old tree, then applied")
        (repo / "static" / "reports").mkdir(parents=True)
        (repo / "static" / "reports" / "daily.py").write_text(REPORTS)
        with (repo / "zato-gitops.yaml").open("a") as f:
            f.write("    service_sources:\n      - path: static/reports\n        target: ./static/reports\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "Reports, installed through service-sources.txt")
        banner("git commit -m 'Reports, installed through service-sources.txt'")
        run([*zg, "plan", *opts], show=short.format("plan") + "   # a static change: restart required")
        rc = run([*zg, "apply", *opts], show=short.format("apply") + "   # a rolling restart, one server at a time")
        run([*zg, "history", *opts], show=short.format("history"))
        run(["git", "--no-pager", "log", "--notes=zato-gitops", "-1", "--format=%h %s%n%N"], cwd=repo,
            show="git log --notes=zato-gitops -1")
        print("\nEvery server confirmed in its logs/server.log, e.g. server3 (Zato's colour codes stripped):")
        for line in map(clean_line, cluster.servers[2].log_text().splitlines()):
            if ("Deployed" in line and "service" in line) or "Started `" in line:
                print("  " + line)
        print("\nIts service-sources.txt, with the reconciler's block kept before the hot-deploy line:")
        print((cluster.servers[2].path / "config" / "repo" / "service-sources.txt").read_text())
        return rc
    finally:
        cluster.cleanup()
        if keep:
            print(f"\nkept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
