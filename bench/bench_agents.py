"""Cluster agents for real: 8 ``chaos-hvd agent`` processes on loopback (no root needed).

Figures:
* handling latency, from the event's arrival at an agent to the new view being installed there
  (the agents' own ``handled_ms``): scale-in (an agent announces it leaves), scale-out (a
  joiner's request at the coordinator), link-down (a monitor observation injected through the
  local API, as the ping monitor would report it) and link-up (reported by the ping monitor
  itself when it sees pongs again) -- p50 / p99 over the repetitions;
* failure detection vs heartbeat interval: SIGKILL an agent (a member, then the coordinator) and
  time the first suspicion and the installed view without it;
* floors measured in the same run: a UDP fan-out round trip to 7 bare Python processes, and the
  datagrams of one member-observed view change between 8 of them (no parsing, no MAC).

    python -m bench.bench_agents [--reps 20] [--out DIR]

Ends with one JSON line. Runs on 2 shared cores next to 8 Python processes, so it measures
this implementation in Python, not the protocol's floor (see bench_protocol_sim.py for that).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from chaos_hvd import events as ev
from chaos_hvd.cluster.client import request
from harness.local_cluster import LocalCluster


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


def summary(xs):
    return {"n": len(xs), "p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99),
            "max_ms": round(max(xs), 3) if xs else None}


def handled(c: LocalCluster, since_t: float, key: str, agent: str | None = None) -> list[float]:
    return [e.handled_ms[key] for e in c.events(ev.Install)
            if e.t_unix >= since_t and key in e.handled_ms and (agent is None or e.agent == agent)]


def full(c: LocalCluster, nodes: list[str]) -> bool:
    n = len(nodes)
    views = [c.view(x) for x in nodes]
    return all(set(v["members"]) == set(nodes) and len(v["links"]) == n * (n - 1) // 2
               and v["can_train"] for v in views) and len({v["epoch"] for v in views}) == 1


def latency_run(workdir: str, reps: int) -> dict:
    args = ["--probe-seconds", "0", "--ping", "0.1", "--link-down", "0.4", "--link-up", "0.2"]
    out = {"scale_in": [], "scale_out": [], "link_down": [], "link_up": []}
    with LocalCluster(workdir, 8, args) as c:
        c.wait(lambda: full(c, c.ids), 20, "8 agents with a full view")
        coord = min(c.ids)
        others = [x for x in c.ids if x != coord]
        for i in range(reps):
            # scale-in: a member leaves (announced by its own agent), then comes back
            node = others[i % len(others)]
            t = time.time()
            request(c.socket(node), {"op": "leave"})
            c.procs[node].wait(10)
            rest = [x for x in c.ids if x != node]
            c.wait_members(rest, set(rest))
            out["scale_in"] += handled(c, t, f"leave {node}", node)
            t = time.time()
            c.start(node, seeds=rest)
            # the records first: polling 8 views wakes 8 agents, so only once the join is in
            c.wait(lambda: handled(c, t, f"add {node}", coord), 10, "join installed")
            c.wait(lambda: full(c, c.ids), 10, "rejoined")
            out["scale_out"] += handled(c, t, f"add {node}", coord)
            # link down observed at a member (forwarded to the coordinator) or at the coordinator
            a = c.ids[i % 8]
            b = c.ids[(i + 3) % 8]
            lo, hi = sorted([a, b])
            t = time.time()
            request(c.socket(a), {"op": "observe", "change": ["link_down", lo, hi]})
            c.wait(lambda: handled(c, t, f"link_down {lo} {hi}", a), 5, "link_down installed")
            out["link_down"] += handled(c, t, f"link_down {lo} {hi}", a)
            # the ping monitors still get pongs: they report the link up again themselves
            c.wait(lambda: handled(c, t, f"link_up {lo} {hi}"), 5, "link_up installed")
            c.wait(lambda: full(c, c.ids), 5, "full view again")
            out["link_up"] += handled(c, t, f"link_up {lo} {hi}")[:1]
        status = {x: request(c.socket(x), {"op": "status"}) for x in c.ids}
    # the agents' own ping -> pong round trip (each agent's moving average per peer): two hops
    # between these processes, as a member-observed change needs four (to the coordinator,
    # accept, accepted, commit)
    rtts = [r for s in status.values() for r in s["rtt_ms"].values() if r is not None]
    return {k: summary(v) for k, v in out.items()} | {
        "rejected_total": sum(s["counters"]["rejected"] for s in status.values()),
        "ping_rtt_ms": summary(rtts)}


_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(65536); s.sendto(d, a)
"""


def udp_floor(peers: int = 7, reps: int = 300, stop=None, gap_s: float = 0.005) -> dict:
    """Context for the latency figures: one UDP datagram to each of 7 Python processes and all
    replies back, nothing else -- the cost of one fan-out round trip on this machine, sampled
    every `gap_s`. Close samples find the CPUs awake; samples as far apart as the bench's view
    changes find them idle, and on a VM waking an idle vCPU costs a few hundred microseconds per
    hop. With `stop` (a threading.Event), samples every 50 ms until it is set instead of `reps`
    times (to measure beside a run, under the same CPU load)."""
    import socket
    import subprocess
    procs = [subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
             for _ in range(peers)]
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        rtts = []
        while (len(rtts) < reps) if stop is None else not stop.is_set():
            t = time.perf_counter()
            for port in ports:
                s.sendto(b"x" * 200, ("127.0.0.1", port))
            for _ in ports:
                s.recvfrom(65536)
            rtts.append((time.perf_counter() - t) * 1e3)
            time.sleep(gap_s if stop is None else 0.05)
        return {"peers": peers, **summary(rtts)}
    finally:
        for p in procs:
            p.kill()
            p.wait()


_PATTERN_NODE = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
ports = [int(x) for x in sys.stdin.readline().split()]
me, bench = int(sys.argv[1]), int(sys.argv[2])
coord, quorum = ports[0], len(ports) // 2 + 1
heard = t0 = 0
while True:
    d, _ = s.recvfrom(256)
    k, origin = d[:1], int(d[1:])
    if k == b"o":                                   # observed here: forward to the coordinator
        t0, heard = time.monotonic(), 0
        s.sendto(b"c%d" % me, ("127.0.0.1", coord))
    elif k == b"c":                                 # coordinator: accept to every other
        heard = 1                                   # member, the observer first, then its own
        for p in [ports[origin]] + [p for p in ports[1:] if p != ports[origin]]:
            s.sendto(b"a%d" % origin, ("127.0.0.1", p))
        s.sendto(b"A%d" % origin, ("127.0.0.1", ports[origin]))     # accepted to the observer
    elif k == b"a":                                 # acceptor: accepted to coordinator + observer
        s.sendto(b"A%d" % origin, ("127.0.0.1", coord))
        if origin != me:
            s.sendto(b"A%d" % origin, ("127.0.0.1", ports[origin]))
    if k in (b"a", b"A") and (k == b"A" or origin == me):
        heard += 1
        if heard == quorum and me == origin:        # the observer learnt it: report
            s.sendto(b"%.9f" % (time.monotonic() - t0), ("127.0.0.1", bench))
        elif heard == quorum and me == 0:           # the coordinator commits to everyone
            for p in ports[1:]:
                s.sendto(b"m%d" % origin, ("127.0.0.1", p))
"""


def view_change_floor(n: int = 8, reps: int = 100, gap_s: float = 0.1) -> dict:
    """The floor under the member-observed figures: `n` bare Python processes exchanging the
    datagrams of one view change as the agents do (observer -> coordinator, accept to the
    other members, accepted back to the coordinator and the observer -- the coordinator's own
    too --, commit to all) and nothing else: no parsing, no MAC, no event loop. Timed like
    `handled_ms`: from the observation's arrival at the observer to the quorum of accepteds
    there; one every `gap_s`, as sparse as the bench's events."""
    import socket
    import subprocess
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.settimeout(5.0)
    procs = [subprocess.Popen([sys.executable, "-c", _PATTERN_NODE, str(i),
                               str(b.getsockname()[1])], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(n)]
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        for p in procs:
            p.stdin.write(" ".join(map(str, ports)) + "\n")
            p.stdin.flush()
        lat = []
        for r in range(reps):
            observer = 1 + r % (n - 1)
            b.sendto(b"o%d" % observer, ("127.0.0.1", ports[observer]))
            lat.append(float(b.recvfrom(64)[0]) * 1e3)
            time.sleep(gap_s)
        return {"agents": n, **summary(lat)}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def detection_run(workdir: str, hb: float) -> dict:
    lease, suspect = 4 * hb, 10 * hb
    args = ["--heartbeat", str(hb), "--lease", str(lease), "--suspect", str(suspect),
            "--propose-timeout", str(3 * hb), "--retry", str(2.5 * hb), "--probe-seconds", "0",
            "--ping", "0.2", "--link-down", str(max(0.6, 2 * suspect)), "--link-up", "0.2"]
    rows = []
    with LocalCluster(workdir, 8, args) as c:
        c.wait_members(c.ids, set(c.ids), 20)
        alive = list(c.ids)
        for victim_kind in ("member", "member", "member", "coordinator"):
            time.sleep(5 * hb)
            victim = min(alive) if victim_kind == "coordinator" else sorted(alive)[-1]
            killed = c.kill(victim)
            alive.remove(victim)
            c.wait_members(alive, set(alive), 10 + suspect * 3)
            sus = [e.t_unix for e in c.events(ev.Suspect) if e.node == victim
                   and e.t_unix >= killed]
            inst = [e.t_unix for e in c.events(ev.Install) if victim in e.removed
                    and e.t_unix >= killed]
            rows.append({"victim": victim_kind, "detect_s": round(min(sus) - killed, 3),
                         "view_s": round(min(inst) - killed, 3)})
    return {"heartbeat_s": hb, "suspect_after_s": suspect,
            "detect_s": [r["detect_s"] for r in rows], "view_s": [r["view_s"] for r in rows],
            "victims": [r["victim"] for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--heartbeats", default="0.05,0.1,0.2")
    ap.add_argument("--out")
    args = ap.parse_args()
    base = args.out or tempfile.mkdtemp(prefix="bench-agents-")
    t0 = time.time()
    lat = latency_run(os.path.join(base, "latency"), args.reps)
    for k in ("scale_in", "scale_out", "link_down", "link_up"):
        s = lat[k]
        print(f"{k:<10} n={s['n']:<3} p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  "
              f"max {s['max_ms']} ms")
    print(f"the agents' own ping round trip (moving average per pair): p50 "
          f"{lat['ping_rtt_ms']['p50_ms']} ms over {lat['ping_rtt_ms']['n']} pairs")
    floor = udp_floor()
    idle_floor = udp_floor(reps=100, gap_s=0.1)
    print(f"floor: raw UDP fan-out round trip to 7 Python processes p50 {floor['p50_ms']} ms, "
          f"p99 {floor['p99_ms']} ms every 5 ms; p50 {idle_floor['p50_ms']} ms, p99 "
          f"{idle_floor['p99_ms']} ms every 100 ms, from idle CPUs")
    pattern = view_change_floor()
    print(f"floor: a member-observed view change's datagrams between 8 bare Python processes "
          f"(no parsing, no MAC), every 100 ms: p50 {pattern['p50_ms']} ms, p99 "
          f"{pattern['p99_ms']} ms")
    det = []
    for hb in (float(x) for x in args.heartbeats.split(",")):
        d = detection_run(os.path.join(base, f"detect-{hb}"), hb)
        det.append(d)
        print(f"heartbeat {hb:.2f} s (suspect {d['suspect_after_s']:.1f} s): detection "
              f"{d['detect_s']} s, view without it {d['view_s']} s ({d['victims']})")
    print(json.dumps({"bench": "agents", "agents": 8, "reps": args.reps, "latency": lat,
                      "udp_fanout_floor": floor, "udp_fanout_floor_from_idle": idle_floor,
                      "view_change_floor": pattern,
                      "detection": det, "median_detect_s": {str(d["heartbeat_s"]): statistics.median(
                          d["detect_s"]) for d in det}, "wall_s": round(time.time() - t0, 1),
                      "out": base}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
