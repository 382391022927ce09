"""What this kernel and machine can emulate, probed by trying (never assumed).

netem is probed with a trial ``add`` on a throwaway dummy interface (the reliable probe on
kernels without sch_netem: netlink answers ENOENT). The result decides how impairments are built:

    netem present   delay, jitter, loss, correlation, queue in the kernel (µs accuracy)
    netem absent    loss -> nftables bridge rules (numgen);
                    delay and jitter -> userspace NFQUEUE delayer on the bridge (fails open);
                    correlation -> cannot be emulated (an error if a topology asks for it)
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

PROBE_IFACE = "ctbprobe0"  # a veth pair: works wherever the testbed works


@dataclass(frozen=True)
class Capabilities:
    root: bool
    netem: bool
    htb: bool
    nft_bridge: bool
    nfqueue: bool          # iptables physdev + NFQUEUE target and the NetfilterQueue module
    br_netfilter: bool
    cgroup_cpu: bool
    sshd: bool
    iperf3: bool
    ping: bool

    def fallbacks(self) -> list[str]:
        """One line per impairment that is not emulated natively, and how it is done instead."""
        if self.netem:
            return []
        lines = ["sch_netem is missing from this kernel: delay/jitter/loss are not native"]
        lines.append("loss: nftables bridge rules (numgen random)" if self.nft_bridge
                     else "loss: CANNOT be emulated (no nftables bridge family)")
        lines.append("delay/jitter: userspace NFQUEUE delayer on the bridges (+0.3-0.7 ms RTT bias, "
                     "p99 lateness ~2.6 ms under load, ~1.2 Gbit/s ceiling)"
                     if self.nfqueue and self.br_netfilter
                     else "delay/jitter: CANNOT be emulated (no NFQUEUE/br_netfilter)")
        lines.append("correlation: CANNOT be emulated without netem")
        return lines

    def as_dict(self) -> dict:
        return asdict(self)


def _try_tc(kind: str, **kw) -> bool:
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=PROBE_IFACE):  # left by a killed probe
            ipr.link("del", ifname=PROBE_IFACE)
        ipr.link("add", ifname=PROBE_IFACE, kind="veth", peer=PROBE_IFACE + "p")
        try:
            idx = ipr.link_lookup(ifname=PROBE_IFACE)[0]
            try:
                ipr.tc("add", kind, index=idx, handle=0x10000, **kw)
                return True
            except NetlinkError as e:
                if e.code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                    return False
                raise
        finally:
            ipr.link("del", ifname=PROBE_IFACE)


def _run_ok(args: list[str], stdin: str | None = None) -> bool:
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _probe_nft_bridge() -> bool:
    table = "ctb_probe"
    ok = _run_ok(["nft", "-f", "-"], f"""table bridge {table} {{
  chain forward {{ type filter hook forward priority 0; policy accept;
    iifname "ctbnone" numgen random mod 1000 < 1 drop
  }}
}}
""")
    _run_ok(["nft", "delete", "table", "bridge", table])
    return ok


def _probe_nfqueue() -> bool:
    if importlib.util.find_spec("netfilterqueue") is None:
        return False
    chain = "CTB-PROBE"
    try:
        return (_run_ok(["iptables", "-w", "-t", "mangle", "-N", chain])
                and _run_ok(["iptables", "-w", "-t", "mangle", "-A", chain, "-m", "physdev",
                             "--physdev-in", "ctbnone", "-j", "NFQUEUE", "--queue-num", "7",
                             "--queue-bypass"]))
    finally:
        _run_ok(["iptables", "-w", "-t", "mangle", "-F", chain])
        _run_ok(["iptables", "-w", "-t", "mangle", "-X", chain])


def _probe_cgroup_cpu() -> bool:
    from .cgroups import cpu_root
    return cpu_root() is not None


def probe() -> Capabilities:
    root = os.geteuid() == 0
    return Capabilities(
        root=root,
        netem=root and _try_tc("netem", delay=1000),
        htb=root and _try_tc("htb", default=0x10),
        nft_bridge=root and _probe_nft_bridge(),
        nfqueue=root and _probe_nfqueue(),
        br_netfilter=os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        cgroup_cpu=_probe_cgroup_cpu(),
        sshd=os.path.exists("/usr/sbin/sshd"),
        iperf3=shutil.which("iperf3") is not None,
        ping=shutil.which("ping") is not None,
    )
