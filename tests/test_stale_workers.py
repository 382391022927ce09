"""A standby ends an old worker of its slot (a healed partition's) before it is switched in:
the pure matcher, and real processes."""

import os
import subprocess
import sys

import psutil
from hypothesis import given, strategies as st

from chaos_hvd.state.stale_workers import end_stale_workers, is_stale

JOB = dict(host="10.0.0.3", slot=0, main_port=4242, secret="ab" * 32, instance="me")
OLD_WORKER = {"HOROVOD_HOSTNAME": "10.0.0.3", "HOROVOD_LOCAL_RANK": "0",
              "HOROVOD_GLOO_RENDEZVOUS_PORT": "4242", "CHAOS_JOB_SECRET": "ab" * 32}
OLD_STANDBY = {"HOROVOD_HOSTNAME": "10.0.0.3", "HOROVOD_LOCAL_RANK": "0",
               "HOROVOD_GLOO_RENDEZVOUS_PORT": "5555", "CHAOS_STANDBY_SLOT": "0",
               "CHAOS_MAIN_RENDEZVOUS_PORT": "4242", "CHAOS_STANDBY_ID": "old",
               "CHAOS_JOB_SECRET": "ab" * 32}


def test_old_workers_and_old_standbys_of_the_slot_are_stale():
    assert is_stale(OLD_WORKER, **JOB) and is_stale(OLD_STANDBY, **JOB)


@given(st.sampled_from(["HOROVOD_HOSTNAME", "HOROVOD_LOCAL_RANK",
                        "HOROVOD_GLOO_RENDEZVOUS_PORT", "CHAOS_JOB_SECRET"]),
       st.one_of(st.none(), st.text(max_size=8)))
def test_another_host_slot_job_or_secret_is_never_stale(key, value):
    env = dict(OLD_WORKER)
    if value is None:
        del env[key]
    elif value != env[key]:
        env[key] = value
    else:
        return
    assert not is_stale(env, **JOB)


def test_this_standbys_own_tree_is_never_stale():
    assert not is_stale({**OLD_STANDBY, "CHAOS_STANDBY_ID": "me"}, **JOB)
    assert not is_stale({**OLD_WORKER, "CHAOS_STANDBY_ID": "me"}, **JOB)


def _sleeper(env):
    """A process with `env` as its initial environment, returned once it runs: Popen returns
    when exec has begun, before the kernel has set up /proc/PID/environ."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE)
    proc.stdout.readline()
    return proc


def test_end_stale_workers_kills_only_the_slots_old_processes():
    stale = _sleeper(OLD_WORKER)
    other_slot = _sleeper({**OLD_WORKER, "HOROVOD_LOCAL_RANK": "1"})
    other_job = _sleeper({**OLD_WORKER, "CHAOS_JOB_SECRET": "cd" * 32})
    mine = _sleeper({**OLD_WORKER, "CHAOS_STANDBY_ID": "me"})
    try:
        ended = end_stale_workers(**JOB)
        assert ended == [stale.pid]
        assert stale.wait(timeout=5) is not None and not psutil.pid_exists(stale.pid)
        assert all(p.poll() is None for p in (other_slot, other_job, mine))
    finally:
        for p in (stale, other_slot, other_job, mine):
            p.kill()
            p.wait()
            p.stdout.close()
