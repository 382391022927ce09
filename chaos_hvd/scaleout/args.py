"""``chaos-hvdrun``'s own check of Horovod's arguments, before Horovod acts on them. Pure apart
from reading the host file.

Horovod's runner takes ``-np 0`` or a negative count and runs nothing (exit 0), waits for ever for
an absurd one, turns a malformed ``-H`` or a missing ``--hostfile`` into a traceback, and with no
command runs ``env`` -- which prints the job secret. :func:`check` refuses all of these with one
line (:class:`~chaos_hvd.rules.RuleError`); the launcher then exits 2 without starting anything.
"""

from __future__ import annotations

from argparse import Namespace

from ..files import NotAFile, read_regular
from ..rules import RuleError, parse_host_slots, parse_int

MAX_PROCESSES = 4096
MAX_HOSTFILE_BYTES = 1 << 20


def check(args: Namespace) -> None:
    """Raise RuleError for arguments Horovod would mishandle."""
    if not [c for c in (args.command or []) if c.strip()]:
        raise RuleError("no command to run (chaos-hvdrun [options] COMMAND ...)")
    if args.num_proc is not None:
        parse_int(args.num_proc, "-np", 1, MAX_PROCESSES)
    for flag, value in (("--min-np", getattr(args, "min_num_proc", None)),
                        ("--max-np", getattr(args, "max_num_proc", None))):
        if value is not None:
            parse_int(value, flag, 1, MAX_PROCESSES)
    lo, hi = getattr(args, "min_num_proc", None), getattr(args, "max_num_proc", None)
    if lo is not None and hi is not None and lo > hi:
        raise RuleError(f"--min-np {lo} is more than --max-np {hi}")
    if args.hosts is not None:
        hosts(args.hosts, "-H")
    if getattr(args, "hostfile", None) is not None:
        hostfile(args.hostfile)
    script = getattr(args, "host_discovery_script", None)
    if script is not None and not script.strip():
        raise RuleError("--host-discovery-script: empty")


def hosts(text: str, what: str) -> list[tuple[str, int]]:
    """Horovod's ``host:slots,host:slots``."""
    parts = text.split(",")
    if not text.strip() or len(parts) > MAX_PROCESSES:
        raise RuleError(f"{what}: expected host:slots[,host:slots...], got {text[:80]!r}")
    return [parse_host_slots(p, what, MAX_PROCESSES) for p in parts]


def hostfile(path: str) -> list[tuple[str, int]]:
    """Horovod's host file: ``<host> slots=<n>`` per line (``#`` comments and blank lines skipped)."""
    try:
        data = read_regular(path, MAX_HOSTFILE_BYTES)
    except OSError as e:
        raise RuleError(f"--hostfile {path}: {e.strerror or e}") from None
    except NotAFile as e:
        raise RuleError(f"--hostfile {path}: {e}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise RuleError(f"--hostfile {path}: not ASCII text") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"--hostfile {path}:{n}"
        if len(words) != 2 or not words[1].startswith("slots="):
            raise RuleError(f"{where}: expected '<host> slots=<n>', got {line[:80]!r}")
        out.append(parse_host_slots(f"{words[0]}:{words[1][6:]}", where, MAX_PROCESSES))
    if not out:
        raise RuleError(f"--hostfile {path}: names no host")
    return out
