#!/usr/bin/env bash
# The demo: installs what is missing, then runs a real Horovod elastic job on this machine with
# ChaosState: 2 workers train a ResNet-18, two more join and pull the state from both in parallel,
# then one worker is SIGKILLed and the survivors carry on. Prints the event timeline.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$REPO/scripts/bootstrap.sh" | tail -n1)"
cd "$REPO"
exec "$VENV/bin/python" -m examples.demo_join_crash "$@"
