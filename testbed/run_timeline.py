"""One run's timeline as lanes of segments and markers: what ``chaos-testbed report`` draws. Pure.

From a run directory's records (timeline.jsonl, events.jsonl, agents.jsonl; chaos_hvd.events):

* one lane per host, its successive worker processes drawn one after another in it (a host
  that runs several at once gets a lane for each: ``host``, ``host #2``, ...), so a long run
  with many restarts stays one lane per machine: ``train`` between consecutive steps,
  the phases of each sync (``exchange``, ``plan``, ``transfer``, ``load``, ``verify``) and
  ``idle`` for any longer gap (a blocked collective, Horovod's reset barrier, a start-up);
  a ``process`` marker where each process begins;
* markers: the faults applied, the agents' view changes, the launcher's standby and lost-slot
  records, and crash-watch aborts (on the aborting worker's lane);
* the world size over time (every ``resumed`` record), and per lane the idle seconds.

Times are seconds since the job's command started (its ``command_start`` record).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from chaos_hvd import events as ev

PHASES = ("exchange", "plan", "transfer", "load", "verify")
IDLE_FACTOR = 3.0      # a gap this many median steps long is idle time, not a step


@dataclass(frozen=True)
class Segment:
    lane: str
    kind: str            # train, idle, or one of PHASES
    start: float
    end: float


@dataclass(frozen=True)
class Marker:
    t: float
    kind: str            # fault, view, launcher, abort, process
    label: str
    lane: str | None = None


@dataclass
class RunTimeline:
    lanes: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    world: list[tuple[float, int]] = field(default_factory=list)
    end: float = 0.0

    def idle_s(self) -> dict[str, float]:
        out = {lane: 0.0 for lane in self.lanes}
        for s in self.segments:
            if s.kind == "idle":
                out[s.lane] += s.end - s.start
        return out


def build(timeline: list[ev.Event], events: list[ev.Event],
          agent_events: list[ev.Event] = ()) -> RunTimeline:
    starts = [e.t_mono for e in timeline if isinstance(e, ev.CommandStart)]
    every = list(timeline) + list(events) + list(agent_events)
    if not every:
        return RunTimeline()
    t0 = starts[0] if starts else min(e.t_mono for e in every)
    run = RunTimeline(end=max(e.t_mono for e in every) - t0)
    lane_of = _lanes(run, events, t0)
    for e in events:
        if isinstance(e, ev.PeerDead) and e.pid in lane_of:
            run.markers.append(Marker(e.t_mono - t0, "abort", f"abort: rank {e.peer} dead",
                                      lane=lane_of[e.pid]))
    for f in timeline:
        if isinstance(f, ev.Fault):
            run.markers.append(Marker(f.t_mono - t0, "fault", f"{f.action} {f.target}"))
    for v in view_changes(agent_events):
        what = ([f"+{a}" for a in v.added] + [f"-{r}" for r in v.removed]
                + [f"link down {'-'.join(x)}" for x in v.links_down]
                + [f"link up {'-'.join(x)}" for x in v.links_up])
        if what:
            run.markers.append(Marker(v.t_mono - t0, "view", f"e{v.epoch} " + " ".join(what)))
    for e in events:
        if isinstance(e, (ev.StandbyStarted, ev.StandbyReady, ev.StandbyJoined,
                          ev.StandbyDropped)):
            run.markers.append(Marker(e.t_mono - t0, "launcher",
                                      f"{type(e).__name__.removeprefix('Standby').lower()} "
                                      f"{e.host}"))
        elif isinstance(e, ev.SlotLost):
            run.markers.append(Marker(e.t_mono - t0, "launcher", f"lost {e.host}"))
    sizes = sorted((e.t_mono - t0, e.size) for e in events if isinstance(e, ev.Resumed))
    for t, size in sizes:
        if not run.world or run.world[-1][1] != size:
            run.world.append((t, size))
    run.markers.sort(key=lambda m: m.t)
    return run


def host_lanes(spans: dict[int, tuple[str, float, float]]) -> dict[int, str]:
    """pid -> lane, from each process's (host, first, last record time): a host's processes share
    its lane one after another; one that overlaps every process already in a lane of that host
    opens the host's next lane (``host #2``)."""
    ends: dict[str, list[float]] = {}          # host -> the last end in each of its lanes
    lane_of = {}
    for pid in sorted(spans, key=lambda p: (spans[p][0], spans[p][1], p)):
        host, first, last = spans[pid]
        lanes = ends.setdefault(host, [])
        i = next((i for i, end in enumerate(lanes) if end < first), len(lanes))
        if i == len(lanes):
            lanes.append(last)
        else:
            lanes[i] = last
        lane_of[pid] = host if i == 0 else f"{host} #{i + 1}"
    return lane_of


def _lanes(run: RunTimeline, events: list[ev.Event], t0: float) -> dict[int, str]:
    """Adds a lane per host (see host_lanes) with its processes' segments; returns pid -> lane."""
    by_pid: dict[int, list[ev.Event]] = {}
    host: dict[int, str] = {}
    for e in sorted(events, key=lambda e: e.t_mono):
        if isinstance(e, (ev.Step, ev.Sync, ev.Resumed)):
            by_pid.setdefault(e.pid, []).append(e)
            if getattr(e, "host", None):
                host[e.pid] = e.host
    begin = {pid: min(e.t_mono - (e.total_s if isinstance(e, ev.Sync) else 0.0) for e in seq)
             for pid, seq in by_pid.items()}                 # a first sync began before its record
    lane_of = host_lanes({pid: (host.get(pid, "?"), begin[pid], seq[-1].t_mono)
                          for pid, seq in by_pid.items()})
    run.lanes.extend(sorted(set(lane_of.values())))
    for pid in sorted(by_pid, key=lambda p: begin[p]):
        lane = lane_of[pid]
        seq = by_pid[pid]
        run.markers.append(Marker(begin[pid] - t0, "process", f"pid {pid}", lane=lane))
        steps = [e.t_mono for e in seq if isinstance(e, ev.Step)]
        gaps = [b - a for a, b in zip(steps, steps[1:])]
        step_s = statistics.median(gaps) if gaps else 1.0
        busy: list[tuple[float, float]] = []   # syncs
        for e in seq:
            if isinstance(e, ev.Sync) and e.total_s > 0:
                t = e.t_mono - e.total_s
                for name in PHASES:
                    d = max(0.0, getattr(e, f"{name}_s"))
                    if d > 0:
                        run.segments.append(Segment(lane, name, t - t0, t + d - t0))
                    t += d
                busy.append((e.t_mono - e.total_s, e.t_mono))
        marks = sorted([(t, "step") for t in steps] + [(b, "sync_start") for b, _ in busy]
                       + [(e, "sync_end") for _, e in busy]
                       + [(e.t_mono, "resumed") for e in seq if isinstance(e, ev.Resumed)])
        for (ta, ka), (tb, _) in zip(marks, marks[1:]):
            if ka == "sync_start":
                continue                       # inside a sync: drawn by its phases
            kind = "train" if tb - ta <= IDLE_FACTOR * step_s else "idle"
            if tb > ta:
                run.segments.append(Segment(lane, kind, ta - t0, tb - t0))
    return lane_of


def view_changes(agent_events: list[ev.Event]) -> list[ev.Install]:
    """One install record per epoch, in epoch order: the one with the smallest diff, i.e. from an
    agent that held the previous view (a joiner's first install lists everyone as added)."""
    best: dict[int, tuple[int, ev.Install]] = {}
    for e in agent_events:
        if not isinstance(e, ev.Install):
            continue
        size = len(e.added) + len(e.removed) + len(e.links_up) + len(e.links_down)
        if e.epoch not in best or size < best[e.epoch][0]:
            best[e.epoch] = (size, e)
    return [best[k][1] for k in sorted(best)]
