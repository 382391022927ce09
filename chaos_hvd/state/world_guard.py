"""Abort a new world that waits for a dead member, while it forms and syncs.

Why: the crash watch (:mod:`peer_watch`) runs between a sync and the next reset. From the reset
on, the driver gives every worker its rank in the next world; a member that dies after that
(killed during the reset, a standby that crashes while it is switched in) never connects, and the
others wait in Gloo's rendezvous or their first collective for Gloo's timeout -- as a listener
for its connection, five times that timeout.

How: under ``chaos-hvdrun`` the launcher knows which processes of the world it assigned last have
exited (``chaos_world``, :mod:`chaos_hvd.join.wire`). From the start of a reset until the
next sync completes, :class:`WorldGuard` asks it every ``poll_s`` whenever this worker's world is
forming or formed but not yet synced, and aborts that world through Horovod
(:class:`~chaos_hvd.state.adapter.WorldAbort`) if a member is dead: ``hvd.init()`` or the sync
fails at once, and the elastic reset asks the driver for the next world, which the dead member's
recorded exit leaves out. While this worker only waits for its rank, nothing is asked: the
driver's reset barrier handles a member that dies before the world is assigned.

No Horovod import: the adapter passes the calls.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..errors import ChaosError

log = logging.getLogger(__name__)

FORMING, FORMED = 2, 3      # Horovod's phases of a world (horovod_chaos_world)
POLL_S = 0.05


class WorldGuard:
    """`world()` -> (world id, phase); `abort(world)` -> connections failed (-1: not current);
    `dead_members()` -> the launcher's list of dead members of its current world (None: no
    answer); `on_abort(world, phase, dead, failed)` records what was done."""

    def __init__(self, world: Callable[[], tuple[int, int]], abort: Callable[[int], int],
                 dead_members: Callable[[], list[tuple[str, int]] | None],
                 on_abort: Callable[[int, int, list[tuple[str, int]], int], None],
                 poll_s: float = POLL_S):
        self._world, self._abort = world, abort
        self._dead_members, self._on_abort = dead_members, on_abort
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._settled = 0           # the world whose sync completed last: not guarded

    def start(self) -> None:
        """A reset begins (idempotent while one runs)."""
        with self._lock:
            if self._stop is not None:
                return
            self._stop = stop = threading.Event()
        threading.Thread(target=self._run, args=(stop,), name="chaos-world-guard",
                         daemon=True).start()

    def settled(self, world: int) -> None:
        """The sync of `world` completed: stop guarding until the next reset."""
        with self._lock:
            self._settled = world
            stop, self._stop = self._stop, None
        if stop is not None:
            stop.set()

    def _run(self, stop: threading.Event) -> None:
        aborted: set[int] = set()
        while not stop.wait(self._poll_s):
            world, phase = self._world()
            with self._lock:
                settled = self._settled
            if not world or world == settled or world in aborted or phase not in (FORMING, FORMED):
                continue
            try:
                dead = self._dead_members()
            except ChaosError as e:
                log.debug("world guard: no answer from the launcher: %s", e)
                continue
            if not dead or stop.is_set():
                continue
            aborted.add(world)
            failed = self._abort(world)
            log.warning("a member of the new world died (%s): aborted world %d (%d connections)",
                        ", ".join(f"{h}:{s}" for h, s in dead), world, failed)
            self._on_abort(world, phase, dead, failed)
