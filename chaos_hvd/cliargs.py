"""Argument types and the help format shared by the ``chaos-hvd`` and ``chaos-testbed`` CLIs.

Every number read from a command line is checked here: NaN, infinity and out-of-range values are
usage errors (argparse exits with status 2 and says which option), never a traceback later.
"""

from __future__ import annotations

import argparse

from .rules import RuleError, parse_int, parse_number, parse_seconds


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default; keeps the description's line breaks."""


MAX_SECONDS = 7 * 24 * 3600.0   # a week: longer waits are typos (and overflow socket timeouts)


def _checked(fn, *args):
    try:
        return fn(*args)
    except RuleError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def seconds(text: str) -> float:
    """A finite number of seconds in [0, MAX_SECONDS] (chaos_hvd.rules)."""
    return _checked(parse_number, text, "seconds", 0.0, MAX_SECONDS)


def positive_seconds(text: str) -> float:
    """At least a millisecond, at most MAX_SECONDS."""
    return _checked(parse_seconds, text, "seconds", MAX_SECONDS)


def count(text: str, low: int = 1, high: int = 1 << 20) -> int:
    return _checked(parse_int, text, "count", low, high)


def port(text: str) -> int:
    return count(text, 0, 65535)


def slots(text: str) -> int:
    return count(text, 1, 1024)
