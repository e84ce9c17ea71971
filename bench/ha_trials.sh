#!/usr/bin/env bash
# Fault trials for two nodes (issue 12): SIGKILL the leader while each server in turn restarts, ROUNDS times
# each, and print the take-over time of every trial and how many converged (every server restarted once, never
# two down, history without a gap, the rollout finished). NOT part of CI; run after `bash tests/run.sh` set up
# .venv and PostgreSQL:  bash bench/ha_trials.sh [ROUNDS] [FAILOVER_TIMEOUT (s, default 3; the product's is 15)]
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export ZG_HA_FAILOVER_TIMEOUT=${2:-3}
pass=0; fail=0
for at in server1 server2 server3; do
  for _ in $(seq "$rounds"); do
    out=$(ZG_HA_KILL_AT=$at .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/e2e/test_ha.py -k killed 2>&1)
    if [ $? -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "$out" | tail -30; fi
    echo "$out" | grep -o 'take-over .*'
  done
done
echo "converged: $pass of $((pass + fail))"
