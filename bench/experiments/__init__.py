"""The paper's evaluation as one command: ``python -m bench.experiments [--quick] [--only ...]``.

Each experiment returns rows (one dict per measured configuration, the same keys within an
experiment); the runner writes them to ``results/experiments-<time>/`` as CSV, a markdown table
and PNG plots, and ends with one JSON line.

Modules:
    __main__   -- the command: choose experiments, run them, write the outputs
    scheduler  -- shard planning: time to plan and predicted makespan / bound per algorithm,
                  up to 1,000 sources x 10,000 chunks and several joiners (pure, no network)
    transfer   -- whole-state pulls of every paper model's state (torchvision sizes) from five
                  testbed hosts to a joiner, against the bound, uncapped and with the joiner's
                  ingress capped (root)
    transfer_peer -- one host's side of it (a shard server, or the pulling joiner)
    sync       -- state sync to a joiner inside shorter real elastic jobs, per ChaosState
                  strategy (root; only when named): transfer and whole-sync time against the bound
    scale_out  -- a join inside a real elastic job on the testbed, per strategy (root): the
                  existing workers' idle time and the scale-out delay, with phases, and the
                  joiner's sync (TorchState's broadcast timed by the training script)
    scaling    -- the same join on stars of 3, 5 and 8 hosts (root): idle time as the cluster
                  grows, and the steady state before the join (step and commit time,
                  ChaosState against TorchState)
    events     -- scale-in, a silent link loss, the link's return and a crash inside one real
                  job with the cluster agents (root): time to training at the new size, the
                  agents' view latency beside the UDP fan-out floor
    outputs    -- CSV, markdown and matplotlib plots of the rows (no measuring)
    stats      -- median / min / max over repetitions (pure)
"""
