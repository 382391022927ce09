"""Wire format of the cluster agents: forged, replayed, stale, oversized and malformed messages are
rejected with a typed error before the protocol sees them; anything that passes is safe to deliver."""

import copy
import json
import time

import pytest
from hypothesis import given, settings, strategies as st

from chaos_hvd.cluster import wire
from chaos_hvd.errors import (ForgedMessage, MalformedMessage, OversizedMessage,
                              PeerMessageError, ReplayedMessage)
from chaos_hvd.cluster.protocol import Member, View, link

SECRET = b"0123456789abcdef-cluster"
VIEW = View(3, frozenset({"a", "b", "c"}), frozenset({link("a", "b"), link("b", "c")}),
            frozenset({("a", 2), ("c", 1)})).to_msg()

VALID = [
    {"type": "heartbeat", "epoch": 3},
    {"type": "heartbeat", "epoch": 3, "lease": True},
    {"type": "heartbeat", "epoch": 3, "back": False},
    {"type": "join"},
    {"type": "join", "slots": 4},
    {"type": "changes", "changes": [["add", "d"], ["link_down", "a", "b"]]},
    {"type": "changes", "changes": [["add", "d", 2], ["slots", "b", 8]]},
    {"type": "prepare", "epoch": 4, "ballot": [1, "b"]},
    {"type": "promise", "epoch": 4, "ballot": [1, "b"], "accepted": None},
    {"type": "promise", "epoch": 4, "ballot": [2, "b"],
     "accepted": {"ballot": [1, "a"], "view": VIEW}},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": VIEW},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": VIEW, "adopted": True},
    {"type": "accept", "epoch": 4, "ballot": [0, "a"], "view": VIEW, "notify": ["c"]},
    {"type": "accepted", "epoch": 4, "ballot": [1, "b"]},
    {"type": "commit", "view": VIEW},
    {"type": "nack", "epoch": 4, "promised": [-1, ""]},
    {"type": "ping", "t": 5},
    {"type": "pong", "echo": 5},
    {"type": "metrics", "links": [["a", "b", 80.5, 1.2, 1.7e9]], "resources": {"cpu_pct": 3.0}},
]


def sealed(body, src="b", dst="a", seq=None, secret=SECRET):
    return wire.seal(secret, src, dst, time.time_ns() if seq is None else seq, body)


def test_view_round_trip_uses_index_pairs():
    v = View(7, frozenset({"x", "y", "z"}), frozenset({link("z", "x")}), frozenset({("y", 4)}))
    msg = v.to_msg()
    assert msg["links"] == [[0, 2]] and msg["slots"] == [[1, 4]]
    assert View.from_msg(json.loads(json.dumps(msg))) == v
    assert View.from_msg({k: msg[k] for k in ("epoch", "members", "links")}).slots == frozenset()


@pytest.mark.parametrize("body", VALID, ids=[b["type"] for b in VALID])
def test_valid_messages_open(body):
    src, got = wire.open_envelope(SECRET, "a", sealed(body), wire.ReplayGuard(), time.time_ns())
    assert (src, got) == ("b", body)


def test_forged_wrong_secret_tampered_or_redirected():
    g = wire.ReplayGuard()
    with pytest.raises(ForgedMessage):
        wire.open_envelope(SECRET, "a", sealed({"type": "join"}, secret=b"x" * 24), g,
                           time.time_ns())
    data = sealed({"type": "changes", "changes": [["add", "d"]]})
    altered = data.replace(b'"add","d"', b'"remove","c"')       # altered in flight
    assert altered != data
    with pytest.raises(ForgedMessage):
        wire.open_envelope(SECRET, "a", altered, g, time.time_ns())
    with pytest.raises(ForgedMessage):                   # authentic, but for someone else
        wire.open_envelope(SECRET, "c", sealed({"type": "join"}), g, time.time_ns())
    assert g.last == {}                                  # nothing forged advanced the guard


def test_a_fan_out_is_sealed_once_for_every_receiver_it_lists():
    data = sealed({"type": "commit", "view": VIEW}, dst=["a", "c"])
    for me in ("a", "c"):
        assert wire.open_envelope(SECRET, me, data, wire.ReplayGuard(), time.time_ns())[0] == "b"
    with pytest.raises(ForgedMessage):                   # not among the receivers
        wire.open_envelope(SECRET, "d", data, wire.ReplayGuard(), time.time_ns())
    for bad in ([], ["a", "c d"], ["a", 5], ["a"] * (wire.MAX_MEMBERS + 1)):
        with pytest.raises(MalformedMessage):
            wire.open_envelope(SECRET, "a", sealed({"type": "join"}, dst=bad), wire.ReplayGuard(),
                               time.time_ns())


def test_replayed_and_out_of_window():
    g = wire.ReplayGuard(window_s=30)
    data = sealed({"type": "join"})
    wire.open_envelope(SECRET, "a", data, g, time.time_ns())
    with pytest.raises(ReplayedMessage):
        wire.open_envelope(SECRET, "a", data, g, time.time_ns())
    old = sealed({"type": "join"}, seq=time.time_ns() - 60 * 10**9)
    with pytest.raises(ReplayedMessage):                 # a capture replayed to a fresh receiver
        wire.open_envelope(SECRET, "a", old, wire.ReplayGuard(30), time.time_ns())


def test_seq_clock_strictly_increases():
    c = wire.SeqClock()
    seqs = [c.next(100) for _ in range(5)]
    assert seqs == sorted(set(seqs)) and seqs[0] == 100


def test_oversized():
    with pytest.raises(OversizedMessage):
        wire.open_envelope(SECRET, "a", b" " * (wire.MAX_DATAGRAM + 1), wire.ReplayGuard(),
                           time.time_ns())
    huge = {"type": "changes", "changes": [["add", "n%05d" % i] for i in range(4000)]}
    with pytest.raises(OversizedMessage):
        sealed(huge)


BAD_BODIES = [
    {"type": "heartbeat"},
    {"type": "heartbeat", "epoch": "3"},
    {"type": "heartbeat", "epoch": True},
    {"type": "heartbeat", "epoch": 3, "lease": 1},
    {"type": "heartbeat", "epoch": 3, "back": "no"},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": VIEW, "adopted": 1},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": VIEW, "notify": "c"},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": VIEW, "notify": ["c d"]},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": VIEW, "notify": ["c"] * 1025},
    {"type": "heartbeat", "epoch": 3, "extra": 1},
    {"type": "changes", "changes": []},
    {"type": "changes", "changes": [["explode", "a"]]},
    {"type": "changes", "changes": [["link_up", "a"]]},
    {"type": "changes", "changes": [["add", "bad id with spaces"]]},
    {"type": "changes", "changes": [["add", "d", 0]]},
    {"type": "changes", "changes": [["add", "d", True]]},
    {"type": "changes", "changes": [["slots", "d"]]},
    {"type": "changes", "changes": [["slots", "d", wire.MAX_SLOTS + 1]]},
    {"type": "changes", "changes": [["remove", "d", 2]]},
    {"type": "join", "slots": "2"},
    {"type": "join", "slots": 0},
    {"type": "commit", "view": {**VIEW, "slots": [[3, 1]]}},
    {"type": "commit", "view": {**VIEW, "slots": [[0, 1], [0, 2]]}},
    {"type": "commit", "view": {**VIEW, "slots": [[0, 1.5]]}},
    {"type": "commit", "view": {**VIEW, "slots": {"a": 1}}},
    {"type": "prepare", "epoch": 4, "ballot": [1]},
    {"type": "promise", "epoch": 4, "ballot": [1, "b"], "accepted": {"view": VIEW}},
    {"type": "accept", "epoch": 4, "ballot": [1, "b"], "view": {**VIEW, "links": [[0, 9]]}},
    {"type": "commit", "view": {**VIEW, "members": ["a", "a", "b"]}},
    {"type": "commit", "view": {**VIEW, "epoch": -1}},
    {"type": "metrics", "links": [["a", "b", -5, None, 1.0]], "resources": {}},
    {"type": "metrics", "links": [], "resources": {"cpu": "high"}},
    {"type": "__reduce__"},
    {"type": "probe", "direction": "to_me", "seconds": 60},
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_bodies(body):
    with pytest.raises(MalformedMessage):
        wire.open_envelope(SECRET, "a", sealed(body), wire.ReplayGuard(), time.time_ns())


@pytest.mark.parametrize("data", [b"\x80\x04\x95 pickle", b"[1,2]", b"chv1", b"chv0" + b"x" * 40])
def test_not_our_datagrams(data):
    with pytest.raises(MalformedMessage):
        wire.open_envelope(SECRET, "a", data, wire.ReplayGuard(), time.time_ns())


@pytest.mark.parametrize("payload", [b"[1,2]", b"{", b"\x80\x04\x95", b'{"src":"b","dst":"a"}',
                                     b'{"src":"b c","dst":"a","seq":1,"body":{}}',
                                     b'{"src":"b","dst":"a","seq":"1","body":{}}',
                                     b'{"src":"b","dst":"a","seq":1,"body":[]}'])
def test_malformed_envelopes_even_when_authentic(payload):
    with pytest.raises(MalformedMessage):
        wire.open_envelope(SECRET, "a", wire.seal_payload(SECRET, payload), wire.ReplayGuard(),
                           time.time_ns())


def test_forged_bytes_never_reach_the_parser():
    junk = wire.MAGIC + b"\0" * 32 + b"\x80\x04\x95 not json, not parsed"
    with pytest.raises(ForgedMessage):
        wire.open_envelope(SECRET, "a", junk, wire.ReplayGuard(), time.time_ns())


def test_stale_epochs():
    assert wire.stale_reason({"type": "accept", "epoch": 3, "ballot": [1, "a"], "view": VIEW}, 3)
    assert wire.stale_reason({"type": "commit", "view": VIEW}, 4)
    assert wire.stale_reason({"type": "accepted", "epoch": 5, "ballot": [1, "a"]}, 4) is None
    assert wire.stale_reason({"type": "accepted", "epoch": 3, "ballot": [1, "a"]}, 4)
    # a late reply of the round that made the current view: normal, the protocol ignores it
    assert wire.stale_reason({"type": "accepted", "epoch": 4, "ballot": [1, "a"]}, 4) is None
    # old heartbeats and prepares are answered with the current view (catch-up), not dropped
    assert wire.stale_reason({"type": "heartbeat", "epoch": 1}, 4) is None
    assert wire.stale_reason({"type": "prepare", "epoch": 2, "ballot": [1, "a"]}, 4) is None


# --- property: whatever passes validation can be delivered to the state machine without error

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(allow_nan=False),
                     st.text(max_size=5), st.sampled_from(["a", "b", "c", "zz"]))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["epoch", "ballot", "view", "members", "links", "lease", "changes", "accepted",
         "slots", "back", "adopted"]),
        inner, max_size=4)), max_leaves=12)


def _mutations(body):
    """Paths in a message, for replacing one value at a time."""
    def walk(obj, path):
        yield path
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, path + [k])
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from walk(v, path + [i])
    return [p for p in walk(body, []) if p]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fuzzed_bodies_are_rejected_or_safe(body, data):
    body = copy.deepcopy(body)
    paths = _mutations(body)
    path = data.draw(st.sampled_from(paths))
    target = body
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = data.draw(_json)
    try:
        wire.validate_body(body)
    except MalformedMessage:
        return
    if body["type"] in wire.PROTOCOL_TYPES:
        view = View.from_msg(VIEW)
        for me in ("a", "b"):
            Member(me, view).deliver("c", copy.deepcopy(body), 1.0)   # must not raise


def test_errors_are_typed():
    for cls in (ForgedMessage, ReplayedMessage, OversizedMessage, MalformedMessage):
        assert issubclass(cls, PeerMessageError) and cls.reason != PeerMessageError.reason
