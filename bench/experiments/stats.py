"""Median, min and max over repetitions of a measurement (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def spread(values: Iterable[float]) -> dict[str, float]:
    """{"median", "min", "max", "n"} of the finite values; ValueError if there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        raise ValueError("no finite values to summarise")
    xs.sort()
    lo, hi = xs[(len(xs) - 1) // 2], xs[len(xs) // 2]
    # not (lo + hi) / 2, which overflows near float's limit; halves of subnormals round down
    median = min(max(lo / 2 + hi / 2, lo), hi)
    return {"median": median, "min": xs[0], "max": xs[-1], "n": len(xs)}
