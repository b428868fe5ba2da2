"""The benchmarks' shared statistics (bench/stats.py) agree with the standard library where
both are defined, and print ratios the way the tables expect."""

from __future__ import annotations

import statistics

import pytest

from bench.stats import median, median_and_max, percentile, quantile, ratio


def test_quantiles_match_the_inclusive_method_of_the_standard_library() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in (1, 10, 50, 90, 99):
        assert percentile(values, p) == pytest.approx(cuts[p - 1])
    assert median(values) == statistics.median(values)
    assert median([1.0, 2.0]) == 1.5


def test_edges_single_sample_min_max_and_bad_input() -> None:
    assert quantile([7.0], 0.9) == 7.0
    assert (quantile([5.0, 1.0, 3.0], 0), quantile([5.0, 1.0, 3.0], 1)) == (1.0, 5.0)
    # Generators are read once.
    assert median(float(x) for x in range(5)) == 2.0
    with pytest.raises(ValueError, match="no values"):
        median([])
    with pytest.raises(ValueError, match="outside"):
        quantile([1.0], 1.5)


def test_ratio_and_median_and_max_formatting() -> None:
    assert ratio(3.0, 2.0) == "1.50x"
    assert ratio(1.0, 3.0, bold=True) == "**0.33x**"
    assert ratio(1.0, 0.0) == "n/a"
    assert median_and_max([2.0]) == "2.00"
    assert median_and_max([1.0, 2.0, 9.0]) == "2.00 (9.00)"
    assert median_and_max([50.0, 70.0], "{:.1f}%") == "60.0% (70.0%)"
