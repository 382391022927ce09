"""Apply a fault schedule to a running testbed, on time, on training step or on a record.

A background thread polls every POLL_S: time triggers fire at ``t0 + at + offset``; step
triggers fire ``offset`` after the first :class:`chaos_hvd.events.Step` with ``step >= at_step``
(and, with ``at_size``, logged at that world size) in the run's event log (the plugin's
``CHAOS_EVENT_LOG``; a step record needs only ``step`` -- and ``size`` for ``at_size`` -- as
``chaos_hvd.record_step`` writes it); record triggers fire ``offset`` after the first record of
kind ``at_record`` there (``standby_pulling``, say). A line of the log that is not a record is
reported once per kind of defect, with the line: a trigger waiting for records the script writes
wrongly must not wait in silence. In a script that logs no step records, ChaosState's
``state_commit`` records count as its steps, so a script that uses it needs to write nothing.
Every action, applied or failed, is one JSON line in the testbed's timeline with its monotonic
time, how late it fired and how long applying it took.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from chaos_hvd import events

from .faults import Action, Schedule

log = logging.getLogger(__name__)

POLL_S = 0.01
PRIORITY_NICE = -10


def raise_priority(pid: int | None = None) -> None:
    """Run ahead of the emulated hosts' processes: a real link changes state however busy the
    hosts' CPUs are, so the emulator's actions must not wait for the workers' time slices."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid or threading.get_native_id(), PRIORITY_NICE)
    except OSError:
        pass  # not root: run at normal priority


class StepWatcher:
    """Highest training step seen so far in an event log, overall and per world size, and when
    each kind of record was first seen (read incrementally)."""

    def __init__(self, path: str | None, on_bad=None):
        self.path, self.offset, self.step = path, 0, -1
        self.step_at_size: dict[int, int] = {}
        self.first_seen: dict[str, float] = {}   # record kind -> monotonic time of the poll
        self._partial = b""
        self.unreadable = 0                      # lines that were not records
        self._script_steps = False               # the script logs step records itself
        self._reasons: set[str] = set()
        self._on_bad = on_bad or (lambda line, why: log.warning(
            "the event log has a line that is not a record, skipped (%s): %s", why,
            line[:200].decode(errors="replace")))

    def _bad(self, line: bytes, why: str) -> None:
        self.unreadable += 1
        kind = why.split(" - ")[0][:120]         # one report per kind of defect
        if kind not in self._reasons and len(self._reasons) < 20:
            self._reasons.add(kind)
            self._on_bad(line, why)

    def poll(self) -> int:
        if not self.path or not os.path.exists(self.path):
            return self.step
        records, self.offset, self._partial = events.tail_events(self.path, self.offset,
                                                                 self._partial, self._bad)
        now = time.monotonic()
        for rec in records:
            self.first_seen.setdefault(rec.__struct_config__.tag, now)
            if isinstance(rec, events.Step):
                self._script_steps = True
            elif not isinstance(rec, events.StateCommit) or self._script_steps:
                continue
            # a step, or ChaosState's commit in a script that logs no steps of its own (where it
            # does, the commit at an epoch's end would count as a step at the new world size
            # before that world trained one)
            self.step = max(self.step, rec.step)
            if rec.size:
                self.step_at_size[rec.size] = max(self.step_at_size.get(rec.size, -1), rec.step)
        return self.step

    def reached(self, at_step: int, at_size: int | None) -> bool:
        seen = self.step if at_size is None else self.step_at_size.get(at_size, -1)
        return seen >= at_step


class Executor:
    def __init__(self, testbed, schedule: Schedule, event_log: str | None = None,
                 progress=None):
        self.tb = testbed
        self.pending = schedule.expand()
        self.steps = StepWatcher(event_log)
        self.progress = progress
        self.applied: list[events.TimelineEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._step_seen_at: dict[tuple[int, int | None], float] = {}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="chaos-testbed-faults",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def done(self) -> bool:
        return not self.pending

    def _due(self, a: Action, now: float) -> float | None:
        """Monotonic time the action was due, or None if not yet."""
        if a.at_s is not None:
            due = self.t0 + a.at_s + a.offset_s
        elif a.at_record is not None:
            seen = self.steps.first_seen.get(a.at_record)
            if seen is None:
                return None
            due = seen + a.offset_s
        else:
            if not self.steps.reached(a.at_step, a.at_size):
                return None
            seen = self._step_seen_at.setdefault((a.at_step, a.at_size), now)
            due = seen + a.offset_s
        return due if due <= now else None

    def _loop(self) -> None:
        raise_priority()
        while not self._stop.is_set() and self.pending:
            now = time.monotonic()
            step = self.steps.poll()
            for a in list(self.pending):
                due = self._due(a, now)
                if due is None:
                    continue
                self.pending.remove(a)
                late_ms = round((time.monotonic() - due) * 1e3, 2)
                try:
                    entry = self.tb.apply(a)
                    entry.late_ms, entry.step_seen = late_ms, step
                    entry = self.tb.log(entry)
                except Exception as e:  # noqa: BLE001 - a failed action is logged, run goes on
                    log.warning("fault %s %s failed: %s", a.action, a.target, e)
                    entry = self.tb.log(events.FaultError(action=a.action, target=a.target,
                                                          error=f"{type(e).__name__}: {e}"))
                self.applied.append(entry)
                if self.progress:
                    self.progress(entry)
            self._stop.wait(POLL_S)
