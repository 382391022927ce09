"""The sync strategies: how a rank that needs state gets it. One class each; no Horovod import.

After every reset all ranks agree on :class:`~chaos_hvd.state.roles.Roles` (who holds which
chunks of the newest committed state). A strategy then moves the bytes:

``chaos``       every needer plans byte ranges over *all* holders with the shard scheduler and pulls
                them in parallel; idle sources steal work from slow ones (the paper's design).
``single``      one source per needer, no stealing (an EDL-like baseline).
``checkpoint``  the target writes a checkpoint to a shared directory or an HTTP storage host;
                needers read all of it (a Pollux / Autoscaling-like baseline).
``broadcast``   Horovod's own rank-0 broadcast of every tensor, as ``TorchState.sync`` does, on
                every sync (the baseline the paper compares against).

Collectives reach a strategy through the small :class:`Collectives` interface, which the Horovod
adapter implements; the state being synced through :class:`SyncTarget`. Both keep this module
free of Horovod, so strategies can be read (and driven) without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol

import torch

from .. import events
from ..cluster import client as agent_client
from ..errors import AgentUnavailable, TransferError
from . import transfer
from .checkpoint_store import CheckpointStore, open_store
from .config import BandwidthMap, ChaosConfig
from .kinds import Algorithm, Strategy
from .roles import NeederPlan, RankInfo, Roles, plan_transfers
from .snapshot import MAX_MANIFEST_BYTES, Manifest, Snapshot
from .state_tree import STATEFUL, ObjectKind, TrackedObjects, clone_tree


class Collectives(Protocol):
    """What a strategy needs from the collective library (implemented over Horovod)."""

    rank: int

    def allgather_json(self, obj: Any, name: str) -> list[Any]: ...
    def broadcast_bytes(self, data: bytes | None, root_rank: int, name: str) -> bytes: ...
    def broadcast_json(self, obj: Any, root_rank: int, name: str) -> Any: ...
    def broadcast_module(self, module: torch.nn.Module, root_rank: int) -> None: ...
    def broadcast_optimizer(self, optimizer: torch.optim.Optimizer, root_rank: int) -> None: ...


class SyncTarget(Protocol):
    """The state being synced (ChaosState)."""

    snapshot: Snapshot
    version: int
    tracked: TrackedObjects
    config: ChaosConfig

    def load(self, snap: Snapshot) -> None: ...
    def recapture(self, version: int) -> None: ...


class SyncStrategy:
    """Base: `run` is called on every rank after the roles are known."""

    name: ClassVar[Strategy]
    # True: runs on every sync (it moves state whether or not digests differ)
    always: ClassVar[bool] = False

    def run(self, target: SyncTarget, coll: Collectives, roles: Roles, infos: list[RankInfo],
            record: events.Sync, tag: str) -> None:
        raise NotImplementedError

    def reloads(self, rank: int, roles: Roles) -> bool:
        """Whether this rank loaded state (samplers then need no extra re-partitioning)."""
        return rank in roles.needs


# ---------------------------------------------------------------------------- pull from holders

def peer_of(info: RankInfo) -> transfer.Peer:
    return transfer.Peer(info.rank, info.addr, info.port, bytes.fromhex(info.token))


def bandwidth_for(cfg: ChaosConfig, my_host: str) -> tuple[BandwidthMap, dict]:
    """The static figures, overridden by what the local cluster agent measured; and the fields
    of the sync record that say where the figures came from."""
    fields: dict[str, Any] = {"bandwidth_source": "none" if cfg.bandwidth.empty else "static"}
    path = agent_client.socket_for_host(cfg.agent_socket, my_host)
    if not path:
        return cfg.bandwidth, fields
    try:
        reply = agent_client.request(path, {"op": "bandwidth"})
    except AgentUnavailable as e:
        fields["agent_error"] = str(e)
        return cfg.bandwidth, fields
    measured = BandwidthMap.from_agent_rates(reply.get("rates", []))
    fields["agent_epoch"] = reply.get("epoch")
    fields["measured_to_me"] = {f"{s}>{d}": round(m, 2)
                                for (s, d), m in measured.links.items() if d == my_host}
    if not measured.links:
        return cfg.bandwidth, fields
    fields["bandwidth_source"] = "agent"
    return measured.over(cfg.bandwidth), fields


class MultiSourcePull(SyncStrategy):
    """Plan over every holder, pull in parallel, let idle sources steal from slow ones."""

    name = Strategy.CHAOS

    def algorithm(self, cfg: ChaosConfig, bandwidth: BandwidthMap) -> Algorithm:
        return Algorithm.EVEN if bandwidth.empty else cfg.scheduler

    def sources(self, plan_assigned: dict[int, list[int]], roles: Roles, rank: int,
                ) -> tuple[set[int], dict[int, set[int]]]:
        """(ranks to connect to, chunk -> ranks that may serve it)."""
        holders = {c: {r for r in roles.holders[c] if r != rank} for c in roles.needs[rank]}
        return {r for hs in roles.holders for r in hs} - {rank}, holders

    def run(self, target, coll, roles, infos, record, tag) -> None:
        rank = coll.rank
        if rank not in roles.needs:
            return
        got = self.pull(target, roles, infos, rank)
        plan, stats = got.plan, got.stats
        record.algorithm = plan.algorithm
        record.plan_s, record.transfer_s, record.load_s = got.plan_s, got.transfer_s, got.load_s
        record.predicted_makespan_s, record.bound_s = plan.predicted_makespan_s, plan.bound_s
        record.needed_chunks = len(roles.needs[rank])
        record.needed_bytes = roles.needed_bytes(rank)
        record.planned_bytes_per_source = plan.bytes_by_source(roles)
        record.bytes_per_source = stats.bytes_by_source
        record.failed_sources = stats.failed_sources
        record.corrupt_chunks, record.stolen_batches = stats.corrupt_chunks, stats.stolen_batches
        record.bandwidth_known = got.bandwidth_known
        for key, value in got.bandwidth_fields.items():
            setattr(record, key, value)

    def pull(self, target: SyncTarget, roles: Roles, infos: list[RankInfo], rank: int,
             base: torch.Tensor | None = None) -> "Pulled":
        """Plan, pull and load the chunks `rank` needs (also used by standby joiners, which are
        not in the Horovod world yet). `base`: the bytes to start from (default: our snapshot);
        every chunk `rank` does not need must already be the target's there."""
        cfg = target.config
        t0 = time.perf_counter()
        by_rank = {i.rank: i for i in infos}
        bandwidth, bw_fields = bandwidth_for(cfg, by_rank[rank].host)
        plan = plan_transfers(roles, infos, bandwidth, self.algorithm(cfg, bandwidth),
                              only=rank)[rank]
        ranks, holders = self.sources(plan.assigned, roles, rank)
        peers = [peer_of(by_rank[r]) for r in sorted(ranks)]
        t1 = time.perf_counter()
        manifest = transfer.fetch_manifest(peers, roles.version, roles.digest,
                                           cfg.transfer_timeout_s)
        # Start from our own bytes: chunks we already hold stay, the needed ones are fetched.
        whole = roles.needs[rank] == tuple(range(manifest.n_chunks))
        if whole:
            base = None
        elif base is None:
            base = target.snapshot.buffer.clone()
        buffer, stats = transfer.pull(manifest, peers, plan.assigned, holders=holders,
                                      buffer=base, timeout_s=cfg.transfer_timeout_s)
        t2 = time.perf_counter()
        target.load(Snapshot.from_manifest(manifest, buffer, verified=True))
        return Pulled(plan, stats, not bandwidth.empty, bw_fields, t1 - t0, t2 - t1,
                      time.perf_counter() - t2)


@dataclass
class Pulled:
    plan: NeederPlan
    stats: transfer.PullStats
    bandwidth_known: bool
    bandwidth_fields: dict
    plan_s: float
    transfer_s: float
    load_s: float


class SingleSourcePull(MultiSourcePull):
    """Everything from the one planned source; no stealing (each chunk has that one holder)."""

    name = Strategy.SINGLE

    def algorithm(self, cfg, bandwidth) -> Algorithm:
        return Algorithm.SINGLE

    def sources(self, plan_assigned, roles, rank):
        return set(plan_assigned), {c: {r} for r, cs in plan_assigned.items() for c in cs}


# ---------------------------------------------------------------------------- checkpoint

class CheckpointThroughStorage(SyncStrategy):
    """The target rank writes a checkpoint to the store; needers read all of it back.

    Every needer reads the whole checkpoint, survivors too (their BatchNorm statistics differ
    from the target's), as a restart from a checkpoint does: this is the baseline, not a
    shortcut."""

    name = Strategy.CHECKPOINT

    def __init__(self) -> None:
        self._written: str | None = None   # this rank's last checkpoint, removed at the next

    def run(self, target, coll, roles, infos, record, tag) -> None:
        if not roles.needers:
            return
        cfg = target.config
        store = open_store(cfg.checkpoint_dir, cfg.transfer_timeout_s)
        name = f"chaos-v{roles.version}"
        writer = roles.target
        t0 = time.perf_counter()
        if coll.rank == writer:
            _write_checkpoint(store, name, target.snapshot)
            if self._written not in (None, name):   # every reader of it finished its sync
                for suffix in (".json", ".bin"):
                    store.delete(self._written + suffix)
            self._written = name
        coll.allgather_json(None, f"{tag}.ckpt")  # barrier: the checkpoint is stored
        t1 = time.perf_counter()
        if coll.rank in roles.needers:
            manifest, buffer = _read_checkpoint(store, name, roles.digest)
            t2 = time.perf_counter()
            target.load(Snapshot.from_manifest(manifest, buffer))
            record.transfer_s, record.load_s = t2 - t1, time.perf_counter() - t2
            record.bytes_per_source = {writer: manifest.size_bytes}
        record.checkpoint_write_s = t1 - t0


def _write_checkpoint(store: CheckpointStore, name: str, snap: Snapshot) -> None:
    # the manifest last: a reader that finds it finds the buffer it describes
    store.put(name + ".bin", memoryview(snap.buffer.numpy()))
    store.put(name + ".json", snap.manifest().to_bytes())


def _read_checkpoint(store: CheckpointStore, name: str,
                     digest: str) -> tuple[Manifest, torch.Tensor]:
    manifest = Manifest.from_bytes(store.read_small(name + ".json", MAX_MANIFEST_BYTES))
    if manifest.digest() != digest:
        raise TransferError("checkpoint manifest differs from the agreed digest")
    buffer = torch.empty(manifest.size_bytes, dtype=torch.uint8)
    store.read_into(name + ".bin", memoryview(buffer.numpy()))
    return manifest, buffer


# ---------------------------------------------------------------------------- broadcast

def bytes_tensor(data: bytes) -> torch.Tensor:
    return (torch.frombuffer(bytearray(data), dtype=torch.uint8) if data
            else torch.empty(0, dtype=torch.uint8))


class RankZeroBroadcast(SyncStrategy):
    """TorchState.sync's transfer: tensors from rank 0, one broadcast each; the rest as JSON.

    Two deliberate differences, both fixes of Horovod 0.28.1 bugs found here: optimizers go
    first (broadcast_optimizer_state runs a zero-gradient step on joiners, which moves the
    parameters when weight decay is set, so parameters broadcast before it diverge), and LR
    schedulers are synced through their state_dict (TorchState misses torch 2.x schedulers).
    """

    name = Strategy.BROADCAST
    always = True

    def reloads(self, rank, roles) -> bool:
        return True

    def run(self, target, coll, roles, infos, record, tag) -> None:
        t0 = time.perf_counter()
        objects = target.tracked.objects()
        rest: dict[str, ObjectKind] = {}
        for name, (obj, kind) in objects.items():
            if isinstance(obj, torch.optim.Optimizer):
                coll.broadcast_optimizer(obj, 0)
        for name, (obj, kind) in objects.items():
            if kind == ObjectKind.MODULE:
                coll.broadcast_module(obj, 0)
            elif not isinstance(obj, torch.optim.Optimizer):
                rest[name] = kind
        # Remaining objects (schedulers, samplers, values): rank 0's state, safely encoded.
        small = Snapshot(target.config.chunk_bytes)
        blob = data = None
        if coll.rank == 0:
            small.capture({n: (objects[n][0].state_dict() if k == STATEFUL else objects[n][0])
                           for n, k in rest.items()}, target.version)
            blob, data = small.manifest().to_bytes(), bytes(small.buffer.numpy())
        blob = coll.broadcast_bytes(blob, 0, f"{tag}.bm")
        data = coll.broadcast_bytes(data, 0, f"{tag}.bd")
        version = int(coll.broadcast_json(target.version, 0, f"{tag}.bv"))
        tree = Snapshot.from_manifest(Manifest.from_bytes(blob), bytes_tensor(data)).tree()
        for name, kind in rest.items():
            if kind == STATEFUL:
                objects[name][0].load_state_dict(clone_tree(tree[name]))
            else:
                target.tracked.set(name, clone_tree(tree[name]))
        target.recapture(version)
        record.transfer_s = time.perf_counter() - t0
        record.bytes_per_source = {0: record.state_bytes}


STRATEGIES: dict[Strategy, Callable[[], SyncStrategy]] = {
    s.name: s for s in (MultiSourcePull, SingleSourcePull, CheckpointThroughStorage,
                        RankZeroBroadcast)}


def strategy_for(name: Strategy | str) -> SyncStrategy:
    return STRATEGIES[Strategy(name)]()
