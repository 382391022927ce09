"""Edge-network testbed: emulate a Jetson-class cluster on one Linux machine and break it.

Pure (no root, no I/O beyond reading files; property-tested):

``topology``      YAML -> validated Topology (nodes, switches, links with per-direction impairments).
``profiles``      named link profiles (GbE, Wi-Fi 5/6, LTE, 5G, ...) with their sources.
``faults``        fault schedules: timed or step-triggered actions, flap expansion, seeded chaos mode.
``bridge_rules``  renders the nftables rules for loss and partitions.
``run_timeline``  one run's records -> lanes of steps, sync phases and idle time, markers, world size.
``errors``        typed errors, each with the CLI's exit code.

Needs root:

``capabilities``  what this kernel can emulate (netem probed by trying).
``network``       Mininet hosts on Linux bridges, per-direction shaping, link state, partitions.
``shaping``       HTB (and netem where present) on one interface through pyroute2.
``impairments``   the fallbacks without netem: nftables loss and partitions, the NFQUEUE delayer.
``nfdelay``       the delayer process itself (``python -m testbed.nfdelay``).
``hosts``         an sshd per host (own hostname, /etc/hosts), the launcher, signals to workers.
``cgroups``       CPU shares of emulated hosts (cgroup v2).
``agents``        a cluster agent in every emulated host (discovery from agents).
``emulation``     ``Testbed``: one instance, actions, discovery file, timeline records.
``executor``      applies a schedule on time or on training step.
``registry``      records everything created before creating it; teardown and ``clean`` remove that.
``control``       the running testbed's control socket (inject, show, down).
``verify``        iperf3 and ping between hosts against the topology.
``report``        draws a run's timeline as a PNG (matplotlib; ``chaos-testbed report``).
``cli``           ``chaos-testbed run|up|inject|show|down|clean|check|probe|report``.

Never calls ``mn -c``: it removes only what it recorded.
"""
