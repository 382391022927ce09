"""Real sockets on loopback: parallel pull, corruption, dead sources, authentication."""

import socket
import struct

import pytest
import torch

from chaos_hvd.state import transfer
from chaos_hvd.errors import IncompletePull, TransferError
from chaos_hvd.state.snapshot import Snapshot
from chaos_hvd.state.transfer import (Peer, ShardServer, fetch_manifest, new_token, pull, request,
                                      sign)
from chaos_hvd.waiting import wait_until

CHUNK = 4096


@pytest.fixture
def state():
    snap = Snapshot(chunk_bytes=CHUNK)
    snap.capture({"w": torch.randn(250_000)}, 3)
    return snap


@pytest.fixture
def servers(state):
    made = []

    def start(n, corrupt=None):
        peers = []
        for i in range(n):
            srv = ShardServer("127.0.0.1")
            token = new_token()
            data = state.buffer
            if corrupt is not None and i in corrupt:
                data = state.buffer.clone()
                data[corrupt[i] * CHUNK + 5] ^= 0xFF
            srv.publish(3, state.manifest().to_bytes(), memoryview(data.numpy()), token)
            made.append(srv)
            peers.append(Peer(i, "127.0.0.1", srv.port, token))
        return made, peers

    yield start
    for srv in made:
        srv.close()


def split(n_chunks, names):
    return {name: list(range(i, n_chunks, len(names))) for i, name in enumerate(names)}


def test_parallel_pull_is_exact(state, servers):
    srvs, peers = servers(3)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    buf, stats = pull(man, peers, split(man.n_chunks, [p.id for p in peers]))
    assert torch.equal(buf, state.buffer)
    assert sum(stats.bytes_by_source.values()) == state.size_bytes
    assert all(v > 0 for v in stats.bytes_by_source.values())


def test_corrupt_chunk_is_fetched_again_from_another_source(state, servers):
    srvs, peers = servers(2, corrupt={0: 2})
    man = fetch_manifest(peers, 3, state.manifest().digest())
    assigned = {0: list(range(0, 10)), 1: list(range(10, man.n_chunks))}
    buf, stats = pull(man, peers, assigned)
    assert stats.corrupt_chunks >= 1
    assert torch.equal(buf, state.buffer)


def test_dead_source_is_replanned(state, servers):
    srvs, peers = servers(3)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    srvs[1].close()
    buf, stats = pull(man, peers, split(man.n_chunks, [p.id for p in peers]))
    assert torch.equal(buf, state.buffer)
    assert 1 in stats.failed_sources


def test_all_sources_dead_is_a_clean_error(state, servers):
    srvs, peers = servers(2)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    for s in srvs:
        s.close()
    with pytest.raises(TransferError, match="undelivered"):
        pull(man, peers, split(man.n_chunks, [p.id for p in peers]), timeout_s=2)


def test_holders_restrict_who_serves_a_chunk(state, servers):
    srvs, peers = servers(2)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    holders = {c: {0, 1} for c in range(man.n_chunks)}
    holders[man.n_chunks - 1] = {1}
    assigned = {0: list(range(man.n_chunks - 1)), 1: [man.n_chunks - 1]}
    base = state.buffer.clone()
    base[:] = 0
    buf, _ = pull(man, peers, assigned, holders=holders, buffer=base)
    assert torch.equal(buf, state.buffer)
    with pytest.raises(TransferError, match="does not hold"):
        pull(man, peers, {0: list(range(man.n_chunks))}, holders=holders)


def test_wrong_manifest_digest_is_refused(state, servers):
    _, peers = servers(1)
    with pytest.raises(TransferError, match="manifest"):
        fetch_manifest(peers, 3, "0" * 32)


def raw_request(port, msg_bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("!I", len(msg_bytes)) + msg_bytes)
        return transfer.recv_reply(s)


def test_forged_replayed_and_oversized_requests_are_rejected(state, servers):
    srvs, peers = servers(1)
    import json
    here = ("127.0.0.1", peers[0].port)
    forged = request(b"k" * 32, here, "range", 3, 0, 10)
    assert raw_request(peers[0].port, json.dumps(forged).encode()).ok is False
    good = request(peers[0].token, here, "manifest", 3)
    assert raw_request(peers[0].port, json.dumps(good).encode()).ok is True
    assert raw_request(peers[0].port, json.dumps(good).encode()).ok is False  # replay
    stale = request(peers[0].token, here, "manifest", 2)
    assert "stale" in raw_request(peers[0].port, json.dumps(stale).encode()).error
    big = request(peers[0].token, here, "range", 3, 0, 10 ** 9)
    assert raw_request(peers[0].port, json.dumps(big).encode()).ok is False
    assert raw_request(peers[0].port, b"x" * 5000).ok is False  # header over the size limit
    assert raw_request(peers[0].port, b"\x80\x04not json").ok is False
    unbound = sign(peers[0].token, {"op": "manifest", "version": 3, "start": 0, "end": 0})
    assert "another server" in raw_request(peers[0].port, json.dumps(unbound).encode()).error
    assert srvs[0].rejected == 7


def _signed(token, port, **fields):
    import json
    return json.dumps(sign(token, {"op": "range", "version": 3, "start": 0, "end": 10,
                                   "to": f"127.0.0.1:{port}", **fields})).encode()


def test_hostile_requests_are_counted_rejections_and_the_server_keeps_serving(state, servers):
    import json
    srvs, peers = servers(1)
    port, token = peers[0].port, peers[0].token
    to = f"127.0.0.1:{port}"
    no_nonce = transfer.signing.sign_fields(token, {"op": "manifest", "version": 3, "to": to})
    int_nonce = transfer.signing.sign_fields(token, {"op": "manifest", "version": 3, "nonce": 5,
                                                     "to": to})
    bad = [b"[" * 2000 + b"]" * 2000,                                   # deep JSON
           json.dumps({"op": "manifest", "mac": "é" * 64}).encode(),    # non-ASCII mac
           json.dumps(no_nonce).encode(), json.dumps(int_nonce).encode(),
           _signed(token, port, start=False, end=True),                 # bools are not offsets
           json.dumps([1, 2]).encode()]
    for i, msg in enumerate(bad, 1):
        reply = raw_request(port, msg)
        assert reply.ok is False, msg[:40]
        assert srvs[0].rejected == i
    ok = request(token, ("127.0.0.1", port), "manifest", 3)
    assert raw_request(port, json.dumps(ok).encode()).ok is True


def test_retract_does_not_wait_for_a_peer_that_stopped_reading(monkeypatch):
    import json
    import time
    monkeypatch.setattr(transfer, "RETRACT_GRACE_S", 0.5)
    snap = Snapshot(chunk_bytes=CHUNK)
    snap.capture({"w": torch.randn(8_000_000)}, 3)            # 32 MB: more than socket buffers
    srv, token = ShardServer("127.0.0.1"), new_token()
    srv.publish(3, snap.manifest().to_bytes(), memoryview(snap.buffer.numpy()), token)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    data = json.dumps(request(token, ("127.0.0.1", srv.port), "range", 3, 0,
                              snap.size_bytes)).encode()
    s.sendall(struct.pack("!I", len(data)) + data)            # ... and never read the reply
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.retract()                                             # what every commit does
    took = time.monotonic() - t0
    assert 0.4 < took < 3, took                               # waited for the send, then cut it
    s.close()
    srv.close()


def test_silent_connections_are_dropped_and_capped(state, servers, monkeypatch):
    import time
    monkeypatch.setattr(transfer, "FIRST_FRAME_TIMEOUT_S", 0.3)
    srvs, peers = servers(1)
    idle = [socket.create_connection(("127.0.0.1", peers[0].port)) for _ in range(4)]
    for s in idle:                                            # silent ones: closed by the server
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(1) == b"" and time.monotonic() - t0 < 3
        s.close()


def test_strangers_that_fill_the_server_or_trickle_cannot_keep_a_pull_out(state, servers,
                                                                          monkeypatch):
    """The cap's worth of connections that send nothing, or a byte of a frame every 0.5 s
    (each read succeeds), used to refuse a real joiner: now the oldest of them makes room,
    and a frame must arrive whole by its deadline."""
    import threading
    import time
    monkeypatch.setattr(transfer, "MAX_CONNECTIONS", 6)
    monkeypatch.setattr(transfer, "MAX_CONNECTIONS_PER_ADDR", 6)
    monkeypatch.setattr(transfer, "FIRST_FRAME_TIMEOUT_S", 2.0)
    srvs, peers = servers(1)
    port = peers[0].port
    hog = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    stop = threading.Event()

    def trickle(s):                                           # never completes a frame
        try:
            s.sendall(struct.pack("!I", 200))
            while not stop.wait(0.5):
                s.sendall(b"{")
        except OSError:
            pass
    for s in hog:
        threading.Thread(target=trickle, args=(s,), daemon=True).start()
    time.sleep(0.3)
    t0 = time.monotonic()
    man = fetch_manifest(peers, 3, state.manifest().digest(), 5)
    buf, _ = pull(man, peers, {peers[0].id: list(range(man.n_chunks))}, timeout_s=5)
    assert torch.equal(buf, state.buffer) and time.monotonic() - t0 < 2.0
    # the trickling ones are cut by their frame's deadline anyway, however often they send
    for s in hog:
        s.settimeout(5)
        try:
            while s.recv(4096):                               # a refusal, then the close
                pass
        except ConnectionResetError:
            pass
    assert time.monotonic() - t0 < 4.0
    stop.set()
    for s in hog:
        s.close()


def test_a_request_for_one_worker_is_refused_by_another_and_after_a_re_offer(state):
    """Every worker offers to standbys under one token: a captured request must not be
    served by another worker, nor by the same one once it offered the version again."""
    import json
    srvs = [ShardServer("127.0.0.1") for _ in range(2)]
    try:
        token = new_token()
        for srv in srvs:
            srv.offer(3, state.manifest().to_bytes(), memoryview(state.buffer.numpy()), token)
        captured = request(token, ("127.0.0.1", srvs[0].port), "manifest", 3)
        wire_form = json.dumps(captured).encode()
        assert raw_request(srvs[0].port, wire_form).ok is True
        assert "another server" in raw_request(srvs[1].port, wire_form).error
        srvs[0].withdraw_offer()
        srvs[0].offer(3, state.manifest().to_bytes(), memoryview(state.buffer.numpy()), token)
        assert "replayed" in raw_request(srvs[0].port, wire_form).error
    finally:
        for srv in srvs:
            srv.close()


@pytest.mark.parametrize("header,body", [({"ok": True, "nbytes": 2}, b"[]"),
                                         ({"ok": True, "nbytes": -1}, b""),
                                         ({"ok": True, "nbytes": True}, b"x"),
                                         ({"ok": True, "nbytes": 1.5}, b"")])
def test_fetch_manifest_moves_on_from_a_source_with_a_malformed_reply(state, servers, header,
                                                                      body):
    import threading
    _, peers = servers(1)
    liar = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = liar.accept()
        with conn:
            transfer.recv_frame(conn)
            transfer.send_frame(conn, header)
            conn.sendall(body)
    threading.Thread(target=serve, daemon=True).start()
    first = Peer(9, "127.0.0.1", liar.getsockname()[1], b"t" * 32)
    manifest = fetch_manifest([first, peers[0]], 3, state.manifest().digest(), 5)
    assert manifest.digest() == state.manifest().digest()
    liar.close()


def test_a_source_that_cannot_even_connect_does_not_hold_the_pull(state, servers):
    import time
    _, peers = servers(1)
    black = socket.socket()                     # a full accept queue: connects hang (no SYN-ACK)
    black.bind(("127.0.0.1", 0))
    black.listen(0)
    filler = socket.create_connection(black.getsockname())
    hung = Peer(7, "127.0.0.1", black.getsockname()[1], b"t" * 32)
    man = state.manifest()
    chunks = list(range(man.n_chunks))
    t0 = time.monotonic()
    half = len(chunks) // 2                     # contiguous shares, as the scheduler plans them
    buf, stats = pull(man, [peers[0], hung], {0: chunks[:half], 7: chunks[half:]}, timeout_s=20)
    took = time.monotonic() - t0
    assert torch.equal(buf, state.buffer)
    assert took < 10, took                      # not the 20 s connect timeout
    assert stats.bytes_by_source[0] == man.size_bytes and stats.stolen_batches > 0
    filler.close()
    black.close()


def test_offer_serves_standbys_beside_the_sync_publication(state):
    srv = ShardServer("127.0.0.1")
    try:
        sync_token, standby_token = new_token(), new_token()
        other = Snapshot(chunk_bytes=CHUNK)
        other.capture({"w": torch.zeros(250_000)}, 2)
        srv.publish(2, other.manifest().to_bytes(), memoryview(other.buffer.numpy()), sync_token)
        srv.offer(3, state.manifest().to_bytes(), memoryview(state.buffer.numpy()), standby_token)
        # each token reaches its own publication
        standby = [Peer(0, "127.0.0.1", srv.port, standby_token)]
        man = fetch_manifest(standby, 3, state.manifest().digest())
        buf, _ = pull(man, standby, {0: list(range(man.n_chunks))})
        assert torch.equal(buf, state.buffer)
        wait_until(lambda: srv.offer_idle(0.0), 5, "the pull's connection closed")
        assert not srv.offer_idle(60.0)          # read just now: not to be replaced yet
        synced = [Peer(0, "127.0.0.1", srv.port, sync_token)]
        assert fetch_manifest(synced, 2, other.manifest().digest()).version == 2
        with pytest.raises(TransferError):       # a stranger's token reaches neither
            fetch_manifest([Peer(0, "127.0.0.1", srv.port, new_token())], 3,
                           state.manifest().digest())
        srv.withdraw_offer()
        with pytest.raises(TransferError):
            fetch_manifest(standby, 3, state.manifest().digest())
        assert srv.rejected >= 2
    finally:
        srv.close()


def test_an_incomplete_pull_hands_back_what_arrived(state, servers):
    """The only holder of some chunks is gone: the error carries the chunks that did arrive
    (checked), so a standby's next attempt need not move them again."""
    srvs, peers = servers(2)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    half = man.n_chunks // 2
    holders = {c: {0} if c < half else {1} for c in range(man.n_chunks)}
    srvs[1].close()
    with pytest.raises(IncompletePull) as caught:
        pull(man, peers, {0: list(range(half)), 1: list(range(half, man.n_chunks))},
             holders=holders, timeout_s=2)
    e = caught.value
    assert e.received == frozenset(range(half)) and e.manifest == man
    assert torch.equal(e.buffer[:half * CHUNK], state.buffer[:half * CHUNK])


def test_a_pulling_standby_keeps_the_offer_until_its_pull_ends(state):
    """A source whose share is done stays connected while another source still sends: if that
    one fails, its chunks come from here, so the offer must not be replaced meanwhile."""
    import threading
    import time

    srvs = [ShardServer("127.0.0.1") for _ in range(2)]
    try:
        token = new_token()
        for srv in srvs:
            srv.offer(3, state.manifest().to_bytes(), memoryview(state.buffer.numpy()), token)
        peers = [Peer(i, "127.0.0.1", s.port, token) for i, s in enumerate(srvs)]
        man = fetch_manifest(peers, 3, state.manifest().digest())
        slow = threading.Event()
        real = srvs[1]._serve_requests

        def stalls(sock, peer):                # source 1 accepts, then sends nothing for a while
            slow.wait(3)
            return real(sock, peer)

        srvs[1]._serve_requests = stalls
        done = []
        holders = {c: {0, 1} if c == 0 else {1} for c in range(man.n_chunks)}   # no stealing
        t = threading.Thread(target=lambda: done.append(
            pull(man, peers, {0: [0], 1: list(range(1, man.n_chunks))}, holders=holders,
                 timeout_s=10)))
        t.start()
        time.sleep(1.5)                        # source 0 finished its chunk long ago
        assert not srvs[0].offer_idle(0.0)     # ... but the pull still holds it
        slow.set()
        t.join(20)
        assert done and torch.equal(done[0][0], state.buffer)
        wait_until(lambda: srvs[0].offer_idle(0.0), 5, "the pull's connections closed")
    finally:
        for srv in srvs:
            srv.close()


def test_a_pull_that_lost_a_chunks_last_holder_ends_at_once(state, servers):
    """Once a chunk has no live holder the attempt cannot complete: it ends without waiting for
    a slow source's share (a version the survivors are leaving), and stops that source's
    connection so the next attempt has the link."""
    import threading
    import time

    srvs, peers = servers(2)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    release, served = threading.Event(), []
    real = srvs[0]._serve_requests

    def stalls(sock, peer):                  # source 0 accepts, then sends nothing for a while
        release.wait(10)
        served.append(True)
        return real(sock, peer)

    srvs[0]._serve_requests = stalls
    half = man.n_chunks // 2
    holders = {c: {0} if c < half else {1} for c in range(man.n_chunks)}
    srvs[1].close()                          # the only holder of the upper half is gone
    t0 = time.monotonic()
    try:
        with pytest.raises(IncompletePull, match=f"{man.n_chunks} chunk"):
            pull(man, peers, {0: list(range(half)), 1: list(range(half, man.n_chunks))},
                 holders=holders, timeout_s=10)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
    wait_until(lambda: not any(t.name == "chaos-pull-0" for t in threading.enumerate()), 5,
               "the slow source's worker stopped")


def test_a_chunk_only_one_source_holds_is_asked_for_first(state, servers):
    """Rarest first: the chunk only source 0 holds (as a sync target's BatchNorm statistics,
    laid out last) goes in its first request, so its death after one answer strands nothing."""
    srvs, peers = servers(2)
    man = fetch_manifest(peers, 3, state.manifest().digest())
    real = srvs[0]._serve_requests

    class DiesAfterOneAnswer:                 # the source's socket: one answer, then it dies
        def __init__(self, sock):
            self._sock, self._sends = sock, 0

        def __getattr__(self, name):
            return getattr(self._sock, name)

        def sendall(self, data):
            # the first answer is a header and its bytes; it dies when it would send the
            # second (by then it read the client's second request, so that one is not cut)
            if self._sends == 2:
                self._sock.shutdown(socket.SHUT_RDWR)
                raise OSError("the source died")
            self._sock.sendall(data)
            self._sends += 1

    srvs[0]._serve_requests = lambda sock, peer: real(DiesAfterOneAnswer(sock), peer)
    last = man.n_chunks - 1
    holders = {c: {0, 1} for c in range(last)}
    holders[last] = {0}
    assigned = {0: list(range(last // 2)) + [last], 1: list(range(last // 2, last))}
    buf, stats = pull(man, peers, assigned, holders=holders, batch_bytes=4 * CHUNK, timeout_s=5)
    assert torch.equal(buf, state.buffer)
    assert 0 in stats.failed_sources and stats.bytes_by_source[1] > (last - last // 2) * CHUNK
