"""The soak's fault schedule: one seeded random fault every ~interval, each undone before the next.

Pure: (worker names, their links, seed, duration, interval) -> schedule actions as the dicts a
schedule file holds (testbed.faults parses and checks them like any other). Unlike the testbed's
chaos mode, every fault here is one the job must recover from *and* come back from, so the job
keeps its size over a long run:

=============  ==========================================================================
``crash``      SIGKILL a host's worker and agent; the host rejoins ``REJOIN_S`` later
``pause``      SIGSTOP the host (worker and agent) for ``HOLD_S``: longer than detection
``partition``  one host alone on one side (the launcher with the rest) for ``HOLD_S``
``silent``     the host's only link down for ``HOLD_S`` (it vanishes without a word), then up
``flap``       a link down and up twice within 4 s (shorter than the agents' suspicion)
``degrade``    a link slowed to 10 Mbit/s for ``HOLD_S``
=============  ==========================================================================

The first ``join_at_s`` actions bring the topology's standby hosts in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

KINDS = ("crash", "pause", "partition", "silent", "flap", "degrade")
HOLD_S = 8.0
REJOIN_S = 12.0
FLAP_PERIOD_S = 2.0


def soak_actions(workers: Sequence[str], standbys: Sequence[str], links: dict[str, str],
                 launcher: str | None, seed: int, duration_s: float, interval_s: float = 20.0,
                 kinds: Sequence[str] = KINDS, join_at_s: float = 5.0) -> list[dict]:
    """Schedule dicts (``at`` in seconds) for a soak of `duration_s`.

    `workers`: hosts that train from the start; `standbys`: hosts that join at `join_at_s`;
    `links`: host -> the name of its link. Each fault starts at a jittered multiple of
    `interval_s` (x0.75-1.25) and is undone before the next one starts."""
    if not 0 < interval_s or not 0 < duration_s:
        raise ValueError("duration_s and interval_s must be positive")
    if interval_s < REJOIN_S + 4.0:
        raise ValueError(f"interval_s must leave room for a rejoin ({REJOIN_S + 4.0:g} s)")
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be drawn from {KINDS}")
    rng = random.Random(seed)
    hosts = sorted(workers) + sorted(standbys)
    out: list[dict] = [{"at": f"{join_at_s:g}s", "action": "join", "node": h}
                       for h in sorted(standbys)]
    t = join_at_s + interval_s
    while t < duration_s:
        kind = rng.choice(list(kinds))
        host = rng.choice(hosts)
        at = round(t, 1)
        end = round(at + HOLD_S, 1)
        if kind == "crash":
            out += [{"at": f"{at:g}s", "action": "crash", "node": host},
                    {"at": f"{round(at + REJOIN_S, 1):g}s", "action": "join", "node": host}]
        elif kind == "pause":
            out += [{"at": f"{at:g}s", "action": "pause", "node": host},
                    {"at": f"{end:g}s", "action": "resume", "node": host}]
        elif kind == "partition":
            rest = [h for h in hosts if h != host] + ([launcher] if launcher else [])
            out += [{"at": f"{at:g}s", "action": "partition", "groups": [sorted(rest), [host]]},
                    {"at": f"{end:g}s", "action": "heal"}]
        elif kind == "silent":
            out += [{"at": f"{at:g}s", "action": "link_down", "link": links[host]},
                    {"at": f"{end:g}s", "action": "link_up", "link": links[host]}]
        elif kind == "flap":
            out.append({"at": f"{at:g}s", "action": "flap", "link": links[host],
                        "period": f"{FLAP_PERIOD_S:g}s", "count": 2})
        else:
            out += [{"at": f"{at:g}s", "action": "degrade", "link": links[host],
                     "rate": "10Mbit"},
                    {"at": f"{end:g}s", "action": "restore", "link": links[host]}]
        t += interval_s * rng.uniform(0.75, 1.25)
    return out
