"""Horovod elastic training of a ResNet-18-sized CNN on CIFAR-10-shaped data, with chaos_hvd.

The only change from a plain Horovod elastic script is the line marked ``# <- the one-line change``.
Run it (on one machine, two "hosts" = localhost and 127.0.0.1, as Horovod's own tests do):

    echo localhost:2 > /tmp/hosts; printf '#!/bin/sh\\ncat /tmp/hosts\\n' > /tmp/discover.sh
    chmod +x /tmp/discover.sh
    horovodrun -np 2 --min-np 1 --max-np 4 --host-discovery-script /tmp/discover.sh \\
        --network-interface lo --gloo-timeout-seconds 60 python examples/train_elastic.py
    # later: echo -e 'localhost:2\\n127.0.0.1:2' > /tmp/hosts   -> two joiners pull the state

Data is deterministic and learnable (a class-dependent pattern plus noise), so every run is
reproducible and the loss falls. ``--state torch`` runs Horovod's own TorchState for comparison.
With ``CHAOS_EVENT_LOG`` set, steps, commits, resumes and the final digest are logged as JSON lines
next to the plugin's own sync events.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import torch
import torch.nn.functional as F

import horovod.torch as hvd

import chaos_hvd
from chaos_hvd import events

from models import SmallCNN, resnet18  # examples/models.py, beside this script


def make_data(n: int, num_classes: int = 10, seed: int = 1234):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(num_classes, 3, 32, 32, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = patterns[labels] + 1.5 * torch.randn(n, 3, 32, 32, generator=g)
    return torch.utils.data.TensorDataset(images, labels)


def params_digest(model: torch.nn.Module) -> str:
    """Digest of the parameters (BatchNorm statistics are per rank by design, as in Horovod)."""
    h = hashlib.blake2b(digest_size=16)
    for t in model.parameters():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Deadline(Exception):
    """Every rank stops at the same commit: rank 0 says when the deadline has passed."""


def check_deadline(deadline: float | None) -> None:
    if deadline is None:
        return
    late = torch.tensor([1 if time.time() > deadline else 0])
    if hvd.broadcast(late, root_rank=0, name="train_elastic.deadline").item():
        raise Deadline()


class TimedTorchState(hvd.elastic.TorchState):
    """Horovod's TorchState with each sync timed (a `torch_synced` record: the baseline's sync
    time in the benches) and, with --same-init, no start-up broadcast while no rank has trained:
    every rank built the same state, and over slow links that broadcast alone takes minutes of a
    bench that measures joins. Every later sync (a join, a restore) is Horovod's own."""

    log: events.EventLog | None = None
    skip_untrained = False

    def sync(self):
        t = time.perf_counter()
        skip = False
        if self.skip_untrained:
            trained = hvd.allreduce(torch.tensor([float(self.step)]), op=hvd.Max,
                                    name="train_elastic.trained")
            skip = trained.item() == 0
        if not skip:
            super().sync()
        if self.log:
            self.log.write(events.TorchSynced(rank=hvd.rank(), size=hvd.size(), step=self.step,
                                              seconds=time.perf_counter() - t, skipped=skip))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["resnet18", "medium", "small"], default="resnet18",
                    help="resnet18: 11.7 M params (93.5 MB state with momentum); medium: 0.27 M; small: 3 k")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--commit-every", type=int, default=2, help="commit every N batches")
    ap.add_argument("--step-sleep", type=float, default=0.0,
                    help="seconds to sleep per step (stretches short test runs)")
    ap.add_argument("--state", choices=["chaos", "torch"], default="chaos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline-unix", type=float, default=None,
                    help="stop at the first commit after this time (rank 0's clock decides)")
    ap.add_argument("--sabotage-joiner", action="store_true",
                    help="tests only: a joiner nudges one weight after its first sync, like a "
                         "broken sync would (the CI checks must catch it)")
    ap.add_argument("--same-init", action="store_true",
                    help="same initial weights on every rank (benches: the first sync moves "
                         "nothing; with --state torch it is skipped while no rank has trained)")
    ap.add_argument("--fp16-allreduce", action="store_true",
                    help="all-reduce gradients as float16 (Horovod's Compression.fp16): half "
                         "the bytes per step on slow links")
    args = ap.parse_args()

    hvd.init()
    # different inits per rank unless --same-init: the first sync must fix that
    torch.manual_seed(args.seed + (0 if args.same_init else hvd.rank()))
    torch.set_num_threads(1)
    log = events.EventLog(os.environ.get("CHAOS_EVENT_LOG"), source="train_elastic")
    host = os.environ.get("HOROVOD_HOSTNAME")

    dataset = make_data(args.samples)
    model = {"resnet18": lambda: resnet18(10), "medium": lambda: SmallCNN(10, width=32, hidden=512),
             "small": lambda: SmallCNN(10)}[args.model]()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                         compression=compression)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.8)
    sampler = hvd.elastic.ElasticSampler(dataset, shuffle=True, seed=args.seed)

    TimedTorchState.log, TimedTorchState.skip_untrained = log, args.same_init
    StateClass = chaos_hvd.ChaosState if args.state == "chaos" else TimedTorchState
    state = StateClass(model, optimizer, lr_scheduler=scheduler,  # <- the one-line change
                       train_sampler=sampler, epoch=0, step=0)

    first_resume = [True]

    @hvd.elastic.run
    def train(state):
        log.write(events.Resumed(rank=hvd.rank(), size=hvd.size(), host=host, step=state.step,
                                 epoch=state.epoch, lr=state.lr_scheduler.get_last_lr()[0],
                                 digest=params_digest(state.model)))
        if args.sabotage_joiner and first_resume[0] and state.step > 0:
            with torch.no_grad():
                next(state.model.parameters()).view(-1)[0] += 1.0
        first_resume[0] = False
        while state.epoch < args.epochs:
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                                 sampler=state.train_sampler)
            state.model.train()
            for images, labels in loader:
                state.optimizer.zero_grad()
                loss = F.cross_entropy(state.model(images), labels)
                loss.backward()
                state.optimizer.step()
                state.lr_scheduler.step()
                state.train_sampler.record_batch(0, args.batch_size)
                state.step += 1
                log.write(events.Step(rank=hvd.rank(), size=hvd.size(), step=state.step,
                                      epoch=state.epoch, loss=loss.item(), host=host,
                                      lr=state.lr_scheduler.get_last_lr()[0]))
                if args.step_sleep:
                    time.sleep(args.step_sleep)
                if state.step % args.commit_every == 0:
                    commit(state)
                    check_deadline(args.deadline_unix)
            state.epoch += 1
            state.train_sampler.set_epoch(state.epoch)
            commit(state)

    def commit(state):
        log.write(events.Commit(rank=hvd.rank(), size=hvd.size(), step=state.step))
        t = time.perf_counter()
        state.commit()
        log.write(events.Committed(rank=hvd.rank(), size=hvd.size(), step=state.step,
                                   seconds=time.perf_counter() - t))

    t0 = time.time()
    try:
        train(state)
    except Deadline:
        pass
    log.write(events.Final(rank=hvd.rank(), size=hvd.size(), step=state.step,
                           digest=params_digest(state.model), seconds=time.time() - t0))
    if hvd.rank() == 0:
        print(f"done: {state.step} steps, world size {hvd.size()}, digest {params_digest(state.model)}")


if __name__ == "__main__":
    main()
