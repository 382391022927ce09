"""Snapshot, manifest and safe encoding."""

import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from chaos_hvd.state.encoding import decode, encode
from chaos_hvd.errors import CorruptShardError, SnapshotError, UnsupportedStateError
from examples.models import SmallCNN
from chaos_hvd.state.snapshot import Manifest, Snapshot
from chaos_hvd.state.state_tree import TrackedObjects


class Holder:
    pass


def tracked(objects, rng=False):
    h = Holder()
    for k, v in objects.items():
        setattr(h, k, v)
    return h, TrackedObjects(objects, lambda n: getattr(h, n), lambda n, v: setattr(h, n, v), rng=rng)


def trained(seed=0, steps=3):
    torch.manual_seed(seed)
    m = SmallCNN(10, width=8, hidden=32)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    for _ in range(steps):
        opt.zero_grad()
        m(torch.randn(4, 3, 32, 32)).sum().backward()
        opt.step()
        sched.step()
    return m, opt, sched


def test_full_state_roundtrip_is_bit_identical():
    m, opt, sched = trained()
    h, tr = tracked({"model": m, "optimizer": opt, "sched": sched, "epoch": 3,
                     "misc": {1: (2.5, float("nan")), "x": [b"ab", None, np.arange(3)]}}, rng=True)
    snap = Snapshot(chunk_bytes=1024)
    snap.capture(tr.capture(), version=7)
    man = Manifest.from_bytes(snap.manifest().to_bytes())
    assert man.digest() == snap.manifest().digest() and man.version == 7

    m2, opt2, sched2 = trained(seed=1, steps=1)
    h2, tr2 = tracked({"model": m2, "optimizer": opt2, "sched": sched2, "epoch": 0, "misc": None},
                      rng=True)
    random.random(), np.random.rand(), torch.rand(1)  # move the RNGs away
    tr2.apply(Snapshot.from_manifest(man, snap.buffer.clone()).tree())
    again = Snapshot(chunk_bytes=1024)
    again.capture(tr2.capture(), version=7)
    assert again.manifest().digest() == man.digest()
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == sched.last_epoch
    assert h2.epoch == 3 and h2.misc[1][0] == 2.5 and np.isnan(h2.misc[1][1])


def test_loaded_state_does_not_alias_the_snapshot():
    m, opt, sched = trained()
    h, tr = tracked({"model": m, "optimizer": opt, "t": torch.zeros(3)})
    snap = Snapshot()
    snap.capture(tr.capture(), 1)
    before = snap.manifest().digest()
    tr.apply(snap.tree())
    h.t.add_(1)  # in-place training updates must not reach the committed snapshot
    for s in opt.state.values():
        s["exp_avg"].add_(1)
    with torch.no_grad():
        next(m.parameters()).add_(1)
    assert Snapshot.from_manifest(snap.manifest(), snap.buffer).manifest().digest() == before
    tr.apply(snap.tree())
    assert float(h.t.sum()) == 0


def test_bn_buffers_are_laid_out_last():
    m, opt, _ = trained()
    _, tr = tracked({"model": m, "optimizer": opt})
    snap = Snapshot(chunk_bytes=64)
    snap.capture(tr.capture(), 1)
    d1 = snap.manifest().chunk_digests
    with torch.no_grad():
        m.features[1].running_mean.add_(1)  # per-rank BatchNorm statistics differ
    snap.capture(tr.capture(), 1)
    d2 = snap.manifest().chunk_digests
    differing = [i for i, (a, b) in enumerate(zip(d1, d2)) if a != b]
    assert differing and min(differing) >= len(d1) - 4


def test_corrupt_buffer_is_rejected():
    snap = Snapshot(chunk_bytes=256)
    snap.capture({"w": torch.arange(1000, dtype=torch.float32)}, 1)
    bad = snap.buffer.clone()
    bad[300] ^= 0xFF
    with pytest.raises(CorruptShardError):
        Snapshot.from_manifest(snap.manifest(), bad)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format="other/9"),
    lambda d: d.update(size_bytes=-1),
    lambda d: d["tensors"].append(["float32", [10 ** 9], 0, 4 * 10 ** 9]),
    lambda d: d["tensors"].__setitem__(0, ["pickle", [1], 0, 4]),
    lambda d: d.update(chunk_digests=[]),
    lambda d: d.pop("tree"),
])
def test_malformed_manifests_raise_snapshot_error(mutate):
    snap = Snapshot(chunk_bytes=256)
    snap.capture({"w": torch.ones(100)}, 1)
    doc = json.loads(snap.manifest().to_bytes())
    mutate(doc)
    with pytest.raises(SnapshotError):
        Manifest.from_bytes(json.dumps(doc).encode())


def test_not_json_manifest():
    with pytest.raises(SnapshotError):
        Manifest.from_bytes(b"\x80\x04pickle")


def test_unsupported_objects_fail_at_construction():
    class Custom:
        pass
    with pytest.raises(UnsupportedStateError, match="custom"):
        tracked({"custom": Custom()})
    with pytest.raises(UnsupportedStateError, match="lambda|function"):
        tracked({"fn": lambda: 1})


def test_layout_mismatch_is_reported():
    m, opt, _ = trained()
    _, tr = tracked({"model": m, "optimizer": opt})
    snap = Snapshot()
    snap.capture(tr.capture(), 1)
    _, other = tracked({"model": m})
    with pytest.raises(SnapshotError, match="layout"):
        other.apply(snap.tree())


@pytest.mark.parametrize("node", [{"$t": 5}, {"$float": "1e999"}, {"$dtype": "object"},
                                  {"$what": 1}, {"$bytes": "!!"}])
def test_decode_rejects_bad_tags(node):
    with pytest.raises(SnapshotError):
        decode(node, [])


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.one_of(st.text(), st.integers()), children, max_size=4),
    max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(plain)
def test_encoding_roundtrip(value):
    tensors = []
    doc = json.loads(json.dumps(encode(value, tensors)))
    assert decode(doc, tensors) == value


def test_holds_proves_a_load_exact_without_hashing():
    m, opt, sched = trained()
    h, tr = tracked({"model": m, "optimizer": opt, "sched": sched, "epoch": 3}, rng=True)
    snap = Snapshot(chunk_bytes=1024)
    snap.capture(tr.capture(), version=7)
    received = Snapshot.from_manifest(Manifest.from_bytes(snap.manifest().to_bytes()),
                                      snap.buffer.clone())
    m2, opt2, sched2 = trained(seed=1, steps=3)
    h2, tr2 = tracked({"model": m2, "optimizer": opt2, "sched": sched2, "epoch": 0}, rng=True)
    assert not received.holds(tr2.capture())
    tr2.apply(received.tree())
    assert received.holds(tr2.capture())
    with torch.no_grad():
        next(m2.parameters())[0].view(-1)[0] += 1e-7        # one value off: not held
    assert not received.holds(tr2.capture())
    h2.epoch = 4
    assert not received.holds(tr2.capture())


def test_replica_adopts_a_received_snapshot_only_when_the_load_was_exact():
    from chaos_hvd.state.config import ChaosConfig
    from chaos_hvd.state.replica import Replica
    m, opt, sched = trained()
    h, tr = tracked({"model": m, "optimizer": opt, "misc": [1.5, 2]})
    src = Snapshot(chunk_bytes=1024)
    src.capture(tr.capture(), version=5)
    received = Snapshot.from_manifest(src.manifest(), src.buffer.clone())
    m2, opt2, _ = trained(seed=2)
    h2, tr2 = tracked({"model": m2, "optimizer": opt2, "misc": None})
    replica = Replica(tr2, ChaosConfig())
    replica.capture(0)
    replica.load(received)
    assert replica.snapshot is received and replica.version == 5
    # an object whose load_state_dict drops a field: the load was not exact -> re-snapshotted
    class Lossy:
        def __init__(self, a, b):
            self.a, self.b = a, b

        def state_dict(self):
            return {"a": self.a, "b": self.b}

        def load_state_dict(self, sd):
            self.a = sd["a"]

    h3, tr3 = tracked({"model": m, "optimizer": opt, "misc": Lossy(1, 2)})
    src3 = Snapshot(chunk_bytes=1024)
    src3.capture(tr3.capture(), version=6)
    got = Snapshot.from_manifest(src3.manifest(), src3.buffer.clone())
    _, tr4 = tracked({"model": m2, "optimizer": opt2, "misc": Lossy(0, 0)})
    replica = Replica(tr4, ChaosConfig())
    replica.load(got)
    assert replica.snapshot is not got and replica.version == 6
    assert replica.snapshot.manifest().digest() != src3.manifest().digest()
