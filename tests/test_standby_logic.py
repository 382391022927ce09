"""Both sides of a join without Horovod: running workers' feeds offer their committed state and
publish where; a standby pulls it from all of them, reports ready and obeys the verdict. The
launcher is a stub rendezvous server (a dict behind HTTP on loopback); shard servers and pulls
are the real ones."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from chaos_hvd.errors import StandbyDroppedError
from chaos_hvd.events import EventLog
from chaos_hvd.join import wire
from chaos_hvd.state.config import ChaosConfig
from chaos_hvd.state.replica import Replica
from chaos_hvd.state.standby_feed import StandbyFeed
from chaos_hvd.state.standby_join import StandbyIdentity, StandbyJoin
from chaos_hvd.state.state_tree import TrackedObjects
from chaos_hvd.waiting import wait_until

SECRET = bytes(range(32))


class StubRendezvous:
    """Scopes as the launcher serves them: GET answers what was set (404 otherwise), PUT stores."""

    def __init__(self):
        self.data: dict[tuple[str, str], bytes] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _key(self):
                _, scope, key = self.path.split("/", 2)
                return scope, key

            def do_GET(self):
                body = stub.data.get(self._key())
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                n = int(self.headers["Content-Length"])
                stub.data[self._key()] = self.rfile.read(n)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = StubRendezvous()
    yield s
    s.close()


class Holder:
    pass


def replica(seed):
    h = Holder()
    torch.manual_seed(seed)
    h.w, h.step = torch.randn(300_000), 0
    tracked = TrackedObjects({"w": h.w, "step": 0}, lambda n: getattr(h, n),
                             lambda n, v: setattr(h, n, v))
    r = Replica(tracked, ChaosConfig(chunk_bytes=65536))
    r.capture(0)
    return h, r


def commit(h, r, feed, rank):
    h.w.add_(1.0)
    h.step += 1
    r.capture(r.version + 1)
    feed.after_commit(rank)


def sources(stub, world):
    blobs = [v for (scope, _), v in sorted(stub.data.items()) if scope == wire.SOURCE]
    stub.data[wire.SOURCES, "all"] = wire.encode_source_list(blobs, world)
    return blobs


def test_workers_offer_only_while_a_standby_is_wanted_then_a_standby_pulls_and_obeys(stub):
    workers = []
    for rank in range(2):
        h, r = replica(seed=0)
        r.server("127.0.0.1", on_reject=None)
        feed = StandbyFeed(r, SECRET, ("127.0.0.1", stub.port), "127.0.0.1", "127.0.0.1")
        workers.append((h, r, feed))
    try:
        for _ in range(4):                            # version 4: an offer version, but unwanted
            for rank, (h, r, feed) in enumerate(workers):
                commit(h, r, feed, rank)
        assert not [k for k in stub.data if k[0] == wire.SOURCE]
        stub.data[wire.WANTED, "all"] = b"1"
        wait_until(lambda: all(f._wanted.is_set() for _, _, f in workers), 5, "feeds saw it")
        for rank, (h, r, feed) in enumerate(workers):  # version 5: neither a multiple nor a sync
            commit(h, r, feed, rank)
        for _, _, feed in workers:
            feed.after_sync()
        for rank, (h, r, feed) in enumerate(workers):  # version 6: the first commit after a sync
            commit(h, r, feed, rank)
        expected = workers[0][0].w.clone()
        wait_until(lambda: len(sources(stub, 2)) == 2, 10, "both offers published")
        offered = [wire.decode_source(SECRET, b) for b in sources(stub, 2)]
        assert {o.version for o in offered} == {6} and {o.rank for o in offered} == {0, 1}
        for rank, (h, r, feed) in enumerate(workers):  # training goes on past the offer
            commit(h, r, feed, rank)

        sh, standby = replica(seed=1)
        who = StandbyIdentity("127.0.0.2", 0, "abc", ("127.0.0.1", stub.port), SECRET)
        join = StandbyJoin(who, standby, EventLog(None))
        assert join.prepare() == 6
        assert torch.equal(sh.w, expected)
        assert sh.step == 6
        join.report_ready(6)
        key = wire.slot_key("127.0.0.2", 0)
        assert wire.decode_ready(SECRET, key, stub.data[wire.READY, key]) == ("abc", 6)

        stub.data[wire.SWITCH, key] = wire.encode_verdict(SECRET, "127.0.0.2", 0, "other", "drop")
        done = []
        t = threading.Thread(target=lambda: done.append(join.await_verdict()), daemon=True)
        t.start()
        t.join(0.5)
        assert t.is_alive()                           # a verdict for another instance: ignored
        stub.data[wire.SWITCH, key] = wire.encode_verdict(SECRET, "127.0.0.2", 0, "abc", "switch")
        t.join(5)
        assert done == [None]
        stub.data[wire.SWITCH, key] = wire.encode_verdict(SECRET, "127.0.0.2", 0, "abc", "drop")
        with pytest.raises(StandbyDroppedError):
            join.await_verdict()
    finally:
        for _, r, feed in workers:
            feed.close()
            r.existing_server.close()


def test_a_forged_source_record_costs_only_itself(stub):
    h, r = replica(seed=0)
    r.server("127.0.0.1", on_reject=None)
    feed = StandbyFeed(r, SECRET, ("127.0.0.1", stub.port), "127.0.0.1", "127.0.0.1")
    try:
        stub.data[wire.WANTED, "all"] = b"1"
        wait_until(lambda: feed._wanted.is_set(), 5, "the feed saw it")
        for _ in range(4):
            commit(h, r, feed, 0)
        wait_until(lambda: len(sources(stub, 1)) == 1, 10, "the offer published")
        good = sources(stub, 1)[0]
        forged = wire.encode_source(bytes(32), wire.decode_source(SECRET, good))
        stub.data[wire.SOURCES, "all"] = wire.encode_source_list([forged, good], 1)
        got = wire.decode_source_list(SECRET, stub.data[wire.SOURCES, "all"])
        assert len(got.records) == 1 and len(got.rejected) == 1
        sh, standby = replica(seed=1)
        who = StandbyIdentity("127.0.0.2", 0, "abc", ("127.0.0.1", stub.port), SECRET)
        assert StandbyJoin(who, standby, EventLog(None)).prepare() == 4
        assert torch.equal(sh.w, h.w)
    finally:
        feed.close()
        r.existing_server.close()
