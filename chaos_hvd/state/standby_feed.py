"""A running worker's side of a scale-out that does not stop training (``chaos-hvdrun``).

While the launcher reports a standby joiner starting (``chaos_wanted``), the worker offers a
recent committed snapshot to standbys at a commit whose version is a multiple of ``OFFER_EVERY``
(versions advance in lockstep on all ranks, so every worker offers the same version and a standby
can pull it from all of them), and at the first commit after a sync (a reset: the offer a standby
was pulling may be gone with a dead source, and it should not wait ``OFFER_EVERY`` commits for
the next): the training thread only marks the snapshot
as offered (commits then write to the other buffer); a background thread computes its chunk
digests, offers it on the shard server and publishes where it is served
(:class:`~chaos_hvd.join.wire.SourceRecord`, signed with the job secret). A new snapshot is
offered only when no standby read the last one for a second, so a standby always pulls one
consistent version. Without a standby this costs one small HTTP request every half second.
"""

from __future__ import annotations

import logging
import threading

from ..errors import ServiceUnavailable
from ..join import http, wire
from .replica import Replica

log = logging.getLogger(__name__)

POLL_S = 0.5
QUIET_S = 1.0          # no standby read the offer for this long -> a newer one may replace it
OFFER_EVERY = 4        # commits between offers (each costs one digest pass, off the training thread)


def offer_due(version: int, synced_since_offer: bool) -> bool:
    """Whether a commit at `version` is one to offer (the same answer on every rank)."""
    return synced_since_offer or version % OFFER_EVERY == 0


class StandbyFeed:
    def __init__(self, replica: Replica, secret: bytes, rendezvous: tuple[str, int], host: str,
                 addr: str):
        self._replica, self._secret = replica, secret
        self._rendezvous, self._host, self._addr = rendezvous, host, addr
        self._token = wire.standby_token(secret)
        self._wanted = threading.Event()
        self._todo: tuple | None = None
        self._cond = threading.Condition()
        self._busy = False
        self._synced = False    # a sync happened since the last offer
        self._stop = threading.Event()
        threading.Thread(target=self._poll, name="chaos-standby-poll", daemon=True).start()
        threading.Thread(target=self._offer_loop, name="chaos-standby-offer", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def after_sync(self) -> None:
        """On the training thread, after a sync: offer at the next commit that can."""
        self._synced = True

    def after_commit(self, rank: int) -> None:
        """On the training thread, right after a commit: maybe offer the new snapshot."""
        server = self._replica.existing_server
        if (not self._wanted.is_set() or self._busy or server is None
                or not offer_due(self._replica.version, self._synced)
                or not server.offer_idle(QUIET_S)):
            return
        self._synced = False
        server.withdraw_offer()
        snap = self._replica.offer_current()
        with self._cond:
            self._busy = True
            self._todo = (snap, self._replica.version, rank, server)
            self._cond.notify_all()

    def _offer_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._todo is not None or self._stop.is_set())
                todo, self._todo = self._todo, None
            if todo is None:
                continue
            snap, version, rank, server = todo
            try:
                manifest = snap.manifest()
                server.offer(version, manifest.to_bytes(), memoryview(snap.buffer.numpy()),
                             self._token)
                record = wire.SourceRecord(rank, self._host, self._addr, server.port, version,
                                           manifest.digest(), manifest.size_bytes,
                                           manifest.chunk_bytes, tuple(manifest.chunk_digests))
                http.put(*self._rendezvous, wire.SOURCE, str(rank),
                         wire.encode_source(self._secret, record))
                log.debug("offered version %d to standbys", version)
            except ServiceUnavailable as e:
                log.warning("could not publish the standby offer: %s", e)
            finally:
                with self._cond:
                    self._busy = False

    def _poll(self) -> None:
        # a periodic poll for as long as the worker lives, not a wait for one condition: hence
        # not chaos_hvd.waiting
        while not self._stop.wait(POLL_S):
            try:
                wanted = http.get(*self._rendezvous, wire.WANTED, "all", limit=16) is not None
            except ServiceUnavailable:
                continue   # the launcher is busy or gone: keep the last answer
            if wanted:
                self._wanted.set()
            else:
                self._wanted.clear()
