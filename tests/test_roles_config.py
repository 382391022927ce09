"""Pure decisions: who serves, who needs which chunks; configuration parsing."""

import pytest
from hypothesis import given, settings, strategies as st

from chaos_hvd.state.config import BandwidthMap, ChaosConfig
from chaos_hvd.errors import ConfigError
from chaos_hvd.state.roles import RankInfo, decide, plan_transfers


def info(rank, version, chunks, host="h", digest=None):
    return RankInfo(rank, host, "127.0.0.1", 1000 + rank, version, digest or "|".join(chunks),
                    len(chunks) * 10, 10, tuple(chunks), "00")


def test_newest_version_wins_whatever_the_rank():
    infos = [info(0, 0, ["x", "y", "z"]), info(1, 5, ["a", "b", "c"]), info(2, 5, ["a", "b", "d"])]
    roles = decide(infos)
    assert roles.target == 1 and roles.version == 5
    assert roles.needs == {0: (0, 1, 2), 2: (2,)}  # rank 2 only lacks the last chunk
    assert roles.holders[0] == (1, 2) and roles.holders[2] == (1,)


def test_no_needers_means_no_transfer():
    infos = [info(r, 3, ["a", "b"]) for r in range(3)]
    roles = decide(infos)
    assert roles.needers == () and roles.transfer_bytes == 0
    assert plan_transfers(roles, infos, BandwidthMap(), "even") == {}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.lists(st.sampled_from("ab"), min_size=4, max_size=4)),
                min_size=1, max_size=6), st.sampled_from(["even", "optimal", "greedy", "single"]))
def test_plans_cover_every_needed_chunk_from_a_holder(ranks, algorithm):
    infos = [info(r, v, chunks, host=f"h{r % 2}") for r, (v, chunks) in enumerate(ranks)]
    roles = decide(infos)
    plans = plan_transfers(roles, infos, BandwidthMap.parse("default=100"), algorithm)
    for r, need in roles.needs.items():
        got = sorted(c for cs in plans[r].assigned.values() for c in cs) if need else []
        assert got == sorted(need)
        for src, cs in plans[r].assigned.items():
            assert all(src in roles.holders[c] and src != r for c in cs)
        # a needer planning only its own group gets the same plan
        mine = plan_transfers(roles, infos, BandwidthMap.parse("default=100"), algorithm, only=r)
        assert mine[r] == plans[r]


def test_bandwidth_spec_and_file(tmp_path):
    bw = BandwidthMap.parse("default=100, 10.0.0.1=78.3, 10.0.0.1>10.0.0.6=50, >10.0.0.6=300")
    assert bw.default_mbps == 100 and bw.hosts["10.0.0.1"] == 78.3
    assert bw.links[("10.0.0.1", "10.0.0.6")] == 50 and bw.ingress["10.0.0.6"] == 300
    f = tmp_path / "bw.yaml"
    f.write_text("default: 50\nhosts: {a: 10}\nlinks: {'a>b': 5}\ningress: {b: 7}\n")
    bw = BandwidthMap.parse(f"@{f}")
    assert (bw.default_mbps, bw.hosts, bw.links, bw.ingress) == (50, {"a": 10}, {("a", "b"): 5}, {"b": 7})


@pytest.mark.parametrize("spec, match", [
    ("a=fast", "cannot read rate"), ("a=-3", "cannot read rate"), ("a=0", "positive"),
    ("=5", "KEY"), ("a", "KEY"), (">b>=3", ">HOST"), (">=3", ">HOST"), ("a>=4", "A>B"),
    ("a=nan", "cannot read"), ("a=inf", "cannot read"), ("a=1e400", "out of range"),
    ("a=1e-300", "outside"), ("a=1e308", "outside"), ("a>b>c=5", "A>B"), ("a=b=5", "KEY"),
    ("a\x00b=5", "host name"), ("a b=5", "host name"), ("h/1=5", "host name"),
    (">h:1=5", "host name"), ("a>b c=5", "host name"), ("\u0663=5", "host name"),
])
def test_bad_bandwidth_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        BandwidthMap.parse(spec)


@pytest.mark.parametrize("text, match", [
    ("[1, 2", r"bw.yaml:\d+:\d+: invalid YAML"), ("- 1\n- 2\n", "mapping"),
    ("speed: 3\n", r"bw.yaml:1:\d+: speed: unknown key"), ("hosts: {a: x}\n", r"1:\d+: .*cannot read"),
    ("links: {ab: 3}\n", "A>B"), ("hosts: {a: true}\n", "rate"), ("default: .nan\n", "finite"),
    ("hosts: {[1]: 3}\n", "invalid YAML"), ("a: &x [*x]\n", "invalid YAML|unknown key"),
    ("hosts: {a b: 3}\n", r"bw.yaml:1:\d+: hosts.a b: .*not a host name"),
    ("links: {a>b/c: 3}\n", r"bw.yaml:1:\d+: .*not a host name"),
])
def test_bad_bandwidth_files(tmp_path, text, match):
    f = tmp_path / "bw.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        BandwidthMap.from_file(str(f))


@pytest.mark.parametrize("env, match", [
    ({"CHAOS_SYNC_STRATEGY": "teleport"}, "strategy"), ({"CHAOS_SCHEDULER": "magic"}, "scheduler"),
    ({"CHAOS_CHUNK_BYTES": "100"}, "multiple of 64"), ({"CHAOS_CHUNK_BYTES": "big"}, "integer"),
    ({"CHAOS_SYNC_STRATEGY": "checkpoint"}, "checkpoint_dir"),
    ({"CHAOS_PORT": "70000"}, "CHAOS_PORT: 70000 is outside"),
    ({"CHAOS_CHUNK_BYTES": str(2 ** 62)}, "CHAOS_CHUNK_BYTES: .* is outside 64"),
    ({"CHAOS_TRANSFER_TIMEOUT_S": "inf"}, "finite"), ({"CHAOS_TRANSFER_TIMEOUT_S": "nan"}, "finite"),
    ({"CHAOS_TRANSFER_TIMEOUT_S": "0"}, "CHAOS_TRANSFER_TIMEOUT_S: 0 is outside"),
    # one rule for numbers everywhere: what Python's int()/float() would also take is refused
    ({"CHAOS_TRANSFER_TIMEOUT_S": "1e-300"}, "outside"),
    ({"CHAOS_CHUNK_BYTES": "\u0663\u0663\u0663"}, "ASCII"), ({"CHAOS_CHUNK_BYTES": "6_4"}, "ASCII"),
    ({"CHAOS_PORT": "-0"}, "no sign"), ({"CHAOS_PORT": "\u00b2"}, "ASCII"),
    ({"CHAOS_TRANSFER_TIMEOUT_S": "\u0663"}, "ASCII"), ({"CHAOS_TRANSFER_TIMEOUT_S": "-0"}, ">= 0"),
    ({"CHAOS_BANDWIDTH": "h1=10Mbit,h1=20Mbit"}, "given twice"),
    ({"CHAOS_VERIFY": "maybe"}, "CHAOS_VERIFY"), ({"CHAOS_PEER_WATCH": "nein"}, "CHAOS_PEER_WATCH"),
])
def test_bad_env_config(env, match):
    with pytest.raises(ConfigError, match=match):
        ChaosConfig.from_env(env)


@pytest.mark.parametrize("raw, on", [("off", False), ("False", False), ("0 ", False), ("No", False),
                                     ("1", True), ("yes", True), ("ON", True), ("", True)])
def test_env_switches_are_read_strictly(raw, on):
    cfg = ChaosConfig.from_env({"CHAOS_VERIFY": raw, "CHAOS_PEER_WATCH": raw})
    assert cfg.verify is on and cfg.peer_watch is on


def test_env_config_defaults():
    cfg = ChaosConfig.from_env({})
    assert cfg.strategy == "chaos" and cfg.scheduler == "optimal" and cfg.bandwidth.empty
