"""Build a Topology on this machine: Mininet hosts on Linux bridges, links shaped through pyroute2.

Mininet supplies what its users know: ``Host`` nodes (a shell in its own network namespace),
``addLink`` veth pairs and a switch class; we use a Linux-bridge switch built with ``ip link``
(no controller, no OVS kernel module) and never call Mininet's cleanup (``mn -c`` kills by
broad name). Names: ``ctb<id>h<i>`` hosts (also their named netns, for pyroute2 and
``ip netns exec``), ``ctb<id>s<j>`` switches, ``ctb<id>w<k>`` the hidden bridge of a direct
host-host link, ``<bridge>-p<n>`` bridge ports. Every host's NIC is ``eth0``: Horovod needs one
interface name common to all hosts.

Impairments (see testbed.capabilities for how the choice is made):
* rate and queue: HTB (+bfifo) on the egress end of each link direction (testbed.shaping);
* delay, jitter, loss, correlation: netem under HTB when the kernel has it; otherwise the
  fallbacks on the bridges (testbed.impairments): loss and partitions from nftables rules,
  delay/jitter from the NFQUEUE delayer on the host-facing bridge ports. Correlation without
  netem is refused.
Link down/up sets both veth ends down/up (as Mininet's configLinkStatus); partitions are
nftables drops between groups. Every runtime change is a few netlink/nft operations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from .capabilities import Capabilities
from .errors import CapabilityError, CommandError
from .impairments import BridgeImpairments
from .registry import Registry
from .shaping import InterfaceShaper
from .topology import Direction, Link, Topology


@dataclass
class _End:
    """One veth end: where it lives (netns name or None = root) and its name."""

    ns: str | None
    ifname: str
    index: int | None = None  # looked up once: a lookup dumps every link of the namespace


@dataclass
class _LinkState:
    link: Link
    a_end: _End            # the interface on a's side (a's eth0 or a's bridge port)
    b_end: _End
    up_dir: Direction      # current (possibly degraded) values
    down_dir: Direction
    is_up: bool = True


def _bridge_class():
    from mininet.node import Switch

    class LinuxBridge(Switch):
        """A Linux bridge made with ``ip link`` (Mininet's own needs brctl)."""

        def start(self, _controllers):
            self.cmd("ip link add name", self, "type bridge forward_delay 0")
            for intf in self.intfList():
                if self.name in intf.name:
                    self.cmd("ip link set", intf, "master", self, "up")
            self.cmd("ip link set", self, "up")

        def stop(self, deleteIntfs=True):
            self.cmd("ip link del", self)
            super().stop(deleteIntfs)

        def connected(self):
            return True

    return LinuxBridge


class EmulatedNetwork:
    def __init__(self, topo: Topology, caps: Capabilities, registry: Registry):
        self.topo, self.caps, self.reg = topo, caps, registry
        p = registry.prefix
        self.host_ns = {n.name: f"{p}h{i}" for i, n in enumerate(topo.nodes, 1)}
        self.switch_name = {s: f"{p}s{j}" for j, s in enumerate(topo.switches, 1)}
        self.links: dict[str, _LinkState] = {}
        self._host_port: dict[str, str] = {}   # host -> the bridge port its eth0 plugs into
        self.net = None
        self._iprs: dict[str | None, object] = {}
        self._shapers: dict[tuple[str | None, str], InterfaceShaper] = {}
        self._partition: tuple[tuple[str, ...], ...] = ()
        self.bridge = BridgeImpairments(topo, caps, registry)

    # ------------------------------------------------------------ build
    def check(self) -> None:
        """Refuse impairments this machine cannot emulate, before building anything."""
        if not self.caps.htb:
            raise CapabilityError("the kernel has no HTB qdisc (sch_htb): cannot shape rates")
        for ln in self.topo.links:
            for name, d in (("up", ln.up), ("down", ln.down)):
                self._check_direction(ln.name, name, d)

    def _check_direction(self, link: str, direction: str, d: Direction) -> None:
        if self.caps.netem:
            return
        if d.correlation:
            raise CapabilityError(
                f"link {link} {direction}: correlation needs sch_netem, which this kernel lacks")
        if d.loss and not self.caps.nft_bridge:
            raise CapabilityError(f"link {link} {direction}: loss needs sch_netem or nftables "
                                  "bridge support; this machine has neither")
        if (d.delay_s or d.jitter_s) and not (self.caps.nfqueue and self.caps.br_netfilter):
            raise CapabilityError(
                f"link {link} {direction}: delay/jitter need sch_netem or the NFQUEUE fallback "
                "(iptables physdev+NFQUEUE, br_netfilter, Python NetfilterQueue); none available")

    def start(self) -> None:
        from mininet.net import Mininet
        from pyroute2 import netns

        self.check()
        topo, reg = self.topo, self.reg
        net = Mininet(topo=None, switch=_bridge_class(), controller=None, build=False,
                      autoSetMacs=False, autoStaticArp=False)
        self.net = net
        nodes = {}
        for n in topo.nodes:
            nodes[n.name] = net.addHost(self.host_ns[n.name], ip=f"{n.ip}/{self._plen()}")
        for s in topo.switches:
            reg.add("links", self.switch_name[s])
            nodes[s] = net.addSwitch(self.switch_name[s])
        ports: dict[str, int] = {}

        def port(bridge: str) -> str:
            ports[bridge] = ports.get(bridge, 0) + 1
            name = f"{bridge}-p{ports[bridge]}"
            reg.add("links", name)
            return name

        is_host = {n.name for n in topo.nodes}
        for k, ln in enumerate(topo.links, 1):
            if ln.a in is_host and ln.b in is_host:  # direct cable: hidden two-port bridge
                wire = f"{reg.prefix}w{k}"
                reg.add("links", wire)
                w = net.addSwitch(wire)
                pa, pb = port(wire), port(wire)
                net.addLink(nodes[ln.a], w, intfName1="eth0", intfName2=pa)
                net.addLink(nodes[ln.b], w, intfName1="eth0", intfName2=pb)
                a_end, b_end = _End(self.host_ns[ln.a], "eth0"), _End(self.host_ns[ln.b], "eth0")
                self._host_port[ln.a], self._host_port[ln.b] = pa, pb
            else:
                ends = []
                for end in (ln.a, ln.b):
                    if end in is_host:
                        ends.append((nodes[end], "eth0", _End(self.host_ns[end], "eth0")))
                    else:
                        name = port(self.switch_name[end])
                        ends.append((nodes[end], name, _End(None, name)))
                net.addLink(ends[0][0], ends[1][0], intfName1=ends[0][1], intfName2=ends[1][1])
                a_end, b_end = ends[0][2], ends[1][2]
                for end, other in ((ln.a, b_end), (ln.b, a_end)):
                    if end in is_host:
                        self._host_port[end] = other.ifname
            self.links[ln.name] = _LinkState(ln, a_end, b_end, ln.up, ln.down)

        net.build()
        for n in topo.nodes:
            h = net.get(self.host_ns[n.name])
            reg.add_pid(h.pid, f"mininet host shell {n.name}")
            reg.add("netns", self.host_ns[n.name])
            netns.attach(self.host_ns[n.name], h.pid)
        for s in net.switches:
            reg.add_pid(s.pid, f"mininet switch shell {s.name}")
        net.start()
        for n in topo.nodes:  # Horovod's ssh and Gloo traffic are on eth0; lo up for local ranks
            net.get(self.host_ns[n.name]).cmd("ip link set lo up")
        for st in self.links.values():
            self._apply(st)
        if not self.caps.netem and self.caps.nfqueue and self.caps.br_netfilter:
            self.bridge.start_delayer()
        self._reload()

    def _plen(self) -> int:
        return int(self.topo.subnet.split("/")[1])

    # ------------------------------------------------------------ netlink handles
    def _ipr(self, ns: str | None):
        from pyroute2 import IPRoute
        if ns not in self._iprs:
            self._iprs[ns] = IPRoute(netns=ns) if ns else IPRoute()
        return self._iprs[ns]

    def _index(self, end: _End) -> int:
        if end.index is None:
            found = self._ipr(end.ns).link_lookup(ifname=end.ifname)
            if not found:
                raise CommandError(f"interface {end.ifname} not found in {end.ns or 'root'}")
            end.index = found[0]
        return end.index

    def _shaper(self, end: _End) -> InterfaceShaper:
        key = (end.ns, end.ifname)
        if key not in self._shapers:
            self._shapers[key] = InterfaceShaper(self._ipr(end.ns), self._index(end),
                                                 self.caps.netem)
        return self._shapers[key]

    # ------------------------------------------------------------ impairments
    def _apply(self, st: _LinkState) -> None:
        self._shaper(st.a_end).apply(st.up_dir)      # a -> b leaves through a's end
        self._shaper(st.b_end).apply(st.down_dir)

    # ------------------------------------------------------------ runtime changes
    def set_direction(self, link: str, direction: str, d: Direction) -> None:
        """Replace one direction ('up', 'down' or 'both') of a link's impairments now."""
        st = self.links[link]
        self._check_direction(link, direction, d)
        if direction in ("up", "both"):
            st.up_dir = d
            self._shaper(st.a_end).apply(d)
        if direction in ("down", "both"):
            st.down_dir = d
            self._shaper(st.b_end).apply(d)
        if not self.caps.netem:
            self._reload()

    def degrade(self, link: str, direction: str, changes: dict) -> None:
        st = self.links[link]
        for which, cur in (("up", st.up_dir), ("down", st.down_dir)):
            if direction in (which, "both"):
                self.set_direction(link, which, replace(cur, **changes))

    def restore(self, link: str) -> None:
        st = self.links[link]
        self.set_direction(link, "up", st.link.up)
        self.set_direction(link, "down", st.link.down)

    def set_link(self, link: str, up: bool) -> None:
        st = self.links[link]
        for end in (st.a_end, st.b_end):
            self._ipr(end.ns).link("set", index=self._index(end), state="up" if up else "down")
        st.is_up = up

    def partition(self, groups: tuple[tuple[str, ...], ...]) -> None:
        listed = {h for g in groups for h in g}
        rest = tuple(n.name for n in self.topo.nodes if n.name not in listed)
        self._partition = tuple(groups) + ((rest,) if rest else ())
        self._reload()

    def heal(self) -> None:
        self._partition = ()
        self._reload()

    def _reload(self) -> None:
        self.bridge.reload(self.links.values(), self._host_port, self._partition)

    def delay_table(self) -> dict[str, list[list[float]]]:
        return self.bridge.delay_table(self.links)

    # ------------------------------------------------------------ queries
    def describe(self) -> dict:
        return {
            "hosts": {n.name: {"ip": n.ip, "netns": self.host_ns[n.name], "role": n.role}
                      for n in self.topo.nodes},
            "links": {name: {"up": st.up_dir.describe(), "down": st.down_dir.describe(),
                             "state": "up" if st.is_up else "down"}
                      for name, st in self.links.items()},
            "partition": [list(g) for g in self._partition],
            "native_netem": self.caps.netem,
        }

    def host(self, name: str):
        return self.net.get(self.host_ns[name])

    # ------------------------------------------------------------ teardown
    def stop(self) -> None:
        self.bridge.stop()
        for ipr in self._iprs.values():
            ipr.close()
        self._iprs.clear()
        if self.net is not None:
            from pyroute2 import netns
            for name in self.host_ns.values():  # the shells hold the namespaces, not the names
                if name in netns.listnetns():
                    netns.remove(name)
            t = time.monotonic()
            self.net.stop()
            self.stop_s = time.monotonic() - t
            self.net = None
