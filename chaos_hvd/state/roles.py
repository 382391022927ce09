"""Who serves state and who needs which chunks, decided from committed versions -- never ranks.

Pure logic. Every rank allgathers one :class:`RankInfo` (committed version, manifest digest, the
digest of every chunk of its snapshot) and runs :func:`decide` and :func:`plan_transfers` on the same
list, so all ranks reach the same decisions without another message (this is what prevents
horovod#3494, where survivors skipped a sync that joiners waited for).

Target: the newest committed version wins; among ranks holding it, the lowest rank's snapshot is the
target (at a job's first sync all versions are 0 and ranks hold different random initialisations:
this picks rank 0's, as Horovod's broadcast does). Every rank whose manifest digest differs from the
target's *needs* state, but only the chunks whose digests differ: a fresh joiner needs all of them,
a survivor typically only the last chunk (BatchNorm statistics are per rank; the snapshot puts them
last). Chunks are content-addressed: any rank whose chunk digest equals the target's can serve that
chunk, including a needer that holds the rest. If no rank needs anything, nothing is transferred.

:func:`plan_transfers` groups needers with identical needs, plans the chunks that every holder can
serve with the shard scheduler (sources share egress across the group's joiners), and gives the
remaining rare chunks to their least-loaded holder. Ranks on one host share that host's links.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from enum import StrEnum

from ..errors import TransferError
from .config import MBIT, BandwidthMap
from .kinds import Algorithm
from .scheduler import Joiner, Problem, Source, make_plan

LOOPBACK_BYTES_PER_S = 10e9 / 8  # two ranks on one host talk through memory, not a link
Rank = int


class Role(StrEnum):
    SOURCE = "source"
    NEEDER = "needer"


@dataclass(frozen=True)
class RankInfo:
    rank: int
    host: str  # Horovod's host name (HOROVOD_HOSTNAME): key of the bandwidth map
    addr: str  # where this rank's shard server listens
    port: int
    version: int
    digest: str  # manifest digest of the committed snapshot
    size_bytes: int
    chunk_bytes: int
    chunks: tuple[str, ...]  # digest of every chunk of the snapshot
    token: str  # hex; authenticates shard requests for this sync only

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> "RankInfo":
        try:
            info = cls(**dict(doc, chunks=tuple(doc["chunks"])))
        except (TypeError, KeyError) as e:
            raise TransferError(f"malformed rank info: {e}") from e
        if not all(isinstance(v, int) for v in (info.rank, info.version, info.size_bytes,
                                                 info.chunk_bytes, info.port)):
            raise TransferError("malformed rank info: integer fields expected")
        return info


@dataclass(frozen=True)
class Roles:
    version: int
    digest: str
    target: int
    size_bytes: int
    chunk_bytes: int
    needs: dict[int, tuple[int, ...]]  # needer rank -> chunk indices it must fetch (may be empty)
    holders: tuple[tuple[int, ...], ...]  # per chunk: ranks holding the target's bytes

    @property
    def needers(self) -> tuple[int, ...]:
        return tuple(sorted(self.needs))

    @property
    def sources(self) -> tuple[int, ...]:
        """Ranks holding the complete target state."""
        return tuple(sorted(set.intersection(*map(set, self.holders)) - set(self.needs))) \
            if self.holders else (self.target,)

    @property
    def transfer_bytes(self) -> int:
        return sum(self.needed_bytes(r) for r in self.needs)

    def needed_bytes(self, rank: int) -> int:
        return sum(_chunk_len(self, c) for c in self.needs.get(rank, ()))

    def role_of(self, rank: Rank) -> Role:
        return Role.NEEDER if rank in self.needs else Role.SOURCE


def decide(infos: list[RankInfo]) -> Roles:
    if not infos:
        raise TransferError("no rank information")
    newest = max(i.version for i in infos)
    target = min((i for i in infos if i.version == newest), key=lambda i: i.rank)
    n = len(target.chunks)

    def same_space(i: RankInfo) -> bool:
        return (i.size_bytes, i.chunk_bytes, len(i.chunks)) == (target.size_bytes, target.chunk_bytes, n)

    holders = tuple(tuple(i.rank for i in infos if same_space(i) and i.chunks[c] == target.chunks[c])
                    for c in range(n))
    needs = {}
    for i in infos:
        if i.digest != target.digest:
            needs[i.rank] = tuple(c for c in range(n) if i.rank not in holders[c])
    return Roles(newest, target.digest, target.rank, target.size_bytes, target.chunk_bytes,
                 needs, holders)


@dataclass(frozen=True)
class NeederPlan:
    """What one needer fetches: chunk indices per source rank (the unit transfer works in)."""

    assigned: dict[Rank, list[int]]
    algorithm: Algorithm
    predicted_makespan_s: float
    bound_s: float

    def bytes_by_source(self, roles: Roles) -> dict[Rank, int]:
        return {r: sum(_chunk_len(roles, c) for c in cs) for r, cs in self.assigned.items()}


def _chunk_len(roles: Roles, c: int) -> int:
    return min(roles.chunk_bytes, roles.size_bytes - c * roles.chunk_bytes)


def plan_transfers(roles: Roles, infos: list[RankInfo], bandwidth: BandwidthMap,
                   algorithm: Algorithm, only: Rank | None = None) -> dict[Rank, NeederPlan]:
    """One plan per needer (identical on every rank that computes it). With `only`, plan just
    the group of needers `only` belongs to: a survivor that lacks one chunk does not plan a
    joiner's whole state (the group's plan is the same either way)."""
    by_rank = {i.rank: i for i in infos}
    groups: dict[tuple[int, ...], list[int]] = {}
    for r in roles.needers:
        if roles.needs[r] and (only is None or roles.needs[r] == roles.needs.get(only)):
            groups.setdefault(roles.needs[r], []).append(r)
    plans = {r: NeederPlan({}, Algorithm(algorithm), 0.0, 0.0) for r in roles.needers}
    for needed, members in groups.items():
        classes: dict[tuple[int, ...], list[int]] = {}
        for c in needed:
            classes.setdefault(roles.holders[c], []).append(c)
        main_holders, main = max(classes.items(), key=lambda kv: (len(kv[1]), kv[0]))
        if not main_holders:
            raise TransferError(f"no rank holds chunk {main[0]} of the newest state")
        size = sum(_chunk_len(roles, c) for c in main)
        # a short last chunk can only be the last of `main` (chunks are sorted), so the virtual
        # space keeps uniform chunks
        problem = build_problem(size, main_holders, members, by_rank, bandwidth, roles.chunk_bytes)
        plan = make_plan(problem, algorithm)
        for r in members:
            # the plan's chunks index `main` (the chunks every main holder can serve)
            assigned = {src: [main[c] for c in chunks]
                        for src, chunks in plan.chunks_for(r).items()}
            for holder_set, chunks in classes.items():
                if holder_set == main_holders:
                    continue
                if not holder_set:
                    raise TransferError(f"no rank holds chunk {chunks[0]} of the newest state")
                for c in chunks:  # rare chunks (e.g. the target's BN statistics): least-loaded holder
                    src = min(holder_set, key=lambda h: (len(assigned.get(h, [])), h))
                    assigned.setdefault(src, []).append(c)
            plans[r] = NeederPlan(assigned, plan.algorithm, plan.makespan_s, plan.bound_s)
    return plans


def build_problem(size_bytes: int, sources: tuple[int, ...], joiners: list[int],
                  by_rank: dict[int, RankInfo], bandwidth: BandwidthMap, chunk_bytes: int) -> Problem:
    """Scheduler problem; sources and joiners are named by their ranks."""
    src_hosts = Counter(by_rank[r].host for r in sources)
    dst_hosts = Counter(by_rank[r].host for r in joiners)
    known = list(bandwidth.hosts.values())
    fallback = bandwidth.default_mbps or (sum(known) / len(known) if known else 100.0)
    srcs, jnrs, links = [], [], {}
    for r in sources:
        host = by_rank[r].host
        mbps = bandwidth.egress_mbps(host) or fallback
        srcs.append(Source(r, mbps * MBIT / src_hosts[host]))
    for r in joiners:
        host = by_rank[r].host
        cap = bandwidth.ingress.get(host)
        jnrs.append(Joiner(r, cap * MBIT / dst_hosts[host] if cap else None))
        for s in sources:
            shost = by_rank[s].host
            if shost == host:
                links[(s, r)] = LOOPBACK_BYTES_PER_S
            elif (shost, host) in bandwidth.links:
                links[(s, r)] = bandwidth.links[(shost, host)] * MBIT
    return Problem(size_bytes, tuple(srcs), tuple(jnrs), links, chunk_bytes)
