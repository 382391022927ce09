"""``chaos-hvdrun``: ``horovodrun`` whose elastic joins do not stop training.

Accepts exactly ``horovodrun``'s arguments and runs Horovod's own launcher; only the elastic Gloo
driver is extended (:mod:`chaos_hvd.scaleout.driver`). Non-elastic runs behave as ``horovodrun``.

Environment (the launcher's):

``CHAOS_STANDBY_TIMEOUT_S``  a standby not ready this long after it started is dropped (default 300)
``CHAOS_JOB_SECRET``         hex, at least 16 bytes; made fresh when unset. Workers get it through
                             Horovod's environment forwarding and sign what they tell each other
                             and the launcher with it.
``CHAOS_EVENT_LOG``          where the launcher appends its ``standby_*`` records

``kill -USR1`` the launcher to have it print every thread's stack (a job that does not end).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import secrets
import signal
import sys

from ..errors import ConfigError
from ..rules import RuleError
from ..rules import env_seconds
from ..join import wire

DEFAULT_READY_TIMEOUT_S = 300.0


def settings_from_env(env=None):
    from .driver import StandbySettings
    env = os.environ if env is None else env
    raw = env.get(wire.SECRET_ENV)
    secret = wire.secret_from_hex(raw)
    if raw and secret is None:
        raise ConfigError(f"{wire.SECRET_ENV}: not hex, or shorter than 16 bytes")
    timeout = env_seconds(env, "CHAOS_STANDBY_TIMEOUT_S", DEFAULT_READY_TIMEOUT_S, 24 * 3600)
    return StandbySettings(secret or secrets.token_bytes(32), timeout,
                           env.get("CHAOS_EVENT_LOG") or None)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s chaos-hvdrun %(levelname)s %(message)s")
    logging.getLogger("chaos_hvd").setLevel(logging.INFO)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        settings = settings_from_env()
    except ConfigError as e:
        print(f"chaos-hvdrun: {e}", file=sys.stderr)
        return 2
    from horovod.runner import launch

    from .args import check, hostfile
    sys.argv = ["horovodrun", *(sys.argv[1:] if argv is None else argv)]
    args = launch.parse_args()            # Horovod's own parser: usage errors exit 2 there
    try:
        check(args)
        if args.hostfile is not None:     # read once, by our rules (Horovod's parser would
            args.hosts = ",".join(f"{h}:{n}" for h, n in hostfile(args.hostfile))   # trace)
            args.hostfile = None
    except RuleError as e:
        print(f"chaos-hvdrun: {e}", file=sys.stderr)
        return 2
    # the workers inherit it through Horovod's environment forwarding
    os.environ[wire.SECRET_ENV] = settings.secret.hex()
    from .driver import install
    install(settings)
    if args.log_level:                    # as launch.run_commandline does
        logging.addLevelName(logging.NOTSET, "TRACE")
        logging.basicConfig(level=logging.getLevelName(args.log_level))
    launch._run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
