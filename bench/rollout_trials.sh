#!/usr/bin/env bash
# Fault trials for issue 8: sshd killed right after a server's stop (or during its start), and two reconcilers with
# their own state dirs on one static change; TRIALS of each, seeded timing. NOT part of CI; run after
# `bash tests/run.sh` set up .venv:   bash bench/rollout_trials.sh [TRIALS (default 5)] [SEED (default 0)]
# Prints per fault: trials, how many converged (every server on the commit), never two down, history complete.
set -uo pipefail
cd "$(dirname "$0")/.."
export TRIALS=${1:-5} SEED=${2:-0} TRIALS_OUT=${TRIALS_OUT:-$(mktemp /tmp/zg-rollout-trials.XXXXXX)}
run() { .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e/trials_rollout.py "$@" | tail -1; }
TRIGGER=stopped run
TRIGGER=starting run -k kill_sshd
.venv/bin/python - "$TRIALS_OUT" <<'PY'
import collections, json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows:
    by[r["kind"] + (f" after {r['trigger']}" if "trigger" in r else "")].append(r)
for kind, v in sorted(by.items()):
    print(f"{kind}: {len(v)} trials, converged {sum(r['converged'] for r in v)}, never two down "
          f"{sum(r['max_down'] <= 1 for r in v)}, history complete {sum(r['history_complete'] for r in v)}")
two = by.get("two-reconcilers", [])
print(f"two-reconcilers: one refused {sum(r['a_refused'] or r['b_refused'] for r in two)}, "
      f"the second waited and found nothing to do {sum(r['a_exit'] == r['b_exit'] == 0 for r in two)}")
PY
