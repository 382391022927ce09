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
import logging
import os
import sys

from ..cliargs import HelpFormatter, port, positive_seconds, seconds, slots
from ..errors import AgentUnavailable
from .agent import DEFAULT_PORT, AgentOptions, run_agent, split_id
from .client import best_view, request
from .protocol import Config

EXIT_USAGE, EXIT_UNAVAILABLE = 2, 1
MAX_SECRET_BYTES = 4096


def _secret(args) -> bytes:
    """The cluster secret; ValueError saying why it cannot be had."""
    if args.secret_file:
        try:
            with open(args.secret_file, "rb") as f:
                secret = f.read(MAX_SECRET_BYTES + 1).strip()
        except OSError as e:
            raise ValueError(f"cannot read the secret file: {e.strerror or e}") from None
        if len(secret) > MAX_SECRET_BYTES:
            raise ValueError(f"the secret file is longer than {MAX_SECRET_BYTES} bytes")
    else:
        secret = os.environ.get("CHAOS_CLUSTER_SECRET", "").encode().strip()   # as the file's
    if len(secret) < 16:
        raise ValueError("a cluster secret of at least 16 bytes is needed "
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
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_agent(opts)
    except OSError as e:   # the address cannot be bound, the socket path is not writable, ...
        print(f"chaos-hvd agent: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _discover(args) -> int:
    try:
        view, problems = best_view(args.socket, args.timeout)
    except AgentUnavailable as e:
        print(f"chaos-hvd discover: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
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
            return EXIT_UNAVAILABLE
        return 0
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaos-hvd", description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent", help="run the cluster agent of this node",
                       formatter_class=HelpFormatter)
    a.add_argument("--id", required=True, help="this node's Horovod host name (or host:port)")
    a.add_argument("--members", help="founders, comma-separated (the first view)")
    a.add_argument("--seeds", help="agents to ask for admission, comma-separated")
    a.add_argument("--slots", type=slots, help="Horovod worker slots of this host; agreed in "
                                               "the view, printed by discover")
    a.add_argument("--port", type=port, default=DEFAULT_PORT,
                   help="UDP+TCP port for ids without one")
    a.add_argument("--bind", help="address to bind (default: the id's host)")
    a.add_argument("--secret-file", help="file holding the cluster secret (>= 16 bytes); "
                                         "default: $CHAOS_CLUSTER_SECRET")
    a.add_argument("--socket", help="local API Unix socket (mode 0600)")
    a.add_argument("--event-log", help="append one JSON line per event here")
    d = Config()
    a.add_argument("--heartbeat", type=positive_seconds, default=d.heartbeat_s,
                   help="seconds between heartbeats (members <-> coordinator)")
    a.add_argument("--lease", type=positive_seconds, default=d.lease_s,
                   help="seconds a training lease lasts without renewal")
    a.add_argument("--suspect", type=positive_seconds, default=d.suspect_after_s,
                   help="seconds of silence before the coordinator suspects a member")
    a.add_argument("--propose-timeout", type=positive_seconds, default=d.propose_timeout_s,
                   help="seconds a proposal waits for a majority before the next proposer tries")
    a.add_argument("--retry", type=positive_seconds, default=d.retry_s,
                   help="seconds between retries of unanswered messages")
    o = AgentOptions.__dataclass_fields__
    a.add_argument("--ping", type=positive_seconds, default=o["ping_s"].default,
                   help="seconds between pings to every member (RTT, link state)")
    a.add_argument("--link-down", type=positive_seconds, default=o["link_down_s"].default,
                   help="seconds without pongs before a link is reported down")
    a.add_argument("--link-up", type=positive_seconds, default=o["link_up_s"].default,
                   help="seconds of pongs before a link is reported up again")
    a.add_argument("--probe-seconds", type=seconds, default=o["probe_s"].default,
                   help="bandwidth probe length per direction; 0 turns probes off")
    a.add_argument("--probe-refresh", type=positive_seconds, default=o["probe_refresh_s"].default,
                   help="seconds between full rounds of bandwidth probes")
    a.set_defaults(func=_agent)

    q = sub.add_parser("discover", help="print the agreed members for horovodrun "
                                        "--host-discovery-script", formatter_class=HelpFormatter)
    q.add_argument("--socket", action="append", required=True,
                   help="agent socket (repeat, or a glob); the best answer wins")
    q.add_argument("--slots", type=slots, help="slots of hosts whose agent advertised none "
                                               "(without it such a host prints bare)")
    q.add_argument("--keep-port", dest="strip_port", action="store_false",
                   help="print host:port ids as they are")
    q.add_argument("--timeout", type=positive_seconds, default=1.0,
                   help="seconds to wait for each agent")
    q.set_defaults(func=_discover)

    helps = {"status": "print this agent's view, resources and measured rates",
             "leave": "leave the cluster gracefully (the agent exits once removed)",
             "observe": "report a link or membership observation to the agent"}
    for op, text in helps.items():
        s = sub.add_parser(op, help=text, formatter_class=HelpFormatter)
        s.add_argument("--socket", required=True, help="the agent's local API socket")
        s.add_argument("--timeout", type=positive_seconds, default=2.0,
                       help="seconds to wait for the answer")
        if op == "observe":
            s.add_argument("kind", choices=["link_up", "link_down", "add", "remove"],
                           help="what was observed")
            s.add_argument("nodes", nargs="+", help="the node (add/remove) or the link's two ends")
        s.set_defaults(func=_simple(op))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
