"""The testbed's pure parts: units, topology validation, fault schedules, rule rendering, checks.

No root needed. Each kind of malformed input has its own test and must name the file location.
"""

import glob
import os
import random
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from chaos_hvd import events as ev
from ci import checks
from testbed import bridge_rules, shaping
from testbed.errors import ScheduleError, TopologyError
from testbed.executor import StepWatcher
from testbed.faults import CHAOS_KINDS, chaos_schedule, parse_schedule
from testbed.nfdelay import sample_delay
from testbed.profiles import PROFILES
from testbed.topology import Direction, parse_topology
from chaos_hvd.units import (UnitError, parse_duration_s, parse_fraction, parse_rate_bps,
                           parse_size_bytes, parse_time_s)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = """\
name: t
nodes:
  - {name: h1}
  - {name: h2, slots: 2}
  - {name: h3, standby: true}
  - {name: ctl, role: launcher}
switches: [s1]
links:
  - {a: h1, b: s1, rate: 100Mbit, delay: 2ms}
  - {a: h2, b: s1, profile: lte}
  - {a: h3, b: s1, up: {rate: 20Mbit}, down: {rate: 80Mbit, loss: 1%}}
  - {a: ctl, b: s1}
"""


def topo(text=GOOD):
    return parse_topology(textwrap.dedent(text), "t.yaml")


# ---------------------------------------------------------------- units

def test_units():
    assert parse_rate_bps("100Mbit") == 100e6
    assert parse_rate_bps(100) == 100e6          # Mininet: bw in Mbit/s
    assert parse_rate_bps("1.2Gbit") == 1.2e9
    assert parse_time_s("20ms") == pytest.approx(0.02)
    assert parse_time_s(5) == pytest.approx(0.005)  # Mininet: delay in ms
    assert parse_duration_s(5) == 5.0              # schedules: seconds
    assert parse_fraction("0.5%") == pytest.approx(0.005)
    assert parse_fraction(1) == pytest.approx(0.01)
    assert parse_size_bytes("64KiB") == 65536
    for bad, fn in [("100Mbbit", parse_rate_bps), ("fast", parse_rate_bps), (0, parse_rate_bps),
                    ("-3ms", parse_time_s), ("100%", parse_fraction), (True, parse_rate_bps),
                    ("0B", parse_size_bytes)]:
        with pytest.raises(UnitError):
            fn(bad)


# ---------------------------------------------------------------- topology

def test_good_topology_model():
    t = topo()
    assert [n.name for n in t.workers] == ["h1", "h2", "h3"]
    assert t.launcher.name == "ctl"
    assert t.node("h2").slots == 2 and t.node("h3").standby
    lte = t.link("h2-s1")
    assert lte.up.rate_bps == 20e6 and lte.down.rate_bps == 60e6     # from the profile
    assert lte.up.delay_s == pytest.approx(0.011)
    h3 = t.link("h3-s1")
    assert h3.up == Direction(rate_bps=20e6) and h3.down.loss == pytest.approx(0.01)
    assert t.path_rate_bps("h1", "h2") == 60e6                         # slowest hop
    assert t.path_delay_s("h1", "h2") == pytest.approx(0.013)
    assert t.hops("h1", "h3") == [("h1-s1", "up"), ("h3-s1", "down")]
    assert len({n.ip for n in t.nodes}) == 4


def test_link_fields_override_profile_and_defaults():
    t = topo("""\
        defaults: {profile: gbe, loss: 1}
        nodes: [{name: a}, {name: b}]
        switches: [s]
        links:
          - {a: a, b: s, profile: lte, delay: 30ms}
          - {a: b, b: s, down: {rate: 5Mbit}}
        """)
    # precedence: defaults' profile < defaults' fields < the link's profile < the link's fields
    a = t.link("a-s")
    assert a.up.rate_bps == 20e6 and a.up.delay_s == pytest.approx(0.03)
    assert a.up.loss == pytest.approx(0.001)
    b = t.link("b-s")
    assert b.up.rate_bps == 940e6 and b.down.rate_bps == 5e6 and b.up.loss == pytest.approx(0.01)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "topologies", "*.yaml"))
                                    + glob.glob(os.path.join(REPO, "ci", "topologies", "*.yaml"))))
def test_shipped_topologies_are_valid(path):
    with open(path) as f:
        t = parse_topology(f.read(), path)
    assert t.workers and t.launcher is not None


def test_every_profile_parses():
    for name in PROFILES:
        t = topo(f"nodes: [{{name: a}}]\nswitches: [s]\nlinks: [{{a: a, b: s, profile: {name}}}]\n")
        d = t.link("a-s")
        assert d.up.rate_bps and d.down.rate_bps


BAD = {
    "unknown_profile": ("profile: lte", "profile: ltee", r"t.yaml:10:\d+: .*unknown profile 'ltee' \(did you mean 'lte'\?\)"),
    "zero_rate": ("rate: 100Mbit", "rate: 0", r"t.yaml:9:\d+: links\[0\].rate: rate must be positive"),
    "negative_rate": ("rate: 20Mbit", "rate: -20Mbit", r"t.yaml:11:\d+: links\[2\].up.rate"),
    "bad_unit": ("delay: 2ms", "delay: 2 parsecs", r"t.yaml:9:\d+: links\[0\].delay: unknown unit \'parsecs\'"),
    "unknown_unit": ("rate: 100Mbit", "rate: 100Mbbit", r"unknown unit 'Mbbit'"),
    "unreadable": ("rate: 100Mbit", "rate: fast", r"links\[0\].rate: cannot read rate 'fast'"),
    "duplicate_name": ("{name: h2, slots: 2}", "{name: h1, slots: 2}", r"t.yaml:4:\d+: nodes\[1\].name: duplicate name 'h1'"),
    "dangling_link": ("{a: h2, b: s1", "{a: h2, b: s2", r"t.yaml:10:\d+: links\[1\].b: link end 's2' is not a node or switch"),
    "typo_key": ("delay: 2ms", "dealy: 2ms", r"unknown key 'dealy' \(did you mean 'delay'\?\)"),
    "loss_100": ("loss: 1%", "loss: 100%", r"t.yaml:11:\d+: links\[2\].down.loss"),
    "bad_role": ("role: launcher", "role: boss", r"t.yaml:6:\d+: nodes\[3\].role"),
    "yaml_syntax": ("- {name: h1}", "- {name: h1", r"t.yaml:\d+:\d+: invalid YAML"),
    "two_nics": ("{a: ctl, b: s1}", "{a: ctl, b: h1}", r"host 'h1' already has a link"),
    "no_link": ("  - {a: ctl, b: s1}\n", "", r"node 'ctl' has no link"),
    "bad_slots": ("slots: 2", "slots: -1", r"nodes\[1\].slots: slots must be an integer in 1..1024"),
    "huge_slots": ("slots: 2", "slots: 100000000000000000000", r"nodes\[1\].slots"),
    "nan_rate": ("rate: 100Mbit", "rate: .nan", r"links\[0\].rate: rate must be a finite number"),
    "inf_delay": ("delay: 2ms", "delay: .inf", r"links\[0\].delay: delay must be a finite"),
    "nan_queue": ("rate: 100Mbit", "queue: .nan", r"links\[0\].queue"),
    "list_link_end": ("{a: h2, b: s1", "{a: [h2], b: s1", r"links\[1\].a: link end \['h2'\] is not"),
    "complex_key": ("rate: 100Mbit", "[1, 2]: 3", r"t.yaml.*invalid YAML"),
    "rate_too_high": ("rate: 100Mbit", "rate: 40Gbit", r"above the 10 Gbit/s"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_topology_is_a_located_typed_error(case):
    old, new, pattern = BAD[case]
    assert old in GOOD
    with pytest.raises(TopologyError, match=pattern):
        topo(GOOD.replace(old, new, 1))


def test_switch_loop_and_disconnected_network_are_refused():
    loop = """\
        nodes: [{name: a}]
        switches: [s1, s2, s3]
        links: [{a: a, b: s1}, {a: s1, b: s2}, {a: s2, b: s3}, {a: s3, b: s1}]
        """
    with pytest.raises(TopologyError, match="closes a loop"):
        topo(loop)
    apart = """\
        nodes: [{name: a}, {name: b}]
        switches: [s1, s2]
        links: [{a: a, b: s1}, {a: b, b: s2}]
        """
    with pytest.raises(TopologyError, match="not connected"):
        topo(apart)
    with pytest.raises(TopologyError, match="file is empty"):
        topo("")
    with pytest.raises(TopologyError, match="at least one worker"):
        topo("nodes: [{name: c, role: launcher}]\nswitches: [s]\nlinks: [{a: c, b: s}]\n")


@pytest.mark.parametrize("text,match", [
    ("- a\n- b\n", "must be a mapping, got a list"),
    ("nodes: [{name: a, ip: 10.9.0.0}]\nsubnet: 10.9.0.0/24\nswitches: [s]\nlinks: [{a: a, b: s}]\n",
     "network's own or broadcast address"),
    ("subnet: 10.9.0.0/30\nnodes: [{name: a}, {name: b}, {name: c}]\nswitches: [s]\n"
     "links: [{a: a, b: s}, {a: b, b: s}, {a: c, b: s}]\n", "no address left"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply|invalid YAML"),
])
def test_hostile_topologies_are_typed_errors(text, match):
    with pytest.raises(TopologyError, match=match):
        topo(text)


def test_direct_cable_between_two_hosts_is_a_link():
    t = topo("nodes: [{name: a}, {name: b}]\nlinks: [{a: a, b: b, rate: 10Mbit}]\n")
    assert t.hops("a", "b") == [("a-b", "up")]


# ---------------------------------------------------------------- schedules

SCHEDULE = """\
actions:
  - {at: 1s, action: join, node: h3}
  - {at_step: 10, action: crash, node: h1}
  - {at: 2, action: flap, link: h2-s1, period: 2s, count: 2}
  - {at: 3s, action: degrade, link: h1-s1, direction: up, rate: 10Mbit, delay: 50ms}
  - {at: 4s, action: partition, groups: [[h1], [h2, ctl]]}
  - {at: 5s, action: heal}
  - {at: 6s, action: restore, link: h1-s1}
"""


def test_schedule_expands_in_time_order_with_flap_unrolled():
    s = parse_schedule(SCHEDULE, topo(), "f.yaml")
    got = [(a.action, a.target, a.at_s, a.offset_s) for a in s.expand()]
    assert got[:6] == [("join", "h3", 1.0, 0.0), ("link_down", "h2-s1", 2.0, 0.0),
                       ("link_up", "h2-s1", 2.0, 1.0), ("degrade", "h1-s1", 3.0, 0.0),
                       ("link_down", "h2-s1", 2.0, 2.0), ("partition", "h1 | h2,ctl", 4.0, 0.0)]
    times = [a.at_s + a.offset_s for a in s.expand() if a.at_s is not None]
    assert times == sorted(times)
    assert got[-1] == ("crash", "h1", None, 0.0)         # step-triggered ones come last
    degrade = next(a for a in s.expand() if a.action == "degrade")
    assert dict(degrade.changes) == {"rate_bps": 10e6, "delay_s": pytest.approx(0.05)}


BAD_SCHEDULES = {
    "unknown_action": ("action: heal}", "action: heel}", r"f.yaml:7:\d+: actions\[5\].action: unknown action 'heel' \(did you mean 'heal'\?\)"),
    "unknown_node": ("crash, node: h1", "crash, node: h9", r"f.yaml:3:\d+: actions\[1\].node: 'h9' is not a worker"),
    "unknown_link": ("link: h2-s1", "link: h2-s9", r"actions\[2\].link: no link 'h2-s9'"),
    "two_triggers": ("{at_step: 10,", "{at: 1, at_step: 10,", r"exactly one trigger"),
    "no_trigger": ("{at: 5s, action: heal}", "{action: heal}", r"exactly one trigger"),
    "join_not_standby": ("join, node: h3", "join, node: h2", r"join h2 when h2 is active; mark it 'standby: true'"),
    "bad_period": ("period: 2s", "period: 0", r"period must be in \(0, 3600\] seconds"),
    "flap_storm": ("count: 2", "count: 3000000", r"count must be an integer in 1..10000"),
    "list_node": ("crash, node: h1", "crash, node: [h1]", r"actions\[1\].node: \['h1'\] is not"),
    "list_in_group": ("[[h1], [h2, ctl]]", "[[[h1]], [h2, ctl]]", r"groups must be a list"),
    "heal_alone": ("{at: 4s, action: partition, groups: [[h1], [h2, ctl]]}",
                   "{at: 4s, action: degrade, link: h1-s1, loss: 1%}", r"heal without a partition"),
    "bad_direction": ("direction: up", "direction: sideways", r"direction must be up, down or both"),
    "stray_field": ("{at: 5s, action: heal}", "{at: 5s, action: heal, node: h1}", r"do not apply to action 'heal'"),
    "group_twice": ("[[h1], [h2, ctl]]", "[[h1], [h1, ctl]]", r"a node appears in two groups"),
    "bad_time": ("{at: 1s,", "{at: soon,", r"actions\[0\].at: cannot read"),
    "size_too_big": ("{at_step: 10,", "{at_step: 10, at_size: 5,", r"actions\[1\].at_size: at_size must be a world size in 1..4"),
    "size_bool": ("{at_step: 10,", "{at_size: true,", r"at_size must be a world size"),
    "size_and_time": ("{at_step: 10,", "{at: 1, at_size: 2,", r"exactly one trigger"),
    "after_on_time": ("{at: 1s, action: join", "{at: 1s, after: 2s, action: join", r"actions\[0\].after: .*needs at_step, at_size or at_record"),
    "record_unknown": ("{at_step: 10,", "{at_record: standby_pulled,", r"actions\[1\].at_record: .*'standby_pulled' \(did you mean 'standby_pull'\?\)"),
    "record_of_an_agent": ("{at_step: 10,", "{at_record: install,", r"at_record must name a kind of record the job logs"),
    "record_not_a_string": ("{at_step: 10,", "{at_record: [step],", r"at_record must name"),
    "record_and_step": ("{at_step: 10,", "{at_record: step, at_step: 10,", r"exactly one trigger"),
    "after_nan": ("{at_step: 10,", "{at_step: 10, after: .nan,", r"actions\[1\].after"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEDULES))
def test_malformed_schedule_is_a_located_typed_error(case):
    old, new, pattern = BAD_SCHEDULES[case]
    assert old in SCHEDULE
    with pytest.raises(ScheduleError, match=pattern):
        parse_schedule(SCHEDULE.replace(old, new, 1), topo(), "f.yaml")


@pytest.mark.parametrize("actions,match", [
    ("[{at: 1, action: crash, node: h1}, {at: 2, action: crash, node: h1}]", "crash h1 when h1 is gone"),
    ("[{at: 1, action: resume, node: h1}]", "resume h1 when h1 is active"),
    ("[{at: 1, action: pause, node: h1}, {at: 2, action: pause, node: h1}]", "pause h1 when h1 is paused"),
    ("[{at: 1, action: crash, node: h3}]", "crash h3 when h3 is standby"),
])
def test_senseless_schedules_are_refused(actions, match):
    with pytest.raises(ScheduleError, match=match):
        parse_schedule(f"actions: {actions}\n", topo(), "f.yaml")
    # time and step triggers cannot be ordered against each other: not judged
    mixed = "actions: [{at: 1, action: pause, node: h1}, {at_step: 5, action: pause, node: h1}]\n"
    assert parse_schedule(mixed, topo(), "f.yaml").actions


def test_a_step_trigger_can_wait_for_a_world_size(tmp_path):
    doc = ("actions:\n  - {at_size: 3, action: crash, node: h1}\n"
           "  - {at_size: 2, at_step: 7, after: 1.5s, action: crash, node: h2}\n")
    first, second = parse_schedule(doc, topo(), "f.yaml").actions
    assert (first.at_step, first.at_size, first.offset_s) == (0, 3, 0.0)
    assert (second.at_step, second.at_size, second.offset_s) == (7, 2, 1.5)
    # the executor's watcher reads a live event log: step and size of every Step record
    log = ev.EventLog(str(tmp_path / "events.jsonl"))
    watch = StepWatcher(log.path)
    for step, size in [(5, 2), (9, 4), (6, 2)]:
        log.write(ev.Step(rank=0, size=size, step=step, epoch=0, loss=1.0, lr=0.1))
    watch.poll()
    assert watch.step == 9
    assert watch.reached(9, None) and not watch.reached(10, None)
    assert not watch.reached(0, 3) and not watch.reached(7, 2) and watch.reached(6, 2)
    log.write(ev.Step(rank=1, size=3, step=10, epoch=0, loss=1.0, lr=0.1))
    watch.poll()
    assert watch.reached(0, 3) and watch.reached(10, 3)


def test_a_script_that_logs_only_step_and_size_drives_step_triggers(tmp_path):
    """A user's own training script, written from the README: `step` alone counts for
    ``at_step``, with `size` for ``at_size``; lines that are not records are reported once per
    kind of defect, never skipped in silence."""
    import json
    import chaos_hvd

    path = tmp_path / "events.jsonl"
    bad: list = []
    watch = StepWatcher(str(path), on_bad=lambda line, why: bad.append((line, why)))
    with open(path, "a") as f:
        for step in range(1, 4):
            f.write(json.dumps({"event": "step", "step": step, "rank": 0, "size": 3}) + "\n")
        f.write(json.dumps({"event": "step", "step": 5}) + "\n")           # no size
        f.write('{"event": "step", "stp": 9}\n{"event": "step", "stp": 10}\n')  # a typo, twice
        f.write("not json at all\n")
    chaos_hvd.record_step(7, 2, path=str(path))                              # the helper
    watch.poll()
    assert watch.step == 7 and watch.reached(3, 3) and watch.reached(7, 2)
    assert not watch.reached(4, 3)            # the size-less step 5 counts for at_step only
    assert watch.unreadable == 3 and len(bad) == 2       # two kinds of defect, each once
    # this script logs steps: ChaosState's commit records do not count (at an epoch's end a
    # commit at a new world size comes before that world's first step)
    ev.EventLog(str(path)).write(ev.StateCommit(rank=0, size=4, step=12, version=6))
    watch.poll()
    assert watch.step == 7 and not watch.reached(0, 4)
    # a script that logs none: its ChaosState's commits are its steps
    quiet = tmp_path / "quiet.jsonl"
    watch = StepWatcher(str(quiet))
    ev.EventLog(str(quiet)).write(ev.StateCommit(rank=0, size=4, step=12, version=6))
    watch.poll()
    assert watch.step == 12 and watch.reached(12, 4)
    assert any("step" in why for _, why in bad)
    with pytest.raises(ValueError):
        chaos_hvd.record_step(-1)
    for bad in ((3, 0), (2 ** 70, None), (True, None), (3.0, None)):
        with pytest.raises(ValueError):
            chaos_hvd.record_step(*bad)


def test_a_record_trigger_fires_on_the_first_record_of_its_kind(tmp_path):
    doc = ("actions:\n  - {at_record: standby_ready, action: crash, node: h1}\n"
           "  - {at_record: standby_pulling, after: 1.5s, action: crash, node: h2}\n"
           "  - {at: 1s, action: join, node: h3}\n")
    s = parse_schedule(doc, topo(), "f.yaml")
    assert [(a.target, a.at_record, a.offset_s) for a in s.expand()] == [
        ("h3", None, 0.0), ("h2", "standby_pulling", 1.5), ("h1", "standby_ready", 0.0)]
    log = ev.EventLog(str(tmp_path / "events.jsonl"))
    watch = StepWatcher(log.path)
    log.write(ev.StandbyPulling(host="h3", slot=0, attempt=1, version=4, sources=[0, 1]))
    watch.poll()
    first = watch.first_seen["standby_pulling"]
    log.write(ev.StandbyPulling(host="h3", slot=0, attempt=2, version=8, sources=[0]))
    watch.poll()
    assert watch.first_seen["standby_pulling"] == first and "standby_ready" not in watch.first_seen


@pytest.mark.parametrize("chaos,match", [("{seed: 1, duration: .nan}", "finite"),
                                         ("{seed: 1, duration: 600000s, mean_interval: 0.001s}",
                                          "random actions"),
                                         ("{seed: 1, duration: .inf}", "finite")])
def test_chaos_mode_bounds(chaos, match):
    with pytest.raises(ScheduleError, match=match):
        parse_schedule(f"chaos: {chaos}\n", topo(), "f.yaml")


def test_joining_twice_is_refused():
    doc = "actions:\n  - {at: 1, action: join, node: h3}\n  - {at: 2, action: join, node: h3}\n"
    with pytest.raises(ScheduleError, match="joins twice"):
        parse_schedule(doc, topo(), "f.yaml")


MESH = parse_topology(open(os.path.join(REPO, "topologies", "wifi-mesh-8.yaml")).read(), "mesh")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), duration=st.floats(5, 300),
       interval=st.floats(0.5, 30), min_workers=st.integers(1, 6),
       kinds=st.lists(st.sampled_from(CHAOS_KINDS), min_size=1, unique=True))
def test_chaos_mode_is_reproducible_and_keeps_its_invariants(seed, duration, interval,
                                                             min_workers, kinds):
    args = (MESH, seed, duration, interval, tuple(kinds), min_workers)
    s = chaos_schedule(*args)
    assert s == chaos_schedule(*args)                      # same seed -> same schedule
    gone, paused, down, partitioned = set(), {}, {}, False
    active = {n.name for n in MESH.workers if not n.standby}
    for a in s.expand():
        t = a.at_s + a.offset_s
        assert 0 <= t <= duration
        paused = {n: end for n, end in paused.items() if end > t}
        if a.node:
            assert a.node not in gone, "acted on a node after it crashed or left"
        if a.action in ("crash", "leave"):
            gone.add(a.node)
        elif a.action == "pause":
            paused[a.node] = next(b.at_s for b in s.actions if b.action == "resume"
                                  and b.node == a.node and b.at_s > t)
        elif a.action == "link_down":
            assert not down.get(a.link)
            down[a.link] = True
        elif a.action == "link_up":
            down[a.link] = False
        elif a.action == "partition":
            assert not partitioned
            partitioned = True
        elif a.action == "heal":
            partitioned = False
        assert len(active - gone - set(paused)) >= min(min_workers, len(active))
    assert not any(down.values()) and not partitioned
    degraded = [a.link for a in s.actions if a.action == "degrade"]
    restored = [a.link for a in s.actions if a.action == "restore"]
    assert sorted(degraded) == sorted(restored)


# ---------------------------------------------------------------- rendering and sampling

def test_bridge_rules_render():
    text = bridge_rules.render("ctbab", {("iifname", "ctbabs1-p1"): 0.05,
                                         ("oifname", "ctbabs1-p2"): 0.0},
                               (("10.0.0.1",), ("10.0.0.2", "10.0.0.3")))
    assert 'iifname "ctbabs1-p1" numgen random mod 1000000 < 50000 drop' in text
    assert "ctbabs1-p2" not in text                                  # zero loss: no rule
    assert "ip saddr { 10.0.0.1 } ip daddr { 10.0.0.2, 10.0.0.3 } drop" in text
    assert "ip saddr { 10.0.0.2, 10.0.0.3 } ip daddr { 10.0.0.1 } drop" in text
    assert text.startswith("table bridge ctbab {}\nflush table bridge ctbab\n")


def test_delay_sampling_is_uniform_within_jitter_and_never_negative():
    rng = random.Random(1)
    xs = [sample_delay([[0.010, 0.004], [0.002, 0.0]], rng) for _ in range(20000)]
    assert min(xs) >= 0.008 - 1e-12 and max(xs) <= 0.016 + 1e-12
    assert sum(xs) / len(xs) == pytest.approx(0.012, abs=1e-4)
    assert min(sample_delay([[0.001, 0.005]], rng) for _ in range(1000)) == 0.0


def test_shaping_leaf_choice():
    d = Direction(rate_bps=10e6, delay_s=0.01, loss=0.01, queue_bytes=30000)
    assert shaping.leaf_for(d, native_netem=True).kind == "netem"
    assert dict(shaping.leaf_for(d, True).params)["delay"] == 10000
    assert shaping.leaf_for(d, native_netem=False).kind == "bfifo"
    assert shaping.leaf_for(Direction(rate_bps=1e6), False).kind is None
    assert shaping.burst_bytes(1e9) == 500000 and shaping.burst_bytes(1e6) == 15 * 1024
    assert shaping.wire_rate_bps(Direction(rate_bps=1448e6)) == pytest.approx(1514e6)


# ---------------------------------------------------------------- CI invariant checks

def _sync(t, **kw):
    base = dict(rank=3, strategy="chaos", size=4, role="needer", version=4, target=0,
                state_bytes=10, sources=[0, 1], needers=[3], transfer_bytes_total=10,
                needed_bytes=10, bytes_per_source={0: 4, 1: 6}, bandwidth_known=True,
                first_sync=True)
    return ev.Sync(t_mono=t, **{**base, **kw})


def _resumed(t, size):
    return ev.Resumed(t_mono=t, rank=0, size=size, step=0, epoch=0, lr=0.1, digest="d")


def _final(digest):
    return ev.Final(t_mono=9, rank=0, size=2, step=9, digest=digest, seconds=1.0)


def test_checks_find_each_broken_invariant():
    timeline = [ev.Fault(t_mono=1, action="join", target="w4", applied_ms=1.0),
                ev.Fault(t_mono=2, action="crash", target="w2", applied_ms=1.0),
                ev.CommandExit(t_mono=3, rc=0, pending_actions=0)]
    events = [_resumed(0, 3), _resumed(0.1, 3), _resumed(5, 4), _sync(5),
              _final("a"), _final("a")]
    ok = {"faults": ["join w4", "crash w2"], "world_sizes": [3, 4],
          "joiner_min_sources": 2, "joiner_bandwidth_known": True, "identical_final": True}
    assert checks.check_run(timeline, events, ok) == []
    # a survivor one commit behind fetches everything from the one rank ahead: not a joiner
    behind = _sync(7, rank=1, bytes_per_source={0: 10}, first_sync=False)
    assert checks.check_joiner(events + [behind], 2, True) == []
    assert checks.check_joiner([behind], 2, True)                       # and no joiner at all
    assert checks.check_faults(timeline, ["crash w2", "join w4"])       # wrong order
    assert checks.check_world_sizes(events, [3, 4, 3])
    assert checks.check_joiner(events, 3, True)
    events[-1].digest = "b"
    assert checks.check_identical_final(events)
    timeline[-1].rc = 1
    assert checks.check_run(timeline, events[:-1], {}) != []


def test_recovery_check():
    timeline = [ev.Fault(t_mono=10, action="crash", target="w2", applied_ms=1.0),
                ev.Fault(t_mono=12, action="join", target="w4", applied_ms=1.0)]
    assert checks.recovery_times(timeline, [_resumed(11.5, 3)]) == [("crash w2", 1.5)]
    assert checks.check_recovery(timeline, [_resumed(11.5, 3)], 2.0) == []
    assert checks.check_recovery(timeline, [_resumed(31, 3)], 2.0)        # Gloo's timeout
    assert checks.check_recovery(timeline, [_resumed(5, 3)], 2.0)         # never after it
    assert checks.check_recovery(timeline[1:], [], 2.0)                   # no crash at all


def test_standby_and_stall_checks():
    def step(t, pid, size=3):
        return ev.Step(t_mono=t, pid=pid, rank=0, size=size, step=0, epoch=0, loss=1.0, lr=0.1)
    joined = ev.StandbyJoined(t_mono=10.5, host="w4", slot=0, instance="i", rank=3)
    ready = ev.StandbyReady(t_mono=9, host="w4", slot=0, instance="i", version=3, seconds=8.0)
    smooth = [step(t, 1) for t in range(12)] + [ready, joined, step(12.5, 1, size=4)]
    assert checks.check_standbys(smooth, 1) == [] and checks.check_stall(smooth, 2.0) == []
    stalled = [step(t, 1) for t in range(9)] + [ready, joined, step(15, 1, size=4)]
    assert checks.running_worker_stalls(stalled)[1] == pytest.approx(6.0)
    assert checks.check_stall(stalled, 2.0)
    assert checks.check_standbys([joined], 1)            # joined without reporting ready
    assert checks.check_standbys(smooth, 2)
    dropped = ev.StandbyDropped(t_mono=3, host="w4", slot=0, instance="j", why="timeout")
    assert checks.check_standbys(smooth + [dropped], 1)
    assert checks.check_stall([], 2.0)
    pull = ev.StandbyPull(host="w4", slot=0, attempt=1, version=4, needed_bytes=10,
                          planned_bytes_per_source={0: 10, 1: 0}, bytes_per_source={0: 10})
    assert checks.check_standbys(smooth + [pull], 1, min_sources=2)     # planned over one
    pull.planned_bytes_per_source = {0: 4, 1: 6}                        # stealing is fine
    assert checks.check_standbys(smooth + [pull], 1, min_sources=2) == []


def test_source_lost_mid_pull_check():
    crash = ev.Fault(t_mono=10, action="crash", target="w2", applied_ms=1.0)
    pulling = ev.StandbyPulling(t_mono=8.5, host="w4", slot=0, attempt=1, version=4,
                                sources=[0, 1, 2])
    lost = ev.StandbyPull(t_mono=14, host="w4", slot=0, attempt=1, version=4,
                          failed_sources={1: "connection reset"})
    assert checks.check_source_lost_mid_pull([crash], [pulling, lost]) == []
    failed = ev.StandbyPull(t_mono=14, host="w4", slot=0, attempt=1, error="version withdrawn")
    assert checks.check_source_lost_mid_pull([crash], [pulling, failed]) == []
    clean = ev.StandbyPull(t_mono=14, host="w4", slot=0, attempt=1, version=4)
    assert "none of them saw a source fail" in checks.check_source_lost_mid_pull(
        [crash], [pulling, clean])[0]
    early = ev.StandbyPull(t_mono=9.5, host="w4", slot=0, attempt=1, version=4,
                           failed_sources={1: "x"})
    assert checks.check_source_lost_mid_pull([crash], [pulling, early])     # ended before it
    other = ev.StandbyPull(t_mono=14, host="w4", slot=0, attempt=2, version=4,
                           failed_sources={1: "x"})
    assert checks.check_source_lost_mid_pull([crash], [pulling, other])     # not that attempt


def _install(epoch, agent, t, added=(), removed=(), up=(), down=(), members=(), slots=None):
    return ev.Install(epoch=epoch, agent=agent, t_unix=t, added=list(added),
                      removed=list(removed), links_up=[list(x) for x in up],
                      links_down=[list(x) for x in down], members=list(members),
                      coordinator=None, slots=slots or {}, handled_ms={}, latency_ms=None,
                      in_view=True)


def test_slot_checks():
    def view(epoch, members, added, slots):
        return _install(epoch, "a", 0, added=added, members=members, slots=slots)
    want = {"a": 1, "b": 2, "c": 4}
    views = [view(1, ["a", "b"], ["a", "b"], {}),                 # founding: slots follow
             view(2, ["a", "b"], [], {"a": 1, "b": 2}),
             view(3, ["a", "b", "c"], ["c"], {"a": 1, "b": 2, "c": 4})]
    assert checks.check_slots(views, want) == []
    late = views[:2] + [view(3, ["a", "b", "c"], ["c"], {"a": 1, "b": 2}),
                        view(4, ["a", "b", "c"], [], {"a": 1, "b": 2, "c": 4})]
    assert checks.check_slots(late, want) == ["epoch 3: c has slots None, advertised 4"]
    assert checks.check_slots(views[:1], want)         # never agreed


def test_agent_view_checks():
    ip = {"w1": "10.0.0.1", "w2": "10.0.0.2", "w3": "10.0.0.3", "w4": "10.0.0.4"}
    agents = [
        _install(5, "10.0.0.1", 10, added=["10.0.0.4"]),
        # the joiner's first install lists everyone: the smaller diff of the epoch is kept
        _install(5, "10.0.0.4", 10, added=["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
        ev.Suspect(node="10.0.0.2", t_unix=19.5, agent="10.0.0.1"),
        _install(6, "10.0.0.1", 20, removed=["10.0.0.2"]),
        _install(7, "10.0.0.1", 30, down=[("10.0.0.1", "10.0.0.3")]),
        _install(8, "10.0.0.1", 32, up=[("10.0.0.1", "10.0.0.3")]),
    ]
    want = [{"added": "w4"}, {"removed": "w2", "detected": True}, {"link_down": "w3"},
            {"link_up": "w3"}]
    assert [v.agent for v in checks.view_changes(agents)] == ["10.0.0.1"] * 4
    assert checks.check_agents(agents, want, ip) == []
    assert checks.check_agents(agents, [want[3], want[2]], ip)              # wrong order
    assert checks.check_agents(agents[:2] + agents[3:], want, ip)           # no suspicion
    assert checks.check_agents([], want, ip)
    sync = _sync(5, bandwidth_source="static")
    assert checks.check_joiner([sync], 2, True, "agent")
    sync.bandwidth_source, sync.measured_to_me = "agent", {"10.0.0.1>10.0.0.4": 70.0}
    assert checks.check_joiner([sync], 2, True, "agent") == []
