"""This rank's replica of the training state: tracked objects, committed snapshot, version.

The part of ChaosState that needs no Horovod: ``capture`` copies the live objects into the
snapshot (commit), ``restore`` loads the snapshot back (after a failure), ``load`` installs a
snapshot received from peers and re-snapshots it, and ``server`` serves the committed snapshot's
chunks to peers (created on first use).

A snapshot *offered* to standby joiners (:meth:`offer_current`) is never written to while it is
offered: commits then go to a second buffer, so training goes on at full speed while a standby
pulls a consistent version (memory: two copies of the state from the first offer on).
"""

from __future__ import annotations

from . import transfer
from .config import ChaosConfig
from .snapshot import Snapshot
from .state_tree import TrackedObjects


class Replica:
    def __init__(self, tracked: TrackedObjects, config: ChaosConfig):
        self.tracked, self.config = tracked, config
        self.snapshot = Snapshot(config.chunk_bytes)
        self.version = 0
        self._server: transfer.ShardServer | None = None
        self._offered: Snapshot | None = None
        self._spare: Snapshot | None = None

    @property
    def server_port(self) -> int | None:
        return self._server.port if self._server is not None else None

    @property
    def existing_server(self) -> transfer.ShardServer | None:
        return self._server

    def server(self, advertise_addr: str, on_reject) -> transfer.ShardServer:
        if self._server is None:
            self._server = transfer.ShardServer(advertise_addr, self.config.port,
                                               on_reject=on_reject)
        return self._server

    def capture(self, version: int) -> None:
        if self._server is not None:
            self._server.retract()  # never serve a buffer while it is being overwritten
        target = self.snapshot
        if target is self._offered:
            target, self._spare = self._spare or Snapshot(self.config.chunk_bytes), None
        target.capture(self.tracked.capture(), version)
        self.snapshot, self.version = target, version

    def offer_current(self) -> Snapshot:
        """Mark the committed snapshot as offered (protected from commits) and return it; the one
        offered before becomes the spare buffer. The caller withdrew the previous offer."""
        previous, self._offered = self._offered, self.snapshot
        if previous is not None and previous is not self.snapshot:
            self._spare = previous
        return self.snapshot

    recapture = capture

    def restore(self) -> None:
        self.tracked.apply(self.snapshot.tree())

    def load(self, snap: Snapshot) -> None:
        self.tracked.apply(snap.tree())
        if snap.holds(self.tracked.capture()):
            # the live objects now hold exactly the received (digest-checked) bytes: that buffer
            # becomes our snapshot, and its digests need no second pass
            self.snapshot, self.version = snap, snap.version
            return
        # Re-snapshot the live objects into a *new* buffer: peers may still be pulling chunks we
        # hold from the published one until this sync ends.
        fresh = Snapshot(self.config.chunk_bytes)
        fresh.capture(self.tracked.capture(), snap.version)
        self.snapshot, self.version = fresh, snap.version

    def farewell(self) -> None:
        if self._server is not None:
            self._server.farewell()
