"""State transfer to a joiner against the physical bound, for every model of the paper (root).

On ``topologies/baseline-6.yaml`` (five sources h1..h5 at 33-137 Mbit/s egress, the joiner h6),
each source host serves the model's training state (torchvision's parameter counts, BatchNorm
statistics, SGD momentum) with ChaosState's shard server; the joiner plans over the topology's
rates and pulls the whole state with ChaosState's pull client (``bench.experiments.transfer_peer``).
Bound = state size / min(joiner ingress, sum of source egress). Twice per model: the joiner's
ingress unshaped, then capped at ``CAP_MBIT`` (the plan is told the cap). No training runs
meanwhile, so the network, not the CPU, sets the pace.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile

import psutil
import yaml

from chaos_hvd.waiting import wait_until

from .stats import spread

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPOLOGY = os.path.join(REPO, "topologies", "baseline-6.yaml")
SOURCES, JOINER = ("h1", "h2", "h3", "h4", "h5"), "h6"
CAP_MBIT = 300.0
FULL = ("resnet18", "resnet50", "resnet101", "vgg11", "vgg16", "alexnet")
QUICK = ("resnet18",)
PEER = [sys.executable, "-m", "bench.experiments.transfer_peer"]


def run(quick: bool = False, reps: int = 3, timeout_s: float = 600) -> list[dict]:
    from examples.models import PAPER_MODELS
    from testbed.emulation import Testbed
    from testbed.topology import load_topology
    topo = load_topology(TOPOLOGY)
    out = tempfile.mkdtemp(prefix="transfer-")
    rows = []
    with Testbed(topo, out) as tb:
        rates = tb.write_bandwidth()
        capped = os.path.join(out, "bandwidth-capped.yaml")
        with open(rates) as f:
            doc = yaml.safe_load(f)
        doc.setdefault("ingress", {})[topo.node(JOINER).ip] = CAP_MBIT
        with open(capped, "w") as f:
            yaml.safe_dump(doc, f)
        for model in (QUICK if quick else FULL):
            sources = _start_sources(tb, model, out, timeout_s)
            try:
                infos = [path for _, path in sources]
                for cap, spec in ((None, rates), (CAP_MBIT, capped)):
                    if cap:
                        tb.net.degrade(f"{JOINER}-sw", "down", {"rate_bps": cap * 1e6})
                    pulls, cpu = _pull(tb, infos, spec, reps, out, f"{model}-{cap}", timeout_s)
                    if cap:
                        tb.net.restore(f"{JOINER}-sw")
                    rows.append(_row(model, PAPER_MODELS[model][1], cap, pulls, cpu))
                    print(f"transfer {model} ingress cap {cap}: {rows[-1]['x_bound']}x the bound",
                          file=sys.stderr, flush=True)
            finally:
                for proc, _ in sources:
                    proc.terminate()
                for proc, _ in sources:
                    proc.wait(30)
    return rows


def _start_sources(tb, model: str, out: str, timeout_s: float):
    token_file = os.path.join(out, f"{model}.token")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(16))
    sources = []
    for rank, host in enumerate(SOURCES):
        info = os.path.join(out, f"{model}-{host}.json")
        argv = PEER + ["source", "--model", model, "--rank", str(rank), "--addr",
                       tb.topo.node(host).ip, "--token-file", token_file, "--info", info]
        sources.append((tb.hosts.launch(host, argv, {}, os.path.join(out, f"{model}-{host}.log")),
                        info))
    wait_until(lambda: all(os.path.exists(i) for _, i in sources)
               or any(p.poll() is not None for p, _ in sources),
               timeout_s, f"{model} sources ready", interval_s=0.2)
    dead = [os.path.basename(info) for p, info in sources if p.poll() is not None]
    if dead:
        raise RuntimeError(f"{model}: source(s) {dead} exited; see {out}/{model}-*.log")
    return sources


def _pull(tb, infos: list[str], bandwidth: str, reps: int, out: str, tag: str,
          timeout_s: float) -> tuple[list[dict], float]:
    log = os.path.join(out, f"pull-{tag}.log")
    argv = PEER + ["joiner", "--addr", tb.topo.node(JOINER).ip, "--infos", *infos,
                   "--bandwidth", "@" + bandwidth, "--reps", str(reps)]
    psutil.cpu_percent()
    proc = tb.hosts.launch(JOINER, argv, {}, log)
    rc = proc.wait(timeout_s)
    cpu = psutil.cpu_percent()
    with open(log) as f:
        lines = [json.loads(x) for x in f if x.startswith("{")]
    if rc != 0 or len(lines) != reps:
        raise RuntimeError(f"joiner {tag} exited {rc} after {len(lines)} pulls; see {log}")
    return lines, cpu


def _row(model: str, params: int, cap: float | None, pulls: list[dict], cpu: float) -> dict:
    t = spread(p["transfer_s"] for p in pulls)
    bound = pulls[0]["bound_s"]
    used = {int(r) for p in pulls for r, n in p["bytes_per_source"].items() if n}
    return {"experiment": "transfer", "topology": "baseline-6", "model": model, "params": params,
            "state_bytes": pulls[0]["state_bytes"], "ingress_cap_mbit": cap,
            "transfer_s_median": round(t["median"], 3), "transfer_s_min": round(t["min"], 3),
            "transfer_s_max": round(t["max"], 3), "bound_s": round(bound, 3),
            "x_bound": round(t["median"] / bound, 3), "predicted_s": pulls[0]["predicted_s"],
            "sources_used": len(used), "cpu_percent": round(cpu), "reps": len(pulls)}
