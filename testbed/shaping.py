"""Egress shaping of one interface through pyroute2 (netlink; no tc command lines).

Every shaped interface gets the same tree, so a runtime change is one netlink ``change``:

    root  htb 1:  default 0x10
      class 1:10  rate R ceil R          (R = 10 Gbit/s when the direction is unshaped)
        leaf 10:  netem delay/jitter/loss/correlation/limit   (kernel has sch_netem)
               or bfifo limit=queue                           (no netem, queue size given)
               or none: HTB's default pfifo                   (no netem, no queue size)

Rates are TCP goodput, what iperf3 reports and what docs/edge-links.md's link figures mean: HTB counts
whole frames, so the class rate is the configured rate times WIRE_PER_GOODPUT (a 1448-byte TCP
segment with timestamps is a 1514-byte frame). Without this, a "1 Gbit/s" link measured 956 Mbit/s.

Each direction of a link is the egress of one veth end (the host's ``eth0`` for up, the
bridge port for down), so asymmetric links need no IFB. Where the kernel has no netem, delay,
jitter and loss are applied on the bridge instead (testbed.impairments); this module then
shapes only rate and queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from .topology import MAX_RATE_BPS, Direction

ROOT, CLASS, LEAF = 0x10000, 0x10010, 0x100000
QUANTUM_BYTES = 60000            # avoids HTB's "quantum too big/small" at 10 Mbit..10 Gbit
MIN_BURST_BYTES = 15 * 1024
BURST_S = 0.004  # 4 ms of traffic: at 1 Gbit/s 1 ms (two GSO packets) cost 4 % of the rate
NETEM_DEFAULT_LIMIT_PKTS = 10000  # netem's own 1000 would drop at Gbit rates with delay
MTU_BYTES = 1514
WIRE_PER_GOODPUT = 1514 / 1448   # Ethernet 14 + IPv4 20 + TCP 20 + timestamps 12 per segment


def burst_bytes(rate_bps: float) -> int:
    """BURST_S of traffic, at least ~10 full frames."""
    return int(max(MIN_BURST_BYTES, rate_bps / 8 * BURST_S))


@dataclass(frozen=True)
class Leaf:
    kind: str | None          # "netem", "bfifo" or None
    params: tuple = ()


def leaf_for(d: Direction, native_netem: bool) -> Leaf:
    if native_netem and (d.impaired or d.queue_bytes):
        params = {"delay": int(d.delay_s * 1e6), "jitter": int(d.jitter_s * 1e6),
                  "loss": d.loss * 100,
                  "limit": max(1, d.queue_bytes // MTU_BYTES) if d.queue_bytes
                  else NETEM_DEFAULT_LIMIT_PKTS}
        if d.correlation:
            if d.jitter_s and d.delay_s:
                params["delay_corr"] = d.correlation * 100
            if d.loss:
                params["loss_corr"] = d.correlation * 100
        return Leaf("netem", tuple(sorted(params.items())))
    if d.queue_bytes:
        return Leaf("bfifo", (("limit", d.queue_bytes),))
    return Leaf(None)


def wire_rate_bps(d: Direction) -> float:
    return (d.rate_bps or MAX_RATE_BPS) * WIRE_PER_GOODPUT


def _class_args(d: Direction) -> dict:
    rate = wire_rate_bps(d)
    b = burst_bytes(rate)
    return {"rate": f"{int(rate)}bit", "ceil": f"{int(rate)}bit", "burst": b, "cburst": b,
            "quantum": QUANTUM_BYTES}


class InterfaceShaper:
    """The HTB tree on one interface; `ipr` is an IPRoute bound to the interface's namespace."""

    def __init__(self, ipr, index: int, native_netem: bool):
        self.ipr, self.index, self.native_netem = ipr, index, native_netem
        self.leaf: Leaf | None = None

    def apply(self, d: Direction) -> None:
        leaf = leaf_for(d, self.native_netem)
        if self.leaf is None:
            self.ipr.tc("add", "htb", index=self.index, handle=ROOT, default=0x10)
            self.ipr.tc("add-class", "htb", index=self.index, handle=CLASS, parent=ROOT,
                        **_class_args(d))
        else:
            self.ipr.tc("change-class", "htb", index=self.index, handle=CLASS, parent=ROOT,
                        **_class_args(d))
        if leaf == self.leaf:
            return
        if self.leaf is not None and self.leaf.kind is not None:
            if leaf.kind == self.leaf.kind:
                self.ipr.tc("change", leaf.kind, index=self.index, handle=LEAF, parent=CLASS,
                            **dict(leaf.params))
                self.leaf = leaf
                return
            self.ipr.tc("del", self.leaf.kind, index=self.index, handle=LEAF, parent=CLASS)
        if leaf.kind is not None:
            self.ipr.tc("add", leaf.kind, index=self.index, handle=LEAF, parent=CLASS,
                        **dict(leaf.params))
        self.leaf = leaf

    def remove(self) -> None:
        try:
            self.ipr.tc("del", index=self.index, handle=ROOT, root=True)
        except NetlinkError:
            pass  # the interface went away with its namespace
        self.leaf = None
