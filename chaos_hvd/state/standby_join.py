"""A standby joiner's side of a scale-out that does not stop training (``chaos-hvdrun``).

The launcher starts a new slot's worker as a *standby*: the user's script runs in a one-process
Horovod world of its own, builds its model, and ChaosState's first ``sync()`` lands here. The
standby reads where the running workers offer their committed state (signed records, from the
launcher), pulls it from all of them in parallel with the same scheduler and transfer as a
sync -- multi-source, stealing, every chunk checked against its digest -- loads it, and reports
ready. It then waits for the launcher's verdict: ``switch`` (the running workers reset to take it
in: the caller re-initialises Horovod into the job, and the sync there moves only the chunks that
changed since) or ``drop`` (the caller exits).

No Horovod import: the adapter does the switch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from .. import events
from ..errors import (IncompletePull, PeerMessageError, ServiceUnavailable, StandbyDroppedError,
                      TransferError)
from ..events import EventLog
from ..join import http, wire
from ..waiting import wait_until
from .roles import RankInfo, decide
from .snapshot import Manifest, chunk_digest
from .strategies import MultiSourcePull, SyncTarget

log = logging.getLogger(__name__)

STANDBY = -1            # the standby's name in plans (it has no rank yet)
RETRY_S = 0.5
AGREE_WAIT_S = 3.0      # how long to wait for every published source to offer one version
VERDICT_POLL_S = 0.05


@dataclass(frozen=True)
class StandbyIdentity:
    host: str
    slot: int
    instance: str
    rendezvous: tuple[str, int]     # the job's rendezvous server (the launcher)
    secret: bytes


@dataclass(frozen=True)
class PartialPull:
    """The chunks an interrupted pull delivered (each checked against its digest on arrival),
    kept so the next attempt moves only the chunks it lacks or that changed since: a source that
    dies mid-pull costs its share, not the whole state."""

    size_bytes: int
    chunk_bytes: int
    digests: tuple[str, ...]      # of the version that was being pulled
    buffer: torch.Tensor
    held: frozenset[int]          # chunks of `buffer` that hold that version's bytes

    @classmethod
    def after(cls, e: IncompletePull, kept: frozenset[int]) -> "PartialPull":
        m = e.manifest
        return cls(m.size_bytes, m.chunk_bytes, tuple(m.chunk_digests), e.buffer,
                   frozenset(e.received) | kept)

    def digests_over(self, own: Manifest) -> tuple[list[str], frozenset[int]]:
        """`own`'s chunk digests with the held chunks' in their place (the held bytes are hashed
        again: they must still be what arrived), and which chunks those are."""
        digests = list(own.chunk_digests)
        if (own.size_bytes, own.chunk_bytes) != (self.size_bytes, self.chunk_bytes):
            return digests, frozenset()
        view = memoryview(self.buffer.numpy())
        valid = set()
        for c in self.held:
            a, b = own.chunk_range(c)
            if chunk_digest(view[a:b]) == self.digests[c]:
                digests[c] = self.digests[c]
                valid.add(c)
        return digests, frozenset(valid)

    def base(self, own: torch.Tensor, chunks: frozenset[int]) -> torch.Tensor:
        """Our own bytes with `chunks` taken from the held buffer."""
        out = own.clone()
        for c in chunks:
            a = c * self.chunk_bytes
            b = min(a + self.chunk_bytes, self.size_bytes)
            out[a:b] = self.buffer[a:b]
        return out


class StandbyJoin:
    def __init__(self, who: StandbyIdentity, target: SyncTarget, log_: EventLog):
        self.who, self.target, self._log = who, target, log_
        self._pull = MultiSourcePull()
        self._partial: PartialPull | None = None

    def prepare(self) -> int:
        """Pull a recent committed state; returns its version (retries until it has one).

        Its own loop, not :func:`~chaos_hvd.waiting.wait_until`: each round picks its pause
        (no offer yet, waiting for every worker's offer, a failed attempt) and keeps what a
        failed attempt delivered. No deadline here: the launcher kills a standby that is not
        ready within ``CHAOS_STANDBY_TIMEOUT_S``."""
        attempt, first_seen = 0, None
        while True:
            attempt += 1
            published, world = self._sources()
            records = wire.best_version(published)
            if not records:
                time.sleep(RETRY_S)
                continue
            first_seen = first_seen or time.monotonic()
            if len(records) < world and time.monotonic() - first_seen < AGREE_WAIT_S:
                # every worker offers the same versions once it knows a standby waits: wait a
                # little for all of them, then take what there is
                time.sleep(RETRY_S / 2)
                continue
            try:
                return self._pull_from(records, attempt)
            except TransferError as e:
                log.info("standby pull attempt %d failed: %s", attempt, e)
                self._log.write(events.StandbyPull(host=self.who.host, slot=self.who.slot,
                                                   attempt=attempt, error=str(e)))
                time.sleep(RETRY_S)

    def report_ready(self, version: int) -> None:
        """Retries until the launcher took it (no deadline: see prepare)."""
        body = wire.encode_ready(self.who.secret, self.who.host, self.who.slot,
                                 self.who.instance, version)

        def put() -> bool:
            try:
                http.put(*self.who.rendezvous, wire.READY,
                         wire.slot_key(self.who.host, self.who.slot), body)
                return True
            except ServiceUnavailable as e:
                log.warning("could not report ready: %s", e)
                return False

        wait_until(put, math.inf, "the launcher to take the ready report", interval_s=RETRY_S)

    def await_verdict(self) -> None:
        """Returns when told to switch; raises StandbyDroppedError when dropped (no deadline:
        see prepare)."""
        key = wire.slot_key(self.who.host, self.who.slot)

        def verdict() -> bool:
            body = http.get(*self.who.rendezvous, wire.SWITCH, key)
            if body is None:
                return False
            try:
                said = wire.decode_verdict(self.who.secret, self.who.host, self.who.slot,
                                           self.who.instance, body)
            except PeerMessageError as e:
                log.warning("ignoring a bad verdict: %s", e)
                return False
            if said == "drop":
                raise StandbyDroppedError(f"the launcher dropped standby {key}")
            return True

        wait_until(verdict, math.inf, "the launcher's verdict", interval_s=VERDICT_POLL_S,
                   retry_on=(ServiceUnavailable,))

    def _sources(self) -> tuple[list[wire.SourceRecord], int]:
        """(valid source records, the job's world size)."""
        try:
            body = http.get(*self.who.rendezvous, wire.SOURCES, "all")
        except ServiceUnavailable as e:
            log.info("no source list yet: %s", e)
            return [], 0
        if body is None:
            return [], 0
        try:
            got = wire.decode_source_list(self.who.secret, body)
        except PeerMessageError as e:
            log.warning("bad source list: %s", e)
            return [], 0
        for why in got.rejected:
            log.warning("ignoring a source record: %s", why)
        return got.records, got.world

    def _pull_from(self, records: list[wire.SourceRecord], attempt: int) -> int:
        t0 = time.perf_counter()
        token = wire.standby_token(self.who.secret).hex()
        infos = [RankInfo(r.rank, r.host, r.addr, r.port, r.version, r.digest, r.size_bytes,
                          r.chunk_bytes, r.chunks, token) for r in records]
        manifest = self.target.snapshot.manifest()
        digests, held = list(manifest.chunk_digests), frozenset()
        if self._partial is not None:
            digests, held = self._partial.digests_over(manifest)
        me = RankInfo(STANDBY, self.who.host, "", 0, self.target.version, manifest.digest(),
                      manifest.size_bytes, manifest.chunk_bytes, tuple(digests), "")
        roles = decide(infos + [me])
        record = events.StandbyPull(host=self.who.host, slot=self.who.slot, attempt=attempt,
                                    version=roles.version, state_bytes=roles.size_bytes)
        if STANDBY in roles.needs and roles.needs[STANDBY]:
            sources = {r for c in roles.needs[STANDBY] for r in roles.holders[c]} - {STANDBY}
            self._log.write(events.StandbyPulling(host=self.who.host, slot=self.who.slot,
                                                  attempt=attempt, version=roles.version,
                                                  sources=sorted(sources)))
            # held chunks the target version still has: kept, not moved again
            kept = held - set(roles.needs[STANDBY])
            base = self._partial.base(self.target.snapshot.buffer, kept) if kept else None
            try:
                got = self._pull.pull(self.target, roles, infos + [me], STANDBY, base=base)
            except IncompletePull as e:
                self._partial = PartialPull.after(e, kept)
                raise
            self._partial = None
            record.reused_bytes = sum(min(manifest.chunk_bytes,
                                          manifest.size_bytes - c * manifest.chunk_bytes)
                                      for c in kept)
            record.needed_bytes = roles.needed_bytes(STANDBY)
            record.planned_bytes_per_source = got.plan.bytes_by_source(roles)
            record.plan_s, record.transfer_s, record.load_s = got.plan_s, got.transfer_s, got.load_s
            record.bytes_per_source = got.stats.bytes_by_source
            record.failed_sources = got.stats.failed_sources
        record.total_s = time.perf_counter() - t0
        self._log.write(record)
        return roles.version
