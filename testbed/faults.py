"""Fault schedules: a declarative list of timed actions, or a seeded random "chaos mode". Pure.

File shape::

    actions:
      - {at: 5s, action: join, node: h6}                # wall time since the job started
      - {at_step: 40, action: crash, node: h3}          # when any rank logs training step >= 40
      - {at_size: 5, at_step: 30, action: leave, node: h2}  # ... step >= 30 at world size 5
      - {at_step: 8, after: 1.5s, action: crash, node: h1}  # 1.5 s after step 8 was logged
      - {at_record: standby_pulling, after: 1s, action: crash, node: h2}  # 1 s after the job
                                                   # first logged a record of that kind
      - {at: 20s, action: flap, link: h2-s1, period: 2s, count: 3}
      - {at: 30s, action: partition, groups: [[h1, h2], [h3, h4]]}
      - {at: 36s, action: heal}
      - {at: 40s, action: degrade, link: h1-s1, direction: up, rate: 10Mbit, delay: 50ms}
      - {at: 50s, action: restore, link: h1-s1}
    chaos: {seed: 7, duration: 60s, mean_interval: 10s, kinds: [crash, flap, degrade],
            min_workers: 2}                          # optional: random actions appended

Node actions: ``crash`` (SIGKILL the host's workers), ``leave`` (SIGTERM), ``pause``/``resume``
(SIGSTOP/SIGCONT), ``join`` (the host becomes discoverable: a standby host, or one that crashed
or left before). Link actions: ``link_down``,
``link_up``, ``flap`` (``count`` times down for ``period``/2 then up), ``degrade`` (change any
direction field; ``direction`` up|down|both), ``restore`` (back to the topology's values).
``partition`` cuts every pair of hosts in different groups (hosts not listed form their own
group); ``heal`` removes it. ``expand`` turns a schedule into primitive steps; the executor
(testbed.executor) applies them and logs each as one JSON line.
"""

from __future__ import annotations

import difflib
import random
import typing
from dataclasses import dataclass, field, replace
from enum import StrEnum

from chaos_hvd import events
from chaos_hvd.units import parse_duration_s
from chaos_hvd.yamldoc import Reader, load_yaml, read_text

from .errors import ScheduleError
from .topology import DIRECTION_KEYS, Topology, direction_fields


class Kind(StrEnum):
    """What an action does (a member equals its name in schedule files and records)."""

    CRASH = "crash"          # SIGKILL the host's workers (and its agent)
    LEAVE = "leave"          # SIGTERM
    PAUSE = "pause"          # SIGSTOP
    RESUME = "resume"        # SIGCONT
    JOIN = "join"            # the host becomes discoverable
    LINK_DOWN = "link_down"
    LINK_UP = "link_up"
    FLAP = "flap"            # expands into link_down / link_up pairs
    DEGRADE = "degrade"
    RESTORE = "restore"
    PARTITION = "partition"
    HEAL = "heal"


NODE_ACTIONS = (Kind.CRASH, Kind.LEAVE, Kind.PAUSE, Kind.RESUME, Kind.JOIN)
LINK_ACTIONS = (Kind.LINK_DOWN, Kind.LINK_UP, Kind.FLAP, Kind.DEGRADE, Kind.RESTORE)
NET_ACTIONS = (Kind.PARTITION, Kind.HEAL)
ACTIONS = NODE_ACTIONS + LINK_ACTIONS + NET_ACTIONS
MAX_FLAPS = 10_000
MAX_PERIOD_S = 3600.0
MAX_CHAOS_S = 7 * 24 * 3600.0
MAX_CHAOS_ACTIONS = 100_000
# Record kinds an ``at_record`` trigger may wait for: those the job's processes (workers, standbys,
# the launcher) write to its event log; agents and the testbed keep logs of their own.
JOB_RECORD_KINDS = tuple(sorted(
    c.__struct_config__.tag for c in typing.get_args(events.AnyEvent)
    if not issubclass(c, (events.AgentEvent, events.TimelineEvent))))
PRIMITIVE = NODE_ACTIONS + (Kind.LINK_DOWN, Kind.LINK_UP, Kind.DEGRADE, Kind.RESTORE) + NET_ACTIONS
CHAOS_KINDS = (Kind.CRASH, Kind.LEAVE, Kind.PAUSE, Kind.FLAP, Kind.DEGRADE, Kind.PARTITION)


@dataclass(frozen=True)
class Action:
    """One scheduled action: on time (``at_s``), on training progress (``at_step``, optionally
    only once a step was logged at world size ``at_size``; ``at_size`` alone means step >= 0),
    or once the job logged its first record of kind ``at_record``."""

    action: Kind
    at_s: float | None = None
    at_step: int | None = None
    at_size: int | None = None
    at_record: str | None = None
    node: str | None = None
    link: str | None = None
    direction: str = "both"
    changes: tuple[tuple[str, float], ...] = ()   # Direction field -> value, for degrade
    groups: tuple[tuple[str, ...], ...] = ()      # for partition
    period_s: float = 1.0                          # for flap
    count: int = 1                                 # for flap
    offset_s: float = 0.0                          # after the trigger (flap expansion)

    @property
    def target(self) -> str:
        return self.node or self.link or " | ".join(",".join(g) for g in self.groups) or "-"

    def trigger_key(self) -> tuple:
        if self.at_s is not None:
            return (0, self.at_s + self.offset_s)
        if self.at_record is not None:
            return (2, self.at_record, self.offset_s)
        return (1, self.at_step, self.at_size or 0, self.offset_s)


@dataclass(frozen=True)
class Schedule:
    actions: tuple[Action, ...] = ()
    seed: int | None = None

    def expand(self) -> list[Action]:
        """Primitive actions (flap unrolled), time-triggered ones first in time order, then
        step-triggered ones in step order, then record-triggered ones; ties keep file order."""
        out: list[Action] = []
        for a in self.actions:
            if a.action == Kind.FLAP:
                for k in range(a.count):
                    base = a.offset_s + k * a.period_s
                    out.append(replace(a, action=Kind.LINK_DOWN, offset_s=base))
                    out.append(replace(a, action=Kind.LINK_UP, offset_s=base + a.period_s / 2))
            else:
                out.append(a)
        return sorted(out, key=Action.trigger_key)


# ---------------------------------------------------------------- parsing

def _parse_action(r: Reader, topo: Topology) -> Action:
    r.check_keys(("at", "at_step", "at_size", "at_record", "after", "action", "node", "link",
                  "direction", "groups", "period", "count") + DIRECTION_KEYS)
    kind = r.require("action")
    if not isinstance(kind, str) or kind not in ACTIONS:
        hint = difflib.get_close_matches(str(kind), [str(a) for a in ACTIONS], n=1)
        r.fail(f"unknown action {kind!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
               + f"; known: {', '.join(ACTIONS)}", "action")
    kind = Kind(kind)
    on_progress = "at_step" in r.data or "at_size" in r.data
    if ("at" in r.data) + on_progress + ("at_record" in r.data) != 1:
        r.fail("give exactly one trigger: 'at' (time), 'at_step'/'at_size' (training step, "
               "world size) or 'at_record' (a kind of record in the job's event log)")
    at_s = r.parse("at", parse_duration_s)
    at_step = r.get("at_step")
    if at_step is not None and (isinstance(at_step, bool) or not isinstance(at_step, int)
                                or at_step < 0):
        r.fail(f"at_step must be a non-negative integer, got {at_step!r}", "at_step")
    at_size = r.get("at_size")
    slots = sum(n.slots for n in topo.workers)
    if at_size is not None and (isinstance(at_size, bool) or not isinstance(at_size, int)
                                or not 1 <= at_size <= slots):
        r.fail(f"at_size must be a world size in 1..{slots} (the topology's worker slots), "
               f"got {at_size!r}", "at_size")
    if at_size is not None and at_step is None:
        at_step = 0
    at_record = r.get("at_record")
    if at_record is not None and (not isinstance(at_record, str)
                                  or at_record not in JOB_RECORD_KINDS):
        hint = difflib.get_close_matches(str(at_record), JOB_RECORD_KINDS, n=1)
        r.fail(f"at_record must name a kind of record the job logs, got {at_record!r}"
               + (f" (did you mean {hint[0]!r}?)" if hint else "")
               + f"; known: {', '.join(JOB_RECORD_KINDS)}", "at_record")
    after = r.parse("after", parse_duration_s, 0.0)
    if "after" in r.data and (at_s is not None or not 0 <= after <= MAX_PERIOD_S):
        r.fail(f"after (a delay after a step or record trigger) must be in "
               f"[0, {MAX_PERIOD_S:g}] seconds and needs at_step, at_size or at_record", "after")
    kw: dict = {"action": kind, "at_s": at_s, "at_step": at_step, "at_size": at_size,
                "at_record": at_record, "offset_s": after}
    workers = {n.name for n in topo.workers}

    if kind in NODE_ACTIONS:
        node = r.require("node")
        if not isinstance(node, str) or node not in workers:
            r.fail(f"{node!r} is not a worker node of topology {topo.name!r} "
                   f"(workers: {', '.join(sorted(workers))})", "node")
        kw["node"] = node
    elif kind in LINK_ACTIONS:
        link = r.require("link")
        names = [ln.name for ln in topo.links]
        if not isinstance(link, str) or link not in names:
            r.fail(f"no link {link!r} in topology {topo.name!r} (links: {', '.join(names)})",
                   "link")
        kw["link"] = link
    if kind == Kind.FLAP:
        period = r.parse("period", parse_duration_s, 1.0)
        count = r.get("count", 1)
        if not 0 < period <= MAX_PERIOD_S:
            r.fail(f"period must be in (0, {MAX_PERIOD_S:g}] seconds", "period")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_FLAPS:
            r.fail(f"count must be an integer in 1..{MAX_FLAPS}, got {count!r}", "count")
        kw.update(period_s=period, count=count)
    if kind == Kind.DEGRADE:
        direction = r.get("direction", "both")
        if direction not in ("up", "down", "both"):
            r.fail(f"direction must be up, down or both, got {direction!r}", "direction")
        changes = direction_fields(r, {})
        if not changes:
            r.fail(f"degrade needs at least one of {', '.join(DIRECTION_KEYS)}")
        kw.update(direction=direction, changes=tuple(sorted(changes.items())))
    if kind == Kind.PARTITION:
        groups = r.require("groups")
        hosts = {n.name for n in topo.nodes}
        if not isinstance(groups, list) or len(groups) < 1 or \
                not all(isinstance(g, list) and g and all(isinstance(h, str) for h in g)
                        for g in groups):
            r.fail("groups must be a list of non-empty lists of node names", "groups")
        flat = [h for g in groups for h in g]
        for h in flat:
            if h not in hosts:
                r.fail(f"{h!r} is not a node of topology {topo.name!r}", "groups")
        if len(flat) != len(set(flat)):
            r.fail("a node appears in two groups", "groups")
        kw["groups"] = tuple(tuple(g) for g in groups)
    extra = [k for k in ("node", "link", "groups", "period", "count", "direction")
             + DIRECTION_KEYS if k in r.data and k not in _KEYS_FOR[kind]]
    if extra:
        r.fail(f"{', '.join(extra)} do not apply to action {str(kind)!r}", extra[0])
    return Action(**kw)


_KEYS_FOR = {**{k: ("node",) for k in NODE_ACTIONS},
             **{k: ("link",) for k in (Kind.LINK_DOWN, Kind.LINK_UP, Kind.RESTORE)},
             Kind.FLAP: ("link", "period", "count"),
             Kind.DEGRADE: ("link", "direction") + DIRECTION_KEYS,
             Kind.PARTITION: ("groups",), Kind.HEAL: ()}


def parse_schedule(text: str, topo: Topology, source: str = "<schedule>") -> Schedule:
    data = load_yaml(text, source, ScheduleError)
    if data is None:
        raise ScheduleError("file is empty", source)
    top = Reader(data, "", source, ScheduleError)
    top.check_keys(("actions", "chaos"))
    actions = [_parse_action(top.item("actions", i, item), topo)
               for i, item, _ in top.items("actions")]
    seed = None
    if top.get("chaos") is not None:
        c = top.child("chaos")
        c.check_keys(("seed", "duration", "mean_interval", "kinds", "min_workers"))
        seed = c.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            c.fail(f"seed must be an integer, got {seed!r}", "seed")
        kinds = c.get("kinds", list(CHAOS_KINDS))
        if not isinstance(kinds, list) or not kinds or any(k not in CHAOS_KINDS for k in kinds):
            c.fail(f"kinds must be a non-empty list drawn from {', '.join(CHAOS_KINDS)}", "kinds")
        min_workers = c.get("min_workers", 2)
        if isinstance(min_workers, bool) or not isinstance(min_workers, int) or min_workers < 1:
            c.fail("min_workers must be a positive integer", "min_workers")
        try:
            generated = chaos_schedule(
                topo, seed, c.parse("duration", parse_duration_s, 60.0),
                c.parse("mean_interval", parse_duration_s, 10.0), tuple(kinds), min_workers)
        except ScheduleError as e:
            c.fail(str(e))
        actions += generated.actions
    _check_consistency(actions, topo, source)
    return Schedule(tuple(actions), seed)


# node state -> the actions that make sense in it, and the state each leads to
_NODE_MOVES = {
    "standby": {Kind.JOIN: "active"},
    "active": {Kind.CRASH: "gone", Kind.LEAVE: "gone", Kind.PAUSE: "paused"},
    "paused": {Kind.RESUME: "active", Kind.CRASH: "gone", Kind.LEAVE: "gone"},
    "gone": {Kind.JOIN: "active"},   # a crashed or departed host comes back
}


def _check_consistency(actions: list[Action], topo: Topology, source: str) -> None:
    """Reject schedules that cannot mean anything: joining a host twice, crashing a crashed
    host, resuming one that is not paused, healing without a partition.

    Actions are ordered by their triggers; triggers of different kinds (time, step, record)
    cannot be ordered against each other, so a host (or the partition) acted on by more than one
    kind is only checked for double joins."""
    joined: set[str] = set()
    for a in sorted(actions, key=Action.trigger_key):
        if a.action == Kind.JOIN:
            if a.node in joined:
                raise ScheduleError(f"node {a.node!r} joins twice", source)
            joined.add(a.node)
        elif a.action in (Kind.CRASH, Kind.LEAVE):
            joined.discard(a.node)
    by_node: dict[str, list[Action]] = {}
    for a in actions:
        if a.action in NODE_ACTIONS:
            by_node.setdefault(a.node, []).append(a)
    for node, acts in by_node.items():
        kinds = {a.action for a in acts}
        if Kind.JOIN in kinds and not topo.node(node).standby \
                and not kinds & {Kind.CRASH, Kind.LEAVE}:
            raise ScheduleError(f"join {node} when {node} is active; mark it 'standby: true' in "
                                "the topology to join it later", source)
        if len({a.trigger_key()[0] for a in acts}) > 1:
            continue
        state = "standby" if topo.node(node).standby else "active"
        for a in sorted(acts, key=Action.trigger_key):
            if a.action not in _NODE_MOVES[state]:
                hint = ("; mark it 'standby: true' in the topology to join it later"
                        if a.action == Kind.JOIN and state == "active" else "")
                raise ScheduleError(f"{a.action} {node} when {node} is {state}{hint}", source)
            state = _NODE_MOVES[state][a.action]
    net = [a for a in actions if a.action in NET_ACTIONS]
    if len({a.trigger_key()[0] for a in net}) == 1:
        split = False
        for a in sorted(net, key=Action.trigger_key):
            if a.action == Kind.HEAL and not split:
                raise ScheduleError("heal without a partition in force", source)
            split = a.action == Kind.PARTITION


def load_schedule(path: str, topo: Topology) -> Schedule:
    return parse_schedule(read_text(path, ScheduleError, "schedule"), topo, path)


# ---------------------------------------------------------------- chaos mode

@dataclass
class _World:
    alive: list[str]
    paused: set[str] = field(default_factory=set)


def chaos_schedule(topo: Topology, seed: int, duration_s: float, mean_interval_s: float,
                   kinds: tuple[str, ...] = CHAOS_KINDS, min_workers: int = 2) -> Schedule:
    """A reproducible random schedule: same topology and arguments -> same actions.

    Invariants (property-tested): never fewer than ``min_workers`` active (not crashed, left or
    paused) workers; every link taken down, degraded or partitioned is restored, and every paused
    node resumed, before ``duration_s``; a node is never acted on after it crashed or left.
    """
    if not (0 < duration_s <= MAX_CHAOS_S and 0 < mean_interval_s <= MAX_CHAOS_S):
        raise ScheduleError(f"duration and mean_interval must be in (0, {MAX_CHAOS_S:g}] s")
    if duration_s / mean_interval_s > MAX_CHAOS_ACTIONS:
        raise ScheduleError(f"about {duration_s / mean_interval_s:.0f} random actions: more "
                            f"than {MAX_CHAOS_ACTIONS}; lengthen mean_interval")
    if any(k not in CHAOS_KINDS for k in kinds):
        raise ScheduleError(f"chaos kinds must be drawn from {CHAOS_KINDS}")
    rng = random.Random(seed)
    world = _World(alive=sorted(n.name for n in topo.workers if not n.standby))
    links = [ln.name for ln in topo.links]
    actions: list[Action] = []
    busy_until: dict[str, float] = {}   # link/node -> time its last disturbance ends
    t = 0.0
    while True:
        t += rng.expovariate(1.0 / mean_interval_s)
        if t >= duration_s:
            break
        world.paused = {n for n in world.paused if busy_until[n] > t}  # resumed by now
        kind = rng.choice(kinds)
        remaining = duration_s - t
        hold = min(rng.uniform(0.5, 3.0), remaining * 0.9)
        active = [n for n in world.alive if n not in world.paused]
        if kind in (Kind.CRASH, Kind.LEAVE, Kind.PAUSE):
            candidates = [n for n in active if busy_until.get(n, 0) <= t]
            if len(active) - 1 < min_workers or not candidates:
                continue
            node = rng.choice(candidates)
            actions.append(Action(kind, at_s=round(t, 3), node=node))
            if kind == Kind.PAUSE:
                world.paused.add(node)
                end = round(t + hold, 3)
                actions.append(Action(Kind.RESUME, at_s=end, node=node))
                busy_until[node] = end
            else:
                world.alive.remove(node)
        elif kind in (Kind.FLAP, Kind.DEGRADE):
            free = [ln for ln in links if busy_until.get(ln, 0) <= t]
            if not free:
                continue
            link = rng.choice(free)
            if kind == Kind.FLAP:
                count = rng.randint(1, 3)
                period = round(hold / count, 3)
                if period < 0.2:  # too close to the end for a visible flap
                    continue
                actions.append(Action(Kind.FLAP, at_s=round(t, 3), link=link, period_s=period,
                                      count=count))
                busy_until[link] = t + period * count
            else:
                rate = rng.choice([1e6, 5e6, 10e6, 50e6])
                actions.append(Action(Kind.DEGRADE, at_s=round(t, 3), link=link,
                                      direction=rng.choice(["up", "down", "both"]),
                                      changes=(("rate_bps", rate),)))
                end = round(t + hold, 3)
                actions.append(Action(Kind.RESTORE, at_s=end, link=link))
                busy_until[link] = end
        elif kind == Kind.PARTITION:
            if busy_until.get("*partition*", 0) > t or len(topo.nodes) < 2:
                continue
            names = sorted(n.name for n in topo.nodes)
            rng.shuffle(names)
            cut = rng.randint(1, len(names) - 1)
            actions.append(Action(Kind.PARTITION, at_s=round(t, 3),
                                  groups=(tuple(sorted(names[:cut])), tuple(sorted(names[cut:])))))
            end = round(t + hold, 3)
            actions.append(Action(Kind.HEAL, at_s=end))
            busy_until["*partition*"] = end
    return Schedule(tuple(actions), seed)
