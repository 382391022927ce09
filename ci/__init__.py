"""Fault-injection suites run in CI on the testbed.

``suites/*.yaml``  the scenarios (format in ``suite``); ``topologies/``, ``faults/`` their files.
``suite``          parses a suite file (located errors).
``checks``         pure invariant checks over a run's event records.
``run_suite``      ``python -m ci.run_suite SUITE``: run it with ``chaos-testbed run`` and check it.
``soak_schedule``  the soak's seeded faults, one every ~20 s, each undone before the next (pure).
``soak_stats``     steps lost and recovery time per fault kind from a run's records (pure).
``soak``           ``python -m ci.soak --minutes 30``: a long run under those faults; its report.
"""
