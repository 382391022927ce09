"""Helpers for tests and benches (not part of the installed package).

``elastic_job``    runs a real ``horovodrun`` elastic job of ``examples/train_elastic.py`` on this
                   machine (``localhost`` and ``127.0.0.1`` as two hosts) and reads its events.
``local_cluster``  real ``chaos-hvd agent`` processes on loopback.
"""
