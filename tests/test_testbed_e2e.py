"""End to end (root, real Horovod): every fault-injection suite under ci/suites runs a real
elastic horovodrun job with ChaosState on a shaped emulated topology and must keep its invariants.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

from chaos_hvd import events as ev
from chaos_hvd.events import read_events

from testbed_support import leftovers, require_testbed

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITES = sorted(glob.glob(os.path.join(REPO, "ci", "suites", "*.yaml")))


@pytest.mark.horovod
@pytest.mark.parametrize("suite", SUITES, ids=[os.path.basename(s)[:-5] for s in SUITES])
def test_fault_injection_suite(suite, tmp_path):
    require_testbed(sshd=True)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ci.run_suite", suite, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"], f"{summary['failures']}\n--- log tail ---\n{done.stderr[-4000:]}"
    timeline = read_events(str(out / "timeline.jsonl"))
    faults = [r for r in timeline if isinstance(r, ev.Fault)]
    assert faults and all(r.t_mono > 0 and r.applied_ms >= 0 for r in faults)
    assert leftovers() == []


@pytest.mark.horovod
def test_the_checks_catch_a_broken_sync(tmp_path):
    """A joiner that ends up with one weight off (``--sabotage-joiner``, as a broken sync would
    leave it) must fail the suite on the final parameters, and on nothing else."""
    require_testbed(sshd=True)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ci.run_suite",
                           os.path.join(REPO, "ci", "broken", "broken-sync.yaml"),
                           "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert not summary["ok"]
    assert summary["failures"] and all("different parameters" in f for f in summary["failures"]), \
        f"{summary['failures']}\n--- log tail ---\n{done.stderr[-4000:]}"
    assert leftovers() == []
