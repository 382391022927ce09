"""Real sockets on loopback: parallel pull, corruption, dead sources, authentication."""

import socket
import struct

import pytest
import torch

from chaos_hvd.state import transfer
from chaos_hvd.errors import TransferError
from chaos_hvd.state.snapshot import Snapshot
from chaos_hvd.state.transfer import Peer, ShardServer, fetch_manifest, new_token, pull, sign

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
        return transfer.recv_frame(s, limit=1 << 20)


def test_forged_replayed_and_oversized_requests_are_rejected(state, servers):
    srvs, peers = servers(1)
    import json
    forged = sign(b"k" * 32, {"op": "range", "version": 3, "start": 0, "end": 10})
    assert raw_request(peers[0].port, json.dumps(forged).encode())["ok"] is False
    good = sign(peers[0].token, {"op": "manifest", "version": 3, "start": 0, "end": 0})
    assert raw_request(peers[0].port, json.dumps(good).encode())["ok"] is True
    assert raw_request(peers[0].port, json.dumps(good).encode())["ok"] is False  # replay
    stale = sign(peers[0].token, {"op": "manifest", "version": 2, "start": 0, "end": 0})
    assert "stale" in raw_request(peers[0].port, json.dumps(stale).encode())["error"]
    big = sign(peers[0].token, {"op": "range", "version": 3, "start": 0, "end": 10 ** 9})
    assert raw_request(peers[0].port, json.dumps(big).encode())["ok"] is False
    assert raw_request(peers[0].port, b"x" * 5000)["ok"] is False  # header over the size limit
    assert raw_request(peers[0].port, b"\x80\x04not json")["ok"] is False
    assert srvs[0].rejected == 6
