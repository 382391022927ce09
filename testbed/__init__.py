"""Edge-network testbed: emulate a Jetson-class cluster on one Linux machine and break it.

    topology (pure)      YAML -> validated Topology; link profiles         topology, profiles, units
    faults (pure)        schedule model, flap expansion, seeded chaos mode faults
    capabilities         what the kernel can emulate (netem probed by trying)
    network              Mininet hosts on Linux bridges + pyroute2 tc (HTB/TBF, netem when present);
                         fallbacks without netem: nftables loss, NFQUEUE delay (bridge_rules, nfdelay)
    hosts                sshd per host (own hostname, /etc/hosts), launcher, node signals
    emulation            Testbed: one instance, actions, discovery file, timeline
    executor             applies a schedule on time or on training step
    registry             records everything created; teardown / `clean` remove exactly that
    cli                  `chaos-testbed run|up|inject|show|down|clean|check|probe`

Needs root except for `check` (validation) and the pure modules. Never calls `mn -c`.
"""
