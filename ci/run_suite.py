"""Run a fault-injection suite: ``sudo python -m ci.run_suite ci/suites/<name>.yaml [--out DIR]``.

A suite names a topology, a fault schedule, the training arguments and the invariants to check
(ci/checks.py). It runs ``chaos-testbed run`` with a real elastic ``horovodrun`` (or ``chaos-hvdrun``) of
examples/train_elastic.py using ChaosState, then checks the timeline and the event log.
Exit status 0 = every invariant held; the failures are printed otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from chaos_hvd.events import read_events

from . import checks
from .suite import Suite, SuiteError, load_suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def horovod_command(suite: Suite) -> list[str]:
    return [suite.launcher, "-np", "{np}", "--min-np", str(suite.min_np),
            "--max-np", "{max_np}", "--host-discovery-script", "{discovery}",
            "--network-interface", "eth0", "--gloo-timeout-seconds", str(suite.gloo_timeout_s),
            "python", os.path.join(REPO, "examples", "train_elastic.py"), *suite.train]


def run(path: str, out: str | None = None) -> tuple[list[str], dict]:
    from testbed.cli import main as testbed_main
    suite = load_suite(path)
    # a worker whose collective outlives the crash watch's abort logs its C++ stacks (gdb)
    os.environ.setdefault("CHAOS_NATIVE_STACKS", "1")
    out = out or os.path.join(REPO, "results", f"ci-{suite.name}-{time.strftime('%H%M%S')}")
    argv = ["run", os.path.join(REPO, suite.topology), "--out", out,
            "--timeout", str(suite.timeout_s)]
    if suite.faults:
        argv += ["--faults", os.path.join(REPO, suite.faults)]
    if suite.agents is not None:     # discovery from cluster agents, with these agent options
        argv.append("--agents")
        argv += [f"--agent-opt={k}={v}" for k, v in suite.agents.items()]
    rc = testbed_main(argv + ["--"] + horovod_command(suite))
    timeline = read_events(os.path.join(out, "timeline.jsonl"))
    events_path = os.path.join(out, "events.jsonl")
    events = read_events(events_path) if os.path.exists(events_path) else []
    agents_path = os.path.join(out, "agents.jsonl")
    agent_events = read_events(agents_path) if os.path.exists(agents_path) else []
    from testbed.topology import load_topology
    nodes = load_topology(os.path.join(REPO, suite.topology)).nodes
    ip = {n.name: n.ip for n in nodes}
    slots = {n.ip: n.slots for n in nodes if n.role == "worker"}
    failures = checks.check_run(timeline, events, suite.expect, agent_events, ip, slots)
    if rc != 0 and not failures:
        failures.append(f"chaos-testbed run exited with {rc}")
    return failures, {"out": out, "rc": rc, "timeline": timeline, "events": events}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    try:
        suite = load_suite(args.suite)
    except SuiteError as e:
        print(f"ci.run_suite: {e}", file=sys.stderr)
        return 2
    failures, result = run(args.suite, args.out)
    kinds = tuple(suite.expect.get("recovery_from", ["crash"]))
    recovered = checks.recovery_times(result["timeline"], result["events"], kinds)
    summary = {"suite": args.suite, "ok": not failures, "failures": failures,
               "recovery_s": [[what, None if t is None else round(t, 2)] for what, t in recovered],
               "out": result["out"]}
    print(json.dumps(summary))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
