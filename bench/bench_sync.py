"""Sync time per strategy on localhost: a real elastic horovodrun job grows from 2 to 4 workers.

For each strategy, the two joiners' sync ``total_s`` and ``transfer_s`` (from the event log) are
reported, and ratios against ``chaos``. All strategies run in this one invocation, one after the other,
on the same machine. Loopback has no link limits, so on 2 cores this measures the software path
(memory copies, hashing, Horovod's broadcasts), not a network: see docs/results.md for the edge-network
comparison. Ends with one JSON line. Usage: python -m bench.bench_sync [--model resnet18]
"""

import argparse
import json
import os
import statistics
import tempfile

from chaos_hvd import events as ev
from harness.elastic_job import ElasticJob

STRATEGIES = ("chaos", "single", "checkpoint", "broadcast")


def run(strategy, model, bandwidth):
    workdir = tempfile.mkdtemp(prefix=f"chaos-bench-{strategy}-")
    env = {"CHAOS_SYNC_STRATEGY": strategy, "CHAOS_CHECKPOINT_DIR": os.path.join(workdir, "ckpt"),
           "CHAOS_BANDWIDTH": bandwidth}
    # long enough that the join always happens; the job is killed once the sync at size 4 is logged
    args = ["--model", model, "--epochs", "40", "--samples", "128", "--batch-size", "8",
            "--step-sleep", "0.05", "--commit-every", "2"]
    with ElasticJob(args, ["localhost:2"], np=2, min_np=2, max_np=4, env=env, workdir=workdir,
                    gloo_timeout_s=600) as job:
        job.wait_for(lambda es: any(isinstance(e, ev.Commit) for e in es), 600, "a commit")
        job.set_hosts(["localhost:2", "127.0.0.1:2"])

        def syncs_at_4(es):
            found = [e for e in es if type(e) is ev.Sync and e.size == 4]
            return found if len(found) >= 4 else []
        syncs = job.wait_for(syncs_at_4, 900, "the sync at size 4")
        # joiners = processes that did not train before the join (survivors may be needers too,
        # for their BatchNorm chunk, but are not what this bench compares)
        before = {e.pid for e in job.events(ev.Step) if e.size == 2}
    joiners = [s for s in syncs if s.pid not in before]
    return {"total_s": statistics.median(s.total_s for s in joiners),
            "transfer_s": statistics.median(s.transfer_s for s in joiners),
            "state_bytes": syncs[0].state_bytes,
            "sources_used": max(len([v for v in s.bytes_per_source.values() if v])
                                for s in joiners)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "medium", "small"])
    ap.add_argument("--bandwidth", default="", help="CHAOS_BANDWIDTH for the chaos plan")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    args = ap.parse_args()
    results = {s: run(s, args.model, args.bandwidth) for s in args.strategies.split(",")}
    for s, r in results.items():
        ratio = r["total_s"] / results["chaos"]["total_s"] if "chaos" in results else float("nan")
        print(f"{s:10} joiner sync {r['total_s']:.3f} s (transfer {r['transfer_s']:.3f} s) "
              f"sources used {r['sources_used']}  x{ratio:.2f} of chaos")
    print(json.dumps({"bench": "sync", "model": args.model, "results": results}))


if __name__ == "__main__":
    main()
