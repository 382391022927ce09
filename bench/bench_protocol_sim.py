"""Peer-negotiation protocol in simulation: messages and time per event at 100 and 1,000 nodes.

Virtual time (chaos_hvd.cluster.simnet): message delay uniform 0.5-5 ms, no loss. For each event kind
(join, leave, link_down, link_up, crash) on a settled cluster: the simulated time from the event
to the first node installing the new view, the protocol messages it took (all but
heartbeats, which are reported apart), and the wall time the simulation needed. A crash is detected by heartbeats
(suspect_after_s = 1 s), so its figure is dominated by detection. Ends with one JSON line.
Usage: python -m bench.bench_protocol_sim [--sizes 100,1000]
"""

import argparse
import json
import time

from chaos_hvd.cluster.simnet import Simulation

EVENTS = [("join", ("join", "x0001")), ("leave", ("leave", "n0005")),
          ("link_up", ("link_up", "n0003", "n0004")), ("link_down", ("link_down", "n0003", "n0004")),
          ("crash", ("crash", "n0007"))]
WINDOW_S = 3.0


def measure(n: int) -> dict:
    sim = Simulation(n, seed=1, full_mesh_links=False)
    sim.run_until(1.0, check=False)
    m0, t0 = sim.stats.by_type.get("heartbeat", 0), sim.now
    sim.run_until(2.0, check=False)
    steady_per_s = (sim.stats.by_type.get("heartbeat", 0) - m0) / (sim.now - t0)

    def protocol_messages():  # everything but the steady heartbeats
        return sum(v for k, v in sim.stats.by_type.items() if k != "heartbeat")

    out = {}
    for name, action in EVENTS:
        start = sim.now
        m0 = protocol_messages()
        before = len(sim.stats.install_latency_s)
        wall = time.perf_counter()
        sim.schedule(start, action)
        sim.run_until(start + WINDOW_S, check=False)
        wall = time.perf_counter() - wall
        lat = sim.stats.install_latency_s[before:]
        out[name] = {"install_s": round(lat[0][1], 4) if lat else None,
                     "messages": protocol_messages() - m0,
                     "settled": sim.settled(), "sim_wall_s": round(wall, 2)}
    out["steady_heartbeats_per_s"] = round(steady_per_s)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    args = ap.parse_args()
    results = {}
    for n in (int(x) for x in args.sizes.split(",")):
        results[n] = r = measure(n)
        for name, _ in EVENTS:
            e = r[name]
            print(f"n={n:5} {name:9} new view after {e['install_s']} s simulated, "
                  f"{e['messages']} protocol messages, settled={e['settled']}, "
                  f"simulation took {e['sim_wall_s']} s")
        print(f"n={n:5} steady heartbeats {r['steady_heartbeats_per_s']} messages/s")
    print(json.dumps({"bench": "protocol_sim", "results": results}))


if __name__ == "__main__":
    main()
