"""The self-governed cluster agent: membership and links agreed by the nodes, no central admin.

Pure (no sockets, no clock; property-tested and simulated):

``kinds``       message types and view-change kinds as enums.
``protocol``    the peer-negotiation state machine (one Paxos instance per view change, coordinator
                leases); its docstring is the specification.
``wire``        sealed datagrams (HMAC over the payload, replay guard) and the schema of every message.
``linkstate``   link up/down with hysteresis; the table of measured rates.
``probe_plan``  bandwidth probe rounds by greedy edge colouring (no node in two probes at once).
``simnet``      the simulator: hundreds of members over a simulated network, safety checked.

Processes and sockets:

``agent``       the asyncio agent: protocol + monitor + probes; writes the agent event records.
``local_api``   the agent's Unix-socket API (view, status, bandwidth, observe, leave).
``monitor``     resources (psutil), pings, TCP bandwidth probes.
``client``      talking to local agents: requests, starting one, waiting for agreement.
``cli``         ``chaos-hvd agent|discover|status|leave|observe``.
"""
