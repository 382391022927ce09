"""Crash stress: SIGKILL one rank of a real elastic job at many points; crash -> training resumed.

The job and the kill points are :mod:`harness.crash_stress`'s (a ``chaos-hvdrun`` job on this
machine's loopback names, the examples' ``medium`` CNN, Gloo timeout 30 s). Prints one line per
kill, writes every kill to ``--records`` (JSON lines) and, with ``--write-docs``, the table in
docs/crash-stress.md; ends with one JSON line. Usage:

    .venv/bin/python -m bench.bench_crash_stress [--kills 105] [--seed 1] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import crash_stress

REPO = Path(__file__).resolve().parent.parent


def table(summary: dict) -> str:
    rows = ["| point | kills | recovered | median s | p99 s | max s | Gloo timeout waits |",
            "|---|---|---|---|---|---|---|"]
    for point, d in summary["per_point"].items():
        rows.append(f"| {point} | {d['kills']} | {d['recovered']} | {d.get('median_s', '-')} | "
                    f"{d.get('p99_s', '-')} | {d.get('max_s', '-')} | {d['gloo_timeout_waits']} |")
    return "\n".join(rows)


def write_docs(summary: dict, args: argparse.Namespace, elapsed_s: float) -> None:
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, text=True,
                            capture_output=True).stdout.strip()
    text = f"""# Crash stress: crash -> training resumed

Written by `python -m bench.bench_crash_stress --kills {args.kills} --seed {args.seed} --write-docs`
(commit {commit}, {platform.node()}: {os.cpu_count()} CPUs, {elapsed_s / 60:.0f} minutes).
Do not edit by hand; run the bench again.

A `chaos-hvdrun` elastic job on this machine's loopback names (one slot each, Gloo timeout
{crash_stress.GLOO_TIMEOUT_S} s) loses one rank to SIGKILL at the points described in
`harness/crash_stress.py`; a killed host comes back as a standby after Horovod's blacklist
cooldown. Crash -> resumed: from the kill to the first step after another worker's `resumed`
record. *Compound* kills (`before-reset`: a second kill came before training resumed) are
listed per point and left out of the overall distribution.

**{summary['kills']} kills, {summary['recovered']} recovered, {summary['gloo_timeout_waits']} waited for
Gloo's timeout; crash -> resumed over the {summary['simple_kills']} kills that are not compound:
median {summary.get('median_s')} s, p99 {summary.get('p99_s')} s, max {summary.get('max_s')} s.**
How the survivors stopped waiting (`peer_dead` abort paths; `world-guard`: a `world_aborted`
record, a member of a forming world died): {', '.join(summary['abort_paths']) or 'none'}.

{table(summary)}
"""
    (REPO / "docs" / "crash-stress.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=105)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--records", type=Path, default=None, help="JSON lines, one per kill")
    ap.add_argument("--write-docs", action="store_true", help="write docs/crash-stress.md")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chaos-stress-"))
    t0 = time.monotonic()
    kills = crash_stress.run(args.kills, args.seed, work,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    elapsed = time.monotonic() - t0
    summary = crash_stress.summarize(kills)
    records = args.records or work / "kills.jsonl"
    records.write_text("".join(json.dumps(k.to_json()) + "\n" for k in kills))
    print(table(summary), file=sys.stderr)
    if args.write_docs:
        write_docs(summary, args, elapsed)
    print(json.dumps({"bench": "crash_stress", "seed": args.seed, "elapsed_s": round(elapsed, 1),
                      "records": str(records), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
