"""harness.results.stats on data with known answers (fixed seeds)."""

import math

import numpy as np
import pytest

from harness.results import stats


def noisy(center, rel_noise, n, seed):
    return list(np.random.default_rng(seed).normal(center, center * rel_noise, n))


def test_identical_samples_not_flagged():
    a = [100.0] * 10
    j = stats.judge("fault_in_ms", a, list(a))
    assert j.change_pct == 0
    assert j.verdict == stats.UNCHANGED and not j.flagged
    assert (j.ci_low, j.ci_high) == (0.0, 0.0)
    assert j.p == pytest.approx(1.0)


def test_clear_rise_of_lower_is_better_is_regression():
    a, b = noisy(100, 0.02, 20, 1), noisy(120, 0.02, 20, 2)
    j = stats.judge("fault_in_ms", a, b)
    assert j.verdict == stats.REGRESSION
    assert j.p < 0.001
    assert 15 < j.change_pct < 25
    assert j.ci_low < j.change_pct < j.ci_high and j.ci_low > 10


def test_clear_fall_of_lower_is_better_is_improvement():
    a, b = noisy(100, 0.02, 20, 3), noisy(80, 0.02, 20, 4)
    assert stats.judge("boot_to_ssh_s", a, b).verdict == stats.IMPROVEMENT


def test_higher_is_better_direction():
    a, b = noisy(100, 0.02, 20, 5), noisy(120, 0.02, 20, 6)
    assert stats.judge("rss_drop_mib", a, b).verdict == stats.IMPROVEMENT
    assert stats.judge("rss_drop_mib", b, a).verdict == stats.REGRESSION


def test_shift_buried_in_noise_with_few_samples_not_flagged():
    a, b = noisy(100, 0.30, 5, 7), noisy(120, 0.30, 5, 8)
    j = stats.judge("fault_in_ms", a, b)
    assert j.p >= stats.ALPHA
    assert j.verdict == stats.UNCHANGED


def test_small_significant_change_below_threshold_not_flagged():
    a, b = noisy(100, 0.005, 20, 9), noisy(103, 0.005, 20, 10)
    j = stats.judge("fault_in_ms", a, b)
    assert j.p < stats.ALPHA
    assert j.verdict == stats.UNCHANGED
    assert stats.judge("fault_in_ms", a, b, threshold_pct=1.0).verdict == stats.REGRESSION


def test_informational_metric_never_flagged():
    a, b = noisy(100, 0.02, 20, 11), noisy(200, 0.02, 20, 12)
    j = stats.judge("reporting_settle_s", a, b)
    assert j.verdict == stats.INFO and not j.flagged


def test_not_comparable_keeps_summary_but_no_verdict():
    a, b = noisy(100, 0.02, 20, 13), noisy(200, 0.02, 20, 14)
    j = stats.judge("fault_in_ms", a, b, comparable=False, reason="timings not judged: accel kvm vs tcg")
    assert j.verdict == stats.NOT_JUDGED and j.p is None
    assert j.a.n == 20 and j.change_pct > 90
    assert "kvm vs tcg" in j.reason


def test_counter_from_zero_is_regression():
    j = stats.judge("nonzero_pages", [0], [3])
    assert math.isinf(j.change_pct) and j.verdict == stats.REGRESSION
    assert j.p is None
    d = j.to_json()
    assert d["change_pct"] is None and d["change_display"].startswith("+inf")


def test_counter_zero_stays_zero():
    assert stats.judge("nonzero_pages", [0, 0, 0], [0, 0, 0]).verdict == stats.UNCHANGED


def test_counter_skip_rising_is_improvement():
    assert stats.judge("vmstat.pgzero_skip_reported", [100], [5000]).verdict == stats.IMPROVEMENT
    assert stats.judge("vmstat.pgzero_alloc", [5000, 5100], [100, 120]).verdict == stats.IMPROVEMENT


def test_counter_overlapping_samples_not_flagged():
    # medians differ by 20% but the samples overlap
    j = stats.judge("vmstat.pgzero_alloc", [100, 100, 130], [120, 125, 90])
    assert abs(j.change_pct) > 5 and j.verdict == stats.UNCHANGED


def test_counter_below_threshold_not_flagged():
    assert stats.judge("vmstat.pgzero_alloc", [1000], [1040]).verdict == stats.UNCHANGED


def test_summary():
    s = stats.summarize([1, 2, 3, 4])
    assert (s.n, s.median, s.mean, s.total, s.min, s.max) == (4, 2.5, 2.5, 10, 1, 4)
    assert s.stddev == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.cv == pytest.approx(s.stddev / 2.5)
    assert stats.summarize([0]).cv is None


def test_ci_deterministic():
    a, b = noisy(100, 0.05, 10, 15), noisy(110, 0.05, 10, 16)
    assert stats.bootstrap_ci(a, b) == stats.bootstrap_ci(a, b)
    assert stats.bootstrap_ci([1.0], [2.0]) == (None, None)


def test_large_change_with_three_samples_a_side_says_too_few_samples():
    """3 vs 3 can never reach p < 0.05 with the exact test: a big change is reported as untestable."""
    a, b = [480701, 468150, 500941], [64632, 63990, 65742]
    assert stats.smallest_mann_whitney_p(3, 3) == 0.1
    j = stats.judge("contig_bench_us", a, b)
    assert j.verdict == stats.TOO_FEW and not j.flagged
    assert stats.judge("contig_bench_us", a * 2, b * 2).verdict == stats.IMPROVEMENT
    assert stats.judge("contig_bench_us", a, [v * 1.01 for v in a]).verdict == stats.UNCHANGED
