"""CI suite files: which topology, schedule, training run and invariants. Pure parsing.

File shape (every key checked; mistakes are :class:`SuiteError` with ``file:line:column``)::

    name: join-crash-flap
    topology: ci/topologies/edge4.yaml        # relative to the repository
    faults: ci/faults/join-crash-flap.yaml    # optional
    agents: {heartbeat: 0.1}                  # optional: discovery from cluster agents
    horovod: {min_np: 2, gloo_timeout_s: 20}  # optional
    launcher: chaos-hvdrun                    # optional: horovodrun (default) or chaos-hvdrun
    train: [--model, medium, --epochs, 2]     # arguments of examples/train_elastic.py
    timeout_s: 420
    expect: {faults: [...], world_sizes: [...], joiner_min_sources: 2, ...}   # see ci.checks
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from chaos_hvd.yamldoc import Reader, load_yaml, read_text
from testbed.errors import InputError
from testbed.topology import NAME_RE


class SuiteError(InputError):
    """A malformed CI suite file."""


EXPECT_KEYS = ("faults", "world_sizes", "joiner_min_sources", "joiner_bandwidth_known",
               "joiner_bandwidth_source", "identical_final", "agent_views", "standbys_joined",
               "max_stall_s", "max_recovery_s", "standby_min_sources", "recovery_from",
               "max_abort_after_view_s", "no_false_alarm", "source_lost_mid_pull")
FLAG_KEYS = ("joiner_bandwidth_known", "identical_final", "no_false_alarm",
             "source_lost_mid_pull")
LAUNCHERS = ("horovodrun", "chaos-hvdrun")
RECOVERY_KINDS = ("crash", "link_down", "partition", "pause")   # faults that stop a worker


@dataclass(frozen=True)
class Suite:
    name: str
    topology: str
    faults: str | None = None
    agents: dict[str, str] | None = None    # None: discovery from the testbed's host list
    min_np: int = 1
    gloo_timeout_s: int = 30
    train: tuple[str, ...] = ()
    timeout_s: float = 600.0
    expect: dict = field(default_factory=dict)
    launcher: str = "horovodrun"


def _positive_int(r: Reader, key: str, default: int) -> int:
    value = r.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        r.fail(f"must be a positive integer, got {value!r}", key)
    return value


def _string_list(r: Reader, key: str) -> list[str]:
    value = r.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) and
                                              not isinstance(v, bool) for v in value):
        r.fail("must be a list of strings", key)
    return [str(v) for v in value]


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    data = load_yaml(text, source, SuiteError)
    if data is None:
        raise SuiteError("file is empty", source)
    top = Reader(data, "", source, SuiteError)
    top.check_keys(("name", "topology", "faults", "agents", "horovod", "train", "timeout_s",
                    "expect", "launcher"))
    launcher = top.get("launcher", "horovodrun")
    if launcher not in LAUNCHERS:
        top.fail(f"must be one of {', '.join(LAUNCHERS)}, got {launcher!r}", "launcher")
    name = top.require("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        top.fail(f"name must match {NAME_RE.pattern}, got {name!r}", "name")
    paths = {}
    for key in ("topology", "faults"):
        value = top.require(key) if key == "topology" else top.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            top.fail(f"must be a path, got {value!r}", key)
        paths[key] = value
    agents = None
    if "agents" in top.data:
        agents = {} if top.get("agents") is None else top.child("agents").data
        if any(not isinstance(k, str) or isinstance(v, (dict, list)) for k, v in agents.items()):
            top.fail("agent options must be KEY: VALUE pairs", "agents")
        agents = {k: str(v) for k, v in agents.items()}
    horovod = top.child("horovod") if top.get("horovod") is not None else \
        Reader({}, "horovod", source, SuiteError)
    horovod.check_keys(("min_np", "gloo_timeout_s"))
    timeout = top.get("timeout_s", 600)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        top.fail(f"must be a positive number of seconds, got {timeout!r}", "timeout_s")
    expect = top.child("expect") if top.get("expect") is not None else \
        Reader({}, "expect", source, SuiteError)
    expect.check_keys(EXPECT_KEYS)
    for key in FLAG_KEYS:
        if key in expect.data and not isinstance(expect.data[key], bool):
            expect.fail(f"must be true or false, got {expect.data[key]!r}", key)
    for key in ("standbys_joined", "standby_min_sources"):
        if key in expect.data:
            _positive_int(expect, key, 1)
    if "recovery_from" in expect.data:
        kinds = _string_list(expect, "recovery_from")
        unknown = sorted(set(kinds) - set(RECOVERY_KINDS))
        if not kinds or unknown:
            expect.fail(f"must list fault kinds among {list(RECOVERY_KINDS)}", "recovery_from")
    for key in ("max_stall_s", "max_recovery_s", "max_abort_after_view_s"):
        limit = expect.get(key, 1.0)
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) \
                or not math.isfinite(limit) or limit <= 0:
            expect.fail(f"must be a positive number of seconds, got {limit!r}", key)
    return Suite(name, paths["topology"], paths["faults"], agents,
                 _positive_int(horovod, "min_np", 1), _positive_int(horovod, "gloo_timeout_s", 30),
                 tuple(_string_list(top, "train")), float(timeout), dict(expect.data), launcher)


def load_suite(path: str) -> Suite:
    return parse_suite(read_text(path, SuiteError, "suite"), path)
