"""State sync to a joiner over docs/baseline-measurements.md's emulated edge network, per strategy (root).

For each strategy, ``chaos-testbed run topologies/baseline-6.yaml`` starts a real elastic
horovodrun job (ResNet-18 + SGD momentum, 93.5 MB of state) on h1..h5; at training step 1 the
schedule makes h6 discoverable; the bench stops the run (SIGINT: the testbed tears down) once
every rank logged its sync at size 6. Reported: the joiner's ``transfer_s`` (bytes on the wire)
and ``total_s`` (from the start of ChaosState.sync to training-ready), sources used, and ratios
against ``chaos``, next to docs/baseline-measurements.md's figures measured on the same network shape: Horovod's
broadcast 55.77 s, a bare 5-source pull 1.896 s, bound 1.816 s.

All strategies run in this one invocation on the same machine. Ends with one JSON line.
Usage: sudo .venv/bin/python -m bench.bench_edge_sync [--strategies chaos,single,broadcast]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from chaos_hvd import events as ev
from chaos_hvd.events import read_events

BASELINE = {"horovod_broadcast_s": 55.77, "bare_multi_pull_s": 1.896, "bound_s": 1.816}
SCHEDULE = "actions:\n  - {at_step: 1, action: join, node: h6}\n"


def run(strategy: str, model: str, timeout_s: float) -> dict:
    out = tempfile.mkdtemp(prefix=f"edge-sync-{strategy}-")
    faults = os.path.join(out, "join.yaml")
    with open(faults, "w") as f:
        f.write(SCHEDULE)
    cmd = [sys.executable, "-m", "testbed.cli", "run",
           os.path.join(REPO, "topologies", "baseline-6.yaml"), "--faults", faults,
           "--out", out, "--", "env", f"CHAOS_SYNC_STRATEGY={strategy}",
           "horovodrun", "-np", "5", "--min-np", "5", "--max-np", "6",
           "--host-discovery-script", "{discovery}", "--network-interface", "eth0",
           "--gloo-timeout-seconds", "900", "python", os.path.join(REPO, "examples",
                                                                   "train_elastic.py"),
           "--model", model, "--same-init", "--epochs", "100", "--samples", "400",
           "--batch-size", "8", "--commit-every", "1"]
    log = open(os.path.join(out, "testbed.log"), "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    events_path = os.path.join(out, "events.jsonl")
    deadline = time.monotonic() + timeout_s
    syncs = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            if os.path.exists(events_path):
                syncs = [e for e in read_events(events_path, ev.Sync)
                         if type(e) is ev.Sync and e.size == 6]
                if len(syncs) >= 6:
                    break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)      # the testbed tears everything down
            proc.wait(120)
        log.close()
    if len(syncs) < 6:
        raise RuntimeError(f"{strategy}: no sync at size 6 within {timeout_s} s; see {out}")
    trained_before = {e.pid for e in read_events(events_path, ev.Step) if e.size == 5}
    joiner = next(s for s in syncs if s.pid not in trained_before)
    used = sorted(k for k, v in joiner.bytes_per_source.items() if v)
    return {"transfer_s": joiner.transfer_s, "total_s": joiner.total_s,
            "state_bytes": joiner.state_bytes, "sources_used": used,
            "predicted_s": joiner.predicted_makespan_s, "bound_s": joiner.bound_s, "out": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategies", default="chaos,single,broadcast")
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "medium"])
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    results = {s: run(s, args.model, args.timeout) for s in args.strategies.split(",")}
    chaos = results.get("chaos")
    for s, r in results.items():
        ratio = f"x{r['total_s'] / chaos['total_s']:.1f} of chaos" if chaos else ""
        print(f"{s:10} joiner transfer {r['transfer_s']:7.2f} s, sync total {r['total_s']:7.2f} s,"
              f" sources {len(r['sources_used'])}  {ratio}")
    print(f"docs/baseline-measurements.md on this network shape: Horovod broadcast {BASELINE['horovod_broadcast_s']}"
          f" s, bare 5-source pull {BASELINE['bare_multi_pull_s']} s, bound {BASELINE['bound_s']} s")
    print(json.dumps({"bench": "edge_sync", "topology": "baseline-6", "model": args.model,
                      "results": results, "baseline_md": BASELINE}))


if __name__ == "__main__":
    main()
