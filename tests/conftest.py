"""Hypothesis profiles for the whole test session.

The README's test command (which CI runs) uses `repeatable`: every property test draws the same
examples on every run, so a run that passes here passes in CI and a failure reproduces as is.
`HYPOTHESIS_PROFILE=explore` draws fresh random examples each run to search for new failures;
add each one found as an `@example` so `repeatable` keeps it.
"""

import os

from hypothesis import settings

# no deadline: a shared 2-core runner makes any one example's time meaningless
settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
