"""Testbed figures (root): set-up/tear-down time, runtime-change latency, emulation accuracy.

1. Set-up and tear-down of every shipped topology (network + one sshd per worker).
2. Latency of runtime changes (rate, delay, loss, link down/up, partition/heal): wall time of the
   call that applies them, p50/p99 over --repeat changes, and the first one of each kind apart
   (without netem, the first delay starts the NFQUEUE delayer). Netlink and nftables changes are in
   force when the call returns; the NFQUEUE delayer re-reads its table on SIGHUP right after.
3. Accuracy: iperf3 goodput at 10/100/1000 Mbit/s; ping RTT at 1/5/20/50/100 ms one-way delay on
   one link; loss at 1/5/10 %. Configured vs measured, side by side.

Ends with one JSON line. Usage: sudo .venv/bin/python -m bench.bench_testbed [--repeat 50]
"""

import argparse
import glob
import json
import os
import statistics
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from testbed import verify
from testbed.emulation import Testbed
from testbed.topology import load_topology, parse_topology

PAIR = """\
name: pair
nodes: [{name: a}, {name: b}, {name: c}]
switches: [s1]
links: [{a: a, b: s1}, {a: b, b: s1}, {a: c, b: s1}]
"""


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def setup_times():
    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "topologies", "*.yaml"))):
        topo = load_topology(path)
        tb = Testbed(topo, tempfile.mkdtemp(prefix="bench-tb-"))
        t = time.monotonic()
        tb.up()
        up_s = time.monotonic() - t
        t = time.monotonic()
        problems = tb.down()
        out[topo.name] = {"hosts": len(topo.nodes), "up_s": round(up_s, 3),
                          "down_s": round(time.monotonic() - t, 3), "clean": not problems}
    return out


def change_latency(repeat):
    tb = Testbed(parse_topology(PAIR, "pair"), tempfile.mkdtemp(prefix="bench-tb-"))
    tb.up(sshd=False)
    net = tb.net
    ops = {
        "rate": lambda i: net.degrade("a-s1", "both", {"rate_bps": (10 + i % 5) * 1e6}),
        "delay": lambda i: net.degrade("a-s1", "up", {"delay_s": 0.001 * (1 + i % 5)}),
        "loss": lambda i: net.degrade("a-s1", "up", {"loss": 0.01 * (1 + i % 5)}),
        "link_down": lambda i: net.set_link("b-s1", False),
        "link_up": lambda i: net.set_link("b-s1", True),
        "partition": lambda i: net.partition((("a",), ("b", "c"))),
        "heal": lambda i: net.heal(),
    }
    samples = {k: [] for k in ops}
    first = {}
    try:
        for name, op in ops.items():  # the first delay change starts the NFQUEUE delayer
            t = time.perf_counter()
            op(0)
            first[name] = round((time.perf_counter() - t) * 1e3, 2)
        for i in range(repeat):
            for name, op in ops.items():
                t = time.perf_counter()
                op(i)
                samples[name].append((time.perf_counter() - t) * 1e3)
    finally:
        tb.down()
    return {k: {"first_ms": first[k], "p50_ms": round(statistics.median(v), 2),
                "p99_ms": round(pct(v, 99), 2), "max_ms": round(max(v), 2)}
            for k, v in samples.items()}


def accuracy():
    tb = Testbed(parse_topology(PAIR, "pair"), tempfile.mkdtemp(prefix="bench-tb-"))
    tb.up(sshd=False)
    net, topo = tb.net, tb.topo
    ns = net.host_ns
    out = {"rate": [], "delay": [], "loss": [], "native_netem": tb.caps.netem}
    try:
        for mbit in (10, 100, 1000):
            net.degrade("a-s1", "up", {"rate_bps": mbit * 1e6})
            got = verify.iperf3_bps(ns["a"], ns["b"], topo.node("b").ip, 3)
            out["rate"].append({"configured_mbit": mbit, "measured_mbit": round(got / 1e6, 2),
                                "error": round(got / (mbit * 1e6) - 1, 4)})
        net.restore("a-s1")
        base = verify.ping_rtt_ms(ns["a"], topo.node("b").ip, 50, 0.01)["avg_ms"]
        out["base_rtt_ms"] = base
        for ms in (1, 5, 20, 50, 100):
            net.degrade("a-s1", "up", {"delay_s": ms / 1e3})
            r = verify.ping_rtt_ms(ns["a"], topo.node("b").ip, 30, max(0.01, ms / 1e3))
            out["delay"].append({"configured_ms": ms, "measured_rtt_ms": r["avg_ms"],
                                 "excess_ms": round(r["avg_ms"] - base - ms, 3),
                                 "mdev_ms": r["mdev_ms"]})
        net.restore("a-s1")
        for loss in (1, 5, 10):
            net.degrade("a-s1", "up", {"loss": loss / 100})
            r = verify.ping_rtt_ms(ns["a"], topo.node("b").ip, 2000, 0.002)
            out["loss"].append({"configured_pct": loss, "measured_pct": round(r["loss"] * 100, 2)})
        net.restore("a-s1")
    finally:
        tb.down()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    setup = setup_times()
    for name, r in setup.items():
        print(f"{name:22} {r['hosts']} hosts  up {r['up_s']:.2f} s  down {r['down_s']:.2f} s")
    lat = change_latency(args.repeat)
    for name, r in lat.items():
        print(f"change {name:10} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"(first {r['first_ms']:.2f} ms)")
    acc = accuracy()
    for r in acc["rate"]:
        print(f"rate  {r['configured_mbit']:5} Mbit/s -> {r['measured_mbit']:8.2f} ({r['error']:+.1%})")
    for r in acc["delay"]:
        print(f"delay {r['configured_ms']:5} ms one way -> RTT {r['measured_rtt_ms']} ms "
              f"(excess {r['excess_ms']:+.2f} ms over base {acc['base_rtt_ms']} ms)")
    for r in acc["loss"]:
        print(f"loss  {r['configured_pct']:5} % -> {r['measured_pct']} %")
    print(json.dumps({"bench": "testbed", "setup": setup, "change_latency": lat,
                      "accuracy": acc}))


if __name__ == "__main__":
    main()
