"""Crash-to-resumed-training time, with and without the peer watch, side by side in one run.

A real elastic horovodrun job on localhost grows 2 -> 4 workers, then one worker is SIGKILLed
(harness.elastic_job.join_then_crash). Run once with CHAOS_PEER_WATCH=1 and once with 0 (then the
survivors not adjacent to the dead rank wait for Gloo's timeout, 30 s here as by default). Prints
both times and their ratio, then one JSON line. Usage: python -m bench.bench_recovery [--runs 1]
"""

import argparse
import json
import statistics
import tempfile

from harness.elastic_job import ElasticJob, join_then_crash

ARGS = ["--model", "medium", "--epochs", "40", "--samples", "256", "--batch-size", "8",
        "--step-sleep", "0.08", "--commit-every", "2"]
GLOO_TIMEOUT_S = 30


def once(watch: bool) -> float:
    env = {"CHAOS_PEER_WATCH": "1" if watch else "0"}
    with ElasticJob(ARGS, ["localhost:2"], np=2, min_np=2, max_np=4, env=env,
                    gloo_timeout_s=GLOO_TIMEOUT_S, workdir=tempfile.mkdtemp(prefix="chaos-rec-")) as job:
        return join_then_crash(job, timeout_s=180)["recovery_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    times = {"watch": [], "gloo_timeout": []}
    for _ in range(args.runs):
        times["watch"].append(once(True))
        times["gloo_timeout"].append(once(False))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"crash -> resumed training: peer watch {med['watch']:.2f} s, Gloo timeout "
          f"({GLOO_TIMEOUT_S} s) {med['gloo_timeout']:.2f} s, x{med['gloo_timeout'] / med['watch']:.1f}")
    print(json.dumps({"bench": "recovery", "gloo_timeout_s": GLOO_TIMEOUT_S, "runs": times,
                      "median_s": med}))


if __name__ == "__main__":
    main()
