#!/usr/bin/env bash
# The demo. As root where the edge testbed works (network namespaces, HTB, sshd): a join, a crash
# and a link flap on an emulated edge cluster, with Horovod's defaults and with ChaosState +
# chaos-hvdrun side by side; prints a comparison table and writes both timeline pictures
# (examples/demo_testbed.py, ~3 min). Otherwise: a real Horovod elastic job on loopback with
# ChaosState (2 workers, two join, one is SIGKILLed; examples/demo_join_crash.py), and why.
# `demo.sh --loopback [--model medium ...]` asks for the loopback demo.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$REPO/scripts/bootstrap.sh" | tail -n1)"
cd "$REPO"
if [ "${1:-}" = "--loopback" ]; then
  shift
  exec "$VENV/bin/python" -m examples.demo_join_crash "$@"
fi
why=$("$VENV/bin/python" - <<'PY'
import os
if os.geteuid() != 0:
    print("not root: the testbed needs network namespaces and tc")
else:
    from testbed.capabilities import probe
    caps = probe()
    missing = [n for n in ("htb", "sshd") if not getattr(caps, n)]
    if missing:
        print("this machine lacks " + ", ".join(missing) + " for the testbed")
PY
)
if [ -z "$why" ]; then
  exec "$VENV/bin/python" -m examples.demo_testbed "$@"
fi
echo "demo: $why; running the loopback demo instead" >&2
exec "$VENV/bin/python" -m examples.demo_join_crash "$@"
