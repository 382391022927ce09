"""Cluster agents in the emulated hosts: the testbed's "discovery from agents" mode.

With ``Testbed(..., agents=AgentMode(...))`` every initial worker runs ``chaos-hvd agent`` inside
its host (its netns, its hostname), with id = the host's IP (the name Horovod uses), the founders
= the initial workers, one cluster secret (mode 0600, in the run directory) and a local socket
``<run dir>/agents/<ip>.sock``. The agent belongs to its host: ``crash`` SIGKILLs it with the
host's other processes (its peers detect that by heartbeats), ``leave`` SIGTERMs it (it announces
the leave). ``join`` starts the joiner's agent with the others as seeds: the joiner announces
itself. Links going down and up are seen by the agents' pings.

Each agent advertises its host's ``slots`` from the topology; they are agreed in the view with
the membership (a joiner's come with its admission), so hosts may differ. The discovery script
then asks the agents (``chaos-hvd discover``), so the testbed writes no host list at all;
ChaosState reads measured rates from its host's agent (``CHAOS_AGENT_SOCKET``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from chaos_hvd import events
from chaos_hvd.cluster.client import agent_argv, wait_members, write_secret
from chaos_hvd.errors import WaitTimeout

from .errors import CommandError

# Timings for emulated edge links: suspect (3 s) well above a short link flap, link state from
# pings within ~1 s (1 s without pongs: training start-up on 2 shared cores delays replies by
# several hundred ms). Heartbeat traffic stays tiny next to training.
DEFAULT_OPTS = {"heartbeat": "0.2", "lease": "0.8", "suspect": "3.0", "propose-timeout": "0.4",
                "retry": "0.3", "ping": "0.2", "link-down": "1.0", "link-up": "0.6",
                "probe-seconds": "0.3", "probe-refresh": "30"}


@dataclass
class AgentMode:
    options: dict[str, str] = field(default_factory=dict)   # chaos-hvd agent --KEY VALUE

    def argv(self) -> list[str]:
        out: list[str] = []
        for k, v in {**DEFAULT_OPTS, **self.options}.items():
            out += [f"--{k}", str(v)]
        return out


class HostAgents:
    def __init__(self, testbed, mode: AgentMode):
        self.tb, self.mode = testbed, mode
        self.dir = os.path.join(testbed.run_dir, "agents")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.secret_file = os.path.join(self.dir, "secret")
        write_secret(self.secret_file, os.urandom(32).hex().encode())
        self.event_log = os.path.join(testbed.out_dir, "agents.jsonl")

    def socket(self, name: str) -> str:
        return os.path.join(self.dir, f"{self.tb.topo.node(name).ip}.sock")

    @property
    def socket_pattern(self) -> str:
        return os.path.join(self.dir, "{host}.sock")

    def start(self, name: str, founders: list[str] = (), seeds: list[str] = ()) -> None:
        ip = self.tb.topo.node(name).ip
        # nice -5: emulated hosts share this machine's cores; a real node's agent has its own
        argv = ["nice", "-n", "-5", *agent_argv(
            ip, self.secret_file, self.socket(name), self.event_log, founders=founders,
            seeds=seeds, options=["--slots", str(self.tb.topo.node(name).slots),
                                  *self.mode.argv()])]
        p = self.tb.hosts.start_daemon(name, argv, {},
                                       os.path.join(self.tb.run_dir, f"agent-{name}.log"))
        self.tb.log(events.AgentStart(node=name, id=ip, pid_started=p.pid,
                                      founders=list(founders), seeds=list(seeds)))

    def start_founders(self, names: list[str], timeout_s: float = 20.0) -> dict:
        ips = [self.tb.topo.node(n).ip for n in names]
        for n in names:
            self.start(n, founders=ips)
        return self.wait_members(names, set(ips), timeout_s)

    def join(self, name: str) -> None:
        me = self.tb.topo.node(name).ip
        seeds = [n.ip for n in self.tb.topo.workers if n.ip != me]
        self.start(name, seeds=seeds)

    def wait_members(self, names: list[str], members: set[str], timeout_s: float) -> dict:
        try:
            return wait_members([self.socket(n) for n in names], members, timeout_s, slots=True)
        except WaitTimeout as e:
            raise CommandError(f"agents of {names} did not agree on {sorted(members)} in "
                               f"{timeout_s} s ({e}); see {self.tb.run_dir}/agent-*.log") from None

    def discovery_script(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec {sys.executable} -m chaos_hvd.cluster.cli discover "
                    f"--socket '{self.dir}/*.sock'\n")
        os.chmod(path, 0o755)
