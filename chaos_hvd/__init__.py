"""chaos_hvd -- multi-neighbour state sync for Horovod elastic training at the edge.

Implements the state-replication half of "Learning in Chaos" (arXiv 2505.12815) as a Horovod plugin.
Change one line of a Horovod elastic PyTorch script::

    state = hvd.elastic.TorchState(model, optimizer, lr_scheduler=sched, epoch=0)   # before
    state = chaos_hvd.ChaosState(model, optimizer, lr_scheduler=sched, epoch=0)     # after

and run it with ``horovodrun`` as before. When workers join, each joiner pulls the latest committed
*full* state (parameters, optimizer moments, LR scheduler, ElasticSampler, user values, optionally
RNG) from every up-to-date worker in parallel, in byte ranges that a bandwidth-aware scheduler sized so
all sources finish together -- instead of Horovod's tree broadcast from rank 0.

Design (one module per concern; only :mod:`chaos_hvd.hvd_adapter` imports Horovod):

``scheduler``   pure: (state size, sources with rate and ready time, joiners, ingress caps) -> Plan
                of byte ranges, predicted makespan and lower bound; optimal (max-flow), greedy (the
                paper's v1), even, single.
``roles``       pure: who is a source and who needs state, from committed versions and digests.
``encoding``    safe JSON encoding of state trees (tensors kept aside; never pickle).
``snapshot``    flat, reusable snapshot buffer + manifest with a BLAKE2b digest per chunk.
``state_tree``  which objects are tracked and how each is captured and reloaded.
``transfer``    HMAC-authenticated shard server and the parallel, work-stealing pull client.
``config``      ``ChaosConfig`` from arguments or ``CHAOS_*`` env vars; bandwidth maps.
``eventlog``    one JSON line per event (``CHAOS_EVENT_LOG``).
``hvd_adapter`` ``ChaosState`` and the sync strategies (chaos, single, checkpoint, broadcast).

Guarantees after every ``sync()``: all ranks hold bit-identical committed states (checked by an
allgather of manifest digests); no committed step is lost (the newest version wins, whatever its
rank); a failed transfer surfaces as ``HorovodInternalError`` (restore + reset), never a hang.
"""

from .state.config import BandwidthMap, ChaosConfig
from .errors import (AuthenticationError, ChaosError, ConfigError, CorruptShardError,
                     SchedulerInputError, SnapshotError, StateDivergedError, TransferError,
                     UnsupportedStateError)

__version__ = "0.1.0"

__all__ = [
    "ChaosState", "ChaosConfig", "BandwidthMap", "ChaosError", "ConfigError", "SchedulerInputError",
    "UnsupportedStateError", "SnapshotError", "CorruptShardError", "TransferError",
    "AuthenticationError", "StateDivergedError",
]


def __getattr__(name):
    # Horovod is imported only when ChaosState is asked for, so the pure modules (and the testbed)
    # work without it.
    if name == "ChaosState":
        from .state.adapter import ChaosState
        return ChaosState
    raise AttributeError(name)
