"""Talking to local cluster agents: start one, ask it over its Unix socket, wait for agreement.

Used by ``chaos-hvd discover`` (Horovod's host discovery), by ``ChaosState`` (measured link rates
for the shard scheduler), by the testbed's agents mode and by the loopback test harness. Standard
library only: no asyncio, no Horovod.
"""

from __future__ import annotations

import glob
import os
import socket
import sys

from .. import jsonline
from ..errors import AgentUnavailable
from ..waiting import wait_until


def write_secret(path: str, secret: bytes) -> None:
    """The cluster secret file, created readable by its owner only."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(secret)


def request(path: str, req: dict, timeout_s: float = 2.0) -> dict:
    return jsonline.request(path, req, timeout_s, AgentUnavailable)


def expand(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        out += sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    return out


def best_view(paths: list[str], timeout_s: float = 1.0) -> tuple[dict, list[str]]:
    """The view to trust among several agents: one from an agent that holds a training lease
    (it is on the majority side), newest epoch first; else the newest epoch any agent has.
    Returns (view, problems); AgentUnavailable when no agent answered."""
    views, problems = [], []
    for p in expand(paths):
        try:
            views.append(request(p, {"op": "view"}, timeout_s))
        except AgentUnavailable as e:
            problems.append(str(e))
    views = [v for v in views if v.get("epoch") is not None]
    if not views:
        raise AgentUnavailable("no agent with a view answered: " + "; ".join(problems or
                                                                              ["no sockets"]))
    return max(views, key=lambda v: (bool(v["can_train"]), v["epoch"])), problems


def socket_for_host(pattern: str | None, host: str | None = None) -> str | None:
    """An agent socket path (CHAOS_AGENT_SOCKET) with ``{host}`` replaced by this worker's
    Horovod host name: emulated hosts share one file system, real ones each have their own."""
    if not pattern:
        return None
    host = host or os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()
    return pattern.replace("{host}", host)


def agent_argv(node_id: str, secret_file: str, socket_path: str, event_log: str, *,
               founders: list[str] = (), seeds: list[str] = (), options: list[str] = ()) -> list[str]:
    """The command line of one ``chaos-hvd agent`` process (run with this interpreter)."""
    argv = [sys.executable, "-m", "chaos_hvd.cluster.cli", "agent", "--id", node_id,
            "--secret-file", secret_file, "--socket", socket_path, "--event-log", event_log,
            *options]
    if founders:
        argv += ["--members", ",".join(founders)]
    if seeds:
        argv += ["--seeds", ",".join(seeds)]
    return argv


def wait_members(sockets: list[str], members: set[str], timeout_s: float, *, lease: bool = True,
                 slots: bool = False, what: str = "") -> dict:
    """Wait until every agent behind `sockets` has one view (same epoch) with exactly `members`,
    holding a lease unless `lease` is False, and with every member's slots agreed if `slots`
    (founders' slots arrive one view after forming). Returns that view; WaitTimeout otherwise."""
    def agreed():
        views = [request(p, {"op": "view"}, 1.0) for p in sockets]
        if all(set(v["members"]) == members and (v["can_train"] or not lease)
               and (not slots or set(v.get("slots", {})) == members) for v in views) \
                and len({v["epoch"] for v in views}) == 1:
            return views[0]
        return None
    return wait_until(agreed, timeout_s, what or f"agents to agree on {sorted(members)}",
                      interval_s=0.02, retry_on=(AgentUnavailable,))


def agreed_members(path: str, timeout_s: float = 0.5) -> set[str] | None:
    """The members of the local agent's view, or None when it cannot vouch for them now (no
    answer, or no training lease: a minority's view proves nothing about the others)."""
    try:
        view = request(path, {"op": "view"}, timeout_s)
    except AgentUnavailable:
        return None
    if not view.get("can_train") or not isinstance(view.get("members"), list):
        return None
    return {m for m in view["members"] if isinstance(m, str)}

