"""Commit cost: ChaosState.save() vs Horovod's TorchState.save() on the same ResNet-18 + SGD state.

Both measured side by side in one process (no hvd.init needed: save() is local). Prints the figures,
then one JSON line. Usage: python -m bench.bench_commit [--repeats 10]
"""

import argparse
import json
import statistics
import time

import horovod.torch as hvd
import torch

from chaos_hvd.state.adapter import ChaosState
from examples.models import resnet18


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = resnet18()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()  # creates momentum buffers: the state is 93.5 MB like docs/baseline-measurements.md's
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    chaos = ChaosState(model, opt, lr_scheduler=sched, epoch=0, batch=0)
    torch_state = hvd.elastic.TorchState(model, opt, lr_scheduler=sched, epoch=0, batch=0)
    times = {"chaos": [], "torch": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name, state in (("chaos", chaos), ("torch", torch_state)):
            t = time.perf_counter()
            state.save()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    size = chaos._replica.snapshot.size_bytes
    print(f"state {size / 1e6:.1f} MB; median of {args.repeats}: ChaosState.save {med['chaos'] * 1e3:.1f} ms, "
          f"TorchState.save {med['torch'] * 1e3:.1f} ms, ratio torch/chaos {med['torch'] / med['chaos']:.2f}")
    print(json.dumps({"bench": "commit", "state_bytes": size, "chaos_save_s": med["chaos"],
                      "torch_save_s": med["torch"], "torch_over_chaos": med["torch"] / med["chaos"],
                      "repeats": args.repeats}))


if __name__ == "__main__":
    main()
