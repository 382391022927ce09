"""Shard scheduler: which source sends which bytes of the state to which joiner.

Pure logic: no I/O, no Horovod, no clocks. Input is a :class:`Problem`, output a :class:`Plan`.

Model (fluid, per link direction):

* The state is ``size_bytes`` long; every joiner needs all of it.
* Source ``u`` may start sending at ``ready_s`` (e.g. when its current all-reduce ends) and has an
  egress rate ``egress_bytes_per_s`` shared by all joiners it serves.
* A pair ``(u, j)`` may have its own rate cap (``link_bytes_per_s``), and joiner ``j`` an ingress cap
  shared by all its sources (the shared bottleneck docs/baseline-measurements.md measured).
* A plan gives each (source, joiner) pair a list of byte ranges; ranges start and end on multiples of
  ``chunk_bytes`` (the digest unit of a snapshot), except at the end of the state.

Algorithms (all return a Plan with the predicted makespan of *that* plan and the lower bound):

``even``      equal split over sources (what to do without bandwidth information).
``single``    everything from one source (EDL-like baseline): the fastest, or a named one.
``greedy``    the paper's v1 rule: search the shard size ``s`` over a doubling ladder; for each, hand
              shards one by one to the source with the smallest estimated finish time (which charges a
              fixed per-shard overhead); keep the best ``s``. With ``tensor_sizes`` the shards are whole
              tensors in LPT order (Graham's (4/3 - 1/(3m)) bound for identical sources).
``optimal``   fractional split that minimises the makespan exactly under the model: bisection on the
              finish time ``T`` with a max-flow feasibility test over the intervals between ready times
              (source-interval -> joiner-interval edges carry pair rates, node capacities carry egress
              and ingress caps; with one joiner a pair's edge is also held to its max-min fair
              share of a capped ingress, the split TCP settles at), then rounding to chunks.
              With one joiner and every source ready at once (the common join) the optimum has
              a closed form -- each source at its fair-held pair rate -- and no graph is built;
              for an uncapped joiner the rounding then gives the best whole-chunk plan
              (:func:`chunk_optimal_makespan`, property-tested).

The predicted makespan of any plan is evaluated by a linear program over the same intervals
(:func:`evaluate`; in closed form for one joiner with sources ready at once), so all algorithms are
judged by one yardstick. :func:`lower_bound` relaxes the
coupling between joiners and sources: no plan can beat it.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from ..errors import SchedulerInputError
from .kinds import Algorithm

ALGORITHMS = tuple(Algorithm)
Name = str | int   # a source's or joiner's id: any orderable, hashable value (ranks are ints)
DEFAULT_SHARD_OVERHEAD_S = 0.002  # one request round trip on a LAN-ish edge link
_REL_TOL = 1e-6


@dataclass(frozen=True)
class Source:
    name: Name
    egress_bytes_per_s: float
    ready_s: float = 0.0


@dataclass(frozen=True)
class Joiner:
    name: Name
    ingress_bytes_per_s: float | None = None


@dataclass(frozen=True)
class Problem:
    size_bytes: int
    sources: tuple[Source, ...]
    joiners: tuple[Joiner, ...]
    link_bytes_per_s: Mapping[tuple[str, str], float] = field(default_factory=dict)
    chunk_bytes: int = 1
    tensor_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "joiners", tuple(self.joiners))
        object.__setattr__(self, "link_bytes_per_s", dict(self.link_bytes_per_s))
        if self.tensor_sizes is not None:
            object.__setattr__(self, "tensor_sizes", tuple(int(t) for t in self.tensor_sizes))
        _validate(self)

    def pair_rate(self, source: Source, joiner: Joiner) -> float:
        """Rate of the pair alone: min of source egress, pair link and joiner ingress."""
        rate = source.egress_bytes_per_s
        link = self.link_bytes_per_s.get((source.name, joiner.name))
        if link is not None:
            rate = min(rate, link)
        if joiner.ingress_bytes_per_s is not None:
            rate = min(rate, joiner.ingress_bytes_per_s)
        return rate

    @property
    def n_chunks(self) -> int:
        return -(-self.size_bytes // self.chunk_bytes)


@dataclass(frozen=True)
class Assignment:
    source: Name
    joiner: Name
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Plan:
    algorithm: Algorithm
    assignments: tuple[Assignment, ...]
    makespan_s: float  # predicted for this plan under the fluid model
    bound_s: float  # no plan can finish sooner
    chunk_bytes: int = 1

    def chunks_for(self, joiner: Name) -> dict[Name, list[int]]:
        """Source -> the chunk indices it sends `joiner` (ranges are chunk-aligned)."""
        out: dict[Name, list[int]] = {}
        for a in self.for_joiner(joiner):
            first, last = a.start // self.chunk_bytes, -(-a.end // self.chunk_bytes)
            out.setdefault(a.source, []).extend(range(first, last))
        return out

    def for_joiner(self, joiner: Name) -> list[Assignment]:
        return [a for a in self.assignments if a.joiner == joiner]

    def bytes_by_source(self, joiner: Name | None = None) -> dict[Name, int]:
        out: dict[Name, int] = {}
        for a in self.assignments:
            if joiner is None or a.joiner == joiner:
                out[a.source] = out.get(a.source, 0) + a.nbytes
        return out


# --------------------------------------------------------------------------------------------------
# validation


def _positive_finite(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SchedulerInputError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise SchedulerInputError(f"{what} must be positive and finite, got {value!r}")


def _validate(p: Problem) -> None:
    if not isinstance(p.size_bytes, int) or p.size_bytes <= 0:
        raise SchedulerInputError(f"size_bytes must be a positive int, got {p.size_bytes!r}")
    if not isinstance(p.chunk_bytes, int) or p.chunk_bytes <= 0:
        raise SchedulerInputError(f"chunk_bytes must be a positive int, got {p.chunk_bytes!r}")
    if not p.sources:
        raise SchedulerInputError("no sources: at least one up-to-date worker must serve the state")
    if not p.joiners:
        raise SchedulerInputError("no joiners: nothing to plan")
    names = [s.name for s in p.sources] + [j.name for j in p.joiners]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SchedulerInputError(f"duplicate source/joiner names: {dup}")
    for s in p.sources:
        _positive_finite(s.egress_bytes_per_s, f"source {s.name!r} egress_bytes_per_s")
        if not math.isfinite(s.ready_s) or s.ready_s < 0:
            raise SchedulerInputError(f"source {s.name!r} ready_s must be >= 0, got {s.ready_s!r}")
    for j in p.joiners:
        if j.ingress_bytes_per_s is not None:
            _positive_finite(j.ingress_bytes_per_s, f"joiner {j.name!r} ingress_bytes_per_s")
    known_s = {s.name for s in p.sources}
    known_j = {j.name for j in p.joiners}
    for (u, j), rate in p.link_bytes_per_s.items():
        if u not in known_s or j not in known_j:
            raise SchedulerInputError(f"link ({u!r}, {j!r}) names an unknown source or joiner")
        _positive_finite(rate, f"link ({u!r}, {j!r}) rate")
    if p.tensor_sizes is not None:
        if any(t < 0 for t in p.tensor_sizes) or sum(p.tensor_sizes) != p.size_bytes:
            raise SchedulerInputError("tensor_sizes must be >= 0 and sum to size_bytes")


# --------------------------------------------------------------------------------------------------
# time intervals between ready times


def _breakpoints(p: Problem, horizon: float) -> list[tuple[float, float]]:
    """Intervals [a, b) of [0, horizon) cut at every source's ready time."""
    cuts = sorted({0.0, *(s.ready_s for s in p.sources if s.ready_s < horizon), horizon})
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _active_len(src: Source, interval: tuple[float, float]) -> float:
    a, b = interval
    return max(0.0, b - max(a, src.ready_s))


# --------------------------------------------------------------------------------------------------
# lower bound


def _min_time_for(volume: float, rate_at: Sequence[tuple[float, float]]) -> float:
    """Smallest T with integral_0^T rate(t) dt >= volume; rate_at = [(from_t, rate)] steps, sorted."""
    done = 0.0
    for i, (start, rate) in enumerate(rate_at):
        end = rate_at[i + 1][0] if i + 1 < len(rate_at) else math.inf
        if rate > 0 and done + rate * (end - start) >= volume:
            return start + (volume - done) / rate
        done += rate * (end - start) if math.isfinite(end) else 0.0
    return math.inf


def lower_bound(p: Problem) -> float:
    """max(per-joiner bound ignoring other joiners, aggregate-egress bound)."""
    readies = sorted({s.ready_s for s in p.sources} | {0.0})
    best = 0.0
    for j in p.joiners:
        steps = []
        for t in readies:
            rate = sum(p.pair_rate(s, j) for s in p.sources if s.ready_s <= t)
            if j.ingress_bytes_per_s is not None:
                rate = min(rate, j.ingress_bytes_per_s)
            steps.append((t, rate))
        best = max(best, _min_time_for(p.size_bytes, steps))
    egress = [(t, sum(s.egress_bytes_per_s for s in p.sources if s.ready_s <= t)) for t in readies]
    best = max(best, _min_time_for(p.size_bytes * len(p.joiners), egress))
    return best


# --------------------------------------------------------------------------------------------------
# evaluation of a fixed plan (LP)


def _common_start(p: Problem) -> float | None:
    """With one joiner and every source ready at the same time: that time (the closed forms below
    hold there); otherwise None."""
    readies = {s.ready_s for s in p.sources}
    return readies.pop() if len(p.joiners) == 1 and len(readies) == 1 else None


def evaluate(p: Problem, assignments: Iterable[Assignment]) -> float:
    """Smallest finish time of a fixed plan under the fluid model (solved as a linear program)."""
    amount: dict[tuple[int, int], float] = {}
    s_index = {s.name: i for i, s in enumerate(p.sources)}
    j_index = {j.name: i for i, j in enumerate(p.joiners)}
    for a in assignments:
        key = (s_index[a.source], j_index[a.joiner])
        amount[key] = amount.get(key, 0.0) + a.nbytes
    if not amount:
        return 0.0
    start = _common_start(p)
    if start is not None:    # one interval: each pair at its rate, all of them within the ingress
        j = p.joiners[0]
        t = max(v / p.pair_rate(p.sources[u], j) for (u, _), v in amount.items())
        if j.ingress_bytes_per_s is not None:
            t = max(t, sum(amount.values()) / j.ingress_bytes_per_s)
        return start + t
    # Candidate segments: T lies between consecutive ready times (or beyond the last one).
    readies = sorted({s.ready_s for s in p.sources} | {0.0})
    best = math.inf
    for k, lo in enumerate(readies):
        hi = readies[k + 1] if k + 1 < len(readies) else math.inf
        t = _lp_segment(p, amount, readies[: k + 1], lo, hi)
        if t is not None:
            best = min(best, t)
            break  # segments are increasing in T: the first feasible one holds the minimum
    return best


def _lp_segment(p, amount, cuts, lo, hi):
    """min T in [lo, hi] such that the fixed per-pair amounts fit, or None if infeasible.

    Intervals are [cuts[0], cuts[1]), ..., [cuts[-1], T); every ready time <= lo is a cut, so a source
    is either active for a whole interval (ready <= its start) or not at all.
    """
    pairs = sorted(amount)
    n_int = len(cuts)
    nv = len(pairs) * n_int + 1  # flow of each (pair, interval), then T
    t_col = nv - 1

    def length(ii):  # (constant, coefficient of T) of interval ii's length
        if ii + 1 < n_int:
            return cuts[ii + 1] - cuts[ii], 0.0
        return -cuts[ii], 1.0

    a_ub, b_ub, a_eq, b_eq = [], [], [], []

    def cap_row(members, ii, rate):
        const, coef = length(ii)
        row = np.zeros(nv)
        row[[pi * n_int + ii for pi in members]] = 1.0
        row[t_col] = -rate * coef
        a_ub.append(row)
        b_ub.append(rate * const)

    for pi, (ui, ji) in enumerate(pairs):
        row = np.zeros(nv)
        row[pi * n_int:(pi + 1) * n_int] = 1.0
        a_eq.append(row)
        b_eq.append(amount[(ui, ji)])
        src = p.sources[ui]
        for ii in range(n_int):
            if src.ready_s > cuts[ii]:
                cap_row([pi], ii, 0.0)  # not ready yet: sends nothing here
            else:
                cap_row([pi], ii, p.pair_rate(src, p.joiners[ji]))
    for ui, src in enumerate(p.sources):
        members = [pi for pi, (u, _) in enumerate(pairs) if u == ui]
        for ii in range(n_int):
            if members and src.ready_s <= cuts[ii]:
                cap_row(members, ii, src.egress_bytes_per_s)
    for ji, jnr in enumerate(p.joiners):
        members = [pi for pi, (_, j) in enumerate(pairs) if j == ji]
        if members and jnr.ingress_bytes_per_s is not None:
            for ii in range(n_int):
                cap_row(members, ii, jnr.ingress_bytes_per_s)
    c = np.zeros(nv)
    c[t_col] = 1.0
    bounds = [(0, None)] * (nv - 1) + [(lo, None if math.isinf(hi) else hi)]
    from scipy.optimize import linprog  # heavy (0.6 s): only when an LP is solved
    res = linprog(c, A_ub=np.array(a_ub), b_ub=b_ub, A_eq=np.array(a_eq), b_eq=b_eq,
                  bounds=bounds, method="highs")
    return float(res.x[t_col]) if res.status == 0 else None


# --------------------------------------------------------------------------------------------------
# plan construction helpers


def _contiguous(p: Problem, joiner: Name, share: Sequence[tuple[Name, int]]) -> list[Assignment]:
    """Lay chunk counts per source out as contiguous ranges, in the given source order."""
    out, chunk = [], 0
    for name, n in share:
        if n <= 0:
            continue
        start = chunk * p.chunk_bytes
        chunk += n
        end = min(chunk * p.chunk_bytes, p.size_bytes)
        out.append(Assignment(name, joiner, start, end))
    return out


def _round_chunks(weights: Sequence[float], total: int,
                  prefer: Sequence[float] | None = None) -> list[int]:
    """Round non-negative weights (a fluid plan's bytes per source) to chunk counts summing to
    total, keeping the largest count / weight as small as possible; among equal candidates a
    chunk goes to the largest `prefer` (a source's own rate: sources held to one fair level
    tie, and with few chunks not all of them send, so the level rises for those that do).

    Each chunk left over after flooring goes to the source whose time grows least by taking it
    (smallest (count + 1) / weight): when the weights are a fluid optimum, count / weight is the
    source's finish time over the optimum's. Largest-remainder rounding, which ignores the
    weights' size, can hand a chunk to a source several times slower than the rest (50 sources at
    30-150 Mbit/s, 2,000 chunks: 1.038x the fluid optimum, against 1.014x this way)."""
    s = sum(weights)
    if s <= 0:
        raise SchedulerInputError("no source can send anything")
    exact = [w * total / s for w in weights]
    base = [int(math.floor(e)) for e in exact]
    tie = [-x for x in prefer] if prefer is not None else [0.0] * len(weights)
    heap = [((base[i] + 1) / e, tie[i], i) for i, e in enumerate(exact) if e > 0]
    heapq.heapify(heap)
    for _ in range(total - sum(base)):
        _, _, i = heapq.heappop(heap)
        base[i] += 1
        heapq.heappush(heap, ((base[i] + 1) / exact[i], tie[i], i))
    return base


def _finish(p: Problem, algorithm: Algorithm, assignments: list[Assignment]) -> Plan:
    return Plan(algorithm, tuple(assignments), evaluate(p, assignments), lower_bound(p),
                p.chunk_bytes)


# --------------------------------------------------------------------------------------------------
# algorithms


def plan_even(p: Problem) -> Plan:
    out: list[Assignment] = []
    for j in p.joiners:
        counts = _round_chunks([1.0] * len(p.sources), p.n_chunks)
        out += _contiguous(p, j.name, [(s.name, n) for s, n in zip(p.sources, counts)])
    return _finish(p, Algorithm.EVEN, out)


def plan_single(p: Problem, source: Name | None = None) -> Plan:
    out: list[Assignment] = []
    for j in p.joiners:
        if source is None:
            best = min(p.sources, key=lambda s: (s.ready_s + p.size_bytes / p.pair_rate(s, j), s.name))
        else:
            matches = [s for s in p.sources if s.name == source]
            if not matches:
                raise SchedulerInputError(f"unknown source {source!r}")
            best = matches[0]
        out.append(Assignment(best.name, j.name, 0, p.size_bytes))
    return _finish(p, Algorithm.SINGLE, out)


def _greedy_assign(p: Problem, shards: Sequence[tuple[int, int]], overhead_s: float):
    """Give each (start, end) shard, for every joiner, to the source finishing it soonest."""
    busy = {s.name: s.ready_s for s in p.sources}
    out: list[Assignment] = []
    for j in p.joiners:
        for start, end in shards:
            def finish(s: Source) -> float:
                return busy[s.name] + overhead_s + (end - start) / p.pair_rate(s, j)
            best = min(p.sources, key=lambda s: (finish(s), s.name))
            busy[best.name] = finish(best)
            out.append(Assignment(best.name, j.name, start, end))
    return out, max(busy.values())


def _merge(assignments: list[Assignment]) -> list[Assignment]:
    merged: list[Assignment] = []
    for a in sorted(assignments, key=lambda a: (a.joiner, a.source, a.start)):
        last = merged[-1] if merged else None
        if last and (last.joiner, last.source, last.end) == (a.joiner, a.source, a.start):
            merged[-1] = Assignment(a.source, a.joiner, last.start, a.end)
        else:
            merged.append(a)
    return merged


def plan_greedy(p: Problem, shard_overhead_s: float = DEFAULT_SHARD_OVERHEAD_S) -> Plan:
    if p.tensor_sizes is not None:
        offsets = np.concatenate([[0], np.cumsum(p.tensor_sizes)]).astype(int)
        jobs = [(int(offsets[i]), int(offsets[i + 1])) for i in range(len(p.tensor_sizes))
                if p.tensor_sizes[i] > 0]
        jobs.sort(key=lambda r: (-(r[1] - r[0]), r[0]))  # LPT: longest first
        out, _ = _greedy_assign(p, jobs, shard_overhead_s)
        return _finish(p, Algorithm.GREEDY, _merge(out))
    best_out, best_est = None, math.inf
    shard = p.chunk_bytes
    while True:
        shards = [(a, min(a + shard, p.size_bytes)) for a in range(0, p.size_bytes, shard)]
        out, est = _greedy_assign(p, shards, shard_overhead_s)
        if est < best_est:
            best_out, best_est = out, est
        if shard >= p.size_bytes:
            break
        shard *= 2
    return _finish(p, Algorithm.GREEDY, _merge(best_out))


def fair_level(rates: Sequence[float], cap: float | None) -> float:
    """Max-min fair share of a bottleneck of rate `cap` among flows limited to `rates`: each flow
    gets min(rate, level) and the shares sum to `cap` (inf when the cap does not bind). TCP flows
    into one capped ingress settle near this split, whatever a plan would prefer."""
    if cap is None:
        return math.inf
    left, ordered = cap, sorted(rates)
    for i, r in enumerate(ordered):
        share = left / (len(ordered) - i)
        if r > share:
            return share
        left -= r
    return math.inf


def _feasible_flows(p: Problem, horizon: float, fair: bool = True):
    """Max-flow test: can every joiner get size_bytes by `horizon`? Returns per-pair bytes or None.

    With one joiner (and `fair`), a pair's flow is also held to its max-min fair share of the
    joiner's capped ingress: a split that needs one source to outpace its fair share of a shared
    bottleneck is not what TCP delivers. With several joiners the sources' egress is shared too
    and per-joiner levels would be too strict, so the plain model stays."""
    fair = fair and len(p.joiners) == 1
    g = nx.DiGraph()
    intervals = _breakpoints(p, horizon)
    for ii, iv in enumerate(intervals):
        active = [(u, length) for u in p.sources if (length := _active_len(u, iv)) > 0]
        level = {j.name: fair_level([p.pair_rate(u, j) for u, _ in active],
                                    j.ingress_bytes_per_s if fair else None)
                 for j in p.joiners}      # among the sources sending in this interval
        for u, length in active:
            g.add_edge("S", ("u", u.name, ii), capacity=int(u.egress_bytes_per_s * length))
            for j in p.joiners:
                rate = min(p.pair_rate(u, j), level[j.name])
                g.add_edge(("u", u.name, ii), ("j", j.name, ii), capacity=int(rate * length))
    for j in p.joiners:
        for ii, (a, b) in enumerate(intervals):
            cap = (b - a) * (j.ingress_bytes_per_s if j.ingress_bytes_per_s else math.inf)
            if g.has_node(("j", j.name, ii)):
                if math.isfinite(cap):
                    g.add_edge(("j", j.name, ii), ("J", j.name), capacity=int(cap))
                else:
                    g.add_edge(("j", j.name, ii), ("J", j.name))
        g.add_edge(("J", j.name), "T", capacity=p.size_bytes)
    if "S" not in g or "T" not in g:
        return None
    value, flow = nx.maximum_flow(g, "S", "T")
    if value < p.size_bytes * len(p.joiners):
        return None
    per_pair: dict[tuple[str, str], int] = {}
    for u in p.sources:
        for ii in range(len(intervals)):
            node = ("u", u.name, ii)
            for (kind, jname, _), f in flow.get(node, {}).items():
                per_pair[(u.name, jname)] = per_pair.get((u.name, jname), 0) + f
    return per_pair


def _bisect(p: Problem, fair: bool = True) -> tuple[float, dict[tuple[str, str], int]]:
    """Smallest horizon (to a relative 1e-6) at which the max-flow test passes, with its flows."""
    lo = lower_bound(p)
    hi = max(s.ready_s for s in p.sources) + p.size_bytes * len(p.joiners) / min(
        p.pair_rate(s, j) for s in p.sources for j in p.joiners)
    hi = max(hi, lo) * 1.01 + 1e-9
    flows = _feasible_flows(p, hi, fair)
    while flows is None:  # integer capacities may need a hair more than the fluid bound
        hi *= 2
        flows = _feasible_flows(p, hi, fair)
    for _ in range(100):
        if hi - lo <= _REL_TOL * hi:
            break
        mid = (lo + hi) / 2
        f = _feasible_flows(p, mid, fair)
        if f is None:
            lo = mid
        else:
            hi, flows = mid, f
    return hi, flows


def _closed_form(p: Problem, start: float) -> tuple[float, list[float]]:
    """One joiner, every source ready at `start`: each source sends at its pair rate held to the
    max-min fair share of the joiner's ingress, so the fluid optimum is S / (sum of those rates)
    and each source's bytes are proportional to its rate -- what the max-flow bisection converges
    to there, without the graph (1,000 sources: milliseconds instead of seconds)."""
    j = p.joiners[0]
    rates = [p.pair_rate(s, j) for s in p.sources]
    level = fair_level(rates, j.ingress_bytes_per_s)
    shares = [min(r, level) for r in rates]
    return start + p.size_bytes / sum(shares), shares


def plan_optimal(p: Problem) -> Plan:
    start = _common_start(p)
    if start is not None:
        weights = {p.joiners[0].name: _closed_form(p, start)[1]}
    else:
        _, flows = _bisect(p)
        weights = {j.name: [float(flows.get((s.name, j.name), 0)) for s in p.sources]
                   for j in p.joiners}
    out: list[Assignment] = []
    for j in p.joiners:
        counts = _round_chunks(weights[j.name], p.n_chunks,
                               prefer=[p.pair_rate(s, j) for s in p.sources])
        share = [(s.name, n) for s, n in zip(p.sources, counts)]
        if p.size_bytes % p.chunk_bytes:   # the short last chunk goes to the latest finisher
            last = max(range(len(share)), key=lambda i: (counts[i] / weights[j.name][i]
                                                         if counts[i] else -1.0))
            share.append(share.pop(last))
        out += _contiguous(p, j.name, share)
    return _finish(p, Algorithm.OPTIMAL, out)


def optimal_fluid_makespan(p: Problem) -> float:
    """The optimum of the fluid model before rounding to chunks, the yardstick every plan is
    evaluated against (without the fair-share rule, which only steers the optimal planner; with
    one joiner it does not change the optimum, only how the bytes are split)."""
    start = _common_start(p)
    return _closed_form(p, start)[0] if start is not None else _bisect(p, fair=False)[0]


def chunk_optimal_makespan(p: Problem) -> float | None:
    """The best any whole-chunk plan can do, where that has a closed form: one joiner with no
    ingress cap, sources ready together, a state of whole chunks. The smallest T at which the
    sources' whole chunks, floor((T - start) x rate / chunk) each, cover the state (bisection to a
    relative 1e-9). None elsewhere."""
    start = _common_start(p)
    if start is None or p.joiners[0].ingress_bytes_per_s is not None \
            or p.size_bytes % p.chunk_bytes:
        return None
    per_chunk = np.array([p.pair_rate(s, p.joiners[0]) for s in p.sources]) / p.chunk_bytes
    need = p.n_chunks
    lo, hi = need / per_chunk.sum(), need / per_chunk.max()
    while hi - lo > 1e-9 * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if np.floor(mid * per_chunk).sum() >= need else (mid, hi)
    return start + hi


_PLANNERS = {Algorithm.OPTIMAL: lambda p, **_: plan_optimal(p), Algorithm.GREEDY: plan_greedy,
             Algorithm.EVEN: lambda p, **_: plan_even(p), Algorithm.SINGLE: plan_single}


def make_plan(p: Problem, algorithm: Algorithm | str = Algorithm.OPTIMAL, **kwargs) -> Plan:
    try:
        planner = _PLANNERS[Algorithm(algorithm)]
    except ValueError:
        raise SchedulerInputError(f"unknown algorithm {algorithm!r}; choose one of "
                                  f"{', '.join(ALGORITHMS)}") from None
    return planner(p, **kwargs)
