"""The cluster agent: one per node; wires the protocol and the monitor to the network (asyncio).

Sockets of an agent with id ``ID`` (its Horovod host name, or ``host:port``):

* UDP ``port``: peer messages (wire.py envelopes: HMAC-SHA256, replay guard, size and schema
  checks) — the protocol's (heartbeat, join, changes, Paxos) and the monitor's (ping/pong for
  link state and RTT, metrics gossip with probe results and resources);
* TCP ``port``: bandwidth probes (monitor.py);
* Unix socket (mode 0600): the local API, one JSON line in and one out — ``view``, ``status``,
  ``bandwidth``, ``observe`` (inject a monitor observation), ``leave``. ``chaos-hvd discover``
  and ``ChaosState`` read it; nothing on the network can.

Every event is one JSON line in the event log (``EventLog``): ``start``, ``install`` (epoch,
what changed, and for each change the handling latency from its arrival at this agent to the
view being installed here), ``suspect`` (failure detected), ``link_down``/``link_up`` (monitor
observations), ``join_request``, ``leave``, ``lease`` (gained/lost), ``probe``, ``rejected``
(forged, replayed, stale, oversized, malformed; rate-limited per reason), ``stop``.

The protocol runs on ``time.monotonic()``; the event loop is single-threaded, so the Member's
"not thread-safe" contract holds. Probe slots follow the agreed view (probe_plan.py): every
member computes the same schedule when it installs a view that changed membership, so the new
members' links are measured first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from .. import events as ev
from .. import jsonline
from ..errors import MalformedMessage, PeerMessageError, StaleMessage
from ..events import EventLog
from ..rules import parse_node_id
from . import probe_plan, wire
from .kinds import Change, Msg
from .linkstate import LinkWatch, Rate, RateTable
from .local_api import LocalApi
from .monitor import ProbeService, Resources
from .protocol import Config, Installed, Member, Send, View, link, pending_in

log = logging.getLogger(__name__)

MAX_RTT_NS = 60 * 10 ** 9      # a pong older than this is not ours
MAX_MBPS = 1e7                 # 10 Tbit/s: a measured rate above is a lie

DEFAULT_PORT = 7470


def split_id(node_id: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'10.0.0.1' -> ('10.0.0.1', default); 'h:7471' -> ('h', 7471); '[::1]:7471' -> ('::1', 7471).
    By the one rule (:func:`chaos_hvd.rules.parse_node_id`): a bad id is a RuleError."""
    host, port = parse_node_id(node_id, "agent id")
    return host, default_port if port is None else port


@dataclass
class AgentOptions:
    id: str
    secret: bytes
    members: tuple[str, ...] = ()      # founders: the first view (epoch 1), same list everywhere
    seeds: tuple[str, ...] = ()        # whom a joiner asks to be admitted
    slots: int | None = None           # Horovod worker slots of this host, agreed in the view
    port: int = DEFAULT_PORT           # for ids without a port
    bind: str | None = None            # default: the id's host
    socket_path: str | None = None
    event_log: str | None = None
    protocol: Config = field(default_factory=Config)
    ping_s: float = 0.2
    link_down_s: float = 0.6
    link_up_s: float = 0.4
    probe_s: float = 0.25              # per direction; 0 disables probes
    probe_refresh_s: float = 30.0
    resources_s: float = 2.0
    tick_s: float = 0.01
    leave_timeout_s: float = 3.0

    def __post_init__(self):
        for node in (self.id, *self.members, *self.seeds):
            if not wire.is_id(node):
                raise ValueError(f"agent id {node!r}: use a host name, an IP or host:port "
                                 "(port 1..65535)")
        if len(self.secret) < 16:
            raise ValueError("the cluster secret must be at least 16 bytes")
        if self.slots is not None and not 1 <= self.slots <= wire.MAX_SLOTS:
            raise ValueError(f"slots must be 1..{wire.MAX_SLOTS}, got {self.slots}")
        if not self.members and not self.seeds:
            raise ValueError("give --members (founders) or --seeds (to join a running cluster)")
        if self.members and self.id not in self.members and not self.seeds:
            self.seeds = tuple(self.members)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, agent: "Agent"):
        self.agent = agent

    def datagram_received(self, data, addr):
        self.agent.on_datagram(data, addr)

    def error_received(self, exc):   # ICMP port unreachable from a dead peer: heartbeats decide
        pass


class Agent:
    def __init__(self, opts: AgentOptions):
        self.o = opts
        self.me = opts.id
        founders = set(opts.members)
        view = View(1, frozenset(founders)) if self.me in founders else None
        self.member = Member(self.me, view, opts.protocol, seeds=set(opts.seeds) | founders,
                             slots=opts.slots)
        self.log = EventLog(opts.event_log, agent=self.me)
        self.seq = wire.SeqClock()
        self.guard = wire.ReplayGuard()
        self.watch = LinkWatch(opts.link_down_s, opts.link_up_s)
        self.rates = RateTable()
        self.resources: dict[str, dict] = {}
        self.res = Resources()
        self.probes = ProbeService(self.me, opts.secret, self.seq, self._rejected)
        self.seen: dict[tuple, float] = {}       # change -> first arrival here (monotonic)
        self._reported: dict[tuple, float] = {}  # link observations: last time we told the protocol
        self._addr: dict[str, tuple] = {}
        self._reject_log: dict[str, tuple[float, int]] = {}
        self._lease = False
        self._stop = asyncio.Event()
        self._leaving_since: float | None = None
        self._probe_task: asyncio.Task | None = None
        self.transport = None
        self.counters = {"sent": 0, "received": 0, "rejected": 0}

    # ------------------------------------------------------------ plumbing
    def _address(self, node: str) -> tuple:
        addr = self._addr.get(node)
        if addr is None:
            host, port = split_id(node, self.o.port)
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            addr = self._addr[node] = info[0][4]
        return addr

    def send(self, dst: str | list[str], body: dict) -> None:
        """`body` to one peer, or to a list of peers in that order (sealed once: a fan-out)."""
        dsts = [d for d in ([dst] if isinstance(dst, str) else dst) if d != self.me]
        if not dsts or self.transport is None:
            return
        try:
            data = wire.seal(self.o.secret, self.me, dsts[0] if len(dsts) == 1 else dsts,
                             self.seq.next(time.time_ns()), body)
        except PeerMessageError as e:
            if len(dsts) > 1:      # a receiver list too long for one datagram: one each
                for d in dsts:
                    self.send(d, body)
                return
            self.log.write(ev.SendFailed(dst=dsts[0], type=body.get("type"), error=str(e),
                                         epoch=self.epoch))
            return
        for d in dsts:
            try:
                self.transport.sendto(data, self._address(d))
                self.counters["sent"] += 1
            except OSError as e:
                self.log.write(ev.SendFailed(dst=d, type=body.get("type"), error=str(e),
                                             epoch=self.epoch))

    def _rejected(self, reason: str, peer: str, detail: str) -> None:
        """Log a rejected message; at most one line per reason per second (a flood stays cheap)."""
        self.counters["rejected"] += 1
        now = time.monotonic()
        last, suppressed = self._reject_log.get(reason, (-1e9, 0))
        if now - last < 1.0:
            self._reject_log[reason] = (last, suppressed + 1)
            return
        self._reject_log[reason] = (now, 0)
        log.warning("rejected a message from %s: %s (%s)", peer, reason, detail[:120])
        self.log.write(ev.Rejected(reason=reason, peer=peer, detail=detail[:300],
                                  suppressed=suppressed, epoch=self.epoch))

    @property
    def epoch(self) -> int | None:
        return self.member.view.epoch if self.member.view else None

    # ------------------------------------------------------------ protocol I/O
    def _run(self, outputs: list, now: float) -> None:
        for ch, t in self.member.pending.items():
            if ch not in self.seen:
                self.seen[ch] = t
                if ch[0] == "remove" and ch[1] != self.me:
                    log.info("suspect %s (no heartbeat)", ch[1])
                    self.log.write(ev.Suspect(node=ch[1], epoch=self.epoch))
        fanout: list[str] = []        # consecutive Sends of one message: sealed once
        for i, out in enumerate(outputs):
            if isinstance(out, Send):
                fanout.append(out.dst)
                after = outputs[i + 1] if i + 1 < len(outputs) else None
                if not (isinstance(after, Send) and after.msg is out.msg):
                    self.send(fanout, out.msg)
                    fanout = []
            elif isinstance(out, Installed):
                self._installed(out.view, out.previous, now)
        # a change the protocol dropped (a suspicion cleared by a heartbeat) starts afresh
        self.seen = {ch: t for ch, t in self.seen.items() if ch in self.member.pending}

    def _installed(self, view: View, prev: View | None, now: float) -> None:
        handled = [ch for ch in self.seen if not pending_in(view, [ch])]
        lat = {" ".join(map(str, ch)): round((now - self.seen.pop(ch)) * 1e3, 3) for ch in handled}
        pm = prev.members if prev else frozenset()
        pl = prev.links if prev else frozenset()
        log.info("view %d: %d members, +%s -%s", view.epoch, len(view.members),
                 sorted(view.members - pm), sorted(pm - view.members))
        self.log.write(ev.Install(
            epoch=view.epoch, members=sorted(view.members),
            coordinator=min(view.members, default=None),   # None: everyone left
            added=sorted(view.members - pm), removed=sorted(pm - view.members),
            links_up=sorted(map(list, view.links - pl)),
            links_down=sorted(map(list, {ln for ln in pl - view.links if set(ln) <= view.members})),
            slots=dict(sorted(view.slots)), handled_ms=lat,
            latency_ms=max(lat.values()) if lat else None, in_view=self.me in view.members))
        keep = set(view.members)
        self.watch.forget(keep)
        self.rates.restrict(keep)
        self.resources = {m: r for m, r in self.resources.items() if m in keep}
        if self.me not in view.members:
            if self._leaving_since is not None:
                self._stop.set()
            else:
                self.log.write(ev.Removed(epoch=view.epoch))   # a false suspicion: rejoin
            return
        # refresh on topology events: newcomers' links, or links that came back, measured first
        if prev is None or prev.members != view.members:
            self._restart_probes(first=view.members - pm if prev else ())
        elif view.links - pl:
            self._restart_probes(first={x for ln in view.links - pl for x in ln})

    def on_datagram(self, data: bytes, addr) -> None:
        self.counters["received"] += 1
        now = time.monotonic()
        try:
            src, body = wire.open_envelope(self.o.secret, self.me, data, self.guard,
                                           time.time_ns())
            kind = body["type"]
            if kind in wire.PROTOCOL_TYPES:
                why = wire.stale_reason(body, self.epoch)
                if why:
                    raise StaleMessage(f"from {src}: {why}")
                why = wire.implausible_reason(body, self.epoch)
                if why:
                    raise MalformedMessage(f"from {src}: {why}")
                if kind == Msg.JOIN and (self.member.view is None
                                       or src not in self.member.view.members):
                    self.log.write(ev.JoinRequest(node=src, epoch=self.epoch))
                try:
                    outputs = self.member.deliver(src, body, now)
                except (KeyError, TypeError, ValueError, IndexError) as e:
                    raise MalformedMessage(f"{kind} from {src}: {e!r}") from None
                self._run(outputs, now)
            elif kind == Msg.PING:
                self.send(src, {"type": Msg.PONG, "echo": body["t"]})
            elif kind == Msg.PONG:
                rtt_ns = time.monotonic_ns() - body["echo"]
                if not 0 <= rtt_ns <= MAX_RTT_NS:      # not an echo of one of our pings
                    raise MalformedMessage(f"pong from {src} echoes {body['echo']}")
                self.watch.pong(src, rtt_ns / 1e9, now)
            elif kind == Msg.METRICS:
                self._metrics(src, body)
            else:
                raise MalformedMessage(f"{kind} is not a datagram message")
        except PeerMessageError as e:
            self._rejected(e.reason, f"{addr[0]}:{addr[1]}", str(e))

    def _metrics(self, src: str, body: dict) -> None:
        """Measured rates and resources gossiped by a member (bounded, members only)."""
        view = self.member.view
        if view is None or src not in view.members:
            raise StaleMessage(f"metrics from {src}, which is not a member")
        for row in body["links"]:
            _, _, mbps, rtt, _ = row
            if not 0 < mbps <= MAX_MBPS or (rtt is not None and not 0 <= rtt <= MAX_RTT_NS / 1e6):
                raise MalformedMessage(f"metrics from {src}: implausible row {row}")
        # rows about former members (the sender's view may be older) are dropped, not stored
        self.rates.merge([r for r in body["links"]
                          if r[0] in view.members and r[1] in view.members])
        self.resources[src] = dict(body["resources"], at_unix=time.time())

    def observe(self, change: tuple, now: float | None = None) -> None:
        self.observe_all([change], now)

    def observe_all(self, changes: list[tuple], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        spelt = []
        for change in map(tuple, changes):
            if change[0] in (Change.LINK_UP, Change.LINK_DOWN):   # one spelling: (kind, lo, hi)
                change = (change[0], *link(change[1], change[2]))
            spelt.append(change)
        self._run(self.member.observe_all(spelt, now), now)

    # ------------------------------------------------------------ periodic work
    async def _ticker(self) -> None:
        last_ping = last_res = -1e9
        while not self._stop.is_set():
            now = time.monotonic()
            self._run(self.member.tick(now), now)
            view = self.member.view
            if view is not None and self.me in view.members:
                if now - last_ping >= self.o.ping_s:
                    last_ping = now
                    peers = sorted(view.members - {self.me})
                    for m in peers:
                        self.watch.ping(m, now)
                    self.send(peers, {"type": Msg.PING, "t": time.monotonic_ns()})
                    self._reconcile_links(view, now)
                if now - last_res >= self.o.resources_s:
                    last_res = now
                    self._gossip_metrics(view)
            lease = self.member.can_train(now)
            if lease != self._lease:
                self._lease = lease
                self.log.write(ev.Lease(held=lease, epoch=self.epoch))
            if self._leaving_since is not None and \
                    now - self._leaving_since > self.o.leave_timeout_s:
                self.log.write(ev.LeaveTimeout(epoch=self.epoch))
                self._stop.set()
            await asyncio.sleep(self.o.tick_s)

    def _reconcile_links(self, view: View, now: float) -> None:
        """Tell the protocol where the view's links differ from what pings say (both ends do),
        all of this period's differences in one observation."""
        changes = []
        for peer in sorted(view.members - {self.me}):
            state = self.watch.state(peer, now)
            ln = link(self.me, peer)
            if state is None or (state == "up") == (ln in view.links):
                continue
            up = state == "up"
            ch = ("link_up" if up else "link_down", *ln)
            if now - self._reported.get(ch, -1e9) < 2 * self.o.ping_s:
                continue
            if ch not in self._reported:
                record = ev.LinkUp if up else ev.LinkDown
                self.log.write(record(link=list(ln), rtt_ms=self.watch.rtt_ms(peer),
                                      epoch=view.epoch))
            self._reported = {c: t for c, t in self._reported.items() if c[1:] != ch[1:]}
            self._reported[ch] = now
            changes.append(ch)
        if changes:
            self.observe_all(changes, now)

    def _gossip_metrics(self, view: View, rows: list | None = None) -> None:
        res = self.res.sample()
        self.resources[self.me] = dict(res, at_unix=time.time())
        body = {"type": Msg.METRICS, "links": rows if rows is not None else
                self.rates.rows(involving=self.me)[:2 * wire.MAX_MEMBERS], "resources": res}
        self.send(sorted(view.members - {self.me}), body)

    # ------------------------------------------------------------ probes
    def _restart_probes(self, first) -> None:
        if self.o.probe_s <= 0:
            return
        if self._probe_task is not None:
            self._probe_task.cancel()
        self._probe_task = asyncio.get_running_loop().create_task(
            self._probe_cycles(self.member.view, set(first)))

    async def _probe_cycles(self, view: View, first: set) -> None:
        """Probe slots sit on the wall clock, shared by the members (NTP-close on real hosts, one
        clock in the testbed): a cycle starts at the first slot boundary 0.2 s after the view was
        installed, so members that installed it within that margin agree on every slot."""
        slot = 2 * self.o.probe_s + 0.3
        while not self._stop.is_set():
            rounds = probe_plan.probe_rounds(view.members, first)
            start = math.ceil((time.time() + 0.2) / slot) * slot
            mine = probe_plan.my_probes(rounds, self.me)
            failed = []
            for rnd, peer in mine:
                await self._sleep_until(start + rnd * slot)
                if not await self._probe(view, peer):
                    failed.append(peer)
            for i, peer in enumerate(failed):      # refused (busy) or lost: once more
                await self._sleep_until(start + (len(rounds) + i) * slot)
                await self._probe(view, peer)
            first = set()
            await self._sleep_until(start + max(self.o.probe_refresh_s,
                                                (len(rounds) + len(failed)) * slot))

    @staticmethod
    async def _sleep_until(t_unix: float) -> None:
        delay = t_unix - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _probe(self, view: View, peer: str) -> bool:
        host, port = self._address(peer)[:2]
        down, up = await self.probes.lead(peer, host, port, self.o.probe_s)
        rtt = self.watch.rtt_ms(peer)
        now_unix = time.time()
        rows = []
        for src, dst, mbps in ((peer, self.me, down), (self.me, peer, up)):
            if mbps is not None:
                self.rates.update(src, dst, Rate(mbps, rtt, now_unix))
                rows.append([src, dst, mbps, rtt, now_unix])
        self.log.write(ev.Probe(peer=peer, mbps_to_me=down, mbps_from_me=up, rtt_ms=rtt,
                                epoch=view.epoch))
        if rows and self.member.view is not None:
            self._gossip_metrics(self.member.view, rows)
        return len(rows) == 2

    # ------------------------------------------------------------ lifecycle
    @property
    def leaving(self) -> bool:
        return self._leaving_since is not None

    def leave(self) -> None:
        if self._leaving_since is not None:
            return
        self._leaving_since = time.monotonic()
        self.log.write(ev.Leave(epoch=self.epoch))
        if self.member.view is None or self.me not in self.member.view.members:
            self._stop.set()
            return
        self.observe((Change.LEAVE, self.me))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = split_id(self.me, self.o.port)
        bind = self.o.bind or host
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                                local_addr=(bind, port))
        probe_server = await asyncio.start_server(self.probes.serve, bind, port)
        api_server = None
        if self.o.socket_path:
            if os.path.exists(self.o.socket_path):
                os.unlink(self.o.socket_path)      # a previous agent's, dead (we bound the port)
            api_server = await asyncio.start_unix_server(LocalApi(self).serve, self.o.socket_path,
                                                         limit=jsonline.MAX_LINE_BYTES + 2)
            os.chmod(self.o.socket_path, 0o600)
        if threading.current_thread() is threading.main_thread():   # embedded: caller's signals
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.leave)
        self.log.write(ev.AgentStarted(
            addr=f"{bind}:{port}", founders=sorted(self.o.members), seeds=sorted(self.o.seeds),
            epoch=self.epoch, heartbeat_s=self.o.protocol.heartbeat_s,
            suspect_after_s=self.o.protocol.suspect_after_s))
        if self.member.view is not None:
            self._restart_probes(first=())
        try:
            await self._ticker()
        finally:
            if self._probe_task:
                self._probe_task.cancel()
            probe_server.close()
            if api_server:
                api_server.close()
                try:
                    os.unlink(self.o.socket_path)
                except OSError:
                    pass
            self.transport.close()
            self.log.write(ev.AgentStopped(epoch=self.epoch, counters=dict(self.counters)))


def run_agent(opts: AgentOptions) -> None:
    """Run an agent until it leaves. On uvloop where it is installed: every view change is a
    chain of datagram hops between agent processes, and uvloop's event loop wakes for a datagram
    faster than asyncio's own (a fan-out round trip to 7 processes from idle CPUs here: ~0.45 ms
    against ~0.7 ms)."""
    try:
        import uvloop
    except ImportError:
        log.info("uvloop is not installed: running on asyncio's own event loop")
        asyncio.run(Agent(opts).run())
        return
    uvloop.run(Agent(opts).run())
