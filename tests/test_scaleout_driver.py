"""chaos-hvdrun's rendezvous scopes on a real Horovod rendezvous server, driven by a real
ChaosDriver (fixed-host discovery; no workers): hostile requests are refused and change nothing."""

import http.client

import pytest

pytest.importorskip("horovod.runner")

from horovod.runner.elastic.discovery import FixedHosts  # noqa: E402
from horovod.runner.http.http_server import RendezvousServer  # noqa: E402

from chaos_hvd.scaleout import http as chttp  # noqa: E402
from chaos_hvd.scaleout import wire  # noqa: E402
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
