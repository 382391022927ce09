"""Demo: a real elastic horovodrun job with ChaosState -- join two workers, then crash one.

Prints one line per sync and the crash-to-resumed-training time. Usage:
    python -m examples.demo_join_crash [--model resnet18|medium] [--strategy chaos|single|checkpoint|broadcast]
"""

import argparse
import os
import sys
import tempfile

from chaos_hvd import events
from harness.elastic_job import ElasticJob, join_then_crash


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18", choices=["resnet18", "medium", "small"])
    ap.add_argument("--strategy", default="chaos")
    ap.add_argument("--bandwidth", default="", help="CHAOS_BANDWIDTH spec, e.g. 'default=100'")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="chaos-demo-")
    env = {"CHAOS_SYNC_STRATEGY": args.strategy, "CHAOS_BANDWIDTH": args.bandwidth,
           "CHAOS_CHECKPOINT_DIR": os.path.join(workdir, "ckpt")}
    train = ["--model", args.model, "--epochs", "6", "--samples", "192", "--batch-size", "8",
             "--commit-every", "2"]
    job = ElasticJob(train, ["localhost:2"], np=2, min_np=2, max_np=4, env=env, workdir=workdir)
    print(f"work dir {workdir}; starting 2 workers ({args.model}, strategy {args.strategy})")
    with job:
        print("training; host 127.0.0.1 (2 slots) joins after 2 commits, then a worker is SIGKILLed")
        result = join_then_crash(job, commits_before_join=2, steps_after_join=4, timeout_s=600)
        print(f"SIGKILLed rank {result['victim'].rank} (pid {result['victim'].pid}); "
              f"crash -> resumed training: {result['recovery_s']:.2f} s")
        rc = job.wait(1800)
    for e in job.events(events.Sync):
        print(f"sync size={e.size} rank={e.rank} role={e.role:6} v={e.version} "
              f"total={e.total_s:.3f}s transfer={e.transfer_s:.3f}s "
              f"bytes/source rank={e.bytes_per_source}")
    finals = job.events(events.Final)
    print(f"exit code {rc}; final parameter digests: {sorted({f.digest for f in finals})}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
