"""Scale-out on the emulated edge network: how long the running workers stand idle per join (root).

Variants side by side in one invocation, same topology, model and schedule:

``torch``       Horovod's own ``TorchState`` under ``horovodrun`` (stock Horovod elastic: rank 0
                broadcasts every tensor)
``single``      ChaosState's ``single`` strategy under ``horovodrun`` (one source, EDL-like)
``checkpoint``  ChaosState's ``checkpoint`` strategy under ``horovodrun``: a checkpoint written to
                and read back from the topology's storage host over its link (Pollux-like)
``chaos``       ChaosState under ``horovodrun`` (multi-source sync; the join still stops the job
                while the new process starts)
``overlapped``  ChaosState under ``chaos-hvdrun`` (the new worker starts as a standby and pulls
                in the background; the job resets only when it is ready)

Each runs ``chaos-testbed run TOPOLOGY`` (default ``topologies/baseline-6.yaml``: h1..h5 train,
the topology's one standby node, h6, becomes discoverable at training step ``--join-step``; any
topology with one standby worker works: the other workers train) with ResNet-18 + SGD momentum,
and is stopped once every rank trained at the new size. From the run's own event logs:

* stall of each running worker: its longest gap between steps after the join, minus its median
  step time before the join (the target: <= bound + 2 s, and <= 0.1x torch's)
* idle of each running worker (what ``bench.experiments`` reports; needs no step at the new
  size): from its last step at the old size to its resumed record at the new size
* join -> the joiner training (its first step at the new size begins), join -> every rank
  training at the new size
* phases: discovery (join -> standby started), standby start-up + background pull, switch sync of
  the joiner (plan / transfer / load / total)
* checks: every rank's full-state digest equal after the switch; no committed step lost
* steady state before the join: median step-to-step time and ``state.commit()`` time

Ends with one JSON line. Usage:
    sudo .venv/bin/python -m bench.bench_scale_out [--variants torch,single,checkpoint,chaos,overlapped]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from chaos_hvd import events as ev
from chaos_hvd.events import read_events

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# variant -> (launcher, --state of the training script, environment of the job)
STEPS_AT_NEW_SIZE = 1    # each rank's first step at the new size closes the gap the reset opened
VARIANTS = {"torch": ("horovodrun", "torch", {}),
            "single": ("horovodrun", "chaos", {"CHAOS_SYNC_STRATEGY": "single"}),
            "checkpoint": ("horovodrun", "chaos", {"CHAOS_SYNC_STRATEGY": "checkpoint",
                                                   "CHAOS_CHECKPOINT_DIR": "{storage}"}),
            "chaos": ("horovodrun", "chaos", {"CHAOS_SYNC_STRATEGY": "chaos"}),
            "overlapped": ("chaos-hvdrun", "chaos", {"CHAOS_SYNC_STRATEGY": "chaos"})}


def roles_of(topology: str) -> tuple[str, int]:
    """The topology's one standby worker (the joiner) and how many workers train before it."""
    from testbed.topology import load_topology
    workers = load_topology(topology).workers
    standby = [n.name for n in workers if n.standby]
    if len(standby) != 1:
        raise SystemExit(f"{topology}: expected one standby node (the joiner), found {standby}")
    return standby[0], len(workers) - 1


def run(variant: str, topology: str, model: str, join_step: int, timeout_s: float,
        steps_at_new_size: int = STEPS_AT_NEW_SIZE, train_args: tuple[str, ...] = ()) -> dict:
    """One run of `variant`, stopped once every rank trained `steps_at_new_size` steps at the new
    size (0: once every rank resumed there); `train_args` go to the training script."""
    launcher, state, env = VARIANTS[variant]
    joiner, n = roles_of(topology)
    out = tempfile.mkdtemp(prefix=f"scale-out-{variant}-")
    faults = os.path.join(out, "join.yaml")
    with open(faults, "w") as f:
        f.write(f"actions:\n  - {{at_step: {join_step}, action: join, node: {joiner}}}\n")
    cmd = [sys.executable, "-m", "testbed.cli", "run", topology, "--faults", faults,
           "--out", out, "--", "env", *(f"{k}={v}" for k, v in env.items()),
           launcher, "-np", str(n), "--min-np", str(n), "--max-np", str(n + 1),
           "--host-discovery-script", "{discovery}", "--network-interface", "eth0",
           "--gloo-timeout-seconds", "900", "python",
           os.path.join(REPO, "examples", "train_elastic.py"), "--state", state,
           "--model", model, "--same-init", "--epochs", "100", "--samples", "400",
           "--batch-size", "8", "--commit-every", "1", *train_args]
    log = open(os.path.join(out, "testbed.log"), "wb")
    psutil.cpu_percent()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    path = os.path.join(out, "events.jsonl")
    done = False
    try:
        while time.monotonic() - t0 < timeout_s and proc.poll() is None:
            time.sleep(1)
            if os.path.exists(path) and _trained_at(path, n + 1, steps_at_new_size):
                done = True
                break
    finally:
        cpu = psutil.cpu_percent()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)      # the testbed tears everything down
            proc.wait(180)
        log.close()
    if not done:
        raise RuntimeError(f"{variant}: {n + 1} ranks did not train at size {n + 1} in "
                           f"{timeout_s} s; {out}")
    result = measure(out, n)
    result.update(out=out, cpu_percent=cpu, wall_s=time.monotonic() - t0)
    return result


def _trained_at(path: str, size: int, steps: int) -> bool:
    """Whether `size` processes resumed at `size` and (steps > 0) each trained `steps` there."""
    if steps == 0:
        return len({e.pid for e in read_events(path, ev.Resumed) if e.size == size}) == size
    at_new: dict[int, int] = {}
    for e in read_events(path, ev.Step):
        if e.size == size:
            at_new[e.pid] = at_new.get(e.pid, 0) + 1
    return len(at_new) == size and min(at_new.values()) >= steps


def measure(out: str, n: int = 5) -> dict:
    """Figures of one run whose `n` workers were joined by one more."""
    events = read_events(os.path.join(out, "events.jsonl"))
    timeline = read_events(os.path.join(out, "timeline.jsonl"), ev.Fault)
    t_join = next(f.t_mono for f in timeline if f.action == "join")
    steps = [e for e in events if isinstance(e, ev.Step)]
    old = sorted({e.pid for e in steps if e.size == n})
    new = sorted({e.pid for e in events if isinstance(e, ev.Resumed) and e.size == n + 1}
                 - set(old))
    commits = [e.seconds for e in events if isinstance(e, ev.Committed) and e.size == n]
    # training-ready at the new size (the first step there begins): each process's Resumed
    first_new = {pid: min(e.t_mono for e in events if isinstance(e, ev.Resumed) and e.pid == pid
                       and e.size == n + 1) for pid in old + new}
    stalls, idles, intervals = [], [], []
    for pid in old:
        ts = [e.t_mono for e in steps if e.pid == pid]
        before = [b - a for a, b in zip(ts, ts[1:]) if b < t_join]
        after = [b - a for a, b in zip(ts, ts[1:]) if b > t_join]
        if after and max(ts) > first_new[pid]:     # a step at the new size closed the gap
            stalls.append(max(after) - statistics.median(before))
        # idle: from its last step at the old size to training again at the new size
        idles.append(first_new[pid] - max(t for t in ts if t < first_new[pid]))
        intervals += before[1:]     # the first follows the world's start-up
    syncs_new = [e for e in events if type(e) is ev.Sync and e.size == n + 1]
    resumed_new = [e for e in events if isinstance(e, ev.Resumed) and e.size == n + 1]
    last_commit = max(e.step for e in events if isinstance(e, ev.Commit) and e.size == n)
    joiner_sync = next((s for s in syncs_new if s.pid in new), None)
    digests = {s.digest for s in syncs_new} if syncs_new else {r.digest for r in resumed_new}
    phases = {}
    started = [e for e in events if isinstance(e, ev.StandbyStarted)]
    if started:
        ready = next(e for e in events if isinstance(e, ev.StandbyReady))
        pull = [e for e in events if isinstance(e, ev.StandbyPull) and not e.error]
        switched = next(e for e in events if isinstance(e, ev.StandbySwitched))
        phases.update(discovery_s=started[0].t_mono - t_join, standby_ready_s=ready.seconds,
                      background_pull_s=pull[-1].total_s if pull else None,
                      background_transfer_s=pull[-1].transfer_s if pull else None,
                      ready_to_switch_s=switched.t_mono - ready.t_mono)
    torch_sync = next((e for e in events if isinstance(e, ev.TorchSynced) and e.pid in new
                       and e.size == n + 1 and not e.skipped), None)
    sync = None      # the joiner's sync into the new world, as the job waited on it
    if joiner_sync:
        used = sorted(r for r, b in joiner_sync.bytes_per_source.items() if b)
        sync = {"transfer_s": joiner_sync.transfer_s, "total_s": joiner_sync.total_s,
                "bound_s": joiner_sync.bound_s, "sources_used": len(used),
                "state_bytes": joiner_sync.state_bytes}
    elif torch_sync:     # Horovod's broadcast: the whole sync moves the state
        sync = {"transfer_s": torch_sync.seconds, "total_s": torch_sync.seconds, "bound_s": None,
                "sources_used": 1, "state_bytes": None}
    if not started:
        start = joiner_sync or torch_sync
        phases["join_to_joiner_sync_start_s"] = (start.t_mono - sync["total_s"] - t_join
                                                 if start else None)
    if joiner_sync:
        phases.update(checkpoint_write_s=joiner_sync.checkpoint_write_s,
                      switch_plan_s=joiner_sync.plan_s, switch_transfer_s=joiner_sync.transfer_s,
                      switch_load_s=joiner_sync.load_s, switch_sync_total_s=joiner_sync.total_s,
                      switch_needed_bytes=joiner_sync.needed_bytes, state_bytes=joiner_sync.state_bytes)
    return {"worst_stall_s": max(stalls) if len(stalls) == len(old) else None,
            "mean_stall_s": statistics.fmean(stalls) if len(stalls) == len(old) else None,
            "stalls_s": stalls, "worst_idle_s": max(idles), "mean_idle_s": statistics.fmean(idles),
            "idles_s": idles,
            "join_to_joiner_training_s": min(first_new[p] for p in new) - t_join,
            "join_to_all_at_new_size_s": max(first_new.values()) - t_join,
            "phases": phases, "joiner_sync": sync, "digests_equal": len(digests) == 1,
            # steady state before the join: step to step (compute, allreduce, commit) and commit
            "step_s": statistics.median(intervals) if intervals else None,
            "commit_s": statistics.median(commits) if commits else None,
            "no_step_lost": bool(resumed_new) and all(r.step == last_commit for r in resumed_new)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="torch,chaos,overlapped")
    ap.add_argument("--topology", default=os.path.join(REPO, "topologies", "baseline-6.yaml"))
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "medium"])
    ap.add_argument("--join-step", type=int, default=3)
    ap.add_argument("--bound-s", type=float, default=1.816,
                    help="transfer bound of the topology (baseline-6, ResNet-18: 1.816 s)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    results = {v: run(v, args.topology, args.model, args.join_step, args.timeout)
               for v in args.variants.split(",")}
    for v, r in results.items():
        print(f"{v:11} worst stall {r['worst_stall_s']:6.2f} s  join->joiner trains "
              f"{r['join_to_joiner_training_s']:6.2f} s  join->all at new size "
              f"{r['join_to_all_at_new_size_s']:6.2f} s  digests equal {r['digests_equal']}  "
              f"no step lost {r['no_step_lost']}  cpu {r['cpu_percent']:.0f}%")
    summary = {}
    if "overlapped" in results:
        o = results["overlapped"]["worst_stall_s"]
        summary["overlapped_stall_minus_bound_s"] = o - args.bound_s
        for base in ("torch", "chaos"):
            if base in results:
                summary[f"overlapped_over_{base}_stall"] = o / results[base]["worst_stall_s"]
    print(json.dumps({"bench": "scale_out", "topology": os.path.basename(args.topology),
                      "model": args.model, "bound_s": args.bound_s, "summary": summary,
                      "results": results}))


if __name__ == "__main__":
    main()
