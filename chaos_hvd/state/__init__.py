"""The Horovod plugin: ChaosState, a drop-in for ``hvd.elastic.TorchState`` with multi-neighbour sync.

Pure modules (no I/O, no Horovod; property-tested):

``kinds``       the named choices as enums: sync ``Strategy``, scheduler ``Algorithm``.
``config``      ``ChaosConfig`` from arguments or ``CHAOS_*`` variables; ``BandwidthMap``.
``scheduler``   (state size, sources with rate and ready time, joiners, ingress caps) -> a Plan of
                chunk-aligned byte ranges, its predicted makespan and a lower bound.
``roles``       from every rank's committed version and chunk digests: the target, who needs which
                chunks, who holds them; one plan per needer (chunk indices per source rank).
``encoding``    state trees <-> JSON + tensors (never pickle).
``snapshot``    the flat snapshot buffer and its manifest (a BLAKE2b digest per chunk).
``state_tree``  which objects are tracked and how each is captured and reloaded.

With I/O, still without Horovod:

``replica``     this rank's committed snapshot, its version and its shard server.
``transfer``    the HMAC-authenticated shard server and the parallel pull client.
``peer_watch``  fast crash detection: a dead peer's socket closes, the blocked collective is aborted.
``world_guard``  while a new world forms and syncs: abort it when the launcher says a member died.
``checkpoint_store``  where the checkpoint strategy keeps its files: a directory or an HTTP
                storage host (testbed storage nodes run one).
``strategies``  how state moves after a reset: chaos, single, checkpoint, broadcast, behind a small
                ``Collectives`` interface.
``standby_join``  a standby joiner of ``chaos-hvdrun``: pull a recent state while the job trains,
                report ready, wait to be switched in.
``standby_feed``  a running worker's side of that: offer snapshots to standbys at commits.
``stale_workers``  before a standby takes its slot: end an old worker of that slot on its host.

``adapter``     the one module that imports Horovod: ``ChaosState``, collectives over Horovod and
                ``WorldAbort`` (our Horovod build's abort entry point).
"""
