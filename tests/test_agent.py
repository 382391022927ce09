"""Real agent processes on loopback: forming, a join announced by the joiner's agent, a graceful
leave, a SIGKILLed agent detected by heartbeats, monitor observations, Horovod discovery output,
and hostile datagrams (forged, replayed, oversized, malformed, stale) that change nothing."""

import json
import socket
import subprocess
import sys
import time

import pytest

from chaos_hvd import events as ev
from chaos_hvd.cluster import wire
from chaos_hvd.events import read_events
from harness.local_cluster import LocalCluster, free_port
from chaos_hvd.cluster.protocol import View

FAST = ["--heartbeat", "0.05", "--lease", "0.2", "--suspect", "0.6", "--propose-timeout", "0.15",
        "--retry", "0.15", "--ping", "0.1", "--link-down", "0.4", "--link-up", "0.2",
        "--probe-seconds", "0.05", "--probe-refresh", "5"]


def cli(*args, timeout=10):
    return subprocess.run([sys.executable, "-m", "chaos_hvd.cluster.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster(str(tmp_path), 3, FAST) as c:
        c.wait_members(c.ids, set(c.ids))
        yield c


def test_join_leave_crash_and_discovery(cluster):
    c = cluster
    a, b, d = c.ids
    joiner = f"127.0.0.1:{free_port()}"
    c.start(joiner, seeds=c.ids, extra=["--slots", "3"])
    everyone = set(c.ids) | {joiner}
    c.wait_members(c.ids + [joiner], everyone)
    assert any(isinstance(e, ev.JoinRequest) and e.node == joiner for e in c.events())
    # the joiner's slots arrived with its admission: no view ever had it without them
    adds = [e for e in c.events(ev.Install) if joiner in e.members]
    assert adds and all(e.slots.get(joiner) == 3 for e in adds), adds[:1]

    # Horovod's host:slots form; a host that advertised none takes --slots, or prints bare
    out = cli("discover", "--socket", f"{c.dir}/*.sock", "--slots", "2")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["127.0.0.1:2"] * 3 + ["127.0.0.1:3"]
    out = cli("discover", "--socket", f"{c.dir}/*.sock")
    assert sorted(out.stdout.split()) == ["127.0.0.1"] * 3 + ["127.0.0.1:3"]
    out = cli("discover", "--socket", f"{c.dir}/*.sock", "--keep-port")
    assert set(out.stdout.split()) == set(c.ids) | {joiner + ":3"}

    # the joiner's links get measured (its pairs come first in the probe schedule)
    c.wait(lambda: {tuple(r[:2]) for r in json.loads(cli(
        "status", "--socket", c.socket(joiner)).stdout)["rates"]} >= {(a, joiner), (joiner, a)},
        10, "joiner's links measured")

    # graceful leave: the agent leaves the view, then exits 0
    assert cli("leave", "--socket", c.socket(joiner)).returncode == 0
    c.wait_members(c.ids, set(c.ids))
    assert c.procs[joiner].wait(5) == 0

    # crash: SIGKILL; the coordinator's heartbeats detect it; the majority keeps training
    killed_at = c.kill(d)
    epoch = c.wait_members([a, b], {a, b}, timeout_s=5)
    installs = [e for e in c.events(ev.Install) if e.agent == a and d in e.removed]
    assert installs and installs[0].epoch == epoch
    # detected by whoever watches d (the coordinator, or the members if d was the coordinator)
    detect = min((e for e in c.events(ev.Suspect) if e.node == d), key=lambda e: e.t_unix)
    assert 0.6 <= detect.t_unix - killed_at < 2.0
    there = [e for e in c.events(ev.Install) if e.agent == detect.agent and d in e.removed]
    assert there[0].handled_ms[f"remove {d}"] < 500


def test_monitor_observations_install_link_changes(cluster):
    c = cluster
    a, b, _ = c.ids
    lnk = sorted([a, b])
    c.wait(lambda: lnk in c.view(a)["links"], 5, "links up from pings")
    t = time.time()
    out = cli("observe", "--socket", c.socket(b), "link_down", a, b)
    assert out.returncode == 0, out.stderr

    def install_with(field):
        return [e for e in c.events(ev.Install) if e.agent == b and lnk in getattr(e, field)
                and e.t_unix >= t]
    c.wait(lambda: install_with("links_down"), 5, "link_down installed")
    inst = install_with("links_down")[0]
    assert inst.handled_ms[f"link_down {lnk[0]} {lnk[1]}"] < 1000
    # the pings still work, so the monitor reports the link up again
    c.wait(lambda: [e for e in install_with("links_up") if e.epoch > inst.epoch], 5,
           "link_up installed after the monitor saw pongs")


def test_hostile_datagrams_change_nothing(cluster):
    c = cluster
    target = c.ids[0]
    c.wait(lambda: all(len(c.view(n)["links"]) == 3 for n in c.ids), 5, "all links up")
    time.sleep(0.3)
    before = c.view(target)
    me_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    me_sock.bind(("127.0.0.1", 0))
    me_sock.settimeout(0.5)
    me = f"127.0.0.1:{me_sock.getsockname()[1]}"
    dst = ("127.0.0.1", int(target.rsplit(":", 1)[1]))

    def send(data):
        me_sock.sendto(data, dst)

    def seal(body, secret=c.secret, seq=None):
        return wire.seal(secret, me, target, seq or time.time_ns(), body)

    evil = View(before["epoch"] + 1, frozenset({me})).to_msg()
    send(seal({"type": "commit", "view": evil}, secret=b"not-the-cluster-secret"))   # forged
    ping = seal({"type": "ping", "t": 1})
    send(ping)
    src, body = wire.open_envelope(c.secret, me, me_sock.recv(65536), wire.ReplayGuard(),
                                   time.time_ns())
    assert (src, body) == (target, {"type": "pong", "echo": 1})   # authentic: served
    send(ping)                                                  # replayed
    with pytest.raises(socket.timeout):
        me_sock.recv(65536)
    send(b"x" * (wire.MAX_DATAGRAM + 100))                       # oversized
    send(seal({"type": "commit", "view": {**evil, "links": [[0, 5]]}}))   # malformed
    send(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94.")  # a pickle: never loaded
    send(seal({"type": "accept", "epoch": before["epoch"], "ballot": [99, me],
               "view": evil}))                                   # stale epoch
    time.sleep(0.5)
    reasons = {e.reason for e in c.events(ev.Rejected) if e.agent == target}
    assert reasons == {"forged", "replayed", "oversized", "malformed", "stale"}
    after = c.view(target)
    assert (after["epoch"], after["members"]) == (before["epoch"], before["members"])
    assert all(p.poll() is None for p in c.procs.values())

    # authentic but hostile values (a member's secret leaked, or a bug): bounded, never stored
    rejected_before = json.loads(cli("status", "--socket", c.socket(target)).stdout)[
        "counters"]["rejected"]
    send(seal({"type": "pong", "echo": -(2 ** 63 - 1)}))              # RTT of 1.7e12 ms
    send(seal({"type": "metrics", "links": [[me, target, 9.9e17, 1.0, 1.0]],
               "resources": {}}))                                   # a non-member's figures
    send(seal({"type": "commit", "view": {**evil, "epoch": 2 ** 63 - 1}}))   # the epoch limit
    send(seal({"type": "commit", "view": {**evil, "epoch": before["epoch"] + 10 ** 7}}))
    send(wire.seal_payload(c.secret, b"{\"src\":" + b"[" * 20_000 + b"]" * 20_000 + b"}"))  # deep
    time.sleep(0.5)
    status = json.loads(cli("status", "--socket", c.socket(target)).stdout)
    assert status["counters"]["rejected"] >= rejected_before + 5    # the log keeps 1/reason/s
    assert me not in status["resources"] and all(me not in r[:2] for r in status["rates"])
    assert all(v is None or v < 60_000 for v in status["rtt_ms"].values())
    after = c.view(target)
    assert (after["epoch"], after["members"]) == (before["epoch"], before["members"])


def test_probe_port_floods_are_cut(cluster):
    c = cluster
    target = c.ids[0]
    port = int(target.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]   # no secret
    time.sleep(0.3)
    assert c.view(target)["epoch"] is not None          # still answers, still in the view
    for s in idle:                                      # every silent connection is dropped
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        s.close()
    assert all(p.poll() is None for p in c.procs.values())


def test_agent_needs_a_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAOS_CLUSTER_SECRET", raising=False)
    out = cli("agent", "--id", "127.0.0.1:1", "--members", "127.0.0.1:1")
    assert out.returncode != 0 and "secret" in out.stderr
    out = cli("discover", "--socket", str(tmp_path / "none.sock"))
    assert out.returncode == 1 and "no agent" in out.stderr


def test_last_members_leaving_install_an_empty_view(tmp_path):
    from chaos_hvd.cluster.agent import Agent, AgentOptions
    a = Agent(AgentOptions(id="127.0.0.1:1", secret=b"s" * 16, members=("127.0.0.1:1",),
                           event_log=str(tmp_path / "ev.jsonl")))
    a.leave()
    a._installed(View(2, frozenset()), a.member.view, 1.0)    # the view after everyone left
    assert a._stop.is_set()
    rec = read_events(str(tmp_path / "ev.jsonl"))[-1]
    assert isinstance(rec, ev.Install) and rec.coordinator is None and rec.members == []
