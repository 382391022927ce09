"""Invariant checks of a fault-injection run, over its event records. Pure (no I/O).

``timeline``: the testbed's records (faults applied, command exit); ``events``: the plugin's and
the training script's (sync, resumed, step, final); ``agent_events``: the cluster agents'. All are
:mod:`chaos_hvd.events` records. Each check returns a list of failures, so a suite reports every
broken invariant at once.
"""

from __future__ import annotations

from chaos_hvd import events as ev
from testbed.run_timeline import view_changes


def check_faults(timeline: list[ev.Event], expected: list[str]) -> list[str]:
    """The expected faults were applied, in this order, and none failed."""
    applied = [f"{r.action} {r.target}" for r in timeline if isinstance(r, ev.Fault)]
    errors = [f"fault failed: {r.action} {r.target}: {r.error}"
              for r in timeline if isinstance(r, ev.FaultError)]
    it = iter(applied)
    missing = [e for e in expected if not any(a == e for a in it)]
    if missing:
        errors.append(f"faults not applied in order: {missing} (applied: {applied})")
    return errors


def resumed_sizes(events: list[ev.Event]) -> list[int]:
    """World sizes training (re)started at, one entry per reset, in time order."""
    sizes: list[int] = []
    last_t = None
    for e in sorted((e for e in events if isinstance(e, ev.Resumed)), key=lambda e: e.t_mono):
        if not sizes or e.size != sizes[-1] or (last_t is not None and e.t_mono - last_t > 2):
            sizes.append(e.size)
        last_t = e.t_mono
    return sizes


def check_world_sizes(events: list[ev.Event], expected: list[int]) -> list[str]:
    got = resumed_sizes(events)
    return [] if got == expected else [f"training resumed at world sizes {got}, expected {expected}"]


def joiner_syncs(events: list[ev.Event]) -> list[ev.Sync]:
    """Sync records of new workers (their process's first sync, once training has started).

    Not "ranks that fetched the whole state": after a crash, survivors one commit behind the
    newest rank fetch everything from that one rank, and are no joiners."""
    return [e for e in events if type(e) is ev.Sync and e.first_sync and e.role == "needer"
            and e.version > 0]


def check_joiner(events: list[ev.Event], min_sources: int, bandwidth_known: bool | None,
                 bandwidth_source: str | None = None) -> list[str]:
    syncs = joiner_syncs(events)
    if not syncs:
        return ["no joiner fetched the full state after training started"]
    errors = []
    for s in syncs:
        used = sorted(k for k, v in s.bytes_per_source.items() if v > 0)
        if len(used) < min_sources:
            errors.append(f"rank {s.rank} pulled from ranks {used}, expected >= {min_sources} "
                          "sources")
        if bandwidth_known is not None and s.bandwidth_known != bandwidth_known:
            errors.append(f"rank {s.rank}: bandwidth_known={s.bandwidth_known}")
        if bandwidth_source is not None and s.bandwidth_source != bandwidth_source:
            errors.append(f"rank {s.rank}: plan used {s.bandwidth_source} rates "
                          f"({s.agent_error or ''}), expected {bandwidth_source}")
        if bandwidth_source == "agent" and not s.measured_to_me:
            errors.append(f"rank {s.rank}: no measured rate into the joiner in its plan")
    return errors


def check_slots(views: list[ev.Install], slots: dict[str, int]) -> list[str]:
    """Each host's advertised slots (by id) are in the view that admits it (founders' may
    follow the founding view) and in the last view."""
    errors = []
    for v in views:
        admitted = v.added if v.epoch > 1 else []
        for m in admitted + (v.members if v is views[-1] else []):
            got = v.slots.get(m)
            if m in slots and got != slots[m]:
                errors.append(f"epoch {v.epoch}: {m} has slots {got}, advertised {slots[m]}")
    return errors


def check_agents(agent_events: list[ev.Event], expected: list[dict], ip: dict[str, str],
                 slots: dict[str, int] | None = None) -> list[str]:
    """The agents installed views with these changes, in this order. Items: {added: NODE},
    {removed: NODE, detected: true} (a heartbeat suspicion preceded it), {link_down: NODE},
    {link_up: NODE} (some link of NODE left / entered the view). With `slots` (id -> count),
    also check_slots."""
    if not agent_events:
        return ["no agent events (agents.jsonl missing or empty)"]
    views = view_changes(agent_events)
    errors, i = check_slots(views, slots) if slots else [], 0
    for want in expected:
        kind, node = next((k, v) for k, v in want.items() if k != "detected")
        addr = ip[node]

        def hit(v: ev.Install) -> bool:
            if kind in ("added", "removed"):
                return addr in getattr(v, kind)
            return any(addr in ln for ln in getattr(v, "links_" + kind.split("_")[1]))
        while i < len(views) and not hit(views[i]):
            i += 1
        if i == len(views):
            errors.append(f"no view change {want} after the previous expected one; views: "
                          + "; ".join(f"e{v.epoch} +{v.added} -{v.removed} "
                                      f"up{v.links_up} down{v.links_down}" for v in views))
            break
        if want.get("detected"):
            t = views[i].t_unix
            if not any(isinstance(e, ev.Suspect) and e.node == addr and e.t_unix <= t
                       for e in agent_events):
                errors.append(f"{node} was removed without a heartbeat suspicion")
        i += 1
    return errors


def check_identical_final(events: list[ev.Event]) -> list[str]:
    finals = [e for e in events if isinstance(e, ev.Final)]
    if not finals:
        return ["no rank reached the end of training"]
    digests = {e.digest for e in finals}
    sizes = {e.size for e in finals}
    errors = []
    if len(digests) != 1:
        errors.append(f"ranks ended with different parameters: {digests}")
    if len(sizes) != 1 or len(finals) != next(iter(sizes)):
        errors.append(f"{len(finals)} ranks finished, world sizes {sizes}")
    return errors


def recovery_times(timeline: list[ev.Event], events: list[ev.Event],
                   kinds: tuple[str, ...] = ("crash",)) -> list[tuple[str, float | None]]:
    """For each fault of these kinds: seconds until training resumed after it (None: never)."""
    resumed = sorted(e.t_mono for e in events if isinstance(e, ev.Resumed))
    out = []
    for f in timeline:
        if isinstance(f, ev.Fault) and f.action in kinds:
            after = [t for t in resumed if t > f.t_mono]
            out.append((f"{f.action} {f.target}", after[0] - f.t_mono if after else None))
    return out


def check_recovery(timeline: list[ev.Event], events: list[ev.Event], limit_s: float,
                   kinds: tuple[str, ...] = ("crash",)) -> list[str]:
    """Training resumed within `limit_s` of every fault of these kinds (fast detection, not
    Gloo's timeout)."""
    times = recovery_times(timeline, events, kinds)
    if not times:
        return [f"no fault of kinds {list(kinds)} to recover from"]
    return [f"{what}: training resumed after {t:.1f} s (limit {limit_s} s)" if t is not None
            else f"{what}: training never resumed" for what, t in times
            if t is None or t > limit_s]


def abort_delays(agent_events: list[ev.Event], events: list[ev.Event],
                 ip: dict[str, str]) -> list[tuple[str, float | None]]:
    """For each node the agents removed: seconds from that view's first install to the first
    crash-watch abort (PeerDead) at or after the view (0 when one came first, None: never)."""
    names = {v: k for k, v in ip.items()}
    first: dict[str, float] = {}
    for e in sorted((e for e in agent_events if isinstance(e, ev.Install)),
                    key=lambda e: e.t_mono):
        for addr in e.removed:
            if e.in_view and addr != e.agent:
                first.setdefault(addr, e.t_mono)
    dead = sorted(e.t_mono for e in events if isinstance(e, ev.PeerDead))
    out = []
    for addr, t in sorted(first.items(), key=lambda kv: kv[1]):
        near = [d for d in dead if d >= t - 30.0]   # an EOF may precede the agents' view
        out.append((names.get(addr, addr), max(0.0, near[0] - t) if near else None))
    return out


def check_abort(agent_events: list[ev.Event], events: list[ev.Event], ip: dict[str, str],
                limit_s: float) -> list[str]:
    """Every node the agents removed made the survivors abort their collective within
    `limit_s` of the view that removed it."""
    delays = abort_delays(agent_events, events, ip)
    if not delays:
        return ["the agents removed no node"]
    return [f"{node} removed, but no worker aborted its collective" if d is None else
            f"{node} removed, survivors aborted {d:.1f} s later (limit {limit_s} s)"
            for node, d in delays if d is None or d > limit_s]


def check_no_false_alarm(agent_events: list[ev.Event], events: list[ev.Event]) -> list[str]:
    """Nothing failed: no worker aborted its collective and the agents removed no one."""
    errors = [f"rank {e.rank} aborted its collective: peer {e.peer} declared dead"
              for e in events if isinstance(e, ev.PeerDead)]
    errors += [f"the agents removed {v.removed} at epoch {v.epoch}"
               for v in view_changes(agent_events) if v.removed]
    return errors


def check_standbys(events: list[ev.Event], joined: int, min_sources: int = 1) -> list[str]:
    """chaos-hvdrun switched in `joined` standbys, each after it reported ready; none dropped;
    each standby's background pull was planned over at least `min_sources` workers. (The plan,
    not the bytes: with a small state the fastest source may steal everything before the others
    connect. And the switch's own sync may need a few chunks only -- e.g. after an epoch-end
    commit at the same step -- so the pull that must be multi-source is the background one.)"""
    errors = [f"standby {e.host}:{e.slot} dropped: {e.why}"
              for e in events if isinstance(e, ev.StandbyDropped)]
    pulls = [e for e in events if isinstance(e, ev.StandbyPull) and not e.error]
    for p in pulls:
        planned = sorted(r for r, n in p.planned_bytes_per_source.items() if n > 0)
        if p.needed_bytes and len(planned) < min_sources:
            errors.append(f"standby {p.host}:{p.slot} planned its pull over ranks {planned}, "
                          f"expected >= {min_sources}")
    got = [e for e in events if isinstance(e, ev.StandbyJoined)]
    if len(got) != joined:
        errors.append(f"{len(got)} standbys joined, expected {joined}")
    ready = {(e.host, e.slot) for e in events if isinstance(e, ev.StandbyReady)}
    errors += [f"standby {e.host}:{e.slot} joined without reporting ready"
               for e in got if (e.host, e.slot) not in ready]
    return errors


def check_source_lost_mid_pull(timeline: list[ev.Event], events: list[ev.Event]) -> list[str]:
    """A crash landed while a standby's background pull ran (between an attempt's
    ``standby_pulling`` and its ``standby_pull``), and that pull saw a source fail."""
    crashes = [f.t_mono for f in timeline if isinstance(f, ev.Fault) and f.action == "crash"]
    started = {(e.host, e.slot, e.attempt): e.t_mono for e in events
               if isinstance(e, ev.StandbyPulling)}
    hit = [p for p in events if isinstance(p, ev.StandbyPull)
           and (p.host, p.slot, p.attempt) in started
           and any(started[p.host, p.slot, p.attempt] <= c <= p.t_mono for c in crashes)]
    if not hit:
        return ["no crash landed while a standby's pull ran"]
    if not any(p.failed_sources or p.error for p in hit):
        return [f"a crash landed during standby pull(s) {[(p.host, p.attempt) for p in hit]} "
                "but none of them saw a source fail"]
    return check_pull_not_restarted(events)


def check_pull_not_restarted(events: list[ev.Event]) -> list[str]:
    """A standby whose pull a source's failure cut short moves only what it lacks afterwards:
    over all its attempts at one version, no chunk moves twice (no more than the state)."""
    moved: dict[tuple, int] = {}
    size: dict[tuple, int] = {}
    for p in events:
        if isinstance(p, ev.StandbyPull) and p.version:
            key = (p.host, p.slot, p.version)
            moved[key] = moved.get(key, 0) + sum(p.bytes_per_source.values())
            size[key] = p.state_bytes
    return [f"standby {h}:{s} moved {moved[h, s, v]} bytes of a {size[h, s, v]}-byte state "
            f"(version {v}): its pull started over" for h, s, v in moved
            if moved[h, s, v] > size[h, s, v]]


def running_worker_stalls(events: list[ev.Event]) -> dict[int, float]:
    """For each worker that trained in the first world: its longest gap between steps minus its
    median step time (seconds), up to its first step after the first standby joined."""
    steps = sorted((e for e in events if isinstance(e, ev.Step)), key=lambda e: e.t_mono)
    if not steps:
        return {}
    first_size = steps[0].size
    joined = [e.t_mono for e in events if isinstance(e, ev.StandbyJoined)]
    until = min(joined) if joined else float("inf")
    stalls = {}
    for pid in {e.pid for e in steps if e.size == first_size}:
        ts = [e.t_mono for e in steps if e.pid == pid]
        upto = next((i for i, t in enumerate(ts) if t > until), len(ts) - 1)
        gaps = sorted(b - a for a, b in zip(ts, ts[1:upto + 1]))
        if len(gaps) >= 3:
            stalls[pid] = gaps[-1] - gaps[len(gaps) // 2]
    return stalls


def check_stall(events: list[ev.Event], limit_s: float) -> list[str]:
    stalls = running_worker_stalls(events)
    if not stalls:
        return ["no worker trained long enough to measure its stall"]
    return [f"worker pid {pid} stood idle {s:.1f} s around the join (limit {limit_s} s)"
            for pid, s in sorted(stalls.items()) if s > limit_s]


def check_run(timeline: list[ev.Event], events: list[ev.Event], expect: dict,
              agent_events: list[ev.Event] = (), ip: dict[str, str] | None = None,
              slots: dict[str, int] | None = None) -> list[str]:
    errors = []
    exits = [r for r in timeline if isinstance(r, ev.CommandExit)]
    if not exits or exits[-1].rc != 0:
        errors.append(f"the job did not exit cleanly: {exits[-1] if exits else 'no exit record'}")
    if "faults" in expect:
        errors += check_faults(timeline, expect["faults"])
    if "world_sizes" in expect:
        errors += check_world_sizes(events, expect["world_sizes"])
    if "joiner_min_sources" in expect:
        errors += check_joiner(events, expect["joiner_min_sources"],
                               expect.get("joiner_bandwidth_known"),
                               expect.get("joiner_bandwidth_source"))
    if "agent_views" in expect:
        errors += check_agents(list(agent_events), expect["agent_views"], ip or {}, slots)
    if "standbys_joined" in expect:
        errors += check_standbys(events, expect["standbys_joined"],
                                 expect.get("standby_min_sources", 1))
    if expect.get("source_lost_mid_pull"):
        errors += check_source_lost_mid_pull(timeline, events)
    if "max_recovery_s" in expect:
        errors += check_recovery(timeline, events, expect["max_recovery_s"],
                                 tuple(expect.get("recovery_from", ["crash"])))
    if "max_abort_after_view_s" in expect:
        errors += check_abort(list(agent_events), events, ip or {},
                              expect["max_abort_after_view_s"])
    if expect.get("no_false_alarm"):
        errors += check_no_false_alarm(list(agent_events), events)
    if "max_stall_s" in expect:
        errors += check_stall(events, expect["max_stall_s"])
    if expect.get("identical_final"):
        errors += check_identical_final(events)
    return errors
