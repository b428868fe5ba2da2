"""Statistics and number formatting shared by the benchmarks, so every table means the same
thing by "median", "p90" and "ratio".

Run the benches from the repository root with `PYTHONPATH=.` (as `make bench` does); they
import this module as `bench.stats`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence


def quantile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1), interpolated linearly between the closest ranks.

    The same as `statistics.quantiles(method="inclusive")`, but defined for a single sample
    (the sample itself) and for q = 0 and 1 (the minimum and the maximum).
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return quantile(values, 0.5)


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0 <= p <= 100): p50 is the median, p99 the 0.99-quantile."""
    return quantile(values, p / 100)


def ratio(value: float, base: float, bold: bool = False) -> str:
    """`value / base` as the tables print it: two decimals and an x (`1.25x`)."""
    if base == 0:
        return "n/a"
    text = f"{value / base:.2f}x"
    return f"**{text}**" if bold else text


def median_and_max(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """The median, and the maximum in brackets when there is more than one value."""
    text = fmt.format(median(values))
    return text if len(values) == 1 else f"{text} ({fmt.format(max(values))})"


def run_footer(rows: int, unit: str, reps: int, started: float) -> str:
    """The line under a table: what ran, how long since `started` (time.monotonic()) and the
    load average it ran at (the machines are noisy: a ratio is read with it)."""
    return (f"({rows} {unit} x {reps} reps in {time.monotonic() - started:.0f} s; "
            f"load average {os.getloadavg()[0]:.1f})")
