"""Shard transfer: every up-to-date worker serves its committed snapshot; a joiner pulls in parallel.

Wire protocol (TCP, one persistent connection per (joiner, source)):

    request  := u32 length || JSON ShardRequest {"op": "manifest"|"range"|"watch", "version",
                "start", "end", "to", "nonce", "mac"}
    response := u32 length || JSON Reply {"ok": true, "nbytes": n} || n raw bytes
              | u32 length || JSON Reply {"error": "..."}   (then the server closes)
              | on a crash watch, when its process leaves on purpose: JSON Reply {"bye": true}

Both are msgspec structs: a request is checked against :class:`ShardRequest` after its MAC, a
reply decoded straight into :class:`Reply`.

``mac`` is HMAC-SHA256 over the canonical JSON of the other fields, keyed with the source's per-sync
token. Tokens are exchanged through Horovod's own (already connected and authenticated) collective, so
only ranks of the job can ask for state; a nonce may be used once (no replay). Between syncs a worker
may also *offer* a committed snapshot that no commit writes to, to standby joiners of the
``chaos-hvdrun`` launcher, which sign with a token derived from the job secret. Nothing received is ever
unpickled: headers are size-limited JSON, payloads are raw bytes checked against the manifest's
per-chunk BLAKE2b digests before anything is loaded.

Client: each source starts with the byte ranges the scheduler planned for it, split into batches of
whole chunks; two requests are kept in flight per connection to hide the round trip. A source that
runs out of work steals batches from the tail of the source with the most work left, so the transfer
adapts when estimates were wrong or the joiner's ingress is the shared bottleneck. A chunk whose digest
fails is fetched again (from any source); a source that errors or makes no progress for ``timeout_s``
is dropped and its work re-planned over the rest. Only if no source is left does the pull fail, with
:class:`TransferError` -- never a hang.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Callable, Iterable, Literal

import msgspec
import torch

from .. import jsonline, signing
from ..errors import (
    AuthenticationError,
    CorruptShardError,
    IncompletePull,
    SnapshotError,
    TransferError,
)
from .snapshot import MAX_MANIFEST_BYTES, Manifest, chunk_digest

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 4096
MAX_RANGE_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
PIPELINE_DEPTH = 2
MAX_CHUNK_ATTEMPTS = 3
_LEN = struct.Struct("!I")
_MAX_SEEN_NONCES = 1_000_000
MAX_CONNECTIONS = 256          # served at once; a job has far fewer peers
MAX_CONNECTIONS_PER_ADDR = 64  # ... of which from one address (loopback jobs share one)
FIRST_FRAME_TIMEOUT_S = 10.0   # a connection's whole first request must arrive this soon
IDLE_TIMEOUT_S = 120.0         # a data connection idle this long between requests is closed
RETRACT_GRACE_S = 1.0          # a commit waits this long for sends in progress
CONNECT_GRACE_S = 0.5          # a source not connected by then may lose all its work to others


def new_token() -> bytes:
    return os.urandom(32)


def sign(token: bytes, fields: dict) -> dict:
    return signing.sign_fields(token, dict(fields, nonce=os.urandom(16).hex()))


def request(token: bytes, to: tuple[str, int], op: str, version: int, start: int = 0,
            end: int = 0) -> dict:
    """A signed shard request for the server at `to` (host, port) only: another server that
    knows the same token (every worker offers to standbys under one) refuses it."""
    return sign(token, {"op": op, "version": version, "start": start, "end": end,
                        "to": f"{to[0]}:{to[1]}"})


verify = signing.check_fields


class ShardRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A peer's request, as :func:`request` signs it; checked against this schema after its MAC."""

    op: Literal["manifest", "range", "watch"]
    version: Annotated[int, msgspec.Meta(ge=0, le=1 << 62)]
    nonce: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    mac: str
    start: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] = 0
    end: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] = 0
    to: Annotated[str, msgspec.Meta(max_length=300)] = ""     # "" is no server's address


class Reply(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What a shard server answers: ``ok`` and the byte count that follows, or ``error``; on a
    crash watch, ``bye`` when its process leaves on purpose."""

    ok: bool = False
    nbytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] | None = None
    error: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    bye: bool = False


_reply_decoder = msgspec.json.Decoder(Reply, strict=True)


def _typed_request(req: dict) -> ShardRequest:
    try:
        return msgspec.convert(req, ShardRequest, strict=True)
    except msgspec.ValidationError as e:
        raise AuthenticationError(f"not a shard request: {e}") from None


def send_frame(sock: socket.socket, obj: dict | msgspec.Struct) -> None:
    data = msgspec.json.encode(obj)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact_into(sock: socket.socket, view: memoryview,
                     deadline: float | None = None) -> None:
    """Fill `view`; with `deadline` (monotonic) the whole of it must arrive by then -- a peer
    that trickles a byte now and then must not keep a read alive (socket.timeout)."""
    got = 0
    while got < len(view):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("frame not complete by its deadline")
            sock.settimeout(left)
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("peer closed the connection")
        got += n


def _recv_body(sock: socket.socket, limit: int, deadline: float | None) -> bytearray:
    """One length-prefixed frame's bytes, refused past `limit`."""
    head = bytearray(_LEN.size)
    _recv_exact_into(sock, memoryview(head), deadline)
    (n,) = _LEN.unpack(head)
    if n > limit:
        raise AuthenticationError(f"frame of {n} bytes exceeds the {limit}-byte limit")
    body = bytearray(n)
    _recv_exact_into(sock, memoryview(body), deadline)
    return body


def recv_frame(sock: socket.socket, limit: int = MAX_HEADER_BYTES,
               deadline: float | None = None) -> dict:
    return jsonline.decode(bytes(_recv_body(sock, limit, deadline)), limit, AuthenticationError)


def recv_reply(sock: socket.socket, deadline: float | None = None) -> Reply:
    """A server's answer, typed (bounded: a frame of at most MAX_HEADER_BYTES)."""
    body = _recv_body(sock, MAX_HEADER_BYTES, deadline)
    try:
        return _reply_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        raise AuthenticationError(f"not a reply: {e}") from None


# --------------------------------------------------------------------------------------------------
# server


@dataclass
class _Publication:
    version: int
    manifest: bytes
    data: memoryview
    token: bytes
    seen: set = field(default_factory=set)


class ShardServer:
    """Serves the published snapshot of this rank. Thread-safe; one instance per process."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0,
                 on_reject: Callable[[str, str], None] | None = None):
        self._pub: _Publication | None = None
        self._cond = threading.Condition()
        self._active = 0
        self._sending: set[socket.socket] = set()   # connections inside a send of published data
        self._open = 0
        self._per_addr: dict[str, int] = {}
        # connections without a valid request yet -> (when they connected, peer address)
        self._unauthenticated: dict[socket.socket, tuple[float, str]] = {}
        self._host = host
        # nonces of requests signed with an offer's token, for the server's life: one token
        # serves every offer of the job, so a request replayed after a re-offer is refused too
        self._offer_nonces: set[str] = set()
        self._on_reject = on_reject or (lambda why, peer: None)
        self.rejected = 0
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                server._serve(self.request, self.client_address)

        class TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._watchers: set[socket.socket] = set()
        self._watch_pub: _Publication | None = None
        # what standby joiners may pull while training goes on (a buffer no commit writes to)
        self._offer: _Publication | None = None
        self._offer_active = 0
        self._offer_last = 0.0
        self._offer_sending: set[socket.socket] = set()
        # connections that pulled from the offer and are still open: a standby's pull holds one
        # to each source until it has every chunk, and the offer stays until they close
        self._offer_readers: set[socket.socket] = set()
        self._srv = TCPServer((host, port), Handler)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, name="chaos-shard-server",
                                        daemon=True)
        self._thread.start()

    def publish(self, version: int, manifest: bytes, data: memoryview, token: bytes) -> None:
        self.retract()
        with self._cond:
            self._pub = _Publication(version, manifest, data, token)
            # watch connections outlive a publication (they are opened after a sync, while the
            # data may already be retracted by the next commit): they use the last token
            self._watch_pub = _Publication(version, b"", memoryview(b""), token)

    def offer(self, version: int, manifest: bytes, data: memoryview, token: bytes) -> None:
        """Serve `data` to standby joiners (requests signed with `token`) until the next offer.
        The caller must not write to `data` until it offers another buffer."""
        with self._cond:
            if self._offer is not None and self._offer_active:
                raise RuntimeError("offer() while the previous offer is being sent")
            self._offer = _Publication(version, manifest, data, token)

    def withdraw_offer(self) -> None:
        """Stop offering; wait (a grace period, then cut) until no standby reads the buffer."""
        with self._cond:
            self._offer = None
        self._drain(lambda: self._offer_active, self._offer_sending, "a standby reading the offer")

    def offer_idle(self, quiet_s: float) -> bool:
        """No standby is reading the offer or holds a connection to it, and none asked for a
        range for `quiet_s`. (A source whose share of a pull is done stays connected for the
        chunks of a source that fails: replacing the offer then would refuse them as stale.)"""
        with self._cond:
            return (self._offer_active == 0 and not self._offer_readers
                    and time.monotonic() - self._offer_last >= quiet_s)

    def retract(self) -> None:
        """Stop serving and wait until no send reads the buffer (call before overwriting it).

        Runs at every commit, so it must not wait on a peer that stopped reading: after a grace
        period the connections still sending are shut down (the peer refetches elsewhere)."""
        with self._cond:
            self._pub = None
        self._drain(lambda: self._active, self._sending, "a shard request")

    def _drain(self, active: Callable[[], int], sending: set, what: str) -> None:
        """Wait until `active()` sends are done; after RETRACT_GRACE_S cut the ones in `sending`
        (their peers stopped reading) and wait for their threads to notice."""
        with self._cond:
            if self._cond.wait_for(lambda: active() == 0, RETRACT_GRACE_S):
                return
            stuck = list(sending)
        log.warning("%s still sending after %.1f s: cut", what, RETRACT_GRACE_S)
        for sock in stuck:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._cond:
            self._cond.wait_for(lambda: active() == 0)

    @property
    def watchers(self) -> int:
        """Crash-watch connections open to this server."""
        with self._cond:
            return len(self._watchers)

    def farewell(self) -> None:
        """Tell every peer watching this process that it leaves on purpose (call at exit)."""
        with self._cond:
            watchers, self._watchers = list(self._watchers), set()
        for sock in watchers:
            try:
                send_frame(sock, Reply(bye=True))
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self.retract()
        self._srv.shutdown()
        self._srv.server_close()

    def _reject(self, sock, peer, why: str) -> None:
        self.rejected += 1
        log.info("shard request from %s:%s rejected: %s", peer[0], peer[1], why)
        self._on_reject(why, f"{peer[0]}:{peer[1]}")
        try:
            send_frame(sock, Reply(error=why[:1000]))
        except OSError:
            pass

    def _admit(self, sock: socket.socket, addr: str) -> str | None:
        """Count a new connection in; the reason when it cannot be. Over a cap, the oldest
        connection that has not yet sent a valid request makes room (it is shut down): silent
        or trickling strangers can never keep a peer with the token out."""
        with self._cond:
            addr_full = self._per_addr.get(addr, 0) >= MAX_CONNECTIONS_PER_ADDR
            if addr_full or self._open >= MAX_CONNECTIONS:
                # an address over its share makes room among its own connections only
                pool = [s for s, (_, a) in self._unauthenticated.items()
                        if a == addr or not addr_full]
                if not pool:
                    return (f"more than {MAX_CONNECTIONS} connections, or "
                            f"{MAX_CONNECTIONS_PER_ADDR} from {addr}")
                victim = min(pool, key=self._unauthenticated.__getitem__)
                del self._unauthenticated[victim]
                try:
                    victim.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open += 1
            self._per_addr[addr] = self._per_addr.get(addr, 0) + 1
            self._unauthenticated[sock] = (time.monotonic(), addr)
            return None

    def _serve(self, sock: socket.socket, peer) -> None:
        addr = peer[0]
        refused = self._admit(sock, addr)
        if refused is not None:
            return self._reject(sock, peer, refused)
        try:
            self._serve_requests(sock, peer)
        except Exception as e:  # noqa: BLE001 - a peer's input never kills or traces the server
            self._reject(sock, peer, f"{type(e).__name__}: {e}")
        finally:
            with self._cond:
                self._open -= 1
                left = self._per_addr.get(addr, 1) - 1
                if left:
                    self._per_addr[addr] = left
                else:
                    self._per_addr.pop(addr, None)
                self._unauthenticated.pop(sock, None)
                self._offer_readers.discard(sock)

    def _addressed_here(self, to) -> bool:
        """`to` names this server: its port, and its address unless it listens on all."""
        if not isinstance(to, str):
            return False
        host, _, port = to.rpartition(":")
        return port == str(self.port) and (self._host in ("", "0.0.0.0", "::")
                                           or host == self._host)

    def _serve_requests(self, sock: socket.socket, peer) -> None:
        # unauthenticated silence and idle data connections are dropped; watches stay (below).
        # Each request must arrive whole by its deadline, not merely byte by byte.
        first = True
        while True:
            try:
                req = recv_frame(sock, deadline=time.monotonic() + (
                    FIRST_FRAME_TIMEOUT_S if first else IDLE_TIMEOUT_S))
            except (ConnectionError, OSError):
                return
            except AuthenticationError as e:
                return self._reject(sock, peer, str(e))
            sock.settimeout(IDLE_TIMEOUT_S)
            with self._cond:
                pub = self._watch_pub if req.get("op") == "watch" else self._pub
                offered = self._offer is not None and req.get("op") != "watch" and (
                    pub is None or not _signed_with(pub.token, req)) \
                    and _signed_with(self._offer.token, req)
                if offered:
                    pub = self._offer
                if pub is None:
                    return self._reject(sock, peer, "nothing published")
                try:
                    verify(pub.token, req)
                    r = _typed_request(req)
                    if not self._addressed_here(r.to):
                        raise AuthenticationError(f"request for another server {r.to[:60]!r}")
                    if r.op != "watch" and r.version != pub.version:
                        raise AuthenticationError(f"stale version {r.version}")
                    nonce = r.nonce
                    seen = self._offer_nonces if offered else pub.seen
                    if nonce in seen or len(seen) > _MAX_SEEN_NONCES:
                        raise AuthenticationError("replayed nonce")
                    seen.add(nonce)
                    if first:
                        first = False
                        self._unauthenticated.pop(sock, None)
                    if r.op == "watch":
                        self._watchers.add(sock)
                        payload = None
                    elif r.op == "manifest":
                        payload = memoryview(pub.manifest)
                    else:
                        a, b = r.start, r.end
                        if not (a <= b <= len(pub.data) and b - a <= MAX_RANGE_BYTES):
                            raise AuthenticationError(f"bad range {a}..{b}")
                        payload = pub.data[a:b]
                except AuthenticationError as e:
                    return self._reject(sock, peer, str(e))
                if payload is None:
                    break
                if offered:
                    self._offer_active += 1
                    self._offer_last = time.monotonic()
                    self._offer_sending.add(sock)
                    self._offer_readers.add(sock)
                else:
                    self._active += 1
                    self._sending.add(sock)
            try:
                send_frame(sock, Reply(ok=True, nbytes=len(payload)))
                sock.sendall(payload)
            except OSError:
                return
            finally:
                with self._cond:
                    if offered:
                        self._offer_active -= 1
                        self._offer_last = time.monotonic()
                        self._offer_sending.discard(sock)
                    else:
                        self._active -= 1
                        self._sending.discard(sock)
                    self._cond.notify_all()
        # A watch connection stays open until this process exits (farewell) or dies (EOF at the peer).
        sock.settimeout(None)
        try:
            send_frame(sock, Reply(ok=True, nbytes=0))
            while sock.recv(1):
                pass
        except OSError:
            pass
        finally:
            with self._cond:
                self._watchers.discard(sock)


def _signed_with(token: bytes, req: dict) -> bool:
    try:
        verify(token, req)
    except AuthenticationError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# client


PeerId = int   # the serving rank


@dataclass(frozen=True)
class Peer:
    id: PeerId
    host: str
    port: int
    token: bytes


class _Conn:
    def __init__(self, peer: Peer, version: int, timeout_s: float):
        self.peer, self.version = peer, version
        self.sock = socket.create_connection((peer.host, peer.port), timeout=timeout_s)
        self.sock.settimeout(timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, op: str, start: int = 0, end: int = 0) -> None:
        send_frame(self.sock, request(self.peer.token, (self.peer.host, self.peer.port), op,
                                      self.version, start, end))

    def response_header(self, expect: int | None) -> int:
        head = recv_reply(self.sock)
        if not head.ok:
            raise TransferError(f"{self.peer.id} refused: {head.error}")
        n = head.nbytes
        if n is None or (expect is not None and n != expect):
            raise TransferError(f"{self.peer.id} announced {n} bytes, expected "
                                f"{expect if expect is not None else 'a count'}")
        return n

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def fetch_manifest(peers: Iterable[Peer], version: int, expected_digest: str,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> Manifest:
    """Get the manifest from the first peer that answers with one matching the agreed digest."""
    errors = []
    for peer in peers:
        try:
            conn = _Conn(peer, version, timeout_s)
            try:
                conn.request("manifest")
                n = conn.response_header(None)
                if n > MAX_MANIFEST_BYTES:
                    raise TransferError(f"manifest of {n} bytes is too large")
                data = bytearray(n)
                _recv_exact_into(conn.sock, memoryview(data))
            finally:
                conn.close()
            manifest = Manifest.from_bytes(bytes(data))
            if manifest.digest() != expected_digest:
                raise CorruptShardError("manifest digest differs from the one agreed by the ranks")
            return manifest
        except (OSError, TransferError, SnapshotError, AuthenticationError) as e:
            errors.append(f"{peer.id}: {e}")
    raise TransferError("no source delivered the manifest: " + "; ".join(errors))


@dataclass
class PullStats:
    bytes_by_source: dict[PeerId, int] = field(default_factory=dict)
    seconds_by_source: dict[PeerId, float] = field(default_factory=dict)
    failed_sources: dict[PeerId, str] = field(default_factory=dict)
    corrupt_chunks: int = 0
    stolen_batches: int = 0


class _Work:
    """Chunk queues per source, shared by the worker threads."""

    def __init__(self, manifest: Manifest, assigned: dict[PeerId, list[int]],
                 holders: dict[int, set[PeerId]] | None, needed: set[int], batch_chunks: int):
        self.m = manifest
        self.batch_chunks = max(1, batch_chunks)
        self.lock = threading.Lock()
        self.holders = holders
        self.bad_from: dict[int, set[PeerId]] = {}
        self.queues: dict[PeerId, deque[int]] = {}
        seen: set[int] = set()
        for name, chunks in assigned.items():
            for c in chunks:
                if c in seen or not 0 <= c < manifest.n_chunks:
                    raise TransferError(f"chunk {c} assigned twice or out of range")
                if not self.holds(name, c):
                    raise TransferError(f"chunk {c} assigned to {name}, which does not hold it")
                seen.add(c)
            # rarest first: a chunk only this source holds (a sync target's BatchNorm statistics)
            # is asked for before the ones others could still serve should this source die
            self.queues[name] = deque(sorted(chunks, key=lambda c: (self.n_holders(c), c)))
        if seen != needed:
            raise TransferError(f"plan covers {len(seen)} chunk(s) but {len(needed)} are needed")
        self.orphans: deque[int] = deque()
        self.attempts: dict[int, int] = {}
        self.alive = set(assigned)
        self.rate: dict[PeerId, float] = {}
        self.connected: set[PeerId] = set()
        self.started = time.monotonic()
        self.reported = False               # pull() returned its statistics
        self.to_deliver = len(needed)
        self.received: set[int] = set()     # chunks that arrived and matched their digests
        self.complete = threading.Event()   # every needed chunk arrived and matched its digest
        self.losses = 0                     # sources dropped and bad chunks so far
        self.given_up = threading.Event()   # some chunk lost its last live holder: stop taking work
        self.socks: set[socket.socket] = set()
        if not needed:
            self.complete.set()

    def delivered(self, source: PeerId, chunks: list[int], nbytes: int,
                  stats: "PullStats") -> None:
        """Count chunks that arrived and matched their digests (figures kept as they come:
        pull() may return while a straggler is still connecting)."""
        with self.lock:
            stats.bytes_by_source[source] = stats.bytes_by_source.get(source, 0) + nbytes
            self.received.update(chunks)
            self.to_deliver -= len(chunks)
            if self.to_deliver <= 0:
                self.complete.set()

    def awaiting_connect(self) -> bool:
        """Chunks sit with a source that has not connected yet, inside its grace period."""
        with self.lock:
            return time.monotonic() - self.started <= CONNECT_GRACE_S and any(
                self.queues[n] for n in self.alive if n not in self.connected)

    def n_holders(self, c: int) -> int:
        return 0 if self.holders is None else len(self.holders.get(c, ()))

    def holds(self, name: PeerId, c: int) -> bool:
        if name in self.bad_from.get(c, ()):
            return False  # it sent bytes that failed the digest: ask someone else
        return self.holders is None or name in self.holders.get(c, ())

    def _take_run(self, q: deque, name: PeerId, from_tail: bool) -> list[int]:
        """Up to batch_chunks consecutive chunks that `name` holds, from one end of q."""
        items = list(reversed(q)) if from_tail else list(q)
        run: list[int] = []
        for c in items:
            if not self.holds(name, c):
                if run:
                    break
                continue
            if run and abs(c - run[-1]) != 1:
                break
            run.append(c)
            if len(run) == self.batch_chunks:
                break
        for c in run:
            q.remove(c)
        return sorted(run)

    def take(self, name: PeerId, stats: PullStats) -> list[int]:
        if self.given_up.is_set():
            return []
        with self.lock:
            run = self._take_run(self.orphans, name, False)
            if run:
                return run
            if self.queues[name]:
                return self._take_run(self.queues[name], name, False)
            # steal from the source expected to finish last, keeping its next batches for it
            def eta(n):
                return len(self.queues[n]) / max(self.rate.get(n, 1.0), 1e-9)
            # a source keeps its next batches, unless it is still connecting after a grace
            # period (a dead link): then it keeps nothing
            late = time.monotonic() - self.started > CONNECT_GRACE_S
            victims = [n for n in self.alive if n != name and len(self.queues[n]) >
                       (0 if late and n not in self.connected
                        else PIPELINE_DEPTH * self.batch_chunks)]
            for victim in sorted(victims, key=eta, reverse=True):
                run = self._take_run(self.queues[victim], name, True)
                if run:
                    stats.stolen_batches += 1
                    return run
            return []

    def connected_with(self, name: PeerId, sock: socket.socket) -> bool:
        """Register a worker's connection; False once the pull gave up."""
        with self.lock:
            if self.given_up.is_set():
                return False
            self.connected.add(name)
            self.socks.add(sock)
            return True

    def give_up(self) -> None:
        """Stop every worker: in-flight batches would only hold the link the next attempt needs."""
        with self.lock:
            self.given_up.set()
            for sock in self.socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def give_back(self, chunks: Iterable[int]) -> None:
        with self.lock:
            self.orphans.extend(sorted(chunks))

    def drop(self, name: PeerId) -> None:
        with self.lock:
            self.losses += 1
            self.alive.discard(name)
            self.orphans.extend(self.queues[name])
            self.queues[name].clear()

    def bad_chunk(self, c: int, name: PeerId) -> None:
        with self.lock:
            self.losses += 1
            self.bad_from.setdefault(c, set()).add(name)
            self.attempts[c] = self.attempts.get(c, 0) + 1
            if self.attempts[c] >= MAX_CHUNK_ATTEMPTS:
                raise CorruptShardError(f"chunk {c} failed its digest {self.attempts[c]} times")
            self.orphans.append(c)

    def remaining(self) -> int:
        with self.lock:
            return len(self.orphans) + sum(len(q) for q in self.queues.values())

    def stranded(self) -> list[int]:
        """Chunks left that no live source holds (none before a source failed or sent a bad
        chunk: the pull's wait loops ask every 20 ms, and only those events can strand one)."""
        with self.lock:
            if not self.losses:
                return []
            left = list(self.orphans) + [c for q in self.queues.values() for c in q]
            return [c for c in left if not any(self.holds(n, c) for n in self.alive)]


def _worker(peer: Peer, version: int, work: _Work, view: memoryview, stats: PullStats,
            timeout_s: float, fatal: list) -> None:
    m = work.m
    inflight: deque[list[int]] = deque()
    conn = None
    t0 = time.perf_counter()
    got = 0
    try:
        conn = _Conn(peer, version, timeout_s)
        if not work.connected_with(peer.id, conn.sock):
            return
        while True:
            while len(inflight) < PIPELINE_DEPTH:
                batch = work.take(peer.id, stats)
                if not batch:
                    break
                start, end = m.chunk_range(batch[0])[0], m.chunk_range(batch[-1])[1]
                conn.request("range", start, end)
                inflight.append(batch)
            if not inflight:
                # Stay connected until the pull is complete: work may free up when a source's
                # grace period ends or a source fails, and this connection keeps the source's
                # offer from being replaced meanwhile (ShardServer.offer_idle).
                if (not work.complete.wait(0.02) and work.alive - {peer.id}
                        and not work.stranded()):
                    continue
                break
            batch = inflight[0]
            start, end = m.chunk_range(batch[0])[0], m.chunk_range(batch[-1])[1]
            conn.response_header(end - start)
            _recv_exact_into(conn.sock, view[start:end])
            inflight.popleft()
            good, good_bytes = [], 0
            for c in batch:
                a, b = m.chunk_range(c)
                if chunk_digest(view[a:b]) != m.chunk_digests[c]:
                    stats.corrupt_chunks += 1
                    work.bad_chunk(c, peer.id)
                else:
                    good.append(c)
                    good_bytes += b - a
            got += good_bytes
            work.delivered(peer.id, good, good_bytes, stats)
            with work.lock:
                work.rate[peer.id] = got / max(time.perf_counter() - t0, 1e-6)
    except CorruptShardError as e:
        fatal.append(e)
    except (OSError, TransferError, AuthenticationError) as e:
        stats.failed_sources[peer.id] = f"{type(e).__name__}: {e}"
        for batch in inflight:
            work.give_back(batch)
        work.drop(peer.id)
    finally:
        if conn:
            conn.close()
        with work.lock:   # a straggler may end after pull() returned: its time comes too late
            if not work.reported:
                stats.seconds_by_source[peer.id] = (stats.seconds_by_source.get(peer.id, 0.0)
                                                    + time.perf_counter() - t0)


def pull(manifest: Manifest, peers: Iterable[Peer], assigned: dict[PeerId, list[int]], *,
         holders: dict[int, set[PeerId]] | None = None, buffer: torch.Tensor | None = None,
         batch_bytes: int = DEFAULT_BATCH_BYTES,
         timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[torch.Tensor, PullStats]:
    """Fetch the chunks in `assigned` (peer name -> chunk indices) into `buffer`.

    `buffer` (default: a new one) may already hold the chunks that are not assigned, e.g. a survivor
    that only lacks the target's BatchNorm statistics. `holders` (chunk -> peer names) limits which
    peer may serve a chunk when work is stolen or re-planned; default: every peer holds everything.
    On return every assigned chunk matched its digest.
    """
    peers = {p.id: p for p in peers}
    unknown = set(assigned) - set(peers)
    if unknown:
        raise TransferError(f"plan names unknown sources {sorted(unknown)}")
    needed = {c for chunks in assigned.values() for c in chunks}
    # Peers with no planned work still join in: they can take orphans and steal.
    assigned = {name: list(assigned.get(name, [])) for name in peers}
    work = _Work(manifest, assigned, holders, needed, batch_bytes // manifest.chunk_bytes)
    if buffer is None:
        buffer = torch.empty(manifest.size_bytes, dtype=torch.uint8)
    if buffer.numel() != manifest.size_bytes:
        raise TransferError("buffer size differs from the manifest")
    view = memoryview(buffer.numpy()) if manifest.size_bytes else memoryview(bytearray())
    stats, fatal = PullStats({name: 0 for name in peers}), []
    while work.remaining() and not fatal and not work.stranded():
        threads = [threading.Thread(target=_worker, name=f"chaos-pull-{name}", daemon=True,
                                    args=(peers[name], manifest.version, work, view, stats,
                                          timeout_s, fatal))
                   for name in sorted(work.alive)]
        if not threads:
            break
        for t in threads:
            t.start()
        # Wait for the workers, but not for one still connecting (or stuck) once everything
        # arrived through the others: a source behind a dead link must not hold the sync.
        # Nor once a chunk lost its last live holder: this attempt cannot complete, and the
        # chunks still to come belong to a version the survivors are leaving behind (a standby
        # starts its next attempt at once, keeping what arrived).
        while (any(t.is_alive() for t in threads) and not work.complete.wait(0.02)
               and not work.stranded()):
            pass
        if work.complete.is_set() or work.stranded():
            break
    if not work.complete.is_set():
        work.give_up()
    with work.lock:
        work.reported = True
        stats = PullStats(dict(stats.bytes_by_source), dict(stats.seconds_by_source),
                          dict(stats.failed_sources), stats.corrupt_chunks, stats.stolen_batches)
        received = frozenset(work.received)
    if fatal:
        raise fatal[0]
    if not work.complete.is_set():
        raise IncompletePull(
            f"{len(needed) - len(received)} chunk(s) undelivered; "
            f"failed sources: {stats.failed_sources}",
            manifest, buffer, received)
    return buffer, stats
