"""Typed errors of chaos_hvd.

Every error the plugin raises on purpose derives from :class:`ChaosError`, so callers can catch the
family. Errors that Horovod's elastic loop should treat as a *recoverable* worker failure (restore the
last commit, reset, sync again) are re-raised by the Horovod adapter as ``HorovodInternalError``; the
pure modules never import Horovod, so they raise the types below and the adapter translates.
"""

from __future__ import annotations


class ChaosError(Exception):
    """Base class of all chaos_hvd errors."""


class ConfigError(ChaosError, ValueError):
    """A configuration value (argument, env var, bandwidth spec) is malformed or out of range."""


class SchedulerInputError(ChaosError, ValueError):
    """The shard scheduler was given an impossible problem (no sources, zero rate, duplicate names...)."""


class UnsupportedStateError(ChaosError, TypeError):
    """A state object cannot be encoded safely (we never pickle); says which attribute and type."""


class SnapshotError(ChaosError):
    """A snapshot or manifest is malformed, or does not match the local objects' layout."""


class CorruptShardError(SnapshotError):
    """Bytes received for a chunk do not match the digest in the manifest."""


class TransferError(ChaosError):
    """State could not be pulled: every assigned source failed, or the peers disagree.

    The adapter turns this into ``HorovodInternalError`` so Horovod restores and resets.
    """


class AuthenticationError(ChaosError):
    """A peer message failed authentication (bad or missing MAC, wrong version or token)."""


class StateDivergedError(ChaosError):
    """Ranks that should hold the same committed state do not (digests differ after sync).

    Not recoverable by retrying the same sync: it indicates non-determinism or a bug, so it propagates.
    """
