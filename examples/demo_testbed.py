"""Demo on an emulated edge cluster (root): a join, a crash and a link flap, twice side by side.

Runs ``ci/topologies/edge4.yaml`` (three workers at 40-80 Mbit/s, a standby host) under
``chaos-testbed run`` twice with the same fault schedule -- w3's link is down for 2 s at step 3,
w4 joins at step 14, w2 is SIGKILLed once training runs at size 4 (step 20 or later) -- first with
Horovod's defaults (``TorchState``, ``horovodrun``), then with this project (``ChaosState``,
``chaos-hvdrun``). Prints a comparison table and writes each run's timeline picture
(``chaos-testbed report``). Usage: ``sudo python -m examples.demo_testbed [--out DIR]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time

from chaos_hvd import events as ev

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = """\
actions:
  - {at_step: 3, action: flap, link: w3-sw, period: 4s, count: 1}
  - {at_step: 14, action: join, node: w4}
  - {at_size: 4, at_step: 20, action: crash, node: w2}
"""
TRAIN = ["--model", "medium", "--epochs", "2", "--samples", "1024", "--batch-size", "16",
         "--step-sleep", "0.15"]
VARIANTS = (("Horovod: TorchState + horovodrun", "horovodrun", "torch"),
            ("ChaosState + chaos-hvdrun", "chaos-hvdrun", "chaos"))


def _steps(events: list[ev.Event]) -> list[ev.Step]:
    return sorted((e for e in events if isinstance(e, ev.Step)), key=lambda e: e.t_mono)


def _fault(timeline: list[ev.Event], action: str) -> ev.Fault | None:
    return next((f for f in timeline if isinstance(f, ev.Fault) and f.action == action), None)


def summarize(timeline: list[ev.Event], events: list[ev.Event]) -> dict:
    """What the table shows, from one run's records (pure): seconds from the join until every
    rank trains at the new size and the longest pause of a worker that was training already;
    seconds from the crash until training runs at the smaller size; the longest pause of any
    worker while the link was down and 3 s after; whether all ranks ended identical."""
    steps = _steps(events)
    out: dict = {"join_to_new_size_s": None, "running_worker_pause_s": None,
                 "crash_to_training_s": None, "flap_pause_s": None, "identical_final": None}
    if not steps:
        return out
    first_size = steps[0].size
    join = _fault(timeline, "join")
    if join:
        grown = [s for s in steps if s.t_mono > join.t_mono and s.size > first_size]
        if grown:
            out["join_to_new_size_s"] = round(grown[0].t_mono - join.t_mono, 2)
            old = {s.pid for s in steps if s.t_mono < join.t_mono}
            out["running_worker_pause_s"] = _longest_gap(steps, old, join.t_mono,
                                                         grown[0].t_mono)
    crash = _fault(timeline, "crash")
    if crash:
        before = [s.size for s in steps if s.t_mono < crash.t_mono]
        shrunk = [s for s in steps if s.t_mono > crash.t_mono and before
                  and s.size < before[-1]]
        if shrunk:
            out["crash_to_training_s"] = round(shrunk[0].t_mono - crash.t_mono, 2)
    down, up = _fault(timeline, "link_down"), _fault(timeline, "link_up")
    if down and up:
        alive = {s.pid for s in steps if s.t_mono > down.t_mono}
        out["flap_pause_s"] = _longest_gap(steps, alive, down.t_mono, up.t_mono + 3)
    finals = [e for e in events if isinstance(e, ev.Final)]
    if finals:
        out["identical_final"] = len({f.digest for f in finals}) == 1
    return out


def _longest_gap(steps: list[ev.Step], pids: set[int], t0: float, t1: float) -> float | None:
    """Longest time between two consecutive steps of one of these workers that overlaps
    [t0, t1] (a worker that never stepped again counts until t1)."""
    best = None
    for pid in pids:
        ts = [s.t_mono for s in steps if s.pid == pid]
        prev = max((t for t in ts if t <= t0), default=None)
        if prev is None:
            continue
        later = [t for t in ts if t > prev]
        inside = [prev] + [t for t in later if t <= t1]
        nxt = next((t for t in later if t > t1), None)
        if nxt is not None and inside[-1] < t1:
            inside.append(nxt)
        gap = max((b - a for a, b in itertools.pairwise(inside)), default=t1 - prev)
        best = gap if best is None else max(best, gap)
    return None if best is None else round(best, 2)


def _run(label: str, launcher: str, state: str, out: str) -> dict:
    from testbed.cli import main as testbed_main
    os.makedirs(out, exist_ok=True)
    faults = os.path.join(out, "faults.yaml")
    with open(faults, "w") as f:
        f.write(FAULTS)
    print(f"\n=== {label}: {out}", flush=True)
    rc = testbed_main(["run", os.path.join(REPO, "ci", "topologies", "edge4.yaml"),
                       "--faults", faults, "--out", out, "--timeout", "420", "--",
                       launcher, "-np", "{np}", "--min-np", "2", "--max-np", "{max_np}",
                       "--host-discovery-script", "{discovery}", "--network-interface", "eth0",
                       "python", os.path.join(REPO, "examples", "train_elastic.py"),
                       "--state", state, *TRAIN])
    timeline = ev.read_events(os.path.join(out, "timeline.jsonl"))
    events_path = os.path.join(out, "events.jsonl")
    events = ev.read_events(events_path) if os.path.exists(events_path) else []
    result = {"label": label, "rc": rc, "out": out, **summarize(timeline, events)}
    from testbed.report import ReportError, write_report
    try:
        result["picture"] = write_report(out)
    except ReportError as e:
        result["picture"] = f"(no picture: {e})"
    return result


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return f"{v:.2f} s" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="directory for both runs (default: a new temporary one)")
    args = ap.parse_args(argv)
    base = args.out or tempfile.mkdtemp(prefix="chaos-demo-testbed-")
    t0 = time.monotonic()
    results = [_run(label, launcher, state, os.path.join(base, state))
               for label, launcher, state in VARIANTS]
    rows = (("join -> all ranks at the new size", "join_to_new_size_s"),
            ("running workers' longest pause at the join", "running_worker_pause_s"),
            ("crash -> training at the smaller size", "crash_to_training_s"),
            ("longest pause around the 2 s link cut", "flap_pause_s"),
            ("all ranks ended identical", "identical_final"),
            ("job exit status", "rc"))
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'':<{width}}" + "".join(f"{r['label']:>34}" for r in results))
    for name, key in rows:
        print(f"{name:<{width}}" + "".join(f"{_fmt(r[key]):>34}" for r in results))
    for r in results:
        print(f"timeline picture ({r['label']}): {r['picture']}")
    print(f"both runs in {time.monotonic() - t0:.0f} s; records under {base}")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
