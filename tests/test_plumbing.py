"""The shared plumbing: event records, signing, JSON-line requests, waiting, located YAML, units,
CI suite files and the CLIs' argument checks."""

import glob
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from chaos_hvd import events as ev
from chaos_hvd import jsonline, signing
from chaos_hvd.errors import (ConfigError, EventLogError, ForgedMessage, RequestError,
                              ServiceUnavailable, WaitTimeout)
from chaos_hvd.units import UnitError, parse_rate_bps, parse_time_s
from chaos_hvd.waiting import wait_until
from chaos_hvd.yamldoc import Reader, load_file, load_yaml
from ci.suite import SuiteError, load_suite, parse_suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- event records

def _step(**kw):
    return ev.Step(**{"rank": 0, "size": 2, "step": 3, "epoch": 0, "loss": 1.5, "lr": 0.1, **kw})


def test_event_log_round_trip_keeps_types_and_context(tmp_path):
    path = str(tmp_path / "events.jsonl")
    log = ev.EventLog(path, source="train", agent="10.0.0.1")
    log.write(_step())
    log.write(ev.Suspect(node="10.0.0.2", epoch=4))
    log.write(ev.Sync(rank=1, strategy="chaos", size=2, role="needer", version=3, target=0,
                      state_bytes=10, sources=[0], needers=[1], transfer_bytes_total=10,
                      bytes_per_source={0: 10}))
    got = ev.read_events(path)
    assert [type(r) for r in got] == [ev.Step, ev.Suspect, ev.Sync]
    assert got[0].source == "train" and got[1].agent == "10.0.0.1"   # context fills its fields
    assert got[2].bytes_per_source == {0: 10}                          # ranks stay ints
    assert all(r.t_mono > 0 and r.pid == os.getpid() for r in got)
    assert ev.read_events(path, ev.Step, ev.Suspect) == got[:2]


def test_a_renamed_or_retyped_field_fails_loudly(tmp_path):
    line = msgspec.json.encode(_step())
    renamed = line.replace(b'"step":', b'"stp":')     # a step record needs its step (only)
    retyped = line.replace(b'"step":3', b'"step":"3"')
    for bad in (renamed, retyped, b'{"event":"nonsense"}', b"[1,2]", b"not json"):
        with pytest.raises(EventLogError):
            ev.decode(bad)
    path = tmp_path / "e.jsonl"
    path.write_bytes(line + b"\n" + renamed + b"\n")
    with pytest.raises(EventLogError, match=r"e.jsonl:2"):
        ev.read_events(str(path))


def test_unknown_fields_are_ignored_so_old_readers_read_new_logs():
    line = msgspec.json.encode(_step())[:-1] + b',"added_later":1}'
    assert ev.decode(line).step == 3


def test_tail_events_skips_torn_lines_and_keeps_the_partial_one(tmp_path):
    path = tmp_path / "live.jsonl"
    whole = msgspec.json.encode(_step(step=1)) + b"\n"
    path.write_bytes(whole + b"{garbage\n" + whole[:10])
    records, offset, partial = ev.tail_events(str(path), 0)
    assert [r.step for r in records] == [1] and partial == whole[:10]
    with open(path, "ab") as f:
        f.write(whole[10:])
    records, _, partial = ev.tail_events(str(path), offset, partial)
    assert [r.step for r in records] == [1] and partial == b""


# ---------------------------------------------------------------- signing

@settings(max_examples=60, deadline=None)
@given(fields=st.dictionaries(st.text(min_size=1, max_size=8),
                              st.one_of(st.integers(), st.text(max_size=8), st.booleans()),
                              min_size=1, max_size=5),
       key=st.binary(min_size=16, max_size=32))
def test_signed_fields_verify_and_any_change_is_forged(fields, key):
    fields.pop("mac", None)
    if not fields:
        return
    msg = signing.sign_fields(key, fields)
    signing.check_fields(key, msg)
    name = sorted(fields)[0]
    altered = dict(msg, **{name: [msg[name]]})
    with pytest.raises(ForgedMessage):
        signing.check_fields(key, altered)
    with pytest.raises(ForgedMessage):
        signing.check_fields(key + b"x", msg)


@pytest.mark.parametrize("mac", [None, 7, "zz", "é" * 64, "00" * 32, b"\x00" * 32])
def test_bad_macs_are_forged_not_tracebacks(mac):
    with pytest.raises(ForgedMessage):
        signing.check_fields(b"k" * 32, {"op": "x", "mac": mac})
    with pytest.raises(ForgedMessage):
        signing.check_fields(b"k" * 32, {"op": math.nan, "mac": "00"})


# ---------------------------------------------------------------- JSON-line requests

@pytest.mark.parametrize("line", [b"x" * (jsonline.MAX_LINE_BYTES + 1), b"[1]", b"nope",
                                  b"[" * 100_000, b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
                                  b"\xff\xfe"])
def test_bad_request_lines_are_typed_errors(line):
    with pytest.raises(RequestError):
        jsonline.decode(line)


def _walk_depth(obj):
    """The plain definition, to check the fast one against."""
    if isinstance(obj, dict):
        return 1 + max(map(_walk_depth, obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max(map(_walk_depth, obj), default=0)
    return 0


_json = st.recursive(st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\n', max_size=4)
                     | st.text(max_size=3),
                     lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=3), kids, max_size=3), max_leaves=40)


@given(_json, st.integers(1, 8))
def test_text_depth_is_the_nesting_depth_up_to_the_limit(obj, limit):
    """Strings full of brackets, quotes and escapes must not count."""
    text = json.dumps(obj).encode()
    assert jsonline.text_depth(text, limit) == min(_walk_depth(obj), limit + 1)


@pytest.mark.parametrize("depth", [jsonline.MAX_DEPTH, jsonline.MAX_DEPTH + 1])
def test_nesting_at_the_limit_passes_one_more_is_refused(depth):
    line = (b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")
    wide = b'{"b":[' + b",".join([b"[1]"] * 50) + b"],"  # many opens, shallow: walked
    for text in (line, wide + line[1:]):
        if depth <= jsonline.MAX_DEPTH:
            assert jsonline.decode(text)
        else:
            with pytest.raises(RequestError, match="nested deeper"):
                jsonline.decode(text)


def test_request_round_trip_and_error_envelope(tmp_path):
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen()

    def serve(n):
        for _ in range(n):
            conn, _ = srv.accept()
            with conn:
                req = jsonline.decode(conn.makefile("rb").readline())
                reply = jsonline.ok(echo=req["x"]) if "x" in req else jsonline.error("no x")
                conn.sendall(jsonline.encode(reply))
    t = threading.Thread(target=serve, args=(2,), daemon=True)
    t.start()
    assert jsonline.request(path, {"x": 5})["echo"] == 5
    with pytest.raises(ServiceUnavailable, match="no x"):
        jsonline.request(path, {"y": 1})
    t.join(5)
    srv.close()
    with pytest.raises(ServiceUnavailable):
        jsonline.request(str(tmp_path / "none.sock"), {"x": 1}, 0.5)


# ---------------------------------------------------------------- waiting

def test_wait_until_returns_the_value_or_says_what_it_waited_for():
    t0 = time.monotonic()
    assert wait_until(lambda: time.monotonic() - t0 > 0.05 and "done", 2, interval_s=0.01) == "done"
    with pytest.raises(WaitTimeout, match="the moon"):
        wait_until(lambda: None, 0.05, "the moon", interval_s=0.01)
    with pytest.raises(WaitTimeout, match="it exited"):
        wait_until(lambda: None, 10, "x", give_up=lambda: "it exited")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return True
    assert wait_until(flaky, 2, interval_s=0.001, retry_on=(ConnectionError,))


# ---------------------------------------------------------------- located YAML and units

def test_yaml_merge_then_override_is_not_a_duplicate_but_a_repeated_key_is():
    doc = load_yaml("base: &b {rate: 1, delay: 2}\nlink:\n  <<: *b\n  rate: 5\n", "t.yaml",
                    ConfigError)
    assert doc["link"] == {"rate": 5, "delay": 2}
    with pytest.raises(ConfigError, match=r"t.yaml:2:1: duplicate key 'a'"):
        load_yaml("a: 1\na: 2\n", "t.yaml", ConfigError)


@pytest.mark.parametrize("text,match", [("[" * 5000, "nested too deeply|invalid YAML"),
                                        ("? [a, b]\n: 1\n", "invalid YAML"),
                                        ("a: [\n", "invalid YAML")])
def test_hostile_yaml_is_a_located_error(text, match):
    with pytest.raises(ConfigError, match=match):
        load_yaml(text, "t.yaml", ConfigError)


def test_files_that_are_not_small_utf8_text_are_refused(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(str(binary), ConfigError)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file("/dev/zero", ConfigError)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_file(str(big), ConfigError)
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(str(tmp_path / "missing.yaml"), ConfigError)


def test_reader_reports_the_location_of_a_wrong_key():
    r = Reader(load_yaml("a:\n  rat: 1\n", "f.yaml", ConfigError), "", "f.yaml", ConfigError)
    with pytest.raises(ConfigError, match=r"f.yaml:2:8: a.rat: unknown key 'rat' \(did you mean "
                                          r"'rate'\?\)"):
        r.child("a").check_keys(("rate", "delay"))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1e999Mbit", "nanMbit"])
def test_units_refuse_nan_and_infinity(value):
    with pytest.raises(UnitError):
        parse_rate_bps(value)
    with pytest.raises(UnitError):
        parse_time_s(value)


# ---------------------------------------------------------------- CI suite files

def test_every_shipped_suite_parses():
    suites = glob.glob(os.path.join(REPO, "ci", "suites", "*.yaml"))
    assert suites
    for path in suites:
        s = load_suite(path)
        assert os.path.exists(os.path.join(REPO, s.topology)) and s.expect


@pytest.mark.parametrize("text,match", [
    ("topology: t.yaml\n", "missing required key 'name'"),
    ("name: x\ntopology: t.yaml\nexpect: {world_size: [1]}\n", r"3:\d+: expect.world_size: unknown"),
    ("name: x\ntopology: t.yaml\ntimeout_s: .nan\n", "timeout_s: must be a positive number"),
    ("name: x\ntopology: t.yaml\nhorovod: {min_np: 0}\n", "min_np: must be a positive integer"),
    ("- a\n", "must be a mapping"),
    ("name: x\ntopology: t.yaml\nlauncher: mpirun\n", "launcher: must be one of"),
    ("name: x\ntopology: t.yaml\nexpect: {max_stall_s: .inf}\n", "max_stall_s: must be a positive"),
    ("name: x\ntopology: t.yaml\nexpect: {standbys_joined: 0}\n", "standbys_joined: must be a pos"),
])
def test_malformed_suites_are_located_errors(text, match):
    with pytest.raises(SuiteError, match=match):
        parse_suite(text, "s.yaml")


# ---------------------------------------------------------------- CLI usage errors

def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "chaos_hvd.cluster.cli", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args", [
    ["agent", "--id", "127.0.0.1:1", "--secret-file", "/nonexistent/secret"],
    ["agent", "--id", "127.0.0.1:1", "--port", "99999"],
    ["agent", "--id", "127.0.0.1:1", "--heartbeat", "nan"],
    ["discover", "--socket", "/x", "--timeout", "inf"],
    ["discover", "--socket", "/x", "--slots", "0"],
])
def test_chaos_hvd_bad_usage_exits_2_with_one_message(args):
    out = _cli(*args)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and out.stderr.strip()


def test_chaos_hvd_help_shows_defaults():
    out = _cli("agent", "--help")
    assert out.returncode == 0 and "(default: " in out.stdout
