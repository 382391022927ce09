"""Drive a real ``horovodrun`` elastic job on this machine: hosts file, discovery script, events.

Used by the integration tests and benchmarks (and handy for experiments). On one machine Horovod
treats ``localhost`` and ``127.0.0.1`` as two hosts (Horovod's own elastic tests do this), so a
killed worker blacklists only its "host". ``--network-interface lo`` is required: without it a
single-machine elastic run hangs while detecting NICs.

The job runs in its own process group and is always killed on exit (context manager), so a failed
test leaves no workers behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from chaos_hvd import events as ev
from chaos_hvd.errors import WaitTimeout
from chaos_hvd.events import read_events
from chaos_hvd.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


class ElasticJob:
    def __init__(self, script_args: Sequence[str], hosts: Sequence[str], *, np: int, min_np: int,
                 max_np: int, env: dict[str, str] | None = None, gloo_timeout_s: int = 30,
                 workdir: str | None = None, script: str = "examples/train_elastic.py",
                 launcher: str = "horovodrun", launcher_args: Sequence[str] = ()):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="chaos-job-"))
        self.events_path = self.dir / "events.jsonl"
        self.hosts_path = self.dir / "hosts"
        self.discover = self.dir / "discover.sh"
        self.discover.write_text(f"#!/bin/sh\ncat {self.hosts_path}\n")
        self.discover.chmod(0o755)
        self.set_hosts(hosts)
        self.log_path = self.dir / "horovodrun.log"
        bindir = Path(sys.executable).parent
        self.cmd = [str(bindir / launcher), "-np", str(np), "--min-np", str(min_np),
                    "--max-np", str(max_np), "--host-discovery-script", str(self.discover),
                    "--network-interface", "lo", "--gloo-timeout-seconds", str(gloo_timeout_s),
                    *launcher_args, sys.executable, str(REPO / script), *script_args]
        self.env = dict(os.environ, CHAOS_EVENT_LOG=str(self.events_path), PYTHONUNBUFFERED="1",
                        PATH=f"{bindir}:{os.environ.get('PATH', '')}", **(env or {}))
        self.proc: subprocess.Popen | None = None

    def set_hosts(self, hosts: Sequence[str]) -> None:
        tmp = self.hosts_path.with_suffix(".tmp")
        tmp.write_text("".join(f"{h}\n" for h in hosts))
        os.replace(tmp, self.hosts_path)  # the discovery script never sees a half-written file

    def start(self) -> "ElasticJob":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def events(self, *kinds: type[ev.Event]) -> list[ev.Event]:
        if not self.events_path.exists():
            return []
        return read_events(str(self.events_path), *kinds)

    def wait_for(self, predicate: Callable[[list[ev.Event]], object], timeout_s: float,
                 what: str = "condition"):
        def exited() -> str | None:
            if self.proc is not None and self.proc.poll() is not None \
                    and not predicate(self.events()):
                return f"job exited ({self.proc.returncode}) first"
            return None
        try:
            return wait_until(lambda: predicate(self.events()), timeout_s, what, interval_s=0.1,
                              give_up=exited)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}; log tail:\n{self.log_tail()}") from None

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "ElasticJob":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def join_then_crash(job: ElasticJob, *, joiner_host: str = "127.0.0.1:2", victim_host: str = "localhost",
                    commits_before_join: int = 4, steps_after_join: int = 8,
                    timeout_s: float = 120) -> dict:
    """The canonical scenario on a started job (begun on `localhost:2` with max_np >= 4).

    Wait for commits at size 2, add `joiner_host`, wait for training at size 4, SIGKILL the newest
    worker on `victim_host`, and wait until training resumes at size 2. Returns the victim's last
    step event and the crash-to-resumed-training time (``recovery_s``, monotonic clock).
    """
    job.wait_for(lambda es: any(isinstance(e, ev.Commit) and e.size == 2
                                and e.step >= commits_before_join for e in es),
                 timeout_s, "commits at size 2")
    job.set_hosts(["localhost:2", joiner_host])
    job.wait_for(lambda es: sum(isinstance(e, ev.Step) and e.size == 4 for e in es)
                 >= steps_after_join, timeout_s, "training at size 4")
    victim = [e for e in job.events(ev.Step) if e.size == 4 and e.host == victim_host][-1]
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    resumed = job.wait_for(lambda es: [e for e in es if isinstance(e, ev.Step)
                                       and e.t_mono > killed_at and e.size == 2],
                           timeout_s, "training resumed after the crash")
    return {"victim": victim, "recovery_s": resumed[0].t_mono - killed_at}
