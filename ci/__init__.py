"""Fault-injection suites run in CI on the testbed.

``suites/*.yaml``  the scenarios (format in ``suite``); ``topologies/``, ``faults/`` their files.
``suite``          parses a suite file (located errors).
``checks``         pure invariant checks over a run's event records.
``run_suite``      ``python -m ci.run_suite SUITE``: run it with ``chaos-testbed run`` and check it.
"""
