"""The one module that touches Horovod: ChaosState, and collectives over Horovod for the strategies.

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
  3. the configured strategy (:mod:`strategies`) moves the bytes: ``chaos`` plans byte ranges over
     all sources with the shard scheduler and pulls them in parallel (:mod:`transfer`); ``single``
     pulls from one source; ``checkpoint`` goes through a shared directory; ``broadcast`` is
     TorchState's rank-0 broadcast (for comparison);
  4. needers load the state, re-snapshot it, and every rank allgathers its manifest digest: all must
     be equal (bit-identical state) before training resumes.

  Transfer failures (every source of a needer gone) raise ``HorovodInternalError``, so Horovod's elastic
  loop restores and resets instead of hanging. Divergent digests raise :class:`StateDivergedError`.
* ``check_host_updates()`` uses a JSON broadcast instead of Horovod's pickled ``broadcast_object``.

Under the ``chaos-hvdrun`` launcher (:mod:`chaos_hvd.scaleout`) two more things happen. A worker the
launcher started as a *standby* spends its first ``sync()`` in :mod:`standby_join` (pull a recent
state while the job trains, report ready, wait to be switched in), then re-initialises Horovod into
the job by raising ``HostsUpdatedInterrupt``: ``hvd.elastic.run`` resets it like any worker. Running
workers offer recent snapshots to standbys at commits (:mod:`standby_feed`).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from typing import Any

import horovod.torch as hvd
import msgspec
import psutil
import torch
from horovod.common import elastic as hvd_elastic
from horovod.common.elastic import State
from horovod.common.exceptions import HorovodInternalError, HostsUpdatedInterrupt
from horovod.torch.elastic.sampler import ElasticSampler

from .. import events
from ..cluster import client as agent_client
from ..errors import ConfigError, StandbyDroppedError, StateDivergedError, TransferError
from ..events import EventLog
from ..join import http, wire
from . import transfer
from .config import ChaosConfig
from .peer_watch import (PeerWatch, abort_gloo_sockets, native_stacks, tcp_connection_summary,
                         thread_stacks)
from .stale_workers import end_stale_workers
from .replica import Replica
from .roles import RankInfo, decide
from .standby_feed import StandbyFeed
from .standby_join import StandbyIdentity, StandbyJoin
from .state_tree import TrackedObjects
from .strategies import bytes_tensor, peer_of, strategy_for
from .world_guard import WorldGuard

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# JSON collectives over Horovod (never pickle)


def allgather_json(obj: Any, name: str) -> list[Any]:
    data = json.dumps(obj, separators=(",", ":")).encode()
    sizes = hvd.allgather(torch.tensor([len(data)], dtype=torch.int64), name=f"{name}.n").tolist()
    blob = hvd.allgather(bytes_tensor(data), name=f"{name}.d").numpy().tobytes()
    out, pos = [], 0
    for n in sizes:
        out.append(json.loads(blob[pos:pos + n]))
        pos += n
    return out


def broadcast_bytes(data: bytes | None, root_rank: int, name: str) -> bytes:
    n = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    n = int(hvd.broadcast(n, root_rank, name=f"{name}.n").item())
    buf = bytes_tensor(data) if hvd.rank() == root_rank else torch.empty(n, dtype=torch.uint8)
    return hvd.broadcast(buf, root_rank, name=f"{name}.d").numpy().tobytes()


def broadcast_json(obj: Any, root_rank: int = 0, name: str = "chaos.bcast") -> Any:
    data = json.dumps(obj).encode() if hvd.rank() == root_rank else None
    return json.loads(broadcast_bytes(data, root_rank, name))


class HorovodCollectives:
    """:class:`~chaos_hvd.state.strategies.Collectives` over Horovod's current world."""

    def __init__(self):
        self.rank = hvd.rank()

    allgather_json = staticmethod(allgather_json)
    broadcast_bytes = staticmethod(broadcast_bytes)
    broadcast_json = staticmethod(broadcast_json)

    @staticmethod
    def broadcast_module(module: torch.nn.Module, root_rank: int) -> None:
        hvd.broadcast_parameters(module.state_dict(), root_rank=root_rank)

    @staticmethod
    def broadcast_optimizer(optimizer: torch.optim.Optimizer, root_rank: int) -> None:
        hvd.broadcast_optimizer_state(optimizer, root_rank=root_rank)


# --------------------------------------------------------------------------------------------------
# where this rank's shard server listens


def _my_host() -> str:
    """This worker's host as Horovod (and the cluster agents) name it."""
    return os.environ.get("HOROVOD_HOSTNAME", socket.gethostname())


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


class WorldAbort:
    """Our Horovod build's abort entry point (scripts/horovod-patches/horovod-world-abort.patch):
    ``world()`` names the current Horovod world (0: none), ``abort(world)`` fails every Gloo
    connection of that world on this rank -- the collective in flight and any queued one raise
    ``HorovodInternalError`` at once -- and returns how many, or -1 when that world has ended
    (the C++ side checks it under its lock: an abort never reaches the next world)."""

    PHASES = {0: "none", 1: "asking", 2: "forming", 3: "formed"}

    def __init__(self, lib: ctypes.CDLL):
        self._world, self._abort = lib.horovod_chaos_world, lib.horovod_chaos_abort
        self._world.argtypes = [ctypes.POINTER(ctypes.c_int)]
        self._world.restype = ctypes.c_int
        self._abort.argtypes, self._abort.restype = [ctypes.c_int], ctypes.c_int

    @classmethod
    def load(cls) -> "WorldAbort | None":
        """None for a Horovod built without the patch (the socket scan is the fallback)."""
        from horovod.torch import mpi_ops
        try:
            return cls(mpi_ops._basics.MPI_LIB_CTYPES)
        except AttributeError:
            return None

    def world(self) -> int:
        return self.world_and_phase()[0]

    def world_and_phase(self) -> tuple[int, int]:
        """(current world id or 0, its phase: 0 none, 1 asking for a rank, 2 forming, 3 formed)."""
        phase = ctypes.c_int(0)
        world = int(self._world(ctypes.byref(phase)))
        return world, phase.value

    def abort(self, world: int) -> int:
        return int(self._abort(world))


def _world_abort() -> WorldAbort | None:
    """Once per process; warns when Horovod lacks chaos-hvd's patches (scripts/horovod-patches,
    applied by scripts/bootstrap.sh): then a crash is handled by shutting Gloo's sockets down from
    outside, and Gloo may not wake a collective whose message was half received."""
    global _WORLD_ABORT
    if _WORLD_ABORT is False:
        _WORLD_ABORT = WorldAbort.load()
        if _WORLD_ABORT is None:
            log.warning("this Horovod was built without chaos-hvd's patches "
                        "(scripts/horovod-patches): a crash is handled by shutting Gloo's sockets "
                        "down from outside, and a collective may still wait for Gloo's timeout")
    return _WORLD_ABORT


_WORLD_ABORT: "WorldAbort | None | bool" = False


def _warm_imports() -> None:
    import scipy.optimize  # noqa: F401


def _rendezvous() -> tuple[str, int] | None:
    addr = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
    port = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT", "")
    return (addr, int(port)) if addr and port.isdigit() else None


def _standby_identity(secret: bytes | None) -> StandbyIdentity | None:
    """Set when chaos-hvdrun started this process as a standby joiner."""
    slot = os.environ.get(wire.SLOT_ENV)
    if slot is None:
        return None
    port, instance = os.environ.get(wire.MAIN_PORT_ENV, ""), os.environ.get(wire.ID_ENV, "")
    addr = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
    if secret is None or not slot.isdigit() or not port.isdigit() or not instance or not addr:
        raise ConfigError(f"{wire.SLOT_ENV} is set but {wire.SECRET_ENV}, {wire.MAIN_PORT_ENV}, "
                          f"{wire.ID_ENV} or HOROVOD_GLOO_RENDEZVOUS_ADDR is missing or malformed")
    return StandbyIdentity(_my_host(), int(slot), instance, (addr, int(port)), secret)


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
        cfg = config or ChaosConfig.from_env()
        self._log = EventLog(cfg.event_log)
        tracked = TrackedObjects(objects, lambda n: getattr(self, n),
                                 lambda n, v: setattr(self, n, v), rng=rng)
        self._replica = Replica(tracked, cfg)
        self._strategy = strategy_for(cfg.strategy)
        self._watch = PeerWatch(self._on_peer_dead, self._abort_again)
        self._world_abort = _world_abort()
        self._world = 0           # the Horovod world the crash watch was armed in
        self._still_blocked = 0   # repeated aborts since the last one
        self._leaving = False     # a host change interrupted this world: its reset is coming
        self._armed = False       # the crash watch was armed since the last restore
        self._peer_ports: set[int] = set()
        self._rank = -1
        self._synced = False
        self._job_secret = wire.secret_from_hex(os.environ.get(wire.SECRET_ENV))
        self._guard = self._world_guard()
        standby = _standby_identity(self._job_secret)
        self._standby = StandbyJoin(standby, self._replica, self._log) if standby else None
        self._feed: StandbyFeed | None = None
        # the scheduler's LP solver takes ~1 s to import on a busy edge CPU: not inside a sync
        threading.Thread(target=_warm_imports, name="chaos-warm-imports", daemon=True).start()
        atexit.register(self._at_exit)
        super().__init__(bcast_object=broadcast_json, get_rank=hvd.rank)
        self._replica.capture(version=0)

    # -- State interface --------------------------------------------------------------------------

    @property
    def committed_version(self) -> int:
        return self._replica.version

    def save(self) -> None:
        self._replica.capture(self._replica.version + 1)
        if self._feed is not None:
            self._feed.after_commit(hvd.rank())
        if self._log.path:
            self._log.write(events.StateCommit(rank=hvd.rank(), size=hvd.size(),
                                               step=self._progress(), version=self._replica.version))

    def _progress(self) -> int:
        """The script's own step counter if the state tracks one (``step=`` or ``batch=``),
        else the commit count: what the testbed's step triggers count for this script."""
        for name in ("step", "batch"):
            value = getattr(self, name, None)
            if type(value) is int and value >= 0:
                return value
        return self._replica.version

    def restore(self) -> None:
        armed, self._armed = self._armed, False
        self._watch.disarm()   # first: the story below is then the period's final one
        if armed and not self._watch.fired:
            # Gloo noticed a broken connection first (common: the dead peer's neighbours see
            # it at once), or the watch missed a crash: its states tell which
            failure = sys.exc_info()[1]
            log.warning("a collective failed while the crash watch had not fired (%s); "
                        "crash watch: %s",
                        str(failure)[:200] if failure else "no exception", self._watch.describe())
        self._guard_reset()
        self._replica.restore()
        self._replica.snapshot.prehash()   # the sync after the reset needs the digests

    def reset(self) -> None:
        self._watch.disarm()
        self._guard_reset()

    def check_host_updates(self) -> None:
        try:
            super().check_host_updates()
        except HostsUpdatedInterrupt as e:
            if self._world_abort is None:
                self._watch.disarm()  # the socket scan cannot tell this world from the next
            else:
                # Horovod's reset shuts this world down over its own connections (a last
                # negotiation with every member): a member that dies now leaves the others
                # waiting there for Gloo's timeout, so the watch stays armed until the reset.
                # Its aborts reach this world only; a peer that leaves on purpose after the
                # world ended is no crash (see _on_peer_dead).
                self._leaving = True
            self._guard_reset()
            self._replica.snapshot.prehash()   # while Horovod re-forms the group
            if e.skip_sync:
                # Horovod skips the sync when the update only removed hosts, but the world the
                # driver forms at that reset can still take in a new member (a host added
                # meanwhile; under chaos-hvdrun, any standby that is ready), which waits in its
                # first sync: the others must sync too. Only chunks that differ move (per-rank
                # BatchNorm statistics, say), and the sync arms the crash watch.
                raise HostsUpdatedInterrupt(False) from None
            raise

    def sync(self) -> None:
        self._watch.disarm()
        if self._standby is not None:
            self._join_as_standby()   # raises HostsUpdatedInterrupt: reset into the job
        t0 = time.perf_counter()
        replica, cfg = self._replica, self._replica.config
        # Collective names must match on every rank: fixed names, never per-process counters.
        tag = "chaos.sync"
        coll = HorovodCollectives()
        rank = coll.rank
        digest_s = self._replica.snapshot.manifest_cost()
        infos = self._exchange_infos(rank, tag)
        t_exchanged = time.perf_counter()
        roles = decide(infos)
        record = events.Sync(rank=rank, strategy=cfg.strategy, size=hvd.size(),
                             role=roles.role_of(rank), version=roles.version, target=roles.target,
                             state_bytes=roles.size_bytes, sources=list(roles.sources),
                             needers=list(roles.needers), transfer_bytes_total=roles.transfer_bytes,
                             first_sync=not self._synced, exchange_s=t_exchanged - t0,
                             digest_s=digest_s)
        try:
            if roles.needers or self._strategy.always:
                self._strategy.run(replica, coll, roles, infos, record, tag)
        except TransferError as e:
            self._log.write(events.SyncFailed(error=str(e), **msgspec.structs.asdict(record)))
            raise HorovodInternalError(f"chaos_hvd: state transfer failed: {e}") from e
        if not self._strategy.reloads(rank, roles):
            self._repartition_samplers()
        t_verify = time.perf_counter()
        digest = self._verify(tag) if cfg.verify else replica.snapshot.manifest().digest()
        record.verify_s = time.perf_counter() - t_verify
        record.total_s, record.digest = time.perf_counter() - t0, digest
        record.committed_version = replica.version
        self._log.write(record)
        self._synced = True
        if self._guard is not None:
            self._guard.settled(self._guard_world())
        log.debug("sync done: rank %d, %s, %.3f s", rank, record.role, record.total_s)
        if cfg.peer_watch:
            self._arm_watch([peer_of(i) for i in infos], {i.rank: i.host for i in infos})
        if self._feed is None and self._job_secret is not None:
            rendezvous = _rendezvous()
            if rendezvous is not None:
                self._feed = StandbyFeed(replica, self._job_secret, rendezvous, _my_host(),
                                         advertise_addr(cfg))
        if self._feed is not None:
            self._feed.after_sync()

    # -- standby (chaos-hvdrun) ------------------------------------------------------------------

    def _join_as_standby(self) -> None:
        join, self._standby = self._standby, None
        who = join.who
        version = join.prepare()
        join.report_ready(version)
        ready = time.monotonic()
        try:
            join.await_verdict()
        except StandbyDroppedError as e:
            log.warning("%s: exiting", e)
            raise SystemExit(3) from None
        # an old worker of this slot (its host was recorded as lost) must not rejoin beside us
        end_stale_workers(host=who.host, slot=who.slot, main_port=who.rendezvous[1],
                          secret=os.environ.get(wire.SECRET_ENV, ""), instance=who.instance)
        # Into the job: Horovod's re-initialisation reads these (the rank comes from the job's
        # rendezvous), and the notification service registers there under the new slot.
        os.environ["HOROVOD_GLOO_RENDEZVOUS_PORT"] = str(who.rendezvous[1])
        os.environ["HOROVOD_LOCAL_RANK"] = str(who.slot)
        for name in (wire.SLOT_ENV, wire.MAIN_PORT_ENV, wire.ID_ENV):
            os.environ.pop(name, None)
        manager = hvd_elastic.notification_manager
        with manager._lock:
            old, manager._service = manager._service, None
        if old is not None:
            # off this thread: BasicService.shutdown waits for socketserver's poll (0.5 s), and
            # the running workers wait at the rendezvous for us (nobody calls the old service)
            threading.Thread(target=old.shutdown, name="chaos-old-notify", daemon=True).start()
        manager.init()
        self._log.write(events.StandbySwitch(host=who.host, slot=who.slot, version=version,
                                             waited_s=time.monotonic() - ready))
        self._guard_reset()
        raise HostsUpdatedInterrupt(False)

    def _arm_watch(self, peers: list[transfer.Peer], hosts: dict[int, str]) -> None:
        """Watch every other rank's shard server (and, with a cluster agent, its host's
        membership)."""
        rank = hvd.rank()
        replica = self._replica
        self._rank = rank
        self._peer_ports = {p.port for p in peers}
        self._world = self._world_abort.world() if self._world_abort is not None else 0
        self._leaving = False
        self._armed = True
        path = agent_client.socket_for_host(replica.config.agent_socket, _my_host())
        members = (lambda: agent_client.agreed_members(path)) if path else None
        self._watch.arm([p for p in peers if p.id != rank], replica.version, hosts=hosts,
                        members=members)

    def _exchange_infos(self, rank: int, tag: str) -> list[RankInfo]:
        """Publish this rank's snapshot and allgather every rank's RankInfo."""
        replica = self._replica
        manifest = replica.snapshot.manifest()
        server = replica.server(advertise_addr(replica.config), self._on_rejected_request)
        token = transfer.new_token()
        me = RankInfo(rank, _my_host(),
                      advertise_addr(replica.config), server.port, replica.version,
                      manifest.digest(), manifest.size_bytes, manifest.chunk_bytes,
                      manifest.chunk_digests, token.hex())
        # Every rank serves the chunks it holds (content-addressed), not only full replicas; publish
        # before anyone can learn the token, so no request arrives before the data is there.
        server.publish(manifest.version, manifest.to_bytes(),
                       memoryview(replica.snapshot.buffer.numpy()), token)
        return [RankInfo.from_json(d) for d in allgather_json(me.to_json(), f"{tag}.info")]

    # -- crash detection --------------------------------------------------------------------------

    def _world_guard(self) -> WorldGuard | None:
        """Under chaos-hvdrun with our Horovod build: guards each new world until its sync."""
        api = self._world_abort
        if api is None or self._job_secret is None:
            return None
        secret = self._job_secret

        def dead_members() -> list[tuple[str, int]] | None:
            where = _rendezvous()
            if where is None:
                return None
            nonce = secrets.token_hex(16)
            body = http.get(*where, wire.WORLD, nonce, timeout_s=1.0)
            return None if body is None else wire.decode_world_status(secret, nonce, body)

        def on_abort(world: int, phase: int, dead: list[tuple[str, int]], failed: int) -> None:
            self._log.write(events.WorldAborted(
                host=_my_host(), world=world, phase=WorldAbort.PHASES.get(phase, str(phase)),
                dead=[f"{h}:{s}" for h, s in dead], connections=failed))

        return WorldGuard(api.world_and_phase, api.abort, dead_members, on_abort)

    def _guard_world(self) -> int:
        return self._world_abort.world() if self._world_abort is not None else 0

    def _guard_reset(self) -> None:
        if self._guard is not None:
            self._guard.start()

    def _abort(self) -> tuple[str, int]:
        """Fail this rank's collectives of the armed world: (which path acted, connections)."""
        if self._world_abort is not None:
            n = self._world_abort.abort(self._world)
            return ("horovod", n) if n >= 0 else ("world-ended", 0)
        return "socket-scan", self._scan_and_abort_gloo_sockets()

    def _scan_and_abort_gloo_sockets(self) -> int:
        """Fallback for a Horovod without our patches: shut Gloo's connections down from outside."""
        exclude_local = {self._replica.server_port} - {None}
        service = getattr(hvd_elastic.notification_manager, "_service", None)
        if service is not None:
            exclude_local.add(service.get_port())
        exclude_remote = set(self._peer_ports)
        if os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT", "").isdigit():
            exclude_remote.add(int(os.environ["HOROVOD_GLOO_RENDEZVOUS_PORT"]))
        return abort_gloo_sockets(exclude_local, exclude_remote)

    def _on_peer_dead(self, peer: transfer.PeerId) -> None:
        self._still_blocked = 0
        path, n = self._abort()
        if path == "world-ended" and self._leaving:
            # after a host change our world was shut down: this peer ended with it (a host
            # Horovod removed exits without a goodbye); the world guard watches the next world
            log.debug("peer rank %s left after world %d ended", peer, self._world)
            return
        log.warning("peer rank %s vanished: aborted %d collective connection(s) (%s, world %d)",
                    peer, n, path, self._world)
        self._log.write(events.PeerDead(rank=self._rank, peer=peer, gloo_sockets_aborted=n,
                                        abort_path=path, world=self._world))

    def _abort_again(self) -> None:
        """Runs while the watch stays armed after an abort, that is while no restore() came: the
        collective has not failed yet (or the script has not called one since). The socket scan
        may have missed a connection opened meanwhile; an abort from the inside missed nothing
        (later operations of that world fail at once), so it is not repeated."""
        if self._world_abort is not None and self._world_abort.world() != self._world:
            return   # the world ended: nothing of it can still be blocked
        path, n = ("horovod", 0) if self._world_abort is not None else self._abort()
        self._still_blocked += 1
        if (n and path == "socket-scan") or self._still_blocked == 4:
            # what the process still holds, to see why a collective outlives an abort
            log.warning("collective still blocked %.1f s after the abort (pid %d, %s): aborted "
                        "%d more connection(s); TCP connections now: %s",
                        self._still_blocked * 0.5, os.getpid(), path, n, tcp_connection_summary())
        if self._still_blocked == 4:
            # not under the watch's lock: gdb pauses the process for about a second
            threading.Thread(target=self._log_stacks, name="chaos-stacks", daemon=True).start()

    @staticmethod
    def _log_stacks() -> None:
        log.warning("where each thread is:\n%s", thread_stacks())
        native = native_stacks()
        if native:
            log.warning("native stacks:\n%s", native)

    def _on_rejected_request(self, why: str, peer: str) -> None:
        self._log.write(events.ShardRequestRejected(rank=hvd.rank(), peer=peer, why=why))

    def _at_exit(self) -> None:
        self._watch.disarm()
        if self._guard is not None:
            self._guard.settled(0)
        if self._feed is not None:
            self._feed.close()
        self._replica.farewell()

    # -- helpers ----------------------------------------------------------------------------------

    def _repartition_samplers(self) -> None:
        # ElasticSampler re-partitions for the new world in load_state_dict (as TorchState does on
        # every rank); ranks that loaded state already did it.
        for obj, _ in self._replica.tracked.objects().values():
            if isinstance(obj, ElasticSampler):
                obj.load_state_dict(obj.state_dict())

    def _verify(self, tag: str) -> str:
        replica = self._replica
        mine = {"version": replica.version, "digest": replica.snapshot.manifest().digest()}
        everyone = allgather_json(mine, f"{tag}.verify")
        if any(e != mine for e in everyone):
            self._log.write(events.Diverged(rank=hvd.rank(), states=everyone))
            raise StateDivergedError(f"ranks hold different states after sync: {everyone}")
        return mine["digest"]
