"""Argument types and the help format shared by the ``chaos-hvd`` and ``chaos-testbed`` CLIs.

Every number read from a command line is checked here: NaN, infinity and out-of-range values are
usage errors (argparse exits with status 2 and says which option), never a traceback later.
"""

from __future__ import annotations

import argparse
import math


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default; keeps the description's line breaks."""


def seconds(text: str) -> float:
    """A finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be finite and >= 0")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def count(text: str, low: int = 1, high: int = 1 << 20) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
    return value


def port(text: str) -> int:
    return count(text, 0, 65535)


def slots(text: str) -> int:
    return count(text, 1, 1024)
