"""Real elastic jobs under chaos-hvdrun on localhost: a join does not stop training.

`localhost`, `127.0.0.1` and this machine's own name are distinct Horovod hosts on one machine, as
in Horovod's own tests. Limits are loose (CI machines are slow and shared); the bench measures.
"""

import os
import signal
import socket
import statistics

import psutil
import pytest

pytest.importorskip("horovod.torch")

from chaos_hvd import events as ev  # noqa: E402
from chaos_hvd.join import wire  # noqa: E402
from chaos_hvd.waiting import wait_until  # noqa: E402
from harness.elastic_job import ElasticJob  # noqa: E402

pytestmark = pytest.mark.horovod

ARGS = ["--model", "medium", "--samples", "1024", "--batch-size", "16", "--step-sleep", "0.05",
        "--commit-every", "2"]
STALL_LIMIT_S = 4.0     # measured ~1.3 s here (stock Horovod: ~7 s); ~3x for CI noise


def job_with(tmp_path, hosts, *, epochs, np, max_np, env=None, launcher="chaos-hvdrun"):
    return ElasticJob([*ARGS, "--epochs", str(epochs)], hosts, np=np, min_np=1, max_np=max_np,
                      env={"CHAOS_CHUNK_BYTES": "65536", **(env or {})}, workdir=str(tmp_path),
                      launcher=launcher)


def commits_at(size, n):
    return lambda es: sum(isinstance(e, ev.Commit) and e.size == size for e in es) >= n


def steps_at(size, n):
    return lambda es: sum(isinstance(e, ev.Step) and e.size == size for e in es) >= n


def stall_s(job, pid) -> float:
    """A worker's longest gap between steps, minus its median step time."""
    ts = [e.t_mono for e in job.events(ev.Step) if e.pid == pid]
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    return max(gaps) - statistics.median(gaps)


def standby_pids() -> list[int]:
    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any("train_elastic.py" in c for c in p.info["cmdline"] or []) \
                    and wire.SLOT_ENV in p.environ():
                pids.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return pids


def assert_same_final_state(job, size):
    finals = job.events(ev.Final)
    assert {f.size for f in finals} == {size}, finals
    assert len({f.digest for f in finals}) == 1, finals


def test_join_keeps_training_and_switches_two_standbys(tmp_path):
    job = job_with(tmp_path, ["localhost:2"], epochs=8, np=2, max_np=4)
    with job:
        job.wait_for(commits_at(2, 6), 120, "commits at size 2")
        job.set_hosts(["localhost:2", "127.0.0.1:2"])      # two new slots at once
        job.wait_for(steps_at(4, 8), 180, "training at size 4")
        rc = job.wait(300)
    assert rc == 0, job.log_tail()
    events = job.events()
    kinds = [type(e) for e in events]
    assert kinds.count(ev.StandbyStarted) == 2 and kinds.count(ev.StandbyJoined) == 2
    assert not [e for e in events if isinstance(e, (ev.StandbyDropped, ev.Diverged))]
    # the running workers trained on while the standbys started and pulled
    ready = max(e.t_mono for e in events if isinstance(e, ev.StandbyReady))
    started = min(e.t_mono for e in events if isinstance(e, ev.StandbyStarted))
    old = {e.pid for e in events if isinstance(e, ev.Step) and e.size == 2}
    assert len(old) == 2
    for pid in old:
        during = [e for e in events if isinstance(e, ev.Step) and e.pid == pid
                  and started < e.t_mono < ready]
        assert len(during) >= 3, "the running workers stopped while the standbys started"
        assert stall_s(job, pid) < STALL_LIMIT_S
    # each standby pulled a committed state in the background, planned over both workers
    pulls = [e for e in events if isinstance(e, ev.StandbyPull) and not e.error]
    assert len(pulls) >= 2 and all(e.version > 0 for e in pulls)
    assert any(len([n for n in e.planned_bytes_per_source.values() if n]) == 2 for e in pulls)
    # after the switch: bit-identical full states, no committed step lost
    at4 = [e for e in events if type(e) is ev.Sync and e.size == 4]
    assert len({e.digest for e in at4 if e.version == at4[0].version}) == 1
    last_commit = max(e.step for e in events if isinstance(e, ev.Commit) and e.size == 2)
    resumed = [e for e in events if isinstance(e, ev.Resumed) and e.size == 4]
    assert resumed and all(e.step == last_commit for e in resumed)
    assert_same_final_state(job, 4)


def test_standby_killed_before_ready_never_interrupts_training(tmp_path):
    job = job_with(tmp_path, ["localhost:2"], epochs=5, np=2, max_np=4)
    with job:
        job.wait_for(commits_at(2, 4), 120, "commits at size 2")
        job.set_hosts(["localhost:2", "127.0.0.1:1"])
        job.wait_for(lambda es: any(isinstance(e, ev.StandbyStarted) for e in es), 60,
                     "a standby started")
        pids = wait_until(standby_pids, 30, "the standby process")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        rc = job.wait(300)
    assert rc == 0, job.log_tail()
    events = job.events()
    dropped = [e for e in events if isinstance(e, ev.StandbyDropped)]
    assert dropped and "before joining" in dropped[0].why
    # the running workers never reset: one world of size 2 from start to end
    assert {e.size for e in events if isinstance(e, ev.Step)} == {2}
    assert len([e for e in events if isinstance(e, ev.Resumed)]) == 2
    assert_same_final_state(job, 2)


def test_standby_not_ready_in_time_is_dropped(tmp_path):
    job = job_with(tmp_path, ["localhost:2"], epochs=4, np=2, max_np=4,
                   env={"CHAOS_STANDBY_TIMEOUT_S": "1"})   # below any interpreter's start-up
    with job:
        job.wait_for(commits_at(2, 4), 120, "commits at size 2")
        job.set_hosts(["localhost:2", "127.0.0.1:1"])
        rc = job.wait(300)
    assert rc == 0, job.log_tail()
    events = job.events()
    assert any(isinstance(e, ev.StandbyDropped) and "not ready" in e.why for e in events)
    assert {e.size for e in events if isinstance(e, ev.Step)} == {2}
    assert_same_final_state(job, 2)


def test_join_while_another_worker_crashes(tmp_path):
    me = socket.gethostname()
    job = job_with(tmp_path, ["localhost:2", f"{me}:1"], epochs=8, np=3, max_np=5)
    with job:
        job.wait_for(commits_at(3, 4), 120, "commits at size 3")
        job.set_hosts(["localhost:2", f"{me}:1", "127.0.0.1:2"])
        job.wait_for(lambda es: any(isinstance(e, ev.StandbyStarted) for e in es), 60,
                     "standbys started")
        victim = [e for e in job.events(ev.Step) if e.host == me][-1]
        os.kill(victim.pid, signal.SIGKILL)
        job.wait_for(steps_at(4, 8), 240, "training at size 4 (crash out, standbys in)")
        rc = job.wait(300)
    assert rc == 0, job.log_tail()
    events = job.events()
    assert len([e for e in events if isinstance(e, ev.StandbyJoined)]) == 2
    assert not [e for e in events if isinstance(e, ev.Diverged)]
    assert_same_final_state(job, 4)


def test_plain_horovodrun_keeps_working_with_the_launcher_secret_unset(tmp_path):
    # ChaosState under stock horovodrun: no standby, no offers, the old join path
    job = job_with(tmp_path, ["localhost:2"], epochs=3, np=2, max_np=4, launcher="horovodrun")
    with job:
        job.wait_for(commits_at(2, 2), 120, "commits at size 2")
        job.set_hosts(["localhost:2", "127.0.0.1:1"])
        rc = job.wait(300)
    assert rc == 0, job.log_tail()
    events = job.events()
    assert not [e for e in events if type(e).__name__.startswith("Standby")]
    assert_same_final_state(job, 3)
