"""Many protocol members in one process over a simulated network: the simulation mode. Pure.

A discrete-event simulator (virtual time, a heap of events, one ``random.Random(seed)``), so a run
is reproducible from its seed and 1,000 nodes take seconds. Messages are delivered after a
uniform delay in [delay_min_s, delay_max_s], dropped with probability ``loss``, and never across
a partition or to a crashed node. Each message is JSON-encoded and decoded on the way, as on a
real wire. Scenario actions: crash, join, leave, partition, heal, link_down, link_up.

``check_safety`` runs after every event: at most one view per epoch (agreement), and no two nodes
training (holding a lease) in different groups — an active node at an older epoch must be a
member of the newest active view. ``settled`` says whether all live members agree on one view
whose members are exactly the live, non-departed nodes.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Callable

from .protocol import Config, Installed, Member, Send, View, link, pending_in


@dataclass
class Stats:
    messages: int = 0
    dropped: int = 0
    installs: int = 0
    by_type: dict = field(default_factory=dict)
    install_latency_s: list = field(default_factory=list)  # (event, latency) per first install


class SafetyViolation(AssertionError):
    pass


class Simulation:
    def __init__(self, n: int, seed: int = 0, config: Config = Config(),
                 delay_min_s: float = 0.0005, delay_max_s: float = 0.005, loss: float = 0.0,
                 tick_s: float = 0.02, full_mesh_links: bool = True,
                 slots_of: Callable[[str], int | None] | None = None):
        if n < 1:
            raise ValueError("need at least one node")
        self.rng = random.Random(seed)
        self.cfg = config
        self.delay = (delay_min_s, delay_max_s)
        self.loss = loss
        self.tick_s = tick_s
        self.slots_of = slots_of or (lambda _: None)   # slots each node advertises
        self.now = 0.0
        self._heap: list = []
        self._seq = itertools.count()
        ids = [f"n{i:04d}" for i in range(n)]
        links = frozenset(link(a, b) for a, b in itertools.combinations(ids, 2)) \
            if full_mesh_links else frozenset()
        view = View(0, frozenset(ids), links)
        self.nodes: dict[str, Member] = {i: Member(i, view, config, slots=self.slots_of(i))
                                         for i in ids}
        self.crashed: set[str] = set()
        self.departed: set[str] = set()          # asked to leave
        self.groups: dict[str, int] = {}         # partition group per node (absent = 0)
        self.views: dict[int, View] = {0: view}  # every installed view, by epoch
        self.stats = Stats()
        self._next_id = n
        self._marks: list[tuple[str, float, int]] = []   # (event, time, epoch before)
        for i in ids:
            self._at(self.rng.uniform(0, tick_s), ("tick", i))

    # ------------------------------------------------------------ scheduling
    def _at(self, t: float, ev: tuple) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), ev))

    def run_until(self, t_end: float, check: bool = True) -> None:
        while self._heap and self._heap[0][0] <= t_end:
            t, _, ev = heapq.heappop(self._heap)
            self.now = t
            self._dispatch(ev)
            if check:
                self.check_safety()
        self.now = t_end

    def _dispatch(self, ev: tuple) -> None:
        kind = ev[0]
        if kind == "tick":
            node = ev[1]
            if node in self.crashed:
                return
            self._handle(node, self.nodes[node].tick(self.now))
            self._at(self.now + self.tick_s, ("tick", node))
        elif kind == "msg":
            _, src, dst, data = ev
            if dst in self.crashed or not self._connected(src, dst):
                self.stats.dropped += 1
                return
            self._handle(dst, self.nodes[dst].deliver(src, json.loads(data), self.now))
        elif kind == "action":
            self._apply(ev[1])

    def _connected(self, a: str, b: str) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def _handle(self, node: str, outputs: list) -> None:
        for o in outputs:
            if isinstance(o, Send):
                self.stats.messages += 1
                t = o.msg["type"]
                self.stats.by_type[t] = self.stats.by_type.get(t, 0) + 1
                if self.rng.random() < self.loss or not self._connected(node, o.dst):
                    self.stats.dropped += 1
                    continue
                self._at(self.now + self.rng.uniform(*self.delay),
                         ("msg", node, o.dst, json.dumps(o.msg)))
            elif isinstance(o, Installed):
                self._record_install(node, o.view)

    def _record_install(self, node: str, view: View) -> None:
        self.stats.installs += 1
        known = self.views.setdefault(view.epoch, view)
        if known != view:
            raise SafetyViolation(f"epoch {view.epoch}: two views installed: {known} vs {view}")
        for i, (event, t, epoch) in enumerate(self._marks):
            if view.epoch > epoch:
                self.stats.install_latency_s.append((event, self.now - t))
                self._marks.pop(i)
                break

    # ------------------------------------------------------------ scenario actions
    def schedule(self, t: float, action: tuple) -> None:
        self._at(t, ("action", action))

    def _apply(self, action: tuple) -> None:
        kind = action[0]
        epoch = max(self.views)
        current = self.agreed_view() or self.views[epoch]
        # only events that must change the view are timed (a no-op would take a later install)
        if kind in ("join", "crash", "leave") or (
                kind in ("link_down", "link_up") and pending_in(current, [action])):
            self._marks.append((kind, self.now, epoch))
        if kind == "crash":
            self.crashed.add(action[1])
        elif kind == "join":
            new = action[1] if len(action) > 1 else f"n{self._next_id:04d}"
            self._next_id += 1
            seeds = sorted(set(self.nodes) - self.crashed - {new})[:3]
            self.nodes[new] = Member(new, None, self.cfg, seeds=seeds, slots=self.slots_of(new))
            self._at(self.now, ("tick", new))
        elif kind == "leave":
            self.departed.add(action[1])
            self._handle(action[1], self.nodes[action[1]].observe(("leave", action[1]),
                                                                  self.now))
        elif kind == "partition":
            self.groups = {n: i + 1 for i, g in enumerate(action[1]) for n in g}
        elif kind == "heal":
            self.groups = {}
        elif kind in ("link_down", "link_up"):
            a, b = action[1], action[2]
            for n in (a, b):  # both ends' monitors see it
                if n not in self.crashed:
                    self._handle(n, self.nodes[n].observe((kind, a, b), self.now))
        else:
            raise ValueError(f"unknown action {action!r}")

    # ------------------------------------------------------------ invariants
    def live(self) -> set[str]:
        return set(self.nodes) - self.crashed - self.departed

    def check_safety(self) -> None:
        active = [(m.view.epoch, n) for n, m in self.nodes.items()
                  if n not in self.crashed and m.can_train(self.now)]
        if not active:
            return
        top_epoch = max(e for e, _ in active)
        top = self.views[top_epoch]
        for e, n in active:
            if e < top_epoch and n not in top.members:
                raise SafetyViolation(
                    f"t={self.now:.3f}: {n} trains in epoch {e} while epoch {top_epoch} "
                    f"excludes it: two training groups")

    def settled(self) -> bool:
        live = self.live()
        views = {self.nodes[n].view for n in live}
        if len(views) != 1 or None in views:
            return False
        view = next(iter(views))
        slots = {(n, self.slots_of(n)) for n in live if self.slots_of(n)}
        return view.members == frozenset(live) and view.slots == frozenset(slots)

    def agreed_view(self) -> View | None:
        views = {self.nodes[n].view for n in self.live()}
        return next(iter(views)) if len(views) == 1 else None
