"""Talking to a local cluster agent over its Unix socket, and turning its answers into inputs.

Used by ``chaos-hvd discover`` (Horovod's host discovery) and by ``ChaosState`` (measured link
rates for the shard scheduler). Standard library only: no asyncio, no Horovod.
"""

from __future__ import annotations

import glob
import json
import os
import socket

from .config import BandwidthMap
from .errors import AgentUnavailable



def write_secret(path: str, secret: bytes) -> None:
    """The cluster secret file, created readable by its owner only."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(secret)


def request(path: str, req: dict, timeout_s: float = 2.0) -> dict:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(path)
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                data = s.recv(1 << 16)
                if not data:
                    break
                buf += data
    except OSError as e:
        raise AgentUnavailable(f"agent socket {path}: {e}") from e
    try:
        reply = json.loads(buf)
    except ValueError:
        raise AgentUnavailable(f"agent socket {path}: not a JSON reply") from None
    if not isinstance(reply, dict):
        raise AgentUnavailable(f"agent socket {path}: not a JSON object")
    if "error" in reply:
        raise AgentUnavailable(f"agent socket {path}: {reply['error']}")
    return reply


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


def measured_bandwidth(rows: list) -> BandwidthMap:
    """Agent rate rows [src, dst, mbps, rtt_ms, unix] as a BandwidthMap: each measured direction
    is a link figure, and a host's egress is the best rate measured out of it (a lower bound on
    what it can serve). Ingress caps are not guessed: one probe at a time cannot show them."""
    links = {(s, d): float(m) for s, d, m, _, _ in rows}
    hosts: dict[str, float] = {}
    for (s, _), m in links.items():
        hosts[s] = max(hosts.get(s, 0.0), m)
    return BandwidthMap(None, hosts, links, {})


def merge(measured: BandwidthMap, static: BandwidthMap) -> BandwidthMap:
    """Measured figures win; the static config fills what was not measured."""
    return BandwidthMap(static.default_mbps, {**static.hosts, **measured.hosts},
                        {**static.links, **measured.links}, {**static.ingress, **measured.ingress})
