"""Shard planning at scale: planning time and predicted makespan per algorithm (pure, no network).

Sources get seeded random egress rates of 30-150 Mbit/s (edge devices); the state is
``chunks`` x 256 KiB. One joiner is uncapped; with several joiners each has a 300 Mbit/s ingress
cap, so they compete for the sources. Every plan is judged by the scheduler's own evaluation (one
linear program for all algorithms; a closed form with one joiner) against the fluid optimum (the LP
optimum: no chunking), the lower bound and, with one uncapped joiner, the best plan of whole chunks
(``x_chunk_optimum``: what chunking alone costs is not the planner's).
"""

from __future__ import annotations

import random
import time

from chaos_hvd.state.config import MBIT
from chaos_hvd.state.scheduler import (
    ALGORITHMS,
    Joiner,
    Problem,
    Source,
    chunk_optimal_makespan,
    make_plan,
    optimal_fluid_makespan,
)

from .stats import spread

CHUNK_BYTES = 256 * 1024
# (sources, chunks, joiners). No 1,000-source case with several joiners: greedy alone takes
# more than 6 minutes there (measured), the optimal plan 4.4 s.
FULL = tuple((n, c, j) for n in (5, 50, 200) for c in (360, 10_000) for j in (1, 4)) + \
    ((1000, 10_000, 1),)
QUICK = tuple((n, c, j) for n in (5, 50) for c in (360, 2_000) for j in (1, 2))


def problem(n_sources: int, chunks: int, joiners: int, seed: int = 0) -> Problem:
    rng = random.Random(seed * 1_000_003 + n_sources * 31 + chunks * 7 + joiners)
    sources = tuple(Source(i, rng.uniform(30, 150) * MBIT) for i in range(n_sources))
    cap = None if joiners == 1 else 300 * MBIT
    return Problem(chunks * CHUNK_BYTES, sources,
                   tuple(Joiner(f"j{k}", cap) for k in range(joiners)), chunk_bytes=CHUNK_BYTES)


def run(quick: bool = False, reps: int = 3, algorithms=ALGORITHMS) -> list[dict]:
    grid = QUICK if quick else FULL
    make_plan(problem(3, 10, 1), "optimal")   # the first LP imports scipy (~0.4 s): not planning
    rows = []
    for n, chunks, joiners in grid:
        p = problem(n, chunks, joiners)
        fluid = optimal_fluid_makespan(p)
        whole = chunk_optimal_makespan(p)     # one uncapped joiner: the best whole-chunk plan
        for alg in algorithms:
            times, plan = [], None
            for _ in range(reps):
                t = time.perf_counter()
                plan = make_plan(p, alg)
                times.append(time.perf_counter() - t)
            t_plan = spread(times)
            rows.append({"experiment": "scheduler", "sources": n, "chunks": chunks,
                         "joiners": joiners, "algorithm": str(alg),
                         "plan_ms_median": round(t_plan["median"] * 1e3, 2),
                         "plan_ms_min": round(t_plan["min"] * 1e3, 2),
                         "plan_ms_max": round(t_plan["max"] * 1e3, 2),
                         "makespan_s": round(plan.makespan_s, 4),
                         "fluid_optimum_s": round(fluid, 4),
                         "bound_s": round(plan.bound_s, 4),
                         "x_optimum": round(plan.makespan_s / fluid, 4),
                         "x_chunk_optimum": round(plan.makespan_s / whole, 4) if whole else None,
                         "x_bound": round(plan.makespan_s / plan.bound_s, 4),
                         "reps": reps})
    return rows
