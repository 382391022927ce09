"""chaos_hvd -- multi-neighbour state sync for Horovod elastic training at the edge.

Implements "Learning in Chaos" (arXiv 2505.12815) as a Horovod plugin and a cluster agent.
Change one line of a Horovod elastic PyTorch script::

    state = hvd.elastic.TorchState(model, optimizer, lr_scheduler=sched, epoch=0)   # before
    state = chaos_hvd.ChaosState(model, optimizer, lr_scheduler=sched, epoch=0)     # after

and run it with ``horovodrun`` as before. When workers join, each joiner pulls the latest committed
*full* state (parameters, optimizer moments, LR scheduler, ElasticSampler, user values, optionally
RNG) from every up-to-date worker in parallel, in byte ranges that a bandwidth-aware scheduler sized so
all sources finish together -- instead of Horovod's tree broadcast from rank 0.

The subsystems and the plumbing they share (Horovod is imported in two adapters only: the
worker's, :mod:`chaos_hvd.state.adapter`, and the launcher's, :mod:`chaos_hvd.scaleout.driver`;
importing the cluster agent loads no torch):

``state/``      the Horovod plugin: ChaosState and the multi-neighbour state sync (map in
                :mod:`chaos_hvd.state`).
``scaleout/``   ``chaos-hvdrun``: Horovod's launcher with an elastic driver that starts a joining
                worker as a standby and switches it in once it holds a recent state, so training
                does not stop while it starts (map in :mod:`chaos_hvd.scaleout`).
``join/``       the join handshake both of those speak: signed messages on Horovod's rendezvous
                server and their HTTP client (map in :mod:`chaos_hvd.join`).
``cluster/``    the self-governed cluster agent: peer negotiation of membership and links, monitor,
                discovery for horovodrun (map in :mod:`chaos_hvd.cluster`).
``events``      every event record (sync, step, install, fault, ...): the contract between the
                writers and the readers of an event log; ``record_step`` for any script.
``errors``      the typed errors of both subsystems.
``signing``     HMAC-SHA256 over canonical JSON (shard requests, agent datagrams).
``jsonline``    bounded JSON-line requests over Unix sockets (agent API, testbed control).
``waiting``     the one poll-with-deadline loop.
``yamldoc``     YAML with ``file:line:column`` errors, for every file dialect.
``units``       rates, times, sizes and percentages with units.
``rules``       the one rule per kind of value read from outside: integers, numbers, durations,
                ports, host names, secrets (every parser uses it).
``files``       reading a file named from outside: a regular file only, never more than a limit.
``cliargs``     checked argument types and the help format of the command-line tools.

Guarantees after every ``sync()``: all ranks hold bit-identical committed states (checked by an
allgather of manifest digests); no committed step is lost (the newest version wins, whatever its
rank); a failed transfer surfaces as ``HorovodInternalError`` (restore + reset), never a hang.
"""

from .errors import (
    AuthenticationError,
    ChaosError,
    ConfigError,
    CorruptShardError,
    SchedulerInputError,
    SnapshotError,
    StateDivergedError,
    TransferError,
    UnsupportedStateError,
)
from .events import record_step
from .state.config import BandwidthMap, ChaosConfig

__version__ = "0.1.0"

__all__ = [
    "ChaosState", "ChaosConfig", "BandwidthMap", "ChaosError", "ConfigError", "SchedulerInputError",
    "UnsupportedStateError", "SnapshotError", "CorruptShardError", "TransferError",
    "AuthenticationError", "StateDivergedError", "record_step",
]


def __getattr__(name):
    # Horovod is imported only when ChaosState is asked for, so the pure modules (and the testbed)
    # work without it.
    if name == "ChaosState":
        from .state.adapter import ChaosState
        return ChaosState
    raise AttributeError(name)
