"""The one module that touches Horovod: ChaosState and the sync strategies.

``ChaosState`` is a drop-in for ``hvd.elastic.TorchState`` (same arguments: ``model``, ``optimizer``,
and any keyword objects) and plugs into ``hvd.elastic.run`` unchanged. What differs is *how* state is
kept and synchronised:

* ``save()`` (called by ``commit()``) copies the full state into a reusable flat snapshot and bumps
  this rank's committed version. ``restore()`` loads it back.
* ``sync()`` (called by ``hvd.elastic.run`` after every reset):

  1. every rank allgathers a small JSON record: committed version, manifest digest, shard-server
     address and a fresh token (Horovod's channel is the trust anchor; nothing is unpickled);
  2. all ranks run the same pure decision (:mod:`roles`): sources = ranks at the newest version,
     needers = the rest; no needers -> no transfer (consistent on every rank);
  3. strategy ``chaos``: each needer plans byte ranges over all sources with the shard scheduler and
     pulls them in parallel (:mod:`transfer`); ``single``: from one source; ``checkpoint``: through a
     shared directory; ``broadcast``: exactly TorchState's rank-0 broadcast (for comparison);
  4. needers load the state, re-snapshot it, and every rank allgathers its manifest digest: all must
     be equal (bit-identical state) before training resumes.

  Transfer failures (every source of a needer gone) raise ``HorovodInternalError``, so Horovod's elastic
  loop restores and resets instead of hanging. Divergent digests raise :class:`StateDivergedError`.
* ``check_host_updates()`` uses a JSON broadcast instead of Horovod's pickled ``broadcast_object``.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from typing import Any

import psutil
import torch

import horovod.torch as hvd
from horovod.common import elastic as hvd_elastic
from horovod.common.elastic import State
from horovod.common.exceptions import HorovodInternalError, HostsUpdatedInterrupt
from horovod.torch.elastic.sampler import ElasticSampler

from . import transfer
from ..cluster import client as agent_client
from .config import BandwidthMap, ChaosConfig
from ..errors import AgentUnavailable, StateDivergedError, TransferError
from ..events import EventLog
from .peer_watch import PeerWatch, abort_gloo_sockets
from .roles import RankInfo, Roles, decide, plan_transfers
from .snapshot import Manifest, Snapshot
from .state_tree import MODULE, STATEFUL, TrackedObjects, clone_tree

# --------------------------------------------------------------------------------------------------
# JSON collectives over Horovod (never pickle)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def allgather_json(obj: Any, name: str) -> list[Any]:
    data = json.dumps(obj, separators=(",", ":")).encode()
    sizes = hvd.allgather(torch.tensor([len(data)], dtype=torch.int64), name=f"{name}.n").tolist()
    blob = hvd.allgather(_bytes_tensor(data), name=f"{name}.d").numpy().tobytes()
    out, pos = [], 0
    for n in sizes:
        out.append(json.loads(blob[pos:pos + n]))
        pos += n
    return out


def broadcast_bytes(data: bytes | None, root_rank: int, name: str) -> bytes:
    n = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    n = int(hvd.broadcast(n, root_rank, name=f"{name}.n").item())
    buf = _bytes_tensor(data) if hvd.rank() == root_rank else torch.empty(n, dtype=torch.uint8)
    return hvd.broadcast(buf, root_rank, name=f"{name}.d").numpy().tobytes()


def broadcast_json(obj: Any, root_rank: int = 0, name: str = "chaos.bcast") -> Any:
    data = json.dumps(obj).encode() if hvd.rank() == root_rank else None
    return json.loads(broadcast_bytes(data, root_rank, name))


# --------------------------------------------------------------------------------------------------
# where this rank's shard server listens


def advertise_addr(cfg: ChaosConfig) -> str:
    if cfg.advertise_addr:
        return cfg.advertise_addr
    iface = os.environ.get("HOROVOD_GLOO_IFACE")
    if iface:
        for a in psutil.net_if_addrs().get(iface, []):
            if a.family == socket.AF_INET:
                return a.address
    host = os.environ.get("HOROVOD_HOSTNAME")
    if host:
        try:
            return socket.gethostbyname(host)
        except OSError:
            pass
    return "127.0.0.1"


# --------------------------------------------------------------------------------------------------


class ChaosState(State):
    """Drop-in for ``hvd.elastic.TorchState`` with multi-neighbour state sync.

    Args:
        model, optimizer: as for TorchState (optional).
        config: a :class:`ChaosConfig`; default ``ChaosConfig.from_env()`` (``CHAOS_*`` variables).
        rng: also snapshot and sync the torch/CUDA/numpy/Python RNG states (default False).
        **kwargs: other objects to track: LR schedulers, ``ElasticSampler``, anything with
            ``state_dict()/load_state_dict()``, or plain values (epoch, batch, ...). Exposed as attributes.
    """

    def __init__(self, model=None, optimizer=None, *, config: ChaosConfig | None = None,
                 rng: bool = False, **kwargs):
        # Like TorchState, model/optimizer are optional; absent ones are plain None attributes.
        self.model, self.optimizer = model, optimizer
        objects = {k: v for k, v in (("model", model), ("optimizer", optimizer)) if v is not None}
        objects.update(kwargs)
        for name, obj in kwargs.items():
            setattr(self, name, obj)
        self._chaos_cfg = config or ChaosConfig.from_env()
        self._tracked = TrackedObjects(objects, lambda n: getattr(self, n),
                                       lambda n, v: setattr(self, n, v), rng=rng)
        self._snapshot = Snapshot(self._chaos_cfg.chunk_bytes)
        self._version = 0
        self._server: transfer.ShardServer | None = None
        self._log = EventLog(self._chaos_cfg.event_log)
        self._watch = PeerWatch(self._on_peer_dead)
        self._peer_ports: set[int] = set()
        self._rank = -1
        atexit.register(self._at_exit)
        super().__init__(bcast_object=broadcast_json, get_rank=hvd.rank)
        self._capture(version=0)

    # -- State interface --------------------------------------------------------------------------

    @property
    def committed_version(self) -> int:
        return self._version

    def save(self) -> None:
        self._capture(self._version + 1)

    def restore(self) -> None:
        self._watch.disarm()
        self._tracked.apply(self._snapshot.tree())

    def reset(self) -> None:
        self._watch.disarm()

    def check_host_updates(self) -> None:
        try:
            super().check_host_updates()
        except HostsUpdatedInterrupt:
            self._watch.disarm()  # peers may now leave on purpose: not a crash
            raise

    def sync(self) -> None:
        self._watch.disarm()
        t0 = time.perf_counter()
        cfg = self._chaos_cfg
        # Collective names must match on every rank: fixed names, never per-process counters.
        tag = "chaos.sync"
        rank = hvd.rank()
        manifest = self._snapshot.manifest()
        server = self._ensure_server()
        token = transfer.new_token()
        me = RankInfo(rank, os.environ.get("HOROVOD_HOSTNAME", socket.gethostname()),
                      advertise_addr(cfg), server.port, self._version, manifest.digest(),
                      manifest.size_bytes, manifest.chunk_bytes, manifest.chunk_digests, token.hex())
        # Every rank serves the chunks it holds (content-addressed), not only full replicas; publish
        # before anyone can learn the token, so no request arrives before the data is there.
        server.publish(manifest.version, manifest.to_bytes(),
                       memoryview(self._snapshot.buffer.numpy()), token)
        infos = [RankInfo.from_json(d) for d in allgather_json(me.to_json(), f"{tag}.info")]
        roles = decide(infos)
        record: dict[str, Any] = {"strategy": cfg.strategy, "size": hvd.size(),
                                  "role": roles.role_of(rank), "version": roles.version,
                                  "target": roles.target, "state_bytes": roles.size_bytes,
                                  "sources": list(roles.sources), "needers": list(roles.needers),
                                  "transfer_bytes_total": roles.transfer_bytes,
                                  "plan_s": 0.0, "transfer_s": 0.0, "load_s": 0.0}
        try:
            if cfg.strategy == "broadcast":
                self._sync_broadcast(record, tag)
            elif roles.needers:
                if cfg.strategy == "checkpoint":
                    self._sync_checkpoint(roles, record, tag)
                elif rank in roles.needers:
                    self._pull(roles, infos, record)
        except TransferError as e:
            self._log.write("sync_failed", rank=rank, error=str(e), **record)
            raise HorovodInternalError(f"chaos_hvd: state transfer failed: {e}") from e
        self._reset_samplers(reloaded=rank in roles.needers or cfg.strategy == "broadcast")
        if cfg.verify:
            digest = self._verify(tag)
        else:
            digest = self._snapshot.manifest().digest()
        record.update(total_s=time.perf_counter() - t0, digest=digest,
                      committed_version=self._version)
        self._log.write("sync", rank=rank, **record)
        if cfg.peer_watch:
            self._rank = rank
            self._peer_ports = {i.port for i in infos}
            self._watch.arm([transfer.Peer(f"rank{i.rank}", i.addr, i.port, bytes.fromhex(i.token))
                             for i in infos if i.rank != rank], self._version)

    # -- strategies -------------------------------------------------------------------------------

    def _pull(self, roles: Roles, infos: list[RankInfo], record: dict) -> None:
        cfg = self._chaos_cfg
        t0 = time.perf_counter()
        rank = hvd.rank()
        by_rank = {i.rank: i for i in infos}
        bandwidth, bw_record = self._bandwidth(by_rank[rank].host)
        if cfg.strategy == "single":
            algorithm = "single"
        else:
            algorithm = "even" if bandwidth.empty else cfg.scheduler
        plan = plan_transfers(roles, infos, bandwidth, algorithm)[rank]
        holder_ranks = {r for hs in roles.holders for r in hs}
        peers = [transfer.Peer(f"rank{r}", by_rank[r].addr, by_rank[r].port,
                               bytes.fromhex(by_rank[r].token))
                 for r in sorted(holder_ranks - {rank})
                 if cfg.strategy != "single" or r in plan.assigned]
        holders = {c: {f"rank{r}" for r in roles.holders[c] if r != rank} for c in roles.needs[rank]}
        if cfg.strategy == "single":  # the baseline: no stealing, each chunk from its one source
            holders = {c: {f"rank{r}"} for r, cs in plan.assigned.items() for c in cs}
        t1 = time.perf_counter()
        manifest = transfer.fetch_manifest(peers, roles.version, roles.digest, cfg.transfer_timeout_s)
        # Start from our own bytes: chunks we already hold stay, the needed ones are fetched.
        base = self._snapshot.buffer.clone() if roles.needs[rank] != tuple(range(manifest.n_chunks)) \
            else None
        buffer, stats = transfer.pull(
            manifest, peers, {f"rank{r}": cs for r, cs in plan.assigned.items()}, holders=holders,
            buffer=base, timeout_s=cfg.transfer_timeout_s)
        t2 = time.perf_counter()
        self._load(Snapshot.from_manifest(manifest, buffer, verified=True))
        record.update(algorithm=plan.algorithm, plan_s=t1 - t0, transfer_s=t2 - t1,
                      load_s=time.perf_counter() - t2,
                      predicted_makespan_s=plan.predicted_makespan_s, bound_s=plan.bound_s,
                      needed_chunks=len(roles.needs[rank]), needed_bytes=roles.needed_bytes(rank),
                      planned_bytes_per_source=plan.bytes_by_source(roles),
                      bytes_per_source=stats.bytes_by_source,
                      failed_sources=stats.failed_sources, corrupt_chunks=stats.corrupt_chunks,
                      stolen_batches=stats.stolen_batches,
                      bandwidth_known=not bandwidth.empty, **bw_record)

    def _bandwidth(self, my_host: str) -> tuple[BandwidthMap, dict]:
        """The static figures, overridden by what the local cluster agent measured."""
        cfg = self._chaos_cfg
        record = {"bandwidth_source": "none" if cfg.bandwidth.empty else "static"}
        path = agent_client.socket_for_host(cfg.agent_socket, my_host)
        if not path:
            return cfg.bandwidth, record
        try:
            reply = agent_client.request(path, {"op": "bandwidth"})
        except AgentUnavailable as e:
            record["agent_error"] = str(e)
            return cfg.bandwidth, record
        measured = BandwidthMap.from_agent_rates(reply.get("rates", []))
        record["agent_epoch"] = reply.get("epoch")
        record["measured_to_me"] = {f"{s}>{d}": round(m, 2)
                                    for (s, d), m in measured.links.items() if d == my_host}
        if not measured.links:
            return cfg.bandwidth, record
        record["bandwidth_source"] = "agent"
        return measured.over(cfg.bandwidth), record

    def _sync_checkpoint(self, roles: Roles, record: dict, tag: str) -> None:
        """Pollux-like: the target rank writes a checkpoint, needers read all of it back."""
        path = os.path.join(self._chaos_cfg.checkpoint_dir, f"chaos-v{roles.version}")
        writer = roles.target
        t0 = time.perf_counter()
        if hvd.rank() == writer:
            os.makedirs(self._chaos_cfg.checkpoint_dir, exist_ok=True)
            manifest = self._snapshot.manifest()
            for suffix, data in ((".bin", memoryview(self._snapshot.buffer.numpy())),
                                 (".json", manifest.to_bytes())):
                with open(path + suffix + ".tmp", "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(path + suffix + ".tmp", path + suffix)
        allgather_json(None, f"{tag}.ckpt")  # barrier: the checkpoint is on disk
        t1 = time.perf_counter()
        if hvd.rank() in roles.needers:
            try:
                with open(path + ".json", "rb") as f:
                    manifest = Manifest.from_bytes(f.read())
                if manifest.digest() != roles.digest:
                    raise TransferError("checkpoint manifest differs from the agreed digest")
                buffer = torch.empty(manifest.size_bytes, dtype=torch.uint8)
                with open(path + ".bin", "rb") as f:
                    f.readinto(memoryview(buffer.numpy()))
            except OSError as e:
                raise TransferError(f"checkpoint {path}: {e}") from e
            t2 = time.perf_counter()
            self._load(Snapshot.from_manifest(manifest, buffer))
            record.update(transfer_s=t2 - t1, load_s=time.perf_counter() - t2,
                          bytes_per_source={f"rank{writer}": manifest.size_bytes})
        record.update(checkpoint_write_s=t1 - t0)

    def _sync_broadcast(self, record: dict, tag: str) -> None:
        """TorchState.sync's transfer: tensors from rank 0, one broadcast each; the rest as JSON.

        Two deliberate differences, both fixes of Horovod 0.28.1 bugs found here: optimizers go
        first (broadcast_optimizer_state runs a zero-gradient step on joiners, which moves the
        parameters when weight decay is set, so parameters broadcast before it diverge), and LR
        schedulers are synced through their state_dict (TorchState misses torch 2.x schedulers).
        """
        t0 = time.perf_counter()
        rest = {}
        kinds = self._tracked.kinds
        for name in kinds:
            if isinstance(getattr(self, name), torch.optim.Optimizer):
                hvd.broadcast_optimizer_state(getattr(self, name), root_rank=0)
        for name, kind in kinds.items():
            obj = getattr(self, name)
            if kind == MODULE:
                hvd.broadcast_parameters(obj.state_dict(), root_rank=0)
            elif not isinstance(obj, torch.optim.Optimizer):
                rest[name] = kind
        # Remaining objects (schedulers, samplers, values): rank 0's state, safely encoded. Unlike
        # TorchState we load scheduler state_dicts, so torch 2.x schedulers survive a join.
        small = Snapshot(self._chaos_cfg.chunk_bytes)
        if hvd.rank() == 0:
            small.capture({n: (getattr(self, n).state_dict() if k == STATEFUL else getattr(self, n))
                           for n, k in rest.items()}, self._version)
            blob = small.manifest().to_bytes()
            data = bytes(small.buffer.numpy())
        else:
            blob = data = None
        blob = broadcast_bytes(blob, 0, f"{tag}.bm")
        data = broadcast_bytes(data, 0, f"{tag}.bd")
        version = int(broadcast_json(self._version, 0, f"{tag}.bv"))
        manifest = Manifest.from_bytes(blob)
        tree = Snapshot.from_manifest(manifest, _bytes_tensor(data)).tree()
        for name, kind in rest.items():
            if kind == STATEFUL:
                getattr(self, name).load_state_dict(clone_tree(tree[name]))
            else:
                setattr(self, name, clone_tree(tree[name]))
        self._version = version
        self._capture(version)
        record.update(transfer_s=time.perf_counter() - t0, bytes_per_source={"rank0": record["state_bytes"]})

    # -- crash detection --------------------------------------------------------------------------

    def _on_peer_dead(self, peer: str) -> None:
        exclude_local = {self._server.port} if self._server else set()
        service = getattr(hvd_elastic.notification_manager, "_service", None)
        if service is not None:
            exclude_local.add(service.get_port())
        exclude_remote = set(self._peer_ports)
        if os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT", "").isdigit():
            exclude_remote.add(int(os.environ["HOROVOD_GLOO_RENDEZVOUS_PORT"]))
        n = abort_gloo_sockets(exclude_local, exclude_remote)
        self._log.write("peer_dead", rank=self._rank, peer=peer, gloo_sockets_aborted=n)

    def _at_exit(self) -> None:
        self._watch.disarm()
        if self._server is not None:
            self._server.farewell()

    # -- helpers ----------------------------------------------------------------------------------

    def _load(self, snap: Snapshot) -> None:
        self._tracked.apply(snap.tree())
        # Re-snapshot the live objects (proves the load was exact) into a *new* buffer: peers may
        # still be pulling chunks we hold from the published one until this sync ends.
        fresh = Snapshot(self._chaos_cfg.chunk_bytes)
        fresh.capture(self._tracked.capture(), snap.version)
        self._snapshot, self._version = fresh, snap.version

    def _capture(self, version: int) -> None:
        if self._server is not None:
            self._server.retract()  # never serve a buffer while it is being overwritten
        self._snapshot.capture(self._tracked.capture(), version)
        self._version = version

    def _reset_samplers(self, reloaded: bool) -> None:
        # ElasticSampler re-partitions for the new world in load_state_dict (as TorchState does on
        # every rank); ranks that loaded state already did it.
        if reloaded:
            return
        for name, kind in self._tracked.kinds.items():
            obj = getattr(self, name)
            if isinstance(obj, ElasticSampler):
                obj.load_state_dict(obj.state_dict())

    def _verify(self, tag: str) -> str:
        mine = {"version": self._version, "digest": self._snapshot.manifest().digest()}
        everyone = allgather_json(mine, f"{tag}.verify")
        if any(e != mine for e in everyone):
            self._log.write("diverged", rank=hvd.rank(), states=everyone)
            raise StateDivergedError(f"ranks hold different states after sync: {everyone}")
        return mine["digest"]

    def _ensure_server(self) -> transfer.ShardServer:
        if self._server is None:
            cfg = self._chaos_cfg
            self._server = transfer.ShardServer(
                advertise_addr(cfg), cfg.port,
                on_event=lambda e: self._log.write(e.pop("event"), rank=hvd.rank(), **e))
        return self._server

