"""The soak's schedule and statistics, and the run timeline the report draws (pure parts), plus
one real PNG drawn from records."""

import os

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from chaos_hvd import events as ev
from ci.soak_schedule import KINDS, REJOIN_S, soak_actions
from ci.soak_stats import committed_steps_lost, longest_gap, recovery_by_kind
from testbed.faults import parse_schedule
from testbed.run_timeline import build
from testbed.topology import load_topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE5 = load_topology(os.path.join(REPO, "ci", "topologies", "edge5.yaml"))
LINKS = {f"w{i}": f"w{i}-sw" for i in range(1, 6)}


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10 ** 6), st.floats(60, 900), st.floats(16, 60),
       st.sets(st.sampled_from(KINDS), min_size=1))
def test_soak_schedules_parse_and_undo_each_fault_before_the_next(seed, duration, interval,
                                                                  kinds):
    actions = soak_actions(["w1", "w2", "w3"], ["w4", "w5"], LINKS, "ctl", seed, duration,
                           interval, sorted(kinds))
    schedule = parse_schedule(yaml.safe_dump({"actions": actions}), EDGE5)  # valid as a file
    assert schedule.actions
    times = [float(a["at"][:-1]) for a in actions]
    assert times == sorted(times) or all(a["action"] == "join" for a in actions[:2])
    undo = {"crash": "join", "pause": "resume", "partition": "heal", "link_down": "link_up",
            "degrade": "restore"}
    open_until = 0.0
    for i, a in enumerate(actions[2:], 2):       # after the standbys' joins
        t = float(a["at"][:-1])
        if a["action"] in undo:
            assert t >= open_until                # the previous fault was undone first
            end = next(float(b["at"][:-1]) for b in actions[i + 1:]
                       if b["action"] == undo[a["action"]])
            assert end - t <= REJOIN_S + 1e-6
            open_until = end
        if a["action"] == "partition":
            assert "ctl" in a["groups"][0] and len(a["groups"][1]) == 1


def test_soak_refuses_intervals_too_short_for_a_rejoin():
    with pytest.raises(ValueError):
        soak_actions(["w1"], [], LINKS, None, 1, 100.0, 10.0)
    with pytest.raises(ValueError):
        soak_actions(["w1"], [], LINKS, None, 1, 100.0, 20.0, ["meteor"])


def _step(t, pid, step, size=3, host="h1"):
    return ev.Step(t_mono=t, pid=pid, rank=0, size=size, step=step, epoch=0, loss=1.0, lr=0.1,
                   host=host)


def _commit(t, pid, step):
    return ev.Commit(t_mono=t, pid=pid, rank=0, size=3, step=step)


def _resumed(t, pid, step, size):
    return ev.Resumed(t_mono=t, pid=pid, rank=0, size=size, step=step, epoch=0, lr=0.1,
                      digest="d", host="h1")


def test_steps_lost_counts_only_completed_commits():
    events = [_step(1, 7, 1), _step(2, 7, 2), _commit(2.1, 7, 2), _step(3, 7, 3),
              _step(4, 7, 4), _commit(4.1, 7, 4)]             # crash inside this commit
    assert committed_steps_lost(events + [_resumed(5, 7, 2, 2)]) == []
    assert committed_steps_lost(events + [_step(4.5, 7, 5), _resumed(5, 7, 2, 2)]) == [(5, 2)]


def test_recovery_by_kind():
    timeline = [ev.Fault(t_mono=10, action="crash", target="w2", applied_ms=1),
                ev.Fault(t_mono=22, action="join", target="w2", applied_ms=1),
                ev.Fault(t_mono=40, action="link_down", target="w1-sw", applied_ms=1),
                ev.Fault(t_mono=41, action="link_up", target="w1-sw", applied_ms=1),
                ev.Fault(t_mono=60, action="pause", target="w3", applied_ms=1),
                ev.Fault(t_mono=68, action="resume", target="w3", applied_ms=1)]
    events = [_resumed(1, 1, 0, 3), _resumed(11.5, 1, 10, 2), _resumed(30, 1, 20, 3)]
    stats = recovery_by_kind(timeline, events)
    assert stats["crash"].resumed_s == [1.5] and stats["crash"].restored_s == [8.0]
    assert stats["flap"].count == 1 and not stats["flap"].resumed_s   # no reset: no times
    assert stats["pause"].never == 1                        # no resume, no step after it


def test_recovery_compares_with_the_size_at_the_fault_not_the_largest_ever():
    # size 5, then 4 (a host left); then a host that is not in the job crashes and a later reset
    # re-forms the job at 4: not a shrink, so the crash did not stop training
    timeline = [ev.Fault(t_mono=10, action="crash", target="w5", applied_ms=1)]
    events = [_resumed(1, 1, 0, 5), _resumed(5, 1, 4, 4), _resumed(20, 1, 9, 4),
              _step(16, 1, 8, size=4)]
    stats = recovery_by_kind(timeline, events)
    assert stats["crash"].resumed_s == [] and stats["crash"].unaffected == 1


def test_longest_gap_between_steps():
    assert longest_gap([]) == (0.0, 0.0)
    steps = [_step(t, 1, i) for i, t in enumerate([1, 2, 2.5, 9, 9.5])] + [_resumed(8, 1, 3, 2)]
    assert longest_gap(steps) == (2.5, 6.5)


def test_run_timeline_lanes_phases_idle_and_markers():
    timeline = [ev.CommandStart(t_mono=100, argv=["x"], host="ctl"),
                ev.Fault(t_mono=110, action="crash", target="w2", applied_ms=1)]
    steps = [_step(101 + i, 5, i) for i in range(9)] + [_step(120 + i, 5, 9 + i) for i in range(3)]
    sync = ev.Sync(t_mono=119.5, pid=5, rank=0, strategy="chaos", size=2, role="source",
                   version=4, target=0, state_bytes=10, sources=[0], needers=[],
                   transfer_bytes_total=0, exchange_s=0.2, plan_s=0.1, transfer_s=0.5,
                   load_s=0.1, verify_s=0.1, total_s=1.0)
    dead = ev.PeerDead(t_mono=111, pid=5, rank=0, peer=1, gloo_sockets_aborted=3)
    run = build(timeline, steps + [sync, dead, _resumed(119.6, 5, 9, 2)])
    assert run.lanes == ["h1"]
    kinds = {s.kind for s in run.segments}
    assert {"train", "idle", "exchange", "transfer", "verify"} <= kinds
    idle = run.idle_s()["h1"]
    assert 9.0 < idle < 11.0                                # 109 -> 118.5, the reset
    assert [m.label for m in run.markers if m.kind == "fault"] == ["crash w2"]
    assert [m.lane for m in run.markers if m.kind == "abort"] == ["h1"]
    assert run.world == [(pytest.approx(19.6), 2)]


def test_a_hosts_successive_processes_share_its_lane():
    """A long run restarts workers many times: one lane per host, not per process; a host
    running two processes at once gets a second lane only for the overlap's owner."""
    from testbed.run_timeline import host_lanes
    spans = {1: ("h1", 0, 10), 2: ("h1", 12, 30), 3: ("h1", 31, 40), 4: ("h2", 0, 40),
             5: ("h2", 5, 20), 6: ("h2", 25, 35)}
    assert host_lanes(spans) == {1: "h1", 2: "h1", 3: "h1", 4: "h2", 5: "h2 #2", 6: "h2 #2"}
    events = ([_step(100 + i, 7, i) for i in range(5)] + [_step(110 + i, 8, i) for i in range(5)]
              + [_step(100 + i, 9, i, host="h2") for i in range(15)])
    run = build([ev.CommandStart(t_mono=100, argv=["x"], host="ctl")], events)
    assert run.lanes == ["h1", "h2"]
    assert [(m.lane, m.label) for m in run.markers if m.kind == "process"] == [
        ("h1", "pid 7"), ("h2", "pid 9"), ("h1", "pid 8")]


def test_report_draws_a_png(tmp_path):
    from testbed.report import ReportError, write_report
    with pytest.raises(ReportError):
        write_report(str(tmp_path))
    log = ev.EventLog(str(tmp_path / "timeline.jsonl"))
    log.write(ev.CommandStart(argv=["x"], host="ctl"))
    log.write(ev.Fault(action="crash", target="w2", applied_ms=1.0))
    elog = ev.EventLog(str(tmp_path / "events.jsonl"))
    for i in range(5):
        elog.write(_step(0, 0, i))
    path = write_report(str(tmp_path))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # a damaged record is a typed error with its file, and the CLI says so with exit 2
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"event": "step", "rank": "not a rank"}\n')
    with pytest.raises(ReportError, match="events.jsonl"):
        write_report(str(tmp_path))
    from testbed.cli import main
    assert main(["report", str(tmp_path)]) == 2


@pytest.mark.parametrize("make", ["dev_zero", "fifo", "loop", "negative_time", "huge_time"])
def test_report_refuses_logs_that_are_no_logs(tmp_path, make):
    """Each of these ended in 5.5 GB of memory, a hang, or exit 0 with a wrong picture."""
    import os
    import threading
    from testbed.report import ReportError, write_report
    log = ev.EventLog(str(tmp_path / "timeline.jsonl"))
    log.write(ev.CommandStart(argv=["x"], host="ctl"))
    events = tmp_path / "events.jsonl"
    if make == "dev_zero":
        os.symlink("/dev/zero", events)
    elif make == "fifo":
        os.mkfifo(events)
    elif make == "loop":
        os.symlink(events, events)
    elif make == "negative_time":
        log.write(ev.Fault(action="crash", target="w2", applied_ms=1.0))
        text = (tmp_path / "timeline.jsonl").read_text().replace('"t_rel":', '"t_rel":-1e300,"x":')
        (tmp_path / "timeline.jsonl").write_text(text)
    else:
        events.write_text('{"event": "step", "step": 1, "t_mono": 1e300}\n')
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(ReportError, write_report,
                                                                  str(tmp_path))), daemon=True)
    t.start()
    t.join(20)
    assert done, "the report hung"


@pytest.mark.parametrize("tty", [False, True])
def test_run_progress_shows_step_and_pending_actions(tty, capsys, monkeypatch):
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from testbed import cli
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.6)"])
    ex = SimpleNamespace(pending=["a", "b"], steps=SimpleNamespace(step=7))
    assert cli._wait_with_progress(proc, ex, SimpleNamespace(t0=time.monotonic()), 30,
                                   every_s=0.5) == 0
    err = capsys.readouterr().err
    assert "training step 7" in err and "2 action(s) pending" in err
