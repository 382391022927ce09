"""What a soak run survived: committed steps lost, and recovery times per fault kind. Pure.

Inputs are the run's records (chaos_hvd.events): the testbed's Fault records and the training
script's Commit / Step / Resumed records, all stamped with CLOCK_MONOTONIC (one clock on one
machine, whichever process wrote them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from chaos_hvd import events as ev

# fault action -> the soak kind it starts, and the action that undoes it
STARTS = {"crash": "crash", "pause": "pause", "partition": "partition", "link_down": "silent",
          "degrade": "degrade"}
UNDOES = {"crash": "join", "pause": "resume", "partition": "heal", "silent": "link_up",
          "degrade": "restore"}


def committed_steps_lost(events: list[ev.Event]) -> list[tuple[float, int]]:
    """(time, steps) for every resume that restarted before the last *completed* commit: a
    Commit record followed by a Step of the same process (the record is written just before
    ``state.commit()``, so a crash inside the commit leaves one that never completed)."""
    by_pid: dict[int, list[ev.Event]] = {}
    for e in sorted(events, key=lambda e: e.t_mono):
        if isinstance(e, (ev.Commit, ev.Step)):
            by_pid.setdefault(e.pid, []).append(e)
    done: list[tuple[float, int]] = []   # (time of the commit, its step)
    for seq in by_pid.values():
        for a, b in zip(seq, seq[1:]):
            if isinstance(a, ev.Commit) and isinstance(b, ev.Step):
                done.append((a.t_mono, a.step))
    done.sort()
    lost = []
    for r in sorted((e for e in events if isinstance(e, ev.Resumed)), key=lambda e: e.t_mono):
        before = [s for t, s in done if t < r.t_mono]
        if before and r.step < max(before):
            lost.append((r.t_mono, max(before) - r.step))
    return lost


def longest_gap(events: list[ev.Event]) -> tuple[float, float]:
    """(start, seconds) of the longest time without a training step on any rank: a stalled job
    shows here even when it ends well."""
    ts = sorted(e.t_mono for e in events if isinstance(e, ev.Step))
    return max(((a, b - a) for a, b in zip(ts, ts[1:])), key=lambda g: g[1], default=(0.0, 0.0))


@dataclass
class KindStats:
    kind: str
    count: int = 0
    resumed_s: list[float] = field(default_factory=list)     # fault -> training again
    restored_s: list[float] = field(default_factory=list)    # undone -> back at full size
    unaffected: int = 0          # training went on without a reset (the host was not in it)
    never: int = 0               # training stopped and did not resume before the next fault

    def summary(self) -> dict:
        def med(xs):
            return round(statistics.median(xs), 2) if xs else None
        return {"kind": self.kind, "count": self.count,
                "resumed_median_s": med(self.resumed_s),
                "resumed_max_s": round(max(self.resumed_s), 2) if self.resumed_s else None,
                "restored_median_s": med(self.restored_s),
                "restored_max_s": round(max(self.restored_s), 2) if self.restored_s else None,
                "unaffected": self.unaffected, "not_recovered": self.never}


def recovery_by_kind(timeline: list[ev.Event], events: list[ev.Event]) -> dict[str, KindStats]:
    """Per soak kind: how long training took to resume at a smaller size after the fault (a
    reset without the host), and to be back at the size it had before once the fault was undone.
    A fault after which training went on without shrinking (a flap shorter than detection, a
    slow link, a host that was not in the job) counts as unaffected; one after which no step was
    taken before the next fault, as not recovered."""
    faults = sorted((f for f in timeline if isinstance(f, ev.Fault)), key=lambda f: f.t_mono)
    resumed = sorted((e for e in events if isinstance(e, ev.Resumed)), key=lambda e: e.t_mono)
    steps = sorted(e.t_mono for e in events if isinstance(e, ev.Step))
    stats: dict[str, KindStats] = {}
    starts = [(i, f) for i, f in enumerate(faults) if STARTS.get(f.action)]
    for n, (i, f) in enumerate(starts):
        flap = f.action == "link_down" and _is_flap(faults, i)
        if flap and n > 0 and starts[n - 1][1].target == f.target \
                and f.t_mono - starts[n - 1][1].t_mono < 3.0:
            continue                      # the second cycle of the same flap
        kind = "flap" if flap else STARTS[f.action]
        st = stats.setdefault(kind, KindStats(kind))
        st.count += 1
        nxt = next((g.t_mono for _, g in starts[n + 1:]
                    if g.target != f.target or g.t_mono - f.t_mono >= 3.0), float("inf"))
        # the world's size when the fault hit: its latest resume before it
        size_before = next((r.size for r in reversed(resumed) if r.t_mono < f.t_mono), None)
        if size_before is None:
            continue
        shrunk = [r for r in resumed if f.t_mono < r.t_mono < nxt and r.size < size_before]
        if not shrunk:
            if any(f.t_mono + 5.0 < t < nxt for t in steps):
                st.unaffected += 1
            else:
                st.never += 1
            continue
        st.resumed_s.append(shrunk[0].t_mono - f.t_mono)
        undo = next((g for g in faults[i + 1:] if g.action == UNDOES.get(kind, "link_up")
                     and g.target == _undo_target(f)), None)
        if undo is not None:
            # not bounded by the next fault: a rejoin (standby start-up) may outlast the gap
            back = [r for r in resumed if r.t_mono > undo.t_mono and r.size >= size_before]
            if back:
                st.restored_s.append(back[0].t_mono - undo.t_mono)
    return stats


def _undo_target(f: ev.Fault) -> str:
    return "-" if f.action == "partition" else f.target


def _is_flap(faults: list[ev.Fault], i: int) -> bool:
    """A link_down that a link_up of the same link follows within a flap's period (< 3 s)."""
    f = faults[i]
    up = next((g for g in faults[i + 1:] if g.action == "link_up" and g.target == f.target), None)
    return up is not None and up.t_mono - f.t_mono < 3.0
