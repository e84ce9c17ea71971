#!/usr/bin/env bash
# Benchmarks: zato-gitops against ansible-core, pyinfra and a bare paramiko floor (see bench/README.md).
#
# NOT part of CI: a full run takes about 20 minutes on 2 cores, most of it ansible.builtin.copy and pyinfra.
# Run as root on a Debian/Ubuntu machine with Python >= 3.11, git, openssh-server and this project's
# dependencies installed (bash tests/run.sh installs them). Arguments are passed to bench.py, e.g.:
#   bash bench/run.sh --tools zato-gitops,floor --rounds 5
#   bash bench/run.sh --scale                      # the scale matrix (bench/scale.py), about 45 minutes
#   bash bench/run.sh --scale --servers 1,10 --profile
#
# Each tool gets its own virtualenv under bench/.venvs (gitignored): pyinfra 3.10 needs paramiko<5, which
# cannot share an environment with the paramiko 5 that zato-gitops uses. Only PyPI is needed: ansible-core
# alone (no `ansible-galaxy collection install`, so ansible.builtin.copy, not ansible.posix.synchronize).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
venvs="$here/.venvs"

venv() {  # venv NAME PACKAGE... : create bench/.venvs/NAME once and install the packages into it
    local name=$1; shift
    if [ ! -x "$venvs/$name/bin/python" ]; then
        "$python" -m venv "$venvs/$name"
    fi
    "$venvs/$name/bin/pip" install --quiet --disable-pip-version-check "$@"
}

if [ "$(id -u)" != 0 ]; then
    echo "run.sh: run as root (the SSH test bed creates a dedicated test user)" >&2
    exit 1
fi
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || {
    echo "run.sh: needs openssh-server: apt-get install -y --no-install-recommends openssh-server" >&2
    exit 1
}

echo "== virtualenvs in $venvs"
venv ansible 'ansible-core>=2.19,<2.20'
venv pyinfra 'pyinfra>=3.10,<4' 'paramiko<5'

if [ "${1:-}" = "--scale" ]; then
    shift
    command -v rsync >/dev/null || { echo "run.sh: --scale needs rsync: apt-get install -y rsync" >&2; exit 1; }
    venv ansible-full 'ansible>=12'         # ansible.posix.synchronize ships in the community package
    venv tools matplotlib py-spy            # the plot and the profiler: never the project's dependencies
    echo "== scale.py $*"
    cd "$here/.."
    exec "$python" bench/scale.py "$@"
fi

echo "== bench.py $*"
cd "$here/.."
exec "$python" bench/bench.py "$@"
