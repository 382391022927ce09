"""chaos-hvdrun's rendezvous scopes on a real Horovod rendezvous server, driven by a real
ChaosDriver (fixed-host discovery; no workers): hostile requests are refused and change nothing."""

import http.client

import pytest

pytest.importorskip("horovod.runner")

from horovod.runner.elastic.discovery import FixedHosts  # noqa: E402
from horovod.runner.http.http_server import RendezvousServer  # noqa: E402

from chaos_hvd.join import http as chttp  # noqa: E402
from chaos_hvd.join import wire  # noqa: E402
from chaos_hvd.scaleout.driver import (ChaosDriver, StandbySettings,  # noqa: E402
                                       chaos_rendezvous_handler)

KEY = bytes(range(32))


@pytest.fixture
def served():
    rendezvous = RendezvousServer()
    driver = ChaosDriver(rendezvous, FixedHosts({"localhost": 2}), 1, 2,
                         standby=StandbySettings(KEY, 30.0))
    port = rendezvous.start(chaos_rendezvous_handler(driver))
    yield driver, port
    driver.stop()


def raw(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest(method, path)
    for k, v in (headers or {"Content-Length": str(len(body))}).items():
        conn.putheader(k, v)
    conn.endheaders()
    if body:
        conn.send(body)
    status = conn.getresponse().status
    conn.close()
    return status


def wire_status(port, request: str) -> int:
    """Send `request` as UTF-8 bytes (http.client refuses non-ASCII); the reply's status."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        reply = s.recv(4096)
    return int(reply.split()[1]) if reply else 0


def record(rank):
    return wire.SourceRecord(rank, "h1", "10.0.0.1", 4000, 8, "ab" * 16, 512, 256,
                             ("00" * 16, "11" * 16))


def test_sources_round_trip_and_hostile_puts(served):
    driver, port = served
    chttp.put("127.0.0.1", port, wire.SOURCE, "0", wire.encode_source(KEY, record(0)))
    forged = wire.encode_source(bytes(32), record(1))
    assert raw(port, "PUT", f"/{wire.SOURCE}/1", forged) == 400
    assert raw(port, "PUT", f"/{wire.SOURCE}/2", wire.encode_source(KEY, record(3))) == 400
    assert raw(port, "PUT", f"/{wire.SOURCE}/0", b"[" * 50000) == 400
    assert raw(port, "PUT", f"/{wire.SOURCE}/0", b"x",
               {"Content-Length": str(10 ** 12)}) == 400
    assert raw(port, "PUT", f"/{wire.SOURCE}/0", b"x", {"Content-Length": "-5"}) == 400
    assert raw(port, "PUT", f"/{wire.SOURCE}/0/extra", b"x") == 400
    body = chttp.get("127.0.0.1", port, wire.SOURCES, "all")
    got = wire.decode_source_list(KEY, body)
    assert [r.rank for r in got.records] == [0] and got.rejected == []


def test_ready_needs_a_known_standby_and_the_secret(served):
    driver, port = served
    assert raw(port, "PUT", f"/{wire.READY}/h9:0",
               wire.encode_ready(bytes(32), "h9", 0, "i", 3)) == 400
    assert raw(port, "PUT", f"/{wire.READY}/h9:0",
               wire.encode_ready(KEY, "h9", 1, "i", 3)) == 400
    # signed but for no standby the launcher started: accepted and ignored
    chttp.put("127.0.0.1", port, wire.READY, "h9:0", wire.encode_ready(KEY, "h9", 0, "i", 3))
    assert driver.verdict("h9", 0) is None
    assert chttp.get("127.0.0.1", port, wire.SWITCH, "h9:0") is None
    assert raw(port, "GET", f"/{wire.SWITCH}/not-a-slot") == 400
    assert chttp.get("127.0.0.1", port, wire.WANTED, "all") is None


def test_horovods_own_scopes_still_work(served):
    _, port = served
    assert raw(port, "PUT", "/myscope/k", b"v") == 200
    assert raw(port, "GET", "/myscope/k") == 200


def test_a_vanished_hosts_worker_is_recorded_for_and_its_session_ended(tmp_path):
    """A real ChaosDriver with two one-slot hosts whose workers hang like an ssh session to a
    host that lost power: h1's worker reaches the reset barrier, h2's never does. While
    discovery lists h2 the barrier keeps waiting (Horovod's behaviour); once it drops h2 the
    driver records h2 for it, the job re-forms at size 1, h2's session is ended through
    Horovod's host event, and a late record from h2's old worker is ignored."""
    import threading
    import time

    from chaos_hvd.events import SlotLost, read_events

    ended = {}

    def hung_worker(slot_info, stop_events):
        while not any(e.is_set() for e in stop_events):
            time.sleep(0.05)
        ended[slot_info.hostname] = time.monotonic()
        return 143, time.time()

    discovery = FixedHosts({"h1": 1, "h2": 1})
    log = tmp_path / "launcher.jsonl"
    rendezvous = RendezvousServer()
    driver = ChaosDriver(rendezvous, discovery, 1, 2,
                         standby=StandbySettings(KEY, 30.0, str(log)))
    rendezvous.start(chaos_rendezvous_handler(driver))
    try:
        driver.start(2, hung_worker)
        assert driver.world_size() == 2
        first = threading.Thread(target=driver.record_ready, args=("h1", 0), daemon=True)
        first.start()
        time.sleep(2.5)                     # h2 still listed: the barrier waits, as Horovod's
        assert first.is_alive() and driver.world_size() == 2 and not ended
        t0 = time.monotonic()
        discovery.set({"h1": 1})            # the agents agreed h2 is gone
        first.join(timeout=10)
        assert not first.is_alive(), "the reset barrier still waits for the vanished host"
        assert driver.world_size() == 1 and time.monotonic() - t0 < 5
        deadline = time.monotonic() + 5
        while "h2" not in ended and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "h2" in ended and "h1" not in ended
        late = threading.Thread(target=driver.record_ready, args=("h2", 0), daemon=True)
        late.start()
        late.join(timeout=3)
        assert not late.is_alive(), "the old worker's late record joined the next barrier"
        assert [(e.host, e.slot) for e in read_events(str(log), SlotLost)] == [("h2", 0)]
    finally:
        driver.stop()


def test_hostile_handshake_requests_get_a_clean_400(served, tmp_path, monkeypatch):
    """Each of these ended in a traceback and no reply, or served a file, before."""
    driver, port = served
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.txt").write_text("x")
    assert wire_status(port, f"GET /{wire.SWITCH}/h1:\u00b2 HTTP/1.0\r\n\r\n") == 400
    assert wire_status(port, f"PUT /{wire.READY}/h1:\u00b9 HTTP/1.0\r\n"
                             "Content-Length: 2\r\n\r\n{{}}") == 400
    for length in (None, "abc", str(2 ** 62), "\u0663", "-0"):
        header = "" if length is None else f"Content-Length: {length}\r\n"
        assert wire_status(port, f"PUT /junk/k HTTP/1.0\r\n{header}\r\n") == 400, length
    assert raw(port, "HEAD", "/secret.txt") == 400
    assert raw(port, "GET", "/secret.txt") == 400
    # a nonce that is not one
    assert raw(port, "GET", f"/{wire.WORLD}/zz") == 400
    # Horovod's own PUT still gets its body (read under our rule first)
    assert raw(port, "PUT", "/some_scope/k", b"value") == 200


def test_a_trickling_request_is_cut_at_the_deadline_and_connections_are_capped(served,
                                                                               monkeypatch):
    import socket
    import time

    from chaos_hvd.scaleout import driver as drv
    _, port = served
    monkeypatch.setattr(drv, "REQUEST_DEADLINE_S", 1.0)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"PUT /junk/k HTTP/1.0\r\nContent-Length: 100\r\n\r\n")
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 5:
            s.sendall(b"x")                    # a byte every 0.3 s: no read ever times out
            time.sleep(0.3)
        cut = False
    except OSError:
        cut = True
    s.close()
    assert cut and time.monotonic() - t0 < 3
    # one address cannot hold more than its share of the server
    monkeypatch.setattr(drv, "MAX_CONNECTIONS_PER_ADDR", 2)
    served_again = []
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", port))
    extra.settimeout(3)
    served_again.append(extra.recv(10))       # closed at once: b""
    assert served_again == [b""]
    for c in silent + [extra]:
        c.close()
