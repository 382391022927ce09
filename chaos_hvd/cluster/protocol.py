"""Peer negotiation of cluster membership and topology: a pure state machine (no sockets, no clock).

Every node runs one ``Member``. Events go in (``deliver`` a peer message, ``tick`` with the current
time, ``observe`` a local change: join request, leave, link up/down); messages to send and views
to install come out. The agent process (``chaos_hvd.cluster.agent``) and the simulator (``chaos_hvd.cluster.simnet``)
drive it the same way, so the simulator tests the code that runs.

**Views.** A view is ``(epoch, members, links, slots)``: who trains, which member pairs are
connected (the communication topology), and the Horovod worker slots each member advertised
(a joiner's come inside its ``add`` change, so no view has it without them; a founder proposes
its own ``slots`` change right after forming). Epochs grow by one per installed view. All nodes
that install a view for epoch *e* install the same one.

**Who decides.** The *coordinator* is the lowest member id of the current view; changes seen
elsewhere (a join request, a leave, a link up/down from the monitor) are forwarded to it and it
proposes the next view. If it is gone, the other members propose in id order (the 2nd lowest
after ``propose_timeout_s``, the 3rd after twice that, ...), so its loss stalls nothing and
proposers do not duel. Each epoch is one single-decree Paxos instance among the **members of the
last view**:

    prepare(e, b) -> promise(e, b, accepted)     quorum = majority of view e-1's members
    accept(e, b, V) -> accepted(e, b)            V = highest accepted value among the promises,
    commit(V) to old and new members               else the proposer's pending changes applied

The coordinator's first ballot of an epoch is (0, itself): the lowest ballot, used by no one
else and only once, so no value can have been accepted before it and its phase 1 is skipped
(accept -> accepted -> commit: one round trip to install a view). Every other attempt, the
coordinator's retries included, runs the full two phases.

**Observers learn first.** The members that observed a change and forwarded it (a leave, a link
down) are named in the accept (``notify``); acceptors send them their accepted as well, and an
observer installs the view once a quorum of the last view, itself included, accepted the ballot
it accepted itself (a Paxos learner: one ballot carries one value, so it is the view the commit
brings). That saves the observer the commit's hop; the commit still goes to everyone, to the
observers first.

Ballots are (round, proposer id); a proposer that loses adopts what was accepted, and its own
changes go into the next epoch. A proposer adopts an accepted value only if it may have been
chosen: its acceptors among the promises plus the members that did not answer reach a quorum
(otherwise nobody can have accepted it by a quorum, and the proposer's own changes go ahead).
Such an *adopted* value is marked in the accept. Acceptors refuse fresh values that remove a
live node (below) but cannot refuse an adopted one without stalling the epoch forever; if it
removes members they instead stop backing any lease of their epoch (heartbeats with
``back: false``, no grants, no training) and accept once ``suspect_after_s`` has passed since.
Simultaneous events converge to one view per epoch, then on.

**Failure detection and leases.** Members heartbeat the coordinator; the coordinator heartbeats
every member (2n messages per ``heartbeat_s``, not n^2). Only the coordinator suspects members
(silent for ``suspect_after_s``), members only suspect the coordinator; a suspicion heard from
someone else is never acted on, so a cut-off node cannot get healthy ones removed. A member may
*train* only while it holds a lease: the coordinator holds one while it heard heartbeats *of its
epoch* from a majority of its view within ``lease_s`` (a node already in a newer view does not
count, whatever it sends), and grants one in each heartbeat to every member it heard within
``lease_s`` and is not removing. Heartbeats also carry catch-up: a heartbeat of an older epoch
is answered with the receiver's view (a commit), and one of a newer epoch with a heartbeat of the
receiver's own epoch, which draws that commit -- so a member whose commits were lost catches up
even when its coordinator is gone. Acceptors refuse a view that removes themselves (unless leaving)
or a node they watch and heard within ``lease_s`` (unless the value is adopted, above).

**Guarantees.** (1) Agreement: at most one view per epoch (quorum intersection). (2) No split
brain: a view change needs a majority of the previous view, so after a partition only a majority
side moves on; since ``suspect_after_s`` > 2 x ``lease_s`` + message delay, every lease of a
node that is being removed has expired before the view without it is installed: there are never
two concurrent training groups (checked after every event in simulation). An adopted removal
is chosen only after a quorum stopped backing the old epoch's leases ``suspect_after_s`` before:
the coordinator has lost its lease and every lease it granted has expired. (3) Any single node,
the proposer included, may fail at any step. Liveness needs a majority of the last view to be up
and connected. (A crash plus a partition of the survivors can end in a forced two-member view
with the dead node in it: that view has lost its majority, and it stalls.)

Messages are plain dicts (JSON); authentication, replay and size checks are the transport's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

from .kinds import Change, Msg

PREPARE, PROMISE, ACCEPT, ACCEPTED, COMMIT, NACK = \
    Msg.PREPARE, Msg.PROMISE, Msg.ACCEPT, Msg.ACCEPTED, Msg.COMMIT, Msg.NACK
HEARTBEAT, CHANGES, JOIN = Msg.HEARTBEAT, Msg.CHANGES, Msg.JOIN


@dataclass(frozen=True)
class Config:
    heartbeat_s: float = 0.1
    lease_s: float = 0.4
    suspect_after_s: float = 1.0          # must exceed 2 x lease_s + the largest message delay
    propose_timeout_s: float = 0.3        # a non-coordinator proposes after holding a change this long
    retry_s: float = 0.25                 # a proposal without quorum is retried with a higher ballot

    def __post_init__(self):
        if not (0 < self.heartbeat_s < self.lease_s and 2 * self.lease_s < self.suspect_after_s):
            raise ValueError("need 0 < heartbeat_s < lease_s and 2 x lease_s < suspect_after_s")


@dataclass(frozen=True)
class View:
    epoch: int
    members: frozenset[str]
    links: frozenset[tuple[str, str]] = frozenset()   # (a, b) with a < b: connected member pairs
    slots: frozenset[tuple[str, int]] = frozenset()   # (member, worker slots) it advertised

    def to_msg(self) -> dict:
        """Links and slots go by index into the sorted member list: a 64-node full mesh fits
        one datagram."""
        ring = sorted(self.members)
        index = {m: i for i, m in enumerate(ring)}
        return {"epoch": self.epoch, "members": ring,
                "links": sorted([index[a], index[b]] for a, b in self.links),
                "slots": sorted([index[m], k] for m, k in self.slots)}

    @staticmethod
    def from_msg(d: dict) -> "View":
        ring = sorted(d["members"])
        return View(int(d["epoch"]), frozenset(ring),
                    frozenset(link(ring[i], ring[j]) for i, j in d["links"]),
                    frozenset((ring[i], int(k)) for i, k in d.get("slots", ())))

    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    @cached_property
    def _slot_map(self) -> dict[str, int]:
        return dict(self.slots)

    def slots_of(self, member: str) -> int | None:
        """The slot count the member advertised (None: it has not). Asked on every tick."""
        return self._slot_map.get(member)


def link(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def apply_changes(view: View, changes: Iterable[tuple]) -> View:
    """The next view: ('add', n[, slots]) / ('remove', n) / ('link_up', a, b) / ('link_down', a, b) /
    ('slots', n, k). Membership first; links and slots then only between/of members."""
    members, links, slots = set(view.members), set(view.links), dict(view.slots)
    for ch in sorted(set(changes)):
        kind = ch[0]
        if kind == Change.ADD:
            members.add(ch[1])
            if len(ch) == 3:
                slots[ch[1]] = ch[2]
        elif kind in (Change.REMOVE, Change.LEAVE):
            members.discard(ch[1])
        elif kind == Change.LINK_UP:
            links.add(link(ch[1], ch[2]))
        elif kind == Change.LINK_DOWN:
            links.discard(link(ch[1], ch[2]))
        elif kind == Change.SLOTS:
            slots[ch[1]] = ch[2]      # one node advertises one count; sorted order breaks ties
    links = {ln for ln in links if ln[0] in members and ln[1] in members}
    return View(view.epoch + 1, frozenset(members), frozenset(links),
                frozenset((m, k) for m, k in slots.items() if m in members))


def pending_in(view: View, changes: Iterable[tuple]) -> set[tuple]:
    """Changes that the view does not reflect yet (links count only between members)."""
    out = set()
    for ch in changes:
        kind, ch = ch[0], tuple(ch)
        if kind == Change.ADD:
            todo = ch[1] not in view.members
        elif kind in (Change.REMOVE, Change.LEAVE):
            todo = ch[1] in view.members
        elif kind == Change.LINK_UP:
            todo = ch[1] in view.members and ch[2] in view.members \
                and link(ch[1], ch[2]) not in view.links
        elif kind == Change.LINK_DOWN:
            todo = link(ch[1], ch[2]) in view.links
        elif kind == Change.SLOTS:
            todo = ch[1] in view.members and view.slots_of(ch[1]) != ch[2]
        else:
            raise ValueError(f"unknown change {ch!r}")
        if todo:
            out.add(ch)
    return out


@dataclass
class Send:
    dst: str
    msg: dict


@dataclass
class Installed:
    view: View
    previous: View | None


@dataclass
class _Proposal:
    epoch: int
    ballot: tuple[int, str]
    started: float
    promises: dict[str, dict] = field(default_factory=dict)
    accepts: set[str] = field(default_factory=set)
    value: View | None = None


class Member:
    """One node's protocol state. Not thread-safe: the caller serialises events."""

    def __init__(self, node_id: str, view: View | None, config: Config = Config(),
                 seeds: Iterable[str] = (), slots: int | None = None):
        self.id, self.cfg = node_id, config
        self.slots = slots                    # worker slots this node advertises (None: none)
        self._set_view(view)                  # None: not a member yet (joining)
        self.seeds = sorted(set(seeds) - {node_id})
        self.last_heard: dict[str, float] = {}   # failure detection (with a grace period)
        self.lease_heard: dict[str, float] = {}  # heartbeats that back our lease (coordinator)
        self.alive_heard: dict[str, float] = {}  # heartbeats of our epoch: evidence of life
        self._withdrawn_at: float | None = None  # stopped backing leases this epoch (see _on_accept)
        self.lease_until = -1e9
        self.pending: dict[tuple, float] = {}  # change -> when first seen here
        self.origin: dict[tuple, str] = {}     # pending change -> the member that forwarded it
        self._learning: tuple | None = None    # (epoch, ballot, acceptors heard) of our accepted
        self.promised: tuple[int, tuple[int, str]] = (-1, (-1, ""))     # (epoch, ballot)
        self.accepted: tuple[int, tuple[int, str], View] | None = None  # (epoch, ballot, value)
        self.proposal: _Proposal | None = None
        self.round = 0
        self._fast_epoch = -1                 # the epoch whose ballot 0 we used (coordinator)
        self.now = 0.0
        self.left = False
        self._last_heartbeat = -1e9
        self._backoff_until = -1e9
        self._join_asks = 0                   # join requests sent since we last had no view

    # ------------------------------------------------------------ queries
    def coordinator(self) -> str | None:
        """The lowest member id of the view: it grants training leases and proposes first."""
        return self._coordinator

    def watched(self) -> list[str]:
        """Whom this node checks for failure: members watch the coordinator, the coordinator
        watches every member. 2n heartbeats per period, not n^2; only the coordinator (which
        hears everyone) may suspect members, so a partitioned node's suspicions never remove
        healthy ones."""
        return self._watched

    def _set_view(self, view: View | None) -> None:
        """Install `view` and derive what depends only on it (once per view, not per event)."""
        self.view = view
        self._coordinator, self._watched, self._rank = None, [], 0
        if view is None:
            return
        ring = sorted(view.members)
        if not ring:              # everyone left
            return
        self._coordinator = ring[0]
        self._rank = ring.index(self.id) if self.id in view.members else len(ring)
        if self.id in view.members:
            self._watched = ring[1:] if self.id == ring[0] else [ring[0]]

    def quorum_heard(self, now: float) -> bool:
        """Heard (for real, no grace) from a majority of the view within lease_s."""
        heard = 1 + sum(1 for m in self.view.members if m != self.id
                        and now - self.lease_heard.get(m, -1e9) <= self.cfg.lease_s)
        return heard >= self.view.quorum()

    def _removing(self) -> set[str]:
        """Members a pending change or the running proposal would remove."""
        out = {c[1] for c in self.pending if c[0] in (Change.REMOVE, Change.LEAVE)}
        if self.proposal is not None and self.proposal.value is not None:
            out |= self.view.members - self.proposal.value.members
        return out

    def can_train(self, now: float | None = None) -> bool:
        """Holds a training lease. The coordinator does while it hears a majority of its view
        within lease_s; every other member while the coordinator's latest heartbeat for this
        epoch, received within lease_s, said so."""
        now = self.now if now is None else now
        if self.view is None or self.left or self.id not in self.view.members:
            return False
        if self._withdrawn_at is not None:
            return False
        if self.id == self.coordinator():
            return self.quorum_heard(now)
        return now <= self.lease_until

    # ------------------------------------------------------------ events
    def observe(self, change: tuple, now: float) -> list:
        """A local observation: ('add', n) for a join request, ('leave', self) to leave,
        ('remove', n) for a failure this node detected, ('link_up'|'link_down', a, b) from the
        monitor."""
        return self.observe_all([change], now)

    def observe_all(self, changes: Iterable[tuple], now: float) -> list:
        """Several observations at once (a monitor's link changes of one period): one
        message to the coordinator for all of them, not one per change."""
        self.now = now
        changes = [tuple(ch) for ch in changes]
        if (Change.LEAVE, self.id) in changes:
            self.left = True          # stops training now; stays an acceptor until removed
        if self.view is None:
            return []
        for change in pending_in(self.view, changes):
            self.pending.setdefault(change, now)
        return self._forward_or_propose(now)

    def tick(self, now: float) -> list:
        self.now = now
        out: list = []
        if self.view is None:        # joining: keep asking the seeds
            if self.left:
                return out
            if now - self._last_heartbeat >= self.cfg.heartbeat_s * 3:
                self._last_heartbeat = now
                join = {"type": JOIN, **({"slots": self.slots} if self.slots else {})}
                # the first request goes to the lowest seed alone (the coordinator, when the
                # seeds are the members), so the members do not all forward it at once
                out += [Send(s, join) for s in (self.seeds if self._join_asks else self.seeds[:1])]
                self._join_asks += 1
            return out
        if now - self._last_heartbeat >= self.cfg.heartbeat_s and self.id in self.view.members:
            self._last_heartbeat = now
            hb = {"type": HEARTBEAT, "epoch": self.view.epoch}
            if self.id != self.coordinator():
                if self._withdrawn_at is not None:
                    hb["back"] = False             # alive, but no longer backing its lease
                out += [Send(m, hb) for m in self.watched()]
            else:   # leases only to members heard within lease_s and not being removed
                quorum = self.quorum_heard(now) and self._withdrawn_at is None
                removing = self._removing()
                out += [Send(m, {**hb, "lease": quorum and m not in removing and
                                 now - self.lease_heard.get(m, -1e9) <= self.cfg.lease_s})
                        for m in self.watched()]
        mine = (Change.SLOTS, self.id, self.slots)
        if self.slots and not self.left and pending_in(self.view, [mine]):
            self.pending.setdefault(mine, now)   # founders say theirs
        for m in self.watched():
            self.last_heard.setdefault(m, now)   # a fresh view gives everyone a grace period
            if now - self.last_heard[m] > self.cfg.suspect_after_s:
                self.pending.setdefault((Change.REMOVE, m), now)
        if self.proposal and now - self.proposal.started > self.cfg.retry_s:
            self.proposal = None                      # no quorum in time: retry, higher ballot
        return out + self._forward_or_propose(now)

    def deliver(self, src: str, msg: dict, now: float) -> list:
        self.now = now
        self.last_heard[src] = now
        kind = msg.get("type")
        # Lease evidence is only a heartbeat *of our epoch*: a node that moved on to a newer view
        # still answers us (catch-up commits), but it no longer backs our lease. (The simulator
        # found a minority coordinator re-taking its lease from such replies after a heal.)
        if kind == HEARTBEAT and self.view is not None and msg.get("epoch") == self.view.epoch:
            self.alive_heard[src] = now
            if msg.get("back", True):
                self.lease_heard[src] = now
        self.pending.pop((Change.REMOVE, src), None)      # it is alive after all
        handler = {HEARTBEAT: self._on_heartbeat, CHANGES: self._on_changes, JOIN: self._on_join,
                   PREPARE: self._on_prepare, PROMISE: self._on_promise, ACCEPT: self._on_accept,
                   ACCEPTED: self._on_accepted, COMMIT: self._on_commit,
                   NACK: self._on_nack}.get(kind)
        if handler is None:
            raise ValueError(f"unknown message type {kind!r}")
        return handler(src, msg, now)

    # ------------------------------------------------------------ handlers
    def _on_heartbeat(self, src, msg, now):
        if self.view is None:
            return []
        if msg["epoch"] < self.view.epoch:
            # help it catch up; a node removed without hearing of it learns so here and rejoins
            # (before, it waited for its own proposal turn: up to rank x propose_timeout_s)
            return [Send(src, {"type": COMMIT, "view": self.view.to_msg()})]
        if msg["epoch"] > self.view.epoch:
            # we missed views (their commits were lost, say in a partition) and our coordinator
            # may be gone, so nobody else will tell us: our heartbeat of the old epoch makes
            # the sender answer with its view (random soak: a lagging third of a view could not
            # vote on the next epoch and the majority's proposers duelled for good)
            return [Send(src, {"type": HEARTBEAT, "epoch": self.view.epoch})]
        if msg.get("lease") and msg["epoch"] == self.view.epoch and src == self.coordinator():
            self.lease_until = now + self.cfg.lease_s
        return []

    def _on_join(self, src, msg, now):
        if self.view is None:
            return []
        if src in self.view.members:
            return [Send(src, {"type": COMMIT, "view": self.view.to_msg()})]
        # the add carries the joiner's slots: discovery never sees it without them
        change = (Change.ADD, src, msg["slots"]) if msg.get("slots") else (Change.ADD, src)
        return self.observe(change, now)

    def _on_changes(self, src, msg, now):
        if self.view is None:
            return []
        for ch in msg["changes"]:
            ch = tuple(ch)
            # failures are decided by our own detector, never by hearsay: a partitioned node's
            # suspicions must not remove members we still hear
            if ch[0] != Change.REMOVE and pending_in(self.view, [ch]):
                self.pending.setdefault(ch, now)
                self.origin.setdefault(ch, src)
        return self._forward_or_propose(now)

    def _forward_or_propose(self, now: float) -> list:
        self.pending = {c: t for c, t in self.pending.items() if pending_in(self.view, [c])}
        self.origin = {c: m for c, m in self.origin.items() if c in self.pending}
        if not self.pending or self.proposal is not None:
            return []
        coord = self.coordinator()
        oldest = min(self.pending.values())
        # when the coordinator is gone every member wants to propose: members take turns in id
        # order (the 2nd lowest first), so they do not duel ballot after ballot
        turn = self._rank * self.cfg.propose_timeout_s
        if coord == self.id or (now - oldest >= turn and now >= self._backoff_until):
            return self._propose(now)
        return [Send(coord, {"type": CHANGES, "changes": [list(c) for c in sorted(self.pending)]})]

    def _propose(self, now: float) -> list:
        epoch = self.view.epoch + 1
        fast = (0, self.id)
        if self.id == self.coordinator() and self._fast_epoch != epoch \
                and (epoch, fast) >= self.promised and \
                (self.accepted is None or self.accepted[0] != epoch):
            # Ballot 0 is the lowest of the epoch and only the coordinator may use it, once:
            # no value can have been accepted below it, so its phase 1 is empty -- send the
            # accept at once (one round trip instead of two). A retry uses a full phase 1.
            self._fast_epoch = epoch
            self.proposal = _Proposal(epoch, fast, now)
            self.proposal.value = apply_changes(self.view, self.pending)
            acc = {"type": ACCEPT, "epoch": epoch, "ballot": list(fast),
                   "view": self.proposal.value.to_msg(), **self._notify()}
            return [Send(m, acc) for m in self._fan_out()] + self._on_accept(self.id, acc, now)
        self.round = max(self.round, self.promised[1][0]) + 1
        self.proposal = _Proposal(epoch, (self.round, self.id), now)
        msg = {"type": PREPARE, "epoch": epoch, "ballot": list(self.proposal.ballot)}
        return [Send(m, msg) for m in sorted(self.view.members) if m != self.id] + \
            self._on_prepare(self.id, msg, now)

    def _observers(self) -> set[str]:
        """Members that observed a pending change and forwarded it here: they wait on it."""
        return {m for m in self.origin.values() if m != self.id and m in self.view.members}

    def _fan_out(self, also: Iterable[str] = ()) -> list[str]:
        """Everyone else in the view (and `also`), the observers first: they wait on the outcome,
        and an observer must accept before it can learn."""
        waiting = self._observers()
        return sorted((self.view.members | set(also)) - {self.id},
                      key=lambda m: (m not in waiting, m))

    def _notify(self) -> dict:
        """An accept names the observers: acceptors send them their accepted too, so they learn
        the outcome from a quorum of accepteds, a hop before the commit (Paxos learners)."""
        return {"notify": sorted(self._observers())} if self._observers() else {}

    def _ballot_ok(self, epoch: int, ballot: tuple) -> bool:
        return self.view is not None and epoch == self.view.epoch + 1 and \
            (epoch, ballot) >= self.promised

    def _on_prepare(self, src, msg, now):
        epoch, ballot = msg["epoch"], tuple(msg["ballot"])
        if self.view is None:
            return []
        if epoch <= self.view.epoch:      # the proposer is behind: give it the newest view
            return self._reply(src, {"type": COMMIT, "view": self.view.to_msg()}, now)
        if not self._ballot_ok(epoch, ballot) or epoch != self.view.epoch + 1:
            return self._reply(src, {"type": NACK, "epoch": epoch,
                                     "promised": list(self.promised[1])}, now)
        self.promised = (epoch, ballot)
        acc = None
        if self.accepted is not None and self.accepted[0] == epoch:
            acc = {"ballot": list(self.accepted[1]), "view": self.accepted[2].to_msg()}
        return self._reply(src, {"type": PROMISE, "epoch": epoch, "ballot": list(ballot),
                                 "accepted": acc}, now)

    def _reply(self, dst, msg, now):
        return self.deliver(self.id, msg, now) if dst == self.id else [Send(dst, msg)]

    def _on_promise(self, src, msg, now):
        p = self.proposal
        if p is None or msg["epoch"] != p.epoch or tuple(msg["ballot"]) != p.ballot \
                or p.value is not None or src not in self.view.members:
            return []
        p.promises[src] = msg
        if len(p.promises) < self.view.quorum():
            return []
        prior = [m["accepted"] for m in p.promises.values() if m["accepted"]]
        # Paxos keeps the newest accepted value, since it may have been chosen. It may have been
        # only if its acceptors plus the members that did not answer can make a quorum: an
        # acceptor that promised us without having accepted anything never accepted below our
        # ballot. (Without this a two-member view deadlocked: one had accepted removing the
        # other during a partition, and the other refuses its own removal -- found by soak.)
        silent = len(self.view.members) - len(p.promises)
        adopted = bool(prior) and len(prior) + silent >= self.view.quorum()
        if adopted:
            p.value = View.from_msg(max(prior, key=lambda a: tuple(a["ballot"]))["view"])
        else:
            p.value = apply_changes(self.view, self.pending)
        acc = {"type": ACCEPT, "epoch": p.epoch, "ballot": list(p.ballot),
               "view": p.value.to_msg(), **({"adopted": True} if adopted else {}),
               **self._notify()}
        return [Send(m, acc) for m in self._fan_out()] + self._on_accept(self.id, acc, now)

    def _on_accept(self, src, msg, now):
        epoch, ballot = msg["epoch"], tuple(msg["ballot"])
        if self.view is None or not self._ballot_ok(epoch, ballot):
            return []
        if msg.get("adopted") and not self.view.members <= set(msg["view"]["members"]):
            # A value Paxos forces on us (it may have been chosen) that removes members: we may
            # not refuse it (the epoch would stall for good), but a node it removes may be alive
            # and training. So we stop backing any lease of this epoch, and accept only after
            # suspect_after_s (> 2 x lease_s + delay): once a quorum has done so, the coordinator
            # has lost its lease and every lease it granted has expired. Proposers retry meanwhile.
            if self._withdrawn_at is None:
                self._withdrawn_at = now
            if now - self._withdrawn_at < self.cfg.suspect_after_s:
                return []
        elif self._unjustified_removal(msg["view"]["members"], ballot[1], now):
            return self._reply(src, {"type": NACK, "epoch": epoch,
                                     "promised": list(self.promised[1])}, now)
        self.promised = (epoch, ballot)
        self.accepted = (epoch, ballot, View.from_msg(msg["view"]))
        self._learning = (epoch, ballot, {self.id})
        reply = {"type": ACCEPTED, "epoch": epoch, "ballot": list(ballot)}
        learners = [m for m in msg.get("notify", ()) if m not in (src, self.id)
                    and m in self.view.members]
        return self._reply(src, reply, now) + [Send(m, reply) for m in learners]

    def _unjustified_removal(self, members: list, proposer: str, now: float) -> bool:
        """Would this value remove a node we have evidence is alive and staying? We refuse to
        remove ourselves unless leaving, and any node we watch and heard within lease_s (it may
        hold or grant a lease) unless it leaves or proposes its own removal."""
        keep = set(members)
        for m in self.view.members - keep:
            if m == self.id:
                if not self.left:
                    return True
            elif m in self._watched and m != proposer and (Change.LEAVE, m) not in self.pending \
                    and now - self.alive_heard.get(m, -1e9) <= self.cfg.lease_s:
                return True
        return False

    def _on_accepted(self, src, msg, now):
        p = self.proposal
        if p is None or p.value is None or msg["epoch"] != p.epoch \
                or tuple(msg["ballot"]) != p.ballot or src not in self.view.members:
            return self._learn(src, msg, now)
        p.accepts.add(src)
        if len(p.accepts) < self.view.quorum():
            return []
        commit = {"type": COMMIT, "view": p.value.to_msg()}
        return [Send(m, commit) for m in self._fan_out(p.value.members)] + \
            self._install(p.value, now)

    def _learn(self, src, msg, now):
        """An accepted sent to us as an observer: once a quorum of the view (us included)
        accepted the ballot we accepted, its value is chosen -- install it without waiting for
        the commit. One ballot carries one value, so this is the view the commit will bring."""
        lr = self._learning
        if lr is None or (msg["epoch"], tuple(msg["ballot"])) != lr[:2] or self.view is None \
                or src not in self.view.members or self.accepted is None \
                or self.accepted[:2] != lr[:2]:
            return []
        lr[2].add(src)
        if len(lr[2]) < self.view.quorum():
            return []
        return self._install(self.accepted[2], now)

    def _on_commit(self, src, msg, now):
        view = View.from_msg(msg["view"])
        if self.view is not None and view.epoch <= self.view.epoch:
            return []
        if self.id not in view.members and self.view is None:
            return []       # not admitted yet; keep asking
        if self.view is None:
            self.seeds = sorted(view.members - {self.id})
        return self._install(view, now)

    def _on_nack(self, src, msg, now):
        p = self.proposal
        if p is not None and msg["epoch"] == p.epoch and tuple(msg["promised"]) > p.ballot:
            self.round = max(self.round, msg["promised"][0])
            self.proposal = None       # a higher ballot is running; retry later if still needed
            self._backoff_until = now + self.cfg.retry_s * (1 + self._rank)
        return []

    def _install(self, view: View, now: float) -> list:
        previous = self.view
        self._set_view(view)
        self.proposal = None
        self._learning = None
        if self.accepted is not None and self.accepted[0] <= view.epoch:
            self.accepted = None
        if self.promised[0] <= view.epoch:
            self.promised = (view.epoch, (-1, ""))
        # grace: re-detect from scratch. (Carrying timestamps over while the coordinator stays
        # would detect a crash sooner after unrelated view changes, but the simulator found it
        # breaks the lease argument after a partition: kept as is.)
        self.last_heard = {m: now for m in view.members}
        self.lease_until = -1e9                              # a lease is per epoch
        self._withdrawn_at = None
        # a suspicion is only ours to act on while we watch that node: a member that suspected
        # the old coordinator must not later propose removing it as a plain member (the soak
        # found such a stale suspicion removing a live member that held a lease)
        self.pending = {c: t for c, t in self.pending.items()
                        if c[0] != Change.REMOVE or c[1] in self._watched}
        if self.left and self.id in view.members:
            # asked to leave while its join was still on the way: it is a member now, so leave
            self.pending.setdefault((Change.LEAVE, self.id), now)
        out: list = [Installed(view, previous)]
        if self.id not in view.members:
            # removed: after a voluntary leave we are done; after a false suspicion, rejoin
            self._set_view(None)
            self.seeds = sorted(view.members)
            self.pending.clear()
            self.origin.clear()
            self._join_asks = 0
            return out
        return out + self._forward_or_propose(now)
