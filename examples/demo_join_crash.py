"""Demo: a real elastic horovodrun job with ChaosState -- join two workers, then crash one.

Prints one line per sync and the crash-to-resumed-training time. Usage:
    python examples/demo_join_crash.py [--model resnet18|medium] [--strategy chaos|single|checkpoint|broadcast]
"""

import argparse
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from chaos_hvd.elastic_job import ElasticJob  # noqa: E402


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
        job.wait_for(lambda ev: any(e["event"] == "commit" and e["step"] >= 2 for e in ev), 300, "commits")
        print("adding host 127.0.0.1 with 2 slots")
        job.set_hosts(["localhost:2", "127.0.0.1:2"])
        job.wait_for(lambda ev: sum(e["event"] == "step" and e["size"] == 4 for e in ev) >= 4, 300,
                     "training at size 4")
        victim = [e for e in job.events("step") if e["size"] == 4 and e["host"] == "localhost"][-1]
        print(f"SIGKILL rank {victim['rank']} (pid {victim['pid']})")
        os.kill(victim["pid"], signal.SIGKILL)
        t = time.monotonic()
        r = job.wait_for(lambda ev: [e for e in ev if e["event"] == "step" and e["t_mono"] > t
                                     and e["size"] == 2], 300, "resume")
        print(f"crash -> resumed training: {r[0]['t_mono'] - t:.2f} s")
        rc = job.wait(1800)
    for e in job.events("sync"):
        src = e.get("bytes_per_source") or {}
        print(f"sync size={e['size']} rank={e['rank']} role={e['role']:6} v={e['version']} "
              f"total={e['total_s']:.3f}s transfer={e['transfer_s']:.3f}s bytes/source={src}")
    finals = job.events("final")
    print(f"exit code {rc}; final parameter digests: {sorted({f['digest'] for f in finals})}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
