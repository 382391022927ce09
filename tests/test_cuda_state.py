"""CUDA tensors through the whole state path: capture (pinned buffer), serve, pull, restore on GPU.

Skipped without a GPU (CI has none); run on a GPU machine with
``PYTHONPATH=. python -m pytest -q tests/test_cuda_state.py``.
"""

import pytest
import torch

from chaos_hvd.state.snapshot import Snapshot
from chaos_hvd.state.state_tree import TrackedObjects
from chaos_hvd.state.transfer import Peer, ShardServer, fetch_manifest, new_token, pull

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16),
                                torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 30 * 30, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def train(model, opt, sched, steps):
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, device="cuda")
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def tracked(model, opt, sched, extra):
    objs = {"model": model, "optimizer": opt, "scheduler": sched, "epoch": extra}
    values = dict(objs)
    return TrackedObjects(objs, values.__getitem__, values.__setitem__, rng=True), values


def test_cuda_state_roundtrip_over_two_sources():
    model, opt, sched = make(0)
    train(model, opt, sched, 3)
    src, _ = tracked(model, opt, sched, 7)
    snap = Snapshot(chunk_bytes=64 * 1024)
    snap.capture(src.capture(), version=5)
    assert snap.buffer.is_pinned(), "CUDA state should be staged in pinned host memory"
    cuda_rng = torch.cuda.get_rng_state()
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    expected_momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]

    # Training on after the commit must not change what was committed (no aliasing, copy finished).
    train(model, opt, sched, 1)
    assert not torch.equal(next(model.parameters()), expected["0.weight"])

    servers, peers = [], []
    try:
        for i in range(2):
            srv, token = ShardServer("127.0.0.1"), new_token()
            srv.publish(5, snap.manifest().to_bytes(), memoryview(snap.buffer.numpy()), token)
            servers.append(srv)
            peers.append(Peer(i, "127.0.0.1", srv.port, token))
        man = fetch_manifest(peers, 5, snap.manifest().digest())
        chunks = list(range(man.n_chunks))
        buf, stats = pull(man, peers, {0: chunks[::2], 1: chunks[1::2]})
        assert all(v > 0 for v in stats.bytes_by_source.values())
    finally:
        for srv in servers:
            srv.close()

    joiner_model, joiner_opt, joiner_sched = make(1)
    dst, values = tracked(joiner_model, joiner_opt, joiner_sched, 0)
    torch.cuda.manual_seed_all(123)
    dst.apply(Snapshot.from_manifest(man, buf).tree())

    for k, v in joiner_model.state_dict().items():
        assert v.is_cuda, k
        assert torch.equal(v, expected[k]), k
    for p, m in zip(joiner_model.parameters(), expected_momentum):
        got = joiner_opt.state[p]["momentum_buffer"]
        assert got.is_cuda and torch.equal(got, m)
    assert joiner_sched.state_dict()["last_epoch"] == 3
    assert joiner_opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert values["epoch"] == 7
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
