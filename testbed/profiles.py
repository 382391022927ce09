"""Link profiles for Jetson-class edge links. Pure data.

A profile gives the fields of a link direction; ``up`` is the direction from the link's first
endpoint (the device) to the second (switch / access point / base station), ``down`` the reverse.
Fields set on the link itself override the profile. Figures come from docs/edge-links.md
unless a comment says otherwise; rates are TCP goodput (what iperf3 sees over the medium), which is
what the shaper enforces (testbed.shaping), not the PHY link rate.
"""

from __future__ import annotations

PROFILES: dict[str, dict] = {
    # Jetson Nano / Orin Nano GbE: ~940 Mbit/s TCP goodput, sub-ms RTT on one switch.
    "gbe": {"rate": "940Mbit", "delay": "0.1ms"},
    # Xavier NX's 10/100/1000 port at 100 Mbit (common on older edge switches): the goodput of a
    # 100 Mbit/s wire with full-size TCP segments (our arithmetic, as for GbE).
    "fast-ethernet": {"rate": "94Mbit", "delay": "0.2ms"},
    # Wi-Fi 5 (802.11ac) 2x2 client at ~10 m: ~360 Mbit/s. Delay/jitter/loss: typical contention
    # figures for a lightly loaded BSS (our assumption, not from docs/edge-links.md).
    "wifi5-2x2": {"rate": "360Mbit", "delay": "2ms", "jitter": "1ms", "loss": "0.1%"},
    # Wi-Fi 6 (802.11ax) 2x2 80 MHz: 1.2 Gbit/s link rate, goodput ~50-70 % -> 700 Mbit/s.
    # Delay/jitter/loss: our assumption, lower than Wi-Fi 5 thanks to OFDMA scheduling.
    "wifi6-2x2": {"rate": "700Mbit", "delay": "1.5ms", "jitter": "0.5ms", "loss": "0.05%"},
    # LTE: user-plane RTT ~22 ms (11 ms each way), uplink-limited tens of Mbit/s. 20 up / 60 down
    # is a typical good-coverage cell (our choice inside docs/edge-links.md's range).
    "lte": {"up": {"rate": "20Mbit"}, "down": {"rate": "60Mbit"},
            "delay": "11ms", "jitter": "3ms", "loss": "0.1%"},
    # 5G sub-6: 100-300 Mbit/s, 10-20 ms RTT -> 100 up / 300 down, 7.5 ms each way.
    "5g-sub6": {"up": {"rate": "100Mbit"}, "down": {"rate": "300Mbit"},
                "delay": "7.5ms", "jitter": "2ms", "loss": "0.05%"},
    # Site-to-site WAN over a business line: 50 Mbit/s symmetric, 20 ms each way (our assumption).
    "wan": {"rate": "50Mbit", "delay": "20ms", "jitter": "2ms"},
}
