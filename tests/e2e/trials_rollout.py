"""Fault trials for issue 8, NOT part of CI (the name does not match test_*.py): `bash bench/rollout_trials.sh`.

Two faults, each TRIALS times with seeded random timing, on real sshd and the stand-in:
- kill-sshd: the host of a random server loses its sshd (every connection too) right after that server journals
  TRIGGER (`stopped`, or `starting`: while `zato start` runs), after a random delay; then `apply` or
  `rollouts resume` (at random) once the host is back;
- two-reconcilers: two `apply` processes with their own state dirs on the same static change, started a random gap
  apart, the second with `lease_wait` 0 (refuse) or 30 (wait).
Each trial appends one JSON line to TRIALS_OUT: converged (every server runs the commit's file and service), the
most servers down at once (from the stand-in's journal), whether history has a `ready` restart for every server.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_rollout_faults import INVOICE, STATIC, apply_proc, records
from world import ROOT, World

N = int(os.environ.get("TRIALS", "5"))
SEED = int(os.environ.get("SEED", "0"))
OUT = Path(os.environ.get("TRIALS_OUT", "/tmp/zg-rollout-trials.jsonl"))


def verdict(world: World, kind: str, t0: float, extra: dict[str, object]) -> None:
    converged = all("billing.create-invoice" in s.services()
                    and (s.path / "static" / "billing" / "invoice.py").read_text() == INVOICE for s in world.servers)
    restarts = {x["server"] for x in records(world) if x["action"] == "restart" and x["outcome"] == "ready"}
    row = {"kind": kind, "converged": converged, "max_down": world.max_down_since(t0),
           "history_complete": restarts == {s.name for s in world.servers}, **extra}
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("i", range(N))
def test_kill_sshd(world: World, i: int) -> None:
    rnd = random.Random(SEED + i)
    victim = rnd.randrange(3)
    delay = rnd.choice([0.0, 0.05, 0.2, 0.5])
    trigger = os.environ.get("TRIGGER", "stopped")
    for s in world.servers:
        world.set_faults(s, start_delay=0.3)
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC, rollout={"ready_timeout": 3.0}),
                  "static/billing/invoice.py": INVOICE})
    t0 = time.time()
    proc = apply_proc(world, world.state_dir)
    name = world.servers[victim].name
    while world.events(trigger)[name] == 0 and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    world.hosts[victim].stop()
    proc.communicate(timeout=120)
    world.hosts[victim].start()
    how = rnd.choice(["apply", "resume"])
    _, rollouts = world.cli_json("rollouts")
    if how == "resume" and rollouts and rollouts[0]["status"] != "finished":
        r = world.cli("rollouts", "resume", rollouts[0]["id"])
    else:
        r = world.cli("apply")
    verdict(world, "kill-sshd", t0, {"victim": name, "trigger": trigger, "delay": delay,
                                     "first_exit": proc.returncode, "then": how, "second_exit": r.returncode})


@pytest.mark.parametrize("i", range(N))
def test_two_reconcilers(world: World, i: int) -> None:
    rnd = random.Random(SEED + 100 + i)
    gap = rnd.choice([0.0, 0.1, 0.5, 1.0, 2.0])
    wait = rnd.choice([0, 30])
    for s in world.servers:
        world.set_faults(s, start_delay=0.3)
    world.commit({"zato-gitops.yaml": world.manifest(service_sources=STATIC), "static/billing/invoice.py": INVOICE})
    cfg = world.root.parent / f"{world.root.name}-b.yaml"
    cfg.write_text(yaml.safe_dump({"lease_wait": wait}))
    args = world.common_args()
    args[args.index("--state-dir") + 1] = str(world.root.parent / f"{world.root.name}-state-b")
    t0 = time.time()
    a = apply_proc(world, world.state_dir)
    time.sleep(gap)
    b = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", *args, "--config", str(cfg)], cwd=ROOT,
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=os.environ | {"COLUMNS": "200", "NO_COLOR": "1"})
    _, err_a = a.communicate(timeout=120)
    _, err_b = b.communicate(timeout=120)
    verdict(world, "two-reconcilers", t0, {
        "gap": gap, "lease_wait": wait, "a_exit": a.returncode, "b_exit": b.returncode,
        "a_refused": "is being reconciled by" in err_a, "b_refused": "is being reconciled by" in err_b})
