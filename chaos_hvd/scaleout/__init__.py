"""Scale-out that does not stop training: the ``chaos-hvdrun`` launcher and what it says to workers.

``cli``         ``chaos-hvdrun``: ``horovodrun`` with the driver below (same arguments).
``args``        the launcher's check of Horovod's arguments before Horovod acts on them (pure).
``driver``      Horovod's elastic driver, extended: a new slot's worker starts at once as a
                *standby* and is switched in only once it holds a recent state (the one module
                here that imports Horovod).
``standbys``    the launcher's book of standbys and their phases (pure).
``lost_slots``  which workers of a silently vanished host the launcher records at the reset
                barrier on their behalf (pure).
The messages between standbys, running workers and the launcher are in :mod:`chaos_hvd.join`;
the workers' side lives in :mod:`chaos_hvd.state` (``standby_join``, ``standby_feed``,
``stale_workers``).
"""
