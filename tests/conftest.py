"""Hypothesis profiles for the whole test session.

The README's test command (which CI runs) uses `repeatable`: every property test draws the same
examples on every run, so CI draws what a local run drew and a failure reproduces as is.
`HYPOTHESIS_PROFILE=explore` draws fresh random examples each run to search for new failures;
add each one found as an `@example` so `repeatable` keeps it.
"""

import os

from hypothesis import HealthCheck, settings

# no deadline and no too-slow health check: on a shared 2-core runner (CI) time is no signal
_UNTIMED = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("repeatable", derandomize=True, database=None, **_UNTIMED)
settings.register_profile("explore", derandomize=False, **_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
