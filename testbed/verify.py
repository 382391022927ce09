"""Check what was applied: iperf3 rate and ping RTT between emulated hosts, measured vs configured.

A figure is reported as measured; nothing here fills in a configured value when a measurement
failed. Expected rate of a host pair = the slowest rate on the path; expected RTT = twice the
path's one-way delays (there and back) plus the bridge's own ~0.1 ms.

On a busy 2-core machine another process can steal the CPU for a moment: that only ever *lowers*
goodput and *raises* RTT. So a rate below the configured one is measured again (up to `tries`
times) and the best reading counts, while a reading above it fails at once; RTTs are judged by
their median, which one stalled echo does not move (the mean does: one 30 ms stall in 20 echoes
adds 1.5 ms).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from dataclasses import asdict, dataclass

from chaos_hvd.errors import WaitTimeout
from chaos_hvd.waiting import wait_until

from .errors import CommandError, VerificationError

RATE_TOLERANCE = 0.05
IPERF_PORT = 5201


def _ns_cmd(ns: str, args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns] + args


def iperf3_bps(src_ns: str, dst_ns: str, dst_ip: str, seconds: float = 3.0,
               omit_s: float = 0.5) -> float:
    """TCP goodput from the src host to the dst host, as iperf3's receiver saw it."""
    server = subprocess.Popen(_ns_cmd(dst_ns, ["iperf3", "-s", "-1", "-B", dst_ip,
                                               "-p", str(IPERF_PORT)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            done = subprocess.run(_ns_cmd(dst_ns, ["ss", "-ltnH", f"sport = :{IPERF_PORT}"]),
                                  capture_output=True, text=True)
            return bool(done.stdout.strip())
        try:
            wait_until(listening, 2.5, "the iperf3 server")
        except WaitTimeout:
            pass   # the client's own error says more
        done = subprocess.run(_ns_cmd(src_ns, ["iperf3", "-c", dst_ip, "-p", str(IPERF_PORT),
                                               "-t", str(seconds), "-O", str(omit_s), "-J"]),
                              capture_output=True, text=True, timeout=seconds + 30)
        if done.returncode != 0:
            raise CommandError(f"iperf3 {src_ns} -> {dst_ip} failed: "
                               f"{done.stdout[-300:]}{done.stderr[-300:]}")
        return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        server.kill()
        server.wait()


def ping_rtt_ms(src_ns: str, dst_ip: str, count: int = 10, interval_s: float = 0.05) -> dict:
    """Loss and RTT statistics of `count` echoes: mean, median and mdev in ms (None when no
    echo came back)."""
    done = subprocess.run(_ns_cmd(src_ns, ["ping", "-c", str(count), "-i", str(interval_s),
                                           "-W", "1", dst_ip]),
                          capture_output=True, text=True, timeout=count * interval_s + 30)
    loss = re.search(r"([0-9.]+)% packet loss", done.stdout)
    rtt = re.search(r"= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms", done.stdout)
    each = [float(x) for x in re.findall(r"time=([0-9.]+) ms", done.stdout)]
    return {"loss": float(loss.group(1)) / 100 if loss else 1.0,
            "avg_ms": float(rtt.group(2)) if rtt else None,
            "median_ms": statistics.median(each) if each else None,
            "mdev_ms": float(rtt.group(4)) if rtt else None}


@dataclass
class RateCheck:
    src: str
    dst: str
    configured_bps: float | None
    measured_bps: float                 # the best reading
    readings_bps: tuple[float, ...] = ()

    @property
    def error(self) -> float | None:
        if self.configured_bps is None:
            return None
        return self.measured_bps / self.configured_bps - 1

    @property
    def ok(self) -> bool:
        return self.error is None or abs(self.error) <= RATE_TOLERANCE

    def as_dict(self) -> dict:
        return {**asdict(self), "error": self.error, "ok": self.ok}


@dataclass
class RttCheck:
    src: str
    dst: str
    configured_ms: float
    measured_ms: float | None
    loss: float

    def as_dict(self) -> dict:
        return asdict(self)


def check_rate(net, src: str, dst: str, seconds: float = 3.0, tries: int = 3) -> RateCheck:
    """Goodput src -> dst against the path's configured rate; a low reading is taken again (CPU
    contention can only lower it), a high one is final."""
    topo = net.topo
    configured = topo.path_rate_bps(src, dst)
    readings: list[float] = []
    while True:
        readings.append(iperf3_bps(net.host_ns[src], net.host_ns[dst], topo.node(dst).ip,
                                   seconds))
        check = RateCheck(src, dst, configured, max(readings), tuple(readings))
        if check.ok or check.error > 0 or len(readings) >= tries:
            return check


def check_rtt(net, src: str, dst: str, count: int = 10) -> RttCheck:
    topo = net.topo
    r = ping_rtt_ms(net.host_ns[src], topo.node(dst).ip, count)
    configured = 1e3 * (topo.path_delay_s(src, dst) + topo.path_delay_s(dst, src))
    return RttCheck(src, dst, configured, r["median_ms"], r["loss"])


def verify(net, rate_pairs: list[tuple[str, str]] | None = None, seconds: float = 3.0,
           strict: bool = True) -> dict:
    """Ping every host from the first one and iperf3 each given pair (default: each worker's
    link both ways against the launcher or first other host). Raises VerificationError when
    strict and a rate misses by more than RATE_TOLERANCE."""
    topo = net.topo
    names = [n.name for n in topo.nodes]
    rtts = [check_rtt(net, names[0], b) for b in names[1:]]
    if rate_pairs is None:
        hub = topo.launcher.name if topo.launcher else names[0]
        rate_pairs = [p for n in names if n != hub for p in ((n, hub), (hub, n))]
    rates = [check_rate(net, a, b, seconds) for a, b in rate_pairs]
    report = {"rtt": [r.as_dict() for r in rtts], "rate": [r.as_dict() for r in rates]}
    bad = [r for r in rates if not r.ok]
    if strict and bad:
        raise VerificationError("; ".join(
            f"{r.src}->{r.dst}: measured {r.measured_bps / 1e6:.1f} Mbit/s vs configured "
            f"{r.configured_bps / 1e6:.1f}" for r in bad))
    return report
