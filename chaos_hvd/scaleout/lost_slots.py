"""Which workers the launcher stands in for at a reset: those of a host that vanished silently.

Pure: no I/O, no Horovod, no clock (callers pass ``now``).

Horovod's driver re-forms the job only once every worker of the last world has recorded at its
reset barrier (ready, success or failure). A worker whose host lost power or its link cannot
record and its ssh session does not end, so the survivors -- already aborted and waiting at the
barrier -- would wait for TCP to give the session up (minutes). When discovery (fed by the cluster
agents, who agreed the host is gone) no longer lists a slot, and that slot is the only thing the
barrier still waits for, the launcher records it *ready* on the worker's behalf after a short
grace: the same record a worker leaving gracefully makes, so the host is not blacklisted and may
rejoin once the agents admit it again.

A live worker of a host that is leaving gracefully records within moments of the others (it was
notified at the same commit); if the grace runs out first anyway, the launcher's record stands in
for it and its own later record is ignored (its slot is no longer assigned, so it exits as it
would have).
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from ..join.wire import Slot


def unlisted(assigned: Set[Slot], discovered: Mapping[str, int]) -> set[Slot]:
    """Assigned slots that discovery no longer lists (host gone, or fewer slots on it)."""
    return {(h, s) for h, s in assigned if discovered.get(h, 0) <= s}


def blocking_lost(assigned: Set[Slot], recorded: Set[Slot],
                  discovered: Mapping[str, int]) -> frozenset[Slot]:
    """The slots a reset barrier waits for, when every one of them is unlisted and at least one
    other worker already waits there; otherwise nothing."""
    missing = assigned - recorded
    if not missing or not (assigned & recorded):
        return frozenset()
    return frozenset(missing) if missing <= unlisted(assigned, discovered) else frozenset()


class LostSlotWatch:
    """Reports blocking lost slots once they have blocked one reset for ``grace_s``."""

    def __init__(self, grace_s: float):
        if not grace_s >= 0:
            raise ValueError("grace_s must be >= 0")
        self.grace_s = grace_s
        self._pending: tuple[int, frozenset[Slot], float] | None = None
        self._done: set[tuple[int, frozenset[Slot]]] = set()

    def observe(self, rendezvous: int, assigned: Set[Slot], recorded: Set[Slot],
                discovered: Mapping[str, int], now: float) -> frozenset[Slot]:
        """Slots to record for now (each reset's set once), given the barrier of reset number
        ``rendezvous``; empty while there are none or the grace has not run out."""
        lost = blocking_lost(assigned, recorded, discovered)
        if not lost:
            self._pending = None
            return frozenset()
        if self._pending is None or self._pending[:2] != (rendezvous, lost):
            self._pending = (rendezvous, lost, now)
        if now - self._pending[2] < self.grace_s or (rendezvous, lost) in self._done:
            return frozenset()
        self._done = {d for d in self._done if d[0] >= rendezvous} | {(rendezvous, lost)}
        return lost
