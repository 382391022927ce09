"""Shard plans on docs/baseline-measurements.md's emulated edge network: every algorithm side by side.

Network: 5 sources at [78.3, 47.2, 137.2, 33.0, 116.5] Mbit/s egress, one joiner, the ResNet-18 +
momentum state of 93,554,656 bytes, 256 KiB chunks; once with an unlimited joiner and once with its
ingress capped at 300 Mbit/s. Prints each plan's predicted makespan against the lower bound and the
planning time, then one JSON line. Pure computation (no network). Usage: python -m bench.bench_scheduler
"""

import json
import time

from chaos_hvd.state.config import MBIT
from chaos_hvd.state.scheduler import ALGORITHMS, Joiner, Problem, Source, make_plan

RATES_MBPS = [78.3, 47.2, 137.2, 33.0, 116.5]
STATE_BYTES = 93_554_656


def main():
    sources = tuple(Source(f"h{i + 1}", r * MBIT) for i, r in enumerate(RATES_MBPS))
    out = {}
    for label, ingress in (("uncapped", None), ("ingress_300mbps", 300 * MBIT)):
        p = Problem(STATE_BYTES, sources, (Joiner("h6", ingress),), chunk_bytes=256 * 1024)
        for alg in ALGORITHMS:
            t = time.perf_counter()
            plan = make_plan(p, alg)
            took = time.perf_counter() - t
            out[f"{label}/{alg}"] = {"makespan_s": round(plan.makespan_s, 4),
                                     "bound_s": round(plan.bound_s, 4), "plan_s": round(took, 4)}
            print(f"{label:16} {alg:8} predicted {plan.makespan_s:6.3f} s  bound {plan.bound_s:.3f} s  "
                  f"x{plan.makespan_s / plan.bound_s:.3f}  planned in {took * 1e3:.0f} ms")
    print(json.dumps({"bench": "scheduler", "state_bytes": STATE_BYTES, "results": out}))


if __name__ == "__main__":
    main()
