"""Pure parts of failover: the world guard's decisions, the launcher's world status on the wire,
a standby's kept chunks, and the crash stress bench's statistics."""

import threading
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chaos_hvd.errors import IncompletePull, MalformedMessage, PeerMessageError, ServiceUnavailable
from chaos_hvd.join import wire
from chaos_hvd.state.snapshot import Snapshot
from chaos_hvd.state.standby_join import PartialPull
from chaos_hvd.state.world_guard import FORMED, FORMING, WorldGuard
from chaos_hvd.waiting import wait_until
from harness.crash_stress import Kill, percentile, summarize

SECRET = b"k" * 32
ASKING = 1


class FakeHorovod:
    """world/phase as Horovod reports them; aborts recorded."""

    def __init__(self):
        self.world, self.phase, self.aborted = 1, FORMED, []

    def world_and_phase(self):
        return self.world, self.phase

    def abort(self, world):
        self.aborted.append(world)
        return 3 if world == self.world else -1


def guard_with(hvd, dead, asked=None):
    recorded = []

    def dead_members():
        if asked is not None:
            asked.append((hvd.world, hvd.phase))
        return dead()

    return WorldGuard(hvd.world_and_phase, hvd.abort, dead_members,
                      lambda *a: recorded.append(a), poll_s=0.005), recorded


def test_a_forming_world_with_a_dead_member_is_aborted_once():
    hvd, asked = FakeHorovod(), []
    guard, recorded = guard_with(hvd, lambda: [("h2", 0)], asked)
    guard.settled(1)
    guard.start()
    hvd.world, hvd.phase = 2, ASKING          # waiting for a rank: the driver's business
    time.sleep(0.05)
    assert asked == [] and hvd.aborted == []
    hvd.phase = FORMING
    wait_until(lambda: hvd.aborted, 2, "the abort")
    time.sleep(0.05)
    assert hvd.aborted == [2] and recorded == [(2, FORMING, [("h2", 0)], 3)]
    guard.settled(3)


def test_no_abort_while_every_member_lives_nor_after_the_sync():
    hvd = FakeHorovod()
    dead: list = []
    guard, _ = guard_with(hvd, lambda: list(dead))
    guard.settled(1)
    guard.start()
    hvd.world, hvd.phase = 2, FORMED
    time.sleep(0.05)
    guard.settled(2)                          # the sync of world 2 completed
    dead.append(("h1", 0))                    # ... a later death is the crash watch's
    time.sleep(0.05)
    assert hvd.aborted == []


def test_the_settled_world_is_never_guarded_and_no_answer_is_no_abort():
    hvd = FakeHorovod()

    def unreachable():
        raise ServiceUnavailable("launcher busy")

    guard, _ = guard_with(hvd, unreachable)
    guard.settled(1)
    guard.start()
    hvd.phase = FORMING                       # still world 1: the one already synced
    time.sleep(0.05)
    hvd.world = 2
    time.sleep(0.05)
    assert hvd.aborted == []
    guard.settled(2)


def guards() -> int:
    return sum(t.name == "chaos-world-guard" for t in threading.enumerate())


def test_start_is_idempotent_and_settled_stops_the_thread():
    wait_until(lambda: guards() == 0, 2, "earlier tests' guards ended")
    hvd = FakeHorovod()
    guard, _ = guard_with(hvd, lambda: [])
    guard.start()
    guard.start()
    assert guards() == 1
    guard.settled(1)
    wait_until(lambda: guards() == 0, 2, "the guard's thread ended")


# ------------------------------------------------------------------------------ wire

def test_world_status_is_bound_to_the_nonce_and_signed():
    nonce = "ab" * 16
    data = wire.encode_world_status(SECRET, nonce, [("h1", 0), ("h0", 2)])
    assert wire.decode_world_status(SECRET, nonce, data) == [("h0", 2), ("h1", 0)]
    with pytest.raises(MalformedMessage):     # a reply to someone else's request (a replay)
        wire.decode_world_status(SECRET, "cd" * 16, data)
    with pytest.raises(PeerMessageError):     # not signed with the job secret
        wire.decode_world_status(b"x" * 32, nonce, data)


@pytest.mark.parametrize("nonce", ["", "AB" * 16, "ab" * 15, "zz" * 16, "ab" * 16 + "/x", 7])
def test_malformed_nonces_are_refused(nonce):
    with pytest.raises(MalformedMessage):
        wire.check_nonce(nonce)


@given(st.binary(max_size=300))
def test_garbage_world_status_is_a_typed_error(data):
    with pytest.raises(PeerMessageError):
        wire.decode_world_status(SECRET, "ab" * 16, data)


def test_a_signed_world_status_with_bad_slots_is_refused():
    nonce = "ab" * 16
    for dead in (["nohost"], [7], ["h:99999"], "h:1"):
        data = wire.sign(SECRET, {"nonce": nonce, "dead": dead})
        with pytest.raises(MalformedMessage):
            wire.decode_world_status(SECRET, nonce, data)


# ------------------------------------------------------------------------------ kept chunks

CHUNK = 1024


def snapshot(values, version=1):
    snap = Snapshot(chunk_bytes=CHUNK)
    snap.capture({"w": torch.tensor(values, dtype=torch.float32)}, version)
    return snap


def test_kept_chunks_count_as_held_only_while_their_bytes_are_intact():
    target = snapshot([float(i) for i in range(2048)], 5)      # 8 chunks of 1 KB
    own = snapshot([0.0] * 2048, 0)
    got = target.buffer.clone()
    e = IncompletePull("cut", target.manifest(), got, frozenset({0, 1, 2}))
    partial = PartialPull.after(e, frozenset({3}))
    got[3 * CHUNK] ^= 0xFF                    # chunk 3's bytes changed since: not held
    digests, held = partial.digests_over(own.manifest())
    assert held == {0, 1, 2}
    tm, om = target.manifest(), own.manifest()
    assert digests[:3] == list(tm.chunk_digests[:3])
    assert digests[3:] == list(om.chunk_digests[3:])
    base = partial.base(own.buffer, frozenset({0, 2}))
    assert torch.equal(base[:CHUNK], target.buffer[:CHUNK])
    assert torch.equal(base[CHUNK:2 * CHUNK], own.buffer[CHUNK:2 * CHUNK])
    assert torch.equal(base[2 * CHUNK:3 * CHUNK], target.buffer[2 * CHUNK:3 * CHUNK])


def test_kept_chunks_of_another_layout_are_ignored():
    target = snapshot([1.0] * 2048)
    own = snapshot([0.0] * 1024)              # another size: nothing carries over
    e = IncompletePull("cut", target.manifest(), target.buffer.clone(), frozenset({0}))
    digests, held = PartialPull.after(e, frozenset()).digests_over(own.manifest())
    assert held == frozenset() and digests == list(own.manifest().chunk_digests)


# ------------------------------------------------------------------------------ stress stats

@given(st.lists(st.floats(0, 100), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_a_member_and_monotonic(values, q):
    p = percentile(values, q)
    assert p in values and percentile(values, 100) == max(values)
    assert percentile(values, 0) == min(values) and p <= percentile(values, min(100, q + 10))


def kill(n, point, recovery, compound=False):
    return Kill(n=n, point=point, victim_rank=0, victim_host="h", victim_pid=1, size=4,
                delay_s=0.0, recovery_s=recovery, compound=compound)


def test_summary_counts_waits_and_keeps_compound_kills_apart():
    kills = [kill(1, "mid-step", 0.5), kill(2, "commit", 0.7), kill(3, "before-reset", 2.5, True),
             kill(4, "reset", 20.0), kill(5, "reset", None)]
    s = summarize(kills)
    assert s["kills"] == 5 and s["recovered"] == 4 and s["gloo_timeout_waits"] == 2
    assert s["simple_kills"] == 4 and s["max_s"] == 20.0 and s["median_s"] == 0.7
    assert s["compound"]["kills"] == 1 and s["per_point"]["reset"]["kills"] == 2
