"""Idle time of the existing workers per join as the cluster grows, and steady-state step and
commit time, in real elastic jobs on the testbed (root).

For each cluster size (hosts training after the join: 3, 5, 8) a star topology is written next to
the results: ``size - 1`` workers whose egress cycles through ``baseline-6``'s rates, one standby
joiner and the launcher, no delay (so the links, not the NFQUEUE delayer's CPU, set the pace).
Each run is ``bench.bench_scale_out``'s with the 2 MB CNN (a larger model's steps on 8 ranks
sharing 2 cores would take hours): the joiner becomes discoverable at step ``JOIN_STEP``; the
steps before it give the steady state (step to step, and ``state.commit()`` alone, from the
``committed`` records). Strategies: broadcast (Horovod's TorchState), chaos (ChaosState under
horovodrun) and overlapped (ChaosState under chaos-hvdrun).
"""

from __future__ import annotations

import os

from . import scale_out

# baseline-6's egress per host (goodput, Mbit/s), cycled over the workers
RATES_MBIT = (74.89, 45.14, 131.22, 31.56, 111.42, 82.06)
FULL = {"sizes": (3, 5, 8), "strategies": ("broadcast", "chaos", "overlapped")}
QUICK = {"sizes": (3,), "strategies": ("broadcast", "overlapped")}
MODEL = "medium"
JOIN_STEP = 8


def topology_yaml(hosts: int) -> str:
    """A star of `hosts - 1` workers, one standby joiner and the launcher."""
    names = [f"w{i}" for i in range(1, hosts + 1)]
    nodes = [f"  - {{name: {n}}}" for n in names[:-1]]
    nodes += [f"  - {{name: {names[-1]}, standby: true}}", "  - {name: ctl, role: launcher}"]
    links = [f"  - {{a: {n}, b: sw, up: {{rate: {RATES_MBIT[i % len(RATES_MBIT)]}Mbit}}}}"
             for i, n in enumerate(names)]
    links.append("  - {a: ctl, b: sw}")
    return "\n".join([f"# written by bench.experiments.scaling: {hosts - 1} workers + 1 joiner",
                      f"name: star-{hosts}",
                      f"description: {hosts - 1} workers and a joiner on one switch, "
                      "baseline-6's egress rates, no delay",
                      "nodes:", *nodes, "switches: [sw]", "links:", *links, ""])


def run(out_dir: str, quick: bool = False, reps: int = 3, timeout_s: float = 900) -> list[dict]:
    grid = QUICK if quick else FULL
    rows = []
    for hosts in grid["sizes"]:
        path = os.path.join(out_dir, f"star-{hosts}.yaml")
        with open(path, "w") as f:
            f.write(topology_yaml(hosts))
        for strategy in grid["strategies"]:
            runs = scale_out.repeat(strategy, path, MODEL, JOIN_STEP, reps, timeout_s)
            rows.append(dict(scale_out.row(strategy, MODEL, runs, topology=f"star-{hosts}"),
                             experiment="scaling", hosts=hosts))
    return rows


def steady_rows(rows: list[dict]) -> list[dict]:
    """Step and commit time before the join, TorchState (the broadcast runs) against ChaosState
    (chaos and overlapped runs), per topology and model, with ChaosState / TorchState."""
    out = []
    for key in dict.fromkeys((r["topology"], r["model"]) for r in rows):
        mine = [r for r in rows if (r["topology"], r["model"]) == key]
        torch = next((r for r in mine if r["strategy"] == "broadcast"), None)
        for r in mine:
            if r.get("step_s_median") is None:
                continue
            state = "TorchState" if r["strategy"] == "broadcast" else "ChaosState"
            row = {"topology": key[0], "model": key[1], "strategy": r["strategy"],
                   "state": state, "step_s": r["step_s_median"],
                   "commit_s": r["commit_s_median"], "step_x_torch": None,
                   "commit_x_torch": None, "cpu_percent": r["cpu_percent"]}
            if torch and r is not torch and torch.get("step_s_median"):
                row["step_x_torch"] = round(r["step_s_median"] / torch["step_s_median"], 3)
                if torch.get("commit_s_median") and r.get("commit_s_median") is not None:
                    row["commit_x_torch"] = round(r["commit_s_median"]
                                                  / torch["commit_s_median"], 3)
            out.append(row)
    return out
