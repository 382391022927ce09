"""The cluster agents' vocabulary, as enums (pure; no dependencies).

Both are ``StrEnum``: a member equals its string, so the wire format (JSON) is unchanged and a
received ``"add"`` compares equal to ``Change.ADD``.
"""

from __future__ import annotations

from enum import StrEnum


class Msg(StrEnum):
    """The ``type`` of an agent datagram."""

    # membership protocol (chaos_hvd.cluster.protocol)
    HEARTBEAT = "heartbeat"
    CHANGES = "changes"
    JOIN = "join"
    PREPARE = "prepare"
    PROMISE = "promise"
    ACCEPT = "accept"
    ACCEPTED = "accepted"
    COMMIT = "commit"
    NACK = "nack"
    # monitor (chaos_hvd.cluster.monitor, agent)
    PING = "ping"
    PONG = "pong"
    PROBE = "probe"
    PROBE_RESULT = "probe_result"
    METRICS = "metrics"


class Change(StrEnum):
    """The first element of a view change tuple."""

    ADD = "add"              # ("add", node[, slots])
    REMOVE = "remove"        # ("remove", node): a failure detected by the coordinator
    LEAVE = "leave"          # ("leave", node): a graceful leave
    LINK_UP = "link_up"      # ("link_up", a, b)
    LINK_DOWN = "link_down"  # ("link_down", a, b)
    SLOTS = "slots"          # ("slots", node, count)
