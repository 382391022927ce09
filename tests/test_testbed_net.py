"""The testbed on this machine (root): shaped rates, link state, partitions, impairments, ssh
into hosts, the CLI, and cleanup, including after SIGKILL. Skipped with a reason without root."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from chaos_hvd.waiting import wait_until
from testbed import verify
from testbed.emulation import Testbed
from testbed.topology import parse_topology

from testbed_support import leftovers, require_testbed

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ASYM = """\
name: asym
nodes: [{name: h1}, {name: h2}, {name: h3}, {name: peer}, {name: ctl, role: launcher}]
switches: [s1]
links:
  - {a: h1, b: s1, up: {rate: 10Mbit}, down: {rate: 100Mbit}}
  - {a: h2, b: s1, up: {rate: 100Mbit}, down: {rate: 1Gbit}}
  - {a: h3, b: s1, up: {rate: 1Gbit}, down: {rate: 10Mbit}}
  - {a: peer, b: s1}
  - {a: ctl, b: s1}
"""


@pytest.fixture
def testbed(tmp_path):
    made = []

    def up(text, sshd=False):
        require_testbed(sshd=sshd)
        tb = Testbed(parse_topology(textwrap.dedent(text), "test"), str(tmp_path))
        made.append(tb)
        tb.up(sshd=sshd)
        return tb

    yield up
    for tb in made:
        assert tb.down() == []
    assert leftovers() == []


@pytest.mark.parametrize("src,dst,rate", [("h1", "peer", 10e6), ("peer", "h1", 100e6),
                                          ("h2", "peer", 100e6), ("peer", "h2", 1e9),
                                          ("h3", "peer", 1e9), ("peer", "h3", 10e6)])
def test_iperf3_sees_the_configured_rate_in_each_direction(testbed, src, dst, rate):
    tb = testbed(ASYM)
    r = verify.check_rate(tb.net, src, dst, seconds=3)
    assert r.configured_bps == rate
    assert abs(r.error) <= verify.RATE_TOLERANCE, \
        f"{src}->{dst}: {[round(x / 1e6, 1) for x in r.readings_bps]} Mbit/s measured, " \
        f"{rate / 1e6:g} configured"
    assert all(x <= rate * (1 + verify.RATE_TOLERANCE) for x in r.readings_bps)


STAR = """\
name: star
nodes: [{name: a}, {name: b}, {name: c}, {name: ctl, role: launcher}]
switches: [s1]
links: [{a: a, b: s1, rate: 50Mbit}, {a: b, b: s1, rate: 50Mbit}, {a: c, b: s1}, {a: ctl, b: s1}]
"""


def _reachable(tb, src, dst):
    return verify.ping_rtt_ms(tb.net.host_ns[src], tb.topo.node(dst).ip, count=3,
                              interval_s=0.05)["loss"] < 1.0


def test_link_down_stops_traffic_and_up_restores_it(testbed):
    tb = testbed(STAR)
    assert _reachable(tb, "a", "b")
    tb.net.set_link("a-s1", False)
    assert not _reachable(tb, "a", "b") and not _reachable(tb, "b", "a")
    assert _reachable(tb, "b", "c")
    tb.net.set_link("a-s1", True)
    assert _reachable(tb, "a", "b")
    assert tb.describe()["links"]["a-s1"]["state"] == "up"


def test_partition_cuts_between_groups_only_and_heal_restores(testbed):
    tb = testbed(STAR)
    tb.net.partition((("a", "b"), ("c",)))          # ctl is left out: its own group
    assert _reachable(tb, "a", "b")
    assert not _reachable(tb, "a", "c") and not _reachable(tb, "c", "b")
    assert not _reachable(tb, "ctl", "a")
    tb.net.heal()
    assert _reachable(tb, "a", "c") and _reachable(tb, "ctl", "a")


def test_delay_and_loss_are_measured_not_assumed(testbed):
    tb = testbed(STAR)
    # medians: a CPU stall on a busy runner delays one echo, not the link
    base = verify.ping_rtt_ms(tb.net.host_ns["a"], tb.topo.node("b").ip, count=10)["median_ms"]
    tb.net.degrade("a-s1", "up", {"delay_s": 0.020})
    rtt = verify.ping_rtt_ms(tb.net.host_ns["a"], tb.topo.node("b").ip, count=20)["median_ms"]
    # one way +20 ms; the userspace delayer adds ~0.2-1 ms, netem ~0
    assert 20 + base - 0.5 <= rtt <= 20 + base + 2.5, (base, rtt)
    tb.net.degrade("a-s1", "up", {"delay_s": 0.0, "loss": 0.25})
    loss = verify.ping_rtt_ms(tb.net.host_ns["a"], tb.topo.node("b").ip, count=400,
                              interval_s=0.002)["loss"]
    assert 0.17 <= loss <= 0.33, loss                       # 25 %, 400 samples: sd 2.2 %
    tb.net.restore("a-s1")
    r = verify.ping_rtt_ms(tb.net.host_ns["a"], tb.topo.node("b").ip, count=20, interval_s=0.01)
    assert r["loss"] == 0 and r["median_ms"] < base + 1, r


def test_runtime_rate_change(testbed):
    tb = testbed(STAR)
    tb.net.degrade("a-s1", "both", {"rate_bps": 5e6})
    slow = verify.iperf3_bps(tb.net.host_ns["a"], tb.net.host_ns["c"], tb.topo.node("c").ip, 2)
    tb.net.restore("a-s1")
    fast = verify.iperf3_bps(tb.net.host_ns["a"], tb.net.host_ns["c"], tb.topo.node("c").ip, 2)
    assert abs(slow / 5e6 - 1) <= 0.05 and abs(fast / 50e6 - 1) <= 0.05, (slow, fast)


STORE = """\
name: store
nodes: [{name: a}, {name: nas, role: storage}, {name: ctl, role: launcher}]
switches: [s1]
links:
  - {a: a, b: s1}
  - {a: nas, b: s1, up: {rate: 20Mbit}, down: {rate: 40Mbit}}
  - {a: ctl, b: s1}
"""


def test_storage_node_serves_checkpoints_over_its_shaped_link(testbed, tmp_path):
    """A checkpoint written from host a and read back crosses the storage host's link at its
    rates (40 Mbit/s in, 20 out); the server goes with the testbed."""
    tb = testbed(STORE)
    url = tb.placeholders()["storage"]
    assert url.startswith(f"http://{tb.topo.node('nas').ip}:")
    script = textwrap.dedent(f"""
        import time
        from chaos_hvd.state.checkpoint_store import open_store
        s, data = open_store({url!r}, 30), bytes(range(256)) * 20000      # 5.12 MB
        t0 = time.perf_counter(); s.put("c.bin", data); t1 = time.perf_counter()
        buf = bytearray(len(data)); s.read_into("c.bin", memoryview(buf))
        print(t1 - t0, time.perf_counter() - t1, bytes(buf) == data)
        """)
    p = tb.hosts.launch("a", [sys.executable, "-c", script], {},
                        log_path=str(tmp_path / "out.log"))
    assert p.wait(60) == 0, (tmp_path / "out.log").read_text()
    put_s, get_s, same = (tmp_path / "out.log").read_text().split()
    bits = 5.12e6 * 8
    assert same == "True"
    assert bits / 40e6 * 0.9 <= float(put_s) <= bits / 40e6 * 1.6, put_s
    assert bits / 20e6 * 0.9 <= float(get_s) <= bits / 20e6 * 1.6, get_s


def test_hosts_are_reached_over_ssh_with_their_own_names(testbed, tmp_path):
    known_hosts = os.path.expanduser("~/.ssh/known_hosts")
    before = open(known_hosts, "rb").read() if os.path.exists(known_hosts) else None
    tb = testbed(STAR, sshd=True)
    p = tb.hosts.launch("ctl", ["sh", "-c", "hostname; ssh a hostname; ssh {} 'hostname; "
                                "getent hosts $(hostname)'".format(tb.topo.node("b").ip)],
                        {}, log_path=str(tmp_path / "out.log"))
    assert p.wait(30) == 0
    out = (tmp_path / "out.log").read_text().split()
    assert out[:3] == ["ctl", "a", "b"]
    assert out[3] == tb.topo.node("b").ip               # its name resolves to its own address
    after = open(known_hosts, "rb").read() if os.path.exists(known_hosts) else None
    assert after == before


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, **kw)


def _start_up(topo_path, out):
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", topo_path, "--out", out],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if " up;" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"chaos-testbed up did not come up: {proc.stderr.read()}")


def test_cli_up_inject_show_down(tmp_path):
    require_testbed(sshd=True)
    path = tmp_path / "star.yaml"
    path.write_text(STAR)
    proc = _start_up(str(path), str(tmp_path / "out"))
    try:
        done = _cli("inject", "link_down", "link=a-s1")
        assert done.returncode == 0, done.stderr
        show = json.loads(_cli("show").stdout)
        assert show["links"]["a-s1"]["state"] == "down"
        done = _cli("inject", "degrade", "link=b-s1", "rate=5Mbit", "direction=up")
        assert done.returncode == 0, done.stderr
        assert json.loads(_cli("show").stdout)["links"]["b-s1"]["up"].startswith("5Mbit")
        bad = _cli("inject", "link_down", "link=nope")
        assert bad.returncode == 2 and "no link 'nope'" in bad.stderr
        assert _cli("down").returncode == 0
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            _cli("clean")
    timeline = [json.loads(x) for x in (tmp_path / "out" / "timeline.jsonl").read_text().split("\n") if x]
    assert [r["action"] for r in timeline if r["event"] == "fault"] == ["link_down", "degrade"]
    assert leftovers() == []


def test_teardown_kills_orphans_left_in_our_namespaces(testbed):
    # a worker whose ssh session ended is re-parented to init: no longer anyone's descendant
    tb = testbed(STAR, sshd=True)
    marker = "3141.5926"
    proc = tb.hosts.launch("a", ["sh", "-c", f"setsid sleep {marker} </dev/null >/dev/null 2>&1 &"],
                           {})
    proc.wait(10)

    def orphans():
        return [p for p in psutil.process_iter(["cmdline", "ppid"])
                if marker in " ".join(p.info["cmdline"] or [])]
    assert wait_until(orphans, 10, "the orphan")
    assert tb.down() == []
    assert orphans() == []


def test_repeated_sigint_to_the_process_group_still_tears_down(tmp_path):
    # Ctrl-C pressed twice, or `timeout` signalling its whole process group while the caller
    # signals too: a signal during teardown once cut it short and left namespaces and sshd.
    require_testbed(sshd=True)
    path = tmp_path / "star.yaml"
    path.write_text(STAR)
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", str(path), "--out",
                             str(tmp_path / "out")], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while " up;" not in proc.stderr.readline():
        assert time.monotonic() < deadline and proc.poll() is None, "did not come up"
    # keep signalling until it has exited: signals that land after the teardown, while Python
    # shuts down, once killed it by signal instead of exit 130
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
    assert proc.wait(60) == 130
    assert leftovers() == []
    down = [json.loads(line) for line in open(tmp_path / "out" / "timeline.jsonl")
            if '"event":"down"' in line]
    assert down and down[-1]["problems"] == []


def test_sigkill_then_clean_removes_everything(tmp_path):
    require_testbed(sshd=True)
    path = tmp_path / "star.yaml"
    path.write_text(STAR.replace("{a: a, b: s1, rate: 50Mbit}",
                                 "{a: a, b: s1, rate: 50Mbit, delay: 5ms, loss: 1%}"))
    proc = _start_up(str(path), str(tmp_path / "out"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = leftovers()
    assert any(x.startswith("netns") for x in left) and any("sshd" in x for x in left) \
        and any(x.startswith("nft") for x in left), left   # the kill really left things behind
    done = _cli("clean")
    assert done.returncode == 0, done.stderr
    assert leftovers() == []


def test_not_root_fails_with_one_line():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    import tempfile
    folder = tempfile.mkdtemp(prefix="ctb-test-")     # pytest's tmp_path is root-only
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "star.yaml")
    with open(path, "w") as f:
        f.write(STAR)
    os.chmod(path, 0o644)
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "testbed.cli", "up", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 77, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "needs root" in done.stderr
    check = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-m", "testbed.cli", "check", str(path)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    shutil.rmtree(folder)
    assert check.returncode == 0, check.stderr                 # validation needs no root


def test_run_fires_step_triggers_from_minimal_records_and_fails_on_unfired_actions(tmp_path):
    """A script's own ``{"event": "step", "step": N}`` lines drive ``at_step``; an action that
    never fired makes a successful command's run exit 5 (``--allow-unfired``: its status)."""
    require_testbed()
    topo_path = tmp_path / "star.yaml"
    topo_path.write_text(STAR)
    faults = tmp_path / "faults.yaml"
    faults.write_text("actions:\n  - {at_step: 2, action: link_down, link: a-s1}\n"
                      "  - {at_step: 1000, action: link_down, link: b-s1}\n")
    script = ("""for i in 1 2 3; do echo '{"event": "step", "step": '$i'}' >> {event_log}; """
              """done; sleep 1""")
    runs = {}
    for extra in ([], ["--allow-unfired"]):
        out = tmp_path / f"out{len(extra)}"
        runs[bool(extra)] = _cli("run", str(topo_path), "--faults", str(faults), "--out", str(out),
                                 *extra, "--", "sh", "-c", script)
        timeline = [json.loads(x) for x in (out / "timeline.jsonl").read_text().split("\n") if x]
        assert [(r["action"], r["target"]) for r in timeline if r["event"] == "fault"] == \
            [("link_down", "a-s1")]
    assert runs[False].returncode == 5, runs[False].stderr[-2000:]
    assert "never fired" in runs[False].stderr and "link_down b-s1" in runs[False].stderr
    assert runs[True].returncode == 0, runs[True].stderr[-2000:]
    assert leftovers() == []
