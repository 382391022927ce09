"""Topology model: YAML -> validated, immutable description of an emulated edge network. Pure.

File shape (every key is checked; a typo is an error, not a silent default)::

    name: paper-5plus1
    subnet: 10.213.0.0/16          # optional; hosts get addresses in order unless they set `ip`
    defaults: {profile: gbe}       # optional; fields every link starts from
    nodes:
      - {name: h1, role: worker, slots: 1, cpu: 0.5}   # cpu: share of one core (cgroup v2)
      - {name: h6, role: worker, standby: true}        # not discoverable until a `join` fault
      - {name: ctl, role: launcher}                    # where horovodrun's driver runs
      - {name: nas, role: storage}                     # serves checkpoints over its link
    switches: [s1]                 # Linux bridges (switches, access points, base stations)
    links:
      - {a: h1, b: s1, rate: 100Mbit, delay: 2ms}      # both directions
      - {a: h2, b: s1, profile: lte}                   # up = a->b, down = b->a
      - {a: h3, b: s1, up: {rate: 20Mbit}, down: {rate: 80Mbit, loss: 1%}}

Every host has exactly one NIC (``eth0``, one link): Horovod needs one interface name common to
all hosts. Hosts talk over an L2 network of bridges, so the switch graph must be a tree (Linux
bridges here run without STP). A direct host-host cable is a link with no switch; the builder
puts a hidden two-port bridge in the middle so both directions can be shaped and impaired.

Direction fields: ``rate`` (Mbit/s or unit), ``delay``/``jitter`` (ms or unit), ``loss`` (percent),
``correlation`` (percent, netem only), ``queue`` (bytes or unit).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from chaos_hvd.units import (
    format_rate,
    parse_fraction,
    parse_rate_bps,
    parse_size_bytes,
    parse_time_s,
)
from chaos_hvd.yamldoc import Reader, load_yaml, read_text

from .errors import TopologyError
from .profiles import PROFILES

ROLES = ("worker", "launcher", "storage")
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
DIRECTION_KEYS = ("rate", "delay", "jitter", "loss", "correlation", "queue")
DEFAULT_SUBNET = "10.213.0.0/16"
MAX_RATE_BPS = 10e9
MAX_SLOTS = 1024


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Direction:
    """One direction of a link. ``None`` rate = unshaped."""

    rate_bps: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    correlation: float = 0.0
    queue_bytes: int | None = None

    @property
    def impaired(self) -> bool:
        return bool(self.delay_s or self.jitter_s or self.loss or self.correlation)

    def describe(self) -> str:
        parts = [format_rate(self.rate_bps)]
        if self.delay_s or self.jitter_s:
            parts.append(f"{self.delay_s * 1e3:g}ms" + (f"±{self.jitter_s * 1e3:g}ms"
                                                       if self.jitter_s else ""))
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        return " ".join(parts)


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    ip: str
    slots: int = 1
    cpu: float | None = None
    standby: bool = False


@dataclass(frozen=True)
class Link:
    name: str
    a: str
    b: str
    up: Direction      # a -> b
    down: Direction    # b -> a

    def direction(self, src: str) -> Direction:
        return self.up if src == self.a else self.down

    def other(self, end: str) -> str:
        return self.b if end == self.a else self.a


@dataclass(frozen=True)
class Topology:
    name: str
    subnet: str
    nodes: tuple[Node, ...]
    switches: tuple[str, ...]
    links: tuple[Link, ...]
    description: str = ""

    @property
    def workers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "worker")

    @property
    def launcher(self) -> Node | None:
        return next((n for n in self.nodes if n.role == "launcher"), None)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def link(self, name: str) -> Link:
        for ln in self.links:
            if ln.name == name:
                return ln
        raise KeyError(name)

    def host_link(self, host: str) -> Link:
        return next(ln for ln in self.links if host in (ln.a, ln.b))

    @cached_property
    def graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(n.name for n in self.nodes)
        g.add_nodes_from(self.switches)
        for ln in self.links:
            g.add_edge(ln.a, ln.b, link=ln.name)
        return g

    def hops(self, src: str, dst: str) -> list[tuple[str, str]]:
        """(link name, "up" or "down") for each link a packet from src to dst crosses."""
        g = self.graph
        nodes = nx.shortest_path(g, src, dst)  # the only path: the network is a tree
        out = []
        for u, v in zip(nodes, nodes[1:]):
            name = g.edges[u, v]["link"]
            out.append((name, "up" if self.link(name).a == u else "down"))
        return out

    def path(self, src: str, dst: str) -> list[tuple[Link, Direction]]:
        """The links (and their directions) a packet from host src to host dst crosses."""
        return [(self.link(name), getattr(self.link(name), d)) for name, d in self.hops(src, dst)]

    def path_rate_bps(self, src: str, dst: str) -> float | None:
        rates = [d.rate_bps for _, d in self.path(src, dst) if d.rate_bps is not None]
        return min(rates) if rates else None

    def path_delay_s(self, src: str, dst: str) -> float:
        return sum(d.delay_s for _, d in self.path(src, dst))



# ---------------------------------------------------------------- parsing and validation

def direction_fields(r: Reader, base: dict) -> dict:
    out = dict(base)
    parsers = {"rate": ("rate_bps", parse_rate_bps), "delay": ("delay_s", parse_time_s),
               "jitter": ("jitter_s", parse_time_s), "loss": ("loss", parse_fraction),
               "correlation": ("correlation", parse_fraction),
               "queue": ("queue_bytes", parse_size_bytes)}
    for key, (attr, parser) in parsers.items():
        value = r.parse(key, parser)
        if value is not None:
            if attr == "rate_bps" and value > MAX_RATE_BPS:
                r.fail(f"{value / 1e9:g} Gbit/s is above the {MAX_RATE_BPS / 1e9:g} Gbit/s this "
                       "testbed can shape", key)
            out[attr] = value
    return out


def _profile_fields(r: Reader, name) -> tuple[dict, dict]:
    """(up, down) field dicts of a named profile."""
    if not isinstance(name, str) or name not in PROFILES:
        hint = difflib.get_close_matches(str(name), list(PROFILES), n=1)
        r.fail(f"unknown profile {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
               + f"; known: {', '.join(PROFILES)}", "profile")
    prof = PROFILES[name]
    common = {k: v for k, v in prof.items() if k in DIRECTION_KEYS}
    pr = Reader(common, "", r.source, TopologyError)
    both = direction_fields(pr, {})
    up = direction_fields(Reader(prof.get("up", {}), "", r.source, TopologyError), both)
    down = direction_fields(Reader(prof.get("down", {}), "", r.source, TopologyError), both)
    return up, down


def _parse_link(r: Reader, defaults: Reader | None) -> tuple[dict, dict]:
    up: dict = {}
    down: dict = {}
    for src in ([defaults] if defaults is not None else []) + [r]:
        if src.get("profile") is not None:
            pu, pd = _profile_fields(src, src.get("profile"))
            up, down = {**up, **pu}, {**down, **pd}
        both_up = direction_fields(src, up)
        both_down = direction_fields(src, down)
        up, down = both_up, both_down
        for key, target in (("up", "up"), ("down", "down")):
            if src.get(key) is not None:
                sub = src.child(key)
                sub.check_keys(DIRECTION_KEYS)
                if target == "up":
                    up = direction_fields(sub, up)
                else:
                    down = direction_fields(sub, down)
    return up, down


class _Names:
    """Node and switch names seen so far (one namespace for both)."""

    def __init__(self):
        self.kind: dict[str, str] = {}

    def claim(self, r: Reader, key, value, kind: str) -> None:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            r.fail(f"{kind} name must match {NAME_RE.pattern}, got {value!r}", key)
        if value in self.kind:
            r.fail(f"duplicate name {value!r} (already used by a {self.kind[value]})", key)
        self.kind[value] = kind


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    data = load_yaml(text, source, TopologyError)
    if data is None:
        raise TopologyError("file is empty", source)
    top = Reader(data, "", source, TopologyError)
    top.check_keys(("name", "description", "subnet", "defaults", "nodes", "switches", "links"))
    name = top.get("name", "topology")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        top.fail(f"name must match {NAME_RE.pattern}, got {name!r}", "name")
    subnet = _parse_subnet(top)
    defaults = None
    if top.get("defaults") is not None:
        defaults = top.child("defaults")
        defaults.check_keys(("profile",) + DIRECTION_KEYS + ("up", "down"))
    names = _Names()
    nodes = _parse_nodes(top, subnet, names)
    switches = _parse_switches(top, names)
    links = _parse_links(top, defaults, names)
    _check_network(top, nodes, switches, links)
    description = top.get("description", "")
    return Topology(name, str(subnet), tuple(nodes), tuple(switches), tuple(links),
                    str(description))


def _parse_subnet(top: Reader) -> ipaddress.IPv4Network:
    try:
        subnet = ipaddress.IPv4Network(top.get("subnet", DEFAULT_SUBNET))
    except (ValueError, TypeError) as e:
        top.fail(f"not an IPv4 network: {e}", "subnet")
    if subnet.num_addresses < 4:
        top.fail("subnet is too small", "subnet")
    return subnet


def _parse_nodes(top: Reader, subnet: ipaddress.IPv4Network, names: _Names) -> list[Node]:
    if "nodes" not in top.data:
        top.fail("missing required key 'nodes'")
    free_ips = (str(ip) for ip in subnet.hosts())
    nodes: list[Node] = []
    used_ips: set[str] = set()
    for i, item, _ in top.items("nodes"):
        r = top.item("nodes", i, item)
        r.check_keys(("name", "role", "slots", "cpu", "standby", "ip"))
        nname = r.require("name")
        names.claim(r, "name", nname, "node")
        role = r.get("role", "worker")
        if role not in ROLES:
            r.fail(f"role must be one of {ROLES}, got {role!r}", "role")
        slots = r.get("slots", 1)
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            r.fail(f"slots must be an integer in 1..{MAX_SLOTS}, got {slots!r}", "slots")
        cpu = r.get("cpu")
        if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float))
                                or not 0 < cpu <= 64):
            r.fail(f"cpu must be a share of cores in (0, 64], got {cpu!r}", "cpu")
        standby = r.get("standby", False)
        if not isinstance(standby, bool):
            r.fail(f"standby must be true or false, got {standby!r}", "standby")
        if standby and role != "worker":
            r.fail("only workers can be on standby", "standby")
        if r.get("ip") is not None:
            try:
                ip = ipaddress.IPv4Address(r.get("ip"))
            except (ValueError, TypeError) as e:
                r.fail(str(e), "ip")
            if ip not in subnet:
                r.fail(f"{ip} is outside subnet {subnet}", "ip")
            if ip in (subnet.network_address, subnet.broadcast_address):
                r.fail(f"{ip} is the network's own or broadcast address, not a host's", "ip")
            ip = str(ip)
        else:
            ip = next((a for a in free_ips if a not in used_ips), None)
            if ip is None:
                r.fail(f"subnet {subnet} has no address left for this node", "name")
        if ip in used_ips:
            r.fail(f"address {ip} is used twice", "ip")
        used_ips.add(ip)
        nodes.append(Node(nname, role, ip, slots, None if cpu is None else float(cpu), standby))
    if not any(n.role == "worker" for n in nodes):
        top.fail("a topology needs at least one worker node", "nodes")
    if sum(n.role == "launcher" for n in nodes) > 1:
        top.fail("at most one node can be the launcher", "nodes")
    return nodes


def _parse_switches(top: Reader, names: _Names) -> list[str]:
    switches = []
    for i, item, where in top.items("switches"):
        sname = item.get("name") if isinstance(item, dict) else item
        if isinstance(item, dict):
            Reader(item, f"switches[{i}]", top.source, TopologyError).check_keys(("name",))
        if not isinstance(sname, str) or not NAME_RE.fullmatch(sname):
            raise TopologyError(f"switches[{i}]: name must match {NAME_RE.pattern}, "
                                f"got {sname!r}", where)
        if sname in names.kind:
            raise TopologyError(f"switches[{i}]: duplicate name {sname!r} (already used by a "
                                f"{names.kind[sname]})", where)
        names.kind[sname] = "switch"
        switches.append(sname)
    return switches


def _parse_links(top: Reader, defaults: Reader | None, names: _Names) -> list[Link]:
    seen = names.kind
    links: list[Link] = []
    link_names: set[str] = set()
    host_links: dict[str, str] = {}
    g = nx.Graph()
    g.add_nodes_from(seen)
    if "links" not in top.data:
        top.fail("missing required key 'links'")
    for i, item, _ in top.items("links"):
        r = top.item("links", i, item)
        r.check_keys(("name", "a", "b", "profile", "up", "down") + DIRECTION_KEYS)
        a, b = r.require("a"), r.require("b")
        for key, end in (("a", a), ("b", b)):
            if not isinstance(end, str) or end not in seen:
                hint = difflib.get_close_matches(str(end), list(seen), n=1)
                r.fail(f"link end {end!r} is not a node or switch"
                       + (f" (did you mean {hint[0]!r}?)" if hint else ""), key)
        if a == b:
            r.fail(f"a link cannot connect {a!r} to itself", "b")
        lname = r.get("name", f"{a}-{b}")
        if not isinstance(lname, str) or not NAME_RE.fullmatch(lname):
            r.fail(f"link name must match {NAME_RE.pattern}, got {lname!r}", "name")
        if lname in link_names:
            r.fail(f"duplicate link name {lname!r}", "name")
        if g.has_edge(a, b):
            r.fail(f"{a!r} and {b!r} are already linked", "b")
        for end in (a, b):
            if seen[end] == "node":
                if end in host_links:
                    r.fail(f"host {end!r} already has a link ({host_links[end]}); every host "
                           "has exactly one NIC (put a switch between it and its peers)")
                host_links[end] = lname
        up, down = _parse_link(r, defaults)
        if seen[a] == "switch" and seen[b] == "switch" and nx.has_path(g, a, b):
            r.fail(f"link {a}-{b} closes a loop among switches; Linux bridges run without STP "
                   "here, so the switch graph must be a tree")
        g.add_edge(a, b)
        link_names.add(lname)
        links.append(Link(lname, a, b, Direction(**up), Direction(**down)))
    return links


def _check_network(top: Reader, nodes: list[Node], switches: list[str], links: list[Link]) -> None:
    g = nx.Graph()
    g.add_nodes_from([n.name for n in nodes] + switches)
    g.add_edges_from((ln.a, ln.b) for ln in links)
    linked = {end for ln in links for end in (ln.a, ln.b)}
    for n in nodes:
        if n.name not in linked:
            top.fail(f"node {n.name!r} has no link", "nodes")
    for s in switches:
        if g.degree(s) == 0:
            top.fail(f"switch {s!r} has no link", "switches")
    if not nx.is_connected(g):
        parts = [sorted(c) for c in nx.connected_components(g)]
        top.fail(f"the network is not connected: {parts}", "links")
    if not nx.is_tree(g):
        top.fail("the network has a loop; bridges run without STP, so it must be a tree", "links")


def load_topology(path: str) -> Topology:
    return parse_topology(read_text(path, TopologyError, "topology"), path)
