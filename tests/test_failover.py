"""Failover that never waits for Gloo's timeout (real Horovod, our patched build).

* the abort entry point fails a collective in flight at once, whatever its sockets look like,
  and never reaches another world;
* a member that dies while a new world forms -- the reason crash recovery sometimes waited for
  Gloo's timeout: the crash watch is off from a reset until the next sync, and the others wait in
  Gloo's rendezvous for the dead member (as a listener for its connection, 5x the timeout) --
  is caught by the world guard under ``chaos-hvdrun``;
* a member that dies after a host change was broadcast, while the others shut their world down
  (Horovod negotiates the shutdown over that world), is caught by the crash watch;
* the crash stress bench, short: kills at every point of a job's life, none waits for Gloo.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("horovod.torch")

from chaos_hvd import events as ev  # noqa: E402
from chaos_hvd.state.adapter import WorldAbort  # noqa: E402
from harness import crash_stress  # noqa: E402
from harness.elastic_job import REPO, ElasticJob  # noqa: E402

pytestmark = pytest.mark.horovod

if WorldAbort.load() is None:
    pytest.skip("this Horovod lacks chaos-hvd's patches (run scripts/bootstrap.sh)",
                allow_module_level=True)

ABORT_SCRIPT = """\
import threading, time
import torch, horovod.torch as hvd
from horovod.common.exceptions import HorovodInternalError
from chaos_hvd.state.adapter import WorldAbort
hvd.init()
api = WorldAbort.load()
world, phase = api.world_and_phase()
assert world > 0 and phase == 3, (world, phase)
assert api.abort(world + 1) == -1          # not this world: nothing happens
hvd.allreduce(torch.ones(4), name="warm")   # the abort above touched nothing
if hvd.rank() == 1:
    time.sleep(8)                           # alive, connected, silent: no socket closes
else:
    threading.Timer(0.5, lambda: print("aborted", api.abort(world), flush=True)).start()
    t = time.monotonic()
    try:
        hvd.allreduce(torch.ones(1 << 20), name="blocked")
        print("NOT ABORTED", flush=True)
    except HorovodInternalError:
        print(f"failed after {time.monotonic() - t:.2f} s", flush=True)
"""


def test_abort_fails_the_collective_in_flight_at_once(tmp_path):
    script = tmp_path / "abort.py"
    script.write_text(ABORT_SCRIPT)
    bindir = os.path.dirname(sys.executable)
    done = subprocess.run([os.path.join(bindir, "horovodrun"), "-np", "2", "-H", "localhost:2",
                           "--gloo", "--network-interface", "lo", "--gloo-timeout-seconds", "60",
                           sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    out = done.stdout + done.stderr
    assert "NOT ABORTED" not in out, out[-3000:]
    line = next((ln for ln in out.splitlines() if "failed after" in ln), None)
    assert line is not None, out[-3000:]
    assert float(line.split("failed after")[1].split()[0]) < 3.0, line   # 0.5 s + the abort


DIES_WHILE_FORMING = """\
import ctypes, os, runpy, sys, threading, time
# The worker on 127.0.0.1 dies {delay} s after it has its rank in the second world it joins: the
# others are then forming a world with a member that will never connect (at once: before any
# context connected; later: with some contexts already connected).
if os.environ.get("HOROVOD_HOSTNAME") == "127.0.0.1":
    def watch():
        from horovod.torch import mpi_ops
        world = mpi_ops._basics.MPI_LIB_CTYPES.horovod_chaos_world
        world.argtypes, world.restype = [ctypes.POINTER(ctypes.c_int)], ctypes.c_int
        phase = ctypes.c_int(0)
        while True:
            if world(ctypes.byref(phase)) >= 2 and phase.value == 2:
                time.sleep({delay})
                os._exit(9)
            time.sleep(0.0005)
    threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = {script!r}
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""

def _first_step_after(job: ElasticJob, t: float, what: str) -> ev.Step:
    return job.wait_for(lambda es: [e for e in es if isinstance(e, ev.Step) and e.t_mono > t],
                        120, what)[0]


def _story(events: list, t0: float) -> str:
    """The job's records but steps and commits, timed from `t0`: what an assertion shows."""
    return "\n".join(f"{e.t_mono - t0:8.3f} {e}" for e in events
                     if not isinstance(e, (ev.Step, ev.Commit, ev.Committed, ev.StateCommit)))


ARGS = ["--model", "medium", "--samples", "512", "--batch-size", "16", "--step-sleep", "0.05",
        "--commit-every", "2", "--epochs", "6"]


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_a_member_that_dies_while_the_world_forms_is_not_waited_for(tmp_path, delay):
    """Fails without the world guard: the survivors wait in Gloo's rendezvous (30 s, or 150 s
    as the listener of the dead member's connection)."""
    third = crash_stress.loopback_hosts(3)
    if len(third) < 3:
        pytest.skip("needs a third name for this machine that resolves to 127.0.0.1")
    wrapper = tmp_path / "dies_while_forming.py"
    wrapper.write_text(DIES_WHILE_FORMING.format(script=str(REPO / "examples/train_elastic.py"),
                                                 delay=delay))
    job = ElasticJob(ARGS, ["localhost:1", "127.0.0.1:1"], np=2, min_np=1, max_np=3,
                     gloo_timeout_s=30, workdir=str(tmp_path), script=str(wrapper),
                     launcher="chaos-hvdrun", env={"CHAOS_CHUNK_BYTES": "65536"})
    with job:
        job.wait_for(lambda es: sum(isinstance(e, ev.Commit) for e in es) >= 6, 120,
                     "commits at size 2")
        job.set_hosts(["localhost:1", "127.0.0.1:1", f"{third[2]}:1"])   # a standby joins
        switched = job.wait_for(lambda es: [e for e in es if isinstance(e, ev.StandbySwitch)],
                                120, "the standby switched in")[0]
        resumed = _first_step_after(job, switched.t_mono, "training after the switch")
        rc = job.wait(300)
    events = job.events()
    story = _story(events, switched.t_mono)
    assert rc == 0, job.log_tail() + story
    waited = resumed.t_mono - switched.t_mono
    assert resumed.size == 2 and waited < 10, \
        f"training resumed {waited:.1f} s after the switch\n{story}\n{job.log_tail()}"
    aborted = [e for e in events if isinstance(e, ev.WorldAborted)]
    assert all(e.dead == ["127.0.0.1:0"] for e in aborted), f"{story}\n{job.log_tail()}"
    # How the survivors stopped waiting depends on how far the dying member got: before anyone
    # connected to it only the world guard can end the wait; once a survivor was connecting,
    # its death resets that connection and Gloo fails the forming world by itself (seen in CI
    # with the delay). Either way within the bound above; nothing else ends the wait.
    gloo_failed = "could not form its Gloo world" in job.log_path.read_text(errors="replace")
    assert aborted or gloo_failed, f"{story}\n{job.log_tail()}"
    finals = [e for e in events if isinstance(e, ev.Final)]
    assert len(finals) == 2 and len({f.digest for f in finals}) == 1


def test_crash_stress_short(tmp_path):
    """The crash stress bench, short: >= 20 kills at every point, none waits for Gloo."""
    if len(crash_stress.loopback_hosts()) < 3:
        pytest.skip("needs three names for this machine that resolve to 127.0.0.1")
    kills = crash_stress.run(21, seed=7, workdir=tmp_path, log=print)
    summary = crash_stress.summarize(kills)
    print(summary)
    assert summary["kills"] >= 20 and summary["recovered"] == summary["kills"], summary
    assert summary["gloo_timeout_waits"] == 0, summary
    assert summary["max_s"] < 10, summary      # measured p99 ~1.3 s here; loose for CI
    assert {k.point for k in kills} >= set(crash_stress.POINTS)


DIES_WHILE_LEAVING = """\
import os, runpy, signal, sys, time
# The worker on 127.0.0.1 dies the first time its commit learns of a host change (a standby is
# ready): the others have learnt it from the same broadcast and now shut their world down, which
# Horovod negotiates over that world's Gloo connections, so they wait for the dead member there.
if os.environ.get("HOROVOD_HOSTNAME") == "127.0.0.1":
    from horovod.common.exceptions import HostsUpdatedInterrupt
    from chaos_hvd.state import adapter
    check = adapter.ChaosState.check_host_updates
    def dies_on_update(state):
        try:
            check(state)
        except HostsUpdatedInterrupt:
            with open({marker!r}, "w") as f:
                f.write(repr(time.monotonic()))
            os.kill(os.getpid(), signal.SIGKILL)
    adapter.ChaosState.check_host_updates = dies_on_update
sys.argv[0] = {script!r}
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_member_that_dies_while_the_world_shuts_down_is_not_waited_for(tmp_path):
    """Fails when the crash watch is off from a host-change interrupt to the reset: the survivor
    waits in Horovod's shutdown negotiation of the old world for Gloo's timeout (30 s)."""
    third = crash_stress.loopback_hosts(3)
    if len(third) < 3:
        pytest.skip("needs a third name for this machine that resolves to 127.0.0.1")
    marker = tmp_path / "died_at"
    wrapper = tmp_path / "dies_while_leaving.py"
    wrapper.write_text(DIES_WHILE_LEAVING.format(script=str(REPO / "examples/train_elastic.py"),
                                                 marker=str(marker)))
    hosts = ["127.0.0.1:1", "localhost:2"]
    job = ElasticJob(ARGS, hosts, np=3, min_np=1, max_np=4,
                     gloo_timeout_s=30, workdir=str(tmp_path), script=str(wrapper),
                     launcher="chaos-hvdrun", env={"CHAOS_CHUNK_BYTES": "65536"})
    with job:
        job.wait_for(lambda es: sum(isinstance(e, ev.Commit) for e in es) >= 9, 120,
                     "commits at size 3")
        job.set_hosts([*hosts, f"{third[2]}:1"])   # a standby joins
        job.wait_for(lambda es: marker.exists() and marker.read_text(), 120,
                     "the worker on 127.0.0.1 died at a host change")
        died = float(marker.read_text())
        resumed = _first_step_after(job, died, "training after the death")
        rc = job.wait(300)
    events = job.events()
    story = _story(events, died)
    assert rc == 0, job.log_tail() + story
    waited = resumed.t_mono - died
    print(f"training resumed {waited:.2f} s after the death")
    assert waited < 10, f"training resumed {waited:.1f} s after the death\n{story}\n{job.log_tail()}"
    # Whether a survivor waits depends on where each one was in the negotiation when the
    # member died (measured: 1 of 4 runs without the fix ended by Gloo's own errors at once);
    # when one did, its crash watch ended the wait from the inside.
    dead = [e for e in events if isinstance(e, ev.PeerDead) and e.t_mono > died]
    assert all(e.abort_path == "horovod" for e in dead), f"{story}\n{job.log_tail()}"
    finals = [e for e in events if isinstance(e, ev.Final)]
    assert finals and len({f.digest for f in finals}) == 1
