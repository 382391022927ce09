"""Scale-out per strategy inside a real elastic job on the testbed (root): the existing workers'
idle time per join, join -> the joiner training, join -> every rank training at the new size
(each process's resumed record), and the phases of each.

Each run is ``bench.bench_scale_out``'s: ``topologies/baseline-6.yaml`` (five workers at 33-137
Mbit/s egress, the joiner h6, a storage host nas on Fast Ethernet), h6 made discoverable at
training step ``JOIN_STEP``, stopped once all six ranks trained at size 6. Strategies (the
paper's baselines): ``broadcast`` -- Horovod's own TorchState (rank 0 broadcasts every tensor);
``single`` -- one source (EDL-like); ``checkpoint`` -- through the storage host (Pollux-like);
``chaos`` -- multi-neighbour pull; ``overlapped`` -- chaos-hvdrun (the joiner pulls while the job
trains).
"""

from __future__ import annotations

import os
import sys

from bench.bench_scale_out import REPO
from bench.bench_scale_out import run as run_once

from .stats import spread

# experiment name -> bench_scale_out variant
VARIANT = {"broadcast": "torch", "single": "single", "checkpoint": "checkpoint",
           "chaos": "chaos", "overlapped": "overlapped"}
FULL = {"models": ("resnet18",), "strategies": tuple(VARIANT)}
QUICK = {"models": ("medium",), "strategies": ("checkpoint", "overlapped")}
TOPOLOGY = os.path.join(REPO, "topologies", "baseline-6.yaml")
JOIN_STEP = 3
# Horovod's fp16 gradient compression: a ResNet-18 step's all-reduce over baseline-6's slowest
# link takes ~19 s in float32; every strategy trains the same way, so only the waits shrink
TRAIN_ARGS = ("--fp16-allreduce",)
PHASES = ("join_to_joiner_sync_start_s", "discovery_s", "standby_ready_s", "checkpoint_write_s",
          "switch_transfer_s", "switch_sync_total_s")


def run(quick: bool = False, reps: int = 3, timeout_s: float = 900) -> list[dict]:
    grid = QUICK if quick else FULL
    return [row(strategy, model, repeat(strategy, TOPOLOGY, model, JOIN_STEP, reps, timeout_s))
            for model in grid["models"] for strategy in grid["strategies"]]


def repeat(strategy: str, topology: str, model: str, join_step: int, reps: int,
           timeout_s: float) -> list[dict]:
    """`reps` runs of one strategy; a failed run is reported and left out (RuntimeError if all
    fail), so one bad run does not lose the others' figures."""
    runs, failed = [], []
    name = os.path.splitext(os.path.basename(topology))[0]
    for rep in range(reps):
        try:
            # stopped once every rank resumed at the new size: idle ends there
            runs.append(run_once(VARIANT[strategy], topology, model, join_step, timeout_s,
                                 steps_at_new_size=0, train_args=TRAIN_ARGS))
            print(f"scale_out {name} {model} {strategy} {rep + 1}/{reps}: worst idle "
                  f"{runs[-1]['worst_idle_s']:.1f} s, {runs[-1]['wall_s']:.0f} s run",
                  file=sys.stderr, flush=True)
        except RuntimeError as e:
            print(f"scale_out {name} {strategy} {model}: {e}", file=sys.stderr)
            failed.append(str(e))
    if not runs:
        raise RuntimeError(f"scale_out {name} {strategy} {model}: every run failed: {failed}")
    for r in runs:
        r["failed_runs"] = len(failed)
    return runs


def row(strategy: str, model: str, runs: list[dict], topology: str = "baseline-6") -> dict:
    synced = [r["joiner_sync"] for r in runs if r.get("joiner_sync")]
    values = {"worst_idle_s": [r["worst_idle_s"] for r in runs],
              "mean_idle_s": [r["mean_idle_s"] for r in runs],
              "joiner_training_s": [r["join_to_joiner_training_s"] for r in runs],
              "all_at_new_size_s": [r["join_to_all_at_new_size_s"] for r in runs],
              # the joiner's sync into the new world (the switch sync when overlapped)
              "transfer_s": [s["transfer_s"] for s in synced],
              "total_s": [s["total_s"] for s in synced]}
    out = {"experiment": "scale_out", "topology": topology, "model": model,
           "strategy": strategy}
    for key, vs in values.items():
        if not vs:
            out.update({f"{key}_median": None, f"{key}_min": None, f"{key}_max": None})
            continue
        s, digits = spread(vs), 3 if key in ("transfer_s", "total_s") else 2
        out.update({f"{key}_{k}": round(s[k], digits) for k in ("median", "min", "max")})
    for phase in PHASES:     # medians of the phases a strategy has (others stay empty)
        got = [r["phases"][phase] for r in runs if r["phases"].get(phase) is not None]
        out[phase] = round(spread(got)["median"], 2) if got else None
    for key in ("step_s", "commit_s"):   # steady state before the join
        got = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_median"] = round(spread(got)["median"], 4) if got else None
    bounds = [s["bound_s"] for s in synced if s.get("bound_s")]
    out["bound_s"] = round(spread(bounds)["median"], 3) if bounds else None
    out["sources_used"] = max((s["sources_used"] for s in synced), default=None)
    out["state_bytes"] = next((s["state_bytes"] for s in synced if s.get("state_bytes")), None)
    out["cpu_percent"] = round(spread(r["cpu_percent"] for r in runs)["median"])
    out["digests_equal"] = all(r["digests_equal"] for r in runs)
    out["no_step_lost"] = all(r["no_step_lost"] for r in runs)
    out["reps"] = len(runs)
    out["failed_runs"] = runs[0].get("failed_runs", 0)
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """chaos and overlapped against every other strategy, per model: idle and scale-out delay."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        mine = {r["strategy"]: r for r in rows if r["model"] == model}
        for ours in ("chaos", "overlapped"):
            if ours not in mine:
                continue
            for other, r in mine.items():
                if other in ("chaos", "overlapped"):
                    continue
                out.append({"model": model, "ours": ours, "versus": other,
                            "idle_x": _ratio(mine[ours]["worst_idle_s_median"],
                                             r["worst_idle_s_median"]),
                            "delay_x": _ratio(mine[ours]["all_at_new_size_s_median"],
                                              r["all_at_new_size_s_median"])})
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None
