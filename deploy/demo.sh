#!/usr/bin/env bash
# A full reconcile on this machine, with no Zato installed: installs zato-gitops into .venv, builds a local services
# repository and a stand-in cluster of three Zato 3.2 servers (tests/standin), reached through the `local`
# transport, and runs validate, plan, apply, plan again and history. Everything lives in a temp dir that is
# removed at the end (pass --keep to keep it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
command -v git >/dev/null || { echo "git is needed: apt-get install -y git" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
.venv/bin/python -m pip install -q -e . >/dev/null
exec .venv/bin/python deploy/demo.py "$@"
