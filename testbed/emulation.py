"""One running testbed instance: network + hosts + discovery + timeline, and how actions apply.

``Testbed`` is a context manager: leaving the block (normally, by exception, or by the SIGINT /
SIGTERM / SIGHUP handlers the CLI installs) tears everything down through the registry. A
SIGKILLed testbed leaves its registry behind for ``chaos-testbed clean``.

Discovery for elastic Horovod: ``<run dir>/discover.sh`` prints ``IP:slots`` of every host that is
currently discoverable (non-standby workers at start; ``join`` adds one, ``crash``/``leave``
remove one), read from a file the testbed rewrites atomically. With ``agents=AgentMode()`` the
hosts run cluster agents instead and the script asks them (testbed/agents.py): the testbed then
tells Horovod nothing itself.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict

import yaml

from chaos_hvd import events
from chaos_hvd.events import EventLog

from .agents import AgentMode, HostAgents
from .capabilities import Capabilities, probe
from .errors import CapabilityError, NotRootError
from .faults import Action, Kind
from .hosts import HostProcesses
from .network import EmulatedNetwork
from .registry import Registry
from .topology import MAX_RATE_BPS, Topology

log = logging.getLogger(__name__)


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError("chaos-testbed needs root (network namespaces, tc, nftables): "
                           "run it with sudo")


_teardowns = 0


def tearing_down() -> bool:
    """True while a testbed of this process is being torn down (signals must wait)."""
    return _teardowns > 0


class Testbed:
    __test__ = False  # not a pytest class
    def __init__(self, topo: Topology, out_dir: str, caps: Capabilities | None = None,
                 timeline: str | None = None, agents: AgentMode | None = None):
        require_root()
        self.agent_mode = agents
        self.agents: HostAgents | None = None
        self.topo = topo
        self.caps = caps or probe()
        self.out_dir = os.path.abspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self.timeline_path = timeline or os.path.join(self.out_dir, "timeline.jsonl")
        self.timeline = EventLog(self.timeline_path)
        self.reg: Registry | None = None
        self.net: EmulatedNetwork | None = None
        self.hosts: HostProcesses | None = None
        self.storage: dict[str, str] = {}     # storage node -> its checkpoint server's URL
        self.discoverable: dict[str, int] = {n.name: n.slots for n in topo.workers
                                             if not n.standby}
        self.t0 = time.monotonic()
        self._pid = os.getpid()

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Testbed":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self, sshd: bool = True) -> None:
        for line in self.caps.fallbacks():
            self.log(events.Capability(detail=line))
        self.reg = Registry().open()
        self.reg.state["info"] = {"topology": self.topo.name, "out_dir": self.out_dir,
                                  "timeline": self.timeline_path}
        self.reg.save()
        t = time.monotonic()
        self.net = EmulatedNetwork(self.topo, self.caps, self.reg)
        self.net.start()
        self.hosts = HostProcesses(self.net, self.reg)
        if sshd:
            if not self.caps.sshd:
                raise CapabilityError("openssh-server (/usr/sbin/sshd) is not installed")
            self.hosts.prepare()
            self.hosts.start_sshd()
        self.storage = {n.name: self.hosts.start_storage(n.name)
                        for n in self.topo.nodes if n.role == "storage"}
        if self.agent_mode is not None:
            self._start_agents()
        else:
            self._write_discovery()
        log.info("testbed %s up: %d hosts, %d links", self.reg.id, len(self.topo.nodes),
                 len(self.topo.links))
        self.log(events.Up(id=self.reg.id, hosts=len(self.topo.nodes), links=len(self.topo.links),
                            native_netem=self.caps.netem, setup_s=round(time.monotonic() - t, 3)))

    def down(self) -> list[str]:
        if os.getpid() != self._pid:  # a forked child must never tear down its parent's testbed
            return []
        global _teardowns
        _teardowns += 1   # a second Ctrl-C (or a process group's signal) must not cut it short
        try:
            return self._down()
        finally:
            _teardowns -= 1

    def _down(self) -> list[str]:
        problems: list[str] = []
        if self.reg is not None:
            self.reg.kill_orphans()   # before Mininet removes the namespaces they are found by
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as e:  # noqa: BLE001 - the registry still removes what is left
                problems.append(f"mininet stop: {e}")
            self.net = None
        if self.reg is not None:
            problems += self.reg.teardown()
            for problem in problems:
                log.warning("teardown of %s: %s", self.reg.id, problem)
            self.log(events.Down(id=self.reg.id, problems=problems))
            self.reg = None
        return problems

    # ------------------------------------------------------------ records
    def log(self, record: events.TimelineEvent) -> events.TimelineEvent:
        record.t_rel = round(time.monotonic() - self.t0, 4)
        return self.timeline.write(record)

    @property
    def run_dir(self) -> str:
        return self.reg.dir

    @property
    def discovery_script(self) -> str:
        return os.path.join(self.reg.dir, "discover.sh")

    def _write_discovery(self) -> None:
        hosts_file = os.path.join(self.reg.dir, "discovered_hosts")
        tmp = hosts_file + ".tmp"
        with open(tmp, "w") as f:
            for name, slots in self.discoverable.items():
                f.write(f"{self.topo.node(name).ip}:{slots}\n")
        os.replace(tmp, hosts_file)
        if not os.path.exists(self.discovery_script):
            with open(self.discovery_script, "w") as f:
                f.write(f"#!/bin/sh\nexec cat {hosts_file}\n")
            os.chmod(self.discovery_script, 0o755)

    def _start_agents(self) -> None:
        if not self.caps.sshd:
            raise CapabilityError("agents mode runs Horovod over ssh: install openssh-server")
        self.agents = HostAgents(self, self.agent_mode)
        self.agents.discovery_script(self.discovery_script)
        t = time.monotonic()
        view = self.agents.start_founders(list(self.discoverable))
        self.log(events.AgentsUp(epoch=view["epoch"], members=view["members"],
                                  agree_s=round(time.monotonic() - t, 3)))

    def write_bandwidth(self) -> str:
        """The topology's rates as a CHAOS_BANDWIDTH file (Mbit/s, keyed by IP as Horovod names
        hosts): each host's egress and ingress, and every pair whose path is slower than both."""
        topo, mbit = self.topo, 1e6
        hosts, ingress, links = {}, {}, {}
        for n in topo.workers:
            ln = topo.host_link(n.name)
            up, down = ln.direction(n.name), ln.direction(ln.other(n.name))
            if up.rate_bps:
                hosts[n.ip] = up.rate_bps / mbit
            if down.rate_bps:
                ingress[n.ip] = down.rate_bps / mbit
        for a in topo.workers:
            for b in topo.workers:
                rate = topo.path_rate_bps(a.name, b.name) if a is not b else None
                if rate and rate / mbit < min(hosts.get(a.ip, 1e9), ingress.get(b.ip, 1e9)):
                    links[f"{a.ip}>{b.ip}"] = rate / mbit
        path = os.path.join(self.reg.dir, "bandwidth.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"default": MAX_RATE_BPS / mbit, "hosts": hosts, "ingress": ingress,
                            "links": links}, f)
        return path

    def placeholders(self) -> dict[str, str]:
        initial = [f"{self.topo.node(n).ip}:{s}" for n, s in self.discoverable.items()]
        return {"discovery": self.discovery_script, "hosts": ",".join(initial),
                "np": str(sum(self.discoverable.values())),
                "max_np": str(sum(n.slots for n in self.topo.workers)),
                "out": self.out_dir, "event_log": os.path.join(self.out_dir, "events.jsonl"),
                "bandwidth": self.write_bandwidth(),
                "agent_socket": self.agents.socket_pattern if self.agents else "",
                "storage": next(iter(self.storage.values()), "")}

    # ------------------------------------------------------------ actions
    def apply(self, a: Action) -> events.Fault:
        """Apply one primitive action now; returns what was done (the timeline record, unwritten)."""
        try:
            handler = self._HANDLERS[a.action]
        except KeyError:
            raise ValueError(f"not a primitive action: {a.action}") from None
        t = time.perf_counter()
        detail = handler(self, a) or {}
        applied_ms = (time.perf_counter() - t) * 1e3
        return events.Fault(action=a.action, target=a.target, applied_ms=round(applied_ms, 3),
                            at_step=a.at_step, at_size=a.at_size, at_record=a.at_record,
                            **detail)

    def _signal(self, a: Action) -> dict:
        signalled = getattr(self.hosts, a.action)(a.node)   # crash, leave, pause, resume
        if a.action in (Kind.CRASH, Kind.LEAVE):
            self.discoverable.pop(a.node, None)
            if self.agents is None:
                self._write_discovery()
        return {"signalled": signalled}

    def _join(self, a: Action) -> None:
        self.discoverable[a.node] = self.topo.node(a.node).slots
        if self.agents is not None:
            self.agents.join(a.node)       # its agent announces it; no list is written
        else:
            self._write_discovery()

    def _degrade(self, a: Action) -> dict:
        self.net.degrade(a.link, a.direction, dict(a.changes))
        st = self.net.links[a.link]
        return {"up": st.up_dir.describe(), "down": st.down_dir.describe()}

    _HANDLERS = {
        Kind.CRASH: _signal, Kind.LEAVE: _signal, Kind.PAUSE: _signal, Kind.RESUME: _signal,
        Kind.JOIN: _join,
        Kind.LINK_DOWN: lambda self, a: self.net.set_link(a.link, False),
        Kind.LINK_UP: lambda self, a: self.net.set_link(a.link, True),
        Kind.DEGRADE: _degrade,
        Kind.RESTORE: lambda self, a: self.net.restore(a.link),
        Kind.PARTITION: lambda self, a: self.net.partition(a.groups),
        Kind.HEAL: lambda self, a: self.net.heal(),
    }

    def describe(self) -> dict:
        return {"id": self.reg.id if self.reg else None, "topology": self.topo.name,
                "capabilities": asdict(self.caps), "discoverable": dict(self.discoverable),
                **(self.net.describe() if self.net else {})}
