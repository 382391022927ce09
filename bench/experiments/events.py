"""Event latency inside training, on the testbed (root): from a scale-in, a link going down, the
link coming back and a crash to training at the new configuration, with the cluster agents'
view-change latency next to the UDP fan-out floor measured in the same run.

Each run is a fault-injection suite (``ci.run_suite``) written next to the results: five workers
on one switch (40-80 Mbit/s, no delay), discovery from the cluster agents, ``chaos-hvdrun``, the
2 MB CNN, and the schedule: w5 leaves (SIGTERM: scale-in to 4), w4's link goes down and stays down
(a silent loss the agents detect: 3), comes back (its agent rejoins and w4 comes in through a
standby: 4), w3 crashes (SIGKILL: 3). Per event:

* ``to_training_s``: the event -> the first rank training again (its first resumed record after
  it), and the world size it resumed at (the suite checks the sizes 5, 4, 3, 4, 3 and that every
  rank ends identical);
* ``view_first_s`` / ``view_all_s``: the event -> the first / last agent installing a view with
  the change (for a silent loss this includes the heartbeat suspicion, 3 s by default);
* ``handled_ms``: each agent's own arrival -> installed time for that change (the protocol's
  latency, comparable with the floor): median and maximum over the agents.

The floor: one UDP datagram to each of as many Python echo processes as there are other agents
and every reply back, sampled every 50 ms on this machine while the run goes on, so under the same
CPU load as the agents (``bench.bench_agents.udp_floor``).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading

from chaos_hvd import events as ev

from .stats import spread

WORKERS = ("w1", "w2", "w3", "w4", "w5")
RATES_MBIT = (80, 40, 60, 50, 70)
EVENTS = (("scale-in", "leave", "w5", "removed"),
          ("link-down", "link_down", "w4-sw", "removed"),
          ("link-up", "link_up", "w4-sw", "added"),
          ("crash", "crash", "w3", "removed"))
SIZES = [5, 4, 3, 4, 3]

TOPOLOGY = "\n".join(
    ["# written by bench.experiments.events", "name: events-5",
     "description: 5 workers on one switch, 40-80 Mbit/s, no delay", "nodes:",
     *(f"  - {{name: {w}}}" for w in WORKERS), "  - {name: ctl, role: launcher}",
     "switches: [sw]", "links:",
     *(f"  - {{a: {w}, b: sw, rate: {r}Mbit}}" for w, r in zip(WORKERS, RATES_MBIT)),
     "  - {a: ctl, b: sw}", ""])
# step-triggered; at_size keeps the order when a rejoin takes a while
FAULTS = """actions:
  - {at_step: 6, action: leave, node: w5}
  - {at_size: 4, at_step: 14, action: link_down, link: w4-sw}
  - {at_size: 3, at_step: 24, action: link_up, link: w4-sw}
  - {at_size: 4, at_step: 34, action: crash, node: w3}
"""
SUITE = """name: events
topology: {topology}
faults: {faults}
agents: {{}}
launcher: chaos-hvdrun
horovod: {{min_np: 2, gloo_timeout_s: 20}}
train: [--model, medium, --epochs, 2, --samples, 2048, --batch-size, 16, --step-sleep, 0.15]
timeout_s: 600
expect:
  faults: [leave w5, link_down w4-sw, link_up w4-sw, crash w3]
  world_sizes: {sizes}
  identical_final: true
"""


def write_suite(out_dir: str) -> str:
    paths = {k: os.path.join(out_dir, f"events-{k}.yaml") for k in ("topology", "faults", "suite")}
    with open(paths["topology"], "w") as f:
        f.write(TOPOLOGY)
    with open(paths["faults"], "w") as f:
        f.write(FAULTS)
    with open(paths["suite"], "w") as f:
        f.write(SUITE.format(topology=paths["topology"], faults=paths["faults"], sizes=SIZES))
    return paths["suite"]


def measure(timeline: list, events: list, agent_events: list, ip: dict[str, str]) -> dict:
    """Per event name: to_training_s, resumed_size, view_first_s, view_all_s, handled_ms list."""
    resumed = sorted((e for e in events if isinstance(e, ev.Resumed)), key=lambda e: e.t_mono)
    installs = sorted((e for e in agent_events if isinstance(e, ev.Install) and e.in_view),
                      key=lambda e: e.t_mono)
    faults = [f for f in timeline if isinstance(f, ev.Fault)]
    out = {}
    for name, action, target, change in EVENTS:
        fault = next(f for f in faults if f.action == action and f.target == target)
        # the record is written once the action is applied: it began applied_ms earlier (a
        # leaving agent's view can be installed everywhere before the SIGTERMs all went out)
        start = fault.t_mono - fault.applied_ms / 1e3
        after = [r for r in resumed if r.t_mono > start]
        addr = ip[target.split("-")[0]]
        seen = [i for i in installs if i.t_mono > start and addr in getattr(i, change)]
        first_per_agent = {}
        for i in seen:
            first_per_agent.setdefault(i.agent, i)
        handled = [v for i in first_per_agent.values() for v in i.handled_ms.values()]
        out[name] = {"to_training_s": after[0].t_mono - start if after else None,
                     "resumed_size": after[0].size if after else None,
                     "view_first_s": seen[0].t_mono - start if seen else None,
                     "view_all_s": (max(i.t_mono for i in first_per_agent.values())
                                    - start) if seen else None,
                     "handled_ms": handled}
    return out


def run(out_dir: str, reps: int = 3) -> tuple[list[dict], dict]:
    """Rows per event (median, min-max over the runs that passed the suite's checks) and the
    UDP floor. A run whose checks fail is reported and left out."""
    from bench.bench_agents import udp_floor
    from ci.run_suite import run as run_suite
    from testbed.topology import load_topology
    suite = write_suite(out_dir)
    ip = {n.name: n.ip for n in load_topology(os.path.join(out_dir, "events-topology.yaml")).nodes}
    runs, floors, failed = [], [], []
    for rep in range(reps):
        stop, floor = threading.Event(), {}
        sampler = threading.Thread(target=lambda: floor.update(udp_floor(len(WORKERS) - 1,
                                                                         stop=stop)))
        sampler.start()
        try:
            failures, result = run_suite(suite, os.path.join(out_dir, f"events-run{rep + 1}"))
        finally:
            stop.set()
            sampler.join()
        floors.append(floor)
        agents_path = os.path.join(result["out"], "agents.jsonl")
        agent_events = ev.read_events(agents_path) if os.path.exists(agents_path) else []
        if failures:
            print(f"events {rep + 1}/{reps}: checks failed: {failures}", file=sys.stderr)
            failed.append(failures)
            continue
        runs.append(measure(result["timeline"], result["events"], agent_events, ip))
        print(f"events {rep + 1}/{reps}: " + ", ".join(
            f"{k} {v['to_training_s']:.2f} s" for k, v in runs[-1].items()
            if v["to_training_s"] is not None), file=sys.stderr, flush=True)
    if not runs:
        raise RuntimeError(f"events: every run failed its checks: {failed}")
    rows = []
    for name, *_ in EVENTS:
        row = {"experiment": "events", "event": name}
        for key in ("to_training_s", "view_first_s", "view_all_s"):
            got = [r[name][key] for r in runs if r[name][key] is not None]
            s = spread(got) if got else None
            row.update({f"{key}_median": round(s["median"], 3) if s else None,
                        f"{key}_min": round(s["min"], 3) if s else None,
                        f"{key}_max": round(s["max"], 3) if s else None})
        handled = [h for r in runs for h in r[name]["handled_ms"]]
        row["handled_ms_median"] = round(statistics.median(handled), 2) if handled else None
        row["handled_ms_max"] = round(max(handled), 2) if handled else None
        row["resumed_sizes"] = sorted({r[name]["resumed_size"] for r in runs
                                       if r[name]["resumed_size"] is not None})
        row["reps"], row["failed_runs"] = len(runs), len(failed)
        rows.append(row)
    floor = {"peers": floors[0]["peers"], "samples": sum(f["n"] for f in floors),
             "p50_ms": round(statistics.median(f["p50_ms"] for f in floors), 3),
             "p99_ms": round(max(f["p99_ms"] for f in floors), 3)}
    return rows, floor
