"""Before a standby takes its slot: end an old worker of the same job and slot on this host.

Why: when a host vanished silently (a partition, a cut link), ``chaos-hvdrun`` recorded its
worker at the reset barrier on the worker's behalf and ended its ssh session -- but the process
on the host may live on, blocked in a collective, and wake up when the network heals. Horovod's
rendezvous cannot tell that old process from the new one (both ask for ``host:local_rank``), so
the standby that is about to be switched in for the slot ends it first. The launcher switches a
standby in only for a slot that no worker of the job holds, so any other process of the job
claiming that slot on this host is stale by construction.

A process belongs to the job's slot when its *initial* environment (``/proc/PID/environ``, via
psutil) names this host, the job's secret and the job's rendezvous port, and the slot -- as a
worker Horovod started (``HOROVOD_LOCAL_RANK``) or as an earlier standby
(``CHAOS_STANDBY_SLOT``). This standby's own process tree carries its instance id and is skipped.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping

import psutil

log = logging.getLogger(__name__)

KILL_WAIT_S = 3.0


def is_stale(environ: Mapping[str, str], *, host: str, slot: int, main_port: int,
             secret: str, instance: str) -> bool:
    """Pure: does a process with this initial environment hold (host, slot) of this job, and is
    it not this standby's own process tree?"""
    if environ.get("CHAOS_STANDBY_ID") == instance:
        return False
    if environ.get("HOROVOD_HOSTNAME") != host:
        return False
    theirs = environ.get("CHAOS_JOB_SECRET")
    if theirs is None or not hmac.compare_digest(theirs.encode(), secret.encode()):
        return False
    worker = (environ.get("HOROVOD_LOCAL_RANK") == str(slot)
              and environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT") == str(main_port))
    standby = (environ.get("CHAOS_STANDBY_SLOT") == str(slot)
               and environ.get("CHAOS_MAIN_RENDEZVOUS_PORT") == str(main_port))
    return worker or standby


def end_stale_workers(*, host: str, slot: int, main_port: int, secret: str,
                      instance: str) -> list[int]:
    """SIGKILL every stale process of the slot (see the module docstring); returns their pids."""
    me = os.getpid()
    stale = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            environ = proc.environ()
        except (psutil.Error, OSError):   # gone, or not ours to read
            continue
        if is_stale(environ, host=host, slot=slot, main_port=main_port, secret=secret,
                    instance=instance):
            stale.append(proc)
    for proc in stale:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(stale, timeout=KILL_WAIT_S)
    if stale:
        log.warning("ended %d stale process(es) of slot %s:%d: %s", len(stale), host, slot,
                    [p.pid for p in stale])
    return [p.pid for p in stale]
