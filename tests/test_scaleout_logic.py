"""The launcher's pure parts: signed scale-out messages (hostile input) and the standby book."""

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos_hvd.errors import MalformedMessage, OversizedMessage, PeerMessageError
from chaos_hvd.join import wire
from chaos_hvd.scaleout.lost_slots import LostSlotWatch, blocking_lost
from chaos_hvd.scaleout.standbys import Phase, StandbyTable

KEY = bytes(range(32))
OTHER = bytes(32)


def record(rank=0, version=4, size=1000, chunk=256, **kw):
    n = -(-size // chunk)
    fields = dict(rank=rank, host="h1", addr="10.0.0.1", port=4000, version=version,
                  digest="ab" * 16, size_bytes=size, chunk_bytes=chunk,
                  chunks=tuple(f"{i:032x}" for i in range(n)))
    fields.update(kw)
    return wire.SourceRecord(**fields)


def test_source_record_round_trip_and_forgery():
    blob = wire.encode_source(KEY, record())
    assert wire.decode_source(KEY, blob) == record()
    with pytest.raises(PeerMessageError):
        wire.decode_source(OTHER, blob)
    tampered = json.loads(blob)
    tampered["port"] = 4001
    with pytest.raises(PeerMessageError):
        wire.decode_source(KEY, json.dumps(tampered).encode())


@pytest.mark.parametrize("bad", [
    dict(port=0), dict(port=70000), dict(version=-1), dict(rank=True), dict(host="a/b"),
    dict(host="x" * 300), dict(addr="a b"), dict(chunks=("x",)), dict(chunk_bytes=0),
    dict(digest="d" * 200), dict(version=2 ** 63),
])
def test_source_record_refuses_out_of_range_fields(bad):
    with pytest.raises(MalformedMessage):
        wire.encode_source(KEY, record(**bad))


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_garbage_is_a_typed_error(data):
    with pytest.raises(PeerMessageError):
        wire.decode_source(KEY, data)
    try:
        got = wire.decode_source_list(KEY, data)
    except PeerMessageError:
        pass
    else:
        assert got.records == []


def test_oversized_and_deep_messages():
    with pytest.raises(OversizedMessage):
        wire.decode_source(KEY, b"{" + b" " * (wire.MAX_RECORD_BYTES + 1) + b"}")
    with pytest.raises(PeerMessageError):
        wire.decode_source(KEY, b"[" * 100000)
    with pytest.raises(PeerMessageError):
        wire.decode_source_list(KEY, b"[" * 100000)


def test_one_forged_record_costs_only_itself():
    good = wire.encode_source(KEY, record(rank=0)).decode()
    forged = wire.encode_source(OTHER, record(rank=1)).decode()
    got = wire.decode_source_list(KEY, wire.encode_source_list(
        [good.encode(), forged.encode()], 3))
    assert [r.rank for r in got.records] == [0] and len(got.rejected) == 1 and got.world == 3
    got = wire.decode_source_list(KEY, json.dumps({"world": 2, "records": [good, 7]}).encode())
    assert len(got.records) == 1 and len(got.rejected) == 1
    for bad in ([good], {"world": -1, "records": []}, {"world": 2}, {"records": [], "world": "2"}):
        with pytest.raises(MalformedMessage):
            wire.decode_source_list(KEY, json.dumps(bad).encode())


def test_best_version_prefers_most_sources_then_newest():
    recs = [record(0, 8), record(1, 4), record(2, 4), record(3, 12)]
    assert [r.rank for r in wire.best_version(recs)] == [1, 2]
    assert [r.rank for r in wire.best_version([record(0, 4), record(1, 8)])] == [1]
    assert wire.best_version([]) == []


def test_ready_and_verdict_bind_slot_and_instance():
    body = wire.encode_ready(KEY, "h6", 0, "abc", 9)
    assert wire.decode_ready(KEY, "h6:0", body) == ("abc", 9)
    with pytest.raises(MalformedMessage):
        wire.decode_ready(KEY, "h6:1", body)
    with pytest.raises(MalformedMessage):
        wire.decode_ready(KEY, "h6", body)
    verdict = wire.encode_verdict(KEY, "h6", 0, "abc", "switch")
    assert wire.decode_verdict(KEY, "h6", 0, "abc", verdict) == "switch"
    with pytest.raises(MalformedMessage):   # replayed for a later standby of the same slot
        wire.decode_verdict(KEY, "h6", 0, "def", verdict)
    with pytest.raises(PeerMessageError):
        wire.decode_verdict(OTHER, "h6", 0, "abc", verdict)


@pytest.mark.parametrize("decode, fields", [
    (lambda b: wire.decode_verdict(KEY, "h6", 0, "abc", b),
     {"host": "h6", "slot": 0, "instance": "abc", "verdict": "maybe"}),
    (lambda b: wire.decode_verdict(KEY, "h6", 0, "abc", b),
     {"host": "h6", "slot": 0, "instance": "abc", "verdict": "switch", "extra": 1}),
    (lambda b: wire.decode_ready(KEY, "h6:0", b),
     {"host": "h6", "slot": 0, "instance": "", "version": 3}),
    (lambda b: wire.decode_ready(KEY, "h6:0", b),
     {"host": "h6", "slot": 0, "instance": "abc", "version": 1.5}),
    (lambda b: wire.decode_world_status(KEY, "0" * 32, b), {"nonce": "0" * 32, "dead": "h6:0"}),
    (lambda b: wire.decode_world_status(KEY, "0" * 32, b), {"nonce": "0" * 32, "dead": [7]}),
    (lambda b: wire.decode_source(KEY, b), {**msgspec.to_builtins(record()), "port": "1"}),
])
def test_authentic_messages_outside_their_schema_are_malformed(decode, fields):
    """Signed with the job's secret, so the MAC holds: the schema still refuses them."""
    with pytest.raises(MalformedMessage):
        decode(wire.sign(KEY, fields))


def test_secret_parsing():
    assert wire.secret_from_hex(KEY.hex()) == KEY
    for bad in (None, "", "zz", "00" * 8):
        assert wire.secret_from_hex(bad) is None
    assert wire.standby_token(KEY) != wire.standby_token(OTHER)


def test_standby_phases():
    t = StandbyTable(10.0)
    sb = t.start("h6", 0, "i1", now=0.0)
    assert t.held_back() == {"h6"}
    assert not t.mark_ready("h6", 0, "stale", 3, now=1.0)
    assert not t.mark_switching("h6", 0)            # not ready yet
    assert t.mark_ready("h6", 0, "i1", 3, now=1.0) and sb.phase == Phase.READY
    assert t.held_back() == set()
    with pytest.raises(ValueError):
        t.start("h6", 0, "i2", now=2.0)
    assert t.mark_switching("h6", 0) and t.mark_joined("h6", 0)
    assert t.drop("h6", 0, "late") is None          # joined: a worker now, not a standby
    t.start("h7", 0, "i3", now=0.0)
    assert [s.host for s in t.overdue(now=11.0)] == ["h7"]
    assert t.drop("h7", 0, "timeout") is not None and t.held_back() == {"h7"}
    assert t.forget_host("h7") == [] and t.held_back() == set()
    t.start("h7", 0, "i4", now=20.0)                # it came back: a fresh standby
    assert not t.mark_switching("h7", 0)            # still starting ...
    assert t.mark_switching("h7", 0, force=True)    # ... unless the job needs the slot now
    assert t.held_back() == set() and not t.overdue(now=100.0)


@given(st.lists(st.tuples(st.sampled_from(["start", "ready", "switch", "join", "drop", "forget"]),
                          st.sampled_from(["a", "b"]), st.integers(0, 1)), max_size=40))
def test_table_invariants_under_any_sequence(ops):
    t = StandbyTable(5.0)
    for i, (op, host, slot) in enumerate(ops):
        sb = t.get(host, slot)
        if op == "start":
            try:
                t.start(host, slot, f"i{i}", now=float(i))
            except ValueError:
                assert sb.phase in (Phase.STARTING, Phase.READY, Phase.SWITCHING)
        elif op == "ready" and sb:
            t.mark_ready(host, slot, sb.instance, 1, now=float(i))
        elif op == "switch":
            t.mark_switching(host, slot, force=i % 2 == 0)
        elif op == "join":
            t.mark_joined(host, slot)
        elif op == "drop":
            t.drop(host, slot, "x")
        elif op == "forget":
            switching = {x.key for x in t if x.host == host and x.phase == Phase.SWITCHING}
            stopped = t.forget_host(host)
            assert all(x.phase in (Phase.STARTING, Phase.READY) for x in stopped)
            # a switching standby is one of the job's workers already: never forgotten
            assert {x.key for x in t if x.host == host} == switching
        for s in t:
            held = s.host in t.held_back()
            if s.phase in (Phase.STARTING, Phase.DROPPED):
                assert held
            if s.phase == Phase.READY:
                assert s.ready_at is not None and s.version is not None


# --- lost slots: the launcher records a vanished host's worker at the reset barrier -------------

slots_st = st.sets(st.tuples(st.sampled_from(["h1", "h2", "h3"]), st.integers(0, 1)), max_size=6)


@given(slots_st, slots_st, st.dictionaries(st.sampled_from(["h1", "h2", "h3"]),
                                           st.integers(0, 2)))
def test_blocking_lost_only_when_all_missing_are_unlisted(assigned, recorded, discovered):
    recorded = recorded & assigned
    lost = blocking_lost(assigned, recorded, discovered)
    missing = assigned - recorded
    if lost:
        assert lost == missing and recorded            # the barrier waits for them alone
        assert all(discovered.get(h, 0) <= s for h, s in lost)   # discovery dropped each
    elif missing and recorded:
        assert any(discovered.get(h, 0) > s for h, s in missing)  # a listed worker is awaited


def test_lost_slot_watch_grace_once_per_reset():
    w = LostSlotWatch(0.5)
    assigned = {("h1", 0), ("h2", 0)}
    args = (assigned, {("h1", 0)}, {"h1": 1})
    assert w.observe(1, *args, now=0.0) == frozenset()
    assert w.observe(1, *args, now=0.4) == frozenset()
    assert w.observe(1, *args, now=0.6) == {("h2", 0)}
    assert w.observe(1, *args, now=0.9) == frozenset()      # once per reset
    # the host listed again before the grace ran out: nothing, and the clock starts over
    assert w.observe(2, *args, now=1.0) == frozenset()
    assert w.observe(2, assigned, {("h1", 0)}, {"h1": 1, "h2": 1}, now=1.2) == frozenset()
    assert w.observe(2, *args, now=1.3) == frozenset()
    assert w.observe(2, *args, now=1.9) == {("h2", 0)}
    # nobody at the barrier yet (no reset under way): never
    assert w.observe(3, assigned, set(), {"h1": 1}, now=9.0) == frozenset()
    assert w.observe(3, assigned, set(), {"h1": 1}, now=19.0) == frozenset()
    with pytest.raises(ValueError):
        LostSlotWatch(float("nan"))


@given(st.integers(0, 1 << 40), st.booleans())
def test_workers_offer_in_lockstep_and_right_after_a_sync(version, synced):
    """The offer decision depends only on what every rank shares (the committed version, and a
    sync since the last offer), so all ranks offer the same version; a sync never waits for
    the next multiple."""
    from chaos_hvd.state.standby_feed import OFFER_EVERY, offer_due
    assert offer_due(version, True)
    assert offer_due(version, synced) == offer_due(version + OFFER_EVERY, synced)
    assert offer_due(version * OFFER_EVERY, False)
