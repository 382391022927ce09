"""Helpers for the root-only testbed tests: skip reasons and a leftover scan."""

import os
import re
import subprocess
import warnings

import psutil
import pytest

from testbed.registry import NAME_RE, RUN_ROOT

CHAIN_RE = re.compile(r"^CTB[0-9A-Z]{2}-DELAY$")


def require_testbed(sshd=False):
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root (network namespaces, tc, nftables)")
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        pytest.skip("Debian's mininet package is not installed (scripts/bootstrap.sh)")
    from testbed.capabilities import probe
    caps = probe()
    missing = [name for name in ("htb", "iperf3", "ping") + (("sshd",) if sshd else ())
               if not getattr(caps, name)]
    if missing:
        pytest.skip(f"this machine lacks {', '.join(missing)}")
    return caps


def leftovers() -> list[str]:
    """What the tests left on the machine: our interfaces, namespaces, nftables tables, iptables
    chains, instance directories, sshd / delayer / worker processes -- except those already there
    when the test session started (an earlier run's, killed before its teardown: not ours to judge,
    and ``chaos-testbed clean`` is the user's call)."""
    return [x for x in _scan() if x not in _BEFORE]


def _scan() -> list[str]:
    found = []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {m}" for m in re.findall(r"^\d+: ([^:@]+)", links, re.M) if NAME_RE.match(m)]
    found += [f"netns {n}" for n in os.listdir("/run/netns") if NAME_RE.match(n)] \
        if os.path.isdir("/run/netns") else []
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nft {t}" for t in re.findall(r"table bridge (ctb\w+)", tables)]
    chains = subprocess.run(["iptables", "-w", "-t", "mangle", "-S"], capture_output=True,
                            text=True).stdout
    found += [f"iptables {c}" for c in re.findall(r"^-N (\S+)", chains, re.M) if CHAIN_RE.match(c)]
    if os.path.isdir(RUN_ROOT):
        found += [f"instance dir {d}" for d in os.listdir(RUN_ROOT)]
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if RUN_ROOT in cmd or "testbed.nfdelay" in cmd or "mininet:ctb" in cmd:
            found.append(f"process {p.pid}: {cmd[:80]}")
    return found


_BEFORE = frozenset(_scan()) if os.geteuid() == 0 else frozenset()
if _BEFORE:
    warnings.warn(f"{len(_BEFORE)} testbed leftovers from before this test session, ignored: "
                  f"{sorted(_BEFORE)[:8]}")
