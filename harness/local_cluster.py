"""Real agent processes on loopback: for tests, benchmarks and trying the agent on one machine.

``LocalCluster(n)`` starts ``chaos-hvd agent`` processes with ids ``127.0.0.1:<port>`` (free UDP and
TCP ports), a common secret and event log under a directory, and stops them on exit (SIGTERM, then
SIGKILL) — only the processes it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from chaos_hvd import events as ev
from chaos_hvd.cluster.client import agent_argv, request, wait_members, write_secret
from chaos_hvd.errors import AgentUnavailable
from chaos_hvd.events import tail_events
from chaos_hvd.waiting import wait_until


def free_port() -> int:
    """A port free for both UDP and TCP right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise OSError("no free port")


class LocalCluster:
    def __init__(self, workdir: str, n: int = 3, agent_args: list[str] = (),
                 secret: bytes = b"local-cluster-secret-0123456789"):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.secret_file = os.path.join(workdir, "secret")
        write_secret(self.secret_file, secret)
        self.secret = secret
        self.event_log = os.path.join(workdir, "agents.jsonl")
        self.agent_args = list(agent_args)
        self.ids = [f"127.0.0.1:{free_port()}" for _ in range(n)]
        self.procs: dict[str, subprocess.Popen] = {}
        self._records: list[ev.Event] = []
        self._offset, self._partial = 0, b""

    def socket(self, node: str) -> str:
        return os.path.join(self.dir, f"agent-{node.rsplit(':', 1)[1]}.sock")

    def start(self, node: str, founders: list[str] | None = None,
              seeds: list[str] | None = None, extra: list[str] = ()) -> subprocess.Popen:
        argv = agent_argv(node, self.secret_file, self.socket(node), self.event_log,
                          founders=founders or (), seeds=seeds or (),
                          options=[*self.agent_args, *extra])
        log = open(os.path.join(self.dir, f"agent-{node.rsplit(':', 1)[1]}.log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[node] = p
        return p

    def __enter__(self) -> "LocalCluster":
        for node in self.ids:
            self.start(node, founders=self.ids)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def kill(self, node: str) -> float:
        """SIGKILL (a crash); returns the wall-clock time of the kill."""
        t = time.time()
        self.procs[node].kill()
        self.procs[node].wait()
        return t

    def view(self, node: str) -> dict:
        return request(self.socket(node), {"op": "view"})

    def wait(self, pred, timeout_s: float = 10.0, what: str = "condition"):
        return wait_until(pred, timeout_s, what, interval_s=0.02, retry_on=(AgentUnavailable,))

    def wait_members(self, nodes: list[str], members: set[str], timeout_s: float = 10.0,
                     lease: bool = True) -> int:
        """Wait until every node in `nodes` has a view with exactly `members` (and, by default,
        holds a lease); returns that epoch."""
        return wait_members([self.socket(n) for n in nodes], members, timeout_s,
                            lease=lease)["epoch"]

    def events(self, *kinds: type[ev.Event]) -> list[ev.Event]:
        """The agents' records so far (of the given types). Reads only what was appended since
        the last call: callers poll this while agents handle an event, and re-reading a long
        log each time took a core from the agents being measured."""
        if os.path.exists(self.event_log):
            new, self._offset, self._partial = tail_events(self.event_log, self._offset,
                                                           self._partial)
            self._records += new
        return [e for e in self._records if isinstance(e, kinds)] if kinds else \
            list(self._records)
