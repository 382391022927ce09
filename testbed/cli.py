"""``chaos-testbed``: emulate an edge cluster on this machine and inject faults into a real run.

    sudo chaos-testbed run topologies/paper-5plus1-small.yaml --faults ci/faults/join-crash-flap.yaml \\
        -- horovodrun -np {np} --min-np 2 --max-np {max_np} \\
           --host-discovery-script {discovery} --network-interface eth0 python examples/...
    sudo chaos-testbed up topologies/wifi-mesh-8.yaml        # foreground; Ctrl-C tears down
    sudo chaos-testbed inject link_down link=j3-ap1          # into the running testbed
    sudo chaos-testbed show | down | clean
    chaos-testbed check topologies/x.yaml [--faults f.yaml]  # validate files (no root)
    chaos-testbed probe                                       # what this kernel can emulate
    chaos-testbed report results/<run>                        # the run's timeline as a PNG

``{discovery}``, ``{hosts}``, ``{np}``, ``{max_np}``, ``{out}``, ``{event_log}``, ``{bandwidth}`` and
``{agent_socket}`` in the command are replaced; ``{storage}`` by the checkpoint URL of the
topology's first ``role: storage`` node (for ``CHAOS_CHECKPOINT_DIR``). ``run --agents`` runs a ``chaos-hvd agent`` in every
worker and makes ``{discovery}`` ask the agents (``--agent-opt heartbeat=0.1`` to tune them). Exit codes: the command's own status for ``run``; 2 bad input, 3 missing kernel feature,
4 verification failed, 5 (``run``) the command succeeded but scheduled actions never fired
(``--allow-unfired``: the command's status), 77 not root, 130 interrupted, 1 other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time

from chaos_hvd import events
from chaos_hvd.cliargs import HelpFormatter, positive_seconds
from chaos_hvd.errors import WaitTimeout
from chaos_hvd.waiting import wait_until

from .errors import InputError, TestbedError

EXIT_INTERRUPTED = 130
UNFIRED_EXIT = 5          # run: the command succeeded, but a scheduled fault never happened


class _Interrupted(BaseException):
    pass


_MAIN_PID = os.getpid()


_interrupted = False


def _on_signal(signum, _frame):
    global _interrupted
    if os.getpid() != _MAIN_PID:
        # a forked helper (pyroute2 runs netns work in children): die as if unhandled
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    from .emulation import tearing_down
    if _interrupted or tearing_down():
        # a second Ctrl-C, or the same signal sent to our whole process group (`timeout` does
        # that) must not abort the teardown half-way: it would leave namespaces and workers
        _say(f"{signal.Signals(signum).name}: tearing down, please wait")
        return
    _interrupted = True
    raise _Interrupted(signal.Signals(signum).name)


def _install_signal_handlers() -> None:
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def _say(msg: str) -> None:
    print(f"chaos-testbed: {msg}", file=sys.stderr, flush=True)


def _progress(entry: dict) -> None:
    if isinstance(entry, events.Fault):
        extra = f" at step {entry.step_seen}" if entry.at_step is not None else ""
        extra += f" (size {entry.at_size})" if entry.at_size is not None else ""
        extra += f" on {entry.at_record}" if entry.at_record is not None else ""
        _say(f"[{entry.t_rel:8.2f}s] {entry.action} {entry.target}{extra} "
             f"(applied in {entry.applied_ms:.1f} ms)")
    elif isinstance(entry, events.FaultError):
        _say(f"[{entry.t_rel:8.2f}s] FAILED {entry.action} {entry.target}: {entry.error}")


def _load(args):
    from .faults import Schedule, chaos_schedule, load_schedule
    from .topology import load_topology
    topo = load_topology(args.topology)
    schedule = Schedule()
    if getattr(args, "faults", None):
        schedule = load_schedule(args.faults, topo)
    if getattr(args, "chaos_seed", None) is not None:
        extra = chaos_schedule(topo, args.chaos_seed, args.chaos_duration, args.chaos_interval)
        schedule = Schedule(schedule.actions + extra.actions, args.chaos_seed)
    return topo, schedule


def _default_out(topo) -> str:
    return os.path.join("results", f"testbed-{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _verify(tb, args) -> None:
    from .verify import verify
    report = verify(tb.net, seconds=args.verify_seconds, strict=True)
    with open(os.path.join(tb.out_dir, "verify.json"), "w") as f:
        json.dump(report, f, indent=1)
    for r in report["rate"]:
        conf = r["configured_bps"]
        tries = f" (best of {len(r['readings_bps'])})" if len(r["readings_bps"]) > 1 else ""
        _say(f"verify {r['src']}->{r['dst']}: {r['measured_bps'] / 1e6:.1f} Mbit/s measured"
             f"{tries}, " + ("unshaped" if conf is None else f"{conf / 1e6:.1f} configured"))
    for r in report["rtt"]:
        _say(f"verify ping {r['src']}->{r['dst']}: {r['measured_ms']} ms measured (median), "
             f"{r['configured_ms']:.2f} ms configured (+ ~0.1 ms bridge)")


def cmd_check(args) -> int:
    topo, schedule = _load(args)
    _say(f"{args.topology}: {len(topo.nodes)} hosts, {len(topo.switches)} switches, "
         f"{len(topo.links)} links: OK")
    if args.faults or args.chaos_seed is not None:
        for a in schedule.expand():
            if a.at_s is not None:
                when = f"{a.at_s + a.offset_s:.3f}s"
            elif a.at_record is not None:
                when = f"{a.at_record}+{a.offset_s:g}s"
            else:
                when = f"step {a.at_step}{'' if a.at_size is None else f'@size {a.at_size}'}" \
                    f"+{a.offset_s:g}s"
            print(f"{when:>14}  {a.action:<10} {a.target}")
    return 0


def cmd_probe(args) -> int:
    from .capabilities import probe
    caps = probe()
    print(json.dumps(caps.as_dict(), indent=1))
    for line in caps.fallbacks():
        _say(line)
    return 0


def cmd_run(args) -> int:
    from .emulation import Testbed, require_root
    from .executor import Executor
    require_root()
    topo, schedule = _load(args)
    if topo.launcher is None:
        raise InputError(f"topology {topo.name!r} has no launcher node; add "
                         "{name: ctl, role: launcher} linked to a switch", args.topology)
    command = args.command
    if not command:
        raise InputError("run needs a command after --")
    if (any("{storage}" in a for a in command)
            and not any(n.role == "storage" for n in topo.nodes)):
        raise InputError(f"the command uses {{storage}} but {topo.name} has no storage node")
    _install_signal_handlers()
    out = args.out or _default_out(topo)
    with Testbed(topo, out, agents=_agent_mode(args)) as tb:
        _say(f"testbed {tb.reg.id} up: {len(topo.nodes)} hosts; timeline {tb.timeline_path}")
        for line in tb.caps.fallbacks():
            _say(line)
        if args.verify:
            _verify(tb, args)
        ph = tb.placeholders()
        if os.path.exists(ph["event_log"]):  # an earlier run's steps must not fire our triggers
            os.replace(ph["event_log"], f"{ph['event_log']}.{time.strftime('%Y%m%d-%H%M%S')}")
        argv = [_substitute(a, ph) for a in command]
        env = {"CHAOS_EVENT_LOG": ph["event_log"], "CHAOS_TESTBED_DISCOVERY": ph["discovery"],
               "CHAOS_TESTBED_OUT": tb.out_dir, "CHAOS_BANDWIDTH": "@" + ph["bandwidth"],
               "PYTHONUNBUFFERED": "1"}
        if tb.agents is not None:
            env["CHAOS_AGENT_SOCKET"] = ph["agent_socket"]
            _say(f"discovery from cluster agents; their events in {tb.agents.event_log}")
        ex = Executor(tb, schedule, ph["event_log"], progress=_progress)
        tb.log(events.CommandStart(argv=argv, host=topo.launcher.name))
        proc = tb.hosts.launch(topo.launcher.name, argv, env)
        ex.start()
        try:
            rc = _wait_with_progress(proc, ex, tb, args.timeout)
        except subprocess.TimeoutExpired:
            tb.log(events.CommandTimeout(timeout_s=args.timeout))
            _say(f"command still running after {args.timeout} s: stopping it")
            proc.terminate()
            try:
                rc = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rc = 124
        ex.stop()
        tb.log(events.CommandExit(rc=rc, pending_actions=len(ex.pending)))
        if ex.steps.unreadable:
            _say(f"{ex.steps.unreadable} line(s) of the event log were not records (skipped; "
                 "the first of each kind is shown above)")
        if ex.pending:
            _say(f"{len(ex.pending)} scheduled action(s) never fired (the command ended first): "
                 + ", ".join(f"{a.action} {a.target}" for a in ex.pending[:5]))
            if rc == 0 and not args.allow_unfired:
                rc = UNFIRED_EXIT
        _say(f"command exited with {rc}; tearing down")
    _say(f"timeline picture: chaos-testbed report {tb.out_dir}")
    return rc


def cmd_report(args) -> int:
    from .report import describe, load_run, write_report
    path = write_report(args.run_dir, args.out)
    print(describe(load_run(args.run_dir)))
    print(f"wrote {path}")
    return 0


def _agent_mode(args):
    from .agents import AgentMode
    if not args.agents:
        return None
    opts = {}
    for item in args.agent_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--agent-opt {item!r}: expected KEY=VALUE (e.g. heartbeat=0.1)")
        opts[key.strip().lstrip("-")] = value.strip()
    return AgentMode(opts)


def _wait_with_progress(proc, ex, tb, timeout_s, every_s: float = 30.0) -> int:
    """Wait for the command, showing how far training got and what is pending: a live rich
    progress line on a terminal (faults applied of the schedule, training step, elapsed), else a
    plain line every `every_s` (logs, CI)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    live = _live_progress(len(ex.pending)) if sys.stderr.isatty() else None
    total = len(ex.pending)
    try:
        while True:
            tick = 1.0 if live is not None else every_s
            wait_s = tick if deadline is None else min(tick, deadline - time.monotonic())
            try:
                return proc.wait(timeout=max(0.0, wait_s))
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                step = ex.steps.step
                what = (f"training step {step if step >= 0 else '-'}; "
                        f"{len(ex.pending)} action(s) pending")
                if live is not None:
                    live[0].update(live[1], completed=total - len(ex.pending),
                                   description=what)
                else:
                    _say(f"[{time.monotonic() - tb.t0:8.2f}s] running; {what}")
    finally:
        if live is not None:
            live[0].stop()


def _live_progress(total: int):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    progress = Progress(TextColumn("chaos-testbed: {task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("actions"), TimeElapsedColumn(),
                        console=Console(stderr=True))
    task = progress.add_task("starting", total=max(total, 1))
    progress.start()
    return progress, task


def _substitute(arg: str, ph: dict) -> str:
    for key, value in ph.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def cmd_up(args) -> int:
    import threading

    from .control import ControlServer
    from .emulation import Testbed, require_root
    require_root()
    topo, _ = _load(args)
    _install_signal_handlers()
    stop = threading.Event()
    with Testbed(topo, args.out or _default_out(topo)) as tb:
        if args.verify:
            _verify(tb, args)
        server = ControlServer(tb, stop.set)
        server.start()
        d = tb.describe()
        for name, h in d["hosts"].items():
            print(f"{name:<12} {h['ip']:<15} {h['role']:<8} ip netns exec {h['netns']} ...")
        print(f"discovery script: {tb.discovery_script}")
        _say(f"testbed {tb.reg.id} up; 'chaos-testbed down' or Ctrl-C to tear down")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.close()
    return 0


def _running(ident: str | None):
    from .registry import Registry
    regs = [r for r in Registry.all() if r.owner_alive()]
    if ident:
        regs = [r for r in regs if r.id == ident]
    if not regs:
        raise TestbedError("no running testbed" + (f" with id {ident}" if ident else ""))
    if len(regs) > 1:
        raise InputError(f"several testbeds are running ({', '.join(r.id for r in regs)}): "
                         "pass --id")
    return regs[0]


def cmd_inject(args) -> int:
    import yaml

    from .control import request
    from .emulation import require_root
    require_root()
    action = {"action": args.action}
    for kv in args.params:
        if "=" not in kv:
            raise InputError(f"expected key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        action[k] = yaml.safe_load(v)
    reply = request(_running(args.id).dir, {"op": "inject", "action": action})
    for entry in reply["applied"]:
        _progress(events.decode(json.dumps(entry)))
    return 0


def cmd_show(args) -> int:
    from .control import request
    from .emulation import require_root
    from .registry import Registry
    require_root()
    regs = Registry.all()
    if not regs:
        _say("no testbed instances")
    for reg in regs:
        if reg.owner_alive():
            print(json.dumps(request(reg.dir, {"op": "show"})["testbed"], indent=1))
        else:
            _say(f"instance {reg.id}: owner gone, leftovers recorded ('chaos-testbed clean')")
    return 0


def cmd_down(args) -> int:
    from .control import request
    from .emulation import require_root
    require_root()
    reg = _running(args.id)
    request(reg.dir, {"op": "down"})
    try:
        wait_until(lambda: not os.path.exists(reg.dir), 10.0, f"testbed {reg.id} to go down")
    except WaitTimeout:
        raise TestbedError(f"testbed {reg.id} did not go down; try 'chaos-testbed clean --force'")
    return 0


def cmd_clean(args) -> int:
    from .emulation import require_root
    from .registry import clean_all
    require_root()
    cleaned, problems = clean_all(force=args.force)
    _say(f"cleaned {len(cleaned)} instance(s)" + (f": {', '.join(cleaned)}" if cleaned else ""))
    for p in problems:
        _say(f"could not remove: {p}")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chaos-testbed", description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    sub = ap.add_subparsers(dest="cmd", required=True)

    def parser(name, text):
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    def files(p, faults=True):
        p.add_argument("topology", help="topology YAML (see topologies/)")
        if faults:
            p.add_argument("--faults", help="fault schedule YAML")
            p.add_argument("--chaos-seed", type=int, help="add a seeded random schedule")
            p.add_argument("--chaos-duration", type=positive_seconds, default=60.0,
                           help="seconds the random schedule lasts")
            p.add_argument("--chaos-interval", type=positive_seconds, default=10.0,
                           help="mean seconds between random faults")

    def verify_opts(p):
        p.add_argument("--verify", action="store_true",
                       help="measure rates (iperf3) and RTTs and fail outside ±5%%")
        p.add_argument("--verify-seconds", type=positive_seconds, default=3.0,
                       help="seconds of each iperf3 measurement")

    p = parser("run", "build, run a command in the launcher host, inject faults")
    files(p)
    verify_opts(p)
    p.add_argument("--out", help="directory for timeline.jsonl, events.jsonl (default results/)")
    p.add_argument("--timeout", type=positive_seconds, default=None,
                   help="stop the command after this many seconds (exit 124)")
    p.add_argument("--agents", action="store_true",
                   help="run a chaos-hvd cluster agent in every worker; {discovery} asks them")
    p.add_argument("--agent-opt", action="append", metavar="KEY=VALUE",
                   help="chaos-hvd agent option, e.g. heartbeat=0.1 (repeatable)")
    p.add_argument("--allow-unfired", action="store_true",
                   help=f"exit with the command's status even if scheduled actions never fired "
                        f"(default: exit {UNFIRED_EXIT} then, when the command itself succeeded)")
    p.set_defaults(fn=cmd_run)  # the command comes after "--" (split off in main)

    p = parser("up", "build and hold the network until Ctrl-C or 'down'")
    files(p, faults=False)
    verify_opts(p)
    p.add_argument("--out", help="directory for the timeline (default results/)")
    p.set_defaults(fn=cmd_up)

    p = parser("inject", "apply one action to the running testbed now")
    p.add_argument("action", help="a fault action: crash, link_down, degrade, partition, ...")
    p.add_argument("params", nargs="*", help="key=value, e.g. link=h1-s1 rate=10Mbit")
    p.add_argument("--id", help="which testbed, when several run")
    p.set_defaults(fn=cmd_inject)

    for name, fn, text in (("show", cmd_show, "describe running testbeds"),
                           ("down", cmd_down, "tear a running testbed down")):
        p = parser(name, text)
        p.add_argument("--id", help="which testbed, when several run")
        p.set_defaults(fn=fn)

    p = parser("clean", "remove leftovers of testbeds whose process is gone")
    p.add_argument("--force", action="store_true", help="also tear down running ones")
    p.set_defaults(fn=cmd_clean)

    p = parser("check", "validate a topology (and schedule) without root")
    files(p)
    p.set_defaults(fn=cmd_check)

    p = parser("report", "draw a run's timeline as a PNG (no root)")
    p.add_argument("run_dir", help="the run's directory (holds timeline.jsonl)")
    p.add_argument("--out", help="PNG path (default RUN_DIR/timeline.png)")
    p.set_defaults(fn=cmd_report)

    p = parser("probe", "what this kernel can emulate")
    p.set_defaults(fn=cmd_probe)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.command = command
    logging.basicConfig(level=logging.WARNING, format="chaos-testbed: %(name)s: %(message)s")
    try:
        return args.fn(args)
    except TestbedError as e:
        _say(str(e))
        return e.exit_code
    except _Interrupted as e:
        _say(f"interrupted ({e}); torn down")
        # Python puts its default disposition back while it shuts down: one more Ctrl-C (or
        # the rest of a process-group burst) would then kill us by signal instead of exit 130
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
