"""Userspace delay and jitter for kernels without sch_netem: an NFQUEUE delayer.

Run by the testbed as ``python -m testbed.nfdelay --queue N --table FILE``. iptables sends
IPv4 packets entering the bridges from a host port to queue N (``--queue-bypass``: if this
process dies, packets pass undelayed instead of the links going dead). Packets stay in the
kernel; we read 20 header bytes, hold (due time, packet) in a heap and give the verdict when due.

The table (JSON, re-read on SIGHUP) maps "src dst" IPv4 pairs to the hops of their path,
``[[delay_s, jitter_s], ...]``; each hop's delay is drawn uniform in delay ± jitter (netem's
default distribution), clipped at zero. Measured on this kind of machine: RTT +0.26..0.69 ms over
the configured delay (bench/bench_testbed.py), p99 lateness 2.6 ms at 100 Mbit/s and a ~1.2 Gbit/s
ceiling (docs/emulation-notes.md).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import select
import signal
import socket
import sys
import time


class _Stop(Exception):
    pass


def sample_delay(hops, rng: random.Random) -> float:
    return sum(max(0.0, d + (rng.uniform(-j, j) if j else 0.0)) for d, j in hops)


def main(argv=None) -> int:
    from netfilterqueue import COPY_PACKET, NetfilterQueue

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    table: dict[tuple[bytes, bytes], list] = {}

    def reload(*_):
        with open(args.table) as f:
            raw = json.load(f)
        table.clear()
        for key, hops in raw.items():
            src, dst = key.split()
            table[(socket.inet_aton(src), socket.inet_aton(dst))] = hops

    def stop(*_):
        raise _Stop()  # poll() is retried after signals: only an exception ends the loop

    reload()
    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    heap: list = []
    seq = itertools.count()

    def on_packet(pkt):
        hdr = pkt.get_payload()
        hops = table.get((hdr[12:16], hdr[16:20]))
        delay = sample_delay(hops, rng) if hops else 0.0
        if delay <= 0:
            pkt.accept()
        else:
            heapq.heappush(heap, (time.monotonic() + delay, next(seq), pkt))

    nfq = NetfilterQueue()
    nfq.bind(args.queue, on_packet, max_len=65536, mode=COPY_PACKET, range=20)
    fd = nfq.get_fd()
    print("ready", flush=True)
    try:
        while True:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                heapq.heappop(heap)[2].accept()
            # select() takes microseconds; poll()/epoll() round up to whole milliseconds
            timeout_s = max(0.0, heap[0][0] - now) if heap else 1.0
            if select.select([fd], [], [], timeout_s)[0]:
                nfq.run(block=False)
    except _Stop:
        pass
    finally:
        for _, _, pkt in heap:  # let held packets go rather than drop them
            pkt.accept()
        nfq.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
