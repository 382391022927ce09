"""The launcher's book of standby joiners: which slot has one, in which phase, since when.

Pure: no I/O, no Horovod, no clock (callers pass ``now``). A standby is a worker process started
for a newly discovered slot *before* the running workers reset: it starts, builds its model and
pulls a recent state while they keep training. Phases::

    starting --ready--> ready --switch--> switching --joined--> joined
        |  \\_______________(forced switch)__/
        \\________________\\________________\\--drop--> dropped

Only ``ready`` standbys are switched in at a reset the launcher asks for; a host with a standby
that is still starting (or was dropped) stays out of the rank assignments, so neither a crash nor
any other reset in the meantime waits for it. A standby that is not ready within the timeout, or
whose process ends before it joined, is dropped: the running workers never notice. A switch is
forced on a starting standby only when the job needs its slot at once (below ``--min-np``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..join.wire import Slot


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    SWITCHING = "switching"
    JOINED = "joined"
    DROPPED = "dropped"


@dataclass
class Standby:
    host: str
    slot: int
    instance: str
    started: float
    phase: Phase = Phase.STARTING
    ready_at: float | None = None
    version: int | None = None
    why_dropped: str = ""

    @property
    def key(self) -> Slot:
        return (self.host, self.slot)


class StandbyTable:
    def __init__(self, ready_timeout_s: float):
        if not ready_timeout_s > 0:
            raise ValueError("ready_timeout_s must be positive")
        self.ready_timeout_s = ready_timeout_s
        self._by_slot: dict[Slot, Standby] = {}

    def get(self, host: str, slot: int) -> Standby | None:
        return self._by_slot.get((host, slot))

    def __iter__(self):
        return iter(list(self._by_slot.values()))

    def start(self, host: str, slot: int, instance: str, now: float) -> Standby:
        """A new standby for a slot that has none (or whose last one was dropped or joined)."""
        old = self._by_slot.get((host, slot))
        if old is not None and old.phase in (Phase.STARTING, Phase.READY, Phase.SWITCHING):
            raise ValueError(f"{host}:{slot} already has a standby ({old.phase})")
        sb = Standby(host, slot, instance, now)
        self._by_slot[(host, slot)] = sb
        return sb

    def mark_ready(self, host: str, slot: int, instance: str, version: int, now: float) -> bool:
        """True when this made the standby ready (a stale instance or phase changes nothing)."""
        sb = self._by_slot.get((host, slot))
        if sb is None or sb.instance != instance or sb.phase != Phase.STARTING:
            return False
        sb.phase, sb.ready_at, sb.version = Phase.READY, now, version
        return True

    def mark_switching(self, host: str, slot: int, force: bool = False) -> bool:
        """Ready -> switching; with `force` also starting -> switching (the job needs the slot
        now: the standby joins once it is up, its background pull unfinished)."""
        sb = self._by_slot.get((host, slot))
        if sb is None or sb.phase not in ((Phase.READY, Phase.STARTING) if force else (Phase.READY,)):
            return False
        sb.phase = Phase.SWITCHING
        return True

    def mark_joined(self, host: str, slot: int) -> bool:
        sb = self._by_slot.get((host, slot))
        if sb is None or sb.phase != Phase.SWITCHING:
            return False
        sb.phase = Phase.JOINED
        return True

    def drop(self, host: str, slot: int, why: str) -> Standby | None:
        """Drop a standby that has not joined; None when there is none to drop."""
        sb = self._by_slot.get((host, slot))
        if sb is None or sb.phase in (Phase.JOINED, Phase.DROPPED):
            return None
        sb.phase, sb.why_dropped = Phase.DROPPED, why
        return sb

    def forget_host(self, host: str) -> list[Standby]:
        """The host left discovery: forget its entries; returns the ones to stop (starting or
        ready). A switching standby is kept: the job's world already counts on it, and like any
        of Horovod's workers it is not stopped because discovery changed (a brief partition must
        not cost the reset that is taking it in)."""
        gone = [sb for key, sb in self._by_slot.items()
                if key[0] == host and sb.phase != Phase.SWITCHING]
        for sb in gone:
            del self._by_slot[sb.key]
        return [sb for sb in gone if sb.phase in (Phase.STARTING, Phase.READY)]

    def overdue(self, now: float) -> list[Standby]:
        """Standbys still starting after the ready timeout."""
        return [sb for sb in self._by_slot.values()
                if sb.phase == Phase.STARTING and now - sb.started > self.ready_timeout_s]

    def held_back(self) -> set[str]:
        """Hosts to keep out of the rank assignments: a standby of theirs is starting or was
        dropped (dropped ones stay out until the host leaves discovery and comes back)."""
        return {sb.host for sb in self._by_slot.values()
                if sb.phase in (Phase.STARTING, Phase.DROPPED)}

    def in_phase(self, phase: Phase) -> list[Standby]:
        return [sb for sb in self._by_slot.values() if sb.phase == phase]
