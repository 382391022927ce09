"""Check the shaper's netem path on a kernel that has sch_netem (root; no Mininet needed).

The development machine has no sch_netem, so the testbed's netem branch (HTB class + netem leaf,
changed in place at runtime) is checked here on any Linux host that has it: two network
namespaces joined by a veth pair, shaped with testbed.shaping exactly as the testbed does, then
measured from userspace (UDP round trips for delay and loss, a TCP stream for rate).
Exits 0 with a JSON line of configured vs measured; exits 3 if the kernel has no netem.
Usage: sudo python -m bench.check_netem
"""

import json
import os
import socket
import statistics
import sys
import time
from multiprocessing import Process, Queue

from pyroute2 import IPRoute, netns

from testbed.capabilities import probe
from testbed.shaping import InterfaceShaper
from testbed.topology import Direction

NS_A, NS_B = "ctbnmA", "ctbnmB"
IP_A, IP_B = "10.250.0.1", "10.250.0.2"


def setup():
    for ns in (NS_A, NS_B):
        if ns in netns.listnetns():
            netns.remove(ns)
        netns.create(ns)
    with IPRoute() as ipr:
        ipr.link("add", ifname="ctbnm-a", kind="veth", peer="ctbnm-b")
        ipr.link("set", index=ipr.link_lookup(ifname="ctbnm-a")[0], net_ns_fd=NS_A)
        ipr.link("set", index=ipr.link_lookup(ifname="ctbnm-b")[0], net_ns_fd=NS_B)
    for ns, name, ip in ((NS_A, "ctbnm-a", IP_A), (NS_B, "ctbnm-b", IP_B)):
        with IPRoute(netns=ns) as ipr:
            idx = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=idx, address=ip, prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def teardown():
    for ns in (NS_A, NS_B):
        if ns in netns.listnetns():
            netns.remove(ns)


def _server(ready: Queue):
    netns.setns(NS_B)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((IP_B, 9000))
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((IP_B, 9001))
    tcp.listen(1)
    ready.put(True)
    import select
    while True:
        r, _, _ = select.select([udp, tcp], [], [])
        if udp in r:
            data, addr = udp.recvfrom(2048)
            udp.sendto(data, addr)
        if tcp in r:
            conn, _ = tcp.accept()
            total = 0
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
            conn.sendall(str(total).encode())
            conn.close()


def _client(q: Queue, count: int, stream_bytes: int):
    netns.setns(NS_A)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    rtts, lost = [], 0
    for i in range(count):
        t = time.perf_counter()
        s.sendto(i.to_bytes(4, "big"), (IP_B, 9000))
        try:
            s.recvfrom(64)
            rtts.append((time.perf_counter() - t) * 1e3)
        except socket.timeout:
            lost += 1
    rate = None
    if stream_bytes:
        c = socket.create_connection((IP_B, 9001))
        buf = b"\0" * (1 << 16)
        t = time.perf_counter()
        sent = 0
        while sent < stream_bytes:
            c.sendall(buf)
            sent += len(buf)
        c.shutdown(socket.SHUT_WR)
        got = int(c.recv(64))
        rate = got * 8 / (time.perf_counter() - t)
    q.put({"rtt_ms": statistics.median(rtts) if rtts else None, "loss": lost / count,
           "rate_bps": rate})


def measure(count=50, stream_bytes=0):
    q = Queue()
    p = Process(target=_client, args=(q, count, stream_bytes))
    p.start()
    out = q.get(timeout=300)
    p.join()
    return out


def main() -> int:
    caps = probe()
    if not caps.netem:
        print(json.dumps({"check": "netem", "skipped": "this kernel has no sch_netem"}))
        return 3
    setup()
    ready = Queue()
    server = Process(target=_server, args=(ready,), daemon=True)
    server.start()
    ready.get(timeout=10)
    results = []
    try:
        with IPRoute(netns=NS_A) as ipr:
            shaper = InterfaceShaper(ipr, ipr.link_lookup(ifname="ctbnm-a")[0], native_netem=True)
            cases = [("rate 50Mbit + delay 20ms", Direction(rate_bps=50e6, delay_s=0.020), 4_000_000),
                     ("change: delay 40ms", Direction(rate_bps=50e6, delay_s=0.040), 0),
                     ("change: loss 20%", Direction(rate_bps=50e6, loss=0.20), 0),
                     ("change: rate 10Mbit, jitter", Direction(rate_bps=10e6, delay_s=0.01,
                                                              jitter_s=0.002), 1_500_000)]
            base = measure(20)["rtt_ms"]
            for label, d, nbytes in cases:
                t = time.perf_counter()
                shaper.apply(d)
                apply_ms = (time.perf_counter() - t) * 1e3
                m = measure(200 if d.loss else 40, nbytes)
                results.append({"case": label, "leaf": shaper.leaf.kind, "apply_ms": round(apply_ms, 2),
                                "configured": {"rate_mbit": d.rate_bps / 1e6, "delay_ms": d.delay_s * 1e3,
                                               "loss": d.loss},
                                "measured": {"rtt_ms": m["rtt_ms"], "loss": m["loss"],
                                             "rate_mbit": m["rate_bps"] and round(m["rate_bps"] / 1e6, 2)}})
                print(results[-1], flush=True)
    finally:
        server.terminate()
        teardown()
    print(json.dumps({"check": "netem", "kernel": os.uname().release, "base_rtt_ms": base,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
