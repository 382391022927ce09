"""Pure parts of the cluster monitor: probe schedule (edge colouring), link state with hysteresis,
measured-rate table and how measured rates become the scheduler's bandwidth map."""

from itertools import combinations

from hypothesis import given, settings, strategies as st

from chaos_hvd.state.config import BandwidthMap
from chaos_hvd.cluster.linkstate import LinkWatch, Rate, RateTable
from chaos_hvd.cluster.probe_plan import greedy_rounds, my_probes, probe_rounds

names = st.lists(st.sampled_from([f"n{i:02d}" for i in range(24)]), min_size=0, max_size=24,
                 unique=True)


@settings(max_examples=200, deadline=None)
@given(names, st.data())
def test_rounds_are_matchings_covering_every_edge_once(members, data):
    edges = data.draw(st.lists(st.sampled_from(list(combinations(sorted(members), 2)) or
                                               [("a", "b")]), unique=True))
    first = data.draw(st.lists(st.sampled_from(members or ["a"]), unique=True))
    rounds = greedy_rounds(edges, first)
    flat = [e for r in rounds for e in r]
    assert sorted(flat) == sorted(set(flat)) == sorted({tuple(sorted(e)) for e in edges})
    for r in rounds:
        nodes = [x for e in r for x in e]
        assert len(nodes) == len(set(nodes)), "a node in two probes at once"
    assert all(rounds), "no empty round"
    degree = {}
    for a, b in flat:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    assert len(rounds) <= max(2 * max(degree.values(), default=0) - 1, 0)   # greedy bound
    # the joiners' edges come first: each sits in a round no later than its rank among them
    first_edges = [e for e in sorted(flat) if set(e) & set(first)]
    where = {e: i for i, r in enumerate(rounds) for e in r}
    assert all(where[e] < len(first_edges) for e in first_edges)


def test_joiner_measured_first_and_leaders_are_lower_ids():
    rounds = probe_rounds(["a", "b", "c", "d"], first=["d"])
    assert {e for r in rounds[:3] for e in r if "d" in e} == {("a", "d"), ("b", "d"), ("c", "d")}
    assert my_probes(rounds, "d") == []          # d is the higher id of all its pairs
    assert sorted(p for _, p in my_probes(rounds, "a")) == ["b", "c", "d"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=60))
def test_link_watch_hysteresis(gaps):
    down_after, up_after = 0.3, 0.2
    w = LinkWatch(down_after, up_after)
    t, run_start = 0.0, 0.0
    last = None
    for g in gaps:
        t += g
        if last is not None and t - last > down_after:
            run_start = t
        if last is None:
            run_start = t
        w.pong("p", 0.001, t)
        last = t
        assert w.is_up("p", t) == (t - run_start >= up_after)
        assert not w.is_up("p", t + down_after + 1e-6)   # silence -> down
        assert w.is_up("p", t) == (t - run_start >= up_after)


def test_link_watch_states():
    w = LinkWatch(down_after_s=1.0, up_after_s=0.5)
    assert w.state("p", 0.0) is None                 # never asked: no opinion
    w.ping("p", 0.0)
    assert w.state("p", 0.9) is None                 # asked, not late yet
    w.pong("p", 0.001, 0.95)
    assert w.state("p", 1.2) is None                 # replies just began: not steady yet
    w.pong("p", 0.001, 1.5)
    assert w.state("p", 1.5) == "up"
    assert w.state("p", 2.6) == "down"               # silence
    w.pong("p", 0.001, 3.0)
    assert w.state("p", 3.1) is None                 # back, but not steady: no flip-flop
    w2 = LinkWatch(1.0, 0.5)
    w2.ping("q", 0.0)
    assert w2.state("q", 1.5) == "down"              # never answered since we began asking


def test_rate_table_newest_wins_and_restrict():
    rt = RateTable()
    assert rt.update("a", "b", Rate(50.0, 1.0, 10.0))
    assert not rt.update("a", "b", Rate(10.0, 1.0, 9.0))
    assert rt.merge([["a", "b", 70.0, None, 11.0], ["b", "c", 20.0, 2.0, 1.0]]) == 2
    assert rt.rates[("a", "b")].mbps == 70.0
    rt.restrict({"a", "b"})
    assert rt.rows() == [["a", "b", 70.0, None, 11.0]]


def test_measured_rates_override_static_figures():
    measured = BandwidthMap.from_agent_rates([["s1", "j", 78.0, 1.0, 1.0], ["s2", "j", 40.0, 1.0, 1.0],
                                               ["s1", "s2", 90.0, 1.0, 1.0]])
    assert measured.links[("s1", "j")] == 78.0 and measured.hosts == {"s1": 90.0, "s2": 40.0}
    static = BandwidthMap(100.0, {"s1": 10.0, "s3": 5.0}, {("s2", "j"): 1.0}, {"j": 300.0})
    m = measured.over(static)
    assert m.links[("s2", "j")] == 40.0 and m.hosts["s1"] == 90.0 and m.hosts["s3"] == 5.0
    assert m.ingress == {"j": 300.0} and m.default_mbps == 100.0
