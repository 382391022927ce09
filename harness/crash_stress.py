"""Kill one rank of a real elastic job at many points and time each crash -> training resumed.

One ``chaos-hvdrun`` job on this machine's loopback names (``localhost``, ``127.0.0.1`` and any
other name that resolves to 127.0.0.1: Horovod treats each name as a host), one slot each, with
``--blacklist-cooldown-range 1 2`` so a killed worker's host comes back a few seconds later as a
standby that pulls the state in the background and is switched in. Each round waits for the full
world, then kills one running rank (SIGKILL) at a seeded point of the job's life:

``mid-step``        at a random moment within a step (forward, backward with its all-reduces,
                    the optimizer step, the script's sleep)
``between-steps``   as soon as a step record appears
``commit``          as soon as a commit record appears (``state.commit()`` runs)
``after-scale-in``  0-1 s after the world re-formed without a host removed from discovery
``after-switch``    0-0.5 s after the launcher switched a ready standby in
``switched-standby`` the standby itself, 0-0.5 s after it was told to switch (it is joining the
                    new world: a member that dies while the world forms)
``during-pull``     0-0.3 s after a standby began its background pull (a source dies)
``reset``           0-0.5 s after the survivors of a first kill noticed it: the second kill lands
                    in their restore / reset / re-forming world; the first is recorded as
                    ``before-reset`` (its recovery includes the second's, so ``compound``)

A kill *recovered* when some other worker wrote a ``resumed`` record and then a ``step`` after
the kill. The job's Gloo timeout is GLOO_TIMEOUT_S; a recovery that took at least half of it is
counted as a wait for Gloo's timeout (the crash watch should end every wait in ~1 s).
The choices (points, victims, delays) come from one seeded generator; timings are not
reproducible, the sequence of faults is.
"""

from __future__ import annotations

import bisect
import os
import random
import signal
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaos_hvd import events as ev
from chaos_hvd.errors import WaitTimeout
from chaos_hvd.events import tail_events

from .elastic_job import ElasticJob

POINTS = ("mid-step", "between-steps", "commit", "after-scale-in", "after-switch",
          "switched-standby", "during-pull", "reset")
GLOO_TIMEOUT_S = 30
RECOVERY_LIMIT_S = 60.0     # a kill not recovered by then counts as never recovered
FULL_WORLD_LIMIT_S = 120.0  # the killed host's return: cooldown, standby start, pull, switch
ARGS = ["--model", "medium", "--epochs", "100000", "--samples", "1024", "--batch-size", "16",
        "--step-sleep", "0.05", "--commit-every", "2"]


@dataclass
class Kill:
    n: int
    point: str
    victim_rank: int
    victim_host: str
    victim_pid: int
    size: int                   # world size when killed
    delay_s: float              # the seeded delay after the point's trigger
    t_kill: float = 0.0         # monotonic
    recovery_s: float | None = None
    resumed_size: int | None = None
    # how the survivors stopped waiting: peer_dead records' abort paths, "world-guard" for a
    # world_aborted record (a member of a forming world died)
    abort_paths: list[str] = field(default_factory=list)
    compound: bool = False      # another kill came before training resumed

    @property
    def gloo_timeout_wait(self) -> bool:
        return self.recovery_s is None or self.recovery_s >= GLOO_TIMEOUT_S / 2

    def to_json(self) -> dict:
        return dict(asdict(self), gloo_timeout_wait=self.gloo_timeout_wait)


# ---------------------------------------------------------------------------------- pure


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))
    return ordered[int(k)]


def summarize(kills: list[Kill]) -> dict:
    """Distribution of crash -> resumed over the kills that are not compound, per point too."""
    def dist(ks: list[Kill]) -> dict:
        times = [k.recovery_s for k in ks if k.recovery_s is not None]
        out = {"kills": len(ks), "recovered": len(times),
               "gloo_timeout_waits": sum(k.gloo_timeout_wait for k in ks)}
        if times:
            out.update(median_s=round(statistics.median(times), 3),
                       p99_s=round(percentile(times, 99), 3), max_s=round(max(times), 3))
        return out
    simple = dist([k for k in kills if not k.compound])
    return {"kills": len(kills), "recovered": sum(k.recovery_s is not None for k in kills),
            "gloo_timeout_waits": sum(k.gloo_timeout_wait for k in kills),
            "simple_kills": simple["kills"],
            **{k: v for k, v in simple.items() if k.endswith("_s")},
            "compound": dist([k for k in kills if k.compound]),
            "per_point": {p: dist([k for k in kills if k.point == p])
                          for p in (*POINTS, "before-reset") if any(k.point == p for k in kills)},
            "abort_paths": sorted({p for k in kills for p in k.abort_paths})}


def loopback_hosts(limit: int = 4) -> list[str]:
    """Names of this machine that resolve to 127.0.0.1, ``localhost`` and ``127.0.0.1`` first."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    try:
        for line in Path("/etc/hosts").read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if parts and parts[0] == "127.0.0.1":
                names += parts[1:]
    except OSError:
        pass
    out = []
    for name in names:
        try:
            local = socket.gethostbyname(name) == "127.0.0.1"
        except OSError:
            local = False
        if local and name not in out and name.replace(".", "").replace("-", "").isalnum():
            out.append(name)
    return out[:limit]


# ---------------------------------------------------------------------------------- the job


class StressJob:
    """The job and a reader of its event log."""

    def __init__(self, workdir: Path, hosts: list[str]):
        self.hosts = hosts
        workdir.mkdir(parents=True, exist_ok=True)
        self.job = ElasticJob(ARGS, [f"{h}:1" for h in hosts], np=len(hosts), min_np=1,
                              max_np=len(hosts), gloo_timeout_s=GLOO_TIMEOUT_S,
                              workdir=str(workdir), launcher="chaos-hvdrun",
                              launcher_args=["--blacklist-cooldown-range", "1", "2"],
                              env={"CHAOS_CHUNK_BYTES": "65536"})
        self.records: list[ev.Event] = []
        self._times: list[float] = []   # append order; nearly sorted (one clock, appends)
        self._offset, self._partial = 0, b""

    def __enter__(self) -> "StressJob":
        self.job.start()
        return self

    def __exit__(self, *exc) -> None:
        self.job.stop()

    def poll(self) -> list[ev.Event]:
        if not self.job.events_path.exists():
            return []
        new, self._offset, self._partial = tail_events(str(self.job.events_path), self._offset,
                                                       self._partial)
        self.records += new
        self._times += [r.t_mono for r in new]
        return new

    def after(self, t: float, start: int = 0) -> list[ev.Event]:
        """Records written after monotonic time `t` (from index `start` on), in log order."""
        i = max(start, bisect.bisect_left(self._times, t - 1.0))   # 1 s: appends race
        return [r for r in self.records[i:] if r.t_mono > t]

    def alive(self) -> bool:
        return self.job.proc is not None and self.job.proc.poll() is None

    def wait_record(self, match, timeout_s: float, what: str, since: float):
        """The first record after `since` (monotonic) that `match` accepts."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            self.poll()
            for r in self.after(since, seen):
                if match(r):
                    return r
            seen = len(self.records)
            if not self.alive():
                raise WaitTimeout(f"job exited ({self.job.proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise WaitTimeout(f"no {what} within {timeout_s:.0f} s")
            time.sleep(0.005)

    def running(self, since: float) -> dict[int, ev.Step]:
        """rank -> its newest step record of the newest world size seen since `since`."""
        self.poll()
        steps = [r for r in self.after(since) if isinstance(r, ev.Step)]
        if not steps:
            return {}
        size = steps[-1].size
        out: dict[int, ev.Step] = {}
        for s in steps:
            if s.size == size:
                out[s.rank] = s
        return out

    def wait_full_world(self, since: float) -> dict[int, ev.Step]:
        """Every host training in one world: each rank stepped twice since its resumed record."""
        n = len(self.hosts)
        deadline = time.monotonic() + FULL_WORLD_LIMIT_S
        while time.monotonic() < deadline:
            self.poll()
            resumed = [r for r in self.after(since) if isinstance(r, ev.Resumed) and r.size == n]
            if len({r.pid for r in resumed}) >= n:
                t = max(r.t_mono for r in resumed[-n:])
                steps = [r for r in self.after(t) if isinstance(r, ev.Step) and r.size == n]
                if len(steps) >= 2 * n and len({s.rank for s in steps}) == n:
                    return self.running(t)
            if not self.alive():
                raise WaitTimeout(f"job exited ({self.job.proc.returncode}) before the full world")
            time.sleep(0.05)
        raise WaitTimeout(f"the world did not grow back to {n} within {FULL_WORLD_LIMIT_S:.0f} s")

    def step_time_s(self) -> float:
        ts = [r.t_mono for r in self.records[-400:] if isinstance(r, ev.Step) and r.rank == 0]
        gaps = [b - a for a, b in zip(ts, ts[1:]) if b - a < 2.0]
        return statistics.median(gaps) if gaps else 0.2


def kill(pid: int) -> float:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return time.monotonic()


class Stress:
    """Runs the rounds; `kills` holds every kill made."""

    def __init__(self, job: StressJob, seed: int, log=print):
        self.job, self.rng, self.log = job, random.Random(seed), log
        self.kills: list[Kill] = []
        self.since = 0.0           # records before this belong to earlier rounds

    def round(self, point: str) -> list[Kill]:
        job = self.job
        running = job.wait_full_world(self.since)
        handler = getattr(self, "_" + point.replace("-", "_"))
        made = handler(running)
        for k in made:
            self._measure(k)
        for a, b in zip(made, made[1:]):     # did the next kill come before `a` recovered?
            a.compound = a.recovery_s is None or a.t_kill + a.recovery_s > b.t_kill
        job.job.set_hosts([f"{h}:1" for h in job.hosts])
        self.since = max(k.t_kill for k in made)
        for k in made:
            self.log(f"kill {k.n:3d} {k.point:15s} rank {k.victim_rank} of {k.size} "
                     f"({k.victim_host}) +{k.delay_s:.2f} s -> resumed "
                     + (f"{k.recovery_s:.2f} s" if k.recovery_s is not None else "NEVER")
                     + f" {','.join(k.abort_paths)}")
        return made

    # -- one handler per point: returns the kills it made (recovery not yet measured) --------

    def _victim(self, running: dict[int, ev.Step], point: str, delay: float,
                exclude: set[int] = frozenset()) -> Kill:
        rank = self.rng.choice(sorted(set(running) - exclude))
        s = running[rank]
        return Kill(n=len(self.kills) + 1, point=point, victim_rank=rank, victim_host=s.host or "",
                    victim_pid=s.pid, size=s.size, delay_s=delay)

    def _fire(self, k: Kill) -> Kill:
        k.t_kill = kill(k.victim_pid)
        self.kills.append(k)
        return k

    def _mid_step(self, running):
        delay = self.rng.uniform(0, self.job.step_time_s())
        k = self._victim(running, "mid-step", delay)
        self.job.wait_record(lambda r: isinstance(r, ev.Step), 30, "a step", time.monotonic())
        time.sleep(delay)
        return [self._fire(k)]

    def _between_steps(self, running):
        k = self._victim(running, "between-steps", 0.0)
        self.job.wait_record(lambda r: isinstance(r, ev.Step) and r.pid == k.victim_pid, 30,
                             "a step", time.monotonic())
        return [self._fire(k)]

    def _commit(self, running):
        k = self._victim(running, "commit", 0.0)
        self.job.wait_record(lambda r: isinstance(r, ev.Commit) and r.pid == k.victim_pid, 30,
                             "a commit", time.monotonic())
        return [self._fire(k)]

    def _shrink(self, running) -> tuple[dict[int, ev.Step], str]:
        """Remove one host from discovery; returns the re-formed world and that host."""
        leaving = self.rng.choice(sorted(running))
        host = running[leaving].host or ""
        t = time.monotonic()
        self.job.job.set_hosts([f"{h}:1" for h in self.job.hosts if h != host])
        n = len(self.job.hosts) - 1
        r = self.job.wait_record(lambda r: isinstance(r, ev.Resumed) and r.size == n, 60,
                                 f"resumed at size {n}", t)
        self.job.wait_record(lambda r: isinstance(r, ev.Step) and r.size == n, 30,
                             f"a step at size {n}", r.t_mono)
        return self.job.running(r.t_mono - 0.001), host

    def _after_scale_in(self, running):
        running, _ = self._shrink(running)
        delay = self.rng.uniform(0, 1.0)
        k = self._victim(running, "after-scale-in", delay)
        time.sleep(delay)
        return [self._fire(k)]

    def _standby_then(self, running, record: type[ev.Event], point: str, max_delay: float):
        running, host = self._shrink(running)
        delay = self.rng.uniform(0, max_delay)
        k = self._victim(running, point, delay)
        t = time.monotonic()
        self.job.job.set_hosts([f"{h}:1" for h in self.job.hosts])      # back: as a standby
        r = self.job.wait_record(lambda r: isinstance(r, record), 90, record.__name__, t)
        if point == "switched-standby":     # the standby itself wrote the record
            k = Kill(n=len(self.kills) + 1, point=point, victim_rank=-1, victim_host=r.host,
                     victim_pid=r.pid, size=k.size + 1, delay_s=delay)
        time.sleep(delay)
        return [self._fire(k)]

    def _after_switch(self, running):
        return self._standby_then(running, ev.StandbySwitched, "after-switch", 0.5)

    def _switched_standby(self, running):
        return self._standby_then(running, ev.StandbySwitch, "switched-standby", 0.5)

    def _during_pull(self, running):
        return self._standby_then(running, ev.StandbyPulling, "during-pull", 0.3)

    def _reset(self, running):
        first = self._fire(self._victim(running, "before-reset", 0.0))
        self.job.wait_record(lambda r: isinstance(r, ev.PeerDead), 30, "a peer_dead record",
                             first.t_kill)
        delay = self.rng.uniform(0, 0.5)
        time.sleep(delay)
        second = self._victim(running, "reset", delay, exclude={first.victim_rank})
        return [first, self._fire(second)]

    # -- measuring -----------------------------------------------------------------------------

    def _measure(self, k: Kill) -> None:
        others = lambda r: r.pid != k.victim_pid  # noqa: E731
        try:
            r = self.job.wait_record(lambda r: isinstance(r, ev.Resumed) and others(r),
                                     RECOVERY_LIMIT_S, "a resumed record", k.t_kill)
            s = self.job.wait_record(lambda x: isinstance(x, ev.Step) and others(x),
                                     RECOVERY_LIMIT_S, "a step after resuming", r.t_mono)
        except WaitTimeout as e:
            self.log(f"kill {k.n}: {e}")
            return
        k.recovery_s, k.resumed_size = s.t_mono - k.t_kill, s.size
        k.abort_paths = sorted({"world-guard" if isinstance(d, ev.WorldAborted) else d.abort_path
                                for d in self.job.after(k.t_kill) if d.t_mono < s.t_mono
                                and isinstance(d, (ev.PeerDead, ev.WorldAborted))})


def run(kills: int, seed: int, workdir: Path, log=print, hosts: list[str] | None = None) -> list[Kill]:
    """At least `kills` kills, the points taken in a seeded order; restarts the job if it died."""
    hosts = hosts or loopback_hosts()
    if len(hosts) < 3:
        raise RuntimeError(f"need 3 names for this machine that resolve to 127.0.0.1, have {hosts}")
    rng = random.Random(seed)
    order = list(POINTS)
    made: list[Kill] = []
    attempt = 0
    while len(made) < kills:
        attempt += 1
        with StressJob(workdir / f"job{attempt}", hosts) as job:
            stress = Stress(job, rng.randrange(2**32), log)
            stress.kills = made
            while len(made) < kills:
                if not order:
                    order = list(POINTS)
                    rng.shuffle(order)
                point = order.pop(0)
                try:
                    stress.round(point)
                except WaitTimeout as e:
                    log(f"job {attempt}: {e}; log tail:\n{job.job.log_tail(30)}")
                    break
    return made
