"""The peer-negotiation protocol in simulation: 3-64 members, random joins, leaves, crashes,
link changes and partitions, with lost and delayed messages. Seeded and reproducible.

Safety is checked after every simulated event (Simulation.check_safety raises): one view per
epoch, never two training groups. Liveness: after the last fault, with a majority of the last
view alive and connected, all live nodes settle on one view whose members are exactly them.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from chaos_hvd.cluster.protocol import Config, Installed, Member, View, apply_changes, link, pending_in
from chaos_hvd.cluster.simnet import SafetyViolation, Simulation

SETTLE_S = 12.0


def test_views_and_changes():
    v = View(3, frozenset({"a", "b", "c"}), frozenset({("a", "b"), ("b", "c")}))
    assert View.from_msg(v.to_msg()) == v
    w = apply_changes(v, [("remove", "c"), ("add", "d"), ("link_up", "d", "a"),
                          ("link_down", "a", "b")])
    assert w == View(4, frozenset({"a", "b", "d"}), frozenset({("a", "d")}))
    assert pending_in(w, [("add", "d"), ("remove", "c"), ("link_up", "a", "d")]) == set()
    assert pending_in(w, [("link_up", "b", "d"), ("link_up", "b", "zz")]) == {("link_up", "b", "d")}
    assert v.quorum() == 2 and View(0, frozenset("abcd")).quorum() == 3
    with pytest.raises(ValueError):
        Config(heartbeat_s=1, lease_s=0.5)
    with pytest.raises(ValueError):
        pending_in(v, [("explode", "a")])


def test_slots_travel_with_the_add_and_leave_with_the_member():
    v = View(3, frozenset("ab"), slots=frozenset({("a", 2)}))
    w = apply_changes(v, [("add", "c", 4), ("slots", "b", 1)])
    assert dict(w.slots) == {"a": 2, "b": 1, "c": 4} and w.slots_of("c") == 4
    assert pending_in(w, [("add", "c", 4), ("slots", "b", 1), ("slots", "b", 3),
                          ("slots", "zz", 1)]) == {("slots", "b", 3)}
    x = apply_changes(w, [("remove", "c"), ("slots", "zz", 1)])
    assert dict(x.slots) == {"a": 2, "b": 1} and x.slots_of("c") is None


def test_founders_and_joiners_slots_are_agreed():
    """Founders propose their own slots right after forming; a joiner's come with its admission,
    so no installed view has the joiner without them."""
    slots = {"n0000": 2, "n0001": 1, "n0002": 4, "x1": 3}
    sim = Simulation(3, seed=7, slots_of=slots.get)
    sim.run_until(1.0)
    assert sim.settled() and dict(sim.agreed_view().slots) == {"n0000": 2, "n0001": 1, "n0002": 4}
    sim.schedule(1.0, ("join", "x1"))
    _settle(sim, 1.0)
    assert dict(sim.agreed_view().slots) == slots
    assert all(v.slots_of("x1") == 3 for v in sim.views.values() if "x1" in v.members)


def test_value_accepted_by_a_minority_does_not_block_a_two_member_view():
    """Soak counterexample: in view {n0001, n0002} the coordinator accepted removing n0002
    during a partition; after the heal n0002 must not be forced to re-propose that value (it
    refuses its own removal, so the epoch stalled and a joiner was never admitted). Both promises
    show it was never accepted by a quorum, so it cannot have been chosen."""
    sim = Simulation(3, seed=0)
    for t, a in [(1.0, ("crash", "n0000")), (3.5, ("partition", [["n0001"], ["n0002"]])),
                 (4.5, ("heal",)), (7.5, ("join", "j001"))]:
        sim.schedule(t, a)
    _settle(sim, 7.5)
    assert sim.agreed_view().members == {"n0001", "n0002", "j001"}


def test_forced_value_removing_a_live_node_is_accepted_after_the_guard():
    """n0002 dies while n0000 | n0001 are cut apart: each accepts its own view without the
    other. After the heal Paxos forces the newer of the two on the next proposer, and the node
    it removes is alive. Refusing it (as acceptors do with fresh removals of live nodes) stalled
    the epoch for good; acceptors now stop backing leases and accept after suspect_after_s.
    (With some timings the forced view keeps dead n0002 and drops live n0001: two members, one
    dead, is then a real loss of majority; not this seed.)"""
    sim = Simulation(3, seed=1)
    for t, a in [(1.0, ("crash", "n0002")), (1.0, ("partition", [["n0000"], ["n0001"]])),
                 (2.5, ("heal",)), (3.5, ("join", "j001"))]:
        sim.schedule(t, a)
    _settle(sim, 3.5)                        # safety is checked after every event meanwhile
    assert sim.agreed_view().members == {"n0000", "n0001", "j001"}


def test_a_stale_suspicion_of_a_former_coordinator_is_dropped():
    """Soak counterexample (safety): the majority removed coordinator n0000 during a partition,
    so n0001 (cut off too) became coordinator and members suspected it; after the heal n0000
    rejoined as coordinator. A member still held its old suspicion of n0001 and, proposing in
    turn, removed it as a plain member while n0000 was granting it leases: two training groups.
    Suspicions now end when the suspect is no longer the node one watches."""
    def ids(*nums):
        return [f"n{i:04d}" for i in nums]
    small = ids(0, 1, 2, 5, 7, 9, 10, 12, 14, 20, 26, 30, 31, 34, 36, 40, 41)
    sim = Simulation(42, seed=1346)
    for t, a in [(3.341, ("partition", [small, sorted(set(ids(*range(42))) - set(small))])),
                 (5.528, ("heal",)),
                 (8.528, ("partition", [ids(2, 30, 40), sorted(set(ids(*range(42))) -
                                                            set(ids(2, 30, 40)))])),
                 (10.97, ("heal",))]:
        sim.schedule(t, a)
    _settle(sim, 10.97)                      # SafetyViolation raised here before the fix
    assert sim.agreed_view().members == set(ids(*range(42)))


def test_a_joiner_that_leaves_before_admission_leaves_once_admitted():
    """Soak counterexample: j001 asked to leave 15 ms after its join request, before the view
    with it existed; it was admitted anyway and stayed a member that never trains."""
    sim = Simulation(3, seed=4)
    for t, a in [(1.0, ("join", "j001")), (1.0, ("join", "j002")), (1.015625, ("leave", "j001"))]:
        sim.schedule(t, a)
    _settle(sim, 1.1)
    assert sim.agreed_view().members == {"n0000", "n0001", "n0002", "j002"}


def test_unknown_message_type_is_an_error():
    m = Member("a", View(0, frozenset("ab")))
    with pytest.raises(ValueError, match="unknown message type"):
        m.deliver("b", {"type": "pwn"}, 0.0)


def _settle(sim, t):
    if sim.groups:
        sim.schedule(t, ("heal",))
    sim.run_until(t + SETTLE_S)
    assert sim.settled(), {n: sim.nodes[n].view for n in sorted(sim.live())}


def test_crash_of_the_coordinator_while_it_proposes():
    sim = Simulation(5, seed=3)
    sim.run_until(1.0)
    sim.schedule(1.0, ("join", "n0100"))
    sim.schedule(1.002, ("crash", "n0000"))      # the coordinator, mid-proposal
    _settle(sim, 1.1)
    assert sim.agreed_view().members == {"n0001", "n0002", "n0003", "n0004", "n0100"}


def test_simultaneous_joins_and_a_failure_converge_to_one_view():
    sim = Simulation(7, seed=4)
    sim.run_until(1.0)
    for t, a in [(1.0, ("join", "x1")), (1.0, ("join", "x2")), (1.0, ("crash", "n0003")),
                 (1.001, ("link_down", "n0001", "n0002")), (1.001, ("leave", "n0005"))]:
        sim.schedule(t, a)
    _settle(sim, 1.1)
    v = sim.agreed_view()
    assert v.members == {"n0000", "n0001", "n0002", "n0004", "n0006", "x1", "x2"}
    assert ("n0001", "n0002") not in v.links and ("n0000", "n0001") in v.links


def test_partition_minority_stops_training_majority_goes_on_then_heals():
    sim = Simulation(5, seed=5)
    sim.run_until(1.0)
    sim.schedule(1.0, ("partition", [["n0000", "n0001"], ["n0002", "n0003", "n0004"]]))
    # the majority installs its view at ~3.9 s; leases need one heartbeat round of the new epoch
    sim.run_until(4.3)
    assert not sim.nodes["n0000"].can_train() and not sim.nodes["n0001"].can_train()
    majority = [sim.nodes[n] for n in ("n0002", "n0003", "n0004")]
    assert all(m.can_train() for m in majority)
    assert {m.view.members for m in majority} == {frozenset({"n0002", "n0003", "n0004"})}
    _settle(sim, 4.3)                         # the cut-off pair rejoins after the heal
    assert sim.agreed_view().members == frozenset(f"n000{i}" for i in range(5))


def test_even_split_makes_no_progress_and_nobody_trains():
    sim = Simulation(4, seed=6)
    sim.run_until(1.0)
    sim.schedule(1.0, ("partition", [["n0000", "n0001"], ["n0002", "n0003"]]))
    sim.run_until(5.0)
    assert not any(m.can_train() for m in sim.nodes.values())
    assert max(sim.views) == 0


@st.composite
def scenarios(draw):
    n = draw(st.integers(3, 64))
    seed = draw(st.integers(0, 2**31))
    loss = draw(st.sampled_from([0.0, 0.0, 0.01, 0.05]))
    budget = (n - 1) // 2            # removals the initial majority can always absorb
    t, actions, live, joined = 1.0, [], [f"n{i:04d}" for i in range(n)], 0
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["crash", "leave", "join", "partition", "link"]))
        t += draw(st.floats(0.0, 3.0))
        if kind in ("crash", "leave") and budget > 0 and len(live) > 2:
            victim = draw(st.sampled_from(sorted(live)))
            live.remove(victim)
            budget -= 1
            actions.append((t, (kind, victim)))
            t += 2.5                 # let the view shrink before the next removal
        elif kind == "join":
            joined += 1
            name = f"j{joined:03d}"
            live.append(name)
            actions.append((t, ("join", name)))
        elif kind == "partition" and len(live) >= 2:
            cut = draw(st.integers(1, len(live) - 1))
            order = draw(st.permutations(sorted(live)))
            actions.append((t, ("partition", [list(order[:cut]), list(order[cut:])])))
            t += draw(st.floats(0.5, 4.0))
            actions.append((t, ("heal",)))
            t += 3.0                 # partitions may remove the cut-off side: let it rejoin
        elif kind == "link" and len(live) >= 2:
            a, b = draw(st.permutations(sorted(live)))[:2]
            actions.append((t, (draw(st.sampled_from(["link_down", "link_up"])), a, b)))
    return n, seed, loss, actions, t


def _slots(node: str) -> int | None:
    """Some hosts advertise worker slots (1-3), some do not: mixed, like a real edge cluster."""
    k = sum(map(ord, node)) % 4
    return k or None


def _run(n, seed, loss, actions, t_end):
    sim = Simulation(n, seed=seed, loss=loss, slots_of=_slots)
    for t, a in actions:
        sim.schedule(t, a)
    sim.run_until(t_end + SETTLE_S)          # check_safety after every event
    return sim


# CI runs 12 fixed examples; before changing the protocol, soak it with fresh random ones:
#   CHAOS_SOAK_EXAMPLES=500 .venv/bin/python -m pytest tests/test_protocol.py -k random
# (a failure prints the scenario: n, seed, loss, actions -- enough to replay it)
SOAK = int(os.environ.get("CHAOS_SOAK_EXAMPLES", "0"))


@pytest.mark.slow
@settings(max_examples=SOAK or 12, deadline=None, derandomize=not SOAK, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_random_scenarios_are_safe_converge_and_reproduce(scenario):
    n, seed, loss, actions, t_end = scenario
    sim = _run(n, seed, loss, actions, t_end)
    assert sim.settled(), (actions, {k: sim.nodes[k].view for k in sorted(sim.live())})
    again = _run(n, seed, loss, actions, t_end)
    assert again.agreed_view() == sim.agreed_view()
    assert again.stats.messages == sim.stats.messages


def test_safety_check_catches_two_groups():
    """The checker itself: two nodes training in different groups must be reported."""
    sim = Simulation(3, seed=1)
    sim.run_until(1.0)
    v1 = View(1, frozenset({"n0000", "n0001"}))
    sim.views[1] = v1
    sim.nodes["n0000"]._set_view(v1)
    sim.nodes["n0000"].lease_heard = {"n0001": sim.now}
    sim.nodes["n0002"].lease_until = sim.now + 1
    with pytest.raises(SafetyViolation, match="two training groups"):
        sim.check_safety()


def test_install_outputs_name_previous_view():
    m = Member("a", View(0, frozenset("ab")))
    out = m.deliver("b", {"type": "commit", "view": View(1, frozenset("abc")).to_msg()}, 1.0)
    inst = [o for o in out if isinstance(o, Installed)]
    assert inst and inst[0].previous == View(0, frozenset("ab")) and link("b", "a") == ("a", "b")


def test_an_observer_learns_its_change_from_a_quorum_of_accepteds_before_the_commit():
    """A member that forwarded a change is named in the accept; the acceptors send it their
    accepted too, and it installs the view once a quorum (itself included) accepted the ballot
    it accepted -- one hop before the commit, which then changes nothing. Accepteds for a
    ballot it did not accept teach it nothing. The commit goes to it first."""
    ids = "abcde"
    mesh = frozenset(link(x, y) for x in ids for y in ids if x < y)
    m = {i: Member(i, View(1, frozenset(ids), mesh)) for i in ids}

    def sends(out, kind):
        return [o for o in out if not isinstance(o, Installed) and o.msg["type"] == kind]

    fwd = m["c"].observe(("link_down", "c", "d"), 1.0)
    assert [(o.dst, o.msg["type"]) for o in fwd] == [("a", "changes")]
    out = m["a"].deliver("c", fwd[0].msg, 1.001)
    accept = sends(out, "accept")[0].msg
    assert accept["notify"] == ["c"] and {o.dst for o in sends(out, "accept")} == set("bcde")
    # an outsider's accepteds before c accepted anything: nothing learnt
    assert m["c"].deliver("b", {"type": "accepted", "epoch": 2, "ballot": [0, "a"]}, 1.002) == []
    assert [o.dst for o in m["c"].deliver("a", accept, 1.003)] == ["a"]   # not to itself
    replies = {x: sends(m[x].deliver("a", accept, 1.004), "accepted") for x in "bd"}
    assert all(sorted(o.dst for o in r) == ["a", "c"] and r[0].msg is r[1].msg
               for r in replies.values())                                  # one message, two
    assert m["c"].deliver("b", replies["b"][0].msg, 1.005) == []          # c, b: no quorum yet
    out = m["c"].deliver("d", replies["d"][0].msg, 1.006)                  # c, b, d: 3 of 5
    installed = [o for o in out if isinstance(o, Installed)]
    assert installed and installed[0].view.epoch == 2 and ("c", "d") not in installed[0].view.links
    assert m["c"].view == installed[0].view
    # the coordinator commits the same view, to the observer first; c ignores it
    out = m["a"].deliver("b", replies["b"][0].msg, 1.007)
    out += m["a"].deliver("d", replies["d"][0].msg, 1.008)
    commits = sends(out, "commit")
    assert commits and commits[0].dst == "c" and View.from_msg(commits[0].msg["view"]) == m["c"].view
    assert m["c"].deliver("a", commits[0].msg, 1.009) == []


def test_observations_of_one_period_go_to_the_coordinator_in_one_message():
    mesh = frozenset(link(x, y) for x in "abcd" for y in "abcd" if x < y)
    m = Member("c", View(1, frozenset("abcd"), mesh))
    out = m.observe_all([("link_down", "c", "a"), ("link_down", "c", "b"),
                         ("link_down", "c", "d"), ("link_up", "c", "d")], 1.0)
    assert [(o.dst, sorted(map(tuple, o.msg["changes"]))) for o in out] == [
        ("a", [("link_down", "c", "a"), ("link_down", "c", "b"), ("link_down", "c", "d")])]


def test_a_joiner_asks_the_lowest_seed_first_then_every_seed():
    j = Member("z", None, Config(), seeds=["c", "a", "b"])
    first = j.tick(1.0)
    again = j.tick(1.0 + 3 * Config().heartbeat_s)
    assert [o.dst for o in first] == ["a"] and [o.dst for o in again] == ["a", "b", "c"]
    assert all(o.msg["type"] == "join" for o in first + again)


def test_a_member_that_missed_views_asks_the_sender_of_a_newer_heartbeat():
    """Random-soak counterexample: after a partition healed, the minority's 7 members still held
    the epoch before the one the majority installed (its commit was lost to them, and their own
    coordinator had been removed), so they could not vote on the next epoch; the majority alone
    was one short of a quorum and its proposers duelled for good. A member now answers a
    heartbeat of a newer epoch with one of its own, and gets the newer view back."""
    old, new = View(5, frozenset("abc")), View(6, frozenset("bc"))
    lagging, coordinator = Member("c", old), Member("b", new)
    ask = lagging.deliver("b", {"type": "heartbeat", "epoch": 6, "lease": True}, 1.0)
    assert [(o.dst, o.msg) for o in ask] == [("b", {"type": "heartbeat", "epoch": 5})]
    answer = coordinator.deliver("c", ask[0].msg, 1.001)
    out = lagging.deliver("b", answer[0].msg, 1.002)
    assert lagging.view == new and any(isinstance(o, Installed) for o in out)
    side = ["n0000", "n0004", "n0011", "n0017", "n0003", "n0007", "n0002", "n0010"]
    sim = _run(19, 822, 0.05, [
        (3.965, ("link_up", "n0014", "n0007")), (6.531, ("crash", "n0009")),
        (9.831, ("partition", [side, sorted({f"n{i:04d}" for i in range(19)} - set(side))])),
        (12.568, ("heal",))], 15.568)
    assert sim.settled()
