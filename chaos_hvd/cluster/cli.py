"""``chaos-hvd``: the cluster agent and the tools around it.

    chaos-hvd agent --id 10.0.0.1 --members 10.0.0.1,10.0.0.2,10.0.0.3 --slots 1 \
                    --secret-file S --socket P
    chaos-hvd agent --id 10.0.0.4 --seeds 10.0.0.1,10.0.0.2 ...          # join a running cluster
    chaos-hvd discover --socket P [--socket Q ...] [--slots N]          # Horovod host discovery
    chaos-hvd status|leave --socket P
    chaos-hvd observe --socket P link_down A B                          # inject an observation

The cluster secret comes from ``--secret-file`` or ``CHAOS_CLUSTER_SECRET`` (at least 16 bytes);
without one the agent refuses to start. Exit codes: 0 ok, 1 no agent answered, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .agent import DEFAULT_PORT, AgentOptions, run_agent, split_id
from .client import best_view, request
from ..errors import AgentUnavailable
from .protocol import Config


def _secret(args) -> bytes:
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().strip()
    else:
        secret = os.environ.get("CHAOS_CLUSTER_SECRET", "").encode()
    if len(secret) < 16:
        raise SystemExit("chaos-hvd agent: a cluster secret of at least 16 bytes is needed "
                         "(--secret-file or CHAOS_CLUSTER_SECRET)")
    return secret


def _ids(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def _agent(args) -> int:
    try:
        cfg = Config(heartbeat_s=args.heartbeat, lease_s=args.lease,
                     suspect_after_s=args.suspect, propose_timeout_s=args.propose_timeout,
                     retry_s=args.retry)
        opts = AgentOptions(id=args.id, secret=_secret(args), members=_ids(args.members),
                            seeds=_ids(args.seeds), slots=args.slots, port=args.port,
                            bind=args.bind,
                            socket_path=args.socket, event_log=args.event_log, protocol=cfg,
                            ping_s=args.ping, link_down_s=args.link_down, link_up_s=args.link_up,
                            probe_s=args.probe_seconds, probe_refresh_s=args.probe_refresh)
    except ValueError as e:
        print(f"chaos-hvd agent: {e}", file=sys.stderr)
        return 2
    run_agent(opts)
    return 0


def _discover(args) -> int:
    try:
        view, problems = best_view(args.socket, args.timeout)
    except AgentUnavailable as e:
        print(f"chaos-hvd discover: {e}", file=sys.stderr)
        return 1
    if not view["can_train"]:
        print(f"chaos-hvd discover: no agent holds a lease; newest view is epoch {view['epoch']}",
              file=sys.stderr)
    advertised = view.get("slots", {})
    for m in view["members"]:
        host = split_id(m)[0] if args.strip_port else m
        slots = advertised.get(m) or args.slots
        print(f"{host}:{slots}" if slots else host)   # bare: horovodrun's --slots applies
    return 0


def _simple(op: str):
    def run(args) -> int:
        req = {"op": op}
        if op == "observe":
            req["change"] = [args.kind, *args.nodes]
        try:
            print(json.dumps(request(args.socket, req, args.timeout), indent=1))
        except AgentUnavailable as e:
            print(f"chaos-hvd {op}: {e}", file=sys.stderr)
            return 1
        return 0
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaos-hvd", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent", help="run the cluster agent of this node")
    a.add_argument("--id", required=True, help="this node's Horovod host name (or host:port)")
    a.add_argument("--members", help="founders, comma-separated (the first view)")
    a.add_argument("--seeds", help="agents to ask for admission, comma-separated")
    a.add_argument("--slots", type=int, help="Horovod worker slots of this host; agreed in the "
                                             "view, printed by discover")
    a.add_argument("--port", type=int, default=DEFAULT_PORT, help="UDP+TCP port for ids without one")
    a.add_argument("--bind", help="address to bind (default: the id's host)")
    a.add_argument("--secret-file")
    a.add_argument("--socket", help="local API Unix socket (mode 0600)")
    a.add_argument("--event-log", help="append one JSON line per event here")
    d = Config()
    a.add_argument("--heartbeat", type=float, default=d.heartbeat_s)
    a.add_argument("--lease", type=float, default=d.lease_s)
    a.add_argument("--suspect", type=float, default=d.suspect_after_s)
    a.add_argument("--propose-timeout", type=float, default=d.propose_timeout_s)
    a.add_argument("--retry", type=float, default=d.retry_s)
    o = AgentOptions.__dataclass_fields__
    a.add_argument("--ping", type=float, default=o["ping_s"].default)
    a.add_argument("--link-down", type=float, default=o["link_down_s"].default)
    a.add_argument("--link-up", type=float, default=o["link_up_s"].default)
    a.add_argument("--probe-seconds", type=float, default=o["probe_s"].default,
                   help="per direction; 0 turns bandwidth probes off")
    a.add_argument("--probe-refresh", type=float, default=o["probe_refresh_s"].default)
    a.set_defaults(func=_agent)

    q = sub.add_parser("discover", help="print the agreed members for horovodrun "
                                        "--host-discovery-script")
    q.add_argument("--socket", action="append", required=True,
                   help="agent socket (repeat, or a glob); the best answer wins")
    q.add_argument("--slots", type=int, help="slots of hosts whose agent advertised none "
                                             "(without it such a host prints bare)")
    q.add_argument("--keep-port", dest="strip_port", action="store_false",
                   help="print host:port ids as they are")
    q.add_argument("--timeout", type=float, default=1.0)
    q.set_defaults(func=_discover)

    for op in ("status", "leave", "observe"):
        s = sub.add_parser(op)
        s.add_argument("--socket", required=True)
        s.add_argument("--timeout", type=float, default=2.0)
        if op == "observe":
            s.add_argument("kind", choices=["link_up", "link_down", "add", "remove"])
            s.add_argument("nodes", nargs="+")
        s.set_defaults(func=_simple(op))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
