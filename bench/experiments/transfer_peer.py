"""One host's side of the transfer experiment, run inside a testbed host (``python -m
bench.experiments.transfer_peer source|joiner ...``) by :mod:`bench.experiments.transfer`.

``source``  builds a paper model's training state (torchvision-sized parameters and BatchNorm
            statistics, plus SGD momentum) from a fixed seed, so every source holds the same
            bytes; snapshots it; serves it with ChaosState's shard server; writes its
            ``RankInfo`` as JSON; serves until SIGTERM.
``joiner``  reads the sources' infos, plans with the shard scheduler over the given rates, pulls
            the whole state with ChaosState's pull client (every chunk checked against its
            digest) ``--reps`` times and prints one JSON line per pull.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import torch

from chaos_hvd.state import transfer
from chaos_hvd.state.config import BandwidthMap
from chaos_hvd.state.kinds import Algorithm
from chaos_hvd.state.roles import RankInfo, decide, plan_transfers
from chaos_hvd.state.snapshot import Snapshot
from examples.models import PAPER_MODELS

VERSION = 1


def training_state(model: str) -> dict:
    torch.manual_seed(0)
    m = PAPER_MODELS[model][0]()
    return {"model": m.state_dict(),
            "momentum": {n: p.detach() * 0.1 for n, p in m.named_parameters()}}


def source(args) -> None:
    snap = Snapshot(args.chunk_bytes)
    snap.capture(training_state(args.model), VERSION)
    manifest = snap.manifest()
    server = transfer.ShardServer(port=args.port)
    with open(args.token_file) as f:
        token = f.read().strip()
    server.publish(VERSION, manifest.to_bytes(), memoryview(snap.buffer.numpy()),
                   bytes.fromhex(token))
    info = RankInfo(rank=args.rank, host=args.addr, addr=args.addr, port=server.port,
                    version=VERSION, digest=manifest.digest(), size_bytes=manifest.size_bytes,
                    chunk_bytes=manifest.chunk_bytes, chunks=manifest.chunk_digests, token=token)
    with open(args.info + ".tmp", "w") as f:
        json.dump(info.to_json(), f)
    os.replace(args.info + ".tmp", args.info)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def joiner(args) -> None:
    infos = []
    for path in args.infos:
        with open(path) as f:
            infos.append(RankInfo.from_json(json.load(f)))
    me = max(i.rank for i in infos) + 1
    mine = RankInfo(rank=me, host=args.addr, addr=args.addr, port=0, version=0, digest="",
                    size_bytes=0, chunk_bytes=infos[0].chunk_bytes, chunks=(), token="00")
    everyone = infos + [mine]
    roles = decide(everyone)
    bandwidth = BandwidthMap.parse(args.bandwidth)
    peers = [transfer.Peer(i.rank, i.addr, i.port, bytes.fromhex(i.token)) for i in infos]
    for _ in range(args.reps):
        t0 = time.perf_counter()
        plan = plan_transfers(roles, everyone, bandwidth, Algorithm(args.algorithm), only=me)[me]
        t1 = time.perf_counter()
        manifest = transfer.fetch_manifest(peers, VERSION, roles.digest, args.timeout)
        _, stats = transfer.pull(manifest, peers, plan.assigned, timeout_s=args.timeout)
        t2 = time.perf_counter()
        print(json.dumps({"state_bytes": manifest.size_bytes, "plan_s": round(t1 - t0, 4),
                          "transfer_s": round(t2 - t1, 4),
                          "predicted_s": round(plan.predicted_makespan_s, 4),
                          "bound_s": round(plan.bound_s, 4),
                          "bytes_per_source": stats.bytes_by_source}), flush=True)
    # pull() returns once every chunk arrived, leaving a straggling source's thread to finish on
    # its own (as a training process would); a bench process leaves at once instead of letting
    # the interpreter's shutdown tear down threads that still hold torch buffers
    sys.stdout.flush()
    os._exit(0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("source")
    s.add_argument("--model", choices=list(PAPER_MODELS), required=True)
    s.add_argument("--rank", type=int, required=True)
    s.add_argument("--addr", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--chunk-bytes", type=int, default=256 * 1024)
    s.add_argument("--token-file", required=True)
    s.add_argument("--info", required=True, help="where to write this source's RankInfo JSON")
    j = sub.add_parser("joiner")
    j.add_argument("--addr", required=True)
    j.add_argument("--infos", nargs="+", required=True)
    j.add_argument("--bandwidth", default="", help="CHAOS_BANDWIDTH spec the plan uses")
    j.add_argument("--algorithm", default="optimal", choices=[a.value for a in Algorithm])
    j.add_argument("--reps", type=int, default=1)
    j.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    (source if args.role == "source" else joiner)(args)


if __name__ == "__main__":
    main()
