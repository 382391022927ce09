"""``python -m bench.experiments [--quick] [--only scheduler,transfer,scale_out,scaling,events,sync] [--reps N] [--out DIR]``.

Runs the chosen experiments (by default all but ``sync``), writes ``<experiment>.csv`` for each,
one ``results.md`` with every table and the ratios the README quotes, and PNG plots into the
output directory, then prints one JSON line. Every experiment but ``scheduler`` needs root (they
run the testbed). Two tables come from other experiments' runs: the joiner's sync per strategy
(``join_sync``) from the scale_out runs, and the steady state (step and commit time, ChaosState
against TorchState) from the scale_out and scaling runs' steps before the join. ``sync`` (the
same sync in separate, shorter jobs, also with the 2 MB CNN) runs only when named.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import outputs

EXPERIMENTS = ("scheduler", "transfer", "sync", "scale_out", "scaling", "events")
DEFAULT = ("scheduler", "transfer", "scale_out", "scaling", "events")
ON_TESTBED = ("transfer", "sync", "scale_out", "scaling", "events")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCHEDULER_COLUMNS = ("sources", "chunks", "joiners", "algorithm", "plan_ms_median", "plan_ms_min",
                     "plan_ms_max", "makespan_s", "fluid_optimum_s", "x_optimum", "x_chunk_optimum",
                     "x_bound")
TRANSFER_COLUMNS = ("model", "params", "state_bytes", "ingress_cap_mbit", "transfer_s_median",
                    "transfer_s_min", "transfer_s_max", "bound_s", "x_bound", "sources_used",
                    "cpu_percent")
SYNC_COLUMNS = ("model", "strategy", "state_bytes", "transfer_s_median", "transfer_s_min",
                "transfer_s_max", "total_s_median", "total_s_min", "total_s_max", "bound_s",
                "x_bound", "sources_used")
SCALE_OUT_COLUMNS = ("model", "strategy", "worst_idle_s_median", "worst_idle_s_min",
                     "worst_idle_s_max", "mean_idle_s_median", "joiner_training_s_median",
                     "all_at_new_size_s_median", "all_at_new_size_s_min", "all_at_new_size_s_max",
                     "join_to_joiner_sync_start_s", "discovery_s", "standby_ready_s",
                     "checkpoint_write_s", "switch_transfer_s", "switch_sync_total_s",
                     "cpu_percent", "digests_equal", "no_step_lost")
SCALING_COLUMNS = ("hosts", "strategy", "worst_idle_s_median", "worst_idle_s_min",
                   "worst_idle_s_max", "mean_idle_s_median", "all_at_new_size_s_median",
                   "step_s_median", "commit_s_median", "cpu_percent", "digests_equal",
                   "no_step_lost")
EVENT_COLUMNS = ("event", "to_training_s_median", "to_training_s_min", "to_training_s_max",
                 "resumed_sizes", "view_first_s_median", "view_all_s_median", "handled_ms_median",
                 "handled_ms_max", "reps")
STEADY_COLUMNS = ("topology", "model", "strategy", "state", "step_s", "commit_s", "step_x_torch",
                  "commit_x_torch", "cpu_percent")


def sync_ratios(rows: list[dict]) -> list[dict]:
    """Fill each row's bound from its model's chaos run, where there is one (other strategies
    may make no plan), and add transfer / bound; return chaos-vs-other ratios per model."""
    ratios = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        chaos = next((r for r in mine if r["strategy"] == "chaos"), None)
        for r in mine:
            if chaos:
                r["bound_s"] = chaos["bound_s"]
            bound = r.get("bound_s")
            r["x_bound"] = round(r["transfer_s_median"] / bound, 3) if bound else None
        if chaos:
            for r in mine:
                if r is not chaos:
                    ratios.append({"model": model, "versus": r["strategy"],
                                   "transfer_x": round(r["transfer_s_median"]
                                                       / chaos["transfer_s_median"], 2),
                                   "sync_x": round(r["total_s_median"]
                                                   / chaos["total_s_median"], 2)})
    return ratios


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small grid, one repetition: a sanity run (minutes), not the figures")
    ap.add_argument("--only", default=",".join(DEFAULT),
                    help=f"comma-separated subset of {', '.join(EXPERIMENTS)} (default: all "
                         "but sync, whose figures the scale_out runs give)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    ap.add_argument("--out", help="output directory (default results/experiments-<time>)")
    args = ap.parse_args(argv)
    chosen = [x for x in args.only.split(",") if x]
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        ap.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    reps = args.reps or (1 if args.quick else 3)
    if reps < 1:
        ap.error("--reps must be at least 1")
    if set(chosen) & set(ON_TESTBED) and os.geteuid() != 0:
        ap.error(f"the {', '.join(x for x in chosen if x in ON_TESTBED)} experiment(s) run the "
                 "testbed: run as root, or --only scheduler")
    out = outputs.ensure_dir(args.out or os.path.join(
        REPO, "results", f"experiments-{time.strftime('%Y%m%d-%H%M%S')}"))
    command = " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# Experiments ({'quick' if args.quick else 'full'}, {reps} repetition(s))", "",
          f"Machine: {os.cpu_count()} CPU(s); command: `python -m bench.experiments {command}`",
          ""]
    summary: dict = {"bench": "experiments", "quick": args.quick, "reps": reps, "out": out}
    t0 = time.monotonic()
    steady: list[dict] = []      # runs whose steps before the join give the steady state
    if "scheduler" in chosen:
        from . import scheduler
        rows = scheduler.run(quick=args.quick, reps=reps)
        outputs.write_csv(rows, os.path.join(out, "scheduler.csv"))
        outputs.plot_scheduler(rows, os.path.join(out, "scheduler.png"))
        md += ["## Shard planning", "", outputs.markdown(rows, SCHEDULER_COLUMNS), "",
               "![planning](scheduler.png)", ""]
        largest = max(rows, key=lambda r: (r["sources"], r["chunks"]))
        summary["scheduler"] = {
            "largest": {"sources": largest["sources"], "chunks": largest["chunks"]},
            "optimal_plan_ms_at_largest": max(r["plan_ms_median"] for r in rows
                                              if r["algorithm"] == "optimal"
                                              and r["sources"] == largest["sources"]
                                              and r["chunks"] == largest["chunks"]),
            "optimal_worst_x_optimum": max(r["x_optimum"] for r in rows
                                           if r["algorithm"] == "optimal")}
    if "transfer" in chosen:
        from . import transfer
        rows = transfer.run(quick=args.quick, reps=reps)
        outputs.write_csv(rows, os.path.join(out, "transfer.csv"))
        outputs.plot_transfer(rows, os.path.join(out, "transfer.png"))
        md += ["## Whole-state transfer against the bound, the paper's models (baseline-6)", "",
               outputs.markdown(rows, TRANSFER_COLUMNS), "", "![transfer](transfer.png)", ""]
        summary["transfer"] = {"worst_x_bound": max(r["x_bound"] for r in rows)}
    if "sync" in chosen:
        from . import sync
        rows = sync.run(quick=args.quick, reps=reps)
        ratios = sync_ratios(rows)
        outputs.write_csv(rows, os.path.join(out, "sync.csv"))
        outputs.plot_sync(rows, os.path.join(out, "sync.png"))
        md += ["## State sync to a joiner (baseline-6)", "", outputs.markdown(rows, SYNC_COLUMNS),
               "", outputs.markdown(ratios, ("model", "versus", "transfer_x", "sync_x")), "",
               "![sync](sync.png)", ""]
        summary["sync"] = {"ratios": ratios}
    if "scale_out" in chosen:
        from . import scale_out
        rows = scale_out.run(quick=args.quick, reps=reps)
        ratios = scale_out.ratios(rows)
        outputs.write_csv(rows, os.path.join(out, "scale_out.csv"))
        outputs.plot_scale_out(rows, os.path.join(out, "scale_out.png"))
        md += ["## Scale-out: idle time and delay per join (baseline-6)", "",
               outputs.markdown(rows, SCALE_OUT_COLUMNS), "",
               outputs.markdown(ratios, ("model", "ours", "versus", "idle_x", "delay_x")), "",
               "![scale-out](scale_out.png)", ""]
        summary["scale_out"] = {"ratios": ratios}
        steady += rows
        # the joiner's sync per strategy, from the same runs (TorchState's: its whole broadcast)
        keys = ("topology",) + tuple(c for c in SYNC_COLUMNS if c != "x_bound")
        joins = [{k: r[k] for k in keys} for r in rows if r.get("transfer_s_median") is not None]
        ratios = sync_ratios(joins)
        outputs.write_csv(joins, os.path.join(out, "join_sync.csv"))
        md += ["## The joiner's sync in those runs (baseline-6)", "",
               outputs.markdown(joins, SYNC_COLUMNS), "",
               outputs.markdown(ratios, ("model", "versus", "transfer_x", "sync_x")), ""]
        if joins:
            outputs.plot_sync(joins, os.path.join(out, "join_sync.png"))
            md += ["![join sync](join_sync.png)", ""]
        summary["join_sync"] = {"ratios": ratios}
    if "scaling" in chosen:
        from . import scaling
        rows = scaling.run(out, quick=args.quick, reps=reps)
        outputs.write_csv(rows, os.path.join(out, "scaling.csv"))
        outputs.plot_scaling(rows, os.path.join(out, "scaling.png"))
        md += ["## Idle time per join as the cluster grows (star topologies, 2 MB CNN)", "",
               outputs.markdown(rows, SCALING_COLUMNS), "", "![scaling](scaling.png)", ""]
        summary["scaling"] = {f"{r['strategy']}@{r['hosts']}": r["worst_idle_s_median"]
                              for r in rows}
        steady += rows
    if "events" in chosen:
        from . import events
        rows, floor = events.run(out, reps=reps)
        outputs.write_csv(rows, os.path.join(out, "events.csv"))
        outputs.plot_events(rows, floor, os.path.join(out, "events.png"))
        md += ["## Event latency inside training (5 workers, agents, chaos-hvdrun)", "",
               outputs.markdown(rows, EVENT_COLUMNS), "",
               f"UDP fan-out floor to {floor['peers']} Python processes, sampled during the runs "
               f"({floor['samples']} samples): p50 {floor['p50_ms']} ms, p99 {floor['p99_ms']} ms",
               "", "![events](events.png)", ""]
        summary["events"] = {"to_training_s": {r["event"]: r["to_training_s_median"]
                                               for r in rows},
                             "handled_ms_median": {r["event"]: r["handled_ms_median"]
                                                   for r in rows},
                             "udp_floor": floor}
    if steady:
        from .scaling import steady_rows
        rows = steady_rows(steady)
        outputs.write_csv(rows, os.path.join(out, "steady.csv"))
        md += ["## Steady state before the join: step and commit time", "",
               outputs.markdown(rows, STEADY_COLUMNS), ""]
        summary["steady"] = rows
    summary["seconds"] = round(time.monotonic() - t0, 1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    print(f"results: {out}/results.md", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
