#!/usr/bin/env bash
# The test command: installs what is missing (scripts/bootstrap.sh), then runs every test.
# Real horovodrun elastic jobs run here too (tests/test_elastic.py, ~2.5 min on 2 cores).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$REPO/scripts/bootstrap.sh" | tail -n1)"
cd "$REPO"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" tests
