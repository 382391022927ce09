"""Invariant checks of a fault-injection run, over its two records. Pure (no I/O).

``timeline``: the testbed's JSON lines (faults applied, command exit); ``events``: the plugin's
and the training script's JSON lines (sync, resumed, step, final). Each check returns a list of
failures, so a suite reports every broken invariant at once.
"""

from __future__ import annotations


def check_faults(timeline: list[dict], expected: list[str]) -> list[str]:
    """The expected faults were applied, in this order, and none failed."""
    applied = [f"{r['action']} {r['target']}" for r in timeline if r["event"] == "fault"]
    errors = [f"fault failed: {r['action']} {r['target']}: {r['error']}"
              for r in timeline if r["event"] == "fault_error"]
    it = iter(applied)
    missing = [e for e in expected if not any(a == e for a in it)]
    if missing:
        errors.append(f"faults not applied in order: {missing} (applied: {applied})")
    return errors


def resumed_sizes(events: list[dict]) -> list[int]:
    """World sizes training (re)started at, one entry per reset, in time order."""
    sizes: list[int] = []
    last_t = None
    for e in sorted((e for e in events if e["event"] == "resumed"), key=lambda e: e["t_mono"]):
        if not sizes or e["size"] != sizes[-1] or (last_t is not None and e["t_mono"] - last_t > 2):
            sizes.append(e["size"])
        last_t = e["t_mono"]
    return sizes


def check_world_sizes(events: list[dict], expected: list[int]) -> list[str]:
    got = resumed_sizes(events)
    return [] if got == expected else [f"training resumed at world sizes {got}, expected {expected}"]


def joiner_syncs(events: list[dict]) -> list[dict]:
    """Sync records of ranks that had to fetch the whole state (new hosts)."""
    return [e for e in events if e["event"] == "sync" and e.get("role") == "needer"
            and e.get("needed_bytes") == e.get("state_bytes") and e.get("version", 0) > 0]


def check_joiner(events: list[dict], min_sources: int, bandwidth_known: bool | None) -> list[str]:
    syncs = joiner_syncs(events)
    if not syncs:
        return ["no joiner fetched the full state after training started"]
    errors = []
    for s in syncs:
        used = sorted(k for k, v in s.get("bytes_per_source", {}).items() if v > 0)
        if len(used) < min_sources:
            errors.append(f"rank {s['rank']} pulled from {used}, expected >= {min_sources} sources")
        if bandwidth_known is not None and s.get("bandwidth_known") != bandwidth_known:
            errors.append(f"rank {s['rank']}: bandwidth_known={s.get('bandwidth_known')}")
    return errors


def check_identical_final(events: list[dict]) -> list[str]:
    finals = [e for e in events if e["event"] == "final"]
    if not finals:
        return ["no rank reached the end of training"]
    digests = {e["digest"] for e in finals}
    sizes = {e["size"] for e in finals}
    errors = []
    if len(digests) != 1:
        errors.append(f"ranks ended with different parameters: {digests}")
    if len(sizes) != 1 or len(finals) != next(iter(sizes)):
        errors.append(f"{len(finals)} ranks finished, world sizes {sizes}")
    return errors


def check_run(timeline: list[dict], events: list[dict], expect: dict) -> list[str]:
    errors = []
    exits = [r for r in timeline if r["event"] == "command_exit"]
    if not exits or exits[-1]["rc"] != 0:
        errors.append(f"the job did not exit cleanly: {exits[-1] if exits else 'no exit record'}")
    if "faults" in expect:
        errors += check_faults(timeline, expect["faults"])
    if "world_sizes" in expect:
        errors += check_world_sizes(events, expect["world_sizes"])
    if "joiner_min_sources" in expect:
        errors += check_joiner(events, expect["joiner_min_sources"],
                               expect.get("joiner_bandwidth_known"))
    if expect.get("identical_final"):
        errors += check_identical_final(events)
    return errors
