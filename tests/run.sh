#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian/Ubuntu machine with Python >= 3.11.
# Installs what the tests need when it is missing (OpenSSH server for the end-to-end tests, HAProxy for the drain
# test, PostgreSQL for the two-node tests, git, gnupg for the signature tests, mawk and gawk for the observe
# script), makes a virtualenv in .venv, installs the project with its test extras, then runs ruff, mypy --strict
# and pytest. Extra arguments go to pytest (e.g. `bash tests/run.sh -k hot_deploy`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v git >/dev/null || missing+=(git)
# signed-history tests sign commits with gpg (and with ssh-keygen, from openssh-client)
{ command -v gpg >/dev/null && command -v gpg-agent >/dev/null; } || missing+=(gnupg)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# the Zato stand-in runs as an unprivileged test user with the system's python3
[ -x /usr/bin/python3 ] || missing+=(python3)
command -v runuser >/dev/null || missing+=(util-linux)
# the observe script is tested under both awks a Zato host may have: mawk (Debian, Ubuntu) and gawk (RHEL)
command -v mawk >/dev/null || missing+=(mawk)
command -v gawk >/dev/null || missing+=(gawk)
# the high-availability tests start a private PostgreSQL server (tests/e2e/pgbed.py); no system cluster is used
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"; .venv/bin/ruff check reconciler tests bench deploy
echo "== mypy --strict"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
