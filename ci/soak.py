"""Soak: seeded random faults every ~20 s on real training, for as long as you choose (root).

    sudo .venv/bin/python -m ci.soak --minutes 30 --seed 1

Runs ``chaos-testbed run`` on a topology (default: ci/topologies/edge5.yaml, whose standby
hosts join first) with the cluster agents and a real elastic ``chaos-hvdrun`` job of
examples/train_elastic.py (ChaosState), under a schedule from :mod:`ci.soak_schedule`: crashes
(the host rejoins), pauses, partitions, silent host losses, flaps and slow links, one at a time.
Training stops at the first commit after the soak's time. Then it reports the faults survived,
committed steps lost (must be 0), time to recover per fault kind, the longest time without a
training step, whether every rank ended identical, and draws the run's timeline (``chaos-testbed report``). Writes ``soak.json`` and
``timeline.png`` in the run directory; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import yaml

from chaos_hvd import events as ev
from chaos_hvd.events import read_events

from . import checks, soak_stats
from .soak_schedule import KINDS, soak_actions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_ALLOWANCE_S = 60.0    # testbed up + agents agreeing, before the job's clock starts
TAIL_S = 40.0               # after the last fault: let the job come back to full size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="how long faults are injected")
    ap.add_argument("--seed", type=int, default=1, help="the fault schedule's seed")
    ap.add_argument("--interval", type=float, default=20.0, help="mean seconds between faults")
    ap.add_argument("--kinds", default=",".join(KINDS), help="fault kinds, comma-separated")
    ap.add_argument("--topology", default="ci/topologies/edge5.yaml")
    ap.add_argument("--out", help="run directory (default: results/soak-<time>)")
    args = ap.parse_args(argv)
    if not (args.minutes > 0 and args.interval > 0):
        ap.error("--minutes and --interval must be positive")
    from testbed.cli import main as testbed_main
    from testbed.topology import load_topology
    topo_path = os.path.join(REPO, args.topology)
    topo = load_topology(topo_path)
    out = args.out or os.path.join(REPO, "results", f"soak-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out, exist_ok=True)
    duration = args.minutes * 60.0
    links = {}
    for ln in topo.links:
        for end in (ln.a, ln.b):
            links.setdefault(end, ln.name)
    launcher = next((n.name for n in topo.nodes if n.role == "launcher"), None)
    try:
        actions = soak_actions([n.name for n in topo.workers if not n.standby],
                               [n.name for n in topo.workers if n.standby], links, launcher,
                               args.seed, duration, args.interval, args.kinds.split(","))
    except ValueError as e:
        ap.error(str(e))
    schedule = os.path.join(out, "soak-faults.yaml")
    with open(schedule, "w") as f:
        yaml.safe_dump({"actions": actions}, f, sort_keys=False)
    deadline = time.time() + SETUP_ALLOWANCE_S + duration + TAIL_S
    command = ["chaos-hvdrun", "-np", "{np}", "--min-np", "2", "--max-np", "{max_np}",
               "--host-discovery-script", "{discovery}", "--network-interface", "eth0",
               "--gloo-timeout-seconds", "20",
               # a crashed host is blacklisted by Horovod; let it back once it rejoins
               "--blacklist-cooldown-range", "2", "4",
               "python", os.path.join(REPO, "examples", "train_elastic.py"), "--model", "medium",
               "--epochs", "1000000", "--samples", "1024", "--batch-size", "16",
               "--step-sleep", "0.15", "--deadline-unix", f"{deadline:.0f}"]
    os.environ.setdefault("CHAOS_NATIVE_STACKS", "1")   # see ci.run_suite
    # the random schedule may outlast the job (it stops at its deadline)
    rc = testbed_main(["run", topo_path, "--out", out, "--faults", schedule, "--agents",
                       "--allow-unfired",
                       "--timeout", str(SETUP_ALLOWANCE_S + duration + TAIL_S + 120), "--",
                       *command])
    summary = summarize(out, rc)
    with open(os.path.join(out, "soak.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(render(summary))
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def summarize(out: str, rc: int) -> dict:
    timeline = read_events(os.path.join(out, "timeline.jsonl"))
    path = os.path.join(out, "events.jsonl")
    events = read_events(path) if os.path.exists(path) else []
    faults = [f for f in timeline if isinstance(f, ev.Fault)]
    errors = [f for f in timeline if isinstance(f, ev.FaultError)]
    lost = soak_stats.committed_steps_lost(events)
    kinds = soak_stats.recovery_by_kind(timeline, events)
    gap_at, gap_s = soak_stats.longest_gap(events)
    start = next((r.t_mono for r in timeline if isinstance(r, ev.CommandStart)), gap_at)
    identical = checks.check_identical_final(events)
    finals = [e for e in events if isinstance(e, ev.Final)]
    report = None
    try:
        from testbed.report import write_report
        report = write_report(out)
    except Exception as e:  # noqa: BLE001 - the figures stand without the picture
        print(f"soak: no timeline picture: {e}", file=sys.stderr)
    ok = rc == 0 and not lost and not identical and not errors
    return {"ok": ok, "rc": rc, "out": out, "faults_applied": len(faults),
            "fault_errors": [f"{e.action} {e.target}: {e.error}" for e in errors],
            "committed_steps_lost": sum(n for _, n in lost), "resets_losing_steps": len(lost),
            "identical_final": not identical, "final_step": max((e.step for e in finals),
                                                                 default=None),
            "recovery": [k.summary() for k in sorted(kinds.values(), key=lambda k: k.kind)],
            "longest_gap_s": round(gap_s, 1), "longest_gap_at_s": round(gap_at - start, 1),
            "timeline_png": report}


def render(s: dict) -> str:
    lines = [f"soak: {s['faults_applied']} fault actions applied, job rc {s['rc']}, "
             f"committed steps lost {s['committed_steps_lost']}, identical final "
             f"{s['identical_final']}, final step {s['final_step']}, longest time without "
             f"a step {s['longest_gap_s']} s (at {s['longest_gap_at_s']} s)",
             f"{'kind':<10} {'count':>5} {'resumed med/max s':>18} {'restored med/max s':>19} "
             f"{'unaffected':>10} {'not recovered':>14}"]
    for k in s["recovery"]:
        lines.append(f"{k['kind']:<10} {k['count']:>5} "
                     f"{_pair(k['resumed_median_s'], k['resumed_max_s']):>18} "
                     f"{_pair(k['restored_median_s'], k['restored_max_s']):>19} "
                     f"{k['unaffected']:>10} {k['not_recovered']:>14}")
    if s["timeline_png"]:
        lines.append(f"timeline: {s['timeline_png']}")
    return "\n".join(lines)


def _pair(a, b) -> str:
    return "-" if a is None else f"{a:.1f} / {b:.1f}"


if __name__ == "__main__":
    sys.exit(main())
