"""The plugin's named choices, as enums (no dependencies, so configuration can import them cheaply).

Both are ``StrEnum``: a member equals its string, so environment variables, JSON records and
command lines keep using the plain names.
"""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    """How a rank that needs state gets it (see :mod:`chaos_hvd.state.strategies`)."""

    CHAOS = "chaos"            # multi-source pull planned by the shard scheduler
    SINGLE = "single"          # one source per needer (EDL-like)
    CHECKPOINT = "checkpoint"  # through a shared directory (Pollux-like)
    BROADCAST = "broadcast"    # Horovod's rank-0 broadcast (TorchState)


class Algorithm(StrEnum):
    """Shard scheduler algorithms (see :mod:`chaos_hvd.state.scheduler`)."""

    OPTIMAL = "optimal"
    GREEDY = "greedy"
    EVEN = "even"
    SINGLE = "single"
