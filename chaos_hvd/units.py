"""Parse quantities with units: topologies, fault schedules and ``CHAOS_BANDWIDTH``. Pure.

Bare numbers follow Mininet's ``TCLink`` conventions, so its users can copy values over:
rate in Mbit/s, delay and jitter in ms, loss in percent. Strings carry a unit: ``100Mbit``,
``1.2Gbit``, ``500kbit``, ``20ms``, ``1.5s``, ``300us``, ``0.5%``, ``64KiB``.
Results are SI base units: bit/s, seconds, fractions, bytes.
"""

from __future__ import annotations

import math
import re

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_RATE = {"bit": 1, "bps": 1, "kbit": 1e3, "kbps": 1e3, "mbit": 1e6, "mbps": 1e6,
         "gbit": 1e9, "gbps": 1e9}
_TIME = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0}
_SIZE = {"b": 1, "kb": 1e3, "kib": 1024, "mb": 1e6, "mib": 1024 ** 2}


class UnitError(ValueError):
    """A value with a missing, unknown or impossible unit."""


def _split(value, what: str, units: dict[str, float], example: str) -> tuple[float, str | None]:
    if isinstance(value, bool):
        raise UnitError(f"{what} must be a number or a string with a unit, not {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise UnitError(f"{what} must be a finite number, not {value!r}")
        return float(value), None
    if not isinstance(value, str):
        raise UnitError(f"{what} must be a number or a string with a unit, not {value!r}")
    m = re.fullmatch(_NUM + r"\s*([A-Za-z%/]*)", value.strip())
    if not m:
        raise UnitError(f"cannot read {what} {value!r} (expected e.g. {example!r})")
    unit = m.group(2).lower() or None
    if unit is not None and unit not in units:
        raise UnitError(f"unknown unit {m.group(2)!r} in {what} {value!r} "
                        f"(use one of {', '.join(_pretty(units))})")
    number = float(m.group(1))
    if not math.isfinite(number):
        raise UnitError(f"{what} {value!r} is out of range")
    return number, unit


def _pretty(units):
    names = {"bit": "bit", "kbit": "kbit", "mbit": "Mbit", "gbit": "Gbit", "us": "us", "ms": "ms",
             "s": "s", "b": "B", "kib": "KiB", "mib": "MiB", "kb": "kB", "mb": "MB"}
    return [names[u] for u in units if u in names]


def parse_rate_bps(value, what: str = "rate") -> float:
    number, unit = _split(value, what, _RATE, "100Mbit")
    bps = number * (_RATE[unit] if unit else 1e6)
    if bps <= 0:
        raise UnitError(f"{what} must be positive, got {value!r}")
    return bps


def parse_time_s(value, what: str = "delay") -> float:
    number, unit = _split(value, what, _TIME, "20ms")
    seconds = number * (_TIME[unit] if unit else 1e-3)
    if seconds < 0:
        raise UnitError(f"{what} must not be negative, got {value!r}")
    return seconds


def parse_duration_s(value, what: str = "time") -> float:
    """Schedule times: bare numbers are seconds (not ms as for link delays)."""
    number, unit = _split(value, what, _TIME, "5s")
    seconds = number * (_TIME[unit] if unit else 1.0)
    if seconds < 0:
        raise UnitError(f"{what} must not be negative, got {value!r}")
    return seconds


def parse_fraction(value, what: str = "loss") -> float:
    """Percent: ``1`` and ``'1%'`` both mean 0.01."""
    number, unit = _split(value, what, {"%": 1}, "0.5%")
    if not 0 <= number < 100:
        raise UnitError(f"{what} must be in [0, 100) percent, got {value!r}")
    return number / 100.0


def parse_size_bytes(value, what: str = "queue") -> int:
    number, unit = _split(value, what, _SIZE, "64KiB")
    size = int(number * (_SIZE[unit] if unit else 1))
    if size <= 0:
        raise UnitError(f"{what} must be positive, got {value!r}")
    return size


def format_rate(bps: float | None) -> str:
    if bps is None:
        return "unlimited"
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"
