"""Typed errors of chaos_hvd (the plugin, the cluster agent and the shared plumbing).

Every error the plugin raises on purpose derives from :class:`ChaosError`, so callers can catch the
family. Errors that Horovod's elastic loop should treat as a *recoverable* worker failure (restore the
last commit, reset, sync again) are re-raised by the Horovod adapter as ``HorovodInternalError``; the
pure modules never import Horovod, so they raise the types below and the adapter translates.
"""

from __future__ import annotations


class ChaosError(Exception):
    """Base class of all chaos_hvd errors."""


class ConfigError(ChaosError, ValueError):
    """A configuration value (argument, env var, bandwidth spec) is malformed or out of range.

    ``where`` is ``file:line:column`` (or the variable's name) when known.
    """

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


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


class IncompletePull(TransferError):
    """A pull ended with chunks missing; what did arrive (each chunk checked against the
    manifest's digest) is attached, so a retry need not move it again."""

    def __init__(self, message: str, manifest, buffer, received: frozenset):
        super().__init__(message)
        self.manifest, self.buffer, self.received = manifest, buffer, received


class StandbyDroppedError(ChaosError):
    """The launcher gave up on this standby (it was not ready in time, or its host left)."""


class AuthenticationError(ChaosError):
    """A peer message failed authentication (bad or missing MAC, wrong version or token)."""


class StateDivergedError(ChaosError):
    """Ranks that should hold the same committed state do not (digests differ after sync).

    Not recoverable by retrying the same sync: it indicates non-determinism or a bug, so it propagates.
    """


class PeerMessageError(ChaosError):
    """A cluster-agent message was rejected; the agent logs it and changes nothing.

    ``reason`` is a short word for the event log: forged, replayed, stale, oversized, malformed.
    """

    reason = "rejected"


class ForgedMessage(PeerMessageError, AuthenticationError):
    """Bad or missing HMAC: not from a holder of the cluster secret (or altered on the way)."""

    reason = "forged"


class ReplayedMessage(PeerMessageError):
    """Authentic, but its sequence number was seen already or is outside the freshness window."""

    reason = "replayed"


class StaleMessage(PeerMessageError):
    """Authentic and fresh, but about an epoch the cluster has moved past."""

    reason = "stale"


class OversizedMessage(PeerMessageError):
    """Larger than the datagram limit: dropped before parsing."""

    reason = "oversized"


class MalformedMessage(PeerMessageError, ValueError):
    """Not JSON, or JSON that does not match the message's schema."""

    reason = "malformed"


class RequestError(ChaosError, ValueError):
    """A local JSON-line request or reply is too long, too deeply nested, or not a JSON object."""


class ServiceUnavailable(ChaosError):
    """Nobody answered on a local control socket, or it answered with an error."""


class AgentUnavailable(ServiceUnavailable):
    """No cluster agent answered on the local socket(s)."""


class EventLogError(ChaosError, ValueError):
    """A line of an event log is not one of the records of :mod:`chaos_hvd.events`."""


class WaitTimeout(ChaosError, TimeoutError):
    """A condition waited for did not come true in time (or the wait was given up)."""
