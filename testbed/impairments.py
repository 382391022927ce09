"""Impairments applied on the bridges when the kernel has no ``sch_netem``. Needs root.

* Loss and partitions: one nftables table of family ``bridge`` (testbed.bridge_rules renders it;
  libnftables loads it in-process), per link direction ``numgen random`` drops; partitions drop
  traffic between groups.
* Delay and jitter: the NFQUEUE delayer (testbed.nfdelay), started idle with the network; the
  first path with a delay routes IPv4 entering a bridge from a host port to its queue
  (``--queue-bypass``: if the delayer dies traffic flows undelayed, it never stops).

Everything created is recorded in the registry before it exists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Iterable, Mapping

from .bridge_rules import load as load_rules
from .bridge_rules import render as render_rules
from .capabilities import Capabilities
from .errors import CommandError
from .executor import raise_priority
from .registry import Registry
from .topology import Topology

NFQUEUE_NUM_BASE = 4200


class BridgeImpairments:
    def __init__(self, topo: Topology, caps: Capabilities, registry: Registry):
        self.topo, self.caps, self.reg = topo, caps, registry
        self._delayer: subprocess.Popen | None = None
        self._rules_loaded: str | None = None
        self._delays_loaded: dict = {}
        self._delay_path = ""
        self._queue_rules = False
        self._hops = {(a.name, b.name): topo.hops(a.name, b.name)
                      for a in topo.nodes for b in topo.nodes if a is not b}
        self.queue_num = NFQUEUE_NUM_BASE + int(registry.id, 36) % 1000
        self.table = registry.prefix
        self.chain = f"{registry.prefix.upper()}-DELAY"

    def reload(self, links: Iterable, host_port: Mapping[str, str],
               partition: tuple[tuple[str, ...], ...]) -> None:
        """Bring rules and delays in line with the links' current directions and the partition."""
        links = list(links)
        self._reload_rules(links, host_port, partition)
        self._reload_delays({st.link.name: st for st in links}, host_port)

    def _loss_rules(self, links, host_port) -> dict[tuple[str, str], float]:
        if self.caps.netem:
            return {}
        is_host = {n.name for n in self.topo.nodes}
        rules = {}
        for st in links:
            ln = st.link
            for src, d, src_end, dst_end in ((ln.a, st.up_dir, st.a_end, st.b_end),
                                             (ln.b, st.down_dir, st.b_end, st.a_end)):
                if not d.loss:
                    continue
                if src in is_host and ln.other(src) in is_host:  # wire: enters on src's port
                    rules[("iifname", host_port[src])] = d.loss
                elif src in is_host:
                    rules[("iifname", dst_end.ifname)] = d.loss
                else:
                    rules[("oifname", src_end.ifname)] = d.loss
        return rules

    def _reload_rules(self, links, host_port, partition) -> None:
        loss = self._loss_rules(links, host_port)
        if not loss and not partition and self.table not in self.reg.state["nft"]:
            return
        self.reg.add("nft", self.table)
        groups = tuple(tuple(self.topo.node(h).ip for h in g) for g in partition)
        text = render_rules(self.table, loss, groups)
        if text != self._rules_loaded:
            load_rules(text)
            self._rules_loaded = text

    def delay_table(self, links: Mapping) -> dict[str, list[list[float]]]:
        """'src dst' -> [[delay_s, jitter_s] per hop] for every host pair with some delay."""
        table = {}
        for (a, b), hops in self._hops.items():
            dirs = [getattr(links[name], f"{d}_dir") for name, d in hops]
            delays = [[d.delay_s, d.jitter_s] for d in dirs if d.delay_s or d.jitter_s]
            if delays:
                table[f"{self.topo.node(a).ip} {self.topo.node(b).ip}"] = delays
        return table

    def _reload_delays(self, links: Mapping, host_port: Mapping[str, str]) -> None:
        """Write the delay table; the first non-empty one also routes host ports to the queue.

        The delayer process is started idle with the network (a Python start costs ~0.1 s, too
        slow for a runtime change); until some path has a delay no packet is queued, so an
        undelayed topology keeps its full kernel-path throughput."""
        if self.caps.netem or self._delayer is None:
            return
        table = self.delay_table(links)
        if table == self._delays_loaded:
            return
        self._delays_loaded = table
        with open(self._delay_path + ".tmp", "w") as f:
            json.dump(table, f)
        os.replace(self._delay_path + ".tmp", self._delay_path)
        self._delayer.send_signal(signal.SIGHUP)
        if table and not self._queue_rules:
            self._install_queue_rules(sorted(host_port.values()))

    def start_delayer(self) -> None:
        self._delay_path = os.path.join(self.reg.dir, "delays.json")
        with open(self._delay_path, "w") as f:
            json.dump({}, f)
        self._delayer = subprocess.Popen(
            [sys.executable, "-m", "testbed.nfdelay", "--queue", str(self.queue_num),
             "--table", self._delay_path], stdout=subprocess.PIPE, start_new_session=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.reg.add_pid(self._delayer.pid, "nfqueue delayer")
        raise_priority(self._delayer.pid)  # its lateness is the delay error
        if self._delayer.stdout.readline().strip() != b"ready":
            raise CommandError("the NFQUEUE delayer did not start")

    def _install_queue_rules(self, ports: list[str]) -> None:
        """IPv4 entering a bridge from a host port -> our queue; one iptables-restore call."""
        self.reg.set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
        self.reg.add("iptables", self.chain)
        lines = ["*mangle", f":{self.chain} - [0:0]"]
        lines += [f"-A {self.chain} -m physdev --physdev-in {port} -j NFQUEUE "
                  f"--queue-num {self.queue_num} --queue-bypass" for port in ports]
        lines += [f"-A FORWARD -j {self.chain}", "COMMIT", ""]
        done = subprocess.run(["iptables-restore", "-w", "--noflush"], input="\n".join(lines),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise CommandError(f"iptables-restore: {done.stderr.strip()}")
        self._queue_rules = True

    def stop(self) -> None:
        if self._delayer is not None and self._delayer.poll() is None:
            self._delayer.terminate()
            try:
                self._delayer.wait(5)
            except subprocess.TimeoutExpired:
                self._delayer.kill()
