"""The checkpoint strategy's stores: a directory, and a storage host's HTTP server (on loopback),
including what the server does with peers that misbehave."""

import os
import socket
import threading
import time

import pytest

from chaos_hvd.errors import ConfigError, TransferError
from chaos_hvd.state.checkpoint_store import DirectoryStore, HttpStore, open_store
from chaos_hvd.state.config import ChaosConfig
from testbed import storage

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def server(tmp_path):
    srv = storage.StorageServer(("127.0.0.1", 0), str(tmp_path / "store"), TOKEN,
                                max_file_bytes=1 << 20, max_total_bytes=3 << 19,
                                idle_timeout_s=0.5)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv, token=TOKEN):
    return f"http://127.0.0.1:{srv.server_address[1]}/{token}"


def test_directory_store_round_trip_and_bounds(tmp_path):
    store = open_store(str(tmp_path / "ckpt"), 5)
    assert isinstance(store, DirectoryStore)
    store.put("chaos-v3.bin", bytes(range(256)) * 4)
    buf = bytearray(1024)
    store.read_into("chaos-v3.bin", memoryview(buf))
    assert bytes(buf) == bytes(range(256)) * 4
    with pytest.raises(TransferError, match="size differs"):
        store.read_into("chaos-v3.bin", memoryview(bytearray(10)))
    with pytest.raises(TransferError, match="larger than"):
        store.read_small("chaos-v3.bin", 100)
    store.delete("chaos-v3.bin")
    store.delete("chaos-v3.bin")        # already gone: fine
    with pytest.raises(TransferError):
        store.read_small("chaos-v3.bin", 100)
    with pytest.raises(ValueError, match="not a checkpoint name"):
        store.put("../escape", b"x")


def test_http_store_round_trip(server):
    store = open_store(url(server), 5)
    assert isinstance(store, HttpStore) and TOKEN not in repr(store)
    data = bytes(range(256)) * 3000           # 768 KB: several blocks each way
    store.put("chaos-v1.bin", memoryview(data))
    store.put("chaos-v1.json", b'{"a": 1}')
    buf = bytearray(len(data))
    store.read_into("chaos-v1.bin", memoryview(buf))
    assert bytes(buf) == data
    assert store.read_small("chaos-v1.json", 100) == b'{"a": 1}'
    with pytest.raises(TransferError, match="over 10 bytes"):
        store.read_into("chaos-v1.bin", memoryview(bytearray(10)))
    with pytest.raises(TransferError, match="over 100 bytes"):
        store.read_small("chaos-v1.bin", 100)
    store.delete("chaos-v1.bin")
    with pytest.raises(TransferError, match="HTTP 404"):
        store.read_small("chaos-v1.bin", 100)


def test_http_server_refuses_wrong_token_names_and_sizes(server):
    with pytest.raises(TransferError, match="HTTP 404"):
        open_store(url(server, "f" * 32), 5).put("x.bin", b"1")
    assert os.listdir(server.root) == []
    store = open_store(url(server), 5)
    for size in ((1 << 20) + 1, 8 << 20):    # the refusal is read, not a reset mid-upload
        with pytest.raises(TransferError, match="HTTP 413"):
            store.put("big.bin", bytes(size))
    store.put("a.bin", bytes(1 << 20))
    with pytest.raises(TransferError, match="HTTP 507"):   # 1 MiB + 1 MiB > 1.5 MiB in all
        store.put("b.bin", bytes(1 << 20))
    store.put("a.bin", bytes(1 << 19))       # replacing a file counts its new size only
    for raw in (b"PUT /%s/../x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx" % TOKEN.encode(),
                b"PUT /%s/x HTTP/1.1\r\n\r\n" % TOKEN.encode(),
                b"PUT /%s/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n" % TOKEN.encode(),
                b"GET /%s HTTP/1.1\r\n\r\n" % TOKEN.encode(),
                b"BREW /x HTTP/1.1\r\n\r\n"):
        with socket.create_connection(server.server_address, timeout=5) as s:
            s.sendall(raw)
            status = s.recv(100).split(b" ")[1]
        assert status in (b"404", b"411", b"501"), raw
    assert sorted(os.listdir(server.root)) == ["a.bin"]


def test_http_server_drops_stalled_and_surplus_peers(server):
    # a PUT that stops mid-body: dropped after the idle timeout, no partial file left
    with socket.create_connection(server.server_address, timeout=5) as s:
        s.sendall(b"PUT /%s/stall.bin HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc" % TOKEN.encode())
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 3
    assert os.listdir(server.root) == []
    # more idle connections than the cap: the surplus is closed at once, the store still serves
    held = [socket.create_connection(server.server_address, timeout=5)
            for _ in range(storage.MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        with socket.create_connection(server.server_address, timeout=5) as extra:
            assert extra.recv(10) == b""
    finally:
        for s in held:
            s.close()
    open_store(url(server), 5).put("after.bin", b"ok")


def test_store_locations_are_checked():
    for bad in ("https://h:1/x", "http://h:99999/x", "http:///x", "http://h:1/x?y=1"):
        with pytest.raises(ConfigError):
            open_store(bad, 5)
    with pytest.raises(ConfigError, match="only http"):
        ChaosConfig.from_env({"CHAOS_SYNC_STRATEGY": "checkpoint",
                              "CHAOS_CHECKPOINT_DIR": "ftp://h/x"})
    with pytest.raises(TransferError):     # nothing listens there
        open_store("http://127.0.0.1:9/t", 2).put("x.bin", b"1")
