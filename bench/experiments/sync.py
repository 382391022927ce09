"""State sync to a joiner inside a real elastic job on the testbed, per strategy (root).

Each run is ``bench.bench_edge_sync``'s: ``topologies/baseline-6.yaml`` (five sources at 33-137
Mbit/s, the joiner h6), a real ``horovodrun`` job of examples/train_elastic.py on h1..h5, h6 made
discoverable at training step 1; the joiner's ``transfer_s`` (bytes on the wire) and ``total_s``
(ChaosState.sync from start to training-ready) are read from the event log. Strategies: chaos
(multi-neighbour), single (one source, EDL-like), broadcast (Horovod's rank-0 broadcast).
"""

from __future__ import annotations

from bench.bench_edge_sync import run as run_once

from .stats import spread

FULL = {"models": ("resnet18", "medium"), "strategies": ("chaos", "single", "broadcast")}
QUICK = {"models": ("medium",), "strategies": ("chaos", "broadcast")}


def run(quick: bool = False, reps: int = 3, timeout_s: float = 900) -> list[dict]:
    grid = QUICK if quick else FULL
    rows = []
    for model in grid["models"]:
        for strategy in grid["strategies"]:
            runs = [run_once(strategy, model, timeout_s) for _ in range(reps)]
            transfer = spread(r["transfer_s"] for r in runs)
            total = spread(r["total_s"] for r in runs)
            rows.append({"experiment": "sync", "topology": "baseline-6", "model": model,
                         "strategy": strategy, "state_bytes": runs[0]["state_bytes"],
                         "transfer_s_median": round(transfer["median"], 3),
                         "transfer_s_min": round(transfer["min"], 3),
                         "transfer_s_max": round(transfer["max"], 3),
                         "total_s_median": round(total["median"], 3),
                         "total_s_min": round(total["min"], 3),
                         "total_s_max": round(total["max"], 3),
                         "bound_s": runs[0]["bound_s"],
                         "sources_used": max(len(r["sources_used"]) for r in runs),
                         "reps": reps})
    return rows
