"""The one rule per kind of value (chaos_hvd.rules) and the parsers that use it: chaos-hvdrun's
arguments, the cluster secret."""

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos_hvd.rules import (RuleError, check_host, parse_host_port, parse_host_slots, parse_int,
                             parse_number, parse_seconds)
from chaos_hvd.scaleout import args as hvdrun_args


@given(st.integers(0, 65535))
def test_canonical_integers_round_trip(n):
    assert parse_int(str(n), "x", 0, 65535) == n == parse_int(f" {n} ", "x", 0, 65535)


@pytest.mark.parametrize("text", ["\u0663", "\u00b2", "1_0", "-0", "+1", "0x10", "1e3", "", " ",
                                  "1.0", "9" * 41, True, 1.0, None])
def test_what_int_or_isdigit_would_take_is_not_a_count(text):
    with pytest.raises(RuleError):
        parse_int(text, "count", 0, 10 ** 50)


def test_signs_only_where_negative_values_are_allowed():
    assert parse_int("-3", "x", -5, 5) == -3 and parse_number("-0.5", "x", -1, 1) == -0.5
    with pytest.raises(RuleError):
        parse_number("-0", "x", 0, 1)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "1_0", "\u0663", "0x1p3", ""])
def test_numbers_are_finite_ascii_decimals(text):
    with pytest.raises(RuleError):
        parse_number(text, "x", -1e300, 1e300)


def test_durations_start_at_a_millisecond():
    assert parse_seconds("0.001", "t") == 0.001 and parse_seconds("0", "t", lo=0) == 0
    for bad in ("1e-300", "0", "0.0009"):
        with pytest.raises(RuleError):
            parse_seconds(bad, "t")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "w1", "edge-node_3.lab.example",
                                  "a" * 63])
def test_host_names(name):
    assert check_host(name, "host") == name


@pytest.mark.parametrize("name", ["", ":::", "h\u00e9", "a b", "a/b", "a:1", "-a", "a.", ".a",
                                  "a" * 64, ".".join(["a" * 60] * 5), "h\x00"])
def test_not_host_names(name):
    with pytest.raises(RuleError):
        check_host(name, "host")


def test_host_slots_and_ports():
    assert parse_host_slots("w1:4", "-H") == ("w1", 4) and parse_host_slots("w1", "-H") == ("w1", 1)
    assert parse_host_port("10.0.0.1:7001", "--id") == ("10.0.0.1", 7001)
    for bad in ("::::", "localhost:x", "h\u00e9:1", "w1:0", "w1:\u00b9"):
        with pytest.raises(RuleError):
            parse_host_slots(bad, "-H")
    for bad in ("127.0.0.1:70000", "127.0.0.1:0", "h:-1", "h"):
        with pytest.raises(RuleError):
            parse_host_port(bad, "--id")


def namespace(**kw):
    base = dict(command=["python", "train.py"], num_proc=2, min_num_proc=None, max_num_proc=None,
                hosts=None, hostfile=None, host_discovery_script=None)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("kw, match", [
    ({"command": []}, "no command"), ({"command": ["  "]}, "no command"),
    ({"num_proc": 0}, "-np"), ({"num_proc": -1}, "-np"), ({"num_proc": 10 ** 20}, "-np"),
    ({"min_num_proc": 4, "max_num_proc": 2}, "more than"), ({"hosts": "::::"}, "-H"),
    ({"hosts": "localhost:x"}, "-H"), ({"hosts": "h\u00e9:1"}, "-H"), ({"hosts": ""}, "-H"),
    ({"hostfile": "/missing/hostfile"}, "No such file"), ({"hostfile": "/dev/zero"}, "regular"),
])
def test_chaos_hvdrun_refuses_what_horovod_would_mishandle(kw, match):
    with pytest.raises(RuleError, match=match):
        hvdrun_args.check(namespace(**kw))


def test_hostfiles_are_read_by_the_rules(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("# edge nodes\nw1 slots=2\n\nw2 slots=1  # the slow one\n")
    hvdrun_args.check(namespace(hostfile=str(f)))
    assert hvdrun_args.hostfile(str(f)) == [("w1", 2), ("w2", 1)]
    for text in ("w1\n", "w1 slots=x\n", "w\u00e9 slots=1\n", "# nothing\n"):
        f.write_text(text)
        with pytest.raises(RuleError):
            hvdrun_args.hostfile(str(f))


def test_chaos_hvdrun_without_a_command_prints_no_secret():
    """Horovod ran `env` then, which printed CHAOS_JOB_SECRET with the rest."""
    import os
    import subprocess
    import sys
    pytest.importorskip("horovod.runner")
    done = subprocess.run([sys.executable, "-m", "chaos_hvd.scaleout.cli", "-np", "1", "-H",
                           "localhost:1"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, CHAOS_JOB_SECRET="ab" * 32))
    assert done.returncode == 2 and "no command" in done.stderr
    assert "ab" * 32 not in done.stdout + done.stderr


def test_a_cluster_secret_of_white_space_is_no_secret(monkeypatch, tmp_path):
    from chaos_hvd.cluster import cli
    monkeypatch.setenv("CHAOS_CLUSTER_SECRET", " " * 20)
    with pytest.raises(ValueError, match="at least 16"):
        cli._secret(argparse.Namespace(secret_file=None))
    f = tmp_path / "secret"
    f.write_text(" " * 20 + "\n")
    with pytest.raises(ValueError, match="at least 16"):
        cli._secret(argparse.Namespace(secret_file=str(f)))


@pytest.mark.parametrize("node, ok", [("w1", True), ("10.0.0.4", True), ("10.0.0.4:7001", True),
                                      ("127.0.0.1:70000", False), ("127.0.0.1:0", False),
                                      ("h:\u00b2", False), ("::1", True), ("[::1]:7001", True),
                                      ("[::1]:99999", False), ("h:", False), (":7001", False),
                                      ("[::1]", True), ("[w1]:7001", False), ("1:2:3", False),
                                      ("a b", False), ("x" * 256, False), ("[::1]7001", False),
                                      ("h\u0663:1", False), ("w1:\u0663", False)])
def test_agent_ids_range_check_their_port(node, ok):
    from chaos_hvd.cluster import wire
    from chaos_hvd.cluster.agent import split_id
    from chaos_hvd.rules import RuleError
    assert wire.is_id(node) is ok
    if ok:                          # the agent reads an id by the same rule it was checked by
        host, port = split_id(node, 7471)
        assert host in node and 1 <= port <= 65535
    else:
        with pytest.raises(RuleError):
            split_id(node, 7471)


def test_agent_options_and_local_api_changes_refuse_nonsense():
    from chaos_hvd.cluster import wire
    from chaos_hvd.cluster.agent import AgentOptions
    from chaos_hvd.errors import MalformedMessage
    for bad in (dict(id="127.0.0.1:70000", members=("a",)),
                dict(id="a", members=("a", "b:0")), dict(id="a", seeds=("x y",))):
        with pytest.raises(ValueError, match="agent id"):
            AgentOptions(secret=b"s" * 16, **bad)
    for change in (["add", "127.0.0.1:0", 1], ["link_up", "a", "a"], ["link_down", "b", "b"]):
        with pytest.raises(MalformedMessage):
            wire.validate_change(change)
    wire.validate_change(["link_up", "a", "b"])


def test_cli_waits_are_bounded():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "chaos_hvd.cluster.cli", "discover", "--socket",
                           "/nonexistent.sock", "--timeout", "1e308"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
